//! The resolver's logic through hickory's request handler, without the
//! server's sockets: views, every record kind, NXDOMAIN/NODATA with an SOA,
//! ordering, forwarding to fake upstreams on loopback (answering,
//! blackholed, truncating, overloaded), and a bounded fuzz of the request
//! path.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dns::{
    Db, Endpoint, Forwarder, NetKey, Network, Proto, Resolver, Service, ServicePort, Shared, Task, View, ViewId,
};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

/// Keeps what the handler sends, encoded as the server would over UDP.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = response.edns().map(|e| e.max_payload()).unwrap_or(512);
        let mut buf = Vec::new();
        let mut enc = BinEncoder::new(&mut buf);
        enc.set_max_size(max);
        let info = response.destructive_emit(&mut enc)?;
        *self.0.lock().unwrap() = Some(buf);
        Ok(info)
    }
}

fn net(id: &str, name: &str, subnet: [u8; 4], internal: bool) -> Network {
    Network {
        id: NetKey(id.into()),
        name: name.into(),
        subnets: vec![(IpAddr::V4(Ipv4Addr::from(subnet)), 16)],
        internal,
    }
}

fn ep(net: &str, id: &str, name: &str, aliases: &[&str], ip: [u8; 4]) -> Endpoint {
    Endpoint {
        network: NetKey(net.into()),
        container: ViewId(id.into()),
        name: name.into(),
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        ipv4: Some(Ipv4Addr::from(ip)),
        ipv6: None,
    }
}

const WEB: &str = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111";
const DB: &str = "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222";
const BOTH: &str = "cccccccccccc3333333333333333333333333333333333333333333333333333";
const LONER: &str = "dddddddddddd4444444444444444444444444444444444444444444444444444";

/// front: web, both; back: db, both; locked (internal): loner.
fn db_with(upstreams: Vec<SocketAddr>) -> Db {
    let mut db = Db::new(5, 7);
    db.add_network(net("n-front", "front", [172, 18, 0, 0], false));
    db.add_network(net("n-back", "back", [172, 19, 0, 0], false));
    db.add_network(net("n-locked", "locked", [172, 20, 0, 0], true));
    db.add_endpoint(&ep("n-front", WEB, "web", &["www"], [172, 18, 0, 2]));
    db.add_endpoint(&ep("n-back", DB, "db", &["pg"], [172, 19, 0, 2]));
    db.add_endpoint(&ep("n-front", BOTH, "both", &[], [172, 18, 0, 3]));
    db.add_endpoint(&ep("n-back", BOTH, "both", &[], [172, 19, 0, 3]));
    db.add_endpoint(&ep("n-locked", LONER, "loner", &[], [172, 20, 0, 2]));
    let task = |n: &str, ip: [u8; 4], healthy| Task { name: n.into(), ip: IpAddr::V4(Ipv4Addr::from(ip)), healthy };
    db.add_service(Service {
        name: "api".into(),
        network: NetKey("n-front".into()),
        vip: Some(IpAddr::V4(Ipv4Addr::new(172, 18, 255, 1))),
        tasks: vec![task("api.1.x", [172, 18, 1, 1], true), task("api.2.y", [172, 18, 1, 2], true)],
        ports: vec![ServicePort { name: Some("http".into()), port: 8080, proto: Proto::Tcp }],
    });
    db.add_service(Service {
        name: "cache".into(),
        network: NetKey("n-front".into()),
        vip: None,
        tasks: vec![
            task("cache.1.a", [172, 18, 2, 1], true),
            task("cache.2.b", [172, 18, 2, 2], true),
            task("cache.3.c", [172, 18, 2, 3], false),
        ],
        ports: vec![ServicePort { name: None, port: 6379, proto: Proto::Tcp }],
    });
    let view = |nets: &[&str]| View {
        networks: nets.iter().map(|n| NetKey(n.to_string())).collect(),
        upstreams: upstreams.clone(),
    };
    db.set_view(ViewId(WEB.into()), view(&["n-front"]));
    db.set_view(ViewId(DB.into()), view(&["n-back"]));
    db.set_view(ViewId(BOTH.into()), view(&["n-front", "n-back"]));
    db.set_view(ViewId(LONER.into()), view(&["n-locked"]));
    db
}

