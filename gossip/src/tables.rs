//! Replicated tables on top of membership (the NetworkDB idea), pure:
//! entries `(table, scope, key) -> value`, owned by the node that wrote
//! them and ordered by Lamport clocks (a later write wins; equal clocks are
//! broken by owner name). Deletes leave tombstones, reaped after a timeout.
//! A scope (e.g. a network id) is only replicated among the nodes that
//! joined it; which node joined which scope is itself an entry of the
//! reserved table [`SCOPES`] in the global scope `""`, which reaches every
//! node. Entries of a node declared dead or left go away after a grace.
//! The engine moves entries around (broadcasts, bulk sync); this module
//! decides what an incoming entry changes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::msgpack::{self, Value, Writer};

/// The reserved table recording scope membership: key = `scope`, owner =
/// the node, present = joined.
pub const SCOPES: &str = "__scopes";

/// One entry as replicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub table: String,
    pub scope: String,
    pub key: String,
    pub value: Vec<u8>,
    pub owner: String,
    pub ltime: u64,
    pub deleted: bool,
}

/// What subscribers hear when an entry changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableEvent {
    Put(Entry),
    Delete(Entry),
}

struct Slot {
    e: Entry,
    /// When the tombstone (or an orphaned entry) is dropped.
    reap_at: Option<Instant>,
}

/// The replicated store of one node.
pub struct Tables {
    me: String,
    clock: u64,
    /// (table, scope, key, owner) -> slot. The owner is part of the key:
    /// for [`SCOPES`] every node owns its own row; for other tables the
    /// latest writer wins (see [`Tables::apply`]).
    slots: BTreeMap<(String, String, String), Slot>,
    pub tombstone_ttl: Duration,
    pub owner_grace: Duration,
}

impl Tables {
    pub fn new(me: &str) -> Tables {
        Tables {
            me: me.to_owned(),
            clock: 0,
            slots: BTreeMap::new(),
            tombstone_ttl: Duration::from_secs(300),
            owner_grace: Duration::from_secs(60),
        }
    }

    fn slot_key(e: &Entry) -> (String, String, String) {
        // Scope membership rows are per node.
        let key = if e.table == SCOPES { format!("{}\0{}", e.key, e.owner) } else { e.key.clone() };
        (e.table.clone(), e.scope.clone(), key)
    }

    /// A local write (or delete): ticks the clock and returns the entry to
    /// replicate.
    pub fn write(&mut self, table: &str, scope: &str, key: &str, value: Option<Vec<u8>>, now: Instant) -> Entry {
        self.clock += 1;
        let e = Entry {
            table: table.to_owned(),
            scope: scope.to_owned(),
            key: key.to_owned(),
            deleted: value.is_none(),
            value: value.unwrap_or_default(),
            owner: self.me.clone(),
            ltime: self.clock,
        };
        self.apply(e.clone(), now);
        e
    }

    /// Applies an entry from anywhere; returns the event if it changed
    /// something (the caller then re-broadcasts it).
    pub fn apply(&mut self, e: Entry, now: Instant) -> Option<TableEvent> {
        self.clock = self.clock.max(e.ltime);
        let k = Self::slot_key(&e);
        if let Some(old) = self.slots.get(&k)
            && (old.e.ltime, &old.e.owner) >= (e.ltime, &e.owner)
        {
            return None;
        }
        let reap_at = e.deleted.then_some(now + self.tombstone_ttl);
        let was_live = self.slots.get(&k).is_some_and(|s| !s.e.deleted);
        self.slots.insert(k, Slot { e: e.clone(), reap_at });
        match (e.deleted, was_live) {
            (false, _) => Some(TableEvent::Put(e)),
            (true, true) => Some(TableEvent::Delete(e)),
            (true, false) => None,
        }
    }

