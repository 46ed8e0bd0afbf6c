//! `netctl lb`: the node's service load balancer (netd's `/lb` endpoints):
//! create or replace a service, change one backend, list services with
//! per-backend counters, inspect, remove, and list tracked flows — in the
//! spirit of `cilium-dbg service list`.

use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};

use crate::client::{Client, ClientError};
use crate::{path_escape, print_json, s, table};

#[derive(Subcommand, Debug)]
pub(crate) enum LbCmd {
    /// Create a service, or replace the one of that name
    Create {
        name: String,
        /// Virtual IP clients connect to
        #[arg(long)]
        vip: String,
        /// PORT[:TARGET][/tcp|/udp] (repeatable); TARGET defaults to PORT
        #[arg(short = 'p', long = "port", required = true)]
        ports: Vec<String>,
        /// ADDR[,weight=N][,state=active|draining|gone] (repeatable)
        #[arg(short = 'b', long = "backend")]
        backends: Vec<String>,
        /// NODEPORT:PORT[/tcp|/udp][,mode=snat|preserve] (repeatable): the
        /// service's PORT also answers on NODEPORT of the node's addresses;
        /// backends see the node (snat, the default) or the client (preserve)
        #[arg(long = "publish")]
        publish: Vec<String>,
    },
    /// Change one backend of a service (add it if new)
    Backend {
        service: String,
        /// ADDR[,weight=N][,state=active|draining|gone]
        backend: String,
    },
    /// List services, one row per backend, with what the datapath counted
    #[command(alias = "list")]
    Ls,
    /// Show services in detail (JSON)
    Inspect {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Remove services
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// List the flows the datapath tracks (client, VIP, backend)
    Conntrack {
        /// At most this many flows
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// `PORT[:TARGET][/PROTO]` as the API's port object.
pub(crate) fn parse_port(spec: &str) -> anyhow::Result<Value> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    if !matches!(proto, "tcp" | "udp") {
        anyhow::bail!("port {spec:?}: protocol {proto:?} is not tcp or udp");
    }
    let (port, target) = ports.split_once(':').unwrap_or((ports, ports));
    let num = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow::anyhow!("port {spec:?}: {p:?} is not a port number (1-65535)"))
    };
    Ok(json!({"Protocol": proto, "Port": num(port)?, "TargetPort": num(target)?}))
}

/// Applies `NODEPORT:PORT[/PROTO][,mode=M]` to the matching port object.
pub(crate) fn apply_publish(ports: &mut [Value], spec: &str) -> anyhow::Result<()> {
    let (head, mode) = match spec.split_once(',') {
        None => (spec, None),
        Some((h, "mode=snat")) => (h, Some("snat")),
        Some((h, "mode=preserve")) => (h, Some("preserve")),
        Some((_, other)) => anyhow::bail!("publish {spec:?}: {other:?} is not mode=snat or mode=preserve"),
    };
    let (ports_part, proto) = head.split_once('/').unwrap_or((head, "tcp"));
    let Some((node, port)) = ports_part.split_once(':') else {
        anyhow::bail!("publish {spec:?}: expected NODEPORT:PORT");
    };
    let num = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow::anyhow!("publish {spec:?}: {p:?} is not a port number (1-65535)"))
    };
    let (node, port) = (num(node)?, num(port)?);
    let target = ports
        .iter_mut()
        .find(|p| p["Port"] == json!(port) && p["Protocol"] == json!(proto))
        .ok_or_else(|| anyhow::anyhow!("publish {spec:?}: the service has no port {port}/{proto} (give it with -p)"))?;
    target["PublishedPort"] = json!(node);
    if let Some(m) = mode {
        target["PublishMode"] = json!(m);
    }
    Ok(())
}

/// `ADDR[,weight=N][,state=S]` as the API's backend object.
pub(crate) fn parse_backend(spec: &str) -> anyhow::Result<Value> {
    let mut parts = spec.split(',');
    let addr = parts.next().unwrap_or("");
    addr.parse::<std::net::Ipv4Addr>()
        .map_err(|_| anyhow::anyhow!("backend {spec:?}: {addr:?} is not an IPv4 address"))?;
    let mut b = json!({"Addr": addr});
    for kv in parts {
        match kv.split_once('=') {
            Some(("weight", w)) => {
                let w: u32 =
                    w.parse().map_err(|_| anyhow::anyhow!("backend {spec:?}: weight {w:?} is not a number"))?;
                b["Weight"] = json!(w);
            }
            Some(("state", st @ ("active" | "draining" | "gone"))) => b["State"] = json!(st),
            Some(("state", st)) => anyhow::bail!("backend {spec:?}: state {st:?} is not active, draining or gone"),
            _ => anyhow::bail!("backend {spec:?}: {kv:?} is not weight=N or state=S"),
        }
    }
    Ok(b)
}

/// The service as the API takes it back (counters and times dropped).
fn request_of(v: &Value) -> Value {
    let backends: Vec<Value> = v["Backends"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| json!({"Addr": b["Addr"], "Weight": b["Weight"], "State": b["State"]}))
        .collect();
    json!({"Name": v["Name"], "VIP": v["VIP"], "Ports": v["Ports"], "Backends": backends})
}

fn ports_text(v: &Value) -> String {
    let ports: Vec<String> = v["Ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let (port, target) = (&p["Port"], &p["TargetPort"]);
            let mut t = if port == target {
                format!("{port}/{}", s(p, "Protocol"))
            } else {
                format!("{port}->{target}/{}", s(p, "Protocol"))
            };
            if let Some(n) = p["PublishedPort"].as_u64() {
                t.push_str(&format!(" (*:{n} {})", s(p, "PublishMode")));
            }
            t
        })
        .collect();
    ports.join(",")
}

