//! `cargo xtask bench lb`: the eBPF service datapath vs going straight to
//! the backend, same run, A/B interleaved (topology: `integration::lbtopo`,
//! a client and two backends behind a bridge in one lab node, the datapath
//! on the host side of every veth). Request/response latency over one
//! established TCP connection (p50/p99) and connections per second
//! (connect, one request, close), via the VIP and direct to a backend.
//! Then scale: the same service in a datapath holding 10 services vs one
//! holding 10,000 (10 backends each), swapped on the interfaces every
//! round.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ebpf::datapath::{BackendSpec, BackendState, Datapath, Kernel, Proto, ServiceSpec};
use integration::lbtopo::{B1, Topo, VIP, attach_all, service, topo};
use integration::probe::in_netns;

use super::{machine, median, pct, spread};

/// Round trips (µs) of one line over one connection to `to`.
fn rr(client: &Path, to: (Ipv4Addr, u16), n: usize) -> Result<Vec<f64>> {
    in_netns(client, move || -> Result<Vec<f64>> {
        let s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut w = s.try_clone()?;
        let mut r = BufReader::new(s);
        let mut out = Vec::with_capacity(n);
        let mut line = String::new();
        for _ in 0..n {
            let t = Instant::now();
            w.write_all(b"x\n")?;
            line.clear();
            r.read_line(&mut line)?;
            out.push(t.elapsed().as_secs_f64() * 1e6);
            if !line.ends_with(":x\n") {
                bail!("bad answer {line:?}");
            }
        }
        Ok(out)
    })?
}

/// Connections per second: connect, one request and answer, close.
fn conns(client: &Path, to: (Ipv4Addr, u16), n: usize) -> Result<f64> {
    in_netns(client, move || -> Result<f64> {
        let t = Instant::now();
        for _ in 0..n {
            let s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut w = s.try_clone()?;
            w.write_all(b"c\n")?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line)?;
            if !line.ends_with(":c\n") {
                bail!("bad answer {line:?}");
            }
        }
        Ok(n as f64 / t.elapsed().as_secs_f64())
    })?
}

/// A datapath with the real service plus `extra` services of 10 backends
/// each (addresses nobody uses; the backends are shared).
fn loaded(extra: u32, table: u32) -> Result<Kernel> {
    let mut dp = Kernel::load(table)?;
    dp.upsert_service(&service(1090, Proto::Tcp, BackendState::Active))?;
    let backends: Vec<BackendSpec> = (0..10)
        .map(|i| BackendSpec {
            addr: Ipv4Addr::new(10, 251, 0, i + 1),
            port: 80,
            weight: 1,
            state: BackendState::Active,
        })
        .collect();
    let svcs: Vec<ServiceSpec> = (0..extra)
        .map(|i| ServiceSpec {
            addr: Ipv4Addr::new(10, 97, (i / 250) as u8, (i % 250 + 1) as u8),
            port: 80,
            proto: Proto::Tcp,
            backends: backends.clone(),
        })
        .collect();
    dp.upsert_services(&svcs)?;
    Ok(dp)
}

