//! The C datapath run by the kernel on packets built with etherparse
//! (BPF_PROG_TEST_RUN, no interfaces needed): DNAT to the Maglev-chosen
//! backend with valid checksums, the same backend for the flow afterwards,
//! reverse NAT of replies, UDP (with and without checksum), drain and gone
//! backends, traffic that is not for a service, and malformed or truncated
//! packets passed untouched. Plus the layout check of the shared structs
//! against the object's BTF.

use std::net::Ipv4Addr;

use aya::maps::HashMap;
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use ebpf::maglev;
use ebpf::maps::{self, Backend, Ct, CtKey, Svc, SvcKey};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const M: u32 = 1009;

fn root() -> bool {
    if nix_uid() == 0 {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI runs as root: BPF tests must run there");
    eprintln!("SKIPPED: loading BPF programs needs root");
    false
}

fn nix_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(u32::MAX)
}

#[test]
fn shared_structs_match_the_objects_btf() {
    let out = std::process::Command::new("bpftool")
        .args(["btf", "dump", "file", ebpf::OBJECT_PATH, "format", "raw"])
        .output()
        .expect("bpftool (cargo xtask setup installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for (name, size, fields) in maps::layouts() {
        let head = format!("STRUCT '{name}' size=");
        let at = text.find(&head).unwrap_or_else(|| panic!("{name} not in the object's BTF"));
        let rest = &text[at + head.len()..];
        let c_size: usize = rest.split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(c_size, size, "size of {name}: C {c_size}, Rust {size}");
        let members: Vec<(&str, usize)> = rest
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with('\t'))
            .map(|l| {
                let name = l.trim().split('\'').nth(1).unwrap();
                let bits: usize = l.rsplit("bits_offset=").next().unwrap().trim().parse().unwrap();
                (name, bits / 8)
            })
            .collect();
        assert_eq!(members, fields, "fields of {name}: C vs Rust");
    }
}

#[test]
fn capacities_match_the_object() {
    if !root() {
        return;
    }
    let bpf = aya::Ebpf::load(ebpf::OBJECT).expect("the object loads");
    for (name, max) in [
        ("lb_services", maps::MAX_SERVICES),
        ("lb_maglev", maps::MAX_SERVICES),
        ("lb_backends", maps::MAX_BACKENDS),
        ("lb_stats", maps::MAX_BACKENDS),
    ] {
        let md = match bpf.map(name).unwrap_or_else(|| panic!("{name} in the object")) {
            aya::maps::Map::HashMap(m) | aya::maps::Map::HashOfMaps(m) | aya::maps::Map::PerCpuHashMap(m) => m,
            _ => panic!("{name}: not a hash map"),
        };
        assert_eq!(md.info().unwrap().max_entries() as usize, max, "capacity of {name}: C vs maps.rs");
    }
}

/// The flow hash of `bpf/lb.bpf.c`, to know which slot a flow takes.
fn flow_hash(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h: u64 = (u64::from(saddr) << 32) ^ u64::from(daddr);
    h ^= (u64::from(sport) << 24) ^ (u64::from(dport) << 8) ^ u64::from(proto);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as u32
}

/// Network-order u32 of an address, as the program stores it.
fn be(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 5);
const BACKENDS: [Ipv4Addr; 3] = [Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(10, 0, 1, 2), Ipv4Addr::new(10, 0, 1, 3)];

struct Lab {
    bpf: aya::Ebpf,
    /// The Maglev table last written (slot -> backend id).
    table: Vec<u32>,
}

impl Lab {
    fn new() -> Lab {
        let mut bpf = aya::Ebpf::load(ebpf::OBJECT).expect("the object loads");
        let prog: &mut SchedClassifier = bpf.program_mut("lb_from_container").unwrap().try_into().unwrap();
        prog.load().expect("the verifier accepts the program");
        let mut lab = Lab { bpf, table: Vec::new() };
        for (i, b) in BACKENDS.iter().enumerate() {
            lab.backend(i as u32 + 1, *b, maps::BACKEND_ACTIVE);
        }
        for proto in [6u8, 17] {
            let key = SvcKey { addr: [be(VIP), 0, 0, 0], port: 80u16.to_be(), proto, family: maps::FAMILY_V4 };
            let mut svcs: HashMap<_, SvcKey, Svc> = HashMap::try_from(lab.bpf.map_mut("lb_services").unwrap()).unwrap();
            svcs.insert(key, Svc { id: u32::from(proto), table_size: M, ..Default::default() }, 0).unwrap();
        }
        lab.maglev(&[1, 2, 3]);
        lab
    }

