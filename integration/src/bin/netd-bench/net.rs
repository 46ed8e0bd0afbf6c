//! Network benchmarks, everything inside one lab node's namespace.
//!
//! - `attach`: give a fresh network namespace a working bridge endpoint
//!   (veth made inside it, MAC, address, default route, bridge port) through
//!   netd's own code path (`netd::network::link`, as container start runs it)
//!   vs Debian's CNI `bridge` plugin (+ `host-local` IPAM) doing ADD for an
//!   equivalent namespace; sequential A/B interleaved, then bursts of 30 at once.
//! - `bridge`: TCP throughput and request/response latency between two
//!   containers on a netd bridge network vs two bare namespaces joined by a
//!   plain veth pair, A/B interleaved.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use integration::probe::in_netns;
use integration::{Lab, netns};
use netd::network::link;

use super::{machine, median, pct, spread};

/// A namespace removed on drop (also on panic).
struct TmpNs(String);

impl TmpNs {
    fn create(name: String) -> Result<TmpNs> {
        netns::ip(&["netns", "add", &name])?;
        Ok(TmpNs(name))
    }
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
}

impl Drop for TmpNs {
    fn drop(&mut self) {
        netns::delete(&self.0);
    }
}

/// netd's path for one endpoint: a netlink socket inside the namespace,
/// then the veth pair (container end created in place), address, routes.
async fn netd_attach(host: &link::Handle, bridge: u32, ns: &Path, i: usize) -> Result<Duration> {
    let t = Instant::now();
    let file = std::fs::File::open(ns)?;
    let (inner, ns_file) = link::handle_in_ns(file, "bench")?;
    let ip = Ipv4Addr::new(10, 88, (1 + i / 250) as u8, (1 + i % 250) as u8);
    let plan = link::VethPlan {
        host: format!("vb{i}"),
        ifname: "eth0".into(),
        bridge_index: bridge,
        mac: netd::ipam::mac_for(ip),
        mtu: 1500,
        alias: "netd-bench".into(),
        ip,
        prefix: 16,
        default_via: Some(Ipv4Addr::new(10, 88, 0, 1)),
    };
    link::attach(host, &inner, &ns_file, &plan).await?;
    Ok(t.elapsed())
}

/// Attaches the eBPF load balancer to host-side veths as netd does at
/// container start (TCX link, ARP entry), on a thread inside the node's
/// namespace; answers each request with the time it took (ms).
struct LbAttacher(std::sync::mpsc::Sender<(String, std::sync::mpsc::Sender<Result<f64, String>>)>);

impl LbAttacher {
    fn start(node_ns: &Path) -> Result<LbAttacher> {
        use ebpf::datapath::Datapath;
        let f = std::fs::File::open(node_ns)?;
        let (tx, rx) = std::sync::mpsc::channel::<(String, std::sync::mpsc::Sender<Result<f64, String>>)>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let dp = nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| e.to_string())
                .and_then(|_| ebpf::datapath::Kernel::load(1021).map_err(|e| e.to_string()));
            let mut dp = match dp {
                Ok(dp) => {
                    let _ = ready_tx.send(Ok(()));
                    dp
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            for (ifname, reply) in rx {
                let t = Instant::now();
                let r = dp
                    .attach(&ifname)
                    .and_then(|()| dp.answer_arp(&ifname, [2, 0, 0, 0, 0, 1]))
                    .map(|()| t.elapsed().as_secs_f64() * 1e3)
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
        });
        ready_rx.recv()?.map_err(|e| anyhow::anyhow!("eBPF load balancer: {e}"))?;
        Ok(LbAttacher(tx))
    }

    fn attach(&self, ifname: &str) -> Result<f64> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.0.send((ifname.to_owned(), tx)).map_err(|_| anyhow::anyhow!("attacher gone"))?;
        rx.recv()?.map_err(|e| anyhow::anyhow!("attach {ifname}: {e}"))
    }
}

