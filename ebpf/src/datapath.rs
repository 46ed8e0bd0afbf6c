//! The control side of the datapath: a [`Datapath`] trait (services,
//! backends, attachment, conntrack), the aya-backed [`Kernel`] and the
//! [`Recording`] fake. The pure part — ids, Maglev tables, which map
//! entries a change needs — is [`Plan`]; both implementations apply it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::maglev;
use crate::maps::{self, Backend, Ct, CtKey, Svc, SvcKey};

/// What can go wrong controlling the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("maglev: {0}")]
    Maglev(#[from] maglev::MaglevError),
    #[error("loading the datapath: {0}")]
    Load(String),
    #[error("map {map}: {why}")]
    Map { map: &'static str, why: String },
    #[error("attaching to {ifname}: {why}")]
    Attach { ifname: String, why: String },
    #[error("no service {0}")]
    NoService(String),
    #[error("the datapath holds at most {max} {what}; {what} beyond that are refused")]
    Full { what: &'static str, max: usize },
}

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

/// A backend's lifecycle: new flows go to active ones only; draining ones
/// keep their established flows; gone ones lose them at once (rehashed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendState {
    Active,
    Draining,
    Gone,
}

/// One backend of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    pub state: BackendState,
}

/// Who a service serves, and how.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// A VIP for containers (east-west).
    #[default]
    EastWest,
    /// A published port on a node address, for clients outside the node;
    /// backends see the node as the client (what Docker does).
    NorthSouthSnat,
    /// The same, and backends see the client's own address.
    NorthSouthPreserve,
}

impl Mode {
    fn flags(self) -> u32 {
        match self {
            Mode::EastWest => 0,
            Mode::NorthSouthSnat => maps::SVC_NORTH_SOUTH | maps::SVC_SNAT,
            Mode::NorthSouthPreserve => maps::SVC_NORTH_SOUTH,
        }
    }
}

/// A service: (address, port, protocol) and its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
    pub backends: Vec<BackendSpec>,
    pub mode: Mode,
}

impl ServiceSpec {
    fn key(&self) -> (Ipv4Addr, u16, Proto) {
        (self.addr, self.port, self.proto)
    }
}

/// A tracked flow, as `netctl lb conntrack` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub client: (Ipv4Addr, u16),
    pub service: (Ipv4Addr, u16),
    pub backend: (Ipv4Addr, u16),
    pub proto: u8,
}

/// Controls a datapath.
pub trait Datapath {
    /// Adds or replaces a service and its backends.
    fn upsert_service(&mut self, svc: &ServiceSpec) -> Result<(), DatapathError>;
    /// Removes a service (its flows then pass untouched).
    fn delete_service(&mut self, addr: Ipv4Addr, port: u16, proto: Proto) -> Result<(), DatapathError>;
    /// Runs the datapath on packets arriving on `ifname` (the host side of
    /// a container's veth).
    fn attach(&mut self, ifname: &str) -> Result<(), DatapathError>;
    /// The flows it tracks (forward entries).
    fn flows(&self) -> Result<Vec<Flow>, DatapathError>;
    /// Per backend: packets, bytes and new flows sent to it (all CPUs).
    fn counters(&self) -> Result<Vec<Counters>, DatapathError>;
    /// Drops tracked flows idle beyond `t`; returns how many.
    fn sweep(&mut self, t: &Timeouts) -> Result<usize, DatapathError>;
    /// Adds or replaces many services at once (as at start).
    fn upsert_services(&mut self, svcs: &[ServiceSpec]) -> Result<(), DatapathError> {
        svcs.iter().try_for_each(|s| self.upsert_service(s))
    }
    /// Runs the datapath where traffic from outside the node arrives and
    /// leaves (`ifname`, its underlay interface): published ports.
    fn attach_world(&mut self, _ifname: &str) -> Result<(), DatapathError> {
        Ok(())
    }
    /// Balances the sockets of processes in cgroup (v2) directory `cgroup`
    /// and below at connect/sendmsg time: their packets to VIPs then need no
    /// NAT (the tc programs still serve everything else).
    fn attach_sockets(&mut self, _cgroup: &std::path::Path) -> Result<(), DatapathError> {
        Ok(())
    }
    /// Answers ARP requests for service addresses arriving on `ifname`
    /// with `gw_mac` (the MAC of the gateway its container uses), so a VIP
    /// inside the container's subnet is reachable.
    fn answer_arp(&mut self, _ifname: &str, _gw_mac: [u8; 6]) -> Result<(), DatapathError> {
        Ok(())
    }
    /// The services it holds: (address, port, protocol).
    fn service_keys(&self) -> Vec<(Ipv4Addr, u16, Proto)>;
    /// Forgets attachments to interfaces that are gone; returns how many.
    fn prune_links(&mut self) -> usize {
        0
    }
    /// The interfaces it runs on.
    fn attached(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What the datapath sent one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    pub backend: (Ipv4Addr, u16),
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
}

fn v4(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

fn from_v4(x: u32) -> Ipv4Addr {
    Ipv4Addr::from(x.to_ne_bytes())
}

/// Idle timeouts per connection state. Established TCP gets a long one:
/// no cliff like IPVS's 900 s that cuts quiet but live connections (the
/// LRU map evicts the oldest entries first if it ever fills).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: std::time::Duration,
    /// After a FIN or RST.
    pub tcp_closing: std::time::Duration,
    pub udp: std::time::Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: std::time::Duration::from_secs(6 * 3600),
            tcp_closing: std::time::Duration::from_secs(10),
            udp: std::time::Duration::from_secs(120),
        }
    }
}

