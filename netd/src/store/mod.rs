//! Local state in redb, behind a small typed API. Every write is one redb
//! transaction, so a crash at any point leaves either the old or the new state,
//! never a mix. Records are JSON values keyed by id; one redb table per kind.

mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::ids::{NetworkId, NodeId};
use crate::model::NetworkRecord;
pub use table::Record;

/// Version of the on-disk layout. Bump with a migration when it changes.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// A store failure, with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error(
        "store {path} has schema version {found}, newer than this netd understands ({SCHEMA_VERSION}): upgrade netd"
    )]
    TooNew { path: PathBuf, found: u64 },
    #[error("store: {op}: {message}")]
    Db { op: &'static str, message: String },
    #[error("store: corrupt {kind} record {key:?}: {source}")]
    Corrupt {
        kind: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("a network named {0:?} already exists")]
    NameConflict(String),
}

pub(crate) fn db_err<E: std::fmt::Display>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Db { op, message: e.to_string() }
}

/// The store. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    /// Bumped after every committed write: readers that cache derived data
    /// (e.g. the API's serialized network list) compare it to know if stale.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`, creating its tables.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(|e| StoreError::Open { path: path.to_owned(), source: Box::new(e) })?;
        let store = Store { db: Arc::new(db), path: path.to_owned(), generation: Default::default() };
        let txn = store.db.begin_write().map_err(db_err("begin"))?;
        {
            let mut meta = txn.open_table(META).map_err(db_err("open meta"))?;
            let found = match meta.get("schema_version").map_err(db_err("read schema"))? {
                Some(v) => v.value().parse::<u64>().unwrap_or(u64::MAX),
                None => SCHEMA_VERSION,
            };
            if found > SCHEMA_VERSION {
                return Err(StoreError::TooNew { path: path.to_owned(), found });
            }
            meta.insert("schema_version", SCHEMA_VERSION.to_string().as_str()).map_err(db_err("write schema"))?;
            if meta.get("node_id").map_err(db_err("read node id"))?.is_none() {
                meta.insert("node_id", NodeId::random().as_str()).map_err(db_err("write node id"))?;
            }
            txn.open_table(NetworkRecord::TABLE).map_err(db_err("open networks"))?;
            txn.open_table(crate::image::ImageRecord::TABLE).map_err(db_err("open images"))?;
            txn.open_table(crate::volume::VolumeRecord::TABLE).map_err(db_err("open volumes"))?;
            txn.open_table(crate::runtime::container::ContainerRecord::TABLE).map_err(db_err("open containers"))?;
            txn.open_table(crate::lb::ServiceRecord::TABLE).map_err(db_err("open services"))?;
        }
        txn.commit().map_err(db_err("commit"))?;
        Ok(store)
    }

    /// The write generation (changes after every committed write).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn committed(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This node's id, created with the store and stable afterwards.
    pub fn node_id(&self) -> Result<NodeId, StoreError> {
        let txn = self.db.begin_read().map_err(db_err("begin"))?;
        let meta = txn.open_table(META).map_err(db_err("open meta"))?;
        let v = meta.get("node_id").map_err(db_err("read node id"))?;
        let s = v.map(|v| v.value().to_owned()).unwrap_or_default();
        NodeId::parse(&s).map_err(|e| StoreError::Db { op: "read node id", message: e.to_string() })
    }

    /// A value of the store's own metadata (e.g. the gossip keyring after
    /// a rotation), if set.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err("begin"))?;
        let meta = txn.open_table(META).map_err(db_err("open meta"))?;
        let v = meta.get(key).map_err(db_err("read meta"))?;
        Ok(v.map(|v| v.value().to_owned()))
    }

    /// Sets a metadata value (one transaction).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err("begin"))?;
        {
            let mut meta = txn.open_table(META).map_err(db_err("open meta"))?;
            meta.insert(key, value).map_err(db_err("write meta"))?;
        }
        txn.commit().map_err(db_err("commit"))?;
        self.committed();
        Ok(())
    }

    /// Every record of one kind, ordered by key.
    pub fn all<R: Record>(&self) -> Result<Vec<R>, StoreError> {
        table::all(&self.db)
    }

    /// One record by key.
    pub fn get<R: Record>(&self, key: &str) -> Result<Option<R>, StoreError> {
        table::get(&self.db, key)
    }

    /// Writes several records of one kind in one transaction.
    pub fn put_all<R: Record>(&self, recs: &[R]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err("begin"))?;
        {
            let mut t = txn.open_table(R::TABLE).map_err(db_err("open table"))?;
            for r in recs {
                table::put(&mut t, r)?;
            }
        }
        txn.commit().map_err(db_err("commit"))?;
        self.committed();
        Ok(())
    }

    /// Removes one record; returns whether it existed.
    pub fn remove<R: Record>(&self, key: &str) -> Result<bool, StoreError> {
        let r = table::remove::<R>(&self.db, key);
        self.committed();
        r
    }

    /// All networks, ordered by id.
    pub fn networks(&self) -> Result<Vec<NetworkRecord>, StoreError> {
        table::all(&self.db)
    }

    /// One network by full id.
    pub fn network(&self, id: &NetworkId) -> Result<Option<NetworkRecord>, StoreError> {
        table::get(&self.db, id.as_str())
    }

    /// Adds a network; refused (nothing written) if the name is taken.
    pub fn insert_network(&self, rec: &NetworkRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err("begin"))?;
        {
            let mut t = txn.open_table(NetworkRecord::TABLE).map_err(db_err("open networks"))?;
            for entry in t.iter().map_err(db_err("scan networks"))? {
                let (k, v) = entry.map_err(db_err("scan networks"))?;
                let existing: NetworkRecord = table::decode(k.value(), v.value())?;
                if existing.name == rec.name {
                    return Err(StoreError::NameConflict(rec.name.clone()));
                }
            }
            table::put(&mut t, rec)?;
        }
        txn.commit().map_err(db_err("commit"))?;
        self.committed();
        Ok(())
    }

    /// Removes a network; returns whether it existed.
    pub fn remove_network(&self, id: &NetworkId) -> Result<bool, StoreError> {
        self.remove::<NetworkRecord>(id.as_str())
    }

    /// Adds, in one transaction, every record of `wanted` whose name is not yet
    /// present; returns the ones it added.
    pub fn ensure_networks(&self, wanted: Vec<NetworkRecord>) -> Result<Vec<NetworkRecord>, StoreError> {
        let txn = self.db.begin_write().map_err(db_err("begin"))?;
        let mut added = Vec::new();
        {
            let mut t = txn.open_table(NetworkRecord::TABLE).map_err(db_err("open networks"))?;
            let mut names = Vec::new();
            for entry in t.iter().map_err(db_err("scan networks"))? {
                let (k, v) = entry.map_err(db_err("scan networks"))?;
                let existing: NetworkRecord = table::decode(k.value(), v.value())?;
                names.push(existing.name);
            }
            for rec in wanted {
                if !names.contains(&rec.name) {
                    table::put(&mut t, &rec)?;
                    added.push(rec);
                }
            }
        }
        txn.commit().map_err(db_err("commit"))?;
        self.committed();
        Ok(added)
    }
}

#[cfg(test)]
mod tests;
