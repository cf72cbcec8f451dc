//! `vms`: virtual machines. `state` changes only by compare-and-set (`vm_transition`), so two
//! requests racing on one VM cannot both win.

use crate::{decode_name, unique, unix_now, DataStore, StoreError};
use kvmctl_core::VmState;
use kvmctl_types::{Name, VmId};
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    pub id: VmId,
    pub name: Name,
    pub owner: String,
    pub node: String,
    pub image: Name,
    pub plan: Option<String>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub network: String,
    pub mac: String,
    /// `bios` or `uefi`.
    pub firmware: String,
    pub pool: String,
    pub root_volume: String,
    pub seed_volume: String,
    pub vnc_password: String,
    /// IPv4 address reserved in the network's DHCP before boot (managed networks only).
    pub ip: Option<String>,
    /// The user cloud-init creates, with the VM's own key and the user's keys.
    pub ssh_user: String,
    /// The guest's SSH host key fingerprint (`SHA256:...`), pinned at the first login.
    pub host_key: Option<String>,
    /// Where the pin came from: `console` or `first use`.
    pub host_key_source: Option<String>,
    pub state: VmState,
    /// Why the VM is `failed`, or what the last operation on it reported.
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// When an ephemeral VM (`vm create --ttl`) is deleted, Unix seconds.
    pub expires_at: Option<i64>,
    /// An emulated TPM 2.0.
    pub tpm: bool,
}

const COLUMNS: &str = "id, name, owner, node, image, plan, vcpus, memory_mib, disk_gib, network, mac, firmware, pool, root_volume, \
                       seed_volume, vnc_password, state, error, created_at, updated_at, ip, ssh_user, host_key, host_key_source, tpm";

/// What reads select: the columns writes set, and those changed only by their own updates.
const SELECTED: &str = "id, name, owner, node, image, plan, vcpus, memory_mib, disk_gib, network, mac, firmware, pool, root_volume, \
                        seed_volume, vnc_password, state, error, created_at, updated_at, ip, ssh_user, host_key, host_key_source, tpm, expires_at";

fn vm_from_row(row: sqlx::any::AnyRow) -> Result<VmRecord, StoreError> {
    let decode = |what: &str, e: String| StoreError::Query(sqlx::Error::Decode(format!("{what}: {e}").into()));
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    Ok(VmRecord {
        id: crate::decode_vm_id(&id)?,
        name: decode_name("vm name", row.try_get("name")?)?,
        owner: row.try_get("owner")?,
        node: row.try_get("node")?,
        image: decode_name("image name", row.try_get("image")?)?,
        plan: row.try_get("plan")?,
        vcpus: row.try_get::<i64, _>("vcpus")? as u32,
        memory_mib: row.try_get::<i64, _>("memory_mib")? as u64,
        disk_gib: row.try_get::<i64, _>("disk_gib")? as u64,
        network: row.try_get("network")?,
        mac: row.try_get("mac")?,
        firmware: row.try_get("firmware")?,
        pool: row.try_get("pool")?,
        root_volume: row.try_get("root_volume")?,
        seed_volume: row.try_get("seed_volume")?,
        vnc_password: row.try_get("vnc_password")?,
        ip: row.try_get("ip")?,
        ssh_user: row.try_get("ssh_user")?,
        host_key: row.try_get("host_key")?,
        host_key_source: row.try_get("host_key_source")?,
        state: state.parse().map_err(|e| decode("vm state", e))?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
        tpm: row.try_get::<i64, _>("tpm")? != 0,
    })
}

/// Whether `e` is the unique index on a VM's address (`vms_address`): another VM on the
/// node's network has it (a create of another daemon on the same database got it first).
pub(crate) fn address_taken(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => d.constraint() == Some("vms_address") || d.message().contains("vms.ip"),
        _ => false,
    }
}

