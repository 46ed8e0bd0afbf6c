//! Cluster membership glue: runs this node's gossip member (the `gossip`
//! crate, memberlist's protocol on port 7946) with the node's name, id and
//! advertised address, joins the configured seeds in the background (with
//! backoff), answers `GET /nodes`, and leaves gracefully at shutdown. The
//! node id travels in the member's metadata as serf-style tags (`0xff` +
//! msgpack map `{"id": ...}`), so `serf members` shows it too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::TryStreamExt;
use gossip::{Config as GossipCfg, Handle, Member, MemberState};

use crate::config::{GossipConfig, GossipProfile};

/// Why the member could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot listen for gossip on {addr} (UDP and TCP): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no address to advertise for gossip: pass --advertise-addr")]
    NoAddress,
    #[error("gossip key: {0}")]
    Key(#[from] gossip::security::SecurityError),
}

/// Encodes serf-style tags: `0xff` then a msgpack map of strings.
pub fn encode_tags(tags: &[(&str, &str)]) -> Vec<u8> {
    let mut w = gossip::msgpack::Writer { buf: vec![0xff] };
    w.map(tags.len());
    for (k, v) in tags {
        w.key(k).raw(v.as_bytes());
    }
    w.buf
}

/// Decodes serf-style tags (empty when the metadata is something else).
pub fn decode_tags(meta: &[u8]) -> Vec<(String, String)> {
    let Some((0xff, rest)) = meta.split_first() else { return Vec::new() };
    match gossip::msgpack::decode(rest) {
        Ok((gossip::msgpack::Value::Map(m), _)) => m
            .into_iter()
            .filter_map(|(k, v)| {
                Some((String::from_utf8(k.as_bytes()?.to_vec()).ok()?, String::from_utf8(v.as_bytes()?.to_vec()).ok()?))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The first global IPv4 address of the namespace netd runs in (as
/// memberlist picks a private IP when none is configured).
async fn first_global_ipv4() -> Option<Ipv4Addr> {
    let (conn, h, _) = rtnetlink::new_connection().ok()?;
    tokio::spawn(conn);
    let addrs: Vec<_> = h.address().get().execute().try_collect().await.ok()?;
    let mut found: Vec<(u32, Ipv4Addr)> = addrs
        .iter()
        .flat_map(|a| {
            a.attributes.iter().filter_map(move |attr| match attr {
                netlink_packet_route::address::AddressAttribute::Address(IpAddr::V4(ip)) => Some((a.header.index, *ip)),
                _ => None,
            })
        })
        .filter(|(_, ip)| !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified())
        .collect();
    // Lowest interface index first: the uplink predates netd's bridges.
    found.sort();
    found.first().map(|(_, ip)| *ip)
}

/// Store metadata key of the keyring after a rotation through the API.
pub const KEYRING_META: &str = "gossip_keyring";

/// The keyring as kept in the store: a JSON list of base64 keys, primary
/// first.
pub fn keyring_to_meta(keys: &[Vec<u8>]) -> String {
    serde_json::to_string(&keys.iter().map(|k| crate::config::base64_encode(k)).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

/// The keyring kept in the store, checked as the config file's keys are.
pub fn keyring_from_meta(s: &str) -> Result<Vec<Vec<u8>>, String> {
    let list: Vec<String> = serde_json::from_str(s).map_err(|e| format!("stored gossip keyring: {e}"))?;
    list.iter()
        .map(|k| match crate::config::base64_decode(k) {
            Some(b) if matches!(b.len(), 16 | 24 | 32) => Ok(b),
            _ => Err("stored gossip keyring: a key is not 16, 24 or 32 bytes of base64".to_owned()),
        })
        .collect()
}

/// How a key is shown: the first 8 bytes of its SHA-256, in hex (never
/// the key itself).
pub fn fingerprint(key: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key)[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the member and the background join.
pub async fn start(cfg: &GossipConfig, hostname: &str, node_id: &str) -> Result<Handle, ClusterError> {
    let advertise = match cfg.advertise {
        Some(a) => a,
        None if !cfg.bind.ip().is_unspecified() => cfg.bind,
        None => SocketAddr::new(IpAddr::V4(first_global_ipv4().await.ok_or(ClusterError::NoAddress)?), cfg.bind.port()),
    };
    let name = cfg.node_name.clone().unwrap_or_else(|| hostname.to_owned());
    let mut g = match cfg.profile {
        GossipProfile::Lan => GossipCfg::lan(&name, cfg.bind),
        GossipProfile::Wan => GossipCfg::wan(&name, cfg.bind),
        GossipProfile::Local => GossipCfg::local(&name, cfg.bind),
    };
    g.advertise = advertise;
    g.meta = encode_tags(&[("id", node_id)]);
    g.label = cfg.label.as_bytes().to_vec();
    if let Some((primary, others)) = cfg.keys.split_first() {
        g.keyring = Some(gossip::Keyring::new(primary.clone(), others.to_vec()).map_err(ClusterError::Key)?);
    }
    let (transport, inbound) =
        gossip::NetTransport::bind(cfg.bind).await.map_err(|source| ClusterError::Bind { addr: cfg.bind, source })?;
    let handle = gossip::start(g, transport, inbound);
    tracing::info!(node = %name, %advertise, bind = %cfg.bind, encrypted = !cfg.keys.is_empty(), "gossip member started");
    if !cfg.join.is_empty() {
        let (h, seeds) = (handle.clone(), cfg.join.clone());
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            loop {
                match h.join(&seeds).await {
                    Ok(n) => {
                        tracing::info!(seeds = ?seeds, answered = n, "joined the cluster");
                        return;
                    }
                    Err(gossip::GossipError::NameClash(n, at)) => {
                        // Kept retrying: it may be this node's own previous
                        // life at an old address, about to be declared dead.
                        tracing::error!(node = %n, other = %at, retry_in = ?delay, "another live member uses this node name: set node-name if it is not this node's previous address");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                    Err(gossip::GossipError::Stopped) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?delay, "cannot join the cluster yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }
    Ok(handle)
}

/// `GET /nodes`: Docker's node list shape (ID, Description.Hostname,
/// Status.State/Addr) plus memberlist's view under `Netd`.
pub fn nodes_json(members: &[Member], health: u32, me: &str) -> serde_json::Value {
    let mut v: Vec<serde_json::Value> = members
        .iter()
        .map(|m| {
            let id = decode_tags(&m.meta).into_iter().find(|(k, _)| k == "id").map(|(_, v)| v).unwrap_or_default();
            let ready = matches!(m.state, MemberState::Alive | MemberState::Suspect);
            serde_json::json!({
                "ID": id,
                "Description": { "Hostname": m.name },
                "Spec": { "Role": "worker", "Availability": "active" },
                "Status": { "State": if ready { "ready" } else { "down" }, "Addr": m.addr.ip().to_string() },
                "Netd": {
                    "Name": m.name,
                    "Address": m.addr.to_string(),
                    "State": m.state.as_str(),
                    "Incarnation": m.incarnation,
                    "Self": m.name == me,
                    "Health": if m.name == me { serde_json::json!(health) } else { serde_json::Value::Null },
                },
            })
        })
        .collect();
    v.sort_by(|a, b| a["Description"]["Hostname"].as_str().cmp(&b["Description"]["Hostname"].as_str()));
    serde_json::Value::Array(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_in_serf_format() {
        let t = encode_tags(&[("id", "abc")]);
        assert_eq!(t, [0xff, 0x81, 0xa2, b'i', b'd', 0xa3, b'a', b'b', b'c']);
        assert_eq!(decode_tags(&t), [("id".to_owned(), "abc".to_owned())]);
        assert!(decode_tags(b"web").is_empty(), "a plain role string is not tags");
        assert!(decode_tags(&[0xff, 0xdf, 0xff]).is_empty());
    }
}
