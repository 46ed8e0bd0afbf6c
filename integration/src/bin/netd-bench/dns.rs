//! `cargo xtask bench dns`: the embedded DNS vs Debian's `unbound` serving
//! the same names as local data, both queried from the same container's
//! namespace over loopback, A/B interleaved. Each server is pinned to one
//! core (netd's threads and unbound with one thread on CPU 1), dnsperf to
//! the other. QPS from dnsperf (100 queries outstanding), latency p50/p99
//! from a closed-loop client (one query at a time). Also: the time to
//! SERVFAIL with the only upstream blackholed.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use integration::Lab;
use integration::probe::in_netns;

use super::{machine, median, pct, spread};

const NAMES: usize = 20;
const UNBOUND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 12);

fn docker_ok(node: &integration::Node, args: &[&str]) -> Result<String> {
    let o = node.docker(args).context("no docker client (cargo xtask setup installs one)")?;
    if !o.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// A query for `name` A with id `id` (no EDNS, RD set).
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Closed-loop latencies (µs) of `n` queries to `server` from `ns`; fails
/// on any unanswered or non-NOERROR-with-answer reply.
fn latencies(ns: &Path, server: Ipv4Addr, names: &[String], n: usize) -> Result<Vec<f64>> {
    let names = names.to_vec();
    in_netns(ns, move || -> Result<Vec<f64>> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect(SocketAddr::from((server, 53)))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = [0u8; 1500];
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let q = query(&names[i % names.len()], i as u16);
            let t = Instant::now();
            s.send(&q)?;
            let len = s.recv(&mut buf).context("no answer within 2 s")?;
            out.push(t.elapsed().as_secs_f64() * 1e6);
            if len < 12 || buf[..2] != q[..2] || buf[3] & 0x0f != 0 || buf[7] == 0 {
                bail!("bad answer for {}", names[i % names.len()]);
            }
        }
        Ok(out)
    })?
}

/// dnsperf against `server` from `ns` for `secs`: queries per second.
fn dnsperf(pid: &str, server: Ipv4Addr, data: &Path, secs: u32) -> Result<f64> {
    let o = Command::new("nsenter")
        .args(["-t", pid, "-n", "taskset", "-c", "0", "dnsperf", "-s", &server.to_string(), "-d"])
        .arg(data)
        .args(["-l", &secs.to_string(), "-q", "100", "-c", "4"])
        .output()
        .context("dnsperf (Debian's dnsperf, from `cargo xtask setup`)")?;
    let out = String::from_utf8_lossy(&o.stdout);
    let lost = out.lines().find(|l| l.contains("Queries lost:")).unwrap_or("").to_owned();
    let qps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries per second:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("dnsperf printed no rate: {out}"))?;
    let completed = out.lines().find(|l| l.contains("Queries completed:")).unwrap_or("");
    if !completed.contains("(100.00%)") {
        eprintln!("  dnsperf: {} {}", completed.trim(), lost.trim());
    }
    Ok(qps)
}

