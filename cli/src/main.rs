//! `netctl`: the command-line client of netd. Thin: every command is one or a
//! few API calls, rendered as docker renders them (tables), or as the raw JSON
//! with `--format json`. Failures print one line and exit 1.

mod client;
mod containers;
mod lb;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hyper::Method;
use serde_json::{Value, json};

use client::{Client, ClientError, DEFAULT_HOST};

#[derive(Parser, Debug)]
#[command(name = "netctl", version, about = "Command-line client of netd")]
struct Cli {
    /// Daemon socket to talk to
    #[arg(short = 'H', long = "host", env = "NETD_HOST", default_value = DEFAULT_HOST, global = true)]
    host: String,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show system-wide information
    Info,
    /// Show the netctl and netd versions
    Version,
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCmd),
    /// Manage volumes
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Cluster members (gossip)
    #[command(subcommand)]
    Node(NodeCmd),
    /// Service load balancer (eBPF): services, backends, tracked flows
    #[command(subcommand)]
    Lb(lb::LbCmd),
    /// This node's gossip encryption keys (rotation)
    #[command(subcommand)]
    Key(KeyCmd),
    #[command(flatten)]
    Container(Box<containers::Cmd>),
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// List the keys (fingerprints; the primary one encrypts)
    #[command(alias = "list")]
    Ls,
    /// Add a key used to decrypt (base64, as `serf keygen` prints it)
    Install { key: String },
    /// Make an installed key the one that encrypts
    Use { key: String },
    /// Remove a key that is not the primary one
    #[command(alias = "rm")]
    Remove { key: String },
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// List the cluster's members as this node sees them
    #[command(alias = "list")]
    Ls,
}

