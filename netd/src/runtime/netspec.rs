//! The networking half of a create request, pure: `HostConfig.NetworkMode`,
//! `NetworkingConfig.EndpointsConfig` (`--network`, `--ip`,
//! `--network-alias`), `HostConfig.PortBindings` (`-p`), `PublishAllPorts`
//! (`-P`) and `Config.ExposedPorts`, validated into [`NetworkRequest`]s and
//! [`PortRequest`]s.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::spec::SpecError;
use crate::firewall::Proto;

fn bad(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError::BadValue { field, message: message.into() }
}

/// One network a container asks to join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    /// Name, id or id prefix as the user gave it (`bridge` = the default one).
    pub network: String,
    /// `--ip`.
    pub ip: Option<Ipv4Addr>,
    /// `--network-alias`.
    pub aliases: Vec<String>,
}

/// One published port as asked: `-p [ip:][hostPort[-end]:]containerPort[/proto]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRequest {
    pub proto: Proto,
    pub container_port: u16,
    pub host_ip: Option<Ipv4Addr>,
    /// Host port range; `(0, 0)` = any free port in the ephemeral range.
    pub host_ports: (u16, u16),
}

/// `NetworkingConfig.EndpointsConfig[name]`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiEndpointSettings {
    #[serde(rename = "IPAMConfig", default)]
    pub ipam: Option<ApiEndpointIpam>,
    #[serde(rename = "Aliases", default)]
    pub aliases: Option<Vec<String>>,
}

/// `EndpointSettings.IPAMConfig`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiEndpointIpam {
    #[serde(rename = "IPv4Address", default)]
    pub ipv4: String,
    #[serde(rename = "IPv6Address", default)]
    pub ipv6: String,
}

/// `NetworkingConfig`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiNetworkingConfig {
    #[serde(rename = "EndpointsConfig", default)]
    pub endpoints: Option<BTreeMap<String, ApiEndpointSettings>>,
}

/// `HostConfig.PortBindings[port][]`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiPortBinding {
    #[serde(rename = "HostIp", default)]
    pub host_ip: String,
    #[serde(rename = "HostPort", default)]
    pub host_port: String,
}

/// Parses `80/tcp` (the proto defaults to tcp).
pub fn parse_port_key(key: &str) -> Result<(u16, Proto), SpecError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => {
            return Err(bad("ExposedPorts", format!("protocol {other:?} of {key:?} is not supported: tcp or udp")));
        }
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((p, proto)),
        _ => Err(bad("ExposedPorts", format!("{key:?} is not a port number (1-65535)"))),
    }
}

fn parse_host_ports(s: &str) -> Result<(u16, u16), SpecError> {
    let one = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad("PortBindings", format!("invalid host port {p:?}: expected 1-65535"))),
    };
    match s.split_once('-') {
        _ if s.is_empty() || s == "0" => Ok((0, 0)),
        None => one(s).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                return Err(bad("PortBindings", format!("invalid host port range {s:?}: start above end")));
            }
            Ok((a, b))
        }
    }
}

/// Validates the port part of a create request.
pub fn ports(
    bindings: Option<BTreeMap<String, Option<Vec<ApiPortBinding>>>>,
    publish_all: bool,
    exposed: &[(u16, Proto)],
) -> Result<Vec<PortRequest>, SpecError> {
    let mut out = Vec::new();
    for (key, list) in bindings.unwrap_or_default() {
        let (container_port, proto) = parse_port_key(&key)?;
        let list = list.unwrap_or_default();
        let list = if list.is_empty() { vec![ApiPortBinding::default()] } else { list };
        for b in list {
            let host_ip = match b.host_ip.as_str() {
                "" | "0.0.0.0" => None,
                // The IPv6 twin of a wildcard binding: IPv4 is all netd publishes yet.
                "::" => continue,
                s => Some(s.parse::<Ipv4Addr>().map_err(|_| {
                    bad(
                        "PortBindings",
                        format!("host IP {s:?} is not an IPv4 address (IPv6 publishing is not done yet)"),
                    )
                })?),
            };
            out.push(PortRequest { proto, container_port, host_ip, host_ports: parse_host_ports(&b.host_port)? });
        }
    }
    if publish_all {
        for (port, proto) in exposed {
            if !out.iter().any(|r| r.container_port == *port && r.proto == *proto) {
                out.push(PortRequest { proto: *proto, container_port: *port, host_ip: None, host_ports: (0, 0) });
            }
        }
    }
    Ok(out)
}