impl DataStore {
    /// Records a new VM (normally in state `creating`); `Exists` (kind `vm`) when the name is
    /// taken, `Exists` (kind `address`) when another VM has its address on its network.
    /// With `limits`, the row is written only if the owner's VMs, vCPUs, memory and disk stay
    /// within them, checked and written in one statement, so concurrent creates can never
    /// exceed a quota together; `None` when the quota refused it. With `node_capacity`
    /// (vCPUs, memory, disk the VM's node may give out after overcommit), the node's VMs must
    /// stay within it too, in the same statement: concurrent creates never overfill a node.
    pub async fn vm_insert(
        &self,
        vm: &VmRecord,
        limits: Option<&kvmctl_core::QuotaLimits>,
        node_capacity: Option<(u64, u64, u64)>,
    ) -> Result<Option<VmRecord>, StoreError> {
        let mut tx = self.admission().await?;
        let now = unix_now();
        let lim = |v: u64| v.min(i64::MAX as u64) as i64;
        let snapshots = crate::snapshots::snapshot_gib_of("$3");
        let done = sqlx::query(&format!(
            "INSERT INTO vms ({COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $19, $20, $21, $22, $23, $31 \
             WHERE ($24 IS NULL OR ( \
               (SELECT COUNT(*) FROM vms WHERE owner = $3) + 1 <= $24 \
               AND (SELECT CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) FROM vms WHERE owner = $3) + $7 <= $25 \
               AND (SELECT CAST(COALESCE(SUM(memory_mib), 0) AS BIGINT) FROM vms WHERE owner = $3) + $8 <= $26 \
               AND (SELECT CAST(COALESCE(SUM(disk_gib + data_gib), 0) AS BIGINT) FROM vms WHERE owner = $3) + {snapshots} + $9 <= $27)) \
             AND ($28 IS NULL OR ( \
               (SELECT CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) FROM vms WHERE node = $4 OR migrating_to = $4) + $7 <= $28 \
               AND (SELECT CAST(COALESCE(SUM(memory_mib), 0) AS BIGINT) FROM vms WHERE node = $4 OR migrating_to = $4) + $8 <= $29 \
               AND (SELECT CAST(COALESCE(SUM(disk_gib + data_gib), 0) AS BIGINT) FROM vms WHERE node = $4 OR migrating_to = $4) + $9 <= $30))"
        ))
        .bind(vm.id.to_string())
        .bind(vm.name.as_str())
        .bind(&vm.owner)
        .bind(&vm.node)
        .bind(vm.image.as_str())
        .bind(&vm.plan)
        .bind(vm.vcpus as i64)
        .bind(vm.memory_mib as i64)
        .bind(vm.disk_gib as i64)
        .bind(&vm.network)
        .bind(&vm.mac)
        .bind(&vm.firmware)
        .bind(&vm.pool)
        .bind(&vm.root_volume)
        .bind(&vm.seed_volume)
        .bind(&vm.vnc_password)
        .bind(vm.state.as_str())
        .bind(&vm.error)
        .bind(now)
        .bind(&vm.ip)
        .bind(&vm.ssh_user)
        .bind(&vm.host_key)
        .bind(&vm.host_key_source)
        .bind(limits.map(|l| lim(l.vms)))
        .bind(limits.map(|l| lim(l.vcpus)))
        .bind(limits.map(|l| lim(l.memory_mib)))
        .bind(limits.map(|l| lim(l.disk_gib)))
        .bind(node_capacity.map(|c| lim(c.0)))
        .bind(node_capacity.map(|c| lim(c.1)))
        .bind(node_capacity.map(|c| lim(c.2)))
        .bind(vm.tpm as i64)
        .execute(&mut *tx)
        .await
        .map_err(|e| match address_taken(&e) {
            true => StoreError::Exists { kind: "address", name: vm.ip.clone().unwrap_or_default() },
            false => unique("vm", vm.name.as_str())(e),
        })?;
        tx.commit().await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(Some(self.vm_get(&crate::Scope::all(), &vm.name).await?.expect("row just written")))
    }

