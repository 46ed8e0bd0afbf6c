//! Membership configuration, with memberlist's presets: [`Config::lan`]
//! (its `DefaultLANConfig`), [`Config::wan`] and [`Config::local`].

use std::net::SocketAddr;
use std::time::Duration;

/// How one member behaves. Durations as memberlist names them.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Unique node name (the host name unless configured).
    pub name: String,
    /// Where UDP and TCP listen (default port 7946).
    pub bind: SocketAddr,
    /// What other members are told to use (default: `bind`).
    pub advertise: SocketAddr,
    /// Timeout of TCP streams (push-pull, joins).
    pub tcp_timeout: Duration,
    /// Members asked to probe a node that missed its direct ping.
    pub indirect_checks: usize,
    /// Broadcasts are retransmitted `mult * ceil(log10(n + 1))` times.
    pub retransmit_mult: u32,
    /// Suspicion timeout = mult * max(1, log10(n)) * probe interval.
    pub suspicion_mult: u32,
    /// Upper bound of the suspicion timeout, as a multiple of the lower one.
    pub suspicion_max_timeout_mult: u32,
    /// Full state exchange with one random member (scaled above 32 members).
    pub push_pull_interval: Duration,
    pub probe_timeout: Duration,
    pub probe_interval: Duration,
    /// Local health (Lifeguard): probe timeouts stretch up to this factor.
    pub awareness_max_multiplier: u32,
    /// Members each gossip round sends to.
    pub gossip_nodes: usize,
    pub gossip_interval: Duration,
    /// Dead members still receive gossip this long (they may be partitioned).
    pub gossip_to_the_dead_time: Duration,
    /// Largest UDP packet sent.
    pub udp_buffer_size: usize,
    /// Protocol versions spoken: min, max, current (memberlist's 1..5, 2).
    pub protocol: [u8; 3],
    /// Delegate (application) protocol versions: min, max, current. serf
    /// checks these: 2, 5, 4 speaks with serf 0.8.
    pub delegate: [u8; 3],
    /// Node metadata (at most 512 bytes).
    pub meta: Vec<u8>,
    /// Encryption: when set, every packet and stream is AES-GCM encrypted
    /// with the primary key, and plaintext or undecryptable ones are dropped.
    pub keyring: Option<crate::security::Keyring>,
    /// memberlist's `Label`: prefixed to every packet and stream (and
    /// authenticated with them when encrypted); packets and streams with
    /// another label (or none) are dropped, so clusters sharing a network
    /// (or a key) stay apart. Empty: no label. At most 255 bytes.
    pub label: Vec<u8>,
    /// Replicated tables: deleted entries are remembered this long.
    pub tombstone_ttl: Duration,
    /// Entries of a member declared dead or left go away after this grace.
    pub owner_grace: Duration,
    /// When a probe over UDP goes unanswered, also ping the member over TCP
    /// (memberlist's default; its `DisableTcpPings` is the opposite).
    pub tcp_pings: bool,
    /// Member events kept for a subscriber that has not read them yet (and
    /// four times as many table events); one further behind misses the
    /// oldest. The buffers are allocated up front: the simulator, with
    /// thousands of members in one process, keeps them small.
    pub event_buffer: usize,
    /// Every interval, a member declared dead (not left) is tried again, as
    /// serf's reconnect does: a push-pull join with one of them at random
    /// (with probability dead / live, so a large failure does not flood).
    /// memberlist alone never heals a partition that outlasts the gossip to
    /// the dead; with this, both sides refute their deaths once they meet.
    pub reconnect_interval: Duration,
    /// Dead members are tried for this long after they were declared dead.
    pub reconnect_timeout: Duration,
    /// While broadcasts are pending, gossip rounds come every quarter of
    /// the gossip interval, the first at once, instead of at the ticks
    /// only: news does not wait half an interval per hop. Each broadcast is
    /// still sent the retransmit limit's number of times, so a change costs
    /// as many transmissions as before, only sooner; at rest (nothing
    /// pending) nothing changes. memberlist waits for its ticks (`false`).
    pub eager_gossip: bool,
}

impl Config {
    /// memberlist's `DefaultLANConfig`.
    pub fn lan(name: &str, bind: SocketAddr) -> Config {
        Config {
            name: name.to_owned(),
            bind,
            advertise: bind,
            tcp_timeout: Duration::from_secs(10),
            indirect_checks: 3,
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            push_pull_interval: Duration::from_secs(30),
            probe_timeout: Duration::from_millis(500),
            probe_interval: Duration::from_secs(1),
            awareness_max_multiplier: 8,
            gossip_nodes: 3,
            gossip_interval: Duration::from_millis(200),
            gossip_to_the_dead_time: Duration::from_secs(30),
            udp_buffer_size: 1400,
            protocol: [1, 5, 2],
            delegate: [2, 5, 4],
            meta: Vec::new(),
            keyring: None,
            label: Vec::new(),
            tombstone_ttl: Duration::from_secs(300),
            owner_grace: Duration::from_secs(60),
            tcp_pings: true,
            event_buffer: 1024,
            reconnect_interval: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(24 * 3600),
            eager_gossip: true,
        }
    }