fn pin_all_threads(pid: u32, cpu: &str) -> Result<()> {
    let st = Command::new("taskset").args(["-a", "-p", "-c", cpu, &pid.to_string()]).stdout(Stdio::null()).status()?;
    if !st.success() {
        bail!("taskset on {pid} failed");
    }
    Ok(())
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cargo xtask bench dns`.
pub fn dns(rounds: usize, secs: u32, samples: usize) -> Result<()> {
    if rounds < 5 {
        bail!("at least 5 rounds are needed for a median");
    }
    let lab = Lab::new(2)?;
    let (node, hole) = (lab.node(0), lab.node(1));
    node.start_netd(&["--log-level", "warn"])?;
    // A blackholed upstream on the other lab node: bound, never answering.
    let hole_addr = hole.addr;
    let _hole =
        in_netns(&PathBuf::from(format!("/run/netns/{}", hole.netns.name)), move || UdpSocket::bind((hole_addr, 53)))??;
    docker_ok(node, &["network", "create", "benchnet"])?;
    let dns_hole = hole.addr.to_string();
    docker_ok(
        node,
        &["run", "-d", "--name", "client", "--network", "benchnet", "--dns", &dns_hole, "busybox", "sleep", "3600"],
    )?;
    let mut names = Vec::new();
    let mut local_data = String::new();
    for i in 0..NAMES {
        let name = format!("srv{i}");
        docker_ok(node, &["run", "-d", "--name", &name, "--network", "benchnet", "busybox", "sleep", "3600"])?;
        let ip = docker_ok(node, &["inspect", "-f", "{{.NetworkSettings.Networks.benchnet.IPAddress}}", &name])?;
        local_data.push_str(&format!("    local-data: \"{name}. 5 IN A {ip}\"\n"));
        names.push(name);
    }
    let pid = docker_ok(node, &["inspect", "-f", "{{.State.Pid}}", "client"])?;
    let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let dir = node.dir.join("dnsbench");
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("queries.txt");
    std::fs::write(&data, names.iter().map(|n| format!("{n} A\n")).collect::<String>())?;
    // unbound: local data for the same names, one thread, in the client's namespace.
    let conf = dir.join("unbound.conf");
    std::fs::write(
        &conf,
        format!(
            "server:\n    interface: {UNBOUND}\n    port: 53\n    num-threads: 1\n    do-daemonize: no\n    chroot: \"\"\n    username: \"\"\n    directory: \"{d}\"\n    pidfile: \"\"\n    use-syslog: no\n    logfile: \"\"\n    verbosity: 0\n    access-control: 127.0.0.0/8 allow\n    local-zone: \".\" static\n    so-reuseport: no\n{local_data}",
            d = dir.display()
        ),
    )?;
    let unbound = Kill(
        Command::new("nsenter")
            .args(["-t", &pid, "-n", "taskset", "-c", "1", "unbound", "-d", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .spawn()
            .context("unbound (installed by `cargo xtask bench dns`)")?,
    );
    let netd_pid = node.netd_pid().context("netd pid")?;
    pin_all_threads(netd_pid, "1")?;
    // Both answer before measuring (and warm up).
    let deadline = Instant::now() + Duration::from_secs(10);
    while latencies(&ns, UNBOUND, &names, 10).is_err() {
        if Instant::now() > deadline {
            bail!("unbound does not answer");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    latencies(&ns, Ipv4Addr::new(127, 0, 0, 11), &names, 1000)?;
    let ours = Ipv4Addr::new(127, 0, 0, 11);
    let (mut qa, mut qb, mut pa, mut pb, mut ma, mut mb) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    for r in 0..rounds {
        let order = if r % 2 == 0 { [true, false] } else { [false, true] };
        for netd in order {
            let server = if netd { ours } else { UNBOUND };
            let qps = dnsperf(&pid, server, &data, secs)?;
            let lat = latencies(&ns, server, &names, samples)?;
            let (q, p, m) = if netd { (&mut qa, &mut pa, &mut ma) } else { (&mut qb, &mut pb, &mut mb) };
            q.push(qps);
            p.push(pct(&lat, 0.99));
            m.push(pct(&lat, 0.5));
        }
        eprintln!(
            "round {}: netd {:.0} qps p99 {:.0} µs, unbound {:.0} qps p99 {:.0} µs",
            r + 1,
            qa[r],
            pa[r],
            qb[r],
            pb[r]
        );
    }
    // SERVFAIL with the only upstream blackholed (medians of 5).
    let mut fail = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let o = Command::new("nsenter")
            .args(["-t", &pid, "-n", "dig", "@127.0.0.11", "+tries=1", "+timeout=20", "-q", "www.example"])
            .output()?;
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if !out.contains("status: SERVFAIL") {
            bail!("expected SERVFAIL with a blackholed upstream: {out}");
        }
        fail.push(t.elapsed().as_secs_f64());
    }
    drop(unbound);
    let qr: Vec<f64> = qa.iter().zip(&qb).map(|(a, b)| a / b).collect();
    let pr: Vec<f64> = pa.iter().zip(&pb).map(|(a, b)| a / b).collect();
    println!("### dns: the embedded DNS vs unbound serving the same names as local data\n");
    println!(
        "Command: `cargo xtask bench dns` ({rounds} rounds A/B interleaved; dnsperf {secs} s, 100 outstanding, {NAMES} names; {samples} closed-loop queries per round for latency; server on CPU 1, dnsperf on CPU 0, both from the same container's namespace)  "
    );
    println!("{}\n", machine()?);
    println!("| server | QPS (median) | p50 µs | p99 µs |");
    println!("|---|---|---|---|");
    println!(
        "| netd embedded DNS (127.0.0.11, hickory-server, view lookup) | {:.0} | {:.0} | {:.0} |",
        median(qa.clone()),
        median(ma.clone()),
        median(pa.clone())
    );
    println!(
        "| unbound (Debian, 1 thread, local-data) | {:.0} | {:.0} | {:.0} |",
        median(qb.clone()),
        median(mb.clone()),
        median(pb.clone())
    );
    println!();
    let (q, p) = (median(qr.clone()), median(pr.clone()));
    let (qlo, qhi) = spread(&qr);
    let (plo, phi) = spread(&pr);
    println!(
        "- **QPS ratio netd/unbound: {q:.2}** (rounds {qlo:.2}..{qhi:.2}); goal >= 1.0: {}",
        if q >= 1.0 { "met" } else { "NOT met" }
    );
    println!(
        "- **p99 ratio netd/unbound: {p:.2}** (rounds {plo:.2}..{phi:.2}); goal <= 1.0: {}",
        if p <= 1.0 { "met" } else { "NOT met" }
    );
    println!(
        "- SERVFAIL with the only upstream blackholed: {:.2} s (median of 5; bound: 1 s per upstream, 3 upstreams at most)",
        median(fail)
    );
    Ok(())
}
