//! Reachability probes run from this process inside other network
//! namespaces (a thread enters the namespace, opens its sockets there and
//! leaves): TCP and UDP servers that answer with a token, and bounded client
//! probes. Used by the isolation matrix and the benchmarks; no tool output is
//! parsed, and every wait is bounded.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Runs `f` on a thread inside the network namespace at `ns` (e.g.
/// `/proc/PID/ns/net` or `/run/netns/NAME`).
pub fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    let file = std::fs::File::open(ns)?;
    std::thread::spawn(move || -> std::io::Result<T> {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        Ok(f())
    })
    .join()
    .map_err(|_| std::io::Error::other("probe thread panicked"))?
}

/// TCP and UDP servers on one port in one namespace, answering every
/// connection or datagram with `token@<source address>` (so a probe also
/// learns the address it was seen from: NAT or not). Stopped on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Servers {
    pub fn start(ns: &Path, port: u16, token: &str) -> std::io::Result<Servers> {
        let (tcp, udp) = in_netns(ns, move || -> std::io::Result<_> {
            let tcp = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
            let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
            Ok((tcp, udp))
        })??;
        tcp.set_nonblocking(true)?;
        udp.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (s1, s2) = (stop.clone(), stop.clone());
        let (t1, t2) = (token.to_owned(), token.to_owned());
        let tcp_thread = std::thread::spawn(move || {
            while !s1.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut c, from)) => {
                        let _ = c.write_all(format!("{t1}@{}", from.ip()).as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s2.load(Ordering::Relaxed) {
                if let Ok((_, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(format!("{t2}@{}", from.ip()).as_bytes(), from);
                }
            }
        });
        Ok(Servers { stop, threads: vec![tcp_thread, udp_thread] })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What a probe got back: the server's token, or None.
pub fn tcp(ns: &Path, to: Ipv4Addr, port: u16, timeout: Duration) -> Option<String> {
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::from((to, port)), timeout).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
    .ok()
    .flatten()
}

/// A UDP probe: one datagram, one answer (bounded).
pub fn udp(ns: &Path, to: Ipv4Addr, port: u16, timeout: Duration) -> Option<String> {
    in_netns(ns, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        s.set_read_timeout(Some(timeout)).ok()?;
        s.send_to(b"?", (to, port)).ok()?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .ok()
    .flatten()
}

/// The network namespace of a process.
pub fn ns_of(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}
