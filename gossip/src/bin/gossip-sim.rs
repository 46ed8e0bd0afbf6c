//! `gossip-sim`: N members in one process on the in-memory network, in
//! virtual time (paused tokio clock), with packet loss and delay. For each N
//! it measures: dissemination (a new member's join reaching every member),
//! failure detection (a crashed member declared dead by every other), both
//! against memberlist's formulas, and packets/bytes per member per second;
//! a partition into two halves and its healing (up to `--partition-max`
//! members: each half suspects the other whole, O(N²) suspicions); then, at
//! the smallest N, false positives over a long run with one member slowed
//! down as a saturated CPU would. Prints a Markdown report.
//!
//! Usage: gossip-sim [--nodes 100,1000,10000] [--loss 0.01] [--delay-ms 1] [--fp-minutes 10]
//!        [--partition-max 100] [--partition-s 90]
//!
//! Every member holds the whole member list, so memory still grows with N²,
//! but slowly: the members share one list of `Arc`s and copy only the
//! entries that change for them, so a pair costs ~32 bytes (the table slot
//! and the probe order), ~3.5 GB at N = 10,000 (`--nodes 10000`).

use std::net::SocketAddr;
use std::time::Duration;

use gossip::{Config, Event, Handle, MemNetwork, MemberState};
use tokio::time::Instant;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7946))
}

fn cfg(i: usize) -> Config {
    // Subscribers here read every 20 virtual ms: small event buffers do.
    Config { event_buffer: 64, ..Config::lan(&format!("n{i}"), addr(i)) }
}

struct Cluster {
    net: MemNetwork,
    hs: Vec<Handle>,
}

async fn build(n: usize, loss: f64, delay: Duration) -> Cluster {
    let net = MemNetwork::default();
    net.conditions(loss, delay);
    // One shared list: each member's table refers to these until a member
    // changes for it (copy on write), so memory grows with N plus changes.
    let hs = gossip::start_preloaded(&net, (0..n).map(cfg).collect());
    Cluster { net, hs }
}

