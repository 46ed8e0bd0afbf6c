//! `netd-demo`: starts a lab of N nodes (3 by default), one netd in each,
//! prints what a newcomer should look at, then waits for Ctrl-C (or SIGTERM,
//! or `--duration` seconds) and tears everything down.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use integration::{Lab, bins};

#[derive(Parser, Debug)]
#[command(about = "Run a netd demo cluster in network namespaces on this machine")]
struct Args {
    /// Number of nodes
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=20))]
    nodes: u8,
    /// Seconds to keep the lab up before tearing it down (0: print and exit)
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// Only remove leftovers of killed lab runs, then exit
    #[arg(long)]
    sweep: bool,
}

fn show(title: &str, out: std::process::Output) {
    println!("$ {title}");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    println!();
}

fn run(args: Args) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("the demo builds network namespaces and needs root (run it as root)");
    }
    if args.sweep {
        println!("swept {} leftover lab objects", integration::sweep::sweep());
        return Ok(());
    }
    println!("Building a lab of {} nodes (namespaces ndlab*, underlay 198.18.0.0/24)...\n", args.nodes);
    let lab = Lab::new(args.nodes as usize)?;
    // node1 starts the cluster, the others join it (gossip on port 7946).
    let first = lab.node(0).addr.to_string();
    for (i, n) in lab.nodes().iter().enumerate() {
        // Published service ports answer on the underlay interface.
        if i == 0 { n.start_netd(&["--lb-interface", "eth0"])? } else { n.start_netd(&["--join", &first])? }
    }
    let netctl = bins::netctl();
    for n in lab.nodes() {
        println!("==================== {} ({}, netns {}) ====================", n.name, n.addr, n.netns.name);
        show(&format!("netctl -H {} info", n.host()), n.netctl(&["info"]));
        show("netctl network ls", n.netctl(&["network", "ls"]));
    }
    let n0 = lab.node(0);
    println!("==================== the cluster, seen from {} ====================", n0.name);
    // Joins finish within a gossip round or two.
    for _ in 0..50 {
        let o = n0.netctl(&["--format", "json", "node", "ls"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v.as_array().is_some_and(|a| a.len() == lab.nodes().len()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    show("netctl node ls", n0.netctl(&["node", "ls"]));
    println!("==================== a container on {} ====================", n0.name);
    show(
        "netctl run -d --name hello --memory 64m busybox sh -c 'echo hello from $(hostname); sleep 3600'",
        n0.netctl(&[
            "run",
            "-d",
            "--name",
            "hello",
            "--memory",
            "64m",
            "busybox",
            "sh",
            "-c",
            "echo hello from $(hostname); sleep 3600",
        ]),
    );
    std::thread::sleep(Duration::from_millis(300));
    show("netctl ps", n0.netctl(&["ps"]));
    show("netctl logs hello", n0.netctl(&["logs", "hello"]));
    show("netctl exec hello ps", n0.netctl(&["exec", "hello", "ps"]));
    show("netctl image ls", n0.netctl(&["image", "ls"]));
    println!("==================== a published web server on {} ====================", n0.name);
    show(
        "netctl network create --subnet 10.30.0.0/24 front",
        n0.netctl(&["network", "create", "--subnet", "10.30.0.0/24", "front"]),
    );
    show(
        "netctl run -d --network front -p 8080:80 --name web busybox sh -c 'echo hello from web > /index.html; exec httpd -f -p 80 -h /'",
        n0.netctl(&[
            "run",
            "-d",
            "--network",
            "front",
            "-p",
            "8080:80",
            "--name",
            "web",
            "busybox",
            "sh",
            "-c",
            "echo hello from web > /index.html; exec httpd -f -p 80 -h /",
        ]),
    );
    std::thread::sleep(Duration::from_millis(300));
    show("netctl ps", n0.netctl(&["ps"]));
    show(
        "netctl exec web ip -o -4 addr show eth0",
        n0.netctl(&["exec", "web", "ip", "-o", "-4", "addr", "show", "eth0"]),
    );
    show(
        "netctl run --rm --network front busybox timeout 5 wget -qO- http://web/   # by name: the embedded DNS",
        n0.netctl(&["run", "--rm", "--network", "front", "busybox", "timeout", "5", "wget", "-qO-", "http://web/"]),
    );
    if let Some(n1) = lab.nodes().get(1) {
        let url = format!("http://{}:8080/", n0.addr);
        // busybox 1.35's `wget -T` crashes: `timeout` bounds it.
        let out = n1.command("timeout").args(["5", "busybox", "wget", "-q", "-O", "-", &url]).output()?;
        show(&format!("[on {}] wget -qO- {url}", n1.name), out);
    }
    println!("==================== a load-balanced service on {} (eBPF) ====================", n0.name);
    show(
        "netctl run -d --network front --name web2 busybox sh -c 'echo hello from web2 > /index.html; exec httpd -f -p 80 -h /'",
        n0.netctl(&[
            "run",
            "-d",
            "--network",
            "front",
            "--name",
            "web2",
            "busybox",
            "sh",
            "-c",
            "echo hello from web2 > /index.html; exec httpd -f -p 80 -h /",
        ]),
    );
    let ip_of = |name: &str| -> String {
        let body = n0.http("GET", &format!("/containers/{name}/json"), None).map(|(_, b)| b).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["NetworkSettings"]["Networks"]["front"]["IPAddress"].as_str().unwrap_or("").to_owned()
    };
    let (w1, w2) = (ip_of("web"), ip_of("web2"));
    show(
        &format!("netctl lb create web --vip 10.30.0.100 -p 80 --publish 30080:80 -b {w1} -b {w2}"),
        n0.netctl(&[
            "lb",
            "create",
            "web",
            "--vip",
            "10.30.0.100",
            "-p",
            "80",
            "--publish",
            "30080:80",
            "-b",
            &w1,
            "-b",
            &w2,
        ]),
    );
    show(
        "netctl run --rm --network front busybox sh -c 'for i in 1 2 3 4 5 6; do timeout 5 wget -qO- http://10.30.0.100/; done'   # the VIP",
        n0.netctl(&[
            "run",
            "--rm",
            "--network",
            "front",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6; do timeout 5 wget -qO- http://10.30.0.100/; done",
        ]),
    );
    if let Some(n1) = lab.nodes().get(1) {
        let url = format!("http://{}:30080/", n0.addr);
        let script = format!("for i in 1 2 3 4; do timeout 5 busybox wget -q -O - {url}; done");
        let out = n1.command("sh").args(["-c", &script]).output()?;
        show(&format!("[on {}] 4 x wget -qO- {url}   # the published port, from another node", n1.name), out);
    }
    show("netctl lb ls", n0.netctl(&["lb", "ls"]));
    show("netctl lb conntrack", n0.netctl(&["lb", "conntrack"]));
    println!("Try it yourself while the lab is up:");
    for n in lab.nodes() {
        println!("  {} network ls -H {}", netctl.display(), n.host());
    }
    println!("  docker -H {} run --rm busybox echo hi", lab.node(0).host());
    println!("  docker -H {} exec hello cat /etc/hostname", lab.node(0).host());
    println!("  docker -H {} port web", lab.node(0).host());
    println!("  ip netns exec {} nft list table ip netd", lab.node(0).netns.name);
    println!("  {} -H {} lb backend web {w1},state=draining", netctl.display(), lab.node(0).host());
    println!("  ip netns exec {} ip -br addr", lab.node(0).netns.name);
    println!("  tail -f {}", lab.node(0).log_path().display());
    if args.duration > 0 {
        println!("\nThe lab stays up for {} s; Ctrl-C tears it down now.", args.duration);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = tokio::time::sleep(Duration::from_secs(args.duration)) => {}
            }
            anyhow::Ok(())
        })?;
    }
    println!("\nTearing down (containers outlive netd by design, so the lab stops them)...");
    drop(lab);
    println!("lab removed");
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netd-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
