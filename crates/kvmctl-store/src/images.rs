//! `images`: base images in a node's storage pool, with their template metadata.

use crate::{decode_name, unique, unix_now, DataStore, StoreError};
use kvmctl_types::Name;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub name: Name,
    pub node: String,
    pub pool: String,
    pub volume: String,
    /// Path of the volume on the node: the backing file of VMs' root disks.
    pub path: String,
    /// `qcow2` or `raw`.
    pub format: String,
    pub virtual_bytes: u64,
    pub file_bytes: u64,
    pub sha256: String,
    /// Where it was imported from (a path or URL).
    pub source: String,
    pub os_family: Option<String>,
    pub os_version: Option<String>,
    pub cloud_init: bool,
    pub default_user: Option<String>,
    /// `bios`, `uefi`, or both, comma-separated.
    pub boot_modes: Vec<String>,
    pub kernel_volume: Option<String>,
    pub initrd_volume: Option<String>,
    pub cmdline: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// VMs made from it get an emulated TPM 2.0 unless asked otherwise.
    pub tpm: bool,
    /// The guest profile VMs made from it get (`windows-11`).
    pub profile: Option<String>,
}

const COLUMNS: &str = "name, node, pool, volume, path, format, virtual_bytes, file_bytes, sha256, source, os_family, os_version, \
                       cloud_init, default_user, boot_modes, kernel_volume, initrd_volume, cmdline, created_at, tpm, profile";

/// What reads select: `cloud_init` as an integer (sqlx's Any driver decodes no SQLite BOOLEAN).
const SELECTED: &str = "name, node, pool, volume, path, format, virtual_bytes, file_bytes, sha256, source, os_family, os_version, \
                        CAST(cloud_init AS INTEGER) AS cloud_init, default_user, boot_modes, kernel_volume, initrd_volume, cmdline, created_at, tpm, profile";

fn image_from_row(row: sqlx::any::AnyRow) -> Result<ImageRecord, StoreError> {
    let modes: String = row.try_get("boot_modes")?;
    Ok(ImageRecord {
        name: decode_name("image name", row.try_get("name")?)?,
        node: row.try_get("node")?,
        pool: row.try_get("pool")?,
        volume: row.try_get("volume")?,
        path: row.try_get("path")?,
        format: row.try_get("format")?,
        virtual_bytes: row.try_get::<i64, _>("virtual_bytes")? as u64,
        file_bytes: row.try_get::<i64, _>("file_bytes")? as u64,
        sha256: row.try_get("sha256")?,
        source: row.try_get("source")?,
        os_family: row.try_get("os_family")?,
        os_version: row.try_get("os_version")?,
        cloud_init: row.try_get::<i64, _>("cloud_init")? != 0,
        default_user: row.try_get("default_user")?,
        boot_modes: modes.split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect(),
        kernel_volume: row.try_get("kernel_volume")?,
        initrd_volume: row.try_get("initrd_volume")?,
        cmdline: row.try_get("cmdline")?,
        created_at: row.try_get("created_at")?,
        tpm: row.try_get::<i64, _>("tpm")? != 0,
        profile: row.try_get("profile")?,
    })
}

impl DataStore {
    /// Records an imported image; `Exists` when the name is taken. `created_at` is set here.
    pub async fn image_insert(&self, img: &ImageRecord) -> Result<ImageRecord, StoreError> {
        sqlx::query(&format!(
            "INSERT INTO images ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
        ))
        .bind(img.name.as_str())
        .bind(&img.node)
        .bind(&img.pool)
        .bind(&img.volume)
        .bind(&img.path)
        .bind(&img.format)
        .bind(img.virtual_bytes as i64)
        .bind(img.file_bytes as i64)
        .bind(&img.sha256)
        .bind(&img.source)
        .bind(&img.os_family)
        .bind(&img.os_version)
        .bind(img.cloud_init)
        .bind(&img.default_user)
        .bind(img.boot_modes.join(","))
        .bind(&img.kernel_volume)
        .bind(&img.initrd_volume)
        .bind(&img.cmdline)
        .bind(unix_now())
        .bind(img.tpm as i64)
        .bind(&img.profile)
        .execute(&self.pool)
        .await
        .map_err(unique("image", img.name.as_str()))?;
        Ok(self.image_get(&img.name).await?.expect("row just written"))
    }

