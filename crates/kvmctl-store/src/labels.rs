//! VM labels (`vm_labels`): key/value pairs set at create and replaced whole. The rows go
//! with their VM's row (`ON DELETE CASCADE`). Callers read them only for VMs their scope
//! already gave them.

use crate::{DataStore, StoreError};
use kvmctl_types::VmId;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

impl DataStore {
    /// Replaces the VM's labels with `labels`, in one transaction.
    pub async fn vm_labels_set(&self, vm_id: &VmId, labels: &BTreeMap<String, String>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM vm_labels WHERE vm_id = $1").bind(vm_id.to_string()).execute(&mut *tx).await?;
        for (k, v) in labels {
            sqlx::query("INSERT INTO vm_labels (vm_id, key, value) VALUES ($1, $2, $3)")
                .bind(vm_id.to_string())
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The VM's labels.
    pub async fn vm_labels_get(&self, vm_id: &VmId) -> Result<BTreeMap<String, String>, StoreError> {
        let rows = sqlx::query("SELECT key, value FROM vm_labels WHERE vm_id = $1").bind(vm_id.to_string()).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("key")?, r.try_get("value")?))).collect()
    }

    /// Every VM's labels, by VM (for lists, which keep those of the VMs in scope).
    pub async fn vm_labels_all(&self) -> Result<HashMap<VmId, BTreeMap<String, String>>, StoreError> {
        let rows = sqlx::query("SELECT vm_id, key, value FROM vm_labels").fetch_all(&self.pool).await?;
        let mut out: HashMap<VmId, BTreeMap<String, String>> = HashMap::new();
        for r in rows {
            let id = crate::decode_vm_id(&r.try_get::<String, _>("vm_id")?)?;
            out.entry(id).or_default().insert(r.try_get("key")?, r.try_get("value")?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::vms::tests::{image_fixture, vm};
    use crate::DataStore;

    crate::on_both_engines!(labels_are_replaced_whole_and_go_with_their_vm);

    async fn labels_are_replaced_whole_and_go_with_their_vm(store: DataStore) {
        image_fixture(&store).await;
        let rec = vm("l1", "admin", "local", 1);
        store.vm_insert(&rec, None, None).await.unwrap().unwrap();
        let mut labels = std::collections::BTreeMap::from([("role".to_owned(), "web".to_owned()), ("tier".to_owned(), "a".to_owned())]);
        store.vm_labels_set(&rec.id, &labels).await.unwrap();
        assert_eq!(store.vm_labels_get(&rec.id).await.unwrap(), labels);
        labels.remove("tier");
        store.vm_labels_set(&rec.id, &labels).await.unwrap();
        assert_eq!(store.vm_labels_all().await.unwrap()[&rec.id], labels);
        store.vm_delete(&rec.name).await.unwrap();
        assert!(store.vm_labels_all().await.unwrap().is_empty(), "the rows went with the VM");
    }
}