fn shared(upstreams: Vec<SocketAddr>) -> Arc<Shared> {
    Shared::new(db_with(upstreams), Forwarder::new(64, Duration::from_millis(300)))
}

fn query_bytes(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0x4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), t));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

async fn ask_raw(s: &Arc<Shared>, view: &str, raw: Vec<u8>, proto: Protocol) -> Option<Message> {
    let req = Request::from_bytes(raw, "127.0.0.1:5353".parse().unwrap(), proto).ok()?;
    let r = Resolver { view: ViewId(view.into()), shared: s.clone() };
    let cap = Capture::default();
    r.handle_request::<_, TokioTime>(&req, cap.clone()).await;
    let out = cap.0.lock().unwrap().clone()?;
    Some(Message::from_vec(&out).expect("our answer decodes"))
}

async fn ask(s: &Arc<Shared>, view: &str, name: &str, t: RecordType) -> Message {
    let m = ask_raw(s, view, query_bytes(name, t, None), Protocol::Udp).await.expect("an answer");
    assert_eq!(m.metadata.id, 0x4242, "the answer carries the query's id");
    m
}

fn ips(m: &Message) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn soa_owner(m: &Message) -> Option<String> {
    m.authorities.iter().find(|r| r.record_type() == RecordType::SOA).map(|r| r.name.to_ascii())
}

#[tokio::test]
async fn names_resolve_only_where_the_asker_shares_a_network() {
    let s = shared(vec![]);
    // web (front) sees both (front address only), www, api; not db.
    assert_eq!(ips(&ask(&s, WEB, "both.", RecordType::A).await), [ip("172.18.0.3"), ip("172.19.0.3")][..1]);
    assert_eq!(ips(&ask(&s, WEB, "www.", RecordType::A).await), [ip("172.18.0.2")]);
    let m = ask(&s, WEB, "db.", RecordType::A).await;
    assert!(m.answers.is_empty(), "db is on a network web is not on: {m:?}");
    // The container on both networks sees both, and both of its own addresses.
    assert_eq!(ips(&ask(&s, BOTH, "db.", RecordType::A).await), [ip("172.19.0.2")]);
    assert_eq!(ips(&ask(&s, BOTH, "web.", RecordType::A).await), [ip("172.18.0.2")]);
    assert_eq!(ips(&ask(&s, BOTH, "both.", RecordType::A).await), [ip("172.18.0.3"), ip("172.19.0.3")]);
    // Answers are authoritative, with the configured TTL; names are case-insensitive.
    let m = ask(&s, DB, "PG.", RecordType::A).await;
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers[0].ttl, 5);
    assert_eq!(ips(&m), [ip("172.19.0.2")]);
}