    fn backend(&mut self, id: u32, a: Ipv4Addr, state: u8) {
        let mut m: HashMap<_, u32, Backend> = HashMap::try_from(self.bpf.map_mut("lb_backends").unwrap()).unwrap();
        m.insert(id, Backend { addr: [be(a), 0, 0, 0], port: 8080u16.to_be(), state, family: maps::FAMILY_V4 }, 0)
            .unwrap();
    }

    /// Writes both services' Maglev tables over backend ids `ids`.
    fn maglev(&mut self, ids: &[u32]) {
        let list: Vec<maglev::Backend> = ids
            .iter()
            .map(|&i| maglev::Backend { name: format!("{}:8080", BACKENDS[i as usize - 1]), weight: 1 })
            .collect();
        self.table = maglev::table(&list, M).unwrap().iter().map(|i| ids[*i as usize]).collect();
        let mut m: aya::maps::HashOfMaps<_, u32, aya::maps::Array<aya::maps::MapData, u32>> =
            aya::maps::HashOfMaps::try_from(self.bpf.map_mut("lb_maglev").unwrap()).unwrap();
        for svc_id in [6u32, 17] {
            // Each service its own table array, swapped in whole.
            let mut t = aya::maps::Array::<aya::maps::MapData, u32>::create(M, ebpf::maps::TABLE_FLAGS).unwrap();
            for (slot, id) in self.table.iter().enumerate() {
                t.set(slot as u32, id, 0).unwrap();
            }
            m.insert(svc_id, &t, 0).unwrap();
        }
    }

    /// The backend a new flow lands on, by the Maglev table.
    fn expected(&self, sport: u16, proto: u8) -> Ipv4Addr {
        let slot = flow_hash(be(CLIENT), be(VIP), sport.to_be(), 80u16.to_be(), proto) % M;
        BACKENDS[self.table[slot as usize] as usize - 1]
    }

    fn run(&self, pkt: &[u8]) -> (u32, Vec<u8>) {
        self.try_run(pkt).expect("BPF_PROG_TEST_RUN")
    }

    fn try_run(&self, pkt: &[u8]) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        let prog: &SchedClassifier = self.bpf.program("lb_from_container").unwrap().try_into().unwrap();
        let mut out = vec![0u8; pkt.len() + 256];
        let r = prog.test_run(TestRunOptions { data_in: Some(pkt), data_out: Some(&mut out), ..Default::default() })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    fn ct_entries(&self) -> usize {
        let m: HashMap<_, CtKey, Ct> = HashMap::try_from(self.bpf.map("lb_ct").unwrap()).unwrap();
        m.keys().count()
    }
}

const PAYLOAD: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    tcp_flag(src, sport, dst, dport, None)
}

/// A TCP segment with one flag set: `Some("syn")` or `Some("fin")`.
fn tcp_flag(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flag: Option<&str>) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 64000);
    let b = match flag {
        None => b,
        Some("syn") => b.syn(),
        Some("fin") => b.fin(),
        Some(other) => panic!("flag {other}"),
    };
    let mut v = Vec::new();
    b.write(&mut v, PAYLOAD).unwrap();
    v
}

fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, zero_csum: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, PAYLOAD).unwrap();
    if zero_csum {
        let l4 = 14 + 20;
        v[l4 + 6] = 0;
        v[l4 + 7] = 0;
    }
    v
}

/// (src, sport, dst, dport) of a packet, after checking every checksum.
fn parse(pkt: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let h = PacketHeaders::from_ethernet_slice(pkt).expect("a well-formed packet");
    let Some(NetHeaders::Ipv4(ip, _)) = h.net else { panic!("not IPv4") };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "IP header checksum");
    match h.transport {
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!(t.checksum, t.calc_checksum_ipv4(&ip, PAYLOAD).unwrap(), "TCP checksum");
            (ip.source.into(), t.source_port, ip.destination.into(), t.destination_port)
        }
        Some(TransportHeader::Udp(u)) => {
            if u.checksum != 0 {
                assert_eq!(u.checksum, u.calc_checksum_ipv4(&ip, PAYLOAD).unwrap(), "UDP checksum");
            }
            (ip.source.into(), u.source_port, ip.destination.into(), u.destination_port)
        }
        other => panic!("unexpected transport {other:?}"),
    }
}

