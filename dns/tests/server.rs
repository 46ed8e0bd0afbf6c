//! The UDP and TCP serving loops on loopback sockets (no namespaces):
//! answers, FORMERR for undecodable bodies, silence for responses, runts and
//! oversized datagrams, truncation at 512 bytes without EDNS, forwarded
//! answers relayed byte for byte (or cut with TC), the TCP connection
//! bound, and a bounded fuzz through the real socket.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use dns::{Db, Endpoint, Forwarder, NetKey, Network, Resolver, Service, Shared, Task, View, ViewId};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

fn db() -> Db {
    db_up(vec![])
}

fn db_up(upstreams: Vec<std::net::SocketAddr>) -> Db {
    let mut db = Db::new(5, 1);
    let net = NetKey("n1".into());
    db.add_network(Network { id: net.clone(), name: "front".into(), subnets: vec![], internal: false });
    db.add_endpoint(&Endpoint {
        network: net.clone(),
        container: ViewId("c1".into()),
        name: "web".into(),
        aliases: vec![],
        ipv4: Some(Ipv4Addr::new(172, 18, 0, 2)),
        ipv6: None,
    });
    // 60 tasks: more than fits in 512 bytes.
    let tasks = (0..60)
        .map(|i| Task { name: format!("big.{i}"), ip: IpAddr::V4(Ipv4Addr::new(172, 18, 1, i as u8)), healthy: true })
        .collect();
    db.add_service(Service { name: "big".into(), network: net.clone(), vip: None, tasks, ports: vec![] });
    db.set_view(ViewId("c1".into()), View { networks: vec![net], upstreams });
    db
}

/// A UDP socket and a TCP listener on the same loopback port, non-blocking
/// (as the server gets them). The port is the UDP socket's ephemeral one;
/// if some TCP socket of a test running beside holds that number, another.
fn loopback_pair() -> (UdpSocket, std::net::TcpListener, std::net::SocketAddr) {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let Ok(tcp) = std::net::TcpListener::bind(addr) else { continue };
        udp.set_nonblocking(true).unwrap();
        tcp.set_nonblocking(true).unwrap();
        return (udp, tcp, addr);
    }
    panic!("no loopback port free for both UDP and TCP in 100 tries");
}

fn q(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_tcp_answer_and_bad_packets_are_handled() {
    let (udp, tcp, addr) = loopback_pair();
    let shared = Shared::new(db(), Forwarder::new(8, Duration::from_millis(200)));
    let served = dns::serve(Resolver { view: ViewId("c1".into()), shared }, udp, tcp).unwrap();

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    client.connect(addr).unwrap();
    let mut buf = [0u8; 4096];
    client.send(&q("web.", 7)).unwrap();
    let n = client.recv(&mut buf).unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!((m.metadata.id, m.answers.len()), (7, 1), "{m:?}");

    // Without EDNS, 60 addresses do not fit in 512 bytes: truncated (TC).
    client.send(&q("big.", 8)).unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert!(n <= 512, "{n} bytes over UDP without EDNS");
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert!(m.metadata.truncation, "TC set");

    // A header followed by garbage: FORMERR with the same id.
    let mut bad = q("web.", 9);
    bad.truncate(14);
    client.send(&bad).unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..2], &[0, 9]);
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR");
    assert_eq!(n, 12);

    // A response, and a runt: never answered (the next answer is for id 10).
    let mut resp = q("web.", 99);
    resp[2] |= 0x80;
    client.send(&resp).unwrap();
    client.send(&[1, 2, 3]).unwrap();
    client.send(&q("web.", 10)).unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(Message::from_vec(&buf[..n]).unwrap().metadata.id, 10);

    // Longer than the loop reads: dropped, not half-decoded.
    let mut huge = q("web.", 13);
    huge.resize(5000, 0);
    client.send(&huge).unwrap();
    client.send(&q("web.", 14)).unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(Message::from_vec(&buf[..n]).unwrap().metadata.id, 14, "the oversized one got no answer");

    // TCP: the whole answer, no truncation.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let query = q("big.", 11);
    s.write_all(&(query.len() as u16).to_be_bytes()).await.unwrap();
    s.write_all(&query).await.unwrap();
    let len = s.read_u16().await.unwrap() as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    let m = Message::from_vec(&body).unwrap();
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 60));

    // Closed with the Served.
    drop(served);
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.send(&q("web.", 12)).unwrap();
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(client.recv(&mut buf).is_err(), "no answer once closed");
}

