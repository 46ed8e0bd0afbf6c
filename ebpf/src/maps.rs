//! Rust mirrors of the structs in `bpf/lb.h` (`#[repr(C)]`, same field
//! order and padding). `tests/datapath.rs` checks every size and offset
//! against the BTF that clang wrote into the object, so a change on one
//! side only fails the tests instead of corrupting maps.

/// `struct lb_svc_key`: a service address (IPv4 in `addr[0]`), port and
/// protocol, all in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SvcKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// `struct lb_svc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Svc {
    pub id: u32,
    pub table_size: u32,
    pub flags: u32,
    pub pad: u32,
}

/// `struct lb_backend`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: [u32; 4],
    pub port: u16,
    pub state: u8,
    pub family: u8,
}

/// `struct lb_ct_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtKey {
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    pub pad: u16,
}

/// `struct lb_ct`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ct {
    pub last_seen_ns: u64,
    pub svc_id: u32,
    pub backend_id: u32,
    pub nat_addr: [u32; 4],
    pub nat_port: u16,
    pub flags: u16,
    pub pad2: u32,
}

/// `struct lb_stats` (one per CPU per backend).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
}

/// `struct lb_iface`: per attached interface, its gateway's MAC (the ARP
/// responder answers service addresses with it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Iface {
    pub gw_mac: [u8; 6],
    pub flags: u16,
}

pub const FAMILY_V4: u8 = 4;
/// `LB_MAX_SERVICES` and `LB_MAX_BACKENDS`: the maps' capacities.
pub const MAX_SERVICES: usize = 65536;
pub const MAX_BACKENDS: usize = 262144;
/// The flag of Maglev tables (and of their template in the object): tables
/// of any size fit the map of maps. The kernel wants it on both.
pub const BPF_F_INNER_MAP: u32 = 1 << 12;
/// Also on the tables: the control side writes slots through a shared
/// mapping of the array (no system call per slot; 10,000 tables of 1021
/// slots took two seconds as batched updates).
pub const BPF_F_MMAPABLE: u32 = 1 << 10;
/// The flags every Maglev table (and the template) carries.
pub const TABLE_FLAGS: u32 = BPF_F_INNER_MAP | BPF_F_MMAPABLE;
pub const BACKEND_ACTIVE: u8 = 0;
pub const BACKEND_DRAINING: u8 = 1;
pub const BACKEND_GONE: u8 = 2;
pub const CT_FORWARD: u8 = 0;
pub const CT_REPLY: u8 = 1;
pub const CT_SEEN_REPLY: u16 = 1;
pub const CT_CLOSING: u16 = 2;
pub const CT_NORTH_SOUTH: u16 = 4;
pub const CT_SNAT: u16 = 8;
/// `struct lb_svc.flags`: a published port (balanced for traffic from
/// outside the node only), and whether its clients are masqueraded.
pub const SVC_NORTH_SOUTH: u32 = 1;
pub const SVC_SNAT: u32 = 2;
/// Marks the datapath puts on north-south packets (netd's nftables table
/// lets them into the bridge, and masquerades the SNAT ones).
pub const MARK_NORTH_SOUTH: u32 = 0x1000_0000;
pub const MARK_SNAT: u32 = 0x2000_0000;

// SAFETY: plain #[repr(C)] structs of integers with explicit padding
// fields (here and below): every bit pattern is a valid value.
unsafe impl aya::Pod for SvcKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Svc {}
// SAFETY: as above.
unsafe impl aya::Pod for Backend {}
// SAFETY: as above.
unsafe impl aya::Pod for CtKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Ct {}
// SAFETY: as above.
unsafe impl aya::Pod for Stats {}
// SAFETY: as above.
unsafe impl aya::Pod for Iface {}

/// One struct's layout: C name, size, (field, offset) in order.
pub type Layout = (&'static str, usize, Vec<(&'static str, usize)>);

/// Rust's view of each struct, for the layout test.
pub fn layouts() -> Vec<Layout> {
    use std::mem::{offset_of, size_of};
    vec![
        (
            "lb_svc_key",
            size_of::<SvcKey>(),
            vec![
                ("addr", offset_of!(SvcKey, addr)),
                ("port", offset_of!(SvcKey, port)),
                ("proto", offset_of!(SvcKey, proto)),
                ("family", offset_of!(SvcKey, family)),
            ],
        ),
        (
            "lb_svc",
            size_of::<Svc>(),
            vec![
                ("id", offset_of!(Svc, id)),
                ("table_size", offset_of!(Svc, table_size)),
                ("flags", offset_of!(Svc, flags)),
                ("pad", offset_of!(Svc, pad)),
            ],
        ),
        (
            "lb_backend",
            size_of::<Backend>(),
            vec![
                ("addr", offset_of!(Backend, addr)),
                ("port", offset_of!(Backend, port)),
                ("state", offset_of!(Backend, state)),
                ("family", offset_of!(Backend, family)),
            ],
        ),
        (
            "lb_ct_key",
            size_of::<CtKey>(),
            vec![
                ("saddr", offset_of!(CtKey, saddr)),
                ("daddr", offset_of!(CtKey, daddr)),
                ("sport", offset_of!(CtKey, sport)),
                ("dport", offset_of!(CtKey, dport)),
                ("proto", offset_of!(CtKey, proto)),
                ("dir", offset_of!(CtKey, dir)),
                ("pad", offset_of!(CtKey, pad)),
            ],
        ),
        (
            "lb_stats",
            size_of::<Stats>(),
            vec![
                ("packets", offset_of!(Stats, packets)),
                ("bytes", offset_of!(Stats, bytes)),
                ("flows", offset_of!(Stats, flows)),
            ],
        ),
        (
            "lb_iface",
            size_of::<Iface>(),
            vec![("gw_mac", offset_of!(Iface, gw_mac)), ("flags", offset_of!(Iface, flags))],
        ),
        (
            "lb_ct",
            size_of::<Ct>(),
            vec![
                ("last_seen_ns", offset_of!(Ct, last_seen_ns)),
                ("svc_id", offset_of!(Ct, svc_id)),
                ("backend_id", offset_of!(Ct, backend_id)),
                ("nat_addr", offset_of!(Ct, nat_addr)),
                ("nat_port", offset_of!(Ct, nat_port)),
                ("flags", offset_of!(Ct, flags)),
                ("pad2", offset_of!(Ct, pad2)),
            ],
        ),
    ]
}
