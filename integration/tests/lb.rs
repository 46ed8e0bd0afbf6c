//! Lab test of the eBPF service datapath with real clients (topology in
//! `integration::lbtopo`): TCP and UDP clients reach the backends through a
//! VIP nobody owns, see only the VIP, and are spread by Maglev; established
//! connections survive a backend being drained (new ones avoid it) and the
//! controller going away and coming back; VIP traffic to a backend on the
//! client's own bridge is delivered at layer 2, not routed by the node.

use std::io::BufReader;
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use ebpf::datapath::{BackendState, Datapath, Kernel, Proto};
use integration::lbtopo::{Bpffs, Topo, VIP, ask, attach_all, connect, service, topo};
use integration::{probe, require_root};

#[test]
fn clients_reach_backends_through_a_vip_and_survive_a_drain() {
    if !require_root("clients_reach_backends_through_a_vip_and_survive_a_drain") {
        return;
    }
    let t = topo();
    let client = t.client.clone();

    // Before the datapath, nobody answers on the VIP.
    assert_eq!(probe::tcp(&client, VIP, 80, Duration::from_millis(300)), None);

    let mut dp = Kernel::load(1021).expect("the datapath loads");
    // All at once (the batched path), as netd loads services at start.
    // (One listed twice: the second finds the table the first created.)
    let all: Vec<_> = [(80, Proto::Tcp), (80, Proto::Udp), (1090, Proto::Tcp), (80, Proto::Tcp)]
        .iter()
        .map(|&(p, pr)| service(p, pr, BackendState::Active))
        .collect();
    dp.upsert_services(&all).unwrap();
    let mut dp = attach_all(&t, dp);

    // TCP and UDP through the VIP: the backends see the client's own
    // address (no SNAT east-west), the client only the VIP.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let got = probe::tcp(&client, VIP, 80, Duration::from_secs(2)).expect("TCP through the VIP");
        let (who, from) = got.split_once('@').unwrap();
        assert_eq!(from, "10.200.0.10", "the backend sees the client");
        seen.insert(who.to_owned());
    }
    assert_eq!(seen.len(), 2, "Maglev spreads connections over both backends: {seen:?}");
    let got = probe::udp(&client, VIP, 80, Duration::from_secs(2)).expect("UDP through the VIP");
    assert!(got.starts_with("b1@") || got.starts_with("b2@"), "{got}");
    assert!(dp.flows().unwrap().iter().any(|f| f.service == (VIP, 80) && f.client.0 == Ipv4Addr::new(10, 200, 0, 10)));
    let flows: u64 = dp.counters().unwrap().iter().filter(|c| c.backend.1 == 8080).map(|c| c.flows).sum();
    assert_eq!(flows, 21, "20 TCP connections and one UDP flow counted");

    // 16 established connections, then b1 drained: every one keeps
    // working (zero failures), new connections all go to b2.
    let mut conns: Vec<(TcpStream, BufReader<TcpStream>)> = (0..16).map(|_| connect(&client, 1090)).collect();
    let before: Vec<String> = conns.iter_mut().map(|c| ask(c, "hello").expect("an answer")).collect();
    assert!(before.iter().any(|b| b == "b1") && before.iter().any(|b| b == "b2"), "{before:?}");
    dp.upsert_service(&service(1090, Proto::Tcp, BackendState::Draining)).unwrap();
    for round in 0..5 {
        let now: Vec<Option<String>> = conns.iter_mut().map(|c| ask(c, &format!("r{round}"))).collect();
        let failed = now.iter().filter(|x| x.is_none()).count();
        assert_eq!(failed, 0, "established connections failed after the drain: {now:?}");
        assert_eq!(now.iter().map(|x| x.clone().unwrap()).collect::<Vec<_>>(), before, "each stays on its backend");
    }
    for _ in 0..10 {
        let mut c = connect(&client, 1090);
        assert_eq!(ask(&mut c, "new").as_deref(), Some("b2"), "a new connection avoids the draining backend");
    }
}