#[test]
fn dnat_to_the_maglev_backend_and_reverse_nat_of_replies() {
    if !root() {
        return;
    }
    let lab = Lab::new();
    let want = lab.expected(40000, 6);
    let (ret, out) = lab.run(&tcp(CLIENT, 40000, VIP, 80));
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(parse(&out), (CLIENT, 40000, want, 8080), "DNAT to the backend of the flow's slot");
    // The flow keeps its backend; the reply gets the service address back.
    for _ in 0..3 {
        assert_eq!(parse(&lab.run(&tcp(CLIENT, 40000, VIP, 80)).1), (CLIENT, 40000, want, 8080));
    }
    let (ret, out) = lab.run(&tcp(want, 8080, CLIENT, 40000));
    assert_eq!(ret, TC_ACT_OK);
    assert_eq!(parse(&out), (VIP, 80, CLIENT, 40000), "the client only ever sees the VIP");
    assert_eq!(lab.ct_entries(), 2, "one forward and one reply entry");
    // Counted: 4 packets, one flow, for that backend only.
    let id = BACKENDS.iter().position(|b| *b == want).unwrap() as u32 + 1;
    let stats: aya::maps::PerCpuHashMap<_, u32, maps::Stats> =
        aya::maps::PerCpuHashMap::try_from(lab.bpf.map("lb_stats").unwrap()).unwrap();
    let sum = stats.get(&id, 0).unwrap().iter().fold((0, 0, 0), |a, s| (a.0 + s.packets, a.1 + s.bytes, a.2 + s.flows));
    assert_eq!((sum.0, sum.2), (4, 1), "packets and flows of backend {id}");
    assert_eq!(sum.1, 4 * tcp(CLIENT, 40000, VIP, 80).len() as u64, "bytes");
    assert_eq!(stats.keys().count(), 1, "no other backend counted");
    // Many flows spread over all backends, each as the table says.
    let mut seen = std::collections::HashSet::new();
    for sport in 41000..41060 {
        let (_, out) = lab.run(&tcp(CLIENT, sport, VIP, 80));
        let (_, _, dst, _) = parse(&out);
        assert_eq!(dst, lab.expected(sport, 6), "flow {sport}");
        seen.insert(dst);
    }
    assert_eq!(seen.len(), 3, "all backends used: {seen:?}");
}

#[test]
fn udp_with_and_without_checksum() {
    if !root() {
        return;
    }
    let lab = Lab::new();
    let want = lab.expected(5353, 17);
    assert_eq!(parse(&lab.run(&udp(CLIENT, 5353, VIP, 80, false)).1), (CLIENT, 5353, want, 8080));
    let (_, out) = lab.run(&udp(CLIENT, 5353, VIP, 80, true));
    assert_eq!(parse(&out), (CLIENT, 5353, want, 8080));
    assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0], "no checksum stays no checksum");
    assert_eq!(parse(&lab.run(&udp(want, 8080, CLIENT, 5353, false)).1), (VIP, 80, CLIENT, 5353));
}

#[test]
fn draining_keeps_flows_and_gone_moves_them() {
    if !root() {
        return;
    }
    let mut lab = Lab::new();
    let (_, out) = lab.run(&tcp(CLIENT, 40000, VIP, 80));
    let first = parse(&out).2;
    let id = BACKENDS.iter().position(|b| *b == first).unwrap() as u32 + 1;
    let others: Vec<u32> = (1..=3).filter(|i| *i != id).collect();
    // Draining: out of the table for new flows, established ones stay.
    lab.backend(id, first, maps::BACKEND_DRAINING);
    lab.maglev(&others);
    assert_eq!(
        parse(&lab.run(&tcp(CLIENT, 40000, VIP, 80)).1).2,
        first,
        "an established flow stays on a draining backend"
    );
    for sport in 42000..42030 {
        assert_ne!(parse(&lab.run(&tcp(CLIENT, sport, VIP, 80)).1).2, first, "a new flow {sport} avoids it");
    }
    // Gone: the established flow moves at once to a live backend.
    lab.backend(id, first, maps::BACKEND_GONE);
    let (ret, out) = lab.run(&tcp(CLIENT, 40000, VIP, 80));
    assert_eq!(ret, TC_ACT_OK);
    let now = parse(&out).2;
    assert_ne!(now, first);
    assert_eq!(now, lab.expected(40000, 6));
}