/// Detaches `dp` in the host's namespace.
fn detach(t: &Topo, mut dp: Kernel) -> Result<Kernel> {
    let host = t.host_ns.clone();
    std::thread::scope(|s| {
        s.spawn(|| -> Result<Kernel> {
            let f = std::fs::File::open(&host)?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
            dp.detach_all()?;
            Ok(dp)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("detach thread panicked"))?
    })
}

/// `cargo xtask bench lb`.
pub fn lb(rounds: usize, requests: usize, connections: usize) -> Result<()> {
    if rounds < 5 {
        bail!("at least 5 rounds are needed for a median");
    }
    let t = topo();
    let mut dp = Kernel::load(ebpf::maglev::DEFAULT_SIZE)?;
    dp.upsert_service(&service(1090, Proto::Tcp, BackendState::Active))?;
    let dp = attach_all(&t, dp);
    let (vip, direct) = ((VIP, 1090), (B1, 9090));
    // Warm up both paths.
    rr(&t.client, vip, 200)?;
    rr(&t.client, direct, 200)?;
    let (mut p50, mut p99, mut cps) = ([vec![], vec![]], [vec![], vec![]], [vec![], vec![]]);
    for r in 0..rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let to = if i == 0 { vip } else { direct };
            let lat = rr(&t.client, to, requests)?;
            p50[i].push(pct(&lat, 0.5));
            p99[i].push(pct(&lat, 0.99));
            cps[i].push(conns(&t.client, to, connections)?);
        }
        eprintln!(
            "round {}: VIP p50 {:.1} µs {:.0} conn/s, direct p50 {:.1} µs {:.0} conn/s",
            r + 1,
            p50[0][r],
            cps[0][r],
            p50[1][r],
            cps[1][r]
        );
    }
    let ratio = |v: &[Vec<f64>; 2]| -> Vec<f64> { v[0].iter().zip(&v[1]).map(|(a, b)| a / b).collect() };
    let (r50, r99, rc) = (ratio(&p50), ratio(&p99), ratio(&cps));
    println!("### lb: the eBPF service datapath (VIP) vs direct to the backend\n");
    println!(
        "Command: `cargo xtask bench lb` ({rounds} rounds A/B interleaved; {requests} request/response round trips over one TCP connection, {connections} connect-request-close cycles per round and path; client, backends and datapath in one lab node)  "
    );
    println!("{}\n", machine()?);
    println!("| path | rr p50 µs | rr p99 µs | conn/s |");
    println!("|---|---|---|---|");
    println!(
        "| VIP through the eBPF datapath (DNAT, conntrack, reverse NAT) | {:.1} | {:.1} | {:.0} |",
        median(p50[0].clone()),
        median(p99[0].clone()),
        median(cps[0].clone())
    );
    println!(
        "| direct to the backend | {:.1} | {:.1} | {:.0} |",
        median(p50[1].clone()),
        median(p99[1].clone()),
        median(cps[1].clone())
    );
    println!();
    let (a, b, c) = (median(r50.clone()), median(r99.clone()), median(rc.clone()));
    let ((alo, ahi), (blo, bhi), (clo, chi)) = (spread(&r50), spread(&r99), spread(&rc));
    println!(
        "- **latency ratio VIP/direct: p50 {a:.2}** ({alo:.2}..{ahi:.2}), **p99 {b:.2}** ({blo:.2}..{bhi:.2}); goal <= 1.05: {}",
        if a <= 1.05 && b <= 1.05 { "met" } else { "NOT met" }
    );
    println!(
        "- **conn/s ratio VIP/direct: {c:.2}** ({clo:.2}..{chi:.2}); goal >= 0.90: {}",
        if c >= 0.90 { "met" } else { "NOT met" }
    );
    detach(&t, dp)?;

    // Scale: 10 services vs 10,000, Maglev tables of 1021 slots (10
    // backends need >= 1,000), swapped on the interfaces every round.
    let load = Instant::now();
    let mut small = Some(loaded(9, 1021)?);
    let mut big = Some(loaded(9_999, 1021)?);
    let load = load.elapsed();
    let (mut sp50, mut sp99, mut scps) = ([vec![], vec![]], [vec![], vec![]], [vec![], vec![]]);
    for r in 0..rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let slot = if i == 0 { &mut small } else { &mut big };
            let dp = attach_all(&t, slot.take().expect("a datapath"));
            let lat = rr(&t.client, vip, requests)?;
            sp50[i].push(pct(&lat, 0.5));
            sp99[i].push(pct(&lat, 0.99));
            scps[i].push(conns(&t.client, vip, connections)?);
            *slot = Some(detach(&t, dp)?);
        }
        eprintln!(
            "scale round {}: 10 svc p50 {:.1} µs {:.0} conn/s, 10,000 svc p50 {:.1} µs {:.0} conn/s",
            r + 1,
            sp50[0][r],
            scps[0][r],
            sp50[1][r],
            scps[1][r]
        );
    }
    let inv = |v: &[Vec<f64>; 2]| -> Vec<f64> { v[0].iter().zip(&v[1]).map(|(a, b)| a / b).collect() };
    let lat50 = inv(&sp50);
    let lat99 = inv(&sp99);
    let cps: Vec<f64> = scps[1].iter().zip(&scps[0]).map(|(big, small)| big / small).collect();
    println!();
    println!(
        "#### scale: the same service among 10 vs 10,000 services (10 backends each, 1021-slot tables; loading 10,009 services took {:.1} s)\n",
        load.as_secs_f64()
    );
    println!("| datapath holds | rr p50 µs | rr p99 µs | conn/s |");
    println!("|---|---|---|---|");
    for (i, what) in [(0, "10 services"), (1, "10,000 services")] {
        println!(
            "| {what} | {:.1} | {:.1} | {:.0} |",
            median(sp50[i].clone()),
            median(sp99[i].clone()),
            median(scps[i].clone())
        );
    }
    println!();
    // Performance kept at 10,000 services: small/big for latency, big/small for rate.
    let (a, b, c) = (median(lat50.clone()), median(lat99.clone()), median(cps.clone()));
    let ((alo, ahi), (blo, bhi), (clo, chi)) = (spread(&lat50), spread(&lat99), spread(&cps));
    println!(
        "- **kept at 10,000 services (latency 10/10,000; rate 10,000/10): p50 {a:.2}** ({alo:.2}..{ahi:.2}), **p99 {b:.2}** ({blo:.2}..{bhi:.2}), **conn/s {c:.2}** ({clo:.2}..{chi:.2}); goal >= 0.95: {}",
        if a >= 0.95 && b >= 0.95 && c >= 0.95 { "met" } else { "NOT met" }
    );
    Ok(())
}
