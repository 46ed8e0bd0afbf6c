//! `netd-bench`: benchmarks that compare netd with a baseline measured in the
//! same run (A/B interleaved, median of several rounds; ratios only, the
//! machines are noisy). `netd-bench api`: `GET /networks` through the unix
//! socket, netd vs a minimal hyper server answering the same bytes from
//! memory (the floor). `netd-bench floor` is that server (internal).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use integration::Lab;

mod dns;
mod gossip;
mod lb;
mod net;

#[derive(Parser)]
#[command(about = "netd benchmarks (run through `cargo xtask bench NAME`)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// GET /networks: netd vs a minimal hyper server with the same body
    Api {
        /// Concurrent keep-alive connections
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Requests per measured run
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// A/B rounds (at least 5)
        #[arg(long, default_value_t = 7)]
        rounds: usize,
    },
    /// busybox `true`: create, start, exit, delete through netd's API vs an
    /// OCI runtime from Debian on the same rootfs
    Runtime {
        /// A/B rounds (at least 20)
        #[arg(long, default_value_t = 21)]
        rounds: usize,
        /// The OCI runtime to compare with: runc, or crun (crun 1.8 refuses
        /// hybrid cgroup hosts such as the project's machines)
        #[arg(long, default_value = "runc")]
        peer: String,
    },
    /// A working bridge endpoint for a new namespace: netd's code path vs
    /// the CNI bridge plugin (sequential, then bursts)
    Attach {
        /// A/B rounds (at least 20)
        #[arg(long, default_value_t = 21)]
        rounds: usize,
        /// Namespaces per burst
        #[arg(long, default_value_t = 30)]
        burst: usize,
    },
    /// TCP throughput and latency: two containers on a bridge network vs a
    /// plain veth pair
    Bridge {
        /// A/B rounds (at least 5)
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Seconds of bulk TCP per round and path
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        /// Request/response exchanges per round and path
        #[arg(long, default_value_t = 5000)]
        requests: usize,
    },
    /// The embedded DNS vs unbound with the same names as local data
    Dns {
        /// A/B rounds (at least 5)
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Seconds of dnsperf per round and server
        #[arg(long, default_value_t = 5)]
        secs: u32,
        /// Closed-loop queries per round and server (latency)
        #[arg(long, default_value_t = 5000)]
        samples: usize,
    },
    /// The eBPF service datapath (VIP) vs direct to the backend
    Lb {
        /// A/B rounds (at least 5)
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Request/response round trips per round and path
        #[arg(long, default_value_t = 5000)]
        requests: usize,
        /// Connect-request-close cycles per round and path
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Programming: load rounds of 100,000 backends (the nftables
        /// peer takes about a minute per round)
        #[arg(long, default_value_t = 5)]
        program_rounds: usize,
        /// Programming: single-backend changes timed per side
        #[arg(long, default_value_t = 200)]
        changes: usize,
        /// Programming only (skip the latency and scale runs)
        #[arg(long)]
        only_program: bool,
        /// Latency and scale only (skip programming)
        #[arg(long, conflicts_with = "only_program")]
        skip_program: bool,
    },
    /// Membership: our gossip agent vs serf agents in a lab of N nodes
    Gossip {
        /// A/B rounds (at least 5)
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Members per cluster
        #[arg(long, default_value_t = 16)]
        nodes: usize,
    },
    /// The floor server (internal)
    #[command(hide = true)]
    Floor {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        body: PathBuf,
    },
}

/// Kills the child on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn floor(socket: &Path, body: &Path) -> Result<()> {
    let body = Bytes::from(std::fs::read(body)?);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket)?;
        loop {
            let (stream, _) = listener.accept().await?;
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let resp = hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(body))
                            .expect("static response");
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}

