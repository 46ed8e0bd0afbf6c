//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), with weights.
//!
//! A lookup table of `m` slots (a prime; 16381 by default) is filled from
//! each backend's permutation of the slots (`offset + j * skip mod m`,
//! offset and skip from two hashes of the backend's stable name), the
//! backends taking turns. A flow hashes to a slot; the slot names its
//! backend. Every backend gets `m / n` slots give or take one (weights
//! scale the turns), and removing a backend moves little more than its own
//! slots, so established flows elsewhere keep their backend even before
//! connection tracking is consulted. The hashes are fixed (FNV-1a), so a
//! restarted daemon computes the same table.

/// The default table size (prime, as Maglev needs; Cilium's default too).
pub const DEFAULT_SIZE: u32 = 16381;

/// What is wrong with a table request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error("table size {0} is not a prime")]
    NotPrime(u32),
    #[error("table size {size} is smaller than the {backends} backends x 100 it needs to spread them evenly")]
    TooSmall { size: u32, backends: usize },
    #[error("backend {0:?} has weight 0: give it a weight or leave it out")]
    ZeroWeight(String),
    #[error("backend {0:?} appears twice")]
    Duplicate(String),
}

/// A backend as the table sees it: a stable name (e.g. `10.0.1.5:80/tcp`)
/// and a weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub name: String,
    pub weight: u32,
}

fn fnv1a(data: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // A final mix: FNV's low bits are weak for short, similar names.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Whether `n` is prime (trial division; table sizes are small).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// The lookup table: slot -> index into `backends`. Empty when there are
/// no backends.
pub fn table(backends: &[Backend], m: u32) -> Result<Vec<u32>, MaglevError> {
    if !is_prime(m) {
        return Err(MaglevError::NotPrime(m));
    }
    if backends.is_empty() {
        return Ok(Vec::new());
    }
    if (m as usize) < backends.len() * 100 {
        return Err(MaglevError::TooSmall { size: m, backends: backends.len() });
    }
    let mut names = std::collections::HashSet::new();
    for b in backends {
        if b.weight == 0 {
            return Err(MaglevError::ZeroWeight(b.name.clone()));
        }
        if !names.insert(b.name.as_str()) {
            return Err(MaglevError::Duplicate(b.name.clone()));
        }
    }
    let m64 = u64::from(m);
    let perm: Vec<(u64, u64)> = backends
        .iter()
        .map(|b| (fnv1a(b.name.as_bytes(), 0) % m64, fnv1a(b.name.as_bytes(), 0x9e37_79b9_7f4a_7c15) % (m64 - 1) + 1))
        .collect();
    let max_w = backends.iter().map(|b| u64::from(b.weight)).max().unwrap_or(1);
    let mut next = vec![0u64; backends.len()];
    let mut entry = vec![u32::MAX; m as usize];
    let mut filled = 0u32;
    let mut round = 0u64;
    while filled < m {
        for (i, b) in backends.iter().enumerate() {
            // Weighted turns: the heaviest backend places one slot every
            // round, a backend of weight w one in about max/w rounds.
            let w = u64::from(b.weight);
            if (round + 1) * w / max_w == round * w / max_w {
                continue;
            }
            let (offset, skip) = perm[i];
            let mut c = (offset + next[i] * skip) % m64;
            while entry[c as usize] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m64;
            }
            entry[c as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == m {
                break;
            }
        }
        round += 1;
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: usize) -> Vec<Backend> {
        (0..n).map(|i| Backend { name: format!("10.0.{}.{}:80/tcp", i / 250, i % 250 + 1), weight: 1 }).collect()
    }

    fn counts(t: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &e in t {
            c[e as usize] += 1;
        }
        c
    }

    #[test]
    fn every_slot_is_filled_and_backends_get_equal_shares() {
        for n in [1, 2, 3, 10, 100] {
            let t = table(&backends(n), DEFAULT_SIZE).unwrap();
            assert_eq!(t.len(), DEFAULT_SIZE as usize);
            let c = counts(&t, n);
            let (lo, hi) = (c.iter().min().copied().unwrap(), c.iter().max().copied().unwrap());
            assert!(hi - lo <= 1, "n={n}: shares {lo}..{hi}");
        }
    }

    #[test]
    fn weights_scale_the_shares() {
        let mut b = backends(3);
        b[1].weight = 2;
        b[2].weight = 4;
        let c = counts(&table(&b, DEFAULT_SIZE).unwrap(), 3);
        let unit = DEFAULT_SIZE as f64 / 7.0;
        for (i, w) in [1.0, 2.0, 4.0].iter().enumerate() {
            let share = c[i] as f64 / (unit * w);
            assert!((0.97..1.03).contains(&share), "backend {i}: {} slots for weight {w} ({share:.3})", c[i]);
        }
    }

    #[test]
    fn removing_a_backend_moves_little_more_than_its_slots() {
        let all = backends(10);
        let before = table(&all, DEFAULT_SIZE).unwrap();
        let gone = 3usize;
        let rest: Vec<Backend> = all.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, b)| b.clone()).collect();
        let after = table(&rest, DEFAULT_SIZE).unwrap();
        // Map indexes of the smaller set back to names.
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b as usize != gone && all[**b as usize].name != rest[**a as usize].name)
            .count();
        // Slots of surviving backends that changed owner: Maglev promises
        // few (the paper measures a few percent); a modulo hash would move
        // about 90% here.
        let frac = moved as f64 / DEFAULT_SIZE as f64;
        assert!(frac < 0.05, "{:.1}% of the survivors' slots moved", frac * 100.0);
    }

    #[test]
    fn the_table_is_the_same_every_time() {
        assert_eq!(table(&backends(7), 251 * 3 + 2).ok(), None, "755 is not prime");
        assert_eq!(table(&backends(7), 1009).unwrap(), table(&backends(7), 1009).unwrap());
        // Order of the list matters only for indexes, not for who owns a slot.
        let b = backends(5);
        let mut r = b.clone();
        r.reverse();
        let (t1, t2) = (table(&b, 1009).unwrap(), table(&r, 1009).unwrap());
        let same = t1.iter().zip(&t2).filter(|(x, y)| b[**x as usize].name == r[**y as usize].name).count();
        assert!(same as f64 / 1009.0 > 0.9, "{same} of 1009 slots agree");
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(table(&backends(2), 100), Err(MaglevError::NotPrime(100)));
        assert_eq!(table(&backends(20), 1009), Err(MaglevError::TooSmall { size: 1009, backends: 20 }));
        let mut b = backends(2);
        b[0].weight = 0;
        assert!(matches!(table(&b, 1009), Err(MaglevError::ZeroWeight(_))));
        let d = vec![backends(1)[0].clone(), backends(1)[0].clone()];
        assert!(matches!(table(&d, 1009), Err(MaglevError::Duplicate(_))));
        assert_eq!(table(&[], 1009), Ok(vec![]));
    }
}
