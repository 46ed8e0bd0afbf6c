//! netd's eBPF load-balancing datapath.
//!
//! - [`maglev`]: the consistent hashing that chooses a backend per flow,
//!   computed in Rust and written to the datapath's maps.
//! - [`maps`]: Rust mirrors of the C structs the maps hold.
//! - The C program `bpf/lb.bpf.c` (tc classifier on the host side of
//!   container veths: DNAT to a Maglev-chosen backend, connection
//!   tracking, reverse NAT of replies), compiled by `build.rs`; [`OBJECT`]
//!   is the object, loaded with aya.
//!
//! - [`datapath`]: the `Datapath` trait, its aya-backed `Kernel` (load,
//!   services and backends into the maps, attach to veths with TCX, read
//!   conntrack) and the `Recording` fake.
//!
//! Still to come with the eBPF load-balancing issue: pinning under
//! `--bpf-root` and re-adoption, north-south, conntrack timeouts, counters,
//! `netctl lb`, netd feeding it services.

pub mod datapath;
pub mod maglev;
pub mod maps;

/// The compiled datapath (a BPF ELF object, 8-byte aligned for aya).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb.bpf.o"));

/// The object as a file path at build time (the layout test reads its BTF).
pub const OBJECT_PATH: &str = concat!(env!("OUT_DIR"), "/lb.bpf.o");
