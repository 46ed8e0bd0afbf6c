//! The daemon's own records, as kept in the store. They are stable on-disk
//! shapes, separate from the Docker API's JSON (see `api::types`), so the API
//! can evolve without a store migration and vice versa.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::NetworkId;

/// A network driver netd knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Bridge,
    Host,
    /// The `none` network's driver (Docker calls it `null`).
    Null,
    Overlay,
}

impl Driver {
    /// The driver's name in the Docker API.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Host => "host",
            Driver::Null => "null",
            Driver::Overlay => "overlay",
        }
    }

    /// Looks a driver up by its API name.
    pub fn from_name(s: &str) -> Option<Driver> {
        match s {
            "bridge" => Some(Driver::Bridge),
            "host" => Some(Driver::Host),
            "null" => Some(Driver::Null),
            "overlay" => Some(Driver::Overlay),
            _ => None,
        }
    }

    /// Whether this netd can create networks with the driver yet.
    pub fn implemented(self) -> bool {
        matches!(self, Driver::Bridge | Driver::Host | Driver::Null)
    }
}

/// Where a network is known: this node only, or the whole cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Local,
    Swarm,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Swarm => "swarm",
        }
    }
}

/// One address pool of a network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamPool {
    pub subnet: String,
    #[serde(default)]
    pub ip_range: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
}

/// A network as netd stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: NetworkId,
    pub name: String,
    pub driver: Driver,
    pub scope: Scope,
    /// Creation time, RFC 3339 with nanoseconds.
    pub created: String,
    /// Pre-defined networks (bridge, host, none) cannot be removed.
    pub predefined: bool,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub enable_ipv6: bool,
    pub ipam_driver: String,
    pub ipam: Vec<IpamPool>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

impl NetworkRecord {
    /// The three networks every node has from its first start, as Docker has.
    pub fn predefined_set(now: &str) -> Vec<NetworkRecord> {
        let mk = |name: &str, driver: Driver, options: &[(&str, &str)]| NetworkRecord {
            id: NetworkId::random(),
            name: name.to_owned(),
            driver,
            scope: Scope::Local,
            created: now.to_owned(),
            predefined: true,
            internal: false,
            attachable: false,
            ingress: false,
            enable_ipv6: false,
            ipam_driver: "default".to_owned(),
            ipam: Vec::new(),
            options: options.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            labels: BTreeMap::new(),
        };
        vec![
            mk(
                "bridge",
                Driver::Bridge,
                &[
                    ("com.docker.network.bridge.default_bridge", "true"),
                    ("com.docker.network.bridge.enable_icc", "true"),
                    ("com.docker.network.bridge.enable_ip_masquerade", "true"),
                    ("com.docker.network.bridge.name", "netd0"),
                    ("com.docker.network.driver.mtu", "1500"),
                ],
            ),
            mk("host", Driver::Host, &[]),
            mk("none", Driver::Null, &[]),
        ]
    }
}

/// A container's attachment to a network, recorded in the container from
/// creation (or `network connect`) to removal (or `network disconnect`): the
/// address it holds is allocated as long as this record exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// 64 hex digits, as Docker's EndpointID.
    pub id: String,
    pub network: NetworkId,
    /// The network's name when attached (names are unique, ids are the key).
    pub network_name: String,
    pub ip: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
    /// `02:42:...`, derived from the address as Docker does.
    pub mac: String,
    /// Interface name inside the container (`eth0`, `eth1`...).
    pub ifname: String,
    pub aliases: Vec<String>,
    /// Asked for with `--ip`.
    pub static_ip: bool,
}

impl Endpoint {
    /// The host side of the veth: `veth` + 7 hex digits of the endpoint id.
    pub fn host_ifname(&self) -> String {
        format!("veth{}", &self.id[..7])
    }
}

/// A published port of a running container: where it listens on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub proto: crate::firewall::Proto,
    pub container_port: u16,
    pub host_ip: Option<std::net::Ipv4Addr>,
    pub host_port: u16,
}

/// Names Docker accepts for networks (and later containers).
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && name.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predefined_networks_are_bridge_host_none() {
        let set = NetworkRecord::predefined_set("2026-01-01T00:00:00Z");
        let names: Vec<_> = set.iter().map(|n| (n.name.as_str(), n.driver.as_str())).collect();
        assert_eq!(names, [("bridge", "bridge"), ("host", "host"), ("none", "null")]);
        assert!(set.iter().all(|n| n.predefined));
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(valid_name("my-net_1.a"));
        for bad in ["", "-x", ".x", "a b", "a/b", "ä"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
