//! Lab test of netd's service load balancer end to end: containers on a
//! bridge network, a service created with `netctl lb create`, clients in a
//! container reaching the backends through the VIP (the datapath runs on
//! every container veth netd makes). netd is killed (-9) and restarted under
//! a bounded load: established connections and new ones never fail, the
//! restarted netd re-adopts the pinned maps and switches the links to its
//! own program; `netctl lb ls|conntrack` show the counters and flows; a
//! drained backend takes no new connections; a removed service stops.

use std::io::BufReader;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use integration::lbtopo::{Bpffs, ask};
use integration::probe::{in_netns, ns_of};
use integration::{Lab, Node, require_root};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 250);

fn ok(o: std::process::Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn container(n: &Node, name: &str) -> serde_json::Value {
    let (code, body) = n.http("GET", &format!("/containers/{name}/json"), None).unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn ip_of(n: &Node, name: &str) -> String {
    container(n, name)["NetworkSettings"]["Networks"]["front"]["IPAddress"].as_str().unwrap().to_owned()
}

fn connect(ns: &Path) -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
    in_netns(ns, move || {
        let s = TcpStream::connect_timeout(&(VIP, 80).into(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let r = BufReader::new(s.try_clone()?);
        Ok((s, r))
    })?
}

/// New connections in a loop until `stop`, each asked one question.
fn load(
    ns: PathBuf,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let good = connect(&ns).ok().and_then(|mut c| ask(&mut c, "load")).is_some();
            if good { &done } else { &failed }.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

#[test]
fn netd_programs_services_and_a_kill_and_restart_drops_no_connection() {
    if !require_root("netd_programs_services_and_a_kill_and_restart_drops_no_connection") {
        return;
    }
    let lab = Lab::new(1).unwrap();
    let n = lab.node(0);
    // bpffs mounted where netd pins, outside netd's mount namespace, as a
    // host's /sys/fs/bpf is: the pins outlive the netd process.
    ebpf::datapath::ensure_bpffs(&n.bpf_root()).unwrap();
    let _bpffs = Bpffs(n.bpf_root());
    n.start_netd(&[]).unwrap();
    ok(n.netctl(&["network", "create", "--subnet", "10.77.0.0/24", "front"]));
    for b in ["b1", "b2"] {
        let echo = format!("while read l; do echo \"{b}:$l\"; done");
        ok(n.netctl(&[
            "run",
            "-d",
            "--network",
            "front",
            "--name",
            b,
            "busybox",
            "nc",
            "-ll",
            "-p",
            "8080",
            "-e",
            "sh",
            "-c",
            &echo,
        ]));
    }
    ok(n.netctl(&["run", "-d", "--network", "front", "--name", "client", "busybox", "sleep", "600"]));
    let (b1, b2) = (ip_of(n, "b1"), ip_of(n, "b2"));
    let client = ns_of(container(n, "client")["State"]["Pid"].as_u64().unwrap() as u32);

    // Bad input is refused with the reason, and changes nothing.
    let o = n.netctl(&["lb", "create", "web", "--vip", "10.77.0.250", "-p", "80:99999"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not a port number"), "{o:?}");
    assert!(connect(&client).is_err(), "no service yet: nobody answers on the VIP");

    ok(n.netctl(&["lb", "create", "web", "--vip", "10.77.0.250", "-p", "80:8080", "-b", &b1, "-b", &b2]));
    let o = n.netctl(&["lb", "create", "web2", "--vip", "10.77.0.250", "-p", "80"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("10.77.0.250:80/tcp is already service web"), "{o:?}");

    // Through the VIP to both backends. The probe before the service
    // left the client's ARP entry for the VIP resolving or failed (3 probes
    // over 3 s): until it is asked again, connects fail fast with "no route
    // to host", as for any address that did not answer. A client retries.
    let t0 = Instant::now();
    while connect(&client).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(8), "the VIP never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut conns: Vec<_> = (0..16).map(|_| connect(&client).expect("a connection through the VIP")).collect();
    let before: Vec<Option<String>> = conns.iter_mut().map(|c| ask(c, "hello")).collect();
    assert!(before.iter().all(Option::is_some), "{before:?}");
    assert!(before.iter().any(|b| b.as_deref() == Some("b1")) && before.iter().any(|b| b.as_deref() == Some("b2")));
    let ls = ok(n.netctl(&["lb", "ls"]));
    assert!(ls.contains("web") && ls.contains(&b1) && ls.contains(&b2) && ls.contains("80->8080/tcp"), "{ls}");
    let ct = ok(n.netctl(&["lb", "conntrack", "--limit", "1000"]));
    assert!(ct.lines().filter(|l| l.contains("10.77.0.250:80")).count() >= 16, "{ct}");

    // netd killed and restarted under load: nothing fails.
    let (stop, done, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loader = load(client.clone(), stop.clone(), done.clone(), failed.clone());
    std::thread::sleep(Duration::from_millis(300));
    let program_before = link_program(&n.bpf_root());
    n.kill_netd().unwrap();
    let alone: Vec<Option<String>> = conns.iter_mut().map(|c| ask(c, "alone")).collect();
    assert_eq!(alone, before, "with netd dead, established connections keep their backends");
    std::thread::sleep(Duration::from_millis(300));
    n.start_netd(&[]).unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    let back: Vec<Option<String>> = conns.iter_mut().map(|c| ask(c, "back")).collect();
    assert_eq!(back, before, "after the restart, the same backends");
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "new connections failed during the kill and restart ({done} succeeded)");
    assert!(done >= 10, "the load ran ({done} connections)");
    assert_ne!(link_program(&n.bpf_root()), program_before, "the restarted netd's program runs on the veths");
    assert!(n.log().contains("services programmed"), "the stored service was re-applied");

    // Counters per backend: every connection counted as a flow.
    let v: serde_json::Value = serde_json::from_str(&ok(n.netctl(&["--format", "json", "lb", "ls"]))).unwrap();
    let flows: u64 = v[0]["Backends"].as_array().unwrap().iter().map(|b| b["Stats"]["Flows"].as_u64().unwrap()).sum();
    assert!(flows >= 16 + done, "{flows} flows counted for {} connections", 16 + done);

    // A container's own sockets are balanced at connect (socket level):
    // it reaches a backend, and the per-packet NAT tracks no flow for it.
    // It asks by the service's name: the embedded DNS answers the VIP.
    assert!(n.log().contains("containers' sockets balanced at connect"), "{}", n.log_tail(20));
    let vip_flows = || {
        ok(n.netctl(&["lb", "conntrack", "--limit", "100000"])).lines().filter(|l| l.contains("10.77.0.250:80")).count()
    };
    let flows_before = vip_flows();
    let out = ok(n.netctl(&[
        "run",
        "--rm",
        "--network",
        "front",
        "busybox",
        "sh",
        "-c",
        "nslookup web | grep -q 10.77.0.250 && echo resolved; echo sock | timeout 2 nc web 80; true",
    ]));
    assert!(out.contains("resolved"), "the service's name answers its VIP: {out}");
    assert!(out.contains("b1:sock") || out.contains("b2:sock"), "{out}");
    assert_eq!(vip_flows(), flows_before, "no NAT flow for a container's own connection");

    // b1 drained, under a bounded load of new connections: established
    // connections stay, no connection fails, new ones go to b2.
    let (stop, done, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loader = load(client.clone(), stop.clone(), done.clone(), failed.clone());
    std::thread::sleep(Duration::from_millis(200));
    ok(n.netctl(&["lb", "backend", "web", &format!("{b1},state=draining")]));
    let now: Vec<Option<String>> = conns.iter_mut().map(|c| ask(c, "drained")).collect();
    assert_eq!(now, before, "draining keeps established connections");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "connections failed while the backend set changed ({done} succeeded)");
    assert!(done >= 5, "the load ran ({done} connections)");
    for _ in 0..8 {
        let mut c = connect(&client).unwrap();
        assert_eq!(ask(&mut c, "new").as_deref(), Some("b2"), "a new connection avoids the draining backend");
    }
    let ls = ok(n.netctl(&["lb", "ls"]));
    assert!(ls.lines().any(|l| l.contains(&b1) && l.contains("draining")), "{ls}");

    // Removed: the VIP stops answering.
    ok(n.netctl(&["lb", "rm", "web"]));
    assert!(connect(&client).and_then(|mut c| ask(&mut c, "x").ok_or(std::io::ErrorKind::Other.into())).is_err());
    assert!(ok(n.netctl(&["lb", "ls"])).lines().count() <= 1, "no services left");

    // A container removed: its veth goes, and netd's upkeep (every 10 s)
    // forgets the pinned link of it.
    let pins = || std::fs::read_dir(n.bpf_root().join("lb/links")).unwrap().count();
    let before = pins();
    ok(n.netctl(&["rm", "-f", "client"]));
    let t0 = Instant::now();
    while pins() == before {
        assert!(t0.elapsed() < Duration::from_secs(15), "the removed container's link pin is still there");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(pins(), before - 1);
}

/// The id of the program the client's veth link runs (any pinned link:
/// one netd loads one program for all).
fn link_program(bpf_root: &Path) -> u64 {
    let pin = std::fs::read_dir(bpf_root.join("lb/links")).unwrap().flatten().next().expect("a pinned link").path();
    let out = std::process::Command::new("bpftool").args(["-j", "link", "show", "pinned"]).arg(&pin).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v["prog_id"].as_u64().expect("prog_id")
}

/// Published service ports, from a client on another node of the underlay:
/// balanced over both backends, in SNAT mode (backends see the bridge's
/// gateway address, as with Docker's routing mesh) and in source-preserving
/// mode (backends see the client); replies leave through the node that got
/// the request and come from its published port; a netd restart keeps them.
#[test]
fn published_ports_reach_backends_with_snat_or_the_client_source_kept() {
    if !require_root("published_ports_reach_backends_with_snat_or_the_client_source_kept") {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let (n, outside) = (lab.node(0), lab.node(1));
    ebpf::datapath::ensure_bpffs(&n.bpf_root()).unwrap();
    let _bpffs = Bpffs(n.bpf_root());
    n.start_netd(&["--lb-interface", "eth0"]).unwrap();
    ok(n.netctl(&["network", "create", "--subnet", "10.77.0.0/24", "front"]));
    let mut servers = Vec::new();
    let mut backends = Vec::new();
    for b in ["b1", "b2"] {
        ok(n.netctl(&["run", "-d", "--network", "front", "--name", b, "busybox", "sleep", "600"]));
        let pid = container(n, b)["State"]["Pid"].as_u64().unwrap() as u32;
        servers.push(integration::probe::Servers::start(&ns_of(pid), 8080, b).unwrap());
        backends.push(ip_of(n, b));
    }
    let args = |name: &str, vip: &str, port: &str, publish: &str| -> Vec<String> {
        let mut v: Vec<String> = ["lb", "create", name, "--vip", vip, "-p", port, "--publish", publish]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for b in &backends {
            v.extend(["-b".to_owned(), b.clone()]);
        }
        v
    };
    let run = |v: Vec<String>| ok(n.netctl(&v.iter().map(String::as_str).collect::<Vec<_>>()));
    run(args("snat", "10.77.0.250", "80:8080", "30080:80"));
    run(args("keep", "10.77.0.251", "81:8080", "30081:81,mode=preserve"));
    run(args("dns", "10.77.0.252", "53:8080/udp", "30053:53/udp"));
    let ls = ok(n.netctl(&["lb", "ls"]));
    assert!(ls.contains("(*:30080 snat)") && ls.contains("(*:30081 preserve)"), "{ls}");

    let world = std::path::PathBuf::from(format!("/run/netns/{}", outside.netns.name));
    let gateway = "10.77.0.1";
    let check = |when: &str| {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..12 {
            let got = integration::probe::tcp(&world, n.addr, 30080, Duration::from_secs(2))
                .unwrap_or_else(|| panic!("{when}: TCP to the published port (snat)"));
            let (who, from) = got.split_once('@').unwrap();
            assert_eq!(from, gateway, "{when}: SNAT mode: the backend sees the node's gateway address");
            seen.insert(who.to_owned());
            let got = integration::probe::tcp(&world, n.addr, 30081, Duration::from_secs(2))
                .unwrap_or_else(|| panic!("{when}: TCP to the published port (preserve)"));
            assert_eq!(got.split_once('@').unwrap().1, outside.addr.to_string(), "{when}: the client's own address");
        }
        assert_eq!(seen.len(), 2, "{when}: both backends serve: {seen:?}");
        let got = integration::probe::udp(&world, n.addr, 30053, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("{when}: UDP to the published port"));
        assert!(got.ends_with(&format!("@{gateway}")), "{when}: {got}");
    };
    check("first");
    // The VIPs are for containers, not for the world (no route there
    // either); the node's own ports that no service publishes stay closed.
    assert_eq!(integration::probe::tcp(&world, n.addr, 30099, Duration::from_millis(500)), None);

    n.kill_netd().unwrap();
    check("with netd dead");
    n.start_netd(&["--lb-interface", "eth0"]).unwrap();
    check("after the restart");
    let ct = ok(n.netctl(&["lb", "conntrack", "--limit", "1000"]));
    assert!(ct.contains(&format!("{}:30080", n.addr)), "{ct}");
    drop(servers);
}