/// Whether a tracked entry has been idle longer than its state allows
/// (`now_ns` on the datapath's clock, CLOCK_MONOTONIC).
pub fn expired(key: &CtKey, ct: &Ct, now_ns: u64, t: &Timeouts) -> bool {
    let limit = if key.proto == 17 {
        t.udp
    } else if ct.flags & maps::CT_CLOSING != 0 {
        t.tcp_closing
    } else {
        t.tcp_established
    };
    now_ns.saturating_sub(ct.last_seen_ns) > limit.as_nanos() as u64
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Removes the expired entries of a conntrack map; returns how many.
pub fn sweep<T: std::borrow::BorrowMut<aya::maps::MapData>>(
    ct: &mut aya::maps::HashMap<T, CtKey, Ct>,
    now_ns: u64,
    t: &Timeouts,
) -> Result<usize, DatapathError> {
    let mut dead = Vec::new();
    for e in ct.iter() {
        let (k, v) = e.map_err(map_err("lb_ct"))?;
        if expired(&k, &v, now_ns, t) {
            dead.push(k);
        }
    }
    for k in &dead {
        // Gone meanwhile (LRU eviction): fine.
        let _ = ct.remove(k);
    }
    Ok(dead.len())
}

/// Map writes a change needs, computed without the kernel.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub backends: Vec<(u32, Backend)>,
    /// The service's Maglev table (slot -> backend id); empty: no live
    /// backend (the table goes).
    pub table: Vec<u32>,
    pub service: Option<(SvcKey, Svc)>,
    /// The service had a table of this size already: its slots are
    /// rewritten in place. Swapping in a new array would wait for an RCU
    /// grace period in the kernel (milliseconds per change); every slot
    /// names a live backend at every moment either way.
    pub in_place: bool,
}

/// Ids and table sizes: the state both implementations share.
#[derive(Clone, Debug)]
pub struct Ids {
    table_size: u32,
    services: BTreeMap<(Ipv4Addr, u16, Proto), (u32, u32)>,
    backends: BTreeMap<(Ipv4Addr, u16), u32>,
    next_svc: u32,
    next_backend: u32,
}

impl Ids {
    /// Maglev tables of `table_size` slots (a prime).
    pub fn new(table_size: u32) -> Result<Ids, DatapathError> {
        if !maglev::is_prime(table_size) {
            return Err(maglev::MaglevError::NotPrime(table_size).into());
        }
        Ok(Ids { table_size, services: BTreeMap::new(), backends: BTreeMap::new(), next_svc: 1, next_backend: 1 })
    }

    /// The writes that make `svc` current.
    pub fn plan(&mut self, svc: &ServiceSpec) -> Result<Plan, DatapathError> {
        let mut plan = Plan::default();
        let mut live = Vec::new();
        let mut live_ids = Vec::new();
        let new_backends = svc.backends.iter().filter(|b| !self.backends.contains_key(&(b.addr, b.port))).count();
        if self.backends.len() + new_backends > maps::MAX_BACKENDS {
            return Err(DatapathError::Full { what: "backends", max: maps::MAX_BACKENDS });
        }
        if !self.services.contains_key(&svc.key()) && self.services.len() >= maps::MAX_SERVICES {
            return Err(DatapathError::Full { what: "services", max: maps::MAX_SERVICES });
        }
        for b in &svc.backends {
            let next = &mut self.next_backend;
            let id = *self.backends.entry((b.addr, b.port)).or_insert_with(|| {
                *next += 1;
                *next - 1
            });
            let state = match b.state {
                BackendState::Active => maps::BACKEND_ACTIVE,
                BackendState::Draining => maps::BACKEND_DRAINING,
                BackendState::Gone => maps::BACKEND_GONE,
            };
            plan.backends.push((
                id,
                Backend { addr: [v4(b.addr), 0, 0, 0], port: b.port.to_be(), state, family: maps::FAMILY_V4 },
            ));
            if b.state == BackendState::Active {
                live.push(maglev::Backend { name: format!("{}:{}", b.addr, b.port), weight: b.weight.max(1) });
                live_ids.push(id);
            }
        }
        let next = &mut self.next_svc;
        let (svc_id, old_m) = *self.services.entry(svc.key()).or_insert_with(|| {
            *next += 1;
            (*next - 1, 0)
        });
        let m = if live.is_empty() { 0 } else { self.table_size };
        plan.in_place = m > 0 && old_m == m;
        if m > 0 {
            plan.table = maglev::table(&live, m)?.iter().map(|i| live_ids[*i as usize]).collect();
        }
        self.services.insert(svc.key(), (svc_id, m));
        let key = SvcKey {
            addr: [v4(svc.addr), 0, 0, 0],
            port: svc.port.to_be(),
            proto: svc.proto.number(),
            family: maps::FAMILY_V4,
        };
        plan.service = Some((key, Svc { id: svc_id, table_size: m, flags: svc.mode.flags(), ..Default::default() }));
        Ok(plan)
    }

    /// Forgets a service: its key and id (whose table goes).
    pub fn forget(&mut self, addr: Ipv4Addr, port: u16, proto: Proto) -> Result<(SvcKey, u32), DatapathError> {
        let (svc_id, _) = self
            .services
            .remove(&(addr, port, proto))
            .ok_or_else(|| DatapathError::NoService(format!("{addr}:{port}/{proto:?}")))?;
        let key =
            SvcKey { addr: [v4(addr), 0, 0, 0], port: port.to_be(), proto: proto.number(), family: maps::FAMILY_V4 };
        Ok((key, svc_id))
    }
}

/// A fake that records what it was asked, for callers' tests.
#[derive(Debug)]
pub struct Recording {
    pub ids: Ids,
    pub calls: Vec<String>,
    pub plans: Vec<Plan>,
    /// Set: upserts fail (as a kernel refusal would), changing nothing.
    pub refuse: bool,
    pub links: Vec<String>,
}

impl Recording {
    pub fn new() -> Recording {
        Recording {
            ids: Ids::new(maglev::DEFAULT_SIZE).unwrap_or_else(|_| unreachable!("16381 is prime")),
            calls: Vec::new(),
            plans: Vec::new(),
            refuse: false,
            links: Vec::new(),
        }
    }
}