    /// The VM if it exists and `scope` may see it.
    pub async fn vm_get(&self, scope: &crate::Scope, name: &Name) -> Result<Option<VmRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {SELECTED} FROM vms WHERE name = $1 AND ($2 IS NULL OR owner = $2)"))
            .bind(name.as_str())
            .bind(scope.bind())
            .fetch_optional(&self.pool)
            .await?;
        row.map(vm_from_row).transpose()
    }

    /// The VMs `scope` may see, by name.
    pub async fn vm_list(&self, scope: &crate::Scope) -> Result<Vec<VmRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {SELECTED} FROM vms WHERE ($1 IS NULL OR owner = $1) ORDER BY name"))
            .bind(scope.bind())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(vm_from_row).collect()
    }

    /// Moves the VM from `from` to `to` if it is still in `from`; false when another
    /// request changed it first (or it is gone). `error` replaces the recorded error.
    pub async fn vm_transition(&self, name: &Name, from: VmState, to: VmState, error: Option<&str>) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE vms SET state = $1, error = $2, updated_at = $3 WHERE name = $4 AND state = $5")
            .bind(to.as_str())
            .bind(error)
            .bind(unix_now())
            .bind(name.as_str())
            .bind(from.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the VM a new size (and plan) if, with it, the owner's VMs stay within `limits`
    /// and the VM's node's VMs within `node_capacity`: checked and written in one statement,
    /// the same admission as `vm_insert`, so concurrent resizes and creates can never exceed
    /// a quota or overfill a node together. False when refused (or the VM is gone).
    pub async fn vm_resize_admit(
        &self,
        id: &VmId,
        size: (u32, u64, u64),
        plan: Option<&str>,
        limits: Option<&kvmctl_core::QuotaLimits>,
        node_capacity: Option<(u64, u64, u64)>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.admission().await?;
        let lim = |v: u64| v.min(i64::MAX as u64) as i64;
        let snapshots = crate::snapshots::snapshot_gib_of("vms.owner");
        let done = sqlx::query(&format!(
            "UPDATE vms SET vcpus = $2, memory_mib = $3, disk_gib = $4, plan = $5, updated_at = $6 \
             WHERE id = $1 \
             AND ($7 IS NULL OR ( \
               (SELECT CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) FROM vms o WHERE o.owner = vms.owner AND o.id <> $1) + $2 <= $7 \
               AND (SELECT CAST(COALESCE(SUM(memory_mib), 0) AS BIGINT) FROM vms o WHERE o.owner = vms.owner AND o.id <> $1) + $3 <= $8 \
               AND (SELECT CAST(COALESCE(SUM(disk_gib + data_gib), 0) AS BIGINT) FROM vms o WHERE o.owner = vms.owner AND o.id <> $1) \
                   + {snapshots} + $4 + vms.data_gib <= $9)) \
             AND ($10 IS NULL OR ( \
               (SELECT CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) FROM vms o WHERE (o.node = vms.node OR o.migrating_to = vms.node) AND o.id <> $1) + $2 <= $10 \
               AND (SELECT CAST(COALESCE(SUM(memory_mib), 0) AS BIGINT) FROM vms o WHERE (o.node = vms.node OR o.migrating_to = vms.node) AND o.id <> $1) + $3 <= $11 \
               AND (SELECT CAST(COALESCE(SUM(disk_gib + data_gib), 0) AS BIGINT) FROM vms o WHERE (o.node = vms.node OR o.migrating_to = vms.node) AND o.id <> $1) + $4 + vms.data_gib <= $12))"
        ))
        .bind(id.to_string())
        .bind(size.0 as i64)
        .bind(size.1 as i64)
        .bind(size.2 as i64)
        .bind(plan)
        .bind(unix_now())
        .bind(limits.map(|l| lim(l.vcpus)))
        .bind(limits.map(|l| lim(l.memory_mib)))
        .bind(limits.map(|l| lim(l.disk_gib)))
        .bind(node_capacity.map(|c| lim(c.0)))
        .bind(node_capacity.map(|c| lim(c.1)))
        .bind(node_capacity.map(|c| lim(c.2)))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Starts a migration of the VM to `to`: the VM counts against `to` too from now on, if
    /// it fits there within `node_capacity` (checked and written in one statement, as
    /// `vm_insert`). False when it does not fit, or the VM is gone or moving already.
    pub async fn vm_migrate_begin(&self, id: &VmId, to: &str, node_capacity: (u64, u64, u64)) -> Result<bool, StoreError> {
        let mut tx = self.admission().await?;
        let lim = |v: u64| v.min(i64::MAX as u64) as i64;
        let done = sqlx::query(
            "UPDATE vms SET migrating_to = $2, updated_at = $6 WHERE id = $1 AND migrating_to IS NULL AND node <> $2 \
             AND (SELECT CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) FROM vms o WHERE o.node = $2 OR o.migrating_to = $2) + vms.vcpus <= $3 \
             AND (SELECT CAST(COALESCE(SUM(memory_mib), 0) AS BIGINT) FROM vms o WHERE o.node = $2 OR o.migrating_to = $2) + vms.memory_mib <= $4 \
             AND (SELECT CAST(COALESCE(SUM(disk_gib + data_gib), 0) AS BIGINT) FROM vms o WHERE o.node = $2 OR o.migrating_to = $2) \
                 + vms.disk_gib + vms.data_gib <= $5",
        )
        .bind(id.to_string())
        .bind(to)
        .bind(lim(node_capacity.0))
        .bind(lim(node_capacity.1))
        .bind(lim(node_capacity.2))
        .bind(unix_now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a migration: the VM is on the node it moved to, at `ip` there, and its forwards
    /// with it. `Exists { kind: "address" }` when the address is taken there.
    pub async fn vm_migrate_finish(&self, id: &VmId, ip: Option<&str>, mac: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE vms SET node = migrating_to, migrating_to = NULL, ip = $2, mac = $3, updated_at = $4 WHERE id = $1 AND migrating_to IS NOT NULL",
        )
        .bind(id.to_string())
        .bind(ip.map(str::to_owned))
        .bind(mac)
        .bind(unix_now())
        .execute(&mut *tx)
        .await
        .map_err(|e| match address_taken(&e) {
            true => StoreError::Exists { kind: "address", name: ip.unwrap_or_default().to_owned() },
            false => e.into(),
        })?;
        sqlx::query("UPDATE forwards SET node = (SELECT node FROM vms WHERE id = $1) WHERE vm_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(crate::unique("forward", "host port on the new node"))?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a migration that did not happen: the VM stays where it is.
    pub async fn vm_migrate_abort(&self, id: &VmId) -> Result<(), StoreError> {
        sqlx::query("UPDATE vms SET migrating_to = NULL, updated_at = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(unix_now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// VMs whose migration was interrupted (the daemon stopped mid-way): (name, target node).
    pub async fn vm_migrations_open(&self) -> Result<Vec<(Name, String)>, StoreError> {
        let rows = sqlx::query("SELECT name, migrating_to FROM vms WHERE migrating_to IS NOT NULL").fetch_all(&self.pool).await?;
        rows.into_iter().map(|r| Ok((decode_name("vm name", r.try_get("name")?)?, r.try_get("migrating_to")?))).collect()
    }

    /// Sets when the VM expires (`None`: never).
    pub async fn vm_set_expiry(&self, id: &VmId, at: Option<i64>) -> Result<(), StoreError> {
        sqlx::query("UPDATE vms SET expires_at = $1 WHERE id = $2").bind(at).bind(id.to_string()).execute(&self.pool).await?;
        Ok(())
    }

    /// Records that the owner was warned of the stopped VM's cleanup (once per stop).
    pub async fn vm_cleanup_warned(&self, id: &VmId, at: Option<i64>) -> Result<(), StoreError> {
        sqlx::query("UPDATE vms SET cleanup_warned_at = $1 WHERE id = $2").bind(at).bind(id.to_string()).execute(&self.pool).await?;
        Ok(())
    }

    /// When the owner was warned of the stopped VM's cleanup.
    pub async fn vm_cleanup_warned_at(&self, id: &VmId) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT cleanup_warned_at FROM vms WHERE id = $1").bind(id.to_string()).fetch_optional(&self.pool).await?;
        Ok(row.and_then(|r| r.try_get("cleanup_warned_at").ok().flatten()))
    }

    /// Records whether the VM's owner wants it running (a boot sets it, a stop clears it).
    pub async fn vm_run_wanted_set(&self, id: &VmId, wanted: bool) -> Result<(), StoreError> {
        sqlx::query("UPDATE vms SET run_wanted = $1 WHERE id = $2").bind(wanted).bind(id.to_string()).execute(&self.pool).await?;
        Ok(())
    }

    /// Whether the VM's owner wants it running; `false` for a VM that no longer exists.
    pub async fn vm_run_wanted(&self, id: &VmId) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT CAST(run_wanted AS INTEGER) AS run_wanted FROM vms WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            // Read as an integer: sqlx's Any driver decodes no SQLite BOOLEAN.
            Some(r) => r.try_get::<i64, _>("run_wanted")? != 0,
            None => false,
        })
    }

    /// Records the VM's address and MAC (when the address picked was taken meanwhile).
    pub async fn vm_set_address(&self, id: &VmId, ip: &str, mac: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE vms SET ip = $1, mac = $2, updated_at = $3 WHERE id = $4")
            .bind(ip)
            .bind(mac)
            .bind(unix_now())
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| match address_taken(&e) {
                true => StoreError::Exists { kind: "address", name: ip.to_owned() },
                false => StoreError::Query(e),
            })?;
        Ok(())
    }

    /// Pins the guest's host key, unless one is pinned already (the first pin stays).
    pub async fn vm_host_key_pin(&self, id: &VmId, fingerprint: &str, source: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE vms SET host_key = $1, host_key_source = $2 WHERE id = $3 AND host_key IS NULL")
            .bind(fingerprint)
            .bind(source)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Changes where the pinned host key was learned (when `fingerprint` is the one pinned).
    pub async fn vm_host_key_source(&self, id: &VmId, fingerprint: &str, source: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE vms SET host_key_source = $1 WHERE id = $2 AND host_key = $3")
            .bind(source)
            .bind(id.to_string())
            .bind(fingerprint)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that the VM reached `stage` at `at_ms` (Unix milliseconds); the first time
    /// counts, a repeat is ignored.
    pub async fn vm_stage_reached(&self, id: &VmId, stage: &str, at_ms: i64, detail: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO vm_stages (vm_id, stage, at_ms, detail) VALUES ($1, $2, $3, $4) ON CONFLICT (vm_id, stage) DO NOTHING")
            .bind(id.to_string())
            .bind(stage)
            .bind(at_ms)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets the stages of the last boot (before a start).
    pub async fn vm_stages_clear(&self, id: &VmId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM vm_stages WHERE vm_id = $1").bind(id.to_string()).execute(&self.pool).await?;
        Ok(())
    }

    /// `(stage, at_ms, detail)` in the order they were reached.
    pub async fn vm_stages(&self, id: &VmId) -> Result<Vec<(String, i64, Option<String>)>, StoreError> {
        let rows = sqlx::query("SELECT stage, at_ms, detail FROM vm_stages WHERE vm_id = $1 ORDER BY at_ms, stage")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(|r| Ok((r.try_get("stage")?, r.try_get("at_ms")?, r.try_get("detail")?))).collect()
    }

    /// Records the VM's root disk as kept (before the delete that keeps it); idempotent.
    pub async fn kept_disk_insert(&self, vm: &VmRecord) -> Result<(), StoreError> {
        self.kept_volume_insert(vm, &vm.pool, &vm.root_volume, vm.disk_gib).await
    }

    /// Records one of the VM's volumes (its root disk or a data disk, in `pool`) as kept.
    pub async fn kept_volume_insert(&self, vm: &VmRecord, pool: &str, volume: &str, disk_gib: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO kept_disks (node, pool, volume, owner, vm_name, image, disk_gib, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (node, pool, volume) DO NOTHING",
        )
        .bind(&vm.node)
        .bind(pool)
        .bind(volume)
        .bind(&vm.owner)
        .bind(vm.name.as_str())
        .bind(vm.image.as_str())
        .bind(disk_gib as i64)
        .bind(unix_now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether the volume is recorded as a kept disk.
    pub async fn kept_disk_exists(&self, node: &str, pool: &str, volume: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS one FROM kept_disks WHERE node = $1 AND pool = $2 AND volume = $3")
            .bind(node)
            .bind(pool)
            .bind(volume)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Kept disks as `(node, pool, volume)`.
    pub async fn kept_disk_list(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query("SELECT node, pool, volume FROM kept_disks ORDER BY node, pool, volume").fetch_all(&self.pool).await?;
        rows.into_iter().map(|r| Ok((r.try_get("node")?, r.try_get("pool")?, r.try_get("volume")?))).collect()
    }

    pub async fn vm_delete(&self, name: &Name) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM vms WHERE name = $1").bind(name.as_str()).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{ImageRecord, NodeSettings};

    pub(crate) fn vm(name: &str, owner: &str, node: &str, vcpus: u32) -> VmRecord {
        VmRecord {
            id: VmId::new(),
            name: Name::parse(name).unwrap(),
            owner: owner.into(),
            node: node.into(),
            image: Name::parse("img").unwrap(),
            plan: None,
            vcpus,
            memory_mib: 512,
            disk_gib: 1,
            network: "default".into(),
            mac: format!("52:54:00:00:{:02x}:{:02x}", name.len(), name.bytes().map(u32::from).sum::<u32>() % 256),
            firmware: "bios".into(),
            pool: "p".into(),
            root_volume: kvmctl_core::rules::root_volume(name),
            seed_volume: kvmctl_core::rules::seed_volume(name),
            vnc_password: "x".into(),
            ip: None,
            ssh_user: "kvmctl".into(),
            host_key: None,
            host_key_source: None,
            state: VmState::Creating,
            error: None,
            created_at: 0,
            updated_at: 0,
            expires_at: None,
            tpm: false,
        }
    }

    /// Node `local` and image `img`, which `vm` records refer to.
    pub(crate) async fn image_fixture(store: &DataStore) {
        store.node_upsert(&Name::parse("local").unwrap(), "test:///default?local", &NodeSettings::default()).await.unwrap();
        let img = ImageRecord {
            name: Name::parse("img").unwrap(),
            node: "local".into(),
            pool: "p".into(),
            volume: "image-img.qcow2".into(),
            path: "/p/image-img.qcow2".into(),
            format: "qcow2".into(),
            virtual_bytes: 1,
            file_bytes: 1,
            sha256: "0".into(),
            source: "/x".into(),
            os_family: None,
            os_version: None,
            cloud_init: false,
            default_user: None,
            boot_modes: vec!["bios".into()],
            kernel_volume: None,
            initrd_volume: None,
            cmdline: None,
            created_at: 0,
            tpm: false,
            profile: None,
        };
        store.image_insert(&img).await.unwrap();
    }

    crate::on_both_engines!(the_insert_never_overfills_a_node_with_or_without_a_quota);
    crate::on_both_engines!(an_address_is_one_vms_on_its_network);
    crate::on_both_engines!(a_migrating_vm_counts_on_both_nodes_until_it_moves);

    /// A migration takes room on its target in the statement that checks it, against
    /// concurrent creates and other migrations; the VM counts on both nodes until the switch
    /// (which moves its forwards) or the abort.
    async fn a_migrating_vm_counts_on_both_nodes_until_it_moves(store: DataStore) {
        for n in ["local", "other"] {
            store.node_upsert(&Name::parse(n).unwrap(), &format!("test:///default?{n}"), &NodeSettings::default()).await.unwrap();
        }
        image_fixture(&store).await;
        let cap = (4, 1 << 20, 100);
        for i in 0..6 {
            assert!(store.vm_insert(&vm(&format!("m{i}"), "admin", "local", 1), None, None).await.unwrap().is_some());
        }
        // Six 1-vCPU VMs try to move to a 4-vCPU node while 6 creates race for it too.
        let ids: Vec<VmId> = {
            let all = store.vm_list(&crate::Scope::all()).await.unwrap();
            all.iter().map(|v| v.id).collect()
        };
        let moves: Vec<_> = ids
            .iter()
            .map(|id| {
                let (store, id) = (store.clone(), *id);
                tokio::spawn(async move { store.vm_migrate_begin(&id, "other", cap).await.unwrap() })
            })
            .collect();
        let creates: Vec<_> = (0..6)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.vm_insert(&vm(&format!("c{i}"), "admin", "other", 1), None, Some(cap)).await.unwrap().is_some()
                })
            })
            .collect();
        let (mut moved_in, mut created) = (0u64, 0u64);
        for t in moves {
            moved_in += t.await.unwrap() as u64;
        }
        for t in creates {
            created += t.await.unwrap() as u64;
        }
        assert_eq!(moved_in + created, 4, "moves and creates together fill the target exactly");
        let alloc = store.node_allocations().await.unwrap();
        assert_eq!(alloc["other"].vcpus, 4);
        assert_eq!(alloc["local"].vcpus, 6, "a moving VM still counts where it is");
        // A VM moving already cannot start a second move; the same node is refused.
        let moving: Vec<(Name, String)> = store.vm_migrations_open().await.unwrap();
        assert_eq!(moving.len() as u64, moved_in);
        let finished = !moving.is_empty() as u64;
        if let Some((name, _)) = moving.first() {
            let rec = store.vm_get(&crate::Scope::all(), name).await.unwrap().unwrap();
            assert!(!store.vm_migrate_begin(&rec.id, "other", (100, 1 << 30, 1000)).await.unwrap());
            store
                .forward_insert(
                    &crate::ForwardRecord {
                        node: "local".into(),
                        vm_id: rec.id,
                        protocol: "tcp".into(),
                        host_port: 2201,
                        guest_port: 22,
                        pool: "ssh".into(),
                        created_at: 0,
                    },
                    None,
                )
                .await
                .unwrap();
            assert!(store.vm_migrate_finish(&rec.id, Some("10.9.0.7"), "52:54:00:00:00:07").await.unwrap());
            let moved = store.vm_get(&crate::Scope::all(), name).await.unwrap().unwrap();
            assert_eq!((moved.node.as_str(), moved.ip.as_deref()), ("other", Some("10.9.0.7")));
            assert!(store.forward_list_vm(&rec.id).await.unwrap().iter().all(|f| f.node == "other"), "its forwards moved with it");
            assert_eq!(store.node_allocations().await.unwrap()["local"].vcpus, 5);
        }
        for (name, _) in store.vm_migrations_open().await.unwrap() {
            let rec = store.vm_get(&crate::Scope::all(), &name).await.unwrap().unwrap();
            store.vm_migrate_abort(&rec.id).await.unwrap();
        }
        assert!(store.vm_migrations_open().await.unwrap().is_empty());
        assert_eq!(store.node_allocations().await.unwrap()["other"].vcpus, created + finished, "aborts free the target");
    }

    /// Two VMs never share an address on one node's network (two daemons on one database
    /// pick from the rows they read; the index decides); other networks and nodes may.
    async fn an_address_is_one_vms_on_its_network(store: DataStore) {
        for n in ["local", "other"] {
            store.node_upsert(&Name::parse(n).unwrap(), &format!("test:///default?{n}"), &NodeSettings::default()).await.unwrap();
        }
        image_fixture(&store).await;
        let with_ip = |name: &str, node: &str, network: &str, ip: &str| VmRecord {
            ip: Some(ip.into()),
            network: network.into(),
            ..vm(name, "alice", node, 1)
        };
        assert!(store.vm_insert(&with_ip("a1", "local", "default", "10.0.0.5"), None, None).await.unwrap().is_some());
        match store.vm_insert(&with_ip("a2", "local", "default", "10.0.0.5"), None, None).await {
            Err(StoreError::Exists { kind: "address", name }) => assert_eq!(name, "10.0.0.5"),
            other => panic!("expected the address taken, got {other:?}"),
        }
        assert!(store.vm_get(&crate::Scope::all(), &Name::parse("a2").unwrap()).await.unwrap().is_none(), "nothing recorded");
        assert!(store.vm_insert(&with_ip("a3", "other", "default", "10.0.0.5"), None, None).await.unwrap().is_some());
        assert!(store.vm_insert(&with_ip("a4", "local", "isolated", "10.0.0.5"), None, None).await.unwrap().is_some());
        // VMs without an address (bridges) are many.
        for n in ["b1", "b2"] {
            assert!(store.vm_insert(&vm(n, "alice", "local", 1), None, None).await.unwrap().is_some());
        }
        // A taken name is still a taken name.
        assert!(matches!(
            store.vm_insert(&with_ip("a1", "local", "default", "10.0.0.6"), None, None).await,
            Err(StoreError::Exists { kind: "vm", .. })
        ));
        let a4 = store.vm_get(&crate::Scope::all(), &Name::parse("a4").unwrap()).await.unwrap().unwrap();
        assert!(matches!(store.vm_set_address(&a4.id, "10.0.0.5", "52:54:00:00:00:01").await, Ok(())));
        let b1 = store.vm_get(&crate::Scope::all(), &Name::parse("b1").unwrap()).await.unwrap().unwrap();
        assert!(matches!(
            store.vm_set_address(&b1.id, "10.0.0.5", "52:54:00:00:00:02").await,
            Err(StoreError::Exists { kind: "address", .. })
        ));
    }

    /// The node's capacity holds in the insert itself, for callers with a quota and for
    /// admins without one, under concurrency; another node's VMs do not count.
    async fn the_insert_never_overfills_a_node_with_or_without_a_quota(store: DataStore) {
        for n in ["local", "other"] {
            store.node_upsert(&Name::parse(n).unwrap(), &format!("test:///default?{n}"), &NodeSettings::default()).await.unwrap();
        }
        image_fixture(&store).await;
        let cap = Some((4, 1 << 20, 100));
        let quota = kvmctl_core::QuotaLimits { vms: 100, vcpus: 100, memory_mib: 1 << 30, disk_gib: 1000, forwards: 10 };
        // 20 concurrent 1-vCPU inserts on a 4-vCPU node, half with a quota, half without.
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let limits = (i % 2 == 0).then_some(quota);
                    let owner = if i % 2 == 0 { "alice" } else { "admin" };
                    store.vm_insert(&vm(&format!("vm{i}"), owner, "local", 1), limits.as_ref(), cap).await.unwrap().is_some()
                })
            })
            .collect();
        let mut made = 0;
        for t in tasks {
            made += t.await.unwrap() as u32;
        }
        assert_eq!(made, 4, "exactly the node's capacity");
        // Another node has its own room; memory and disk are checked too.
        assert!(store.vm_insert(&vm("o1", "admin", "other", 4), None, cap).await.unwrap().is_some());
        let big_memory = VmRecord { memory_mib: 2 << 20, ..vm("o2", "admin", "other", 0) };
        assert!(store.vm_insert(&big_memory, None, cap).await.unwrap().is_none());
        let big_disk = VmRecord { disk_gib: 200, ..vm("o3", "admin", "other", 0) };
        assert!(store.vm_insert(&big_disk, None, cap).await.unwrap().is_none());
        // Without a capacity (a caller that checks elsewhere) nothing about the node is checked.
        assert!(store.vm_insert(&vm("o4", "admin", "local", 8), None, None).await.unwrap().is_some());
    }
}
