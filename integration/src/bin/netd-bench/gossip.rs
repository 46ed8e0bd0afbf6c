//! `cargo xtask bench gossip`, lab part: N nodes (network namespaces), our
//! membership agent (`gossip-agent`, the gossip crate on UDP/TCP) vs Debian's
//! `serf agent` (memberlist inside), same LAN timers, rounds A/B
//! interleaved. Per round and system: [`JOINS`] new members, one after the
//! other, each until its join reached every node; kill -9 of [`KILLS`]
//! members, one after the other, each until the first suspicion anywhere
//! and until every other node declares it failed (a round reports the mean
//! of its samples: one sample of each per round was too noisy to tell
//! parity from a 20% difference); and each node's network bytes/s and CPU
//! at rest over one push-pull interval. Event times come from
//! the agents themselves: ours prints them; serf logs each membership event
//! as it handles it, and the bench stamps those lines as they arrive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use integration::{Lab, Node};

use super::{machine, median, spread};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sys {
    Ours,
    Serf,
}

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(sys: Sys, node: &Node, name: &str, join: Option<std::net::Ipv4Addr>, dir: &Path) -> Result<Agent> {
    let log = dir.join(format!("{name}-{sys:?}.log"));
    let _ = std::fs::remove_file(&log);
    let bind = format!("{}:7946", node.addr);
    let child = match sys {
        Sys::Ours => {
            let mut c = node.command(integration::bins::netd().with_file_name("gossip-agent"));
            c.args(["--name", name, "--bind", &bind]);
            if let Some(j) = join {
                c.args(["--join", &format!("{j}:7946")]);
            }
            c.stdout(std::fs::File::create(&log)?).stderr(Stdio::null()).spawn()?
        }
        Sys::Serf => {
            // serf logs each membership event as it handles it (before the
            // coalescing its event handlers get); stamp the lines on arrival.
            let mut c = node.command("serf");
            c.args(["agent", &format!("-node={name}"), &format!("-bind={bind}"), "-rpc-addr=127.0.0.1:7373"]);
            if let Some(j) = join {
                // `-join` makes serf exit if the seed is not up yet (a slow
                // start under load left a round unconverged); retried, the
                // first attempt still goes out at once.
                c.args([format!("-retry-join={j}:7946"), "-retry-interval=1s".to_owned()]);
            }
            std::fs::write(&log, b"")?;
            let mut child = c.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
            let out = child.stdout.take().context("serf stdout")?;
            let path = log.clone();
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&path) else { return };
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    let t = now_ms();
                    for (pat, kind) in [
                        ("EventMemberJoin: ", "join"),
                        ("EventMemberFailed: ", "fail"),
                        ("EventMemberLeave: ", "leave"),
                        // memberlist's prober, when its probe goes unanswered.
                        ("memberlist: Suspect ", "suspect"),
                    ] {
                        if let Some(rest) = line.split(pat).nth(1) {
                            let who = rest.split_whitespace().next().unwrap_or("");
                            let _ = writeln!(f, "{t} {kind} {who}");
                        }
                    }
                }
            });
            child
        }
    };
    Ok(Agent { child, log })
}

/// First time (unix ms) `kind` about `who` appears in an agent's log.
fn first_event(log: &Path, kind: &str, who: &str) -> Option<u128> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let (t, k, n) = (w.next()?, w.next()?, w.next()?);
        let k = k.strip_prefix("member-").unwrap_or(k);
        let k = if k == "failed" { "fail" } else { k };
        (k == kind && n == who).then(|| t.parse().ok()).flatten()
    })
}

fn joins_seen(log: &Path) -> usize {
    std::fs::read_to_string(log).map(|t| t.lines().filter(|l| l.contains("join")).count()).unwrap_or(0)
}