/// One measured run: requests/s and latency percentiles (µs).
#[derive(Clone, Copy, Debug)]
struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn load(socket: &Path, connections: usize, requests: usize) -> Result<Run> {
    let per_conn = requests / connections;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let socket = socket.to_owned();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::UnixStream::connect(&socket).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut lat = Vec::with_capacity(per_conn);
            for _ in 0..per_conn {
                let t = Instant::now();
                let req = Request::get("/networks").header("host", "netd").body(Full::new(Bytes::new()))?;
                let resp = sender.send_request(req).await?;
                if !resp.status().is_success() {
                    bail!("status {}", resp.status());
                }
                resp.into_body().collect().await?;
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Ok(Run { rps: all.len() as f64 / wall, p50_us: pct(0.50), p99_us: pct(0.99) })
}

/// The `p` quantile (0..=1) of `v`.
fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The line every result starts with: date, CPUs, kernel.
fn machine() -> Result<String> {
    let uname = nix::sys::utsname::uname()?;
    Ok(format!(
        "Date: {}; machine: {} vCPU, kernel {}",
        jiff_date(),
        std::thread::available_parallelism()?.get(),
        uname.release().to_string_lossy()
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> (f64, f64) {
    (v.iter().copied().fold(f64::MAX, f64::min), v.iter().copied().fold(f64::MIN, f64::max))
}

/// Resident memory (KiB) and CPU ticks (user + system) of a process.
fn proc_stats(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok((rss, ticks))
}

fn api(connections: usize, requests: usize, rounds: usize) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the api benchmark runs netd in a lab namespace and needs root");
    }
    if rounds < 5 {
        bail!("at least 5 rounds are needed for a median");
    }
    let lab = Lab::new(1)?;
    let node = lab.node(0);
    node.start_netd(&["--log-level", "warn"])?;
    let netd_pid = node.netd_pid().context("netd pid")?;
    let (status, body) = node.http("GET", "/networks", None)?;
    if status != 200 {
        bail!("netd answered {status}");
    }
    let body_file = lab.dir.join("networks.json");
    std::fs::write(&body_file, &body)?;
    let floor_sock = lab.dir.join("floor.sock");
    let floor = Guard(
        Command::new(std::env::current_exe()?)
            .args(["floor", "--socket"])
            .arg(&floor_sock)
            .arg("--body")
            .arg(&body_file)
            .stdin(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::os::unix::net::UnixStream::connect(&floor_sock).is_err() {
        if Instant::now() > deadline {
            bail!("the floor server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let (rss0, t0) = proc_stats(netd_pid)?;
    std::thread::sleep(Duration::from_secs(5));
    let (_, t1) = proc_stats(netd_pid)?;
    let idle_cpu = (t1 - t0) as f64 / tick / 5.0 * 100.0;
    let (floor_rss, _) = proc_stats(floor.0.id())?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let netd_sock = node.socket();
    let run = |sock: &Path, n: usize| -> Result<Run> {
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), load(sock, connections, n)).await })?
    };
    run(&netd_sock, requests / 10)?;
    run(&floor_sock, requests / 10)?;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for round in 0..rounds {
        if round % 2 == 0 {
            a.push(run(&netd_sock, requests)?);
            b.push(run(&floor_sock, requests)?);
        } else {
            b.push(run(&floor_sock, requests)?);
            a.push(run(&netd_sock, requests)?);
        }
        eprintln!("round {}: netd {:.0} req/s, floor {:.0} req/s", round + 1, a[round].rps, b[round].rps);
    }
    let (rss1, _) = proc_stats(netd_pid)?;
    let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x.rps / y.rps).collect();
    let p99_ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x.p99_us / y.p99_us).collect();
    let col = |v: &[Run], f: fn(&Run) -> f64| v.iter().map(f).collect::<Vec<_>>();
    let row = |name: &str, v: &[Run]| {
        let rps = col(v, |r| r.rps);
        let (lo, hi) = spread(&rps);
        format!(
            "| {name} | {:.0} | {lo:.0}..{hi:.0} | {:.0} | {:.0} |",
            median(rps.clone()),
            median(col(v, |r| r.p50_us)),
            median(col(v, |r| r.p99_us))
        )
    };
    let (rlo, rhi) = spread(&ratios);
    let (plo, phi) = spread(&p99_ratios);
    let ratio = median(ratios.clone());
    println!("### api: `GET /networks`, netd vs hyper floor\n");
    println!(
        "Command: `cargo xtask bench api` (connections {connections}, {requests} requests a run, {rounds} rounds A/B interleaved)  "
    );
    println!("{}\n", machine()?);
    println!("| server | req/s (median) | req/s (min..max) | p50 µs | p99 µs |");
    println!("|---|---|---|---|---|");
    println!("{}", row("netd", &a));
    println!("{}", row("floor (hyper, body from memory)", &b));
    println!();
    println!(
        "- **ratio netd/floor, req/s: {ratio:.2}** (rounds {rlo:.2}..{rhi:.2}); goal >= 0.8: {}",
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
    println!(
        "- ratio netd/floor, p99 latency: {:.2} (rounds {plo:.2}..{phi:.2}; lower is better)",
        median(p99_ratios.clone())
    );
    println!(
        "- netd idle: RSS {} KiB at start, {} KiB after the load; CPU {idle_cpu:.2}% of one core over 5 s idle",
        rss0, rss1
    );
    println!("- floor idle RSS: {floor_rss} KiB");
    drop(floor);
    Ok(())
}

/// One request on a fresh connection; returns (status, body).
async fn call(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Bytes)> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", "netd");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

/// create -> start -> wait -> delete of `busybox true` through the API.
async fn netd_cycle(socket: &Path) -> Result<Duration> {
    let t = Instant::now();
    let (s, b) = call(
        socket,
        "POST",
        "/containers/create",
        Some(r#"{"Image":"busybox","Cmd":["true"],"HostConfig":{"NetworkMode":"none"}}"#),
    )
    .await?;
    if s != 201 {
        bail!("create: {s} {}", String::from_utf8_lossy(&b));
    }
    let id = serde_json::from_slice::<serde_json::Value>(&b)?["Id"].as_str().context("id")?.to_owned();
    let (s, b) = call(socket, "POST", &format!("/containers/{id}/start"), None).await?;
    if s != 204 {
        bail!("start: {s} {}", String::from_utf8_lossy(&b));
    }
    let (s, b) = call(socket, "POST", &format!("/containers/{id}/wait"), None).await?;
    if s != 200 || serde_json::from_slice::<serde_json::Value>(&b)?["StatusCode"] != 0 {
        bail!("wait: {s} {}", String::from_utf8_lossy(&b));
    }
    let (s, _) = call(socket, "DELETE", &format!("/containers/{id}"), None).await?;
    if s != 204 {
        bail!("delete: {s}");
    }
    Ok(t.elapsed())
}

fn runtime(rounds: usize, peer: &str) -> Result<()> {
    if !["runc", "crun"].contains(&peer) {
        bail!("unknown peer {peer:?}: runc or crun");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("the runtime benchmark runs containers and needs root");
    }
    if rounds < 20 {
        bail!("at least 20 rounds are needed");
    }
    let lab = Lab::new(1)?;
    let node = lab.node(0);
    node.start_netd(&["--log-level", "warn"])?;
    // The same rootfs for both: netd's busybox image, as an OCI bundle for crun.
    let (_, img) = node.http("GET", "/images/busybox/json", None)?;
    let img: serde_json::Value = serde_json::from_str(&img)?;
    let rootfs = PathBuf::from(img["GraphDriver"]["Data"]["Dir"].as_str().context("image dir")?);
    let bundle = lab.dir.join("bundle");
    std::fs::create_dir_all(&bundle)?;
    let spec = Command::new("crun")
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .context("run `crun spec` (apt-get install crun)")?;
    if !spec.success() {
        bail!("crun spec failed");
    }
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path)?)?;
    cfg["process"]["terminal"] = serde_json::json!(false);
    cfg["process"]["args"] = serde_json::json!(["true"]);
    cfg["root"] = serde_json::json!({ "path": rootfs, "readonly": true });
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg)?)?;
    let peer_root = lab.dir.join("peer-state");
    let peer_cycle = |i: usize| -> Result<Duration> {
        let t = Instant::now();
        let out = node
            .command(peer)
            .arg("--root")
            .arg(&peer_root)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("netd-bench-{}-{i}", std::process::id()))
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("{peer} run: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(t.elapsed())
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let sock = node.socket();
    peer_cycle(999)?;
    rt.block_on(netd_cycle(&sock))?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        if i % 2 == 0 {
            a.push(rt.block_on(netd_cycle(&sock))?.as_secs_f64() * 1e3);
            b.push(peer_cycle(i)?.as_secs_f64() * 1e3);
        } else {
            b.push(peer_cycle(i)?.as_secs_f64() * 1e3);
            a.push(rt.block_on(netd_cycle(&sock))?.as_secs_f64() * 1e3);
        }
    }
    let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y).collect();
    let (alo, ahi) = spread(&a);
    let (blo, bhi) = spread(&b);
    let (rlo, rhi) = spread(&ratios);
    let ratio = median(ratios.clone());
    let version = Command::new(peer)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned())
        .unwrap_or_default();
    println!("### runtime: `busybox true` create -> start -> exit -> delete, netd vs {peer}\n");
    println!("Command: `cargo xtask bench runtime` ({rounds} rounds A/B interleaved)  ");
    println!("{}\n", machine()?);
    println!("| runtime | ms (median) | ms (min..max) |");
    println!("|---|---|---|");
    println!("| netd (4 API calls: create, start, wait, delete) | {:.1} | {alo:.1}..{ahi:.1} |", median(a.clone()));
    println!(
        "| {version} (`{peer} run`, same rootfs as an OCI bundle) | {:.1} | {blo:.1}..{bhi:.1} |",
        median(b.clone())
    );
    println!();
    let verdict = if ratio <= 1.0 { "met" } else { "NOT met" };
    println!("- **ratio netd/{peer}: {ratio:.2}** (rounds {rlo:.2}..{rhi:.2}); goal <= 1.0: {verdict}");
    Ok(())
}

fn jiff_date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Api { connections, requests, rounds } => api(connections.max(1), requests.max(connections), rounds),
        Cmd::Floor { socket, body } => floor(&socket, &body),
        Cmd::Runtime { rounds, peer } => runtime(rounds, &peer),
        Cmd::Gossip { rounds, nodes } => gossip::lab(rounds, nodes.max(3)),
        Cmd::Attach { rounds, burst } => net::attach(rounds, burst.max(1)),
        Cmd::Bridge { rounds, secs, requests } => net::bridge(rounds, secs, requests.max(100)),
        Cmd::Dns { rounds, secs, samples } => dns::dns(rounds, secs.max(1), samples.max(100)),
        Cmd::Lb { rounds, requests, connections, program_rounds, changes, only_program, skip_program } => {
            let r = if only_program { Ok(()) } else { lb::lb(rounds, requests.max(100), connections.max(10)) };
            if skip_program { r } else { r.and_then(|()| lb::programming(program_rounds, changes.max(100))) }
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netd-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
