//! Container verbs: run, ps, start, stop, kill, restart, rm, logs, exec,
//! inspect, wait. Output streams arrive in Docker's multiplexed framing and
//! are split back onto stdout and stderr.

use std::io::Write;

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Value, json};

use crate::client::{Client, ClientError};
use crate::{Format, path_escape, print_json, s, table};

/// Splits Docker's multiplexed stream (8-byte headers) onto stdout/stderr.
#[derive(Default)]
pub struct Demux {
    buf: Vec<u8>,
}

impl Demux {
    /// Feeds bytes; writes every complete frame.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while self.buf.len() >= 8 {
            let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
            if self.buf.len() < 8 + len {
                break;
            }
            let payload = &self.buf[8..8 + len];
            if self.buf[0] == 2 {
                let _ = std::io::stderr().write_all(payload);
            } else {
                let mut out = std::io::stdout();
                let _ = out.write_all(payload);
                let _ = out.flush();
            }
            self.buf.drain(..8 + len);
        }
    }
}

/// Options of `netctl run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container id
    #[arg(short, long)]
    detach: bool,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    #[arg(long)]
    name: Option<String>,
    /// Environment variable KEY=VALUE
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Bind mount or volume: [SRC:]DST[:ro]
    #[arg(short, long = "volume")]
    volumes: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// User (name|uid[:group|gid])
    #[arg(short, long)]
    user: Option<String>,
    #[arg(long)]
    entrypoint: Option<String>,
    #[arg(long)]
    hostname: Option<String>,
    /// Network to join: bridge (default), a network name, none or host
    #[arg(long, default_value = "bridge")]
    network: String,
    /// Static IPv4 address on the network
    #[arg(long)]
    ip: Option<String>,
    /// Extra DNS name of the container on the network
    #[arg(long = "network-alias")]
    aliases: Vec<String>,
    /// Publish a port: [ip:][hostPort[-end]:]containerPort[-end][/tcp|udp]
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish every exposed port on a random host port
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Expose a port (or range) without publishing it: PORT[-END][/proto]
    #[arg(long)]
    expose: Vec<String>,
    /// Upstream DNS server for this container (instead of the node's)
    #[arg(long)]
    dns: Vec<String>,
    /// DNS search domain
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    /// resolv.conf option (e.g. ndots:2)
    #[arg(long = "dns-option")]
    dns_option: Vec<String>,
    /// Memory limit in bytes, or with a k/m/g suffix
    #[arg(short, long)]
    memory: Option<String>,
    /// CPUs (e.g. 0.5)
    #[arg(long)]
    cpus: Option<f64>,
    #[arg(long)]
    pids_limit: Option<i64>,
    /// no, on-failure[:N], always, unless-stopped
    #[arg(long)]
    restart: Option<String>,
    #[arg(long = "label")]
    labels: Vec<String>,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

/// Container verbs.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create and start a container
    Run(Box<RunArgs>),
    /// List containers
    Ps {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Start stopped containers
    Start { containers: Vec<String> },
    /// Stop running containers (SIGTERM, then SIGKILL after -t seconds)
    Stop {
        #[arg(short, long)]
        time: Option<u32>,
        containers: Vec<String>,
    },
    /// Send a signal to running containers
    Kill {
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        containers: Vec<String>,
    },
    /// Restart containers
    Restart {
        #[arg(short, long)]
        time: Option<u32>,
        containers: Vec<String>,
    },
    /// Remove containers
    Rm {
        /// Stop a running container first
        #[arg(short, long)]
        force: bool,
        /// Remove its anonymous volumes too
        #[arg(short, long)]
        volumes: bool,
        containers: Vec<String>,
    },
    /// Show a container's output
    Logs {
        #[arg(short, long)]
        follow: bool,
        #[arg(short = 'n', long)]
        tail: Option<String>,
        #[arg(short, long)]
        timestamps: bool,
        container: String,
    },
    /// Run a command in a running container
    Exec {
        #[arg(short, long)]
        user: Option<String>,
        #[arg(short, long)]
        workdir: Option<String>,
        #[arg(short, long = "env")]
        env: Vec<String>,
        container: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Display detailed information on containers, images, networks or volumes
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Wait for containers to stop and print their exit codes
    Wait { containers: Vec<String> },
}

fn parse_memory(m: &str) -> anyhow::Result<i64> {
    let m = m.trim().to_ascii_lowercase();
    let (num, mult) = match m.chars().last() {
        Some('k') => (&m[..m.len() - 1], 1i64 << 10),
        Some('m') => (&m[..m.len() - 1], 1 << 20),
        Some('g') => (&m[..m.len() - 1], 1 << 30),
        Some('b') => (&m[..m.len() - 1], 1),
        _ => (&m[..], 1),
    };
    let n: f64 = num.parse().map_err(|_| anyhow::anyhow!("invalid memory size {m:?}: e.g. 64m"))?;
    Ok((n * mult as f64) as i64)
}

fn port_range(s: &str) -> anyhow::Result<(u16, u16)> {
    let one = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| anyhow::anyhow!("invalid port {p:?}"));
    match s.split_once('-') {
        None => one(s).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            anyhow::ensure!(a <= b, "invalid port range {s:?}");
            Ok((a, b))
        }
    }
}