impl Default for Recording {
    fn default() -> Self {
        Recording::new()
    }
}

impl Datapath for Recording {
    fn upsert_service(&mut self, svc: &ServiceSpec) -> Result<(), DatapathError> {
        if self.refuse {
            return Err(DatapathError::Map { map: "lb_services", why: "refused (test)".into() });
        }
        self.calls.push(format!("upsert {}:{}/{:?} x{}", svc.addr, svc.port, svc.proto, svc.backends.len()));
        let p = self.ids.plan(svc)?;
        self.plans.push(p);
        Ok(())
    }
    fn delete_service(&mut self, addr: Ipv4Addr, port: u16, proto: Proto) -> Result<(), DatapathError> {
        self.calls.push(format!("delete {addr}:{port}/{proto:?}"));
        self.ids.forget(addr, port, proto).map(|_| ())
    }
    fn attach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.calls.push(format!("attach {ifname}"));
        if !self.links.iter().any(|l| l == ifname) {
            self.links.push(ifname.to_owned());
        }
        Ok(())
    }
    fn attach_world(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.calls.push(format!("attach_world {ifname}"));
        Ok(())
    }
    fn service_keys(&self) -> Vec<(Ipv4Addr, u16, Proto)> {
        self.ids.services.keys().copied().collect()
    }
    fn attached(&self) -> Vec<String> {
        self.links.clone()
    }
    fn flows(&self) -> Result<Vec<Flow>, DatapathError> {
        Ok(Vec::new())
    }
    fn counters(&self) -> Result<Vec<Counters>, DatapathError> {
        Ok(Vec::new())
    }
    fn sweep(&mut self, _t: &Timeouts) -> Result<usize, DatapathError> {
        self.calls.push("sweep".into());
        Ok(0)
    }
}

/// The maps the datapath keeps (pinned by these names under the root).
pub const MAPS: [&str; 7] = ["lb_services", "lb_maglev", "lb_backends", "lb_ct", "lb_stats", "lb_vips", "lb_ifaces"];

/// The real datapath: the object loaded into the kernel with aya.
pub struct Kernel {
    bpf: aya::Ebpf,
    ids: Ids,
    links: Vec<(String, Hook, aya::programs::tc::SchedClassifierLinkId)>,
    /// Where maps and links are pinned (None: nothing survives us).
    root: Option<std::path::PathBuf>,
}

/// A Maglev table as a new BPF array (flagged for the map of maps),
/// filled through a shared mapping.
fn new_table(table: &[u32]) -> Result<aya::maps::MapData, DatapathError> {
    use std::os::fd::AsFd;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let obj = aya_obj::Map::new_from_params(BPF_MAP_TYPE_ARRAY, 4, 4, table.len() as u32, maps::TABLE_FLAGS);
    let md = aya::maps::MapData::create(obj, "lb_maglev_tbl", None).map_err(map_err("lb_maglev (table)"))?;
    write_table(md.fd().as_fd(), table)?;
    Ok(md)
}

/// Writes `table` into a Maglev array (`BPF_F_MMAPABLE`) through a shared
/// mapping: no system call per slot, and each slot is one aligned 4-byte
/// store, so a packet reading the table meanwhile sees the old or the new
/// backend of a slot, never a torn id. The kernel lays elements out
/// 8 bytes apart (value size rounded up to 8).
fn write_table(fd: std::os::fd::BorrowedFd<'_>, table: &[u32]) -> Result<(), DatapathError> {
    use std::os::fd::AsRawFd;
    let err = |why: String| DatapathError::Map { map: "lb_maglev (table)", why };
    if table.is_empty() {
        return Ok(());
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let len = (table.len() * 8).div_ceil(page) * page;
    // SAFETY: a shared read-write mapping of `len` bytes of the array (the
    // kernel checks the length against the map); nothing else maps it here.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0)
    };
    if p == libc::MAP_FAILED {
        return Err(err(format!("mmap: {}", std::io::Error::last_os_error())));
    }
    let base = p.cast::<u32>();
    for (i, id) in table.iter().enumerate() {
        // SAFETY: slot i lives at byte 8 * i < len, 4-byte aligned (the
        // mapping is page aligned); a volatile store, as the kernel reads
        // the same memory concurrently.
        unsafe { base.add(2 * i).write_volatile(*id) };
    }
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(p, len) };
    Ok(())
}

/// `BPF_MAP_UPDATE_BATCH` (aya 0.14 has no batch operations): one system
/// call for many entries. `K` and `V` must be the map's key and value types.
fn update_batch<K: aya::Pod, V: aya::Pod>(fd: std::os::fd::RawFd, keys: &[K], values: &[V]) -> std::io::Result<()> {
    /// The batch member of `union bpf_attr`.
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    if keys.len() != values.len() {
        return Err(std::io::Error::other("keys and values differ in number"));
    }
    if keys.is_empty() {
        return Ok(());
    }
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: fd as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: the attr points at two live slices of `count` keys and values
    // of the map's key and value sizes (Pod: plain bytes); the kernel reads
    // them and writes `count`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if attr.count as usize != keys.len() {
        return Err(std::io::Error::other(format!("{} of {} entries written", attr.count, keys.len())));
    }
    Ok(())
}

/// The datapath's programs: from containers (veth ingress), from and to
/// the world (the node's underlay interface, ingress and egress).
pub const PROGRAMS: [&str; 3] = ["lb_from_container", "lb_from_world", "lb_to_world"];

/// The socket-level programs (cgroup hooks), balancing a container's
/// sockets at connect/sendmsg time and showing the VIP back.
pub const SOCK_PROGRAMS: [&str; 4] =
    ["lb_sock_connect4", "lb_sock_sendmsg4", "lb_sock_recvmsg4", "lb_sock_getpeername4"];

