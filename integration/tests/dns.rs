//! Lab test of the embedded DNS: containers on two networks (one on both)
//! query each other with `dig` run in their network namespaces and with
//! busybox `nslookup` through their resolv.conf; names are visible only
//! where a network is shared; aliases, `name.network`, PTR and NXDOMAIN
//! work; other names go to a fake upstream resolver on another lab node;
//! with the upstream blackholed the answer is SERVFAIL within the bound; a
//! netd killed and restarted answers again for the running containers.

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Output;
use std::time::{Duration, Instant};

use integration::{Lab, Node, require_root};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "command failed ({}):\n{}", o.status, text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn docker(n: &Node, args: &[&str]) -> String {
    ok(n.docker(args).expect("no docker client: `cargo xtask setup` provides one"))
}

fn pid_of(n: &Node, c: &str) -> String {
    docker(n, &["inspect", "-f", "{{.State.Pid}}", c])
}

/// `dig` inside container `c`'s network namespace, against 127.0.0.11
/// (names go after `-q`: `dig a` would ask for type A of the root).
fn dig(n: &Node, c: &str, args: &[&str]) -> String {
    let pid = pid_of(n, c);
    let o = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-n", "dig", "@127.0.0.11", "+tries=1", "+timeout=10"])
        .args(args)
        .output()
        .expect("nsenter + dig (dnsutils, from `cargo xtask setup`)");
    text(&o)
}

fn short(n: &Node, c: &str, name: &str) -> Vec<String> {
    let mut v: Vec<String> = dig(n, c, &["+short", "-q", name]).lines().map(str::to_owned).collect();
    v.sort();
    v
}

fn status(out: &str) -> &str {
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("?")
}

fn ip_of(n: &Node, c: &str, net: &str) -> String {
    docker(n, &["inspect", "-f", &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"), c])
}

/// A minimal upstream: every A query gets 192.0.2.10 (so an answer with it
/// proves the question went upstream), others NOERROR with no data. Runs in
/// `ns` on port 53.
fn fake_upstream(ns: &std::path::Path, addr: Ipv4Addr) -> std::thread::JoinHandle<()> {
    let sock = integration::probe::in_netns(ns, move || UdpSocket::bind((addr, 53)).unwrap()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    std::thread::spawn(move || {
        let stop = Instant::now() + Duration::from_secs(240);
        let mut buf = [0u8; 1500];
        while Instant::now() < stop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
            if n < 17 {
                continue;
            }
            // End of the question name, then QTYPE and QCLASS.
            let mut i = 12;
            while i < n && buf[i] != 0 {
                i += 1 + usize::from(buf[i]);
            }
            let qend = i + 5;
            if qend > n {
                continue;
            }
            let is_a = buf[i + 1..i + 3] == [0, 1];
            let mut r = buf[..qend].to_vec();
            r[2] = 0x80 | (buf[2] & 0x01); // QR, RD copied
            r[3] = 0x80; // RA, NOERROR
            r[6..12].copy_from_slice(&[0, u8::from(is_a), 0, 0, 0, 0]);
            if is_a {
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 10]);
            }
            let _ = sock.send_to(&r, from);
        }
    })
}

/// Network sockets netd holds open (unix ones left out: the docker
/// client's API connections close a moment after it exits, at times later
/// than the wait below).
fn netd_sockets(n: &Node) -> usize {
    let pid = n.netd_pid().expect("netd runs");
    let unix: std::collections::BTreeSet<String> = std::fs::read_to_string(format!("/proc/{pid}/net/unix"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6).map(str::to_owned))
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| l.to_string_lossy().strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
                .filter(|inode| !unix.contains(inode))
                .count()
        })
        .unwrap_or(0)
}

