//! Test helper for socket-level load balancing: joins a cgroup (v2) and a
//! network namespace, then talks to a VIP as an application would and
//! prints what it sees, one `key value` per line:
//!
//! `lb-sockpeer CGROUP_DIR NETNS tcp|udp ADDR:PORT`
//!
//! tcp: `local`, `peer` (getpeername), `reply` (one line echoed);
//! udp (unconnected socket): `from` (recvfrom's source), `reply`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, cgroup, netns, proto, to] = args.as_slice() else {
        anyhow::bail!("usage: lb-sockpeer CGROUP_DIR NETNS tcp|udp ADDR:PORT");
    };
    std::fs::write(std::path::Path::new(cgroup).join("cgroup.procs"), std::process::id().to_string())?;
    nix::sched::setns(std::fs::File::open(netns)?, nix::sched::CloneFlags::CLONE_NEWNET)?;
    let to: SocketAddr = to.parse()?;
    match proto.as_str() {
        "tcp" => {
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            println!("local {}", s.local_addr()?);
            println!("peer {}", s.peer_addr()?);
            (&s).write_all(b"x\n")?;
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line)?;
            println!("reply {}", line.trim());
        }
        "udp" => {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.send_to(b"x", to)?;
            let mut buf = [0u8; 512];
            let (n, from) = s.recv_from(&mut buf)?;
            println!("from {from}");
            println!("reply {}", String::from_utf8_lossy(&buf[..n]));
        }
        other => anyhow::bail!("protocol {other:?}: tcp or udp"),
    }
    Ok(())
}
