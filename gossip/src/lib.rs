//! memberlist's wire protocol, written from its specification (hashicorp's
//! Go source read to learn the format): the msgpack subset it uses
//! ([`msgpack`]), its messages and packet wrappers ([`wire`]) and its LZW
//! compression ([`lzw`]). Proven against Debian's `serf` agent in the lab
//! (`integration/tests/gossip.rs`). The SWIM state machine, transport,
//! encryption and replicated tables build on this (see the README).

pub mod lzw;
pub mod msgpack;
pub mod wire;
