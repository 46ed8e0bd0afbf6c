//! netd's eBPF load-balancing datapath. So far: [`maglev`], the consistent
//! hashing that chooses a backend per flow, computed in Rust and written
//! to the datapath's maps. The C programs, their loader and the `Datapath`
//! trait land with the rest of the eBPF load-balancing issue.

pub mod maglev;