#[test]
fn established_flows_survive_the_controller_going_and_coming_back() {
    if !require_root("established_flows_survive_the_controller_going_and_coming_back") {
        return;
    }
    let t = topo();
    let root = t.lab.dir.join("bpf-lb");
    let _mount = Bpffs(root.clone());
    let mut dp = Kernel::load_pinned(&root, 1021).expect("the datapath loads pinned");
    dp.upsert_service(&service(1090, Proto::Tcp, BackendState::Active)).unwrap();
    let dp = attach_all(&t, dp);
    assert!(dp.attached().contains(&"vc".to_owned()) && root.join("lb_ct").exists(), "links and maps pinned");
    let program_before = link_program(&root, "vc");
    let mut conns: Vec<_> = (0..8).map(|_| connect(&t.client, 1090)).collect();
    let before: Vec<Option<String>> = conns.iter_mut().map(|c| ask(c, "hello")).collect();
    assert!(before.iter().all(Option::is_some), "{before:?}");
    // The controller (netd) goes away: the pinned program keeps forwarding.
    drop(dp);
    let now: Vec<Option<String>> = conns.iter_mut().map(|c| ask(c, "alone")).collect();
    assert_eq!(now, before, "no controller, no failed connection");
    // It comes back: re-adopts maps, ids and links; re-applies the service.
    let mut dp = Kernel::load_pinned(&root, 1021).expect("re-adopts");
    assert_eq!(dp.services(), 1, "the service is known again");
    assert!(dp.flows().unwrap().len() >= 8, "the tracked flows are still there");
    // As netd does at start: every service again, at once (tables of known
    // services rewritten in place; one listed twice, as a caller may).
    let again = service(1090, Proto::Tcp, BackendState::Active);
    dp.upsert_services(&[again.clone(), service(80, Proto::Tcp, BackendState::Active), again]).unwrap();
    let _dp = attach_all(&t, dp);
    let program_after = link_program(&root, "vc");
    assert_ne!(program_after, program_before, "the pinned link now runs the new instance's program (upgrade path)");
    for round in 0..3 {
        let now: Vec<Option<String>> = conns.iter_mut().map(|c| ask(c, &format!("back{round}"))).collect();
        assert_eq!(now, before, "same backends after the restart");
    }
    let mut fresh = connect(&t.client, 1090);
    assert!(ask(&mut fresh, "new").is_some(), "new connections work too");
}

/// The id of the program the link pinned for `ifname` runs (bpftool).
fn link_program(root: &std::path::Path, ifname: &str) -> u64 {
    let pin = std::fs::read_dir(root.join("links"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&format!("{ifname}@")))
        .expect("a pinned link")
        .path();
    let out = std::process::Command::new("bpftool").args(["-j", "link", "show", "pinned"]).arg(&pin).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v["prog_id"].as_u64().expect("prog_id")
}

