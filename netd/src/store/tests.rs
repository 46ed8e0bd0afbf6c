use super::*;
use crate::model::NetworkRecord;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("netd.db")).unwrap();
    (dir, store)
}

#[test]
fn predefined_networks_are_created_once_and_survive_reopen() {
    let (dir, store) = open();
    let added = store.ensure_networks(NetworkRecord::predefined_set("t0")).unwrap();
    assert_eq!(added.len(), 3);
    let again = store.ensure_networks(NetworkRecord::predefined_set("t1")).unwrap();
    assert!(again.is_empty(), "second ensure must add nothing");
    let node = store.node_id().unwrap();
    let ids: Vec<_> = store.networks().unwrap().into_iter().map(|n| n.id).collect();
    drop(store);
    let reopened = Store::open(&dir.path().join("netd.db")).unwrap();
    let ids2: Vec<_> = reopened.networks().unwrap().into_iter().map(|n| n.id).collect();
    assert_eq!(ids, ids2);
    assert_eq!(reopened.node_id().unwrap(), node);
}

#[test]
fn name_conflict_writes_nothing() {
    let (_dir, store) = open();
    store.ensure_networks(NetworkRecord::predefined_set("t0")).unwrap();
    let before = store.networks().unwrap();
    let mut dup = NetworkRecord::predefined_set("t2").remove(1);
    dup.predefined = false;
    let err = store.insert_network(&dup).unwrap_err();
    assert!(matches!(err, StoreError::NameConflict(ref n) if n == "host"), "{err}");
    assert_eq!(store.networks().unwrap(), before);
}

#[test]
fn insert_get_remove() {
    let (_dir, store) = open();
    let mut rec = NetworkRecord::predefined_set("t0").remove(0);
    rec.name = "custom".into();
    store.insert_network(&rec).unwrap();
    assert_eq!(store.network(&rec.id).unwrap(), Some(rec.clone()));
    assert!(store.remove_network(&rec.id).unwrap());
    assert!(!store.remove_network(&rec.id).unwrap());
    assert_eq!(store.network(&rec.id).unwrap(), None);
}

#[test]
fn newer_schema_is_refused() {
    let (dir, store) = open();
    let path = store.path().to_owned();
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("schema_version", "99").unwrap();
        txn.commit().unwrap();
    }
    drop(store);
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
    drop(dir);
}

#[test]
fn garbage_file_is_a_clear_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("netd.db");
    std::fs::write(&path, b"this is not a redb file at all, just text").unwrap();
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("store {}: cannot open", path.display())), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"this is not a redb file at all, just text");
}