/// The CNI bridge plugin's ADD for one namespace (run in the node's namespace).
fn cni_command(node: &integration::Node, conf: &Path, ns: &Path, i: usize) -> Command {
    let mut cmd = node.command("/usr/lib/cni/bridge");
    cmd.env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", format!("bench{i}"))
        .env("CNI_NETNS", ns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::fs::File::open(conf).expect("cni conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn cni_add(node: &integration::Node, conf: &Path, ns: &Path, i: usize) -> Result<Duration> {
    let t = Instant::now();
    let out = cni_command(node, conf, ns, i).output()?;
    if !out.status.success() {
        bail!("CNI bridge ADD: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(t.elapsed())
}

/// `cargo xtask bench attach`.
pub fn attach(rounds: usize, burst: usize) -> Result<()> {
    if rounds < 20 {
        bail!("at least 20 rounds are needed");
    }
    if !Path::new("/usr/lib/cni/bridge").exists() {
        bail!("the CNI bridge plugin is missing: apt-get install containernetworking-plugins");
    }
    let lab = Lab::new(1)?;
    let node = lab.node(0);
    let node_ns = PathBuf::from(format!("/run/netns/{}", node.netns.name));
    let conf = lab.dir.join("cni.conf");
    let data = lab.dir.join("cni-ipam");
    std::fs::write(
        &conf,
        serde_json::to_vec(&serde_json::json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni0",
            "isGateway": true, "isDefaultGateway": true,
            "ipam": { "type": "host-local", "subnet": "10.99.0.0/16", "dataDir": data },
        }))?,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let node_file = std::fs::File::open(&node_ns)?;
    let (host, _) = rt.block_on(async { link::handle_in_ns(node_file, "node") })?;
    let bridge = rt.block_on(link::ensure_bridge(&host, "nb0", "netd-bench", Ipv4Addr::new(10, 88, 0, 1), 16, 1500))?;
    let lb = LbAttacher::start(&node_ns)?;
    let mut seq = 0usize;
    let mut fresh = |tag: &str| -> Result<TmpNs> {
        seq += 1;
        TmpNs::create(format!("{}-{tag}{seq}", lab.id))
    };
    // Warm-up (page cache, first netlink sockets), not counted.
    for w in 0..2 {
        let ns = fresh("w")?;
        rt.block_on(netd_attach(&host, bridge, &ns.path(), 9000 + w))?;
        let ns = fresh("w")?;
        cni_add(node, &conf, &ns.path(), 9000 + w)?;
    }
    let (mut a, mut b, mut l) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let (na, nb) = (fresh("a")?, fresh("b")?);
        let mut run_a = |a: &mut Vec<f64>| -> Result<()> {
            a.push(rt.block_on(netd_attach(&host, bridge, &na.path(), r))?.as_secs_f64() * 1e3);
            // What container start adds on top: the load balancer on the
            // new host-side veth.
            l.push(lb.attach(&format!("vb{r}"))?);
            Ok(())
        };
        let run_b = |b: &mut Vec<f64>| -> Result<()> {
            b.push(cni_add(node, &conf, &nb.path(), r)?.as_secs_f64() * 1e3);
            Ok(())
        };
        if r % 2 == 0 {
            run_a(&mut a)?;
            run_b(&mut b)?;
        } else {
            run_b(&mut b)?;
            run_a(&mut a)?;
        }
    }
    // Bursts: `burst` namespaces get their endpoint at once.
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    for k in 0..3 {
        let nss: Vec<TmpNs> = (0..burst).map(|_| fresh("c")).collect::<Result<_>>()?;
        let netd_burst = |out: &mut Vec<f64>| -> Result<()> {
            let base = 1000 + k * burst;
            let paths: Vec<PathBuf> = nss.iter().map(TmpNs::path).collect();
            let times = rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                // As for CNI: each one's latency is from the burst's start to its own end.
                let start = Instant::now();
                for (j, p) in paths.into_iter().enumerate() {
                    let host = host.clone();
                    set.spawn(async move { netd_attach(&host, bridge, &p, base + j).await.map(|_| start.elapsed()) });
                }
                let mut v = Vec::new();
                while let Some(r) = set.join_next().await {
                    v.push(r??.as_secs_f64() * 1e3);
                }
                Ok::<_, anyhow::Error>(v)
            })?;
            out.extend(times);
            Ok(())
        };
        let cni_burst = |out: &mut Vec<f64>| -> Result<()> {
            let nss2: Vec<TmpNs> =
                (0..burst).map(|j| TmpNs::create(format!("{}-d{k}x{j}", lab.id))).collect::<Result<_>>()?;
            let start = Instant::now();
            let mut kids = Vec::new();
            for (j, ns) in nss2.iter().enumerate() {
                kids.push(cni_command(node, &conf, &ns.path(), 5000 + k * burst + j).spawn()?);
            }
            for mut kid in kids {
                let st = kid.wait()?;
                if !st.success() {
                    bail!("CNI bridge ADD failed in the burst");
                }
                // Each one's latency: from the burst's start to its own end.
                out.push(start.elapsed().as_secs_f64() * 1e3);
            }
            Ok(())
        };
        if k % 2 == 0 {
            netd_burst(&mut ba)?;
            cni_burst(&mut bb)?;
        } else {
            cni_burst(&mut bb)?;
            netd_burst(&mut ba)?;
        }
    }
    let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
    let (rlo, rhi) = spread(&ratios);
    let with_lb: Vec<f64> = a.iter().zip(&l).map(|(x, y)| x + y).collect();
    let lb_ratios: Vec<f64> = with_lb.iter().zip(&b).map(|(x, y)| x / y).collect();
    println!("### attach: a working bridge endpoint for a new namespace, netd vs CNI bridge plugin\n");
    println!(
        "Command: `cargo xtask bench attach` ({rounds} rounds A/B interleaved, then 3 bursts of {burst} at once)  "
    );
    println!("{}\n", machine()?);
    println!("| path | p50 ms | p99 ms | burst of {burst}: p50 ms | burst p99 ms |");
    println!("|---|---|---|---|---|");
    println!(
        "| netd (`network::link`: netlink socket in the namespace, veth made inside it, MAC, address, routes, bridge port) | {:.2} | {:.2} | {:.1} | {:.1} |",
        median(a.clone()),
        pct(&a, 0.99),
        pct(&ba, 0.5),
        pct(&ba, 0.99)
    );
    println!(
        "| netd, plus the eBPF load balancer's attach to the new veth (TCX link, ARP entry; netd does it off the start path) | {:.2} | {:.2} | - | - |",
        median(with_lb.clone()),
        pct(&with_lb, 0.99)
    );
    println!(
        "| CNI `bridge` + `host-local` (Debian containernetworking-plugins, one process per ADD) | {:.2} | {:.2} | {:.1} | {:.1} |",
        median(b.clone()),
        pct(&b, 0.99),
        pct(&bb, 0.5),
        pct(&bb, 0.99)
    );
    println!();
    let ratio = median(ratios);
    let v1 = if ratio <= 0.5 { "met" } else { "NOT met" };
    let v2 = if pct(&ba, 0.99) <= 100.0 { "met" } else { "NOT met" };
    println!("- **ratio netd/CNI at p50: {ratio:.2}** (rounds {rlo:.2}..{rhi:.2}); goal <= 0.5: {v1}");
    let (llo, lhi) = spread(&lb_ratios);
    println!(
        "- the eBPF attach alone: p50 {:.2} ms (a TCX attach waits for an RCU grace period), so netd starts containers without waiting for it; endpoint and attach together vs CNI: {:.2} (rounds {llo:.2}..{lhi:.2}); the CNI plugin has no load balancer to attach",
        median(l.clone()),
        median(lb_ratios.clone())
    );
    println!("- netd burst p99: {:.1} ms; goal <= 100 ms: {v2}", pct(&ba, 0.99));
    println!(
        "- not in netd's figure: the address allocation, which netd does at container create (a redb write); CNI's host-local writes a file inside ADD"
    );
    Ok(())
}

