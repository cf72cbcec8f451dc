//! `vm_media`: a VM's guest profile and the ISO images it boots besides its disks.

use crate::{DataStore, StoreError};
use kvmctl_types::VmId;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaRecord {
    /// `windows-11`, or none.
    pub profile: Option<String>,
    /// The installer ISO's image, booted first.
    pub installer: Option<String>,
    /// Further ISO images, in order.
    pub extras: Vec<String>,
}

impl DataStore {
    pub async fn media_set(&self, vm_id: &VmId, m: &MediaRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO vm_media (vm_id, profile, installer, extras) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (vm_id) DO UPDATE SET profile = $2, installer = $3, extras = $4",
        )
        .bind(vm_id.to_string())
        .bind(&m.profile)
        .bind(&m.installer)
        .bind(m.extras.join(","))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The VM's profile and media; the default (none) when it has no row.
    pub async fn media_get(&self, vm_id: &VmId) -> Result<MediaRecord, StoreError> {
        let row = sqlx::query("SELECT profile, installer, extras FROM vm_media WHERE vm_id = $1")
            .bind(vm_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(MediaRecord::default()) };
        let extras: String = r.try_get("extras")?;
        Ok(MediaRecord {
            profile: r.try_get("profile")?,
            installer: r.try_get("installer")?,
            extras: extras.split(',').filter(|e| !e.is_empty()).map(str::to_owned).collect(),
        })
    }

    pub async fn media_delete(&self, vm_id: &VmId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vm_media WHERE vm_id = $1").bind(vm_id.to_string()).execute(&self.pool).await?;
        Ok(())
    }
}