    pub async fn image_get(&self, name: &Name) -> Result<Option<ImageRecord>, StoreError> {
        let row =
            sqlx::query(&format!("SELECT {SELECTED} FROM images WHERE name = $1")).bind(name.as_str()).fetch_optional(&self.pool).await?;
        row.map(image_from_row).transpose()
    }

    pub async fn image_list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {SELECTED} FROM images ORDER BY name")).fetch_all(&self.pool).await?;
        rows.into_iter().map(image_from_row).collect()
    }

    /// Removes the image row unless a VM uses it; returns the names of the VMs that do
    /// (and removes nothing) otherwise. One statement, so a VM created meanwhile cannot
    /// slip past the check.
    pub async fn image_delete_unused(&self, name: &Name) -> Result<Result<bool, Vec<String>>, StoreError> {
        let done = sqlx::query(
            "DELETE FROM images WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM vms WHERE vms.image = images.name) \
             AND NOT EXISTS (SELECT 1 FROM kept_disks k WHERE k.image = images.name) \
             AND NOT EXISTS (SELECT 1 FROM vm_media m WHERE m.installer = images.name \
                 OR ',' || m.extras || ',' LIKE '%,' || images.name || ',%')",
        )
        .bind(name.as_str())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Ok(true));
        }
        let users = self.image_users(name).await?;
        Ok(if users.is_empty() { Ok(false) } else { Err(users) })
    }

    /// Names of the VMs whose root disk is backed by the image, and of kept disks
    /// (`kept disk POOL/VOLUME`) backed by it.
    pub async fn image_users(&self, name: &Name) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT name FROM (SELECT name FROM vms WHERE image = $1 \
             UNION ALL SELECT v.name FROM vm_media m JOIN vms v ON v.id = m.vm_id \
                 WHERE v.image <> $1 AND (m.installer = $1 OR ',' || m.extras || ',' LIKE '%,' || $1 || ',%') \
             UNION ALL SELECT 'kept disk ' || pool || '/' || volume AS name FROM kept_disks WHERE image = $1) u ORDER BY name",
        )
        .bind(name.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|r| r.try_get("name").map_err(StoreError::from)).collect()
    }
}

impl DataStore {
    /// Whether image `image`'s volumes were copied to `node` completely.
    pub async fn image_copy_exists(&self, image: &Name, node: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS one FROM image_copies WHERE image = $1 AND node = $2")
            .bind(image.as_str())
            .bind(node)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Records a finished copy of the image on `node`.
    pub async fn image_copy_insert(&self, image: &Name, node: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO image_copies (image, node, created_at) VALUES ($1, $2, $3) ON CONFLICT (image, node) DO NOTHING")
            .bind(image.as_str())
            .bind(node)
            .bind(crate::unix_now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The nodes holding a copy of the image.
    pub async fn image_copy_nodes(&self, image: &Name) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT node FROM image_copies WHERE image = $1 ORDER BY node").bind(image.as_str()).fetch_all(&self.pool).await?;
        rows.iter().map(|r| r.try_get("node").map_err(StoreError::from)).collect()
    }

    /// Forgets every copy on `node` (the node was removed).
    pub async fn image_copies_forget_node(&self, node: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM image_copies WHERE node = $1").bind(node).execute(&self.pool).await?;
        Ok(())
    }

    /// Forgets the image's copy on `node` (its volumes were removed).
    pub async fn image_copy_delete(&self, image: &Name, node: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM image_copies WHERE image = $1 AND node = $2").bind(image.as_str()).bind(node).execute(&self.pool).await?;
        Ok(())
    }
}
