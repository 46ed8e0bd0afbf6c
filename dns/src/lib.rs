//! netd's embedded service-discovery DNS, served at 127.0.0.11 inside every
//! container on a user-defined network, on hickory-server.
//!
//! - [`records`]: the pure core — networks, endpoints, services and views,
//!   and the lookup that answers a name from one container's view.
//! - [`handler`]: hickory's `RequestHandler` over it (records, NXDOMAIN and
//!   NODATA with an SOA, PTR, SRV), forwarding the rest.
//! - [`forward`]: bounded forwarding to at most three upstreams.
//! - [`server`]: sockets opened inside a container's namespace, served by
//!   hickory (TCP) and by our own batched loop (UDP, [`batch`]).

pub mod batch;
pub mod forward;
pub mod handler;
pub mod records;
pub mod server;

pub use forward::Forwarder;
pub use handler::{Resolver, Shared};
pub use records::{Db, Endpoint, Kind, Lookup, NetKey, Network, Proto, Service, ServicePort, Task, View, ViewId};
pub use server::{ADDR, Served, bind_in, serve};

/// What can go wrong in the resolver.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("more than {0} forwarded queries in flight")]
    Busy(usize),
    #[error("no upstream resolver configured")]
    NoUpstream,
    #[error("every upstream failed: {0}")]
    Upstreams(String),
    #[error("socket: {0}")]
    Socket(String),
}