#[tokio::test]
async fn name_dot_network_ids_and_nxdomain_with_soa() {
    let s = shared(vec![]);
    assert_eq!(ips(&ask(&s, BOTH, "db.back.", RecordType::A).await), [ip("172.19.0.2")]);
    assert_eq!(ips(&ask(&s, BOTH, "both.back.", RecordType::A).await), [ip("172.19.0.3")]);
    // Short container ids, as Docker (a full id is longer than a DNS label).
    assert_eq!(ips(&ask(&s, WEB, "cccccccccccc.", RecordType::A).await), [ip("172.18.0.3")]);
    // A name in one of our zones that does not exist: NXDOMAIN with the zone's SOA.
    let m = ask(&s, BOTH, "nope.back.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(soa_owner(&m).as_deref(), Some("back."));
    // db.back does not exist for web (not on back): not our zone there -> forwarded (no upstream: SERVFAIL).
    let m = ask(&s, WEB, "db.back.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn zone_apexes_answer_soa_and_ns() {
    let s = shared(vec![]);
    let m = ask(&s, BOTH, "back.", RecordType::SOA).await;
    assert_eq!(m.answers.len(), 1, "{m:?}");
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    let m = ask(&s, BOTH, "back.", RecordType::NS).await;
    assert_eq!(m.answers.first().map(|r| r.record_type()), Some(RecordType::NS), "{m:?}");
    let m = ask(&s, BOTH, "back.", RecordType::A).await;
    assert!(m.answers.is_empty() && soa_owner(&m).as_deref() == Some("back."), "NODATA: {m:?}");
    // Not the asker's network: not its zone (forwarded; no upstream here).
    assert_eq!(ask(&s, WEB, "back.", RecordType::SOA).await.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn aaaa_and_other_types_of_existing_names_are_nodata_with_soa() {
    let s = shared(vec![]);
    for t in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
        let m = ask(&s, WEB, "web.", t).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(m.answers.is_empty(), "{t}: {m:?}");
        assert!(soa_owner(&m).is_some(), "{t}: NODATA carries an SOA");
    }
}

#[tokio::test]
async fn services_vip_dnsrr_tasks_and_srv() {
    let s = shared(vec![]);
    assert_eq!(ips(&ask(&s, WEB, "api.", RecordType::A).await), [ip("172.18.255.1")]);
    assert_eq!(ips(&ask(&s, WEB, "tasks.api.", RecordType::A).await), [ip("172.18.1.1"), ip("172.18.1.2")]);
    // dnsrr: healthy tasks only.
    assert_eq!(ips(&ask(&s, WEB, "cache.", RecordType::A).await), [ip("172.18.2.1"), ip("172.18.2.2")]);
    assert_eq!(ips(&ask(&s, WEB, "tasks.cache.", RecordType::A).await), [ip("172.18.2.1"), ip("172.18.2.2")]);
    assert!(ask(&s, DB, "api.", RecordType::A).await.answers.is_empty(), "services are scoped too");
    // Several addresses come in random order.
    let mut orders = std::collections::HashSet::new();
    for _ in 0..50 {
        let m = ask(&s, WEB, "tasks.api.", RecordType::A).await;
        orders.insert(format!("{:?}", m.answers.iter().map(|r| r.data.clone()).collect::<Vec<_>>()));
    }
    assert_eq!(orders.len(), 2, "both orders appear in 50 answers");
    // SRV by port name (VIP: one target) and by number (dnsrr: one per healthy task).
    let m = ask(&s, WEB, "_http._tcp.api.", RecordType::SRV).await;
    let srv: Vec<(u16, String)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    assert_eq!(srv, [(8080, "api.front.".to_owned())]);
    let mut extra = m.clone();
    extra.answers = m.additionals.iter().filter(|r| r.record_type() == RecordType::A).cloned().collect();
    assert_eq!(ips(&extra), [ip("172.18.255.1")], "the target's address rides along");
    let m = ask(&s, WEB, "_6379._tcp.cache.", RecordType::SRV).await;
    let mut targets: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.target.to_ascii()),
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(targets, ["cache.1.a.front.", "cache.2.b.front."]);
    // A port the service does not have: NODATA.
    let m = ask(&s, WEB, "_53._udp.api.", RecordType::SRV).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[tokio::test]
async fn ptr_for_containers_tasks_and_vips_and_nxdomain_in_our_subnets() {
    let s = shared(vec![]);
    let ptr = |m: &Message| {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(p.0.to_ascii()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(ptr(&ask(&s, WEB, "2.0.18.172.in-addr.arpa.", RecordType::PTR).await), ["web.front."]);
    assert_eq!(ptr(&ask(&s, WEB, "1.255.18.172.in-addr.arpa.", RecordType::PTR).await), ["api.front."]);
    assert_eq!(ptr(&ask(&s, WEB, "1.1.18.172.in-addr.arpa.", RecordType::PTR).await), ["api.1.x.front."]);
    // In a subnet of the view, unknown: NXDOMAIN with the reverse zone's SOA.
    let m = ask(&s, WEB, "99.0.18.172.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(soa_owner(&m).as_deref(), Some("18.172.in-addr.arpa."));
    // PTR of a name that is not a reverse name, ours: NODATA, not forwarded.
    let m = ask(&s, WEB, "web.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && soa_owner(&m).is_some(), "{m:?}");
    // Another network's address is not visible.
    assert!(ptr(&ask(&s, WEB, "2.0.19.172.in-addr.arpa.", RecordType::PTR).await).is_empty());
}

#[tokio::test]
async fn odd_requests_get_dns_errors() {
    let s = shared(vec![]);
    // CHAOS class: refused.
    let mut m = Message::query();
    m.add_query(
        Query::query(Name::from_str("version.bind.").unwrap(), RecordType::TXT).set_query_class(DNSClass::CH).clone(),
    );
    let a = ask_raw(&s, WEB, m.to_vec().unwrap(), Protocol::Udp).await.unwrap();
    assert_eq!(a.metadata.response_code, ResponseCode::Refused);
    // Two questions: FORMERR.
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_str("web.").unwrap(), RecordType::A));
    m.add_query(Query::query(Name::from_str("www.").unwrap(), RecordType::A));
    let a = ask_raw(&s, WEB, m.to_vec().unwrap(), Protocol::Udp).await.unwrap();
    assert_eq!(a.metadata.response_code, ResponseCode::FormErr);
    // Zone transfer: refused.
    assert_eq!(ask(&s, WEB, "front.", RecordType::AXFR).await.metadata.response_code, ResponseCode::Refused);
    // A status opcode: not implemented.
    let mut raw = query_bytes("web.", RecordType::A, None);
    raw[2] = (raw[2] & 0x87) | (2 << 3);
    let a = ask_raw(&s, WEB, raw, Protocol::Udp).await.unwrap();
    assert_eq!(a.metadata.response_code, ResponseCode::NotImp);
}

#[tokio::test]
async fn a_record_change_is_visible_to_the_next_query() {
    let s = shared(vec![]);
    assert_eq!(ips(&ask(&s, WEB, "web.", RecordType::A).await), [ip("172.18.0.2")]);
    let mut db = db_with(vec![]);
    db.add_endpoint(&ep("n-front", WEB, "web", &[], [172, 18, 0, 9]));
    s.swap(db);
    assert_eq!(ips(&ask(&s, WEB, "web.", RecordType::A).await), [ip("172.18.0.2"), ip("172.18.0.9")]);
}

/// A fake upstream on loopback: answers `name A` with `addr`, or never
/// (blackhole), or truncated over UDP with the full answer over TCP.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Answer,
    Blackhole,
    Truncate,
}

async fn upstream(mode: Mode, addr: Ipv4Addr) -> SocketAddr {
    // UDP and TCP on one port: the UDP socket's ephemeral port, another if
    // a TCP socket of a test running beside holds that number.
    let mut tries = 0;
    let (udp, at, tcp) = loop {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = udp.local_addr().unwrap();
        match tokio::net::TcpListener::bind(at).await {
            Ok(tcp) => break (udp, at, tcp),
            Err(_) if tries < 100 => tries += 1,
            Err(e) => panic!("no loopback port free for both UDP and TCP: {e}"),
        }
    };
    let answer = move |q: &[u8], trunc: bool| -> Vec<u8> {
        let q = Message::from_vec(q).unwrap();
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.metadata.recursion_available = true;
        r.metadata.truncation = trunc;
        r.add_query(q.queries[0].clone());
        if !trunc {
            r.add_answer(Record::from_rdata(
                q.queries[0].name().clone(),
                60,
                RData::A(hickory_proto::rr::rdata::A(addr)),
            ));
        }
        if let Some(e) = q.edns {
            let mut e2 = Edns::new();
            e2.set_max_payload(1400);
            e2.set_dnssec_ok(e.flags().dnssec_ok);
            r.set_edns(e2);
        }
        r.to_vec().unwrap()
    };
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else { return };
            if mode != Mode::Blackhole {
                let _ = udp.send_to(&answer(&buf[..n], mode == Mode::Truncate), from).await;
            }
        }
    });
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut c, _)) = tcp.accept().await else { return };
            if mode == Mode::Blackhole {
                continue;
            }
            let n = usize::from(c.read_u16().await.unwrap());
            let mut q = vec![0u8; n];
            c.read_exact(&mut q).await.unwrap();
            let r = answer(&q, false);
            c.write_all(&(r.len() as u16).to_be_bytes()).await.unwrap();
            c.write_all(&r).await.unwrap();
        }
    });
    at
}