fn sock_program<'a>(
    bpf: &'a mut aya::Ebpf,
    name: &str,
) -> Result<&'a mut aya::programs::CgroupSockAddr, DatapathError> {
    bpf.program_mut(name)
        .ok_or_else(|| DatapathError::Load(format!("no program {name} in the object")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| DatapathError::Load(e.to_string()))
}

/// One of the datapath's programs in a loaded object.
fn program<'a>(bpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut aya::programs::SchedClassifier, DatapathError> {
    bpf.program_mut(name)
        .ok_or_else(|| DatapathError::Load(format!("no program {name} in the object")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| DatapathError::Load(e.to_string()))
}

/// Makes the link pinned at `pin` run `prog` (`BPF_LINK_UPDATE`): one
/// atomic switch, no moment without a program on the interface.
fn replace_program(pin: &std::path::Path, prog: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_UPDATE: libc::c_long = 29;
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        /// Explicit: the kernel refuses an attr whose unused bytes are not
        /// zero, and implicit padding is whatever the stack held.
        pad: u32,
    }
    #[repr(C)]
    struct UpdateAttr {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let mut obj = ObjAttr { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0, path_fd: 0, pad: 0 };
    // SAFETY: BPF_OBJ_GET reads a NUL-terminated path the attr points at.
    let fd =
        unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &mut obj as *mut ObjAttr, std::mem::size_of::<ObjAttr>()) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(e.kind(), format!("open the pin: {e}")));
    }
    // SAFETY: the kernel just returned this descriptor to us; we own it.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut up =
        UpdateAttr { link_fd: link.as_raw_fd() as u32, new_prog_fd: prog.as_raw_fd() as u32, flags: 0, old_prog_fd: 0 };
    // SAFETY: BPF_LINK_UPDATE reads two descriptors that stay open here.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_LINK_UPDATE, &mut up as *mut UpdateAttr, std::mem::size_of::<UpdateAttr>())
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(e.kind(), format!("BPF_LINK_UPDATE: {e}")));
    }
    Ok(())
}

/// The index of interface `ifname` in the calling thread's namespace.
fn ifindex(ifname: &str) -> Option<u32> {
    let c = std::ffi::CString::new(ifname).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Whether an interface has index `i` in the calling thread's namespace.
fn ifindex_exists(i: u32) -> bool {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into buf.
    !unsafe { libc::if_indextoname(i, buf.as_mut_ptr()) }.is_null()
}

/// Where a program hooks in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    FromContainer,
    FromWorld,
    ToWorld,
}

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Hook::FromContainer => PROGRAMS[0],
            Hook::FromWorld => PROGRAMS[1],
            Hook::ToWorld => PROGRAMS[2],
        }
    }
    fn attach_type(self) -> aya::programs::TcAttachType {
        match self {
            Hook::ToWorld => aya::programs::TcAttachType::Egress,
            _ => aya::programs::TcAttachType::Ingress,
        }
    }
    /// After `<ifname>@<ifindex>` in the pin's name (bpffs refuses dots).
    fn suffix(self) -> &'static str {
        match self {
            Hook::FromContainer => "",
            Hook::FromWorld => "@from_world",
            Hook::ToWorld => "@to_world",
        }
    }
}

/// Link pins under `root/links`: (path, interface name, index, hook).
fn pinned_links(root: &std::path::Path) -> Vec<(std::path::PathBuf, String, u32, Hook)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root.join("links")).into_iter().flatten().flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        // bpffs names cannot hold a dot: `<ifname>@<index>[@<hook>]`.
        let (head, hook) = match file.rsplit_once('@') {
            Some((h, "from_world")) => (h, Hook::FromWorld),
            Some((h, "to_world")) => (h, Hook::ToWorld),
            _ => (file.as_str(), Hook::FromContainer),
        };
        let Some((name, index)) = head.rsplit_once('@') else { continue };
        if let Ok(index) = index.parse() {
            out.push((e.path(), name.to_owned(), index, hook));
        }
    }
    out
}