/// Virtual seconds until `want` fired on every receiver, one time per receiver.
async fn times(
    mut rxs: Vec<tokio::sync::broadcast::Receiver<Event>>,
    want: impl Fn(&Event) -> bool,
    limit: Duration,
) -> Vec<f64> {
    let start = Instant::now();
    let mut out = vec![None; rxs.len()];
    while out.iter().any(Option::is_none) && start.elapsed() < limit {
        for (i, rx) in rxs.iter_mut().enumerate() {
            while let Ok(e) = rx.try_recv() {
                if out[i].is_none() && want(&e) {
                    out[i] = Some(start.elapsed().as_secs_f64());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.into_iter().map(|t| t.unwrap_or(f64::INFINITY)).collect()
}

fn stats(v: &mut [f64]) -> (f64, f64, usize) {
    v.sort_by(|a, b| a.total_cmp(b));
    let done: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let mean = done.iter().sum::<f64>() / done.len().max(1) as f64;
    let p99 = v[((v.len() - 1) as f64 * 0.99).round() as usize];
    (mean, p99, v.len() - done.len())
}

/// The `live` members split in two halves (even and odd) for `secs`
/// seconds, long enough for each side to declare the other dead and to stop
/// gossiping to it, then the network heals: virtual seconds until each
/// member's view has every member of the other half alive again (views
/// polled every 500 ms: events would be lost to the small event buffers
/// in the burst of a heal).
async fn partition(c: &Cluster, newcomer: &Handle, live: &[usize], secs: u64) -> Vec<f64> {
    let side = |i: usize| (i % 2) as u32;
    c.net.split(live.iter().map(|&i| (addr(i), side(i))));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let handle = |i: usize| if i < c.hs.len() { &c.hs[i] } else { newcomer };
    let mut is_live = vec![false; c.hs.len() + 1];
    for &i in live {
        is_live[i] = true;
    }
    c.net.heal();
    let start = Instant::now();
    let mut out = vec![None; live.len()];
    while out.iter().any(Option::is_none) && start.elapsed() < Duration::from_secs(600) {
        for (k, &i) in live.iter().enumerate() {
            if out[k].is_some() {
                continue;
            }
            let Ok((view, _)) = handle(i).members().await else { continue };
            let back = view
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .filter_map(|m| m.name.strip_prefix('n').and_then(|x| x.parse::<usize>().ok()))
                .filter(|&j| side(j) != side(i) && is_live.get(j) == Some(&true))
                .count();
            if back == live.iter().filter(|&&j| side(j) != side(i)).count() {
                out[k] = Some(start.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    out.into_iter().map(|t| t.unwrap_or(f64::INFINITY)).collect()
}

async fn run_n(n: usize, loss: f64, delay: Duration, partition_max: usize, partition_s: u64) {
    let c = build(n, loss, delay).await;
    let base = Config::lan("x", addr(0));
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Steady-state traffic.
    let (p0, b0) = c.net.traffic();
    let window = 20.0;
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let (p1, b1) = c.net.traffic();
    let pps = (p1 - p0) as f64 / n as f64 / window;
    let bps = (b1 - b0) as f64 / n as f64 / window;

    // Dissemination: a newcomer joins member 0; every member must learn it.
    let rxs: Vec<_> = c.hs.iter().skip(1).map(Handle::subscribe).collect();
    let (t, rx) = c.net.attach(addr(n));
    let newcomer = gossip::start(cfg(n), t, rx);
    let name = format!("n{n}");
    let join = tokio::spawn({
        let h = newcomer.clone();
        async move { h.join(&[addr(0)]).await }
    });
    let mut dis = times(rxs, |e| matches!(e, Event::Join(m) if m.name == name), Duration::from_secs(60)).await;
    let _ = join.await;
    // Theory: an epidemic with fan-out g every gossip interval covers N in
    // about log(N)/log(g+1) rounds.
    let rounds = ((n as f64).ln() / ((base.gossip_nodes + 1) as f64).ln()).ceil();
    let dis_theory = rounds * base.gossip_interval.as_secs_f64();
    let (dm, dp, dmiss) = stats(&mut dis);

    // Detection: ten members crash one after the other (a sample per
    // crash: where in the probe cycle a crash lands moves its detection
    // time, so five were too few to settle a 10% margin); the members left
    // must each declare the crashed one dead.
    let mut det = Vec::new();
    let crashed = 10.min(n / 4);
    for k in 1..=crashed {
        let v = n - k;
        let victim = format!("n{v}");
        let rxs: Vec<_> = c.hs.iter().take(v).map(Handle::subscribe).collect();
        c.net.detach(addr(v));
        c.hs[v].stop().await;
        det.extend(times(rxs, |e| matches!(e, Event::Fail(m) if m.name == victim), Duration::from_secs(600)).await);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // memberlist: probed within about one interval, probe timeout, then the
    // suspicion timeout shrunk to its minimum by independent confirmations.
    let det_theory = base.probe_interval.as_secs_f64()
        + base.probe_timeout.as_secs_f64()
        + gossip::config::suspicion_timeout(base.suspicion_mult, n, base.probe_interval).as_secs_f64();
    let (tm, tp, tmiss) = stats(&mut det);
    let heal = if n <= partition_max {
        let live: Vec<usize> = (0..n - crashed).chain([n]).collect();
        let (hm, hp, hmiss) = stats(&mut partition(&c, &newcomer, &live, partition_s).await);
        format!("{hm:.1} s / {hp:.1} s{}", if hmiss > 0 { format!(", {hmiss} never") } else { String::new() })
    } else {
        "not run".into()
    };
    println!(
        "| {n} | {:.2} s / {:.2} s (theory {:.2} s): {:.2}x / {:.2}x{} | {:.2} s / {:.2} s (theory {:.2} s): {:.2}x / {:.2}x{} | {pps:.1} | {bps:.0} | {heal} |",
        dm,
        dp,
        dis_theory,
        dm / dis_theory,
        dp / dis_theory,
        if dmiss > 0 { format!(", {dmiss} never") } else { String::new() },
        tm,
        tp,
        det_theory,
        tm / det_theory,
        tp / det_theory,
        if tmiss > 0 { format!(", {tmiss} never") } else { String::new() },
    );
    for h in c.hs.iter().chain(std::iter::once(&newcomer)) {
        h.stop().await;
    }
}

async fn false_positives(n: usize, minutes: u64, loss: f64, delay: Duration) {
    let c = build(n, loss, delay).await;
    // One member answers late, as with a saturated CPU: 300 ms each way
    // (probe timeout 500 ms, so direct probes of it often time out).
    c.net.slow(addr(1), Duration::from_millis(300));
    let rxs: Vec<_> = c.hs.iter().map(Handle::subscribe).collect();
    tokio::time::sleep(Duration::from_secs(minutes * 60)).await;
    let mut fps = 0;
    for mut rx in rxs {
        while let Ok(e) = rx.try_recv() {
            if matches!(e, Event::Fail(_)) {
                fps += 1;
            }
        }
    }
    println!(
        "\n- false positives: **{fps}** members declared dead over {minutes} virtual minutes, N = {n}, one member slowed by 300 ms each way, loss {:.1}%",
        loss * 100.0
    );
    for h in &c.hs {
        h.stop().await;
    }
}

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter().position(|x| x == name).and_then(|i| a.get(i + 1).cloned())
}

fn main() {
    let nodes: Vec<usize> =
        arg("--nodes").unwrap_or_else(|| "100,1000,10000".into()).split(',').filter_map(|s| s.parse().ok()).collect();
    let loss: f64 = arg("--loss").and_then(|s| s.parse().ok()).unwrap_or(0.01);
    let delay = Duration::from_millis(arg("--delay-ms").and_then(|s| s.parse().ok()).unwrap_or(1));
    let minutes: u64 = arg("--fp-minutes").and_then(|s| s.parse().ok()).unwrap_or(10);
    // Every member of each half suspects every member of the other: a
    // partition costs O(N²) suspicions, so it runs up to this N.
    let partition_max: usize = arg("--partition-max").and_then(|s| s.parse().ok()).unwrap_or(100);
    let partition_s: u64 = arg("--partition-s").and_then(|s| s.parse().ok()).unwrap_or(90);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("runtime");
    let wall = std::time::Instant::now();
    println!("### gossip simulator (virtual time; loss {:.1}%, one-way delay {delay:?}, LAN timers)\n", loss * 100.0);
    println!(
        "| N | dissemination mean / p99 vs theory | detection mean / p99 vs theory | packets/member/s | bytes/member/s | heal after a {partition_s} s split: mean / p99 |"
    );
    println!("|---|---|---|---|---|---|");
    rt.block_on(async {
        for n in &nodes {
            run_n(*n, loss, delay, partition_max, partition_s).await;
        }
        if minutes > 0
            && let Some(n) = nodes.first()
        {
            false_positives(*n, minutes, loss, delay).await;
        }
    });
    println!("- wall time: {:.0} s", wall.elapsed().as_secs_f64());
}