/// Validates `NetworkMode` and `EndpointsConfig`. `None` for the `none` and
/// `host` modes (no endpoints); otherwise the networks to join, the one named
/// by the mode first.
pub fn networks(
    mode: &str,
    endpoints: Option<BTreeMap<String, ApiEndpointSettings>>,
) -> Result<Option<Vec<NetworkRequest>>, SpecError> {
    let mut endpoints = endpoints.unwrap_or_default();
    let primary = match mode {
        "none" | "host" => {
            if endpoints.keys().any(|k| k != mode) {
                return Err(bad(
                    "NetworkMode",
                    format!("a container on the {mode} network cannot join other networks"),
                ));
            }
            return Ok(None);
        }
        "" | "default" => "bridge".to_owned(),
        m if m.starts_with("container:") => {
            return Err(SpecError::Network(format!("{m} (sharing another container's network)")));
        }
        m => m.to_owned(),
    };
    let mut out = Vec::new();
    let mut push = |network: String, s: ApiEndpointSettings| -> Result<(), SpecError> {
        let ipam = s.ipam.unwrap_or_default();
        if !ipam.ipv6.is_empty() {
            return Err(bad("IPv6Address", "IPv6 addresses are not supported yet"));
        }
        let ip = match ipam.ipv4.as_str() {
            "" => None,
            a => Some(a.parse::<Ipv4Addr>().map_err(|_| bad("IPv4Address", format!("{a:?} is not an IPv4 address")))?),
        };
        let aliases = s.aliases.unwrap_or_default();
        if let Some(a) = aliases.iter().find(|a| !crate::model::valid_name(a)) {
            return Err(bad("Aliases", format!("{a:?} is not a valid alias")));
        }
        out.push(NetworkRequest { network, ip, aliases });
        Ok(())
    };
    let first =
        endpoints.remove(&primary).or_else(|| (primary == "bridge").then(|| endpoints.remove("default")).flatten());
    push(primary, first.unwrap_or_default())?;
    for (name, s) in endpoints {
        push(name, s)?;
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bindings_parse() {
        let b: BTreeMap<String, Option<Vec<ApiPortBinding>>> = serde_json::from_str(
            r#"{"80/tcp":[{"HostIp":"","HostPort":"8080"},{"HostIp":"::","HostPort":"8080"}],
                "53/udp":[{"HostIp":"127.0.0.1","HostPort":""}],"9000":[{"HostPort":"9000-9005"}]}"#,
        )
        .unwrap();
        let got = ports(Some(b), true, &[(80, Proto::Tcp), (443, Proto::Tcp)]).unwrap();
        let want = [
            (Proto::Udp, 53, Some(Ipv4Addr::LOCALHOST), (0, 0)),
            (Proto::Tcp, 80, None, (8080, 8080)),
            (Proto::Tcp, 9000, None, (9000, 9005)),
            (Proto::Tcp, 443, None, (0, 0)),
        ];
        let got: Vec<_> = got.iter().map(|r| (r.proto, r.container_port, r.host_ip, r.host_ports)).collect();
        assert_eq!(got, want);
        for bad in [
            r#"{"80/sctp":null}"#,
            r#"{"0/tcp":null}"#,
            r#"{"80":[{"HostPort":"70000"}]}"#,
            r#"{"80":[{"HostPort":"90-80"}]}"#,
            r#"{"80":[{"HostIp":"nope"}]}"#,
        ] {
            let b = serde_json::from_str(bad).unwrap();
            assert!(ports(Some(b), false, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn network_modes_resolve() {
        assert_eq!(networks("none", None).unwrap(), None);
        assert_eq!(networks("host", None).unwrap(), None);
        let d = networks("default", None).unwrap().unwrap();
        assert_eq!(d[0].network, "bridge");
        let eps: BTreeMap<String, ApiEndpointSettings> =
            serde_json::from_str(r#"{"front":{"IPAMConfig":{"IPv4Address":"10.1.0.9"},"Aliases":["web"]},"back":{}}"#)
                .unwrap();
        let n = networks("front", Some(eps)).unwrap().unwrap();
        assert_eq!(
            n[0],
            NetworkRequest {
                network: "front".into(),
                ip: Some("10.1.0.9".parse().unwrap()),
                aliases: vec!["web".into()]
            }
        );
        assert_eq!(n[1].network, "back");
        assert!(networks("container:x", None).is_err());
        let eps = serde_json::from_str(r#"{"other":{}}"#).unwrap();
        assert!(networks("none", Some(eps)).is_err());
        let eps = serde_json::from_str(r#"{"n":{"IPAMConfig":{"IPv4Address":"300.1.1.1"}}}"#).unwrap();
        assert!(networks("n", Some(eps)).is_err());
    }
}