#[test]
fn other_traffic_and_malformed_packets_pass_untouched() {
    if !root() {
        return;
    }
    let lab = Lab::new();
    // Not a service (other address, other port).
    for pkt in [tcp(CLIENT, 40000, Ipv4Addr::new(10, 96, 0, 11), 80), tcp(CLIENT, 40000, VIP, 81)] {
        let (ret, out) = lab.run(&pkt);
        assert_eq!((ret, &out), (TC_ACT_OK, &pkt));
    }
    // Truncated anywhere: passed as is.
    let good = tcp(CLIENT, 40000, VIP, 80);
    for cut in [15, 20, 33, 34, 36, 40, 50] {
        let pkt = &good[..cut];
        match lab.try_run(pkt) {
            Ok((ret, out)) => assert_eq!((ret, out.as_slice()), (TC_ACT_OK, pkt), "cut at {cut}"),
            // The kernel's test runner itself refuses IPv4 frames shorter
            // than an IP header; from 34 bytes on the program must see them.
            Err(e) => assert!(cut < 34, "cut at {cut}: {e:?}"),
        }
    }
    // A header length below 5, a fragment, ARP: passed as is.
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    let mut frag = good.clone();
    frag[14 + 6] = 0x20; // more fragments
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    for pkt in [bad_ihl, frag, arp] {
        let (ret, out) = lab.run(&pkt);
        assert_eq!((ret, &out), (TC_ACT_OK, &pkt));
    }
    assert_eq!(lab.ct_entries(), 0, "nothing tracked for what was not balanced");
    // A VIP flow, then a direct connection from the same client port to
    // the same backend: the old reply entry must not rewrite its replies.
    let back = parse(&lab.run(&tcp(CLIENT, 44000, VIP, 80)).1).2;
    let syn = tcp_flag(CLIENT, 44000, back, 8080, Some("syn"));
    assert_eq!(parse(&lab.run(&syn).1), (CLIENT, 44000, back, 8080), "direct: untouched");
    assert_eq!(
        parse(&lab.run(&tcp(back, 8080, CLIENT, 44000)).1),
        (back, 8080, CLIENT, 44000),
        "its reply is not NATed to the VIP"
    );
    // And the VIP again from that port (its forward entry still there): the
    // reply entry comes back with the new SYN.
    let vip_syn = tcp_flag(CLIENT, 44000, VIP, 80, Some("syn"));
    assert_eq!(parse(&lab.run(&vip_syn).1), (CLIENT, 44000, back, 8080));
    assert_eq!(parse(&lab.run(&tcp(back, 8080, CLIENT, 44000)).1), (VIP, 80, CLIENT, 44000), "reverse NAT restored");
    let mut lab = lab;
    let mut ct: HashMap<_, CtKey, Ct> = HashMap::try_from(lab.bpf.map_mut("lb_ct").unwrap()).unwrap();
    for k in ct.keys().map(|k| k.unwrap()).collect::<Vec<_>>() {
        ct.remove(&k).unwrap();
    }
    // A service without backends drops rather than leaking to the VIP.
    let mut svcs: HashMap<_, SvcKey, Svc> = HashMap::try_from(lab.bpf.map_mut("lb_services").unwrap()).unwrap();
    let key = SvcKey { addr: [be(VIP), 0, 0, 0], port: 80u16.to_be(), proto: 6, family: maps::FAMILY_V4 };
    svcs.insert(key, Svc { id: 6, table_size: 0, ..Default::default() }, 0).unwrap();
    assert_eq!(lab.run(&tcp(CLIENT, 43000, VIP, 80)).0, TC_ACT_SHOT);
}

