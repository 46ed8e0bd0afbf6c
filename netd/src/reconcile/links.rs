//! The link effect layer: list and delete network devices of the namespace netd
//! runs in. [`NetlinkLinks`] talks rtnetlink in-process; tests use fakes.

use std::future::Future;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};

use super::ObservedLink;

/// A failed link operation.
#[derive(Debug, thiserror::Error)]
pub enum LinksError {
    #[error("netlink {op} {ifname}: {message}")]
    Netlink { op: &'static str, ifname: String, message: String },
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
}

/// Kernel link operations the reconciler needs.
pub trait Links {
    /// Every link in the namespace.
    fn list(&self) -> impl Future<Output = Result<Vec<ObservedLink>, LinksError>> + Send;
    /// Deletes one link.
    fn delete(&self, index: u32, name: &str) -> impl Future<Output = Result<(), LinksError>> + Send;
}

/// rtnetlink-backed [`Links`]; owns one netlink connection.
#[derive(Clone, Debug)]
pub struct NetlinkLinks {
    handle: rtnetlink::Handle,
}

impl NetlinkLinks {
    /// Opens a route netlink socket in the current network namespace and spawns
    /// its connection task on the current runtime.
    pub fn connect() -> Result<NetlinkLinks, LinksError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinksError::Connect)?;
        tokio::spawn(conn);
        Ok(NetlinkLinks { handle })
    }
}

fn observed(msg: LinkMessage) -> ObservedLink {
    let mut name = String::new();
    let mut alias = None;
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = n,
            LinkAttribute::IfAlias(a) => alias = Some(a),
            _ => {}
        }
    }
    ObservedLink { index: msg.header.index, name, alias }
}

impl Links for NetlinkLinks {
    async fn list(&self) -> Result<Vec<ObservedLink>, LinksError> {
        let msgs: Vec<LinkMessage> =
            self.handle.link().get().execute().try_collect().await.map_err(|e| LinksError::Netlink {
                op: "dump",
                ifname: "links".into(),
                message: e.to_string(),
            })?;
        Ok(msgs.into_iter().map(observed).collect())
    }

    async fn delete(&self, index: u32, name: &str) -> Result<(), LinksError> {
        self.handle.link().del(index).execute().await.map_err(|e| LinksError::Netlink {
            op: "delete",
            ifname: name.to_owned(),
            message: e.to_string(),
        })
    }
}
