//! A topology for the eBPF service datapath inside one lab node (the
//! "host"): a bridge `br-lb` (10.200.0.1/24) joins a client namespace
//! (10.200.0.10) and two backends (10.200.0.21, .22) by veths whose host
//! sides are `vc`, `vb1`, `vb2`. Backends answer with a token on 8080 (TCP
//! and UDP, [`crate::probe::Servers`]) and echo lines on 9090. Shared by the
//! lab test and `netd-bench lb`.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ebpf::datapath::{BackendSpec, BackendState, Datapath, Kernel, Proto, ServiceSpec};

use crate::probe::{Servers, in_netns};
use crate::{Lab, netns};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const B1: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 21);
pub const B2: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 22);

pub fn ip(args: &[&str]) {
    netns::ip(args).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
}

/// A namespace behind the host's bridge: veth `host_if` (host side) to
/// `eth0` inside, address `addr`/24, default route via the bridge.
pub fn leg(host: &str, name: &str, host_if: &str, addr: &str) -> PathBuf {
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
pub fn echo(ns: &Path, port: u16, name: &'static str, stop: Arc<AtomicBool>) {
    let l = in_netns(ns, move || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap()).unwrap();
    // Blocking accept: a polling loop would cap the connection rate the
    // benchmark measures. The thread ends with the process (or after the
    // next connection once `stop` is set).
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let _ = c.set_nodelay(true);
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
pub fn ask(c: &mut (TcpStream, BufReader<TcpStream>), msg: &str) -> Option<String> {
    c.0.write_all(format!("{msg}\n").as_bytes()).ok()?;
    let mut line = String::new();
    c.1.read_line(&mut line).ok()?;
    let (who, echoed) = line.trim().split_once(':')?;
    (echoed == msg).then(|| who.to_owned())
}

pub fn service(port: u16, proto: Proto, b1: BackendState) -> ServiceSpec {
    ServiceSpec {
        addr: VIP,
        port,
        proto,
        backends: vec![
            BackendSpec { addr: B1, port: port + 8000, weight: 1, state: b1 },
            BackendSpec { addr: B2, port: port + 8000, weight: 1, state: BackendState::Active },
        ],
        mode: Default::default(),
    }
}

/// The lab topology: a host (lab node) with a bridge, a client and two
/// backends (token servers on 8080, line echo on 9090).
pub struct Topo {
    pub lab: Lab,
    pub host_ns: PathBuf,
    pub client: PathBuf,
    stop: Arc<AtomicBool>,
    _servers: Vec<Servers>,
}

impl Drop for Topo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn topo() -> Topo {
    let lab = Lab::new(1).unwrap();
    let host = lab.node(0).netns.name.clone();
    let host_ns = PathBuf::from(format!("/run/netns/{host}"));
    ip(&["-n", &host, "link", "add", "br-lb", "type", "bridge"]);
    ip(&["-n", &host, "addr", "add", "10.200.0.1/24", "dev", "br-lb"]);
    ip(&["-n", &host, "link", "set", "br-lb", "up"]);
    let fwd = lab.node(0).sh("sysctl -qw net.ipv4.ip_forward=1");
    assert!(fwd.status.success());
    let client = leg(&host, &format!("{}-c", lab.id), "vc", "10.200.0.10/24");
    // Connection-rate runs open tens of thousands of connections to one
    // address within a minute: let the client reuse TIME_WAIT ports (in
    // its own namespace), or connect() starves for ports.
    let reuse = std::process::Command::new("ip")
        .args(["netns", "exec", &format!("{}-c", lab.id), "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])
        .status()
        .unwrap();
    assert!(reuse.success(), "sysctl tcp_tw_reuse in the client namespace");
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
pub fn attach_all(t: &Topo, mut dp: Kernel) -> Kernel {
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

pub fn connect(client: &Path, port: u16) -> (TcpStream, BufReader<TcpStream>) {
    in_netns(client, move || {
        let s = TcpStream::connect_timeout(&(VIP, port).into(), Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    })
    .unwrap()
}

/// Unmounts the test's bpffs (even on panic), before the lab goes.
pub struct Bpffs(pub PathBuf);

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}
