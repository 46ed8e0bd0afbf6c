//! `cargo xtask bench gossip`, lab part: N nodes (network namespaces), our
//! membership agent (`gossip-agent`, the gossip crate on UDP/TCP) vs Debian's
//! `serf agent` (memberlist inside), same LAN timers, rounds A/B
//! interleaved. Per round and system: a new member's join reaching every
//! node, kill -9 of one member until the first suspicion anywhere and until
//! every other node declares it failed,
//! and each node's network bytes/s and CPU at rest. Event times come from
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
    // At rest: bytes on each node's link and CPU of each agent.
    let window = 10.0;
    let b0: Vec<u64> = nodes.iter().take(n).map(net_bytes).collect();
    let c0: Vec<u64> = agents.iter().map(|a| cpu_ticks(a.child.id())).collect();
    std::thread::sleep(Duration::from_secs_f64(window));
    let b1: Vec<u64> = nodes.iter().take(n).map(net_bytes).collect();
    let c1: Vec<u64> = agents.iter().map(|a| cpu_ticks(a.child.id())).collect();
    let bytes = b1.iter().zip(&b0).map(|(a, b)| (a - b) as f64).sum::<f64>() / n as f64 / window;
    let tick = 100.0; // USER_HZ
    let cpu = c1.iter().zip(&c0).map(|(a, b)| (a - b) as f64).sum::<f64>() / n as f64 / tick / window * 100.0;
    // A new member joins through member 1: time until every member knows it.
    let t_join = now_ms();
    let newcomer = start(sys, &nodes[n], "late", Some(nodes[1].addr), dir)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut join_t = vec![None; n];
    while join_t.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, a) in agents.iter().enumerate() {
            if join_t[i].is_none() {
                join_t[i] = first_event(&a.log, "join", "late");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let join_d: Vec<f64> =
        join_t.iter().map(|t| t.map(|t| (t.saturating_sub(t_join)) as f64 / 1000.0).unwrap_or(30.0)).collect();
    // kill -9 of the last member: time until every other member declares it failed.
    let victim = format!("m{}", n - 1);
    let t_kill = now_ms();
    let mut dead = agents.pop().context("no agents")?;
    let _ = dead.child.kill();
    let _ = dead.child.wait();
    let mut watchers: Vec<&Agent> = agents.iter().collect();
    watchers.push(&newcomer);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut fail_t = vec![None; watchers.len()];
    while fail_t.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, a) in watchers.iter().enumerate() {
            if fail_t[i].is_none() {
                fail_t[i] = first_event(&a.log, "fail", &victim);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let fail_d: Vec<f64> =
        fail_t.iter().map(|t| t.map(|t| (t.saturating_sub(t_kill)) as f64 / 1000.0).unwrap_or(60.0)).collect();
    // The first suspicion anywhere (the prober's, in both systems).
    let suspect_first = watchers
        .iter()
        .filter_map(|a| first_event(&a.log, "suspect", &victim))
        .min()
        .map(|t| t.saturating_sub(t_kill) as f64 / 1000.0)
        .unwrap_or(60.0);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    Ok(Round {
        join_mean: mean(&join_d),
        join_max: max(&join_d),
        suspect_first,
        fail_mean: mean(&fail_d),
        fail_max: max(&fail_d),
        bytes,
        cpu,
    })
}

/// `cargo xtask bench gossip` (lab part).
pub fn lab(rounds: usize, n: usize) -> Result<()> {
    if rounds < 5 {
        bail!("at least 5 rounds are needed for a median");
    }
    let lab = Lab::new(n + 1)?;
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