fn serve_on_loopback(upstreams: Vec<std::net::SocketAddr>) -> (dns::Served, std::net::SocketAddr) {
    let (udp, tcp, addr) = loopback_pair();
    let shared = Shared::new(db_up(upstreams), Forwarder::new(8, Duration::from_millis(300)));
    (dns::serve(Resolver { view: ViewId("c1".into()), shared }, udp, tcp).unwrap(), addr)
}

/// An upstream answering every query with `records` copies of a record of
/// type 65280 (which hickory does not know) carrying 3 bytes of data.
fn odd_upstream(records: u16) -> std::net::SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let qend = 12 + buf[12..n].iter().position(|&b| b == 0).unwrap() + 5;
            let mut r = buf[..qend].to_vec();
            r[2] = 0x81;
            r[3] = 0x80;
            r[6..8].copy_from_slice(&records.to_be_bytes());
            r[8..12].copy_from_slice(&[0, 0, 0, 0]);
            for _ in 0..records {
                r.extend_from_slice(&[0xc0, 12, 0xff, 0x00, 0, 1, 0, 0, 0, 60, 0, 3, 7, 7, 7]);
            }
            let _ = s.send_to(&r, from);
        }
    });
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_answers_are_relayed_as_they_came_or_cut_with_tc() {
    let (_small, small_at) = serve_on_loopback(vec![odd_upstream(2)]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    client.send_to(&q("elsewhere.example.", 21), small_at).unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..2], &[0, 21], "the client's id");
    assert_eq!(&buf[6..8], &[0, 2], "two answers");
    assert_eq!(&buf[n - 15..n], &[0xc0, 12, 0xff, 0x00, 0, 1, 0, 0, 0, 60, 0, 3, 7, 7, 7], "relayed byte for byte");
    // 60 records are more than 512 bytes: cut to the question, TC set.
    let (_big, big_at) = serve_on_loopback(vec![odd_upstream(60)]);
    let query = q("elsewhere.example.", 22);
    client.send_to(&query, big_at).unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert!(buf[2] & 0x02 != 0, "TC");
    assert_eq!(&buf[12..n], &query[12..], "only the question");
    assert_eq!(&buf[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_bounded_per_container() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_served, addr) = serve_on_loopback(vec![]);
    let mut idle = Vec::new();
    for _ in 0..dns::server::MAX_TCP {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // One more: closed at once.
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut b = [0u8; 2];
    let r = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut b)).await.expect("closed, not left hanging");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    // The held ones are served.
    let query = q("web.", 31);
    idle[0].write_all(&(query.len() as u16).to_be_bytes()).await.unwrap();
    idle[0].write_all(&query).await.unwrap();
    let len = idle[0].read_u16().await.unwrap() as usize;
    let mut body = vec![0u8; len];
    idle[0].read_exact(&mut body).await.unwrap();
    assert_eq!(Message::from_vec(&body).unwrap().answers.len(), 1);
    // Once they close, new connections are served again.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = tokio::net::TcpStream::connect(addr).await.unwrap();
    again.write_all(&(query.len() as u16).to_be_bytes()).await.unwrap();
    again.write_all(&query).await.unwrap();
    assert!(again.read_u16().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_through_the_socket_leaves_the_loop_serving() {
    let (_served, addr) = serve_on_loopback(vec![]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(addr).unwrap();
    let seed = q("web.", 41);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..2000 {
        let mut p =
            if i % 3 == 0 { (0..(next() % 300) as usize).map(|_| next() as u8).collect() } else { seed.clone() };
        for _ in 0..(next() % 5) {
            if p.is_empty() {
                break;
            }
            let at = (next() as usize) % p.len();
            p[at] = next() as u8;
        }
        client.send(&p).unwrap();
    }
    // Drain what came back, then the loop still answers.
    client.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 4096];
    while client.recv(&mut buf).is_ok() {}
    client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    client.send(&q("web.", 42)).unwrap();
    loop {
        let n = client.recv(&mut buf).expect("an answer after the garbage");
        if buf[..2] == [0, 42] {
            assert_eq!(Message::from_vec(&buf[..n]).unwrap().answers.len(), 1);
            break;
        }
    }
}
