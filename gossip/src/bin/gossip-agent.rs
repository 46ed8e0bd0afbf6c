//! `gossip-agent`: one gossip member on UDP/TCP, nothing else, printing its
//! events as lines `<unix ms> <join|leave|fail|update|suspect> <node>` — the
//! counterpart of a bare `serf agent` for side-by-side benchmarks.
//!
//! Usage: gossip-agent --name NAME --bind IP:PORT [--join IP:PORT]...

use std::io::Write;
use std::net::SocketAddr;

use gossip::{Config, Event};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    let (Some(name), Some(bind)) = (get("--name"), get("--bind").and_then(|b| b.parse::<SocketAddr>().ok())) else {
        eprintln!("usage: gossip-agent --name NAME --bind IP:PORT [--join IP:PORT]...");
        std::process::exit(2);
    };
    let joins: Vec<SocketAddr> =
        args.windows(2).filter(|w| w[0] == "--join").filter_map(|w| w[1].parse().ok()).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let (t, rx) = gossip::NetTransport::bind(bind).await.unwrap_or_else(|e| {
            eprintln!("gossip-agent: cannot bind {bind}: {e}");
            std::process::exit(1);
        });
        let h = gossip::start(Config::lan(&name, bind), t, rx);
        let mut ev = h.subscribe();
        if !joins.is_empty()
            && let Err(e) = h.join(&joins).await
        {
            eprintln!("gossip-agent: {e}");
        }
        let mut out = std::io::stdout();
        loop {
            let line = match ev.recv().await {
                Ok(Event::Join(m)) => ("join", m.name),
                Ok(Event::Leave(m)) => ("leave", m.name),
                Ok(Event::Fail(m)) => ("fail", m.name),
                Ok(Event::Update(m)) => ("update", m.name),
                Ok(Event::Suspect(m)) => ("suspect", m.name),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            let ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
            let _ = writeln!(out, "{ms} {} {}", line.0, line.1);
            let _ = out.flush();
        }
    });
}