/// bpffs's magic number (statfs f_type).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Makes `root` a bpffs directory: mounts one there unless it is already.
pub fn ensure_bpffs(root: &std::path::Path) -> Result<(), DatapathError> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::create_dir_all(root).map_err(|e| DatapathError::Load(format!("{}: {e}", root.display())))?;
    let c = std::ffi::CString::new(root.as_os_str().as_bytes()).map_err(|e| DatapathError::Load(e.to_string()))?;
    // SAFETY: statfs writes into the zeroed struct it is given; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type == BPF_FS_MAGIC {
        return Ok(());
    }
    // SAFETY: plain mount(2) with NUL-terminated strings and no data.
    let r = unsafe { libc::mount(c"bpffs".as_ptr(), c.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        return Err(DatapathError::Load(format!(
            "mount bpffs on {}: {}",
            root.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").field("ids", &self.ids).finish_non_exhaustive()
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |e| DatapathError::Map { map, why: e.to_string() }
}

impl Kernel {
    /// Loads the program (the verifier checks it here) and fresh maps.
    pub fn load(table_size: u32) -> Result<Kernel, DatapathError> {
        Kernel::load_with(table_size, None)
    }

    /// Loads with maps pinned under `root` (a bpffs; mounted if it is not):
    /// maps pinned there already are re-adopted, with their services,
    /// backends and tracked flows, and the ids are read back from them.
    pub fn load_pinned(root: &std::path::Path, table_size: u32) -> Result<Kernel, DatapathError> {
        ensure_bpffs(root)?;
        std::fs::create_dir_all(root.join("links")).map_err(|e| DatapathError::Load(e.to_string()))?;
        let mut k = Kernel::load_with(table_size, Some(root))?;
        k.readopt()?;
        Ok(k)
    }

    fn load_with(table_size: u32, root: Option<&std::path::Path>) -> Result<Kernel, DatapathError> {
        let ids = Ids::new(table_size)?;
        let mut loader = aya::EbpfLoader::new();
        let paths: Vec<(&str, std::path::PathBuf)> =
            root.map(|r| MAPS.iter().map(|m| (*m, r.join(m))).collect()).unwrap_or_default();
        for (m, p) in &paths {
            loader.map_pin_path(m, p.as_path());
        }
        let mut bpf = loader.load(crate::OBJECT).map_err(|e| DatapathError::Load(e.to_string()))?;
        for name in PROGRAMS {
            program(&mut bpf, name)?.load().map_err(|e| DatapathError::Load(format!("{name}: {e}")))?;
        }
        for name in SOCK_PROGRAMS {
            sock_program(&mut bpf, name)?.load().map_err(|e| DatapathError::Load(format!("{name}: {e}")))?;
        }
        Ok(Kernel { bpf, ids, links: Vec::new(), root: root.map(|r| r.to_path_buf()) })
    }

    /// Rebuilds the ids from re-adopted maps, so services and backends
    /// keep theirs (tracked flows name backends by id).
    fn readopt(&mut self) -> Result<(), DatapathError> {
        let b = self.hash::<u32, Backend>("lb_backends")?;
        let mut backends = Vec::new();
        for e in b.iter() {
            let (id, be) = e.map_err(map_err("lb_backends"))?;
            backends.push(((from_v4(be.addr[0]), u16::from_be(be.port)), id));
        }
        let s = self.hash::<SvcKey, Svc>("lb_services")?;
        let mut services = Vec::new();
        for e in s.iter() {
            let (k, v) = e.map_err(map_err("lb_services"))?;
            let proto = if k.proto == 17 { Proto::Udp } else { Proto::Tcp };
            services.push(((from_v4(k.addr[0]), u16::from_be(k.port), proto), (v.id, v.table_size)));
        }
        for (k, id) in backends {
            self.ids.next_backend = self.ids.next_backend.max(id + 1);
            self.ids.backends.insert(k, id);
        }
        for (k, v) in services {
            self.ids.next_svc = self.ids.next_svc.max(v.0 + 1);
            self.ids.services.insert(k, v);
        }
        Ok(())
    }

    /// Removes the pins of links whose interface is gone (deleted with its
    /// container, or replaced by another of the same name), in the calling
    /// thread's namespace; returns how many went.
    pub fn prune_links(&mut self) -> usize {
        // Gateways of interfaces that are gone (an index is reused only by
        // a new veth, whose attachment writes its own entry).
        if let Ok(mut m) = self.hash::<u32, maps::Iface>("lb_ifaces") {
            let stale: Vec<u32> = m.keys().flatten().filter(|i| !ifindex_exists(*i)).collect();
            for i in stale {
                let _ = m.remove(&i);
            }
        }
        let Some(root) = &self.root else { return 0 };
        let mut gone = 0;
        for (path, name, index, _) in pinned_links(root) {
            if ifindex(&name) != Some(index) && std::fs::remove_file(path).is_ok() {
                gone += 1;
            }
        }
        gone
    }

    /// The interfaces the datapath runs on (pinned links, or this
    /// instance's links when unpinned), sorted.
    pub fn attached(&self) -> Vec<String> {
        let mut out: Vec<String> = match &self.root {
            Some(root) => pinned_links(root).into_iter().map(|(_, name, _, _)| name).collect(),
            None => self.links.iter().map(|(n, _, _)| n.clone()).collect(),
        };
        out.sort();
        out.dedup();
        out
    }

    fn attach_one(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        let attach_err = |why: String| DatapathError::Attach { ifname: ifname.to_owned(), why };
        let index = ifindex(ifname).ok_or_else(|| attach_err("no such interface".into()))?;
        let pin = self.root.as_ref().map(|r| r.join("links").join(format!("{ifname}@{index}{}", hook.suffix())));
        if let Some(pin) = pin.as_ref().filter(|p| p.exists()) {
            // Re-adopted: the link now runs this instance's program (an
            // upgraded netd's), swapped atomically under live traffic.
            use std::os::fd::AsFd;
            let prog = program(&mut self.bpf, hook.program())?;
            let fd = prog.fd().map_err(|e| attach_err(e.to_string()))?;
            return replace_program(pin, fd.as_fd()).map_err(|e| attach_err(format!("update {}: {e}", pin.display())));
        }
        if let Some(root) = &self.root {
            for (path, name, _, h) in pinned_links(root) {
                if name == ifname && h == hook {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let prog = program(&mut self.bpf, hook.program())?;
        let id = prog.attach(ifname, hook.attach_type()).map_err(|e| attach_err(e.to_string()))?;
        let Some(pin) = pin else {
            self.links.push((ifname.to_owned(), hook, id));
            return Ok(());
        };
        let link = prog.take_link(id).map_err(|e| attach_err(e.to_string()))?;
        let fd: aya::programs::links::FdLink =
            link.try_into().map_err(|e: aya::programs::links::LinkError| attach_err(e.to_string()))?;
        fd.pin(&pin).map_err(|e| attach_err(format!("pin {}: {e}", pin.display())))?;
        Ok(())
    }

    /// Services known (for inspection and tests).
    pub fn services(&self) -> usize {
        self.ids.services.len()
    }

    /// Detaches from every interface this instance attached to (in the
    /// calling thread's namespace for pinned links, whose pins go).
    pub fn detach_all(&mut self) -> Result<(), DatapathError> {
        for (ifname, hook, id) in std::mem::take(&mut self.links) {
            let prog = program(&mut self.bpf, hook.program())?;
            prog.detach(id).map_err(|e| DatapathError::Attach { ifname, why: e.to_string() })?;
        }
        if let Some(root) = &self.root {
            for dir in ["links", "sock"] {
                for e in std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    fn hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<aya::maps::HashMap<&mut aya::maps::MapData, K, V>, DatapathError> {
        let m = self.bpf.map_mut(name).ok_or_else(|| DatapathError::Map { map: name, why: "missing".into() })?;
        aya::maps::HashMap::try_from(m).map_err(map_err(name))
    }

    /// A map's file descriptor, for the batched updates aya lacks.
    fn fd(&self, name: &'static str) -> Result<std::os::fd::RawFd, DatapathError> {
        use std::os::fd::{AsFd, AsRawFd};
        let m = self.bpf.map(name).ok_or_else(|| DatapathError::Map { map: name, why: "missing".into() })?;
        let md = match m {
            aya::maps::Map::HashMap(md) | aya::maps::Map::HashOfMaps(md) => md,
            _ => return Err(DatapathError::Map { map: name, why: "not a hash map".into() }),
        };
        Ok(md.fd().as_fd().as_raw_fd())
    }

    fn tables(
        &mut self,
    ) -> Result<aya::maps::HashOfMaps<&mut aya::maps::MapData, u32, aya::maps::MapData>, DatapathError> {
        let m = self
            .bpf
            .map_mut("lb_maglev")
            .ok_or_else(|| DatapathError::Map { map: "lb_maglev", why: "missing".into() })?;
        aya::maps::HashOfMaps::try_from(m).map_err(map_err("lb_maglev"))
    }

    fn apply(&mut self, plan: Plan) -> Result<(), DatapathError> {
        use std::os::fd::AsFd;
        // Active backends, then the table, then the service, then the
        // backends leaving: a packet never finds a slot naming a backend
        // that is not there yet, nor (while slots are rewritten in place)
        // one already marked gone.
        let (active, leaving): (Vec<_>, Vec<_>) =
            plan.backends.iter().partition(|(_, be)| be.state == maps::BACKEND_ACTIVE);
        let mut b = self.hash::<u32, Backend>("lb_backends")?;
        for (id, be) in &active {
            b.insert(id, be, 0).map_err(map_err("lb_backends"))?;
        }
        let Some((k, v)) = &plan.service else { return Ok(()) };
        if plan.in_place {
            let t: aya::maps::MapData = self.tables()?.get(&v.id, 0).map_err(map_err("lb_maglev"))?;
            write_table(t.fd().as_fd(), &plan.table)?;
        } else if !plan.table.is_empty() {
            let t = new_table(&plan.table)?;
            self.tables()?.insert(v.id, &t, 0).map_err(map_err("lb_maglev"))?;
        }
        if v.flags & maps::SVC_NORTH_SOUTH == 0 {
            self.hash::<u32, u32>("lb_vips")?.insert(k.addr[0], 1, 0).map_err(map_err("lb_vips"))?;
        }
        let mut svc = self.hash::<SvcKey, Svc>("lb_services")?;
        svc.insert(k, v, 0).map_err(map_err("lb_services"))?;
        if plan.table.is_empty() {
            let _ = self.tables()?.remove(&v.id);
        }
        let mut b = self.hash::<u32, Backend>("lb_backends")?;
        for (id, be) in &leaving {
            b.insert(id, be, 0).map_err(map_err("lb_backends"))?;
        }
        Ok(())
    }
}

impl Kernel {
    /// Adds or replaces many services at once. Each update of the map of
    /// maps waits for an RCU grace period in the kernel (milliseconds), so
    /// the tables go in as one batched update: loading 10,000 services
    /// one by one takes minutes.
    pub fn upsert_services(&mut self, svcs: &[ServiceSpec]) -> Result<(), DatapathError> {
        use std::os::fd::{AsFd, AsRawFd};
        let saved = self.ids.clone();
        let plans = match svcs.iter().map(|s| self.ids.plan(s)).collect::<Result<Vec<Plan>, _>>() {
            Ok(p) => p,
            Err(e) => {
                // Refused as a whole: no id handed out for a change not made.
                self.ids = saved;
                return Err(e);
            }
        };
        // Each backend once (services share them), in batched updates: the
        // active ones first, the leaving ones last (as in `apply`).
        let backends: BTreeMap<u32, Backend> = plans.iter().flat_map(|p| p.backends.iter().copied()).collect();
        let (active, leaving): (Vec<_>, Vec<_>) =
            backends.into_iter().partition(|(_, be)| be.state == maps::BACKEND_ACTIVE);
        let (ids, values): (Vec<u32>, Vec<Backend>) = active.into_iter().unzip();
        update_batch(self.fd("lb_backends")?, &ids, &values)
            .map_err(|e| DatapathError::Map { map: "lb_backends", why: format!("batched update: {e}") })?;
        // Known services (e.g. all of them again after a restart) get their
        // tables rewritten in place; new ones get new tables, put in the
        // map of maps with one update (one RCU grace period, not one each).
        let mut tables = Vec::new();
        let (mut ids, mut fds) = (Vec::new(), Vec::new());
        for p in plans.iter().filter(|p| !p.in_place && !p.table.is_empty()) {
            let Some((_, v)) = &p.service else { continue };
            let t = new_table(&p.table)?;
            ids.push(v.id);
            fds.push(t.fd().as_fd().as_raw_fd() as u32);
            tables.push(t);
        }
        update_batch(self.fd("lb_maglev")?, &ids, &fds)
            .map_err(|e| DatapathError::Map { map: "lb_maglev", why: format!("batched update: {e}") })?;
        drop(tables);
        // After the new tables: a service listed twice finds its table.
        for p in plans.iter().filter(|p| p.in_place) {
            let Some((_, v)) = &p.service else { continue };
            let t: aya::maps::MapData = self.tables()?.get(&v.id, 0).map_err(map_err("lb_maglev"))?;
            write_table(t.fd().as_fd(), &p.table)?;
        }
        let (keys, values): (Vec<SvcKey>, Vec<Svc>) = plans.iter().filter_map(|p| p.service).unzip();
        let vips: std::collections::BTreeSet<u32> = plans
            .iter()
            .filter_map(|p| p.service)
            .filter(|(_, v)| v.flags & maps::SVC_NORTH_SOUTH == 0)
            .map(|(k, _)| k.addr[0])
            .collect();
        let vips: Vec<u32> = vips.into_iter().collect();
        update_batch(self.fd("lb_vips")?, &vips, &vec![1u32; vips.len()])
            .map_err(|e| DatapathError::Map { map: "lb_vips", why: format!("batched update: {e}") })?;
        update_batch(self.fd("lb_services")?, &keys, &values)
            .map_err(|e| DatapathError::Map { map: "lb_services", why: format!("batched update: {e}") })?;
        for (_, v) in plans.iter().filter(|p| p.table.is_empty()).filter_map(|p| p.service.as_ref()) {
            let _ = self.tables()?.remove(&v.id);
        }
        let (ids, values): (Vec<u32>, Vec<Backend>) = leaving.into_iter().unzip();
        update_batch(self.fd("lb_backends")?, &ids, &values)
            .map_err(|e| DatapathError::Map { map: "lb_backends", why: format!("batched update: {e}") })?;
        Ok(())
    }
}

impl Datapath for Kernel {
    fn upsert_service(&mut self, svc: &ServiceSpec) -> Result<(), DatapathError> {
        let plan = self.ids.plan(svc)?;
        self.apply(plan)
    }

    fn delete_service(&mut self, addr: Ipv4Addr, port: u16, proto: Proto) -> Result<(), DatapathError> {
        let (key, svc_id) = self.ids.forget(addr, port, proto)?;
        let mut svc = self.hash::<SvcKey, Svc>("lb_services")?;
        svc.remove(&key).map_err(map_err("lb_services"))?;
        let _ = self.tables()?.remove(&svc_id);
        if !self.ids.services.keys().any(|(a, _, _)| *a == addr) {
            let _ = self.hash::<u32, u32>("lb_vips")?.remove(&key.addr[0]);
        }
        Ok(())
    }

    /// Attaches in the calling thread's network namespace (TCX on kernels
    /// from 6.6, no qdisc needed). When pinned, the link is pinned too
    /// (`links/<ifname>@<ifindex>`): it outlives this process, and an
    /// interface whose link is pinned already keeps it, switched to this
    /// instance's program (re-adopted, or upgraded). A pin left by an
    /// earlier interface of the same name goes.
    fn attach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.attach_one(ifname, Hook::FromContainer)
    }

    fn attach_world(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.attach_one(ifname, Hook::FromWorld)?;
        self.attach_one(ifname, Hook::ToWorld)
    }

    fn flows(&self) -> Result<Vec<Flow>, DatapathError> {
        let m = self.bpf.map("lb_ct").ok_or_else(|| DatapathError::Map { map: "lb_ct", why: "missing".into() })?;
        let ct: aya::maps::HashMap<_, CtKey, Ct> = aya::maps::HashMap::try_from(m).map_err(map_err("lb_ct"))?;
        let mut out = Vec::new();
        for e in ct.iter() {
            let (k, v) = e.map_err(map_err("lb_ct"))?;
            if k.dir != maps::CT_FORWARD {
                continue;
            }
            out.push(Flow {
                client: (from_v4(k.saddr[0]), u16::from_be(k.sport)),
                service: (from_v4(k.daddr[0]), u16::from_be(k.dport)),
                backend: (from_v4(v.nat_addr[0]), u16::from_be(v.nat_port)),
                proto: k.proto,
            });
        }
        Ok(out)
    }

    fn counters(&self) -> Result<Vec<Counters>, DatapathError> {
        let m =
            self.bpf.map("lb_stats").ok_or_else(|| DatapathError::Map { map: "lb_stats", why: "missing".into() })?;
        let stats: aya::maps::PerCpuHashMap<_, u32, maps::Stats> =
            aya::maps::PerCpuHashMap::try_from(m).map_err(map_err("lb_stats"))?;
        let mut out = Vec::new();
        for (&(addr, port), id) in &self.ids.backends {
            let Ok(per_cpu) = stats.get(id, 0) else { continue };
            let mut c = Counters { backend: (addr, port), packets: 0, bytes: 0, flows: 0 };
            for s in per_cpu.iter() {
                c.packets += s.packets;
                c.bytes += s.bytes;
                c.flows += s.flows;
            }
            out.push(c);
        }
        Ok(out)
    }

    fn sweep(&mut self, t: &Timeouts) -> Result<usize, DatapathError> {
        let mut ct = self.hash::<CtKey, Ct>("lb_ct")?;
        sweep(&mut ct, monotonic_ns(), t)
    }

    fn upsert_services(&mut self, svcs: &[ServiceSpec]) -> Result<(), DatapathError> {
        Kernel::upsert_services(self, svcs)
    }

    fn service_keys(&self) -> Vec<(Ipv4Addr, u16, Proto)> {
        self.ids.services.keys().copied().collect()
    }

    fn prune_links(&mut self) -> usize {
        Kernel::prune_links(self)
    }

    /// Pinned as `sock/<program>`: a pinned one is switched to this
    /// instance's program (the cgroup it runs on stays as it was).
    fn attach_sockets(&mut self, cgroup: &std::path::Path) -> Result<(), DatapathError> {
        use std::os::fd::AsFd;
        let err = |why: String| DatapathError::Attach { ifname: cgroup.display().to_string(), why };
        let dir = self.root.as_ref().map(|r| r.join("sock"));
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).map_err(|e| err(e.to_string()))?;
        }
        let cg = std::fs::File::open(cgroup).map_err(|e| err(format!("open: {e}")))?;
        for name in SOCK_PROGRAMS {
            let prog = sock_program(&mut self.bpf, name)?;
            let pin = dir.as_ref().map(|d| d.join(name));
            if let Some(pin) = pin.as_ref().filter(|p| p.exists()) {
                let fd = prog.fd().map_err(|e| err(e.to_string()))?;
                replace_program(pin, fd.as_fd()).map_err(|e| err(format!("update {}: {e}", pin.display())))?;
                continue;
            }
            // As a BPF link (kernels >= 5.7), which coexists with other
            // links on the cgroup whatever the mode (link flags must be 0).
            let id = prog
                .attach(&cg, aya::programs::links::CgroupAttachMode::Single)
                .map_err(|e| err(format!("{name}: {e}")))?;
            if let Some(pin) = pin {
                let link = prog.take_link(id).map_err(|e| err(e.to_string()))?;
                let fd: aya::programs::links::FdLink =
                    link.try_into().map_err(|e: aya::programs::links::LinkError| err(e.to_string()))?;
                fd.pin(&pin).map_err(|e| err(format!("pin {}: {e}", pin.display())))?;
            }
        }
        Ok(())
    }

    fn answer_arp(&mut self, ifname: &str, gw_mac: [u8; 6]) -> Result<(), DatapathError> {
        let index = ifindex(ifname)
            .ok_or_else(|| DatapathError::Attach { ifname: ifname.to_owned(), why: "no such interface".into() })?;
        let mut m = self.hash::<u32, maps::Iface>("lb_ifaces")?;
        m.insert(index, maps::Iface { gw_mac, flags: 0 }, 0).map_err(map_err("lb_ifaces"))
    }

    fn attached(&self) -> Vec<String> {
        Kernel::attached(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(backends: &[(u8, BackendState)]) -> ServiceSpec {
        ServiceSpec {
            addr: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            proto: Proto::Tcp,
            backends: backends
                .iter()
                .map(|(i, s)| BackendSpec { addr: Ipv4Addr::new(10, 0, 0, *i), port: 8080, weight: 1, state: *s })
                .collect(),
            mode: Default::default(),
        }
    }

    #[test]
    fn more_backends_than_the_maps_hold_are_refused_and_change_nothing() {
        let mut r = Recording::new();
        r.upsert_service(&svc(&[(1, BackendState::Active)])).unwrap();
        let mut huge = svc(&[]);
        huge.addr = Ipv4Addr::new(10, 96, 0, 11);
        huge.backends = (0..maps::MAX_BACKENDS as u32)
            .map(|i| BackendSpec {
                addr: Ipv4Addr::from(0x0b00_0000 + i),
                port: 80,
                weight: 1,
                state: BackendState::Active,
            })
            .collect();
        let e = r.upsert_service(&huge).unwrap_err();
        assert!(e.to_string().contains("at most 262144 backends"), "{e}");
        assert_eq!((r.ids.services.len(), r.ids.backends.len()), (1, 1), "nothing handed out");
    }

    #[test]
    fn timeouts_follow_the_state() {
        let t = Timeouts::default();
        let tcp = CtKey { proto: 6, ..Default::default() };
        let udp = CtKey { proto: 17, ..Default::default() };
        let at =
            |secs: u64| Ct { last_seen_ns: 1_000_000_000, ..Default::default() }.last_seen_ns + secs * 1_000_000_000;
        let open = Ct { last_seen_ns: 1_000_000_000, ..Default::default() };
        let closing = Ct { flags: maps::CT_CLOSING, ..open };
        assert!(!expired(&tcp, &open, at(5 * 3600), &t), "quiet established TCP lives for hours");
        assert!(expired(&tcp, &open, at(6 * 3600 + 1), &t));
        assert!(!expired(&tcp, &closing, at(9), &t) && expired(&tcp, &closing, at(11), &t));
        assert!(!expired(&udp, &open, at(119), &t) && expired(&udp, &open, at(121), &t));
        assert!(!expired(&tcp, &open, 0, &t), "a clock behind the entry is not idle time");
    }

    #[test]
    fn plans_keep_ids_and_leave_draining_backends_out_of_the_table() {
        let mut ids = Ids::new(1009).unwrap();
        let p = ids.plan(&svc(&[(1, BackendState::Active), (2, BackendState::Active)])).unwrap();
        assert_eq!(p.table.len(), 1009);
        assert!(!p.in_place, "a new service gets a new table");
        let (_, s) = p.service.unwrap();
        assert_eq!((s.id, s.table_size), (1, 1009));
        let p = ids.plan(&svc(&[(1, BackendState::Active), (2, BackendState::Draining)])).unwrap();
        assert_eq!(
            p.backends.iter().map(|b| (b.0, b.1.state)).collect::<Vec<_>>(),
            [(1, maps::BACKEND_ACTIVE), (2, maps::BACKEND_DRAINING)]
        );
        assert!(p.table.iter().all(|id| *id == 1), "a draining backend gets no new flows");
        assert!(p.in_place, "same table size: slots rewritten in place");
        assert_eq!(p.service.unwrap().1.id, 1, "same service id");
        // No live backend: no table.
        let p = ids.plan(&svc(&[(1, BackendState::Gone)])).unwrap();
        assert_eq!((p.table.len(), p.service.unwrap().1.table_size), (0, 0));
        assert!(!p.in_place);
        let p = ids.plan(&svc(&[(1, BackendState::Active)])).unwrap();
        assert!(!p.in_place, "back from no backend: a new table");
        let mut r = Recording::new();
        r.upsert_service(&svc(&[(1, BackendState::Active)])).unwrap();
        r.attach("veth1").unwrap();
        assert!(r.delete_service(Ipv4Addr::new(10, 96, 0, 11), 80, Proto::Tcp).is_err());
        assert_eq!(r.calls, ["upsert 10.96.0.10:80/Tcp x1", "attach veth1", "delete 10.96.0.11:80/Tcp"]);
    }
}