#[test]
fn conntrack_ages_out_by_state() {
    if !root() {
        return;
    }
    let mut lab = Lab::new();
    lab.run(&tcp(CLIENT, 40000, VIP, 80));
    lab.run(&tcp(CLIENT, 40001, VIP, 80));
    lab.run(&udp(CLIENT, 5353, VIP, 80, false));
    // A FIN on the second flow marks its forward entry closing.
    let fin = tcp_flag(CLIENT, 40001, VIP, 80, Some("fin"));
    assert_eq!(parse(&lab.run(&fin).1).3, 8080, "the FIN is forwarded like the rest of its flow");
    assert_eq!(lab.ct_entries(), 6, "three flows, two entries each");
    let now = ebpf::datapath::monotonic_ns() + 1_000_000;
    let mut ct: HashMap<_, CtKey, Ct> = HashMap::try_from(lab.bpf.map_mut("lb_ct").unwrap()).unwrap();
    let short = ebpf::datapath::Timeouts {
        tcp_established: std::time::Duration::from_secs(3600),
        tcp_closing: std::time::Duration::ZERO,
        udp: std::time::Duration::ZERO,
    };
    assert_eq!(ebpf::datapath::sweep(&mut ct, now, &short).unwrap(), 3, "UDP both ways and the closing forward entry");
    let left: Vec<(u16, u8)> = ct.keys().map(|k| k.unwrap()).map(|k| (u16::from_be(k.sport), k.dir)).collect();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains(&(40000, maps::CT_FORWARD)) && !left.contains(&(40001, maps::CT_FORWARD)), "{left:?}");
    // With the defaults nothing this fresh goes.
    assert_eq!(ebpf::datapath::sweep(&mut ct, now, &Default::default()).unwrap(), 0);
}

/// An Ethernet ARP request from CLIENT (MAC 02:..:05) for `target`.
fn arp_request(target: Ipv4Addr, op: u16) -> Vec<u8> {
    let mac = [2, 0, 0, 0, 0, 5];
    let mut p = vec![0xff; 6];
    p.extend(mac);
    p.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    p.extend(op.to_be_bytes());
    p.extend(mac);
    p.extend(CLIENT.octets());
    p.extend([0; 6]);
    p.extend(target.octets());
    p
}

#[test]
fn arp_requests_for_a_vip_are_answered_with_the_gateway_mac() {
    if !root() {
        return;
    }
    let mut lab = Lab::new();
    let gw = [2, 0x42, 0xac, 0x12, 0, 1];
    let ask = arp_request(VIP, 1);
    // No interface entry yet (and no VIP): passed untouched.
    assert_eq!(lab.run(&ask), (TC_ACT_OK, ask.clone()));
    // PROG_TEST_RUN runs the packet as if from the loopback device (index 1).
    let mut ifs: HashMap<_, u32, maps::Iface> = HashMap::try_from(lab.bpf.map_mut("lb_ifaces").unwrap()).unwrap();
    ifs.insert(1, maps::Iface { gw_mac: gw, flags: 0 }, 0).unwrap();
    assert_eq!(lab.run(&ask), (TC_ACT_OK, ask.clone()), "not a service address yet");
    let mut vips: HashMap<_, u32, u32> = HashMap::try_from(lab.bpf.map_mut("lb_vips").unwrap()).unwrap();
    vips.insert(be(VIP), 1, 0).unwrap();
    const TC_ACT_REDIRECT: u32 = 7;
    let (rc, out) = lab.run(&ask);
    assert_eq!(rc, TC_ACT_REDIRECT, "the reply goes back out the interface it came from");
    let mut want = Vec::new();
    want.extend([2, 0, 0, 0, 0, 5]); // to the asker
    want.extend(gw);
    want.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]); // a reply
    want.extend(gw);
    want.extend(VIP.octets());
    want.extend([2, 0, 0, 0, 0, 5]);
    want.extend(CLIENT.octets());
    assert_eq!(out, want);
    // Other addresses, other operations, truncated requests: untouched.
    for pkt in [arp_request(BACKENDS[0], 1), arp_request(VIP, 2), ask[..40].to_vec()] {
        assert_eq!(lab.run(&pkt), (TC_ACT_OK, pkt.clone()));
    }
}

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

/// Runs program `name` (loaded on first use) with a zeroed `__sk_buff`;
/// returns the verdict, the packet and the mark it left on the skb.
fn run_at(lab: &mut Lab, name: &str, pkt: &[u8]) -> (u32, Vec<u8>, u32) {
    let prog: &mut SchedClassifier = lab.bpf.program_mut(name).unwrap().try_into().unwrap();
    if prog.fd().is_err() {
        prog.load().expect("the verifier accepts the program");
    }
    let ctx_in = [0u8; 192]; // sizeof(struct __sk_buff)
    let mut ctx_out = [0u8; 192];
    let mut out = vec![0u8; pkt.len() + 256];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(pkt),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out, u32::from_ne_bytes(ctx_out[8..12].try_into().unwrap()))
}