#[tokio::test]
async fn other_names_are_forwarded_with_edns_and_tcp_fallback() {
    let good = upstream(Mode::Answer, Ipv4Addr::new(192, 0, 2, 1)).await;
    let s = shared(vec![good]);
    let m = ask(&s, WEB, "example.org.", RecordType::A).await;
    assert_eq!(ips(&m), [ip("192.0.2.1")]);
    assert!(!m.metadata.authoritative && m.metadata.recursion_available);
    // EDNS (with the DO bit) reaches the upstream and comes back.
    let mut raw = query_bytes("example.org.", RecordType::A, Some(1232));
    let mut q = Message::from_vec(&raw).unwrap();
    q.edns.as_mut().unwrap().set_dnssec_ok(true);
    raw = q.to_vec().unwrap();
    let m = ask_raw(&s, WEB, raw, Protocol::Udp).await.unwrap();
    let e = m.edns.expect("EDNS in the answer");
    assert!(e.flags().dnssec_ok, "the upstream saw the DO bit and echoed it");
    assert_eq!(e.max_payload(), 1232, "the client's size");
    // Truncated over UDP: asked again over TCP.
    let trunc = upstream(Mode::Truncate, Ipv4Addr::new(192, 0, 2, 7)).await;
    let s = shared(vec![trunc]);
    assert_eq!(ips(&ask(&s, WEB, "big.example.", RecordType::A).await), [ip("192.0.2.7")]);
    // A blackholed first upstream: the second answers.
    let hole = upstream(Mode::Blackhole, Ipv4Addr::UNSPECIFIED).await;
    let s = shared(vec![hole, good]);
    assert_eq!(ips(&ask(&s, WEB, "example.org.", RecordType::A).await), [ip("192.0.2.1")]);
}

