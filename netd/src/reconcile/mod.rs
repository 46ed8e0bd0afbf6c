//! Reconciliation: the store says what should exist, the kernel says what does;
//! [`plan`] is a pure function from both to a list of [`Op`]s, and an effect
//! layer ([`Links`]) applies them. The loop runs on start, on every store change
//! ([`ReconcileHandle::notify`]) and every `reconcile-interval`.
//!
//! What it owns today: network devices netd created. netd marks each of its
//! links with the alias `netd:network:<network id>`; a marked link whose network
//! is no longer in the store (a crash between the store write and the kernel
//! change, or a network removed while netd was down) is deleted. Links without
//! the mark are never touched. Drivers add the links they want as they land.

pub mod links;
mod task;

use std::collections::BTreeSet;

use crate::ids::NetworkId;
pub use links::{Links, LinksError, NetlinkLinks};
pub use task::{ReconcileHandle, ReconcileStatus, spawn};

/// The alias prefix that marks a link as netd's.
pub const OWNER_PREFIX: &str = "netd:network:";

/// What the store wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Networks that exist in the store.
    pub networks: BTreeSet<NetworkId>,
}

/// A network device as seen in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedLink {
    pub index: u32,
    pub name: String,
    /// The link's alias (IFLA_IFALIAS), if any.
    pub alias: Option<String>,
}

impl ObservedLink {
    /// The network that owns this link, if netd marked it. `Err` for a link
    /// marked as netd's whose id is malformed (it is still netd's).
    pub fn owner(&self) -> Option<Result<NetworkId, String>> {
        let rest = self.alias.as_deref()?.strip_prefix(OWNER_PREFIX)?;
        Some(NetworkId::parse(rest).map_err(|_| rest.to_owned()))
    }
}

/// One change to make in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Delete a netd-owned link whose network is gone.
    DeleteLink { index: u32, name: String, reason: String },
}

/// Computes the changes that bring `observed` to `desired`.
pub fn plan(desired: &Desired, observed: &[ObservedLink]) -> Vec<Op> {
    observed
        .iter()
        .filter_map(|l| match l.owner()? {
            Ok(id) if desired.networks.contains(&id) => None,
            Ok(id) => Some(Op::DeleteLink {
                index: l.index,
                name: l.name.clone(),
                reason: format!("network {} no longer exists", id.short()),
            }),
            Err(bad) => Some(Op::DeleteLink {
                index: l.index,
                name: l.name.clone(),
                reason: format!("owner mark has a malformed network id {bad:?}"),
            }),
        })
        .collect()
}

/// Applies `ops` through `links`; returns how many succeeded and the errors.
pub async fn apply<L: Links>(links: &L, ops: &[Op]) -> (usize, Vec<LinksError>) {
    let mut done = 0;
    let mut errors = Vec::new();
    for op in ops {
        match op {
            Op::DeleteLink { index, name, reason } => match links.delete(*index, name).await {
                Ok(()) => {
                    tracing::info!(link = %name, index, %reason, "deleted orphaned link");
                    done += 1;
                }
                Err(e) => {
                    tracing::warn!(link = %name, index, error = %e, "cannot delete orphaned link");
                    errors.push(e);
                }
            },
        }
    }
    (done, errors)
}

#[cfg(test)]
mod tests;