/// `Ip: ForwDatagrams` of the lab node: packets its IP stack routed.
fn forwarded(t: &Topo) -> u64 {
    let out = t.lab.node(0).sh("cat /proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let at = names.split_whitespace().position(|n| n == "ForwDatagrams").unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

#[test]
fn vip_traffic_to_a_backend_on_the_same_bridge_stays_at_layer_2() {
    if !require_root("vip_traffic_to_a_backend_on_the_same_bridge_stays_at_layer_2") {
        return;
    }
    let t = topo();
    let mut dp = Kernel::load(1021).expect("the datapath loads");
    dp.upsert_service(&service(1090, Proto::Tcp, BackendState::Active)).unwrap();
    let _dp = attach_all(&t, dp);
    let mut c = connect(&t.client, 1090);
    // The first packets may be routed while the node resolves the
    // backend's address (no neighbour entry yet).
    assert!(ask(&mut c, "warm").is_some());
    let mut trips = |what: &str| -> u64 {
        let before = forwarded(&t);
        for i in 0..50 {
            assert!(ask(&mut c, &format!("{what}{i}")).is_some(), "request {what}{i} through the VIP");
        }
        forwarded(&t) - before
    };
    // Control: with forwarding off on the client's port the datapath's
    // route lookup fails, so it leaves delivery to the node's IP stack
    // (routed from the bridge, where forwarding is on): the counter sees
    // every request.
    let sysctl =
        |v: u8| assert!(t.lab.node(0).sh(&format!("sysctl -qw net.ipv4.conf.vc.forwarding={v}")).status.success());
    sysctl(0);
    let routed = trips("routed");
    sysctl(1);
    assert!(routed >= 50, "the control was not routed ({routed} datagrams)");
    let bridged = trips("bridged");
    assert!(
        bridged < 5,
        "50 round trips through the VIP were routed by the node ({bridged} datagrams) instead of bridged"
    );
}

/// Removes a test cgroup directory (after its processes are gone).
struct CgroupDir(std::path::PathBuf);

impl Drop for CgroupDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Runs `lb-sockpeer` in cgroup `dir` and the client's namespace; its
/// `key value` lines.
fn sockpeer(dir: &std::path::Path, t: &Topo, proto: &str, to: &str) -> std::collections::BTreeMap<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lb-sockpeer"))
        .arg(dir)
        .arg(&t.client)
        .args([proto, to])
        .output()
        .unwrap();
    assert!(out.status.success(), "lb-sockpeer: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

#[test]
fn sockets_of_a_balanced_cgroup_connect_straight_to_a_backend() {
    if !require_root("sockets_of_a_balanced_cgroup_connect_straight_to_a_backend") {
        return;
    }
    let t = topo();
    let layout = netd::runtime::cgroup::detect().unwrap();
    let (Some(on), Some(off)) =
        (layout.unified_parent(&format!("{}-sock", t.lab.id)), layout.unified_parent(&format!("{}-nosock", t.lab.id)))
    else {
        assert!(std::env::var_os("CI").is_none(), "CI machines have a cgroup v2 hierarchy");
        eprintln!("SKIPPED: no cgroup v2 hierarchy");
        return;
    };
    std::fs::create_dir_all(&on).unwrap();
    std::fs::create_dir_all(&off).unwrap();
    let (_on, _off) = (CgroupDir(on.clone()), CgroupDir(off.clone()));
    let mut dp = Kernel::load(1021).unwrap();
    dp.upsert_services(&[
        service(1090, Proto::Tcp, BackendState::Active),
        service(80, Proto::Udp, BackendState::Active),
    ])
    .unwrap();
    let mut dp = attach_all(&t, dp);
    dp.attach_sockets(&on).unwrap();
    let flows_of = |dp: &Kernel, local: &str| {
        let port: u16 = local.rsplit(':').next().unwrap().parse().unwrap();
        dp.flows().unwrap().iter().filter(|f| f.client.1 == port).count()
    };

    // In the balanced cgroup: the application sees the VIP, the kernel
    // connected straight to a backend (no flow for the per-packet NAT).
    let flows_before: u64 = dp.counters().unwrap().iter().map(|c| c.flows).sum();
    let got = sockpeer(&on, &t, "tcp", "10.96.0.10:1090");
    assert_eq!(got["peer"], "10.96.0.10:1090", "getpeername shows the VIP: {got:?}");
    assert!(got["reply"] == "b1:x" || got["reply"] == "b2:x", "{got:?}");
    assert_eq!(flows_of(&dp, &got["local"]), 0, "no NAT flow: the socket itself was pointed at the backend");
    let flows_after: u64 = dp.counters().unwrap().iter().map(|c| c.flows).sum();
    assert_eq!(flows_after, flows_before + 1, "the connection is counted for its backend");
    // UDP on an unconnected socket: sent to the VIP, the answer comes
    // "from" the VIP.
    let got = sockpeer(&on, &t, "udp", "10.96.0.10:80");
    assert_eq!(got["from"], "10.96.0.10:80", "{got:?}");
    assert!(got["reply"].starts_with("b1@10.200.0.10") || got["reply"].starts_with("b2@10.200.0.10"), "{got:?}");

    // Control, outside that cgroup: the same connection goes by the
    // per-packet NAT (a tracked flow), and works the same for the app.
    let got = sockpeer(&off, &t, "tcp", "10.96.0.10:1090");
    assert_eq!(got["peer"], "10.96.0.10:1090");
    assert_eq!(flows_of(&dp, &got["local"]), 1, "outside the cgroup: NAT per packet");
    dp.detach_all().unwrap();
}