/// A published port on NODE:8080/tcp over the same backends (id 30).
fn publish(lab: &mut Lab, flags: u32) {
    let key = SvcKey { addr: [be(NODE), 0, 0, 0], port: 8080u16.to_be(), proto: 6, family: maps::FAMILY_V4 };
    let mut svcs: HashMap<_, SvcKey, Svc> = HashMap::try_from(lab.bpf.map_mut("lb_services").unwrap()).unwrap();
    svcs.insert(key, Svc { id: 30, table_size: M, flags, ..Default::default() }, 0).unwrap();
    let mut m: aya::maps::HashOfMaps<_, u32, aya::maps::Array<aya::maps::MapData, u32>> =
        aya::maps::HashOfMaps::try_from(lab.bpf.map_mut("lb_maglev").unwrap()).unwrap();
    let mut t = aya::maps::Array::<aya::maps::MapData, u32>::create(M, ebpf::maps::TABLE_FLAGS).unwrap();
    for (slot, id) in lab.table.iter().enumerate() {
        t.set(slot as u32, id, 0).unwrap();
    }
    m.insert(30, &t, 0).unwrap();
}

#[test]
fn published_ports_serve_the_world_and_reply_where_they_leave_the_node() {
    if !root() {
        return;
    }
    let mut lab = Lab::new();
    publish(&mut lab, maps::SVC_NORTH_SOUTH | maps::SVC_SNAT);
    let syn = tcp_flag(OUTSIDE, 40000, NODE, 8080, Some("syn"));
    // From a container: a published port is not a VIP; untouched.
    assert_eq!(run_at(&mut lab, "lb_from_container", &syn).1, syn);
    // A VIP is not reachable from the world.
    let to_vip = tcp_flag(OUTSIDE, 40000, VIP, 80, Some("syn"));
    assert_eq!(run_at(&mut lab, "lb_from_world", &to_vip), (TC_ACT_OK, to_vip.clone(), 0));
    // From the world: DNAT to a backend, marked for nftables (forward and
    // masquerade).
    let (rc, out, mark) = run_at(&mut lab, "lb_from_world", &syn);
    assert_eq!(rc, TC_ACT_OK);
    let (src, sport, dst, dport) = parse(&out);
    assert_eq!((src, sport, dport), (OUTSIDE, 40000, 8080));
    assert!(BACKENDS.contains(&dst), "{dst}");
    assert_eq!(mark, maps::MARK_NORTH_SOUTH | maps::MARK_SNAT);
    // Later packets of the flow: same backend, marked again.
    let (_, out2, mark2) = run_at(&mut lab, "lb_from_world", &tcp(OUTSIDE, 40000, NODE, 8080));
    assert_eq!(parse(&out2).2, dst);
    assert_eq!(mark2, mark);
    // The backend's reply: not rewritten at its veth (the node address
    // would be a martian source coming in on a bridge) ...
    let reply = tcp(dst, 8080, OUTSIDE, 40000);
    assert_eq!(run_at(&mut lab, "lb_from_container", &reply).1, reply);
    // ... but where it leaves the node: the client sees the node's port.
    let (rc, out, _) = run_at(&mut lab, "lb_to_world", &reply);
    assert_eq!(rc, TC_ACT_OK);
    assert_eq!(parse(&out), (NODE, 8080, OUTSIDE, 40000));

    // Source-preserving mode: the same, without the SNAT mark.
    publish(&mut lab, maps::SVC_NORTH_SOUTH);
    let (_, out, mark) = run_at(&mut lab, "lb_from_world", &tcp_flag(OUTSIDE, 40001, NODE, 8080, Some("syn")));
    assert_eq!(parse(&out).0, OUTSIDE);
    assert_eq!(mark, maps::MARK_NORTH_SOUTH);

    // East-west replies are not touched on the way out of the node, and
    // the world program never reverse-NATs.
    let (_, out, _) = run_at(&mut lab, "lb_from_container", &tcp_flag(CLIENT, 5555, VIP, 80, Some("syn")));
    let ew_backend = parse(&out).2;
    let ew_reply = tcp(ew_backend, 8080, CLIENT, 5555);
    assert_eq!(run_at(&mut lab, "lb_to_world", &ew_reply).1, ew_reply);
    assert_eq!(run_at(&mut lab, "lb_from_world", &ew_reply).1, ew_reply);
    assert_eq!(parse(&run_at(&mut lab, "lb_from_container", &ew_reply).1).0, VIP);
}
