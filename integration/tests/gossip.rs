//! memberlist wire compatibility, proven against a real peer: Debian's `serf`
//! agent (it embeds hashicorp/memberlist) runs in one lab node; this test
//! plays a member in another node using only the `gossip` crate's codec. serf
//! joins it over TCP (push-pull), probes it over UDP (pings, possibly
//! compressed or compound), and must list it as alive; when it answers only
//! serf's fallback pings over TCP it stays alive; when it stops answering,
//! serf must declare it failed.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gossip::wire::{self, Message, MsgType, PushNodeState, State, WireError};
use integration::{Lab, require_root};

const OURS: &str = "netd-wire-test";

fn serf_members(n: &integration::Node) -> String {
    let o = n.command("serf").args(["members", "-rpc-addr=127.0.0.1:7373"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Reads one memberlist stream message (plain or compressed), handing the
/// plain message to `parse` until it has all it needs (`Some`).
fn read_stream<T>(conn: &mut std::net::TcpStream, parse: impl Fn(&[u8]) -> Option<T>) -> T {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).expect("serf sends a message");
        assert!(n > 0, "serf closed the stream early");
        buf.extend_from_slice(&chunk[..n]);
        let plain = match buf[0] {
            b if b == MsgType::Compress as u8 => match gossip::msgpack::decode(&buf[1..]) {
                Ok((v, _)) => {
                    let data = v.get("Buf").and_then(gossip::msgpack::Value::as_bytes).unwrap().to_vec();
                    gossip::lzw::decompress(&data, 1 << 20).unwrap()
                }
                Err(_) => continue,
            },
            _ => buf.clone(),
        };
        if let Some(t) = parse(&plain) {
            return t;
        }
    }
}

fn read_push_pull(conn: &mut std::net::TcpStream) -> (wire::PushPullHeader, Vec<PushNodeState>) {
    read_stream(conn, |plain| {
        assert_eq!(plain[0], MsgType::PushPull as u8, "a push-pull message");
        match wire::decode_push_pull(&plain[1..], 1024) {
            Ok((h, nodes, _user)) => Some((h, nodes)),
            Err(WireError::Msgpack(gossip::msgpack::DecodeError::Truncated(_))) | Err(WireError::Compound(_)) => None,
            Err(e) => panic!("serf's push-pull does not decode: {e}"),
        }
    })
}

/// Reads serf's fallback ping over TCP (memberlist sends one when a UDP
/// probe goes unanswered).
fn read_tcp_ping(conn: &mut std::net::TcpStream) -> wire::Ping {
    read_stream(conn, |plain| match wire::decode_message(plain) {
        Ok(Message::Ping(p)) => Some(p),
        Ok(m) => panic!("expected a ping over TCP, got {m:?}"),
        Err(WireError::Msgpack(gossip::msgpack::DecodeError::Truncated(_))) => None,
        Err(e) => panic!("serf's TCP ping does not decode: {e}"),
    })
}

#[test]
fn serf_joins_probes_and_fails_a_member_speaking_our_wire_format() {
    if !require_root("serf_joins_probes_and_fails_a_member_speaking_our_wire_format") {
        return;
    }
    if std::process::Command::new("serf").arg("version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "serf missing in CI: `cargo xtask setup` installs it");
        eprintln!("SKIPPED: no serf");
        return;
    }
    let lab = Lab::new(2).unwrap();
    let (s, us) = (lab.node(0), lab.node(1));
    let mut serf = s
        .command("serf")
        .args([
            "agent",
            "-node=serf1",
            &format!("-bind={}:7946", s.addr),
            "-rpc-addr=127.0.0.1:7373",
            "-log-level=debug",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ns = std::path::PathBuf::from(format!("/run/netns/{}", us.netns.name));
    let (addr, s_addr) = (us.addr, s.addr);
    let (tcp, udp) = integration::probe::in_netns(&ns, move || {
        (TcpListener::bind((addr, 7946)).unwrap(), UdpSocket::bind((addr, 7946)).unwrap())
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !serf_members(s).contains("serf1") {
        assert!(Instant::now() < deadline, "serf agent did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }

    // serf joins us: it pushes its state over TCP, we answer with ours.
    let joiner = {
        let s_members = s.command("serf").args(["join", "-rpc-addr=127.0.0.1:7373", &format!("{addr}:7946")]).spawn();
        s_members.unwrap()
    };
    let (mut conn, _) = tcp.accept().unwrap();
    let (header, nodes) = read_push_pull(&mut conn);
    assert!(header.join, "a join push-pull");
    let serf1 = nodes.iter().find(|n| n.name == "serf1").expect("serf's own state is in its push-pull");
    assert_eq!(serf1.state, State::Alive);
    assert_eq!(serf1.addr, s.addr.octets().to_vec());
    assert_eq!(serf1.port, 7946);
    let me = PushNodeState {
        name: OURS.into(),
        addr: addr.octets().to_vec(),
        port: 7946,
        meta: None,
        incarnation: 1,
        state: State::Alive,
        // Speak the protocol and delegate versions serf speaks.
        vsn: serf1.vsn,
    };
    conn.write_all(&wire::encode_push_pull(false, &[me], b"")).unwrap();
    drop(conn);
    let out = joiner.wait_with_output().unwrap();
    assert!(out.status.success(), "serf join failed");

    // Answer serf's UDP probes; record what arrives.
    let answering = Arc::new(AtomicBool::new(true));
    let pings = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let done = Arc::new(AtomicBool::new(false));
    let (a2, p2, s2, d2) = (answering.clone(), pings.clone(), seen.clone(), done.clone());
    udp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let responder = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let stop = Instant::now() + Duration::from_secs(60);
        while Instant::now() < stop && !d2.load(Ordering::SeqCst) {
            let Ok((n, from)) = udp.recv_from(&mut buf) else { continue };
            if let Some(t) = MsgType::from_byte(buf[0]) {
                s2.lock().unwrap().insert(format!("packet:{t:?}"));
            }
            let msgs = wire::unwrap_packet(&buf[..n]).unwrap_or_else(|e| panic!("serf's packet does not decode: {e}"));
            for m in msgs {
                let decoded =
                    wire::decode_message(&m).unwrap_or_else(|e| panic!("serf's message does not decode: {e}"));
                s2.lock().unwrap().insert(format!("{:?}", MsgType::from_byte(m[0]).unwrap()));
                if let Message::Ping(p) = decoded {
                    assert_eq!(p.node, OURS, "pings name their target");
                    p2.fetch_add(1, Ordering::SeqCst);
                    if a2.load(Ordering::SeqCst) {
                        let ack = wire::encode_message(&Message::Ack(wire::Ack { seq_no: p.seq_no, payload: None }));
                        let to = match (p.source_addr.as_deref(), p.source_port) {
                            (Some(&[a, b, c, d]), Some(port)) => SocketAddr::from((Ipv4Addr::new(a, b, c, d), port)),
                            _ => from,
                        };
                        let _ = udp.send_to(&ack, to);
                    }
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = serf_members(s);
        if m.lines().any(|l| l.starts_with(OURS) && l.contains("alive")) && pings.load(Ordering::SeqCst) >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "serf does not list us alive after pings: {m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Stop answering over UDP but answer serf's fallback pings over TCP:
    // memberlist must keep us alive (for longer than its suspicion timeout,
    // 4 x 1 s here), and our acks over TCP must satisfy it.
    answering.store(false, Ordering::SeqCst);
    let tcp_answering = Arc::new(AtomicBool::new(true));
    let tcp_pings = Arc::new(AtomicUsize::new(0));
    let (ta, tp, td) = (tcp_answering.clone(), tcp_pings.clone(), done.clone());
    tcp.set_nonblocking(true).unwrap();
    let tcp_responder = std::thread::spawn(move || {
        while !td.load(Ordering::SeqCst) {
            let Ok((mut conn, _)) = tcp.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            conn.set_nonblocking(false).unwrap();
            let p = read_tcp_ping(&mut conn);
            assert_eq!(p.node, OURS, "TCP pings name their target");
            tp.fetch_add(1, Ordering::SeqCst);
            if ta.load(Ordering::SeqCst) {
                let ack = wire::encode_message(&Message::Ack(wire::Ack { seq_no: p.seq_no, payload: None }));
                conn.write_all(&ack).unwrap();
            }
        }
    });
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let m = serf_members(s);
        assert!(!m.lines().any(|l| l.starts_with(OURS) && l.contains("failed")), "failed despite TCP acks: {m}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(tcp_pings.load(Ordering::SeqCst) >= 3, "serf sent {} pings over TCP", tcp_pings.load(Ordering::SeqCst));
    // Stop answering at all: serf's failure detector must declare us failed.
    tcp_answering.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let m = serf_members(s);
        if m.lines().any(|l| l.starts_with(OURS) && l.contains("failed")) {
            break;
        }
        assert!(Instant::now() < deadline, "serf never marked us failed: {m}");
        std::thread::sleep(Duration::from_millis(250));
    }
    done.store(true, Ordering::SeqCst);
    responder.join().expect("every packet serf sent decoded");
    tcp_responder.join().expect("every TCP ping serf sent decoded");
    let kinds = seen.lock().unwrap().clone();
    println!("message kinds received from serf: {kinds:?}");
    assert!(kinds.contains("Ping"), "{kinds:?}");
    // And our ping over TCP, as our engine sends it, gets serf's ack.
    let mut conn = integration::probe::in_netns(&ns, move || {
        std::net::TcpStream::connect_timeout(&SocketAddr::from((s_addr, 7946)), Duration::from_secs(3))
    })
    .unwrap()
    .expect("serf accepts a stream");
    let ping = wire::Ping { seq_no: 4242, node: "serf1".into(), ..Default::default() };
    conn.write_all(&wire::encode_message(&Message::Ping(ping))).unwrap();
    let ack = read_stream(&mut conn, |plain| match wire::decode_message(plain) {
        Ok(Message::Ack(a)) => Some(a),
        Ok(m) => panic!("serf answered a TCP ping with {m:?}"),
        Err(WireError::Msgpack(gossip::msgpack::DecodeError::Truncated(_))) => None,
        Err(e) => panic!("serf's ack does not decode: {e}"),
    });
    assert_eq!(ack.seq_no, 4242, "serf acks our ping over TCP with its sequence number");
    let _ = serf.kill();
    let _ = serf.wait();
}

fn node_ls(n: &integration::Node) -> Vec<(String, String, String)> {
    let o = n.netctl(&["--format", "json", "node", "ls"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["Netd"]["Name"].as_str().unwrap_or("").to_owned(),
                m["Netd"]["State"].as_str().unwrap_or("").to_owned(),
                m["ID"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> Option<String>) -> Duration {
    let start = Instant::now();
    loop {
        match f() {
            None => return start.elapsed(),
            Some(state) => assert!(start.elapsed() < limit, "{what} not within {limit:?}; last: {state}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn serf_state(m: &str, name: &str) -> Option<String> {
    m.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(2))
        .map(str::to_owned)
}

/// netd nodes form a cluster with each other and with real serf agents, in
/// both directions; failures and a graceful leave are seen on both sides.
#[test]
fn netd_and_serf_agents_share_one_cluster() {
    if !require_root("netd_and_serf_agents_share_one_cluster") {
        return;
    }
    if std::process::Command::new("serf").arg("version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "serf missing in CI: `cargo xtask setup` installs it");
        return;
    }
    let lab = Lab::new(5).unwrap();
    let n = lab.nodes();
    let serf_agent = |node: &integration::Node, name: &str, join: Option<Ipv4Addr>| {
        let mut c = node.command("serf");
        c.args(["agent", &format!("-node={name}"), &format!("-bind={}:7946", node.addr), "-rpc-addr=127.0.0.1:7373"]);
        if let Some(j) = join {
            c.arg(format!("-join={j}:7946"));
        }
        c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap()
    };
    // serfA alone; node1's netd joins it (ours joins a serf cluster).
    let mut serf_a = serf_agent(&n[3], "serfA", None);
    std::thread::sleep(Duration::from_millis(500));
    n[0].start_netd(&["--join", &n[3].addr.to_string()]).unwrap();
    n[1].start_netd(&["--join", &n[0].addr.to_string()]).unwrap();
    n[2].start_netd(&["--join", &n[1].addr.to_string()]).unwrap();
    // serfB joins through node2's netd (a serf agent joins ours).
    let mut serf_b = serf_agent(&n[4], "serfB", Some(n[1].addr));
    let all = ["node1", "node2", "node3", "serfA", "serfB"];
    let took = wait_for("five alive members everywhere", Duration::from_secs(20), || {
        for node in &n[..3] {
            let ls = node_ls(node);
            let alive = ls.iter().filter(|m| m.1 == "alive").count();
            if alive != 5 {
                return Some(format!("{}: {ls:?}", node.name));
            }
        }
        let m = serf_members(&n[3]);
        if all.iter().any(|name| serf_state(&m, name).as_deref() != Some("alive")) {
            return Some(m);
        }
        None
    });
    println!("converged in {took:?}");
    // serf sees netd's node id as a tag; netctl shows the ids netd nodes carry.
    let m = serf_members(&n[3]);
    assert!(m.lines().any(|l| l.starts_with("node1") && l.contains("id=")), "{m}");
    let ls = node_ls(&n[0]);
    assert!(ls.iter().filter(|x| x.0.starts_with("node")).all(|x| x.2.len() == 64), "{ls:?}");
    let table = String::from_utf8_lossy(&n[0].netctl(&["node", "ls"]).stdout).into_owned();
    println!("{table}");

    // kill -9 of one of ours: serf declares it failed, ours declare it dead.
    n[2].kill_netd().unwrap();
    let took = wait_for("node3 failed in serf and dead in netd", Duration::from_secs(40), || {
        let m = serf_members(&n[3]);
        if serf_state(&m, "node3").as_deref() != Some("failed") {
            return Some(m);
        }
        let ls = node_ls(&n[0]);
        if !ls.iter().any(|x| x.0 == "node3" && x.1 == "dead") {
            return Some(format!("{ls:?}"));
        }
        None
    });
    println!("node3 failure detected in {took:?}");
    // A graceful stop is a leave, not a failure.
    n[1].stop_netd().unwrap();
    wait_for("node2 left", Duration::from_secs(10), || {
        let m = serf_members(&n[3]);
        if serf_state(&m, "node2").as_deref() != Some("left") {
            return Some(m);
        }
        let ls = node_ls(&n[0]);
        if !ls.iter().any(|x| x.0 == "node2" && x.1 == "left") {
            return Some(format!("{ls:?}"));
        }
        None
    });
    // A serf agent killed: ours marks it dead.
    let _ = serf_a.kill();
    let _ = serf_a.wait();
    let took = wait_for("serfA dead in netd", Duration::from_secs(40), || {
        let ls = node_ls(&n[0]);
        if ls.iter().any(|x| x.0 == "serfA" && x.1 == "dead") { None } else { Some(format!("{ls:?}")) }
    });
    println!("serfA failure detected in {took:?}");
    let _ = serf_b.kill();
    let _ = serf_b.wait();
}

/// With the same key netd and serf form one cluster; with another key
/// nobody joins.
#[test]
fn encryption_interoperates_with_serf_and_keeps_strangers_out() {
    if !require_root("encryption_interoperates_with_serf_and_keeps_strangers_out") {
        return;
    }
    if std::process::Command::new("serf").arg("version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "serf missing in CI: `cargo xtask setup` installs it");
        return;
    }
    let lab = Lab::new(3).unwrap();
    let n = lab.nodes();
    let key = "AAECAwQFBgcICQoLDA0ODw=="; // 16 bytes: 0..15
    let other = "DwAODQwLCgkIBwYFBAMCAQ==";
    let mut serf = n[2]
        .command("serf")
        .args(["agent", "-node=serfK", &format!("-bind={}:7946", n[2].addr), "-rpc-addr=127.0.0.1:7373"])
        .arg(format!("-encrypt={key}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for (i, k) in [(0, key), (1, other)] {
        let cfg = n[i].dir.join("netd.toml");
        std::fs::write(&cfg, format!("gossip-keys = [\"{k}\"]\n")).unwrap();
        n[i].start_netd(&["--config", cfg.to_str().unwrap(), "--join", &n[2].addr.to_string()]).unwrap();
    }
    wait_for("node1 and serfK share a key", Duration::from_secs(15), || {
        let m = serf_members(&n[2]);
        if serf_state(&m, "node1").as_deref() != Some("alive") {
            return Some(m);
        }
        let ls = node_ls(&n[0]);
        if !ls.iter().any(|x| x.0 == "serfK" && x.1 == "alive") { Some(format!("{ls:?}")) } else { None }
    });
    std::thread::sleep(Duration::from_secs(4));
    let m = serf_members(&n[2]);
    assert!(serf_state(&m, "node2").is_none(), "a node with another key got in: {m}");
    let ls = node_ls(&n[1]);
    assert_eq!(ls.len(), 1, "node2 sees only itself: {ls:?}");
    assert!(n[1].log().contains("cannot join the cluster yet"), "{}", n[1].log());
    let _ = serf.kill();
    let _ = serf.wait();
}

fn netctl_ok(n: &integration::Node, args: &[&str]) -> String {
    let o = n.netctl(args);
    assert!(o.status.success(), "netctl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn netctl_err(n: &integration::Node, args: &[&str]) -> String {
    let o = n.netctl(args);
    assert!(!o.status.success(), "netctl {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A cluster rotates its gossip key through netd's API (install the new
/// key everywhere, use it everywhere, remove the old one everywhere) and
/// stays one cluster; a node with only the old key cannot join; a netd
/// restarted afterwards keeps the rotated keyring (from its store), not the
/// config file's old key. Bad requests are refused and change nothing.
#[test]
fn gossip_keys_rotate_through_the_api_and_survive_a_restart() {
    if !require_root("gossip_keys_rotate_through_the_api_and_survive_a_restart") {
        return;
    }
    let lab = Lab::new(3).unwrap();
    let n = lab.nodes();
    let (old, new) = ("AAECAwQFBgcICQoLDA0ODw==", "DwAODQwLCgkIBwYFBAMCAQ==");
    let args = |i: usize| -> Vec<String> {
        let cfg = n[i].dir.join("netd.toml");
        std::fs::write(&cfg, format!("gossip-keys = [\"{old}\"]\n")).unwrap();
        let mut a = vec!["--config".to_owned(), cfg.display().to_string()];
        if i > 0 {
            a.extend(["--join".to_owned(), n[0].addr.to_string()]);
        }
        a
    };
    let start = |i: usize| {
        let a = args(i);
        n[i].start_netd(&a.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    };
    start(0);
    start(1);
    let alive = |name: &'static str| {
        move || {
            let ls = node_ls(&n[0]);
            if ls.iter().any(|m| m.0 == name && m.1 == "alive") { None } else { Some(format!("{ls:?}")) }
        }
    };
    wait_for("node2 joins with the old key", Duration::from_secs(15), alive("node2"));

    // Refusals, each leaving the keyring as it was.
    assert!(netctl_err(&n[0], &["key", "install", "!!"]).contains("not base64"));
    assert!(netctl_err(&n[0], &["key", "install", "AAAA"]).contains("16, 24 or 32 bytes"));
    assert!(netctl_err(&n[0], &["key", "remove", old]).contains("primary key cannot be removed"));
    assert!(netctl_err(&n[0], &["key", "use", new]).contains("has no key with fingerprint"));
    assert_eq!(netctl_ok(&n[0], &["key", "ls"]).lines().count(), 2, "header and the one key");

    for op in ["install", "use"] {
        for node in &n[..2] {
            netctl_ok(node, &["key", op, new]);
        }
    }
    for node in &n[..2] {
        netctl_ok(node, &["key", "remove", old]);
    }
    let ls = netctl_ok(&n[0], &["key", "ls"]);
    let rows: Vec<&str> = ls.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{ls}");
    assert!(rows[0].contains("primary") && rows[0].contains("128"), "{ls}");
    std::thread::sleep(Duration::from_secs(3));
    wait_for("node2 still alive after the rotation", Duration::from_secs(5), alive("node2"));

    // A node that only has the old key stays out.
    start(2);
    std::thread::sleep(Duration::from_secs(4));
    assert!(!node_ls(&n[0]).iter().any(|m| m.0 == "node3"), "node3 got in with the old key");
    assert!(n[2].log().contains("cannot join the cluster yet"), "{}", n[2].log_tail(10));

    // node2 restarted with the same config file (old key): its store keeps
    // the rotated keyring, so it rejoins.
    n[1].stop_netd().unwrap();
    start(1);
    assert!(n[1].log().contains("gossip keyring from the store"), "{}", n[1].log_tail(10));
    wait_for("node2 rejoins after its restart", Duration::from_secs(15), alive("node2"));
}
