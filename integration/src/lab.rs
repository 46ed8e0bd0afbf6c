//! A lab: the underlay namespace with its bridge, N node namespaces joined to
//! it, and a scratch directory for the nodes' roots. Dropping the lab stops
//! every netd, kills what runs in its namespaces and deletes them all.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns::{self, Netns};
use crate::node::Node;
use crate::sweep;

/// Prefix of every lab object's name.
pub const PREFIX: &str = "ndlab";
/// The lab's underlay subnet (RFC 2544 benchmarking range), /24.
pub const UNDERLAY: [u8; 3] = [198, 18, 0];

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A lab failure.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} failed ({status}): {stderr}")]
    Command { cmd: String, status: String, stderr: String },
    #[error("{what} did not happen within {secs} s{detail}")]
    Timeout { what: String, secs: u64, detail: String },
    #[error("{0}")]
    Netd(String),
}

/// A running lab; everything goes away when it is dropped.
#[derive(Debug)]
pub struct Lab {
    pub id: String,
    pub dir: PathBuf,
    underlay: Netns,
    nodes: Vec<Node>,
}

impl Lab {
    /// Builds a lab of `n` nodes (no netd started yet).
    pub fn new(n: usize) -> Result<Lab, LabError> {
        assert!((1..=200).contains(&n), "a lab has 1..=200 nodes");
        sweep::sweep_once();
        let id = format!("{PREFIX}{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::Io { op: format!("create {}", dir.display()), source: e })?;
        let underlay = match Netns::create(&format!("{id}-u")) {
            Ok(u) => u,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut lab = Lab { id, dir, underlay, nodes: Vec::new() };
        lab.underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
        lab.underlay.ip(&["link", "set", "br0", "up"])?;
        for i in 0..n {
            let node = lab.add_node(i)?;
            lab.nodes.push(node);
        }
        Ok(lab)
    }

    fn add_node(&self, i: usize) -> Result<Node, LabError> {
        let ns = Netns::create(&format!("{}-n{i}", self.id))?;
        let veth = format!("v{i}");
        self.underlay.ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns.name])?;
        self.underlay.ip(&["link", "set", &veth, "master", "br0", "up"])?;
        let addr = Ipv4Addr::new(UNDERLAY[0], UNDERLAY[1], UNDERLAY[2], 10 + i as u8);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        let dir = self.dir.join(format!("n{i}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::Io { op: format!("create {}", dir.display()), source: e })?;
        Ok(Node::new(i, format!("node{}", i + 1), ns, addr, dir))
    }

    /// Node `i` (0-based).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Starts netd on every node and waits until each answers `/_ping`.
    pub fn start_all(&self) -> Result<(), LabError> {
        for n in &self.nodes {
            n.start_netd(&[])?;
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for n in &self.nodes {
            if panicking {
                n.dump_log_tail(40);
            }
            n.stop_netd_quietly();
        }
        for n in &self.nodes {
            netns::delete(&n.netns.name);
            n.remove_cgroups();
        }
        netns::delete(&self.underlay.name);
        // Extra namespaces a test or bench made under the lab's name.
        let mine = format!("{}-", self.id);
        for e in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&mine) {
                netns::delete(&name);
            }
        }
        if std::env::var_os("NETD_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
