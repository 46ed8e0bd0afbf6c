//! netd's firewall: one nftables table, `ip netd`, rendered whole from the
//! networks and published ports ([`render`], pure) and replaced in a single
//! nft transaction ([`apply`]): the kernel swaps the old table for the new one
//! atomically, no packet sees half a ruleset, and no other table is touched.
//!
//! The rules (the seed's isolation model, as Docker's bridge driver has it):
//! - forward: replies of tracked connections pass; traffic between two
//!   containers of one bridge passes; published ports (DNATed) pass to their
//!   container; anything else entering a bridge is dropped (other networks,
//!   other nodes); an internal bridge's traffic leaving it is dropped.
//! - nat: published ports are DNATed when addressed to a local address (also
//!   from the node itself and from containers: hairpin); traffic from a
//!   non-internal network leaving it is masqueraded; hairpin and localhost
//!   connections to published ports are masqueraded so replies come back.
//!
//! The table is applied with `nft -f -` (Debian's nftables): one transaction per
//! change, never an `ip`/`iptables` fork per rule.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;

use crate::ipam::Ipv4Net;

/// Marks of the eBPF datapath on published service traffic (`ebpf::maps`):
/// let into the bridge; masquerade (SNAT mode).
const LB_MARK_NORTH_SOUTH: u32 = ebpf::maps::MARK_NORTH_SOUTH;
const LB_MARK_SNAT: u32 = ebpf::maps::MARK_SNAT;

/// The table netd owns (family `ip`).
pub const TABLE: &str = "netd";

/// A failed firewall change.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run nft (install Debian's nftables package: `cargo xtask setup`): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused netd's ruleset: {0}")]
    Nft(String),
}

/// A transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One bridge network as the firewall sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub internal: bool,
}

/// One published port of a running container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    pub proto: Proto,
    /// Only this local address (`-p 127.0.0.1:80:80`), else every one.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub bridge: String,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

/// Everything the table expresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub bridges: Vec<BridgeRules>,
    pub publish: Vec<Publish>,
}

/// The nft script that replaces the table with `rules` (or removes it when
/// there is nothing to express). Names are quoted; netd makes them.
pub fn render(rules: &Ruleset) -> String {
    let mut s = format!("table ip {TABLE}\ndelete table ip {TABLE}\n");
    if rules.bridges.is_empty() {
        return s;
    }
    let _ = writeln!(s, "table ip {TABLE} {{");
    s.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n");
    s.push_str("    fib daddr type local jump publish\n  }\n");
    s.push_str("  chain output {\n    type nat hook output priority -100; policy accept;\n");
    s.push_str("    fib daddr type local jump publish\n  }\n");
    s.push_str("  chain publish {\n");
    let mut publish = rules.publish.clone();
    // Address-specific bindings win over wildcard ones.
    publish.sort_by_key(|p| (p.host_ip.is_none(), p.host_port, p.proto));
    for p in &publish {
        let daddr = p.host_ip.map(|a| format!("ip daddr {a} ")).unwrap_or_default();
        let _ = writeln!(
            s,
            "    {daddr}{} dport {} dnat to {}:{}",
            p.proto.as_str(),
            p.host_port,
            p.container_ip,
            p.container_port
        );
    }
    s.push_str("  }\n");
    s.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    s.push_str("    ct state established,related accept\n");
    for b in &rules.bridges {
        let _ = writeln!(s, "    iifname \"{0}\" oifname \"{0}\" accept", b.bridge);
    }
    for p in &publish {
        let _ = writeln!(
            s,
            "    oifname \"{}\" ip daddr {} {} dport {} ct status dnat accept",
            p.bridge,
            p.container_ip,
            p.proto.as_str(),
            p.container_port
        );
    }
    // Published service ports, balanced (DNATed) by the eBPF datapath
    // before conntrack sees them: the datapath marks them.
    let _ = writeln!(s, "    meta mark & {LB_MARK_NORTH_SOUTH:#x} == {LB_MARK_NORTH_SOUTH:#x} accept");
    for b in &rules.bridges {
        let _ = writeln!(s, "    oifname \"{}\" drop", b.bridge);
        if b.internal {
            let _ = writeln!(s, "    iifname \"{}\" drop", b.bridge);
        }
    }
    s.push_str("  }\n");
    s.push_str("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n");
    let _ = writeln!(s, "    meta mark & {LB_MARK_SNAT:#x} == {LB_MARK_SNAT:#x} masquerade");
    for b in &rules.bridges {
        let _ = writeln!(s, "    oifname \"{}\" ip saddr 127.0.0.0/8 masquerade", b.bridge);
        let _ = writeln!(s, "    oifname \"{}\" ip saddr {} ct status dnat masquerade", b.bridge, b.subnet);
        if !b.internal {
            let _ = writeln!(s, "    oifname != \"{}\" ip saddr {} masquerade", b.bridge, b.subnet);
        }
    }
    s.push_str("  }\n}\n");
    s
}

/// Replaces netd's table with `script` in one nft transaction.
pub fn apply(script: &str) -> Result<(), FirewallError> {
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(FirewallError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(FirewallError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(FirewallError::Spawn)?;
    if !out.status.success() {
        return Err(FirewallError::Nft(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_ruleset_removes_the_table() {
        assert_eq!(render(&Ruleset::default()), "table ip netd\ndelete table ip netd\n");
    }

    #[test]
    fn rules_isolate_publish_and_masquerade() {
        let rules = Ruleset {
            bridges: vec![
                BridgeRules { bridge: "br-a".into(), subnet: "172.18.0.0/16".parse().unwrap(), internal: false },
                BridgeRules { bridge: "br-i".into(), subnet: "172.19.0.0/16".parse().unwrap(), internal: true },
            ],
            publish: vec![
                Publish {
                    proto: Proto::Tcp,
                    host_ip: None,
                    host_port: 8080,
                    bridge: "br-a".into(),
                    container_ip: Ipv4Addr::new(172, 18, 0, 2),
                    container_port: 80,
                },
                Publish {
                    proto: Proto::Udp,
                    host_ip: Some(Ipv4Addr::LOCALHOST),
                    host_port: 5353,
                    bridge: "br-a".into(),
                    container_ip: Ipv4Addr::new(172, 18, 0, 3),
                    container_port: 53,
                },
            ],
        };
        let s = render(&rules);
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle:?} missing in\n{s}"));
        // Specific address first, then the wildcard.
        assert!(pos("ip daddr 127.0.0.1 udp dport 5353 dnat to 172.18.0.3:53") < pos("tcp dport 8080 dnat to"));
        // Published traffic is accepted before the bridge's catch-all drop.
        assert!(
            pos("oifname \"br-a\" ip daddr 172.18.0.2 tcp dport 80 ct status dnat accept")
                < pos("oifname \"br-a\" drop")
        );
        assert!(pos("iifname \"br-a\" oifname \"br-a\" accept") < pos("oifname \"br-a\" drop"));
        // Service traffic the eBPF datapath balanced from outside: in, and
        // masqueraded in SNAT mode.
        assert!(pos("meta mark & 0x10000000 == 0x10000000 accept") < pos("oifname \"br-a\" drop"));
        pos("meta mark & 0x20000000 == 0x20000000 masquerade");
        pos("iifname \"br-i\" drop");
        pos("oifname != \"br-a\" ip saddr 172.18.0.0/16 masquerade");
        assert!(!s.contains("oifname != \"br-i\""), "internal networks are not masqueraded:\n{s}");
        assert!(!s.contains("iifname \"br-a\" drop"), "non-internal networks have egress:\n{s}");
    }
}
