//! Lab test of the eBPF service datapath with real clients: inside one lab
//! node (the "host"), a bridge joins a client namespace and two backend
//! namespaces by veths; the datapath is attached to the host side of every
//! veth. TCP and UDP clients reach the backends through a VIP nobody owns,
//! see only the VIP, and are spread by Maglev; established connections
//! survive a backend being drained, and new ones avoid it.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ebpf::datapath::{BackendSpec, BackendState, Datapath, Kernel, Proto, ServiceSpec};
use integration::probe::{self, Servers, in_netns};
use integration::{Lab, netns, require_root};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const B1: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 21);
const B2: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 22);

fn ip(args: &[&str]) {
    netns::ip(args).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
}

/// A namespace behind the host's bridge: veth `host_if` (host side) to
/// `eth0` inside, address `addr`/24, default route via the bridge.
fn leg(host: &str, name: &str, host_if: &str, addr: &str) -> PathBuf {
    ip(&["netns", "add", name]);
    ip(&["-n", host, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", name]);
    ip(&["-n", host, "link", "set", host_if, "master", "br-lb", "up"]);
    ip(&["-n", name, "addr", "add", addr, "dev", "eth0"]);
    ip(&["-n", name, "link", "set", "eth0", "up"]);
    ip(&["-n", name, "link", "set", "lo", "up"]);
    ip(&["-n", name, "route", "add", "default", "via", "10.200.0.1"]);
    PathBuf::from(format!("/run/netns/{name}"))
}

/// A line echo server: answers each line with `name:line`.
fn echo(ns: &Path, port: u16, name: &'static str, stop: Arc<AtomicBool>) {
    let l = in_netns(ns, move || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap()).unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            c.set_nonblocking(false).unwrap();
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                for line in BufReader::new(c).lines().map_while(Result::ok) {
                    if w.write_all(format!("{name}:{line}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// One request on an open connection: which backend answered.
fn ask(c: &mut (TcpStream, BufReader<TcpStream>), msg: &str) -> Option<String> {
    c.0.write_all(format!("{msg}\n").as_bytes()).ok()?;
    let mut line = String::new();
    c.1.read_line(&mut line).ok()?;
    let (who, echoed) = line.trim().split_once(':')?;
    (echoed == msg).then(|| who.to_owned())
}

fn service(port: u16, proto: Proto, b1: BackendState) -> ServiceSpec {
    ServiceSpec {
        addr: VIP,
        port,
        proto,
        backends: vec![
            BackendSpec { addr: B1, port: port + 8000, weight: 1, state: b1 },
            BackendSpec { addr: B2, port: port + 8000, weight: 1, state: BackendState::Active },
        ],
    }
}

/// The lab topology: a host (lab node) with a bridge, a client and two
/// backends (token servers on 8080, line echo on 9090).
struct Topo {
    lab: Lab,
    host_ns: PathBuf,
    client: PathBuf,
    stop: Arc<AtomicBool>,
    _servers: Vec<Servers>,
}

impl Drop for Topo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn topo() -> Topo {
    let lab = Lab::new(1).unwrap();
    let host = lab.node(0).netns.name.clone();
    let host_ns = PathBuf::from(format!("/run/netns/{host}"));
    ip(&["-n", &host, "link", "add", "br-lb", "type", "bridge"]);
    ip(&["-n", &host, "addr", "add", "10.200.0.1/24", "dev", "br-lb"]);
    ip(&["-n", &host, "link", "set", "br-lb", "up"]);
    let fwd = lab.node(0).sh("sysctl -qw net.ipv4.ip_forward=1");
    assert!(fwd.status.success());
    let client = leg(&host, &format!("{}-c", lab.id), "vc", "10.200.0.10/24");
    let b1 = leg(&host, &format!("{}-b1", lab.id), "vb1", "10.200.0.21/24");
    let b2 = leg(&host, &format!("{}-b2", lab.id), "vb2", "10.200.0.22/24");
    let s1 = Servers::start(&b1, 8080, "b1").unwrap();
    let s2 = Servers::start(&b2, 8080, "b2").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    echo(&b1, 9090, "b1", stop.clone());
    echo(&b2, 9090, "b2", stop.clone());
    Topo { lab, host_ns, client, stop, _servers: vec![s1, s2] }
}

/// Attaches `dp` to the host side of every veth, inside the host's namespace.
fn attach_all(t: &Topo, mut dp: Kernel) -> Kernel {
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&t.host_ns).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            for i in ["vc", "vb1", "vb2"] {
                dp.attach(i).unwrap();
            }
            dp
        })
        .join()
        .unwrap()
    })
}

fn connect(client: &Path, port: u16) -> (TcpStream, BufReader<TcpStream>) {
    in_netns(client, move || {
        let s = TcpStream::connect_timeout(&(VIP, port).into(), Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    })
    .unwrap()
}

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
    for (port, proto) in [(80, Proto::Tcp), (80, Proto::Udp), (1090, Proto::Tcp)] {
        dp.upsert_service(&service(port, proto, BackendState::Active)).unwrap();
    }
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

/// Unmounts the test's bpffs (even on panic), before the lab goes.
struct Bpffs(PathBuf);

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
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
    assert!(root.join("links/vc").exists() && root.join("lb_ct").exists(), "links and maps pinned");
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
    dp.upsert_service(&service(1090, Proto::Tcp, BackendState::Active)).unwrap();
    let _dp = attach_all(&t, dp);
    for round in 0..3 {
        let now: Vec<Option<String>> = conns.iter_mut().map(|c| ask(c, &format!("back{round}"))).collect();
        assert_eq!(now, before, "same backends after the restart");
    }
    let mut fresh = connect(&t.client, 1090);
    assert!(ask(&mut fresh, "new").is_some(), "new connections work too");
}