/// `-p` specs as Docker's `PortBindings` and `ExposedPorts` (as the docker
/// client expands them: a container range maps port by port).
fn publish_bindings(specs: &[String], expose: &[String]) -> anyhow::Result<(Value, Value)> {
    let mut bindings = serde_json::Map::new();
    let mut exposed = serde_json::Map::new();
    for e in expose {
        let (ports, proto) = e.split_once('/').unwrap_or((e, "tcp"));
        let (a, b) = port_range(ports)?;
        for p in a..=b {
            exposed.insert(format!("{p}/{proto}"), json!({}));
        }
    }
    for spec in specs {
        let (rest, proto) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
        anyhow::ensure!(matches!(proto, "tcp" | "udp"), "invalid protocol {proto:?} in {spec:?}: tcp or udp");
        let parts: Vec<&str> = rest.split(':').collect();
        let (ip, host, ctr) = match parts.as_slice() {
            [c] => ("", "", *c),
            [h, c] => ("", *h, *c),
            [i, h, c] => (*i, *h, *c),
            _ => anyhow::bail!("invalid publish spec {spec:?}: [ip:][hostPort:]containerPort[/proto]"),
        };
        let (c0, c1) = port_range(ctr)?;
        let hosts = if host.is_empty() { None } else { Some(port_range(host)?) };
        for (i, p) in (c0..=c1).enumerate() {
            let host_port = match hosts {
                None => String::new(),
                Some((h0, h1)) if c0 == c1 => {
                    if h0 == h1 {
                        h0.to_string()
                    } else {
                        format!("{h0}-{h1}")
                    }
                }
                Some((h0, h1)) => {
                    anyhow::ensure!(h1 - h0 == c1 - c0, "port ranges of {spec:?} differ in length");
                    (h0 + i as u16).to_string()
                }
            };
            let key = format!("{p}/{proto}");
            exposed.insert(key.clone(), json!({}));
            let list = bindings.entry(key).or_insert_with(|| json!([]));
            if let Value::Array(l) = list {
                l.push(json!({ "HostIp": ip, "HostPort": host_port }));
            }
        }
    }
    Ok((Value::Object(bindings), Value::Object(exposed)))
}

fn create_body(a: &RunArgs) -> anyhow::Result<Value> {
    let restart = match a.restart.as_deref() {
        None => json!({ "Name": "no" }),
        Some(r) => {
            let (name, max) = r.split_once(':').unwrap_or((r, "0"));
            let max: i64 = max.parse().map_err(|_| anyhow::anyhow!("invalid restart policy {r:?}"))?;
            json!({ "Name": name, "MaximumRetryCount": max })
        }
    };
    let mut labels = serde_json::Map::new();
    for l in &a.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.into(), json!(v));
    }
    let (bindings, exposed) = publish_bindings(&a.publish, &a.expose)?;
    let mut endpoint = json!({ "Aliases": a.aliases });
    if let Some(ip) = &a.ip {
        endpoint["IPAMConfig"] = json!({ "IPv4Address": ip });
    }
    Ok(json!({
        "Image": a.image,
        "ExposedPorts": exposed,
        "NetworkingConfig": { "EndpointsConfig": { a.network.clone(): endpoint } },
        "Cmd": if a.cmd.is_empty() { Value::Null } else { json!(a.cmd) },
        "Entrypoint": a.entrypoint.as_ref().map(|e| json!([e])).unwrap_or(Value::Null),
        "Env": a.env,
        "WorkingDir": a.workdir.clone().unwrap_or_default(),
        "User": a.user.clone().unwrap_or_default(),
        "Hostname": a.hostname.clone().unwrap_or_default(),
        "Labels": labels,
        "HostConfig": {
            "Binds": a.volumes,
            "NetworkMode": a.network,
            "Memory": a.memory.as_deref().map(parse_memory).transpose()?.unwrap_or(0),
            "NanoCpus": a.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
            "PidsLimit": a.pids_limit,
            "RestartPolicy": restart,
            "PortBindings": bindings,
            "PublishAllPorts": a.publish_all,
            "Dns": a.dns,
            "DnsSearch": a.dns_search,
            "DnsOptions": a.dns_option,
        },
    }))
}

