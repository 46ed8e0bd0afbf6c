//! Generic typed access to one redb table of JSON records keyed by id.

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{StoreError, db_err};
use crate::model::NetworkRecord;

/// A kind of record with its own table.
pub trait Record: Serialize + DeserializeOwned {
    /// Name used in error messages.
    const KIND: &'static str;
    /// The table holding records of this kind.
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]>;
    /// The record's key (its full id).
    fn key(&self) -> String;
}

impl Record for NetworkRecord {
    const KIND: &'static str = "network";
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("networks");
    fn key(&self) -> String {
        self.id.to_string()
    }
}

pub(super) fn decode<R: Record>(key: &str, bytes: &[u8]) -> Result<R, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { kind: R::KIND, key: key.to_owned(), source })
}

pub(super) fn put<R: Record>(t: &mut Table<'_, &'static str, &'static [u8]>, rec: &R) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(rec).map_err(|e| StoreError::Db { op: "encode", message: e.to_string() })?;
    t.insert(rec.key().as_str(), bytes.as_slice()).map_err(db_err("insert"))?;
    Ok(())
}

pub(super) fn all<R: Record>(db: &Database) -> Result<Vec<R>, StoreError> {
    let txn = db.begin_read().map_err(db_err("begin"))?;
    let t = txn.open_table(R::TABLE).map_err(db_err("open table"))?;
    let mut out = Vec::new();
    for entry in t.iter().map_err(db_err("scan"))? {
        let (k, v) = entry.map_err(db_err("scan"))?;
        out.push(decode(k.value(), v.value())?);
    }
    Ok(out)
}

pub(super) fn get<R: Record>(db: &Database, key: &str) -> Result<Option<R>, StoreError> {
    let txn = db.begin_read().map_err(db_err("begin"))?;
    let t = txn.open_table(R::TABLE).map_err(db_err("open table"))?;
    let v = t.get(key).map_err(db_err("get"))?;
    v.map(|v| decode(key, v.value())).transpose()
}

pub(super) fn remove<R: Record>(db: &Database, key: &str) -> Result<bool, StoreError> {
    let txn = db.begin_write().map_err(db_err("begin"))?;
    let existed = {
        let mut t = txn.open_table(R::TABLE).map_err(db_err("open table"))?;
        t.remove(key).map_err(db_err("remove"))?.is_some()
    };
    txn.commit().map_err(db_err("commit"))?;
    Ok(existed)
}