/// Waits up to 3 s for `f` (API connections of the docker client close a
/// moment after it exits).
fn settle(f: impl Fn() -> bool, what: &str) {
    let until = Instant::now() + Duration::from_secs(3);
    while !f() {
        assert!(Instant::now() < until, "{what}: not within 3 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn containers_resolve_names_they_share_a_network_with() {
    if !require_root("containers_resolve_names_they_share_a_network_with") {
        return;
    }
    if integration::bins::docker().is_none() || std::process::Command::new("dig").arg("-v").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "docker client or dig missing in CI: `cargo xtask setup` installs them"
        );
        eprintln!("SKIPPED: no docker client or dig");
        return;
    }
    let lab = Lab::new(3).unwrap();
    let (n, up, hole) = (lab.node(0), lab.node(1), lab.node(2));
    n.start_netd(&[]).unwrap();
    let _fake = fake_upstream(&std::path::PathBuf::from(format!("/run/netns/{}", up.netns.name)), up.addr);
    // A blackholed upstream: a socket that reads nothing and never answers.
    let hole_addr = hole.addr;
    let _blackhole =
        integration::probe::in_netns(&std::path::PathBuf::from(format!("/run/netns/{}", hole.netns.name)), move || {
            UdpSocket::bind((hole_addr, 53)).unwrap()
        })
        .unwrap();
    let dns_up = up.addr.to_string();
    let dns_hole = hole.addr.to_string();

    docker(n, &["network", "create", "front"]);
    docker(n, &["network", "create", "back"]);
    let run = |name: &str, net: &str, extra: &[&str], dns: &str| {
        let mut args = vec!["run", "-d", "--name", name, "--network", net, "--dns", dns];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["busybox", "sleep", "600"]);
        docker(n, &args);
    };
    run("a", "front", &["--network-alias", "alpha"], &dns_up);
    run("b", "back", &[], &dns_up);
    run("c", "front", &[], &dns_up);
    docker(n, &["network", "connect", "back", "c"]);
    run("d", "front", &[], &dns_hole);
    let (a, b) = (ip_of(n, "a", "front"), ip_of(n, "b", "back"));
    let (c_front, c_back) = (ip_of(n, "c", "front"), ip_of(n, "c", "back"));

    let resolv = docker(n, &["exec", "a", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 127.0.0.11") && resolv.contains("ndots:0"), "{resolv}");

    // Visible where a network is shared, from both sides.
    assert_eq!(short(n, "a", "c"), [c_front.as_str()]);
    assert_eq!(short(n, "b", "c"), [c_back.as_str()]);
    assert_eq!(short(n, "c", "a"), [a.as_str()]);
    assert_eq!(short(n, "c", "b"), [b.as_str()]);
    let mut both = vec![c_front.clone(), c_back.clone()];
    both.sort();
    assert_eq!(short(n, "c", "c"), both, "a container on two networks sees both its addresses");
    // Not visible across networks: the name goes upstream (which answers
    // every name with 192.0.2.10), never to the other network's address.
    assert_eq!(short(n, "a", "b"), ["192.0.2.10"]);
    assert_eq!(short(n, "b", "a"), ["192.0.2.10"]);
    // Aliases, name.network, short ids, PTR, NXDOMAIN with an SOA in our zone.
    assert_eq!(short(n, "c", "alpha"), [a.as_str()]);
    assert_eq!(short(n, "c", "a.front"), [a.as_str()]);
    assert_eq!(short(n, "c", "b.back"), [b.as_str()]);
    let a_id = docker(n, &["inspect", "-f", "{{.Id}}", "a"]);
    assert_eq!(short(n, "c", &a_id[..12]), [a.as_str()]);
    let ptr = dig(n, "c", &["+short", "-x", &a]);
    assert_eq!(ptr.trim(), "a.front.", "{ptr}");
    let out = dig(n, "c", &["nope.front"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(out.contains("AUTHORITY SECTION") && out.contains("SOA"), "{out}");
    let out = dig(n, "c", &["-t", "AAAA", "-q", "a"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(!out.contains("ANSWER SECTION"), "no IPv6 address: NODATA: {out}");
    // The container's own resolver library finds them too (resolv.conf),
    // also as the very first thing a new container does.
    let ns = docker(n, &["exec", "c", "nslookup", "alpha"]);
    assert!(ns.contains(&a), "{ns}");
    for _ in 0..3 {
        let first = docker(n, &["run", "--rm", "--network", "front", "--dns", &dns_up, "busybox", "nslookup", "alpha"]);
        assert!(first.contains(&a), "a lookup right at start: {first}");
    }
    // A container's DNS sockets live in netd exactly as long as it runs.
    let base = netd_sockets(n);
    docker(n, &["run", "-d", "--name", "e", "--network", "front", "busybox", "sleep", "600"]);
    settle(|| netd_sockets(n) == base + 2, "UDP and TCP sockets opened for e");
    docker(n, &["stop", "-t", "1", "e"]);
    settle(|| netd_sockets(n) == base, "e's DNS sockets closed when it stopped");
    docker(n, &["rm", "e"]);

    // What a person sees (printed with --nocapture).
    println!("$ docker exec c cat /etc/resolv.conf\n{}", docker(n, &["exec", "c", "cat", "/etc/resolv.conf"]));
    println!("$ docker exec a nslookup c\n{}", docker(n, &["exec", "a", "nslookup", "c"]));
    for q in [&["-q", "alpha"][..], &["-q", "b.back"], &["-q", "nope.front"], &["-x", a.as_str()]] {
        println!(
            "$ dig +noall +answer +authority {} (in c)\n{}",
            q.join(" "),
            dig(n, "c", &[&["+noall", "+answer", "+authority"][..], q].concat()).trim()
        );
    }
    // Forwarding to the fake upstream on another node.
    assert_eq!(short(n, "a", "www.example"), ["192.0.2.10"]);
    let out = dig(n, "a", &["+tcp", "www.example"]);
    assert!(out.contains("192.0.2.10"), "over TCP too: {out}");
    // Blackholed upstream: SERVFAIL, bounded (3 tries of 1 s at most; one upstream here).
    let t = Instant::now();
    let out = dig(n, "d", &["www.example"]);
    let took = t.elapsed();
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    assert!(took < Duration::from_secs(4), "SERVFAIL took {took:?}");
    // Its own names still answer.
    assert_eq!(short(n, "d", "a"), [a.as_str()]);

    // A change is visible to the next query: stop c, then start it again.
    docker(n, &["stop", "-t", "1", "c"]);
    let out = dig(n, "a", &["c.front"]);
    assert_eq!(status(&out), "NXDOMAIN", "a stopped container is gone at once: {out}");
    docker(n, &["start", "c"]);
    assert_eq!(short(n, "a", "c"), [ip_of(n, "c", "front")]);

    // netd killed and restarted: the running containers are served again.
    n.kill_netd().unwrap();
    n.start_netd(&[]).unwrap();
    assert_eq!(short(n, "a", "c"), [ip_of(n, "c", "front")]);
    assert_eq!(short(n, "b", "c"), [ip_of(n, "c", "back")]);
    // Disconnected from back, c is no longer a name there.
    docker(n, &["network", "disconnect", "back", "c"]);
    assert_eq!(short(n, "b", "c"), ["192.0.2.10"]);
    assert_eq!(short(n, "a", "c"), [ip_of(n, "c", "front")]);
    // The zone apex of a shared network answers SOA.
    let out = dig(n, "a", &["-t", "SOA", "-q", "front"]);
    assert!(out.contains("ANSWER SECTION") && out.contains("SOA"), "{out}");
    assert!(docker(n, &["inspect", "-f", "{{.HostConfig.Dns}}", "a"]).contains(&dns_up));
    for c in ["a", "b", "c", "d"] {
        docker(n, &["rm", "-f", c]);
    }
}