async fn each(names: &[String], mut f: impl AsyncFnMut(&str) -> Result<(), ClientError>) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for n in names {
        match f(n).await {
            Ok(()) => println!("{n}"),
            Err(ClientError::Api { message, .. }) => failed.push(message),
            Err(e) => return Err(e.into()),
        }
    }
    if failed.is_empty() { Ok(()) } else { anyhow::bail!("{}", failed.join("; ")) }
}

/// Runs a container verb; returns the process exit code to use.
pub async fn run(c: &Client, cmd: Cmd, format: Format) -> anyhow::Result<i32> {
    match cmd {
        Cmd::Run(a) => {
            let body = create_body(&a)?;
            let q = a.name.as_deref().map(|n| format!("?name={}", path_escape(n))).unwrap_or_default();
            let created = c.call(Method::POST, &format!("/containers/create{q}"), Some(&body)).await?;
            let id = s(&created, "Id").to_owned();
            let started = c.call(Method::POST, &format!("/containers/{id}/start"), None).await;
            if let Err(e) = started {
                if a.rm {
                    let _ = c.call(Method::DELETE, &format!("/containers/{id}?force=true"), None).await;
                }
                return Err(e.into());
            }
            if a.detach {
                println!("{id}");
                return Ok(0);
            }
            let mut demux = Demux::default();
            c.stream(Method::GET, &format!("/containers/{id}/logs?follow=1&stdout=1&stderr=1"), None, |d| {
                demux.feed(d)
            })
            .await?;
            let w = c.call(Method::POST, &format!("/containers/{id}/wait"), None).await?;
            if a.rm {
                c.call(Method::DELETE, &format!("/containers/{id}?v=true"), None).await?;
            }
            Ok(w["StatusCode"].as_i64().unwrap_or(1) as i32)
        }
        Cmd::Ps { all, quiet } => {
            let v = c.get(&format!("/containers/json?all={all}")).await?;
            if format == Format::Json {
                print_json(&v);
                return Ok(0);
            }
            let list = v.as_array().cloned().unwrap_or_default();
            if quiet {
                list.iter().for_each(|x| println!("{}", &s(x, "Id")[..12.min(s(x, "Id").len())]));
                return Ok(0);
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|x| {
                    let cmd = s(x, "Command");
                    let cmd = if cmd.chars().count() > 20 {
                        format!("\"{}…\"", cmd.chars().take(19).collect::<String>())
                    } else {
                        format!("\"{cmd}\"")
                    };
                    let age = now - x["Created"].as_i64().unwrap_or(now);
                    let ports: Vec<String> = x["Ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| format!("{}:{}->{}/{}", s(p, "IP"), p["PublicPort"], p["PrivatePort"], s(p, "Type")))
                        .collect();
                    vec![
                        s(x, "Id").chars().take(12).collect(),
                        s(x, "Image").into(),
                        cmd,
                        format!("{age}s ago"),
                        s(x, "Status").into(),
                        ports.join(", "),
                        x["Names"][0].as_str().unwrap_or("").trim_start_matches('/').to_owned(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(&["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], &rows)
            );
            Ok(0)
        }
        Cmd::Start { containers } => {
            each(&containers, async |n| {
                c.call(Method::POST, &format!("/containers/{}/start", path_escape(n)), None).await.map(|_| ())
            })
            .await?;
            Ok(0)
        }
        Cmd::Stop { time, containers } => {
            let t = time.map(|t| format!("?t={t}")).unwrap_or_default();
            each(&containers, async |n| {
                c.call(Method::POST, &format!("/containers/{}/stop{t}", path_escape(n)), None).await.map(|_| ())
            })
            .await?;
            Ok(0)
        }
        Cmd::Restart { time, containers } => {
            let t = time.map(|t| format!("?t={t}")).unwrap_or_default();
            each(&containers, async |n| {
                c.call(Method::POST, &format!("/containers/{}/restart{t}", path_escape(n)), None).await.map(|_| ())
            })
            .await?;
            Ok(0)
        }
        Cmd::Kill { signal, containers } => {
            let sig = path_escape(&signal);
            each(&containers, async |n| {
                c.call(Method::POST, &format!("/containers/{}/kill?signal={sig}", path_escape(n)), None)
                    .await
                    .map(|_| ())
            })
            .await?;
            Ok(0)
        }
        Cmd::Rm { force, volumes, containers } => {
            each(&containers, async |n| {
                c.call(Method::DELETE, &format!("/containers/{}?force={force}&v={volumes}", path_escape(n)), None)
                    .await
                    .map(|_| ())
            })
            .await?;
            Ok(0)
        }
        Cmd::Logs { follow, tail, timestamps, container } => {
            let mut q = format!("stdout=1&stderr=1&follow={follow}&timestamps={timestamps}");
            if let Some(t) = tail {
                q.push_str(&format!("&tail={}", path_escape(&t)));
            }
            let mut demux = Demux::default();
            c.stream(Method::GET, &format!("/containers/{}/logs?{q}", path_escape(&container)), None, |d| {
                demux.feed(d)
            })
            .await?;
            Ok(0)
        }
        Cmd::Exec { user, workdir, env, container, cmd } => {
            let body = json!({
                "Cmd": cmd, "Env": env, "User": user.unwrap_or_default(), "WorkingDir": workdir.unwrap_or_default(),
                "AttachStdout": true, "AttachStderr": true,
            });
            let e = c.call(Method::POST, &format!("/containers/{}/exec", path_escape(&container)), Some(&body)).await?;
            let id = s(&e, "Id").to_owned();
            let mut demux = Demux::default();
            c.stream(Method::POST, &format!("/exec/{id}/start"), Some(&json!({ "Detach": false })), |d| demux.feed(d))
                .await?;
            let info = c.get(&format!("/exec/{id}/json")).await?;
            Ok(info["ExitCode"].as_i64().unwrap_or(1) as i32)
        }
        Cmd::Inspect { names } => {
            let mut found = Vec::new();
            let mut failed = Vec::new();
            for n in &names {
                let e = path_escape(n);
                let mut hit = None;
                for p in [
                    format!("/containers/{e}/json"),
                    format!("/images/{n}/json"),
                    format!("/networks/{e}"),
                    format!("/volumes/{e}"),
                ] {
                    if let Ok(v) = c.get(&p).await {
                        hit = Some(v);
                        break;
                    }
                }
                match hit {
                    Some(v) => found.push(v),
                    None => failed.push(format!("No such object: {n}")),
                }
            }
            print_json(&Value::Array(found));
            if failed.is_empty() { Ok(0) } else { anyhow::bail!("{}", failed.join("; ")) }
        }
        Cmd::Wait { containers } => {
            let mut last = 0;
            for n in &containers {
                let w = c.call(Method::POST, &format!("/containers/{}/wait", path_escape(n)), None).await?;
                last = w["StatusCode"].as_i64().unwrap_or(1) as i32;
                println!("{last}");
            }
            let _ = last;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("4096").unwrap(), 4096);
        assert!(parse_memory("lots").is_err());
    }

    #[test]
    fn run_body_has_docker_shapes() {
        let a = RunArgs {
            detach: false,
            rm: true,
            name: None,
            env: vec!["A=1".into()],
            volumes: vec!["v1:/d".into()],
            workdir: None,
            user: None,
            entrypoint: None,
            hostname: None,
            network: "front".into(),
            ip: Some("10.1.0.5".into()),
            aliases: vec!["web".into()],
            publish: vec!["8080:80".into(), "127.0.0.1::53/udp".into(), "9000-9001:9000-9001".into()],
            publish_all: true,
            expose: vec!["7000".into()],
            dns: vec!["192.0.2.53".into()],
            dns_search: vec![],
            dns_option: vec!["ndots:2".into()],
            memory: Some("64m".into()),
            cpus: Some(0.5),
            pids_limit: Some(10),
            restart: Some("on-failure:3".into()),
            labels: vec![],
            image: "busybox".into(),
            cmd: vec!["echo".into(), "hi".into()],
        };
        let b = create_body(&a).unwrap();
        assert_eq!(b["HostConfig"]["NanoCpus"], 500_000_000);
        assert_eq!(b["HostConfig"]["Dns"], json!(["192.0.2.53"]));
        assert_eq!(b["HostConfig"]["DnsOptions"], json!(["ndots:2"]));
        assert_eq!(b["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3);
        assert_eq!(b["Cmd"], json!(["echo", "hi"]));
        let pb = &b["HostConfig"]["PortBindings"];
        assert_eq!(pb["80/tcp"], json!([{ "HostIp": "", "HostPort": "8080" }]));
        assert_eq!(pb["53/udp"], json!([{ "HostIp": "127.0.0.1", "HostPort": "" }]));
        assert_eq!(pb["9001/tcp"][0]["HostPort"], "9001");
        assert!(b["ExposedPorts"]["7000/tcp"].is_object());
        assert_eq!(b["NetworkingConfig"]["EndpointsConfig"]["front"]["IPAMConfig"]["IPv4Address"], "10.1.0.5");
        for bad in ["80/sctp", "x:80", "1:2:3:4", "9000-9002:80-81", "0"] {
            assert!(publish_bindings(&[bad.into()], &[]).is_err(), "{bad}");
        }
    }
}