    /// memberlist's `DefaultWANConfig`.
    pub fn wan(name: &str, bind: SocketAddr) -> Config {
        Config {
            tcp_timeout: Duration::from_secs(30),
            suspicion_mult: 6,
            push_pull_interval: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(3),
            probe_interval: Duration::from_secs(5),
            gossip_nodes: 4,
            gossip_interval: Duration::from_millis(500),
            gossip_to_the_dead_time: Duration::from_secs(60),
            ..Config::lan(name, bind)
        }
    }

    /// memberlist's `DefaultLocalConfig` (loopback, tests).
    pub fn local(name: &str, bind: SocketAddr) -> Config {
        Config {
            tcp_timeout: Duration::from_secs(1),
            indirect_checks: 1,
            retransmit_mult: 2,
            suspicion_mult: 3,
            push_pull_interval: Duration::from_secs(15),
            probe_timeout: Duration::from_millis(200),
            probe_interval: Duration::from_secs(1),
            gossip_interval: Duration::from_millis(100),
            gossip_to_the_dead_time: Duration::from_secs(15),
            ..Config::lan(name, bind)
        }
    }

    /// The 6 version bytes of `alive` and push-pull states.
    pub fn vsn(&self) -> [u8; 6] {
        let [a, b, c] = self.protocol;
        let [d, e, f] = self.delegate;
        [a, b, c, d, e, f]
    }
}

/// memberlist's `suspicionTimeout`: mult * max(1, log10(n)) * interval.
pub fn suspicion_timeout(mult: u32, n: usize, interval: Duration) -> Duration {
    let scale = (n.max(1) as f64).log10().max(1.0);
    Duration::from_millis((f64::from(mult) * scale * interval.as_millis() as f64) as u64)
}

/// memberlist's `retransmitLimit`: mult * ceil(log10(n + 1)).
pub fn retransmit_limit(mult: u32, n: usize) -> u32 {
    mult * ((n as f64 + 1.0).log10().ceil() as u32)
}

/// memberlist's `pushPullScale`: the interval grows past 32 members.
pub fn push_pull_scale(interval: Duration, n: usize) -> Duration {
    const THRESHOLD: usize = 32;
    if n <= THRESHOLD {
        return interval;
    }
    let mult = ((n as f64).log2() - (THRESHOLD as f64).log2()).ceil() + 1.0;
    interval.mul_f64(mult)
}

/// Lifeguard's suspicion: the timeout shrinks from `max` towards `min` as
/// independent confirmations arrive (`k` expected).
pub fn remaining_suspicion(n: u32, k: u32, elapsed: Duration, min: Duration, max: Duration) -> Duration {
    let frac = (f64::from(n) + 1.0).ln() / (f64::from(k) + 1.0).ln();
    let raw = max.as_secs_f64() - frac * (max.as_secs_f64() - min.as_secs_f64());
    let timeout = Duration::from_millis((1000.0 * raw).floor().max(0.0) as u64).max(min);
    timeout.saturating_sub(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_match_memberlist() {
        let s = Duration::from_secs(1);
        assert_eq!(suspicion_timeout(4, 1, s), Duration::from_secs(4));
        assert_eq!(suspicion_timeout(4, 3, s), Duration::from_secs(4), "log10(3) < 1 -> 1");
        assert_eq!(suspicion_timeout(4, 1000, s), Duration::from_secs(12));
        assert_eq!(retransmit_limit(4, 0), 0);
        assert_eq!(retransmit_limit(4, 1), 4);
        assert_eq!(retransmit_limit(4, 99), 8);
        assert_eq!(push_pull_scale(Duration::from_secs(30), 32), Duration::from_secs(30));
        assert_eq!(push_pull_scale(Duration::from_secs(30), 64), Duration::from_secs(60));
        let (min, max) = (Duration::from_secs(4), Duration::from_secs(24));
        assert_eq!(remaining_suspicion(0, 2, Duration::ZERO, min, max), max);
        assert_eq!(remaining_suspicion(2, 2, Duration::ZERO, min, max), min);
        let one = remaining_suspicion(1, 2, Duration::ZERO, min, max);
        assert!(one > min && one < max, "{one:?}");
        assert_eq!(remaining_suspicion(2, 2, Duration::from_secs(10), min, max), Duration::ZERO);
        let lan = Config::lan("a", "127.0.0.1:7946".parse().unwrap());
        assert_eq!(lan.vsn(), [1, 5, 2, 2, 5, 4]);
        assert_eq!(Config::wan("a", lan.bind).probe_interval, Duration::from_secs(5));
        assert_eq!(Config::local("a", lan.bind).indirect_checks, 1);
    }
}