#[derive(Subcommand, Debug)]
enum VolumeCmd {
    /// Create a volume (a random name if none is given)
    Create {
        name: Option<String>,
        /// Volume label KEY=VALUE
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        /// Only show volume names
        #[arg(short, long)]
        quiet: bool,
    },
    /// Display detailed information on one or more volumes
    Inspect {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused anonymous volumes (all unused ones with --all)
    Prune {
        #[arg(short, long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// List images
    #[command(alias = "list")]
    Ls {
        /// Only show image ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// Display detailed information on one or more images
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove one or more images
    #[command(alias = "remove")]
    Rm {
        /// Remove an image even if it has several tags
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import a rootfs (a directory, or a tar / tar.gz file) as image NAME[:TAG]
    Import {
        name: String,
        source: std::path::PathBuf,
        /// Dockerfile instruction for the image config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR)
        #[arg(short, long = "change")]
        changes: Vec<String>,
        /// Commit message
        #[arg(short, long)]
        message: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum NetworkCmd {
    /// List networks
    #[command(alias = "list")]
    Ls {
        /// Filter output, KEY=VALUE (driver, id, label, name, scope, type, dangling)
        #[arg(short, long = "filter")]
        filter: Vec<String>,
        /// Only show network ids
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate ids
        #[arg(long)]
        no_trunc: bool,
    },
    /// Display detailed information on one or more networks
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Create a network
    Create {
        name: String,
        /// Driver to manage the network
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Restrict external access to the network
        #[arg(long)]
        internal: bool,
        /// Enable manual container attachment
        #[arg(long)]
        attachable: bool,
        /// Network label KEY=VALUE
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Subnet in CIDR form (default: the next free local pool)
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address (default: the subnet's first address)
        #[arg(long)]
        gateway: Option<String>,
        /// Allocate container addresses from this sub-range
        #[arg(long)]
        ip_range: Option<String>,
        /// Driver option KEY=VALUE (mtu=N, com.docker.network.bridge.name=NAME)
        #[arg(short, long = "opt")]
        opts: Vec<String>,
    },
    /// Connect a container to a network
    Connect {
        network: String,
        container: String,
        /// Static IPv4 address
        #[arg(long)]
        ip: Option<String>,
        /// Extra DNS name on the network
        #[arg(long = "alias")]
        aliases: Vec<String>,
    },
    /// Disconnect a container from a network
    Disconnect {
        network: String,
        container: String,
        #[arg(short, long)]
        force: bool,
    },
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

pub(crate) fn path_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn filters_query(pairs: &[String]) -> anyhow::Result<String> {
    if pairs.is_empty() {
        return Ok(String::new());
    }
    let mut m = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| anyhow::anyhow!("invalid filter {p:?}: expected KEY=VALUE"))?;
        if let Some(a) = m.entry(k.to_owned()).or_insert_with(|| json!([])).as_array_mut() {
            a.push(json!(v));
        }
    }
    Ok(format!("?filters={}", path_escape(&Value::Object(m).to_string())))
}

pub(crate) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// `netctl info`'s line for the eBPF load balancer.
fn lb_line(lb: &Value) -> String {
    if lb["Loaded"] != json!(true) {
        return format!("off ({})", s(lb, "Error"));
    }
    let n = |k: &str| lb[k].as_array().map_or(0, Vec::len);
    let published: Vec<&str> = lb["PublishedOn"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let count = |k: u64, one: &str| format!("{k} {one}{}", if k == 1 { "" } else { "s" });
    format!(
        "eBPF, {}, on {}, published ports on {}",
        count(lb["Services"].as_u64().unwrap_or(0), "service"),
        count(n("Interfaces") as u64, "interface"),
        if published.is_empty() { "none".to_owned() } else { published.join(", ") }
    )
}

pub(crate) fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    let c = Client::new(&cli.host)?;
    let json_out = cli.format == Format::Json;
    match cli.command {
        Command::Version => {
            let v = c.get("/version").await;
            if json_out {
                print_json(&json!({ "Client": { "Version": env!("CARGO_PKG_VERSION") }, "Server": v? }));
                return Ok(0);
            }
            println!("Client:\n Version:       {}", env!("CARGO_PKG_VERSION"));
            let v = v?;
            println!("\nServer: {}", s(&v["Platform"], "Name"));
            println!(" Version:       {}", s(&v, "Version"));
            println!(" API version:   {} (minimum version {})", s(&v, "ApiVersion"), s(&v, "MinAPIVersion"));
            println!(" Built with:    {}", s(&v, "GoVersion"));
            println!(" Git commit:    {}", s(&v, "GitCommit"));
            println!(" OS/Arch:       {}/{}", s(&v, "Os"), s(&v, "Arch"));
            println!(" Kernel:        {}", s(&v, "KernelVersion"));
        }
        Command::Info => {
            let v = c.get("/info").await?;
            if json_out {
                print_json(&v);
                return Ok(0);
            }
            let r = &v["Netd"]["Reconcile"];
            let drivers = v["Plugins"]["Network"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            let reconcile = format!(
                "{} passes, last one changed {} objects, every {}s{}",
                r["Passes"],
                r["LastChanges"],
                r["IntervalSeconds"],
                r["LastError"].as_str().map(|e| format!(", last error: {e}")).unwrap_or_default()
            );
            let rows: Vec<(&str, String)> = vec![
                ("Server Version", s(&v, "ServerVersion").into()),
                ("Name", s(&v, "Name").into()),
                ("ID", s(&v, "ID").into()),
                ("Data Root", s(&v, "DockerRootDir").into()),
                ("Exec Root", s(&v["Netd"], "ExecRoot").into()),
                ("BPF Root", s(&v["Netd"], "BpfRoot").into()),
                ("Network Drivers", drivers),
                ("Swarm", s(&v["Swarm"], "LocalNodeState").into()),
                ("Reconcile", reconcile),
                ("Load Balancer", lb_line(&v["Netd"]["LoadBalancer"])),
                ("Kernel Version", s(&v, "KernelVersion").into()),
                ("Operating System", s(&v, "OperatingSystem").into()),
                ("CPUs", v["NCPU"].to_string()),
                ("Total Memory", format!("{:.2} GiB", v["MemTotal"].as_f64().unwrap_or(0.0) / (1u64 << 30) as f64)),
            ];
            for (k, val) in rows {
                println!("{:<18}{val}", format!("{k}:"));
            }
            if let Some(labels) = v["Labels"].as_array().filter(|a| !a.is_empty()) {
                println!("Labels:");
                for l in labels {
                    println!("  {}", l.as_str().unwrap_or(""));
                }
            }
            for w in v["Warnings"].as_array().into_iter().flatten() {
                eprintln!("{}", w.as_str().unwrap_or(""));
            }
        }
        Command::Node(NodeCmd::Ls) => {
            let v = c.get("/nodes").await?;
            if json_out {
                print_json(&v);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    let d = &n["Netd"];
                    let me = if d["Self"].as_bool() == Some(true) { " *" } else { "" };
                    vec![
                        s(n, "ID").chars().take(12).collect::<String>(),
                        format!("{}{me}", s(d, "Name")),
                        s(d, "Address").to_owned(),
                        s(d, "State").to_owned(),
                        d["Incarnation"].to_string(),
                        if d["Health"].is_null() { "-".into() } else { d["Health"].to_string() },
                    ]
                })
                .collect();
            print!("{}", table::render(&["ID", "NAME", "ADDRESS", "STATE", "INCARNATION", "HEALTH"], &rows));
        }
        Command::Network(cmd) => network(&c, cmd, json_out).await?,
        Command::Image(cmd) => image(&c, cmd, json_out).await?,
        Command::Volume(cmd) => volume(&c, cmd, json_out).await?,
        Command::Lb(cmd) => lb::run(&c, cmd, json_out).await?,
        Command::Key(cmd) => {
            let v = match cmd {
                KeyCmd::Ls => c.get("/gossip/keys").await?,
                KeyCmd::Install { key } => {
                    c.call(Method::POST, "/gossip/keys/install", Some(&json!({"Key": key}))).await?
                }
                KeyCmd::Use { key } => c.call(Method::POST, "/gossip/keys/use", Some(&json!({"Key": key}))).await?,
                KeyCmd::Remove { key } => {
                    c.call(Method::POST, "/gossip/keys/remove", Some(&json!({"Key": key}))).await?
                }
            };
            if json_out {
                print_json(&v);
                return Ok(0);
            }
            if v["Encrypted"] != json!(true) {
                println!("gossip encryption is off on this node");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = v["Keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| {
                    let primary = if k["Primary"] == json!(true) { "primary" } else { "" };
                    vec![s(k, "Fingerprint").to_owned(), k["Bits"].to_string(), primary.to_owned()]
                })
                .collect();
            print!("{}", table::render(&["FINGERPRINT", "BITS", "ROLE"], &rows));
        }
        Command::Container(cmd) => return containers::run(&c, *cmd, cli.format).await,
    }
    Ok(0)
}

async fn network(c: &Client, cmd: NetworkCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        NetworkCmd::Ls { filter, quiet, no_trunc } => {
            let v = c.get(&format!("/networks{}", filters_query(&filter)?)).await?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let nets = v.as_array().cloned().unwrap_or_default();
            let id = |n: &Value| {
                let id = s(n, "Id").to_owned();
                if no_trunc { id } else { id.chars().take(12).collect() }
            };
            if quiet {
                for n in &nets {
                    println!("{}", id(n));
                }
                return Ok(());
            }
            let rows: Vec<Vec<String>> = nets
                .iter()
                .map(|n| vec![id(n), s(n, "Name").into(), s(n, "Driver").into(), s(n, "Scope").into()])
                .collect();
            print!("{}", table::render(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows));
        }
        NetworkCmd::Inspect { networks } => {
            inspect_all(c, networks.iter().map(|n| format!("/networks/{}", path_escape(n)))).await?;
        }
        NetworkCmd::Create { name, driver, internal, attachable, labels, subnet, gateway, ip_range, opts } => {
            let mut l = serde_json::Map::new();
            for kv in &labels {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                l.insert(k.to_owned(), json!(v));
            }
            let mut o = serde_json::Map::new();
            for kv in &opts {
                let Some((k, v)) = kv.split_once('=') else {
                    anyhow::bail!("invalid --opt {kv:?}: expected KEY=VALUE")
                };
                o.insert(k.to_owned(), json!(v));
            }
            let config = match subnet {
                Some(s) => {
                    json!([{ "Subnet": s, "Gateway": gateway.unwrap_or_default(), "IPRange": ip_range.unwrap_or_default() }])
                }
                None if gateway.is_some() || ip_range.is_some() => {
                    anyhow::bail!("--gateway and --ip-range need --subnet")
                }
                None => json!([]),
            };
            let body = json!({
                "Name": name, "Driver": driver, "Internal": internal, "Attachable": attachable, "Labels": l,
                "Options": o, "IPAM": { "Driver": "default", "Config": config },
            });
            let v = c.call(Method::POST, "/networks/create", Some(&body)).await?;
            println!("{}", s(&v, "Id"));
        }
        NetworkCmd::Connect { network, container, ip, aliases } => {
            let mut ep = json!({ "Aliases": aliases });
            if let Some(ip) = ip {
                ep["IPAMConfig"] = json!({ "IPv4Address": ip });
            }
            let body = json!({ "Container": container, "EndpointConfig": ep });
            c.call(Method::POST, &format!("/networks/{}/connect", path_escape(&network)), Some(&body)).await?;
        }
        NetworkCmd::Disconnect { network, container, force } => {
            let body = json!({ "Container": container, "Force": force });
            c.call(Method::POST, &format!("/networks/{}/disconnect", path_escape(&network)), Some(&body)).await?;
        }
        NetworkCmd::Rm { networks } => {
            let mut failed = Vec::new();
            for n in &networks {
                match c.call(Method::DELETE, &format!("/networks/{}", path_escape(n)), None).await {
                    Ok(_) => println!("{n}"),
                    Err(ClientError::Api { message, .. }) => failed.push(message),
                    Err(e) => return Err(e.into()),
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("{}", failed.join("; "));
            }
        }
    }
    Ok(())
}

/// GETs each path, prints the found objects as one JSON array (as `docker
/// inspect` does), then fails with the daemon's messages for the others.
pub(crate) async fn inspect_all(c: &Client, paths: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for p in paths {
        match c.get(&p).await {
            Ok(v) => found.push(v),
            Err(ClientError::Api { message, .. }) => failed.push(message),
            Err(e) => return Err(e.into()),
        }
    }
    print_json(&Value::Array(found));
    if failed.is_empty() { Ok(()) } else { anyhow::bail!("{}", failed.join("; ")) }
}

fn labels_json(labels: &[String]) -> Value {
    let mut l = serde_json::Map::new();
    for kv in labels {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        l.insert(k.to_owned(), json!(v));
    }
    Value::Object(l)
}

/// Runs `f` for each name; prints what succeeds, fails with all the daemon's
/// refusals at the end.
pub(crate) async fn each<F, Fut>(names: &[String], mut f: F) -> anyhow::Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, ClientError>>,
{
    let mut failed = Vec::new();
    for n in names {
        match f(n.clone()).await {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) => {}
            Err(ClientError::Api { message, .. }) => failed.push(message),
            Err(e) => return Err(e.into()),
        }
    }
    if failed.is_empty() { Ok(()) } else { anyhow::bail!("{}", failed.join("; ")) }
}

async fn volume(c: &Client, cmd: VolumeCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        VolumeCmd::Create { name, labels } => {
            let body = json!({ "Name": name.unwrap_or_default(), "Driver": "local", "Labels": labels_json(&labels) });
            let v = c.call(Method::POST, "/volumes/create", Some(&body)).await?;
            println!("{}", s(&v, "Name"));
        }
        VolumeCmd::Ls { quiet } => {
            let v = c.get("/volumes").await?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let vols = v["Volumes"].as_array().cloned().unwrap_or_default();
            if quiet {
                vols.iter().for_each(|v| println!("{}", s(v, "Name")));
                return Ok(());
            }
            let rows: Vec<Vec<String>> =
                vols.iter().map(|v| vec![s(v, "Driver").into(), s(v, "Name").into()]).collect();
            print!("{}", table::render(&["DRIVER", "VOLUME NAME"], &rows));
        }
        VolumeCmd::Inspect { volumes } => {
            inspect_all(c, volumes.iter().map(|n| format!("/volumes/{}", path_escape(n)))).await?;
        }
        VolumeCmd::Rm { volumes } => {
            each(&volumes, |n| async move {
                c.call(Method::DELETE, &format!("/volumes/{}", path_escape(&n)), None).await?;
                Ok(Some(n))
            })
            .await?;
        }
        VolumeCmd::Prune { all } => {
            let q = if all { "?filters=%7B%22all%22%3A%5B%22true%22%5D%7D" } else { "" };
            let v = c.call(Method::POST, &format!("/volumes/prune{q}"), None).await?;
            for n in v["VolumesDeleted"].as_array().into_iter().flatten() {
                println!("Deleted Volume: {}", n.as_str().unwrap_or(""));
            }
            println!("Total reclaimed space: {}", human_size(v["SpaceReclaimed"].as_u64().unwrap_or(0)));
        }
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{bytes}B") } else { format!("{v:.3}{}", units[u]).replace(".000", "") }
}

/// Whether `source` is a `docker save` archive (a tar with manifest.json).
fn is_docker_save(source: &std::path::Path) -> bool {
    let Ok(f) = std::fs::File::open(source) else { return false };
    if !f.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return false;
    }
    let mut archive = tar::Archive::new(f);
    let Ok(entries) = archive.entries() else { return false };
    entries.flatten().take(10_000).any(|e| {
        e.path()
            .map(|p| p == std::path::Path::new("manifest.json") || p == std::path::Path::new("./manifest.json"))
            .unwrap_or(false)
    })
}

/// A rootfs as tar bytes: a directory is archived (symlinks kept as links), a
/// file is sent as is (plain or gzip tar).
fn rootfs_tar(source: &std::path::Path) -> anyhow::Result<bytes::Bytes> {
    let meta = std::fs::metadata(source).map_err(|e| anyhow::anyhow!("{}: {e}", source.display()))?;
    if meta.is_dir() {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.append_dir_all(".", source).map_err(|e| anyhow::anyhow!("archiving {}: {e}", source.display()))?;
        Ok(bytes::Bytes::from(b.into_inner()?))
    } else {
        Ok(bytes::Bytes::from(std::fs::read(source).map_err(|e| anyhow::anyhow!("{}: {e}", source.display()))?))
    }
}

async fn image(c: &Client, cmd: ImageCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Ls { quiet } => {
            let v = c.get("/images/json").await?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let imgs = v.as_array().cloned().unwrap_or_default();
            let short = |i: &Value| s(i, "Id").trim_start_matches("sha256:").chars().take(12).collect::<String>();
            if quiet {
                for i in &imgs {
                    println!("{}", short(i));
                }
                return Ok(());
            }
            let mut rows = Vec::new();
            for i in &imgs {
                let tags: Vec<String> = i["RepoTags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect();
                let tags = if tags.is_empty() { vec!["<none>:<none>".to_owned()] } else { tags };
                for t in tags {
                    let (repo, tag) = t.rsplit_once(':').unwrap_or((&t, ""));
                    rows.push(vec![
                        repo.to_owned(),
                        tag.to_owned(),
                        short(i),
                        human_size(i["Size"].as_u64().unwrap_or(0)),
                    ]);
                }
            }
            print!("{}", table::render(&["REPOSITORY", "TAG", "IMAGE ID", "SIZE"], &rows));
        }
        ImageCmd::Inspect { images } => {
            inspect_all(c, images.iter().map(|i| format!("/images/{i}/json"))).await?;
        }
        ImageCmd::Rm { force, images } => {
            let mut failed = Vec::new();
            for i in &images {
                match c.call(Method::DELETE, &format!("/images/{i}?force={force}"), None).await {
                    Ok(v) => {
                        for item in v.as_array().into_iter().flatten() {
                            for (k, val) in item.as_object().into_iter().flatten() {
                                println!("{k}: {}", val.as_str().unwrap_or(""));
                            }
                        }
                    }
                    Err(ClientError::Api { message, .. }) => failed.push(message),
                    Err(e) => return Err(e.into()),
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("{}", failed.join("; "));
            }
        }
        ImageCmd::Import { name, source, changes, message } => {
            if is_docker_save(&source) {
                if !changes.is_empty() {
                    anyhow::bail!("--change applies to rootfs imports, not to `docker save` archives");
                }
                let body = bytes::Bytes::from(
                    std::fs::read(&source).map_err(|e| anyhow::anyhow!("{}: {e}", source.display()))?,
                );
                let (status, bytes) = c.send(Method::POST, "/images/load", Some(("application/x-tar", body))).await?;
                if !status.is_success() {
                    c.decode(status, bytes)?;
                    return Ok(());
                }
                let text = String::from_utf8_lossy(&bytes);
                let first = text
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter_map(|v| v["stream"].as_str().map(|s| s.trim().to_owned()))
                    .inspect(|line| println!("{line}"))
                    .filter_map(|line| line.rsplit_once(": ").map(|(_, r)| r.to_owned()))
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("the archive held no image"))?;
                let (repo, tag) = name.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or((&name, "latest"));
                let q = format!("repo={}&tag={}", path_escape(repo), path_escape(tag));
                c.call(Method::POST, &format!("/images/{first}/tag?{q}"), None).await?;
                println!("Tagged {first} as {repo}:{tag}");
                return Ok(());
            }
            let body = rootfs_tar(&source)?;
            let mut q = format!("fromSrc=-&repo={}", path_escape(&name));
            for ch in &changes {
                q.push_str(&format!("&changes={}", path_escape(ch)));
            }
            if let Some(m) = message {
                q.push_str(&format!("&message={}", path_escape(&m)));
            }
            let (status, bytes) =
                c.send(Method::POST, &format!("/images/create?{q}"), Some(("application/x-tar", body))).await?;
            let v = c.decode(status, bytes)?;
            println!("{}", s(&v, "status"));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netctl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("netctl: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_docker_json() {
        let q = filters_query(&["driver=null".into(), "name=a".into(), "name=b".into()]).unwrap();
        assert_eq!(q, "?filters=%7B%22driver%22%3A%5B%22null%22%5D%2C%22name%22%3A%5B%22a%22%2C%22b%22%5D%7D");
        assert!(filters_query(&["novalue".into()]).is_err());
    }

    #[test]
    fn cli_parses_docker_habits() {
        let c =
            Cli::try_parse_from(["netctl", "-H", "unix:///x.sock", "network", "ls", "-q", "--filter", "driver=host"])
                .unwrap();
        assert_eq!(c.host, "unix:///x.sock");
        assert!(matches!(c.command, Command::Network(NetworkCmd::Ls { quiet: true, .. })));
        assert!(Cli::try_parse_from(["netctl", "network", "inspect"]).is_err());
        assert!(Cli::try_parse_from(["netctl", "--format", "yaml", "info"]).is_err());
    }
}