    /// Live entries of a table in a scope.
    pub fn list(&self, table: &str, scope: &str) -> Vec<Entry> {
        self.slots
            .values()
            .filter(|s| !s.e.deleted && s.e.table == table && s.e.scope == scope)
            .map(|s| s.e.clone())
            .collect()
    }

    /// The nodes that joined `scope` (per the [`SCOPES`] rows).
    pub fn members_of(&self, scope: &str) -> BTreeSet<String> {
        self.slots
            .values()
            .filter(|s| !s.e.deleted && s.e.table == SCOPES && s.e.key == scope)
            .map(|s| s.e.owner.clone())
            .collect()
    }

    /// Scopes `node` joined.
    pub fn scopes_of(&self, node: &str) -> BTreeSet<String> {
        self.slots
            .values()
            .filter(|s| !s.e.deleted && s.e.table == SCOPES && s.e.owner == node)
            .map(|s| s.e.key.clone())
            .collect()
    }

    /// Every entry (tombstones too) of the given scopes: what a bulk sync
    /// sends. The global scope `""` is always included.
    pub fn dump(&self, scopes: &BTreeSet<String>) -> Vec<Entry> {
        self.slots
            .values()
            .filter(|s| s.e.scope.is_empty() || scopes.contains(&s.e.scope))
            .map(|s| s.e.clone())
            .collect()
    }

    /// A node was declared dead or left: its entries go after the grace.
    pub fn owner_gone(&mut self, node: &str, now: Instant) {
        let at = now + self.owner_grace;
        for s in self.slots.values_mut().filter(|s| s.e.owner == node && !s.e.deleted) {
            s.reap_at = Some(at);
        }
    }

    /// The node is back: its entries stay.
    pub fn owner_back(&mut self, node: &str) {
        for s in self.slots.values_mut().filter(|s| s.e.owner == node && !s.e.deleted) {
            s.reap_at = None;
        }
    }

    /// Drops reaped tombstones and orphaned entries; returns deletes to
    /// report (orphans were live).
    pub fn reap(&mut self, now: Instant) -> Vec<TableEvent> {
        let due: Vec<_> =
            self.slots.iter().filter(|(_, s)| s.reap_at.is_some_and(|t| t <= now)).map(|(k, _)| k.clone()).collect();
        let mut out = Vec::new();
        for k in due {
            if let Some(s) = self.slots.remove(&k)
                && !s.e.deleted
            {
                out.push(TableEvent::Delete(Entry { deleted: true, ..s.e }));
            }
        }
        out
    }

    pub fn next_reap(&self) -> Option<Instant> {
        self.slots.values().filter_map(|s| s.reap_at).min()
    }
}

/// First byte of netd's table messages inside memberlist user messages
/// (serf ignores types it does not know).
pub const USER_TAG: u8 = 0xAA;

/// Encodes entries as one user message payload (after memberlist's type).
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut w = Writer { buf: vec![USER_TAG] };
    w.buf.push(0xdd);
    w.buf.extend((entries.len() as u32).to_be_bytes());
    for e in entries {
        w.map(7).key("T").raw(e.table.as_bytes()).key("S").raw(e.scope.as_bytes()).key("K").raw(e.key.as_bytes());
        w.key("V").raw(&e.value).key("O").raw(e.owner.as_bytes()).key("L").uint(e.ltime).key("D").bool(e.deleted);
    }
    w.buf
}

fn text(v: &Value, k: &'static str) -> Result<String, msgpack::DecodeError> {
    let b = v.get(k).and_then(Value::as_bytes).ok_or(msgpack::DecodeError::Field { field: k, why: "missing" })?;
    String::from_utf8(b.to_vec()).map_err(|_| msgpack::DecodeError::Field { field: k, why: "not UTF-8" })
}

