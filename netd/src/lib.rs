//! netd: the per-node daemon of a container cluster's network. It keeps its
//! state in a redb store, serves a Docker Engine API on a unix socket, and
//! reconciles the kernel with the store (see DESIGN.md for the architecture).
//! The binary (`main.rs`) only parses flags, installs logging and calls
//! [`daemon::run`].

#![recursion_limit = "256"]

pub mod api;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod embedded_dns;
pub mod events;
pub mod firewall;
pub mod ids;
pub mod image;
pub mod ipam;
pub mod lb;
pub mod lock;
pub mod model;
pub mod network;
pub mod reconcile;
pub mod runtime;
pub mod socket;
pub mod store;
pub mod sysinfo;
pub mod volume;

#[cfg(test)]
mod fuzz_tests;
