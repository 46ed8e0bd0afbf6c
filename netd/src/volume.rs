//! Named volumes (the `local` driver): a directory
//! `<data-root>/volumes/<name>/_data` plus a record in the store. Creating an
//! existing name returns it unchanged (as dockerd does); removing one a
//! container uses is refused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// A volume failure.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("invalid volume name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least 2 characters")]
    BadName(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("remove {name}: volume is in use - [{users}]")]
    InUse { name: String, users: String },
    #[error("volume storage: {0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A volume as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    /// RFC 3339 creation time.
    pub created: String,
    pub labels: BTreeMap<String, String>,
    /// Made without a name (by a container's anonymous `-v /path`).
    pub anonymous: bool,
}

impl crate::store::Record for VolumeRecord {
    const KIND: &'static str = "volume";
    const TABLE: redb::TableDefinition<'static, &'static str, &'static [u8]> = redb::TableDefinition::new("volumes");
    fn key(&self) -> String {
        self.name.clone()
    }
}

/// Whether Docker accepts `name` for a volume.
pub fn valid_name(name: &str) -> bool {
    name.len() >= 2 && crate::model::valid_name(name)
}

/// Volumes on disk and in the store.
#[derive(Clone, Debug)]
pub struct VolumeStore {
    root: PathBuf,
    store: Store,
}

impl VolumeStore {
    /// Volumes under `root` (created if missing).
    pub fn open(root: PathBuf, store: Store) -> Result<VolumeStore, VolumeError> {
        std::fs::create_dir_all(&root).map_err(|e| VolumeError::Io(format!("create {}: {e}", root.display())))?;
        Ok(VolumeStore { root, store })
    }

    /// Where a volume's data lives.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    pub fn list(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        Ok(self.store.all::<VolumeRecord>()?)
    }

    pub fn get(&self, name: &str) -> Result<VolumeRecord, VolumeError> {
        self.store.get::<VolumeRecord>(name)?.ok_or_else(|| VolumeError::NotFound(name.to_owned()))
    }

    /// Creates a volume (a random name if `name` is empty); an existing name
    /// is returned as it is. Returns the record and whether it is new.
    pub fn create(
        &self,
        name: &str,
        driver: &str,
        driver_opts: &BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Result<(VolumeRecord, bool), VolumeError> {
        if !matches!(driver, "" | "local") {
            return Err(VolumeError::Unsupported(format!(
                "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            )));
        }
        if let Some(k) = driver_opts.keys().next() {
            return Err(VolumeError::Unsupported(format!(
                "driver option {k:?} is not supported: netd's local volumes are plain directories"
            )));
        }
        let (name, anonymous) = if name.is_empty() {
            (crate::ids::NetworkId::random().to_string(), true)
        } else {
            (name.to_owned(), false)
        };
        if !valid_name(&name) {
            return Err(VolumeError::BadName(name));
        }
        if let Some(existing) = self.store.get::<VolumeRecord>(&name)? {
            return Ok((existing, false));
        }
        let data = self.mountpoint(&name);
        std::fs::create_dir_all(&data).map_err(|e| VolumeError::Io(format!("create {}: {e}", data.display())))?;
        let rec = VolumeRecord { name, created: jiff::Timestamp::now().to_string(), labels, anonymous };
        if let Err(e) = self.store.put_all(std::slice::from_ref(&rec)) {
            let _ = std::fs::remove_dir_all(self.root.join(&rec.name));
            return Err(e.into());
        }
        Ok((rec, true))
    }

    /// Removes a volume and its data; `users` are the containers using it.
    pub fn remove(&self, name: &str, users: &[String]) -> Result<(), VolumeError> {
        self.get(name)?;
        if !users.is_empty() {
            return Err(VolumeError::InUse { name: name.to_owned(), users: users.join(", ") });
        }
        self.store.remove::<VolumeRecord>(name)?;
        let _ = std::fs::remove_dir_all(self.root.join(name));
        Ok(())
    }

    /// Bytes used under a volume's directory.
    pub fn usage(&self, name: &str) -> u64 {
        fn walk(p: &std::path::Path) -> u64 {
            let Ok(meta) = std::fs::symlink_metadata(p) else { return 0 };
            if meta.is_dir() {
                std::fs::read_dir(p).map(|d| d.flatten().map(|e| walk(&e.path())).sum()).unwrap_or(0)
            } else {
                meta.len()
            }
        }
        walk(&self.root.join(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores() -> (tempfile::TempDir, VolumeStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("netd.db")).unwrap();
        (VolumeStore::open(dir.path().join("volumes"), store).map(|v| (dir, v))).unwrap()
    }

    #[test]
    fn create_is_idempotent_and_remove_deletes_data() {
        let (_d, v) = stores();
        let (a, new) = v.create("data", "local", &BTreeMap::new(), [("k".into(), "v".into())].into()).unwrap();
        assert!(new);
        std::fs::write(v.mountpoint("data").join("f"), "x").unwrap();
        let (b, new) = v.create("data", "", &BTreeMap::new(), BTreeMap::new()).unwrap();
        assert!(!new);
        assert_eq!(a, b, "existing volume returned unchanged");
        assert_eq!(v.usage("data"), 1);
        assert!(matches!(v.remove("data", &["web".into()]), Err(VolumeError::InUse { .. })));
        assert!(v.mountpoint("data").join("f").exists(), "refused removal keeps the data");
        v.remove("data", &[]).unwrap();
        assert!(!v.mountpoint("data").exists());
        assert!(matches!(v.get("data"), Err(VolumeError::NotFound(_))));
    }

    #[test]
    fn anonymous_and_bad_input() {
        let (_d, v) = stores();
        let (anon, _) = v.create("", "local", &BTreeMap::new(), BTreeMap::new()).unwrap();
        assert!(anon.anonymous && anon.name.len() == 64);
        for bad in ["a", "-x", "a/b", "../up"] {
            assert!(
                matches!(v.create(bad, "local", &BTreeMap::new(), BTreeMap::new()), Err(VolumeError::BadName(_))),
                "{bad}"
            );
        }
        let opts = [("type".to_owned(), "nfs".to_owned())].into();
        assert!(matches!(v.create("ok", "local", &opts, BTreeMap::new()), Err(VolumeError::Unsupported(_))));
        assert!(matches!(
            v.create("ok", "rexray", &BTreeMap::new(), BTreeMap::new()),
            Err(VolumeError::Unsupported(_))
        ));
        assert_eq!(v.list().unwrap().len(), 1, "refused creates wrote nothing");
    }
}