fn net_bytes(node: &Node) -> u64 {
    let o =
        node.command("cat").args(["/proc/net/dev"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    o.ok()
        .and_then(|t| {
            t.lines().find(|l| l.trim_start().starts_with("eth0:")).map(|l| {
                let f: Vec<u64> =
                    l.split(':').nth(1).unwrap_or("").split_whitespace().filter_map(|x| x.parse().ok()).collect();
                f.first().copied().unwrap_or(0) + f.get(8).copied().unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit(')').next()?.split_whitespace().collect::<Vec<_>>();
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Members that join (one after the other) in each round.
const JOINS: usize = 3;
/// Members killed (one after the other) in each round.
const KILLS: usize = 4;

/// Seconds from `t0` (unix ms) until each agent logged `kind` about `who`
/// (`limit` for those that did not within it).
fn until_all(agents: &[&Agent], kind: &str, who: &str, t0: u128, limit: Duration) -> Vec<f64> {
    let deadline = Instant::now() + limit;
    let mut seen = vec![None; agents.len()];
    while seen.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, a) in agents.iter().enumerate() {
            if seen[i].is_none() {
                seen[i] = first_event(&a.log, kind, who);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seen.iter().map(|t| t.map(|t| t.saturating_sub(t0) as f64 / 1000.0).unwrap_or(limit.as_secs_f64())).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

#[derive(Default, Debug)]
struct Round {
    join_mean: f64,
    join_max: f64,
    suspect_first: f64,
    fail_mean: f64,
    fail_max: f64,
    bytes: f64,
    cpu: f64,
}

fn round(sys: Sys, lab: &Lab, n: usize, dir: &Path) -> Result<Round> {
    let nodes = lab.nodes();
    let seed = nodes[0].addr;
    let mut agents = Vec::new();
    for (i, node) in nodes.iter().take(n).enumerate() {
        agents.push(start(sys, node, &format!("m{i}"), (i > 0).then_some(seed), dir)?);
        if i == 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    // serf reports a join for itself too; ours only for others.
    let want = if sys == Sys::Serf { n } else { n - 1 };
    while agents.iter().any(|a| joins_seen(&a.log) < want) {
        if Instant::now() > deadline {
            bail!("{sys:?}: {n} agents did not converge");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    // At rest: bytes on each node's link and CPU of each agent, over one
    // push-pull interval (30 s below 33 members), so that every member's
    // full state exchange falls in it once, whatever its phase (a shorter
    // window counted them by luck).
    let window = 30.0;
    let b0: Vec<u64> = nodes.iter().take(n).map(net_bytes).collect();
    let c0: Vec<u64> = agents.iter().map(|a| cpu_ticks(a.child.id())).collect();
    std::thread::sleep(Duration::from_secs_f64(window));
    let b1: Vec<u64> = nodes.iter().take(n).map(net_bytes).collect();
    let c1: Vec<u64> = agents.iter().map(|a| cpu_ticks(a.child.id())).collect();
    let bytes = b1.iter().zip(&b0).map(|(a, b)| (a - b) as f64).sum::<f64>() / n as f64 / window;
    let tick = 100.0; // USER_HZ
    let cpu = c1.iter().zip(&c0).map(|(a, b)| (a - b) as f64).sum::<f64>() / n as f64 / tick / window * 100.0;
    // New members join through member 1, one after the other: time until
    // every member (earlier newcomers included) knows each.
    let (mut join_mean, mut join_max) = (Vec::new(), Vec::new());
    let mut newcomers = Vec::new();
    for k in 0..JOINS {
        let name = format!("late{k}");
        let t0 = now_ms();
        let agent = start(sys, &nodes[n + k], &name, Some(nodes[1].addr), dir)?;
        let watchers: Vec<&Agent> = agents.iter().chain(&newcomers).collect();
        let d = until_all(&watchers, "join", &name, t0, Duration::from_secs(30));
        join_mean.push(mean(&d));
        join_max.push(max(&d));
        newcomers.push(agent);
    }
    // kill -9 of the last members, one after the other: time until the
    // first suspicion anywhere (the prober's, in both systems) and until
    // every other member declares the victim failed.
    let (mut suspect_first, mut fail_mean, mut fail_max) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..KILLS {
        let victim = format!("m{}", agents.len() - 1);
        let t0 = now_ms();
        let mut dead = agents.pop().context("no agents")?;
        let _ = dead.child.kill();
        let _ = dead.child.wait();
        let watchers: Vec<&Agent> = agents.iter().chain(&newcomers).collect();
        let d = until_all(&watchers, "fail", &victim, t0, Duration::from_secs(60));
        fail_mean.push(mean(&d));
        fail_max.push(max(&d));
        suspect_first.push(
            watchers
                .iter()
                .filter_map(|a| first_event(&a.log, "suspect", &victim))
                .min()
                .map(|t| t.saturating_sub(t0) as f64 / 1000.0)
                .unwrap_or(60.0),
        );
    }
    Ok(Round {
        join_mean: mean(&join_mean),
        join_max: mean(&join_max),
        suspect_first: mean(&suspect_first),
        fail_mean: mean(&fail_mean),
        fail_max: mean(&fail_max),
        bytes,
        cpu,
    })
}

/// `cargo xtask bench gossip` (lab part).
pub fn lab(rounds: usize, n: usize) -> Result<()> {
    if rounds < 5 {
        bail!("at least 5 rounds are needed for a median");
    }
    if n < KILLS + 3 {
        bail!("at least {} members are needed ({KILLS} are killed in each round)", KILLS + 3);
    }
    let lab = Lab::new(n + JOINS)?;
    let dir = lab.dir.join("gossip-bench");
    std::fs::create_dir_all(&dir)?;
    let mut res: BTreeMap<&str, Vec<Round>> = BTreeMap::new();
    for r in 0..rounds {
        let order = if r % 2 == 0 { [Sys::Ours, Sys::Serf] } else { [Sys::Serf, Sys::Ours] };
        for sys in order {
            let x = round(sys, &lab, n, &dir)?;
            eprintln!("round {} {sys:?}: {x:?}", r + 1);
            res.entry(if sys == Sys::Ours { "ours" } else { "serf" }).or_default().push(x);
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let col = |k: &str, f: fn(&Round) -> f64| -> Vec<f64> { res[k].iter().map(f).collect() };
    println!("### gossip (lab): {n} members, gossip-agent (this crate) vs serf agent 0.8.2, LAN timers\n");
    println!("Command: `cargo xtask bench gossip` ({rounds} rounds A/B interleaved)  ");
    println!("{}\n", machine()?);
    println!("{JOINS} joins and {KILLS} kills per round and system; a round's figure is the mean of its samples.\n");
    println!("| metric (median of rounds) | ours | serf | ours/serf (rounds min..max) |");
    println!("|---|---|---|---|");
    type Row = (&'static str, fn(&Round) -> f64, &'static str);
    let rows: [Row; 7] = [
        ("join reaches every member: mean", |r| r.join_mean, "s"),
        ("join reaches every member: last", |r| r.join_max, "s"),
        ("kill -9 to first suspect (any member)", |r| r.suspect_first, "s"),
        ("kill -9 to failed, every member: mean", |r| r.fail_mean, "s"),
        ("kill -9 to failed, every member: last", |r| r.fail_max, "s"),
        ("network bytes/s per member at rest", |r| r.bytes, "B/s"),
        ("CPU per member at rest", |r| r.cpu, "%"),
    ];
    for (name, f, unit) in rows {
        let (a, b) = (col("ours", f), col("serf", f));
        let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x / y.max(1e-9)).collect();
        let (lo, hi) = spread(&ratios);
        println!(
            "| {name} | {:.2} {unit} | {:.2} {unit} | **{:.2}** ({lo:.2}..{hi:.2}) |",
            median(a),
            median(b),
            median(ratios.clone())
        );
    }
    Ok(())
}