pub(crate) async fn run(c: &Client, cmd: LbCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        LbCmd::Create { name, vip, ports, backends, publish } => {
            let mut ports = ports.iter().map(|p| parse_port(p)).collect::<anyhow::Result<Vec<_>>>()?;
            for p in &publish {
                apply_publish(&mut ports, p)?;
            }
            let backends = backends.iter().map(|b| parse_backend(b)).collect::<anyhow::Result<Vec<_>>>()?;
            let body = json!({"Name": name, "VIP": vip, "Ports": ports, "Backends": backends});
            let v = c.call(Method::POST, "/lb/services", Some(&body)).await?;
            println!("{}", s(&v, "Name"));
        }
        LbCmd::Backend { service, backend } => {
            let b = parse_backend(&backend)?;
            let cur = c.get(&format!("/lb/services/{}", path_escape(&service))).await?;
            let mut req = request_of(&cur);
            let list = req["Backends"].as_array_mut().expect("an array");
            match list.iter_mut().find(|x| x["Addr"] == b["Addr"]) {
                Some(x) => {
                    for k in ["Weight", "State"] {
                        if !b[k].is_null() {
                            x[k] = b[k].clone();
                        }
                    }
                }
                None => list.push(b),
            }
            c.call(Method::POST, "/lb/services", Some(&req)).await?;
            println!("{service}");
        }
        LbCmd::Ls => {
            let v = c.get("/lb/services").await?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let mut rows = Vec::new();
            for svc in v.as_array().into_iter().flatten() {
                let head = vec![s(svc, "Name").to_owned(), s(svc, "VIP").to_owned(), ports_text(svc)];
                let backends = svc["Backends"].as_array().cloned().unwrap_or_default();
                if backends.is_empty() {
                    rows.push([head.clone(), vec!["-".into(); 6]].concat());
                }
                for b in backends {
                    let st = &b["Stats"];
                    rows.push(
                        [
                            head.clone(),
                            vec![
                                s(&b, "Addr").to_owned(),
                                s(&b, "State").to_owned(),
                                b["Weight"].to_string(),
                                st["Flows"].to_string(),
                                st["Packets"].to_string(),
                                st["Bytes"].to_string(),
                            ],
                        ]
                        .concat(),
                    );
                }
            }
            let header = ["SERVICE", "VIP", "PORTS", "BACKEND", "STATE", "WEIGHT", "FLOWS", "PACKETS", "BYTES"];
            print!("{}", table::render(&header, &rows));
        }
        LbCmd::Inspect { services } => {
            crate::inspect_all(c, services.iter().map(|n| format!("/lb/services/{}", path_escape(n)))).await?;
        }
        LbCmd::Rm { services } => {
            crate::each(&services, |n| async move {
                c.call(Method::DELETE, &format!("/lb/services/{}", path_escape(&n)), None).await?;
                Ok::<_, ClientError>(Some(n))
            })
            .await?;
        }
        LbCmd::Conntrack { limit } => {
            let v = c.get(&format!("/lb/conntrack?limit={limit}")).await?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["Flows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| ["Protocol", "Client", "Service", "Backend"].iter().map(|k| s(f, k).to_owned()).collect())
                .collect();
            print!("{}", table::render(&["PROTO", "CLIENT", "SERVICE", "BACKEND"], &rows));
            let total = v["Total"].as_u64().unwrap_or(0);
            if total > rows.len() as u64 {
                println!("({} of {total} flows; --limit shows more)", rows.len());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_marks_the_matching_port() {
        let mut ports = vec![parse_port("80:8080").unwrap(), parse_port("53/udp").unwrap()];
        apply_publish(&mut ports, "30080:80").unwrap();
        apply_publish(&mut ports, "30053:53/udp,mode=preserve").unwrap();
        assert_eq!(ports[0]["PublishedPort"], 30080);
        assert!(ports[0].get("PublishMode").is_none(), "the daemon's default (snat)");
        assert_eq!((&ports[1]["PublishedPort"], &ports[1]["PublishMode"]), (&json!(30053), &json!("preserve")));
        for (bad, why) in [
            ("30080", "expected NODEPORT:PORT"),
            ("30080:81", "no port 81/tcp"),
            ("30080:80,mode=dsr", "not mode=snat or mode=preserve"),
            ("0:80", "not a port number"),
        ] {
            let e = apply_publish(&mut ports, bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn ports_and_backends_parse_or_say_why() {
        assert_eq!(parse_port("80").unwrap(), json!({"Protocol":"tcp","Port":80,"TargetPort":80}));
        assert_eq!(parse_port("80:8080/udp").unwrap(), json!({"Protocol":"udp","Port":80,"TargetPort":8080}));
        for (bad, why) in
            [("0", "not a port"), ("80/sctp", "not tcp or udp"), ("80:x", "not a port"), ("", "not a port")]
        {
            let e = parse_port(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(
            parse_backend("10.0.0.2,weight=3,state=draining").unwrap(),
            json!({"Addr":"10.0.0.2","Weight":3,"State":"draining"})
        );
        for (bad, why) in [
            ("10.0.0", "not an IPv4 address"),
            ("10.0.0.2,weight=x", "not a number"),
            ("10.0.0.2,state=dead", "not active, draining or gone"),
            ("10.0.0.2,color=red", "not weight=N or state=S"),
        ] {
            let e = parse_backend(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
