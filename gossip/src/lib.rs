//! memberlist's wire protocol, written from its specification (hashicorp's
//! Go source read to learn the format): the msgpack subset it uses
//! ([`msgpack`]), its messages and packet wrappers ([`wire`]) and its LZW
//! compression ([`lzw`]). Proven against Debian's `serf` agent in the lab
//! (`integration/tests/gossip.rs`). On it: the SWIM member ([`memberlist`])
//! over a [`transport`] (UDP + TCP, or in memory for deterministic tests).

pub mod config;
pub mod lzw;
pub mod memberlist;
pub mod msgpack;
mod nodes;
pub mod security;
pub mod tables;
pub mod transport;
pub mod wire;

pub use config::Config;
pub use memberlist::{
    Event, GossipError, Handle, Member, MemberState, SecurityStats, start, start_preloaded, start_with,
};
pub use security::{Keyring, SecurityError};
pub use tables::{Entry, TableEvent};
pub use transport::{MemNetwork, NetTransport};