/// A TCP receiver in a namespace: sinks `bulk` connections, echoes `rr` ones.
fn serve(ns: &Path, port: u16) -> Result<()> {
    let listener = in_netns(ns, move || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))??;
    std::thread::spawn(move || {
        for c in listener.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let _ = c.set_nodelay(true);
                let mut kind = [0u8; 1];
                if c.read_exact(&mut kind).is_err() {
                    return;
                }
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) if kind[0] == b'r' => {
                            if c.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    Ok(())
}

/// Gbit/s sent from `ns` to `to` for `secs`.
fn throughput(ns: &Path, to: Ipv4Addr, port: u16, secs: f64) -> Result<f64> {
    in_netns(ns, move || -> Result<f64> {
        let mut s = TcpStream::connect_timeout(&(to, port).into(), Duration::from_secs(2))?;
        s.write_all(b"b")?;
        let buf = vec![0u8; 1 << 17];
        let t = Instant::now();
        let mut sent = 0u64;
        while t.elapsed().as_secs_f64() < secs {
            s.write_all(&buf)?;
            sent += buf.len() as u64;
        }
        Ok(sent as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9)
    })?
}

/// Round-trip times (µs) of `n` 64-byte request/responses.
fn rr(ns: &Path, to: Ipv4Addr, port: u16, n: usize) -> Result<Vec<f64>> {
    in_netns(ns, move || -> Result<Vec<f64>> {
        let mut s = TcpStream::connect_timeout(&(to, port).into(), Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"r")?;
        let mut buf = [0u8; 64];
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            s.write_all(&buf)?;
            s.read_exact(&mut buf)?;
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(out)
    })?
}

fn docker_json(node: &integration::Node, args: &[&str]) -> Result<serde_json::Value> {
    let out = node.docker(args).context("no docker client (cargo xtask setup installs one)")?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null))
}