/// Decodes a payload made by [`encode`].
pub fn decode(buf: &[u8]) -> Result<Vec<Entry>, msgpack::DecodeError> {
    let Some((&USER_TAG, rest)) = buf.split_first() else {
        return Err(msgpack::DecodeError::Field { field: "tag", why: "not a table message" });
    };
    let (v, _) = msgpack::decode(rest)?;
    let Value::Array(items) = v else {
        return Err(msgpack::DecodeError::Field { field: "entries", why: "not an array" });
    };
    items
        .iter()
        .map(|i| {
            Ok(Entry {
                table: text(i, "T")?,
                scope: text(i, "S")?,
                key: text(i, "K")?,
                value: i.get("V").and_then(Value::as_bytes).unwrap_or_default().to_vec(),
                owner: text(i, "O")?,
                ltime: i
                    .get("L")
                    .and_then(Value::as_u64)
                    .ok_or(msgpack::DecodeError::Field { field: "L", why: "missing" })?,
                deleted: matches!(i.get("D"), Some(Value::Bool(true))),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        Instant::now() + Duration::from_secs(s)
    }

    #[test]
    fn later_writes_win_and_tombstones_reap() {
        let t0 = at(0);
        let mut a = Tables::new("a");
        let mut b = Tables::new("b");
        let e1 = a.write("ep", "net1", "c1", Some(b"10.0.0.2".to_vec()), t0);
        assert!(matches!(b.apply(e1.clone(), t0), Some(TableEvent::Put(_))));
        assert_eq!(b.apply(e1.clone(), t0), None, "idempotent");
        // b overwrites (its clock witnessed a's), a gets it.
        let e2 = b.write("ep", "net1", "c1", Some(b"10.0.0.3".to_vec()), t0);
        assert!(e2.ltime > e1.ltime);
        assert!(a.apply(e2.clone(), t0).is_some());
        assert_eq!(a.apply(e1, t0), None, "an older write loses");
        assert_eq!(a.list("ep", "net1")[0].value, b"10.0.0.3");
        // Delete: a tombstone, gone after the TTL.
        let d = a.write("ep", "net1", "c1", None, t0);
        assert!(matches!(b.apply(d, t0), Some(TableEvent::Delete(_))));
        assert!(b.list("ep", "net1").is_empty());
        assert_eq!(b.dump(&["net1".to_owned()].into()).len(), 1, "the tombstone is kept for sync");
        assert!(b.reap(t0 + b.tombstone_ttl).is_empty());
        assert!(b.dump(&["net1".to_owned()].into()).is_empty());
    }

    #[test]
    fn scopes_and_dead_owners() {
        let t0 = at(0);
        let mut a = Tables::new("a");
        a.write(SCOPES, "", "net1", Some(vec![]), t0);
        let mut remote = Tables::new("b");
        let j = remote.write(SCOPES, "", "net1", Some(vec![]), t0);
        a.apply(j, t0);
        assert_eq!(a.members_of("net1"), ["a".to_owned(), "b".to_owned()].into());
        let e = remote.write("ep", "net1", "x", Some(vec![1]), t0);
        a.apply(e, t0);
        assert_eq!(a.dump(&BTreeSet::new()).len(), 2, "only global rows without net1");
        a.owner_gone("b", t0);
        a.owner_back("b");
        assert!(a.reap(t0 + a.owner_grace).is_empty(), "came back in time");
        a.owner_gone("b", t0);
        let gone = a.reap(t0 + a.owner_grace);
        assert_eq!(gone.len(), 2, "b's scope row and entry");
        assert_eq!(a.members_of("net1"), ["a".to_owned()].into());
    }

    #[test]
    fn codec_round_trips_and_refuses_garbage() {
        let mut a = Tables::new("a");
        let e = a.write("t", "s", "k", Some(vec![1, 2]), at(0));
        assert_eq!(decode(&encode(std::slice::from_ref(&e))).unwrap(), vec![e]);
        assert!(decode(&[0xAA, 0x91, 0x80]).is_err());
        assert!(decode(&[0x00]).is_err());
        assert!(decode(&[]).is_err());
    }
}
