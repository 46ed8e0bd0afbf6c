//! The member table one member keeps: every member it knows (itself
//! included), sorted by a hash of the name, then the name, for binary
//! search that rarely leaves the table's own memory; each behind an `Arc` so
//! that tables built from one list (the simulator's 10,000 members) share
//! every member that did not change for them; a count of live members kept
//! up to date; and random sampling as memberlist's `kRandomNodes` does it
//! (random offsets, a few tries per wanted member), so that choosing gossip
//! targets or indirect-probe helpers costs O(k), not a scan of N.

use std::sync::Arc;

use rand::seq::SliceRandom;
use tokio::time::Instant;

use crate::memberlist::{Member, MemberState};

/// One known member and when its state last changed.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// [`key`] of the name: compared first, so a lookup reads the member
    /// itself only on a hash match.
    hash: u64,
    pub m: Arc<Member>,
    pub since: Instant,
}

impl Node {
    /// Alive or suspect: probed, gossiped to, counted in the formulas.
    pub fn live(&self) -> bool {
        live(self.m.state)
    }
}

/// The order of the table: a fixed-key hash of the name (stable across
/// runs and members), then the name, so colliding names still sort apart.
fn key(name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

fn live(s: MemberState) -> bool {
    matches!(s, MemberState::Alive | MemberState::Suspect)
}

/// (live, dead) counts of one member.
fn counts(n: &Node) -> (usize, usize) {
    (usize::from(n.live()), usize::from(n.m.state == MemberState::Dead))
}

/// The members, sorted by (hash of the name, name).
#[derive(Debug, Default)]
pub(crate) struct NodeTable {
    list: Vec<Node>,
    live: usize,
    /// Declared dead (not left).
    dead: usize,
}

impl NodeTable {
    /// A table of `known` (the first of each name wins) at `now`.
    pub fn new(known: impl IntoIterator<Item = Arc<Member>>, now: Instant) -> NodeTable {
        let mut list: Vec<Node> = known.into_iter().map(|m| Node { hash: key(&m.name), m, since: now }).collect();
        // Stable: of two members with one name, the first stays first.
        list.sort_by(|a, b| (a.hash, &a.m.name).cmp(&(b.hash, &b.m.name)));
        list.dedup_by(|b, a| a.m.name == b.m.name);
        let (live, dead) = list.iter().map(counts).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        NodeTable { list, live, dead }
    }

    fn pos(&self, name: &str) -> Result<usize, usize> {
        let h = key(name);
        self.list.binary_search_by(|n| n.hash.cmp(&h).then_with(|| n.m.name.as_str().cmp(name)))
    }

    pub fn get(&self, name: &str) -> Option<&Node> {
        self.pos(name).ok().map(|i| &self.list[i])
    }

    /// The member at a position (as [`NodeTable::insert`] returned it, or
    /// below [`NodeTable::len`]).
    pub fn at(&self, i: usize) -> Option<&Node> {
        self.list.get(i)
    }

    /// Changes a member (copying it first if another table shares it);
    /// `None` if unknown. The live count follows the change.
    pub fn update<R>(&mut self, name: &str, f: impl FnOnce(&mut Member, &mut Instant) -> R) -> Option<R> {
        let i = self.pos(name).ok()?;
        let n = &mut self.list[i];
        let was = counts(n);
        let r = f(Arc::make_mut(&mut n.m), &mut n.since);
        let now = counts(n);
        self.live = self.live + now.0 - was.0;
        self.dead = self.dead + now.1 - was.1;
        Some(r)
    }

    /// Adds a member not known yet; returns its position (positions at or
    /// after it moved up by one). A known name is replaced instead.
    pub fn insert(&mut self, m: Member, now: Instant) -> usize {
        let node = Node { hash: key(&m.name), m: Arc::new(m), since: now };
        match self.pos(&node.m.name) {
            Ok(i) => {
                let (was, now) = (counts(&self.list[i]), counts(&node));
                self.live = self.live + now.0 - was.0;
                self.dead = self.dead + now.1 - was.1;
                self.list[i] = node;
                i
            }
            Err(i) => {
                let now = counts(&node);
                self.live += now.0;
                self.dead += now.1;
                self.list.insert(i, node);
                i
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Alive or suspect members (self included when alive).
    pub fn live_count(&self) -> usize {
        self.live
    }

    /// Members declared dead (not those that left).
    pub fn dead_count(&self) -> usize {
        self.dead
    }

    /// Up to `k` distinct members that `keep` accepts, at random. Small
    /// tables, or a `k` near the table's size, are scanned whole; large
    /// ones are sampled at random offsets, 3 tries per member of the table
    /// at most, as memberlist does (so a rare accepted member may be missed
    /// when almost none are).
    pub fn sample(&self, k: usize, mut keep: impl FnMut(&Node) -> bool) -> Vec<&Node> {
        let n = self.list.len();
        if n <= 64 || k.saturating_mul(4) >= n {
            let mut v: Vec<&Node> = self.list.iter().filter(|x| keep(x)).collect();
            v.shuffle(&mut rand::rng());
            v.truncate(k);
            return v;
        }
        let mut picked: Vec<usize> = Vec::with_capacity(k);
        for _ in 0..3 * n {
            if picked.len() == k {
                break;
            }
            let i = rand::random_range(0..n);
            if !picked.contains(&i) && keep(&self.list[i]) {
                picked.push(i);
            }
        }
        picked.into_iter().map(|i| &self.list[i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn m(i: usize, state: MemberState) -> Arc<Member> {
        Arc::new(Member {
            name: format!("n{i}"),
            addr: ([10, 0, 0, i as u8], 7946).into(),
            meta: Vec::new(),
            incarnation: 1,
            state,
            vsn: [1, 5, 2, 2, 5, 4],
        })
    }

    #[test]
    fn sorted_lookup_live_count_and_shared_members() {
        let now = Instant::now();
        let known: Vec<Arc<Member>> = (0..100).rev().map(|i| m(i, MemberState::Alive)).collect();
        let mut a = NodeTable::new(known.clone(), now);
        let b = NodeTable::new(known.clone(), now);
        assert_eq!((a.len(), a.live_count()), (100, 100));
        assert_eq!(a.get("n42").map(|n| n.m.addr.port()), Some(7946));
        assert!(a.get("n100").is_none());
        // Both tables share the member until one changes it.
        assert!(Arc::ptr_eq(&a.get("n7").unwrap().m, &b.get("n7").unwrap().m));
        a.update("n7", |m, _| m.state = MemberState::Dead);
        assert_eq!((a.live_count(), a.dead_count()), (99, 1));
        assert_eq!(b.get("n7").unwrap().m.state, MemberState::Alive, "the other table is untouched");
        a.update("n7", |m, _| m.state = MemberState::Suspect);
        assert_eq!((a.live_count(), a.dead_count()), (100, 0));
        assert!(a.update("nobody", |_, _| ()).is_none());
        // Inserting keeps the order (and returns the position).
        let at = a.insert((*m(200, MemberState::Left)).clone(), now);
        assert_eq!(a.at(at).unwrap().m.name, "n200");
        assert_eq!((a.live_count(), a.dead_count()), (100, 0), "left is neither");
        let order: Vec<(u64, &str)> = a.iter().map(|n| (n.hash, n.m.name.as_str())).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        assert!(a.iter().all(|n| a.get(&n.m.name).is_some_and(|x| Arc::ptr_eq(&x.m, &n.m))));
        // A second insert of a name replaces it.
        a.insert((*m(200, MemberState::Alive)).clone(), now);
        assert_eq!((a.len(), a.live_count()), (101, 101));
    }

    #[test]
    fn sample_is_distinct_filtered_and_spread() {
        let now = Instant::now();
        let known = (0..1000).map(|i| m(i, if i % 2 == 0 { MemberState::Alive } else { MemberState::Dead }));
        let t = NodeTable::new(known, now);
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let s = t.sample(3, |n| n.live());
            assert_eq!(s.len(), 3);
            let names: BTreeSet<&str> = s.iter().map(|n| n.m.name.as_str()).collect();
            assert_eq!(names.len(), 3, "distinct");
            assert!(s.iter().all(|n| n.live()));
            seen.extend(names.into_iter().map(str::to_owned));
        }
        assert!(seen.len() > 300, "600 picks spread over the 500 live members: {}", seen.len());
        // Asking for (nearly) everything scans: all accepted members come back.
        assert_eq!(t.sample(usize::MAX, |n| n.live()).len(), 500);
        // Nothing accepted: empty, and bounded work.
        assert!(t.sample(3, |_| false).is_empty());
    }
}