#[tokio::test]
async fn blackholed_upstreams_give_servfail_within_the_bound() {
    let mut ups = Vec::new();
    for _ in 0..4 {
        ups.push(upstream(Mode::Blackhole, Ipv4Addr::UNSPECIFIED).await);
    }
    let s = shared(ups);
    let t = Instant::now();
    let m = ask(&s, WEB, "example.org.", RecordType::A).await;
    let took = t.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    // 3 upstreams (not 4) x 300 ms, plus scheduling slack.
    assert!(took >= Duration::from_millis(850), "gave up too early: {took:?}");
    assert!(took < Duration::from_millis(2000), "SERVFAIL took {took:?}");
}

#[tokio::test]
async fn internal_only_containers_never_forward_and_overload_is_refused() {
    let good = upstream(Mode::Answer, Ipv4Addr::new(192, 0, 2, 1)).await;
    let s = shared(vec![good]);
    assert_eq!(ask(&s, LONER, "example.org.", RecordType::A).await.metadata.response_code, ResponseCode::Refused);
    // Its own network's names still answer.
    assert_eq!(ips(&ask(&s, LONER, "loner.", RecordType::A).await), [ip("172.20.0.2")]);
    // One in-flight forward allowed: while a blackholed one waits, the next is refused.
    let hole = upstream(Mode::Blackhole, Ipv4Addr::UNSPECIFIED).await;
    let s = Shared::new(db_with(vec![hole]), Forwarder::new(1, Duration::from_millis(500)));
    let s2 = s.clone();
    let first = tokio::spawn(async move { ask(&s2, WEB, "slow.example.", RecordType::A).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ask(&s, WEB, "other.example.", RecordType::A).await.metadata.response_code, ResponseCode::Refused);
    assert_eq!(first.await.unwrap().metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn fuzzed_requests_never_panic() {
    // Seeded mutations of valid queries plus random bytes, through the
    // whole request path (decode + handler); bounded in count.
    let s = shared(vec![]);
    let seeds = [
        query_bytes("web.", RecordType::A, Some(1232)),
        query_bytes("_http._tcp.api.", RecordType::SRV, None),
        query_bytes("2.0.18.172.in-addr.arpa.", RecordType::PTR, None),
        query_bytes("nope.front.", RecordType::AAAA, None),
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut decoded, mut answered) = (0, 0);
    for i in 0..3000 {
        let mut raw = if i % 5 == 0 {
            (0..(next() % 600) as usize).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            seeds[i % seeds.len()].clone()
        };
        for _ in 0..(next() % 6) {
            if raw.is_empty() {
                break;
            }
            let at = (next() as usize) % raw.len();
            match next() % 3 {
                0 => raw[at] = next() as u8,
                1 => raw.truncate(at),
                _ => raw.insert(at, next() as u8),
            }
        }
        if Request::from_bytes(raw.clone(), "127.0.0.1:1".parse().unwrap(), Protocol::Udp).is_ok() {
            decoded += 1;
            if ask_raw(&s, WEB, raw, Protocol::Udp).await.is_some() {
                answered += 1;
            }
        }
    }
    assert!(decoded > 300, "the mutations keep some queries decodable ({decoded})");
    assert_eq!(answered, decoded, "every request that decodes gets an answer that decodes");
}