/// `cargo xtask bench bridge`.
pub fn bridge(rounds: usize, secs: f64, requests: usize) -> Result<()> {
    if rounds < 5 {
        bail!("at least 5 rounds are needed for a median");
    }
    let lab = Lab::new(1)?;
    let node = lab.node(0);
    node.start_netd(&["--log-level", "warn"])?;
    docker_json(node, &["network", "create", "benchnet"])?;
    let mut pids = Vec::new();
    let mut ips = Vec::new();
    for name in ["bench-a", "bench-b"] {
        let o = node.docker(&["run", "-d", "--network", "benchnet", "--name", name, "busybox", "sleep", "3600"]);
        if !o.is_some_and(|o| o.status.success()) {
            bail!("cannot start container {name}");
        }
        let v = docker_json(node, &["inspect", name])?;
        pids.push(v[0]["State"]["Pid"].as_u64().context("pid")?);
        ips.push(
            v[0]["NetworkSettings"]["Networks"]["benchnet"]["IPAddress"].as_str().context("ip")?.parse::<Ipv4Addr>()?,
        );
    }
    let ca = PathBuf::from(format!("/proc/{}/ns/net", pids[0]));
    let cb = PathBuf::from(format!("/proc/{}/ns/net", pids[1]));
    // The baseline: two bare namespaces and one veth pair, inside the lab.
    let va = TmpNs::create(format!("{}-va", lab.id))?;
    let vb = TmpNs::create(format!("{}-vb", lab.id))?;
    netns::ip(&["-n", &va.0, "link", "add", "p0", "type", "veth", "peer", "name", "p1", "netns", &vb.0])?;
    netns::ip(&["-n", &va.0, "addr", "add", "10.77.0.1/24", "dev", "p0"])?;
    netns::ip(&["-n", &vb.0, "addr", "add", "10.77.0.2/24", "dev", "p1"])?;
    for (ns, dev) in [(&va.0, "p0"), (&vb.0, "p1")] {
        netns::ip(&["-n", ns, "link", "set", dev, "up"])?;
        netns::ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    const PORT: u16 = 5201;
    serve(&cb, PORT)?;
    serve(&vb.path(), PORT)?;
    let veth_dst = Ipv4Addr::new(10, 77, 0, 2);
    let (mut ta, mut tb, mut la, mut lb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut p99a, mut p99b) = (Vec::new(), Vec::new());
    throughput(&ca, ips[1], PORT, 0.3)?;
    throughput(&va.path(), veth_dst, PORT, 0.3)?;
    for r in 0..rounds {
        let mut run = |bridge: bool| -> Result<()> {
            let (ns, dst) = if bridge { (ca.clone(), ips[1]) } else { (va.path(), veth_dst) };
            let g = throughput(&ns, dst, PORT, secs)?;
            let lat = rr(&ns, dst, PORT, requests)?;
            let (t, l, p) = if bridge { (&mut ta, &mut la, &mut p99a) } else { (&mut tb, &mut lb, &mut p99b) };
            t.push(g);
            l.push(pct(&lat, 0.5));
            p.push(pct(&lat, 0.99));
            Ok(())
        };
        if r % 2 == 0 {
            run(true)?;
            run(false)?;
        } else {
            run(false)?;
            run(true)?;
        }
        eprintln!(
            "round {}: bridge {:.1} Gbit/s {:.0} µs, veth {:.1} Gbit/s {:.0} µs",
            r + 1,
            ta[r],
            la[r],
            tb[r],
            lb[r]
        );
    }
    let tput: Vec<f64> = ta.iter().zip(&tb).map(|(a, b)| a / b).collect();
    let lat: Vec<f64> = la.iter().zip(&lb).map(|(a, b)| a / b).collect();
    println!("### bridge: two containers on one netd bridge network vs two namespaces on a plain veth pair\n");
    println!(
        "Command: `cargo xtask bench bridge` ({rounds} rounds A/B interleaved; {secs} s single-stream TCP, {requests} x 64-byte TCP request/response per round)  "
    );
    println!("{}\n", machine()?);
    println!("| path | Gbit/s (median) | rr p50 µs | rr p99 µs |");
    println!("|---|---|---|---|");
    println!(
        "| netd bridge (veth - bridge - veth, netd's nftables table loaded, br_netfilter off as netd sets it) | {:.1} | {:.1} | {:.1} |",
        median(ta.clone()),
        median(la.clone()),
        median(p99a.clone())
    );
    println!(
        "| plain veth pair | {:.1} | {:.1} | {:.1} |",
        median(tb.clone()),
        median(lb.clone()),
        median(p99b.clone())
    );
    println!();
    let (tr, lr) = (median(tput.clone()), median(lat.clone()));
    let (tlo, thi) = spread(&tput);
    let (llo, lhi) = spread(&lat);
    println!(
        "- **throughput ratio bridge/veth: {tr:.2}** (rounds {tlo:.2}..{thi:.2}); goal >= 0.95: {}",
        if tr >= 0.95 { "met" } else { "NOT met" }
    );
    println!(
        "- **latency ratio bridge/veth (p50): {lr:.2}** (rounds {llo:.2}..{lhi:.2}); goal <= 1.05: {}",
        if lr <= 1.05 { "met" } else { "NOT met" }
    );
    Ok(())
}
