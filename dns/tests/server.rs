//! The UDP and TCP serving paths on loopback sockets (no namespaces): our
//! own UDP loop (answers, FORMERR for undecodable bodies, silence for
//! responses, truncation at 512 bytes without EDNS) and hickory's TCP server.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use dns::{Db, Endpoint, Forwarder, NetKey, Network, Resolver, Service, Shared, Task, View, ViewId};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

fn db() -> Db {
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
    db.set_view(ViewId("c1".into()), View { networks: vec![net], upstreams: vec![] });
    db
}

fn q(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_tcp_answer_and_bad_packets_are_handled() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = std::net::TcpListener::bind(addr).unwrap();
    udp.set_nonblocking(true).unwrap();
    tcp.set_nonblocking(true).unwrap();
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

    // TCP (hickory's server): the whole answer, no truncation.
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
