//! The pure half of container creation: Docker's `POST /containers/create`
//! body (`Config` + `HostConfig`) turned into a validated [`ContainerSpec`],
//! or a clear error naming the bad field. Nothing here touches the system.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A refused container configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("invalid container name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    #[error("invalid mount config: {0}")]
    BadMount(String),
    #[error("invalid {field}: {message}")]
    BadValue { field: &'static str, message: String },
    #[error("network mode {0} is not supported yet: use a network name, none or host")]
    Network(String),
}

fn bad(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError::BadValue { field, message: message.into() }
}

/// What a mount brings into the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named volume (created on first use).
    Volume,
    /// A fresh tmpfs.
    Tmpfs,
}

/// One mount of the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub kind: MountKind,
    /// Host path (bind), volume name (volume; empty = anonymous), or empty (tmpfs).
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
    /// tmpfs size in bytes (0 = kernel default).
    pub tmpfs_size: u64,
}

/// `--restart` policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure {
        max_retries: u32,
    },
    Always,
    UnlessStopped,
}

/// Network mode of a container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    None,
    Host,
    /// Its own network namespace with endpoints netd makes (bridge networks).
    Bridge,
}

/// Resource limits; `None` = unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPU quota in billionths of a CPU (Docker's `NanoCpus`).
    pub nano_cpus: Option<u64>,
    pub pids: Option<u64>,
}

/// A validated container configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub image: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub hostname: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<MountSpec>,
    pub network: NetworkMode,
    /// Networks to join (`NetworkMode::Bridge`), the primary one first.
    #[serde(default)]
    pub networks: Vec<super::netspec::NetworkRequest>,
    /// Ports to publish when running.
    #[serde(default)]
    pub ports: Vec<super::netspec::PortRequest>,
    /// `Config.ExposedPorts`, for inspect (and `-P`, with the image's).
    #[serde(default)]
    pub exposed: Vec<(u16, crate::firewall::Proto)>,
    /// `-P`: also publish every port the image exposes.
    #[serde(default)]
    pub publish_all: bool,
    pub limits: Limits,
    pub restart: RestartPolicy,
    pub auto_remove: bool,
    /// Signal sent by `stop` (default SIGTERM).
    pub stop_signal: i32,
    /// Seconds `stop` waits before SIGKILL (default 10).
    pub stop_timeout: u32,
    /// `--dns`: upstream resolvers instead of the node's.
    #[serde(default)]
    pub dns: Vec<std::net::IpAddr>,
    /// `--dns-search`.
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    #[serde(default)]
    pub dns_options: Vec<String>,
}

/// `HostConfig.Mounts[]` entry.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiMount {
    #[serde(rename = "Type", default)]
    pub kind: String,
    #[serde(rename = "Source", default)]
    pub source: String,
    #[serde(rename = "Target", default)]
    pub target: String,
    #[serde(rename = "ReadOnly", default)]
    pub read_only: bool,
    #[serde(rename = "TmpfsOptions", default)]
    pub tmpfs: Option<ApiTmpfs>,
}

/// `TmpfsOptions` of a mount.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiTmpfs {
    #[serde(rename = "SizeBytes", default)]
    pub size: i64,
}

/// `HostConfig.RestartPolicy`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiRestart {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "MaximumRetryCount", default)]
    pub max: i64,
}

/// The part of `HostConfig` netd understands.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiHostConfig {
    #[serde(rename = "Binds", default)]
    pub binds: Option<Vec<String>>,
    #[serde(rename = "Mounts", default)]
    pub mounts: Option<Vec<ApiMount>>,
    #[serde(rename = "Tmpfs", default)]
    pub tmpfs: Option<BTreeMap<String, String>>,
    #[serde(rename = "NetworkMode", default)]
    pub network_mode: String,
    #[serde(rename = "Memory", default)]
    pub memory: i64,
    #[serde(rename = "NanoCpus", default)]
    pub nano_cpus: i64,
    #[serde(rename = "PidsLimit", default)]
    pub pids_limit: Option<i64>,
    #[serde(rename = "RestartPolicy", default)]
    pub restart: Option<ApiRestart>,
    #[serde(rename = "AutoRemove", default)]
    pub auto_remove: bool,
    #[serde(rename = "PortBindings", default)]
    pub port_bindings: Option<BTreeMap<String, Option<Vec<super::netspec::ApiPortBinding>>>>,
    #[serde(rename = "PublishAllPorts", default)]
    pub publish_all: bool,
    #[serde(rename = "Dns", default)]
    pub dns: Option<Vec<String>>,
    #[serde(rename = "DnsSearch", default)]
    pub dns_search: Option<Vec<String>>,
    #[serde(rename = "DnsOptions", default)]
    pub dns_options: Option<Vec<String>>,
}

/// The body of `POST /containers/create` (fields netd uses; others ignored).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiCreate {
    #[serde(rename = "Image", default)]
    pub image: String,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<StringOrList>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<StringOrList>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: String,
    #[serde(rename = "User", default)]
    pub user: String,
    #[serde(rename = "Hostname", default)]
    pub hostname: String,
    #[serde(rename = "Tty", default)]
    pub tty: bool,
    #[serde(rename = "OpenStdin", default)]
    pub open_stdin: bool,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: String,
    #[serde(rename = "StopTimeout", default)]
    pub stop_timeout: Option<i64>,
    #[serde(rename = "HostConfig", default)]
    pub host_config: ApiHostConfig,
    #[serde(rename = "ExposedPorts", default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "NetworkingConfig", default)]
    pub networking: Option<super::netspec::ApiNetworkingConfig>,
}

/// Docker accepts `"Cmd": "sh"` as well as `["sh"]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) if s.is_empty() => Vec::new(),
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

/// Parses a signal by name (`TERM`, `SIGTERM`, `sigkill`) or number.
pub fn parse_signal(s: &str) -> Result<i32, SpecError> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(bad("signal", format!("{s:?} is not a signal number"))) };
    }
    let up = t.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| bad("signal", format!("{s:?} is not a signal")))
}

fn abs_target(field: &'static str, t: &str) -> Result<String, SpecError> {
    if !t.starts_with('/') || t.split('/').any(|c| c == "..") {
        return Err(SpecError::BadMount(format!("{field}: target {t:?} must be an absolute path without ..")));
    }
    if t == "/" {
        return Err(SpecError::BadMount(format!("{field}: cannot mount over /")));
    }
    Ok(t.trim_end_matches('/').to_owned())
}

/// Parses one `-v` bind spec: `host:ctr[:ro|rw]`, `vol:ctr[:ro]`, or `/ctr`.
pub fn parse_bind(b: &str) -> Result<MountSpec, SpecError> {
    let parts: Vec<&str> = b.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] => (*src, *dst, ""),
        [src, dst, mode] => (*src, *dst, *mode),
        _ => return Err(SpecError::BadMount(format!("{b:?}: expected [source:]target[:ro|rw]"))),
    };
    let read_only = match mode {
        "" | "rw" => false,
        "ro" => true,
        other => return Err(SpecError::BadMount(format!("{b:?}: unknown mode {other:?} (ro or rw)"))),
    };
    let target = abs_target("-v", dst)?;
    let kind = if src.starts_with('/') {
        MountKind::Bind
    } else if src.is_empty() || crate::volume::valid_name(src) {
        MountKind::Volume
    } else {
        return Err(SpecError::BadMount(format!("{b:?}: {src:?} is neither an absolute host path nor a volume name")));
    };
    Ok(MountSpec { kind, source: src.to_owned(), target, read_only, tmpfs_size: 0 })
}

/// `--dns`, `--dns-search`, `--dns-option`, validated (they end up in the
/// container's resolv.conf, so no spaces or line breaks get through).
#[allow(clippy::type_complexity, reason = "three plain lists")]
fn dns_settings(hc: &ApiHostConfig) -> Result<(Vec<std::net::IpAddr>, Vec<String>, Vec<String>), SpecError> {
    let mut dns = Vec::new();
    for d in hc.dns.clone().unwrap_or_default() {
        match d.parse::<std::net::IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => dns.push(ip),
            _ => return Err(bad("Dns", format!("{d:?} is not an IP address"))),
        }
    }
    let word = |field: &'static str, v: &str, max: usize| {
        if v.is_empty() || v.len() > max || v.contains(|c: char| c.is_whitespace() || c.is_control() || c == '#') {
            Err(bad(field, format!("{v:?}: expected one word of at most {max} characters")))
        } else {
            Ok(v.to_owned())
        }
    };
    let search = hc
        .dns_search
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|s| word("DnsSearch", s, 253))
        .collect::<Result<_, _>>()?;
    let options = hc
        .dns_options
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|s| word("DnsOptions", s, 64))
        .collect::<Result<_, _>>()?;
    Ok((dns, search, options))
}

impl ContainerSpec {
    /// Validates a create request.
    pub fn from_api(req: ApiCreate) -> Result<ContainerSpec, SpecError> {
        if req.image.trim().is_empty() {
            return Err(bad("Image", "an image is required"));
        }
        let hc = req.host_config;
        let (dns, dns_search, dns_options) = dns_settings(&hc)?;
        let mut mounts = Vec::new();
        for b in hc.binds.unwrap_or_default() {
            mounts.push(parse_bind(&b)?);
        }
        for m in hc.mounts.unwrap_or_default() {
            let target = abs_target("--mount", &m.target)?;
            let kind = match m.kind.as_str() {
                "bind" if m.source.starts_with('/') => MountKind::Bind,
                "bind" => {
                    return Err(SpecError::BadMount(format!("bind source {:?} must be an absolute path", m.source)));
                }
                "volume" if m.source.is_empty() || crate::volume::valid_name(&m.source) => MountKind::Volume,
                "volume" => return Err(SpecError::BadMount(format!("invalid volume name {:?}", m.source))),
                "tmpfs" if m.source.is_empty() => MountKind::Tmpfs,
                "tmpfs" => return Err(SpecError::BadMount("a tmpfs mount takes no source".into())),
                other => {
                    return Err(SpecError::BadMount(format!(
                        "mount type {other:?} is not supported: bind, volume or tmpfs"
                    )));
                }
            };
            let size = m.tmpfs.map(|t| t.size).unwrap_or(0);
            if size < 0 {
                return Err(SpecError::BadMount(format!("tmpfs size {size} is negative")));
            }
            mounts.push(MountSpec { kind, source: m.source, target, read_only: m.read_only, tmpfs_size: size as u64 });
        }
        for (target, _opts) in hc.tmpfs.unwrap_or_default() {
            let target = abs_target("--tmpfs", &target)?;
            mounts.push(MountSpec {
                kind: MountKind::Tmpfs,
                source: String::new(),
                target,
                read_only: false,
                tmpfs_size: 0,
            });
        }
        let mut targets: Vec<&str> = mounts.iter().map(|m| m.target.as_str()).collect();
        targets.sort_unstable();
        if let Some(w) = targets.windows(2).find(|w| w[0] == w[1]) {
            return Err(SpecError::BadMount(format!("duplicate mount point: {}", w[0])));
        }
        let endpoints = req.networking.clone().and_then(|n| n.endpoints);
        let (network, networks) = match super::netspec::networks(&hc.network_mode, endpoints)? {
            None if hc.network_mode == "host" => (NetworkMode::Host, Vec::new()),
            None => (NetworkMode::None, Vec::new()),
            Some(n) => (NetworkMode::Bridge, n),
        };
        let mut exposed = Vec::new();
        for key in req.exposed_ports.clone().unwrap_or_default().keys() {
            exposed.push(super::netspec::parse_port_key(key)?);
        }
        // As dockerd: host mode discards published ports (the client warns).
        let ports = match network {
            NetworkMode::Bridge => super::netspec::ports(hc.port_bindings.clone(), hc.publish_all, &exposed)?,
            NetworkMode::None if hc.port_bindings.as_ref().is_some_and(|b| !b.is_empty()) => {
                return Err(bad("PortBindings", "conflicting options: port publishing and the none network"));
            }
            _ => Vec::new(),
        };
        let memory_bytes = match hc.memory {
            0 => None,
            m if m < 6 * 1024 * 1024 => {
                return Err(bad("Memory", format!("{m} bytes: the minimum memory limit allowed is 6MB")));
            }
            m => Some(m as u64),
        };
        let nano_cpus = match hc.nano_cpus {
            0 => None,
            n if n < 10_000_000 => {
                return Err(bad("NanoCpus", format!("{n}: the minimum is 0.01 CPU (10000000)")));
            }
            n => Some(n as u64),
        };
        let pids = match hc.pids_limit {
            None | Some(0) | Some(-1) => None,
            Some(n) if n < 0 => return Err(bad("PidsLimit", format!("{n}: use -1 or 0 for unlimited"))),
            Some(n) => Some(n as u64),
        };
        let restart = match hc.restart.unwrap_or_default() {
            ApiRestart { name, .. } if name.is_empty() || name == "no" => RestartPolicy::No,
            ApiRestart { name, max } if name == "on-failure" => {
                if max < 0 {
                    return Err(bad("RestartPolicy", format!("maximum retry count {max} cannot be negative")));
                }
                RestartPolicy::OnFailure { max_retries: max as u32 }
            }
            ApiRestart { name, max } if name == "always" || name == "unless-stopped" => {
                if max != 0 {
                    return Err(bad(
                        "RestartPolicy",
                        format!("maximum retry count cannot be used with restart policy {name:?}"),
                    ));
                }
                if name == "always" { RestartPolicy::Always } else { RestartPolicy::UnlessStopped }
            }
            ApiRestart { name, .. } => return Err(bad("RestartPolicy", format!("invalid restart policy {name:?}"))),
        };
        if hc.auto_remove && restart != RestartPolicy::No {
            return Err(bad("AutoRemove", "can't create 'AutoRemove' container with restart policy"));
        }
        if !req.working_dir.is_empty() && !req.working_dir.starts_with('/') {
            return Err(bad("WorkingDir", format!("{:?} is not an absolute path", req.working_dir)));
        }
        let env = req.env.unwrap_or_default();
        if let Some(e) = env.iter().find(|e| e.is_empty() || e.starts_with('=') || e.contains('\0')) {
            return Err(bad("Env", format!("{e:?} is not KEY=VALUE")));
        }
        if req.hostname.len() > 63
            || req.hostname.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            return Err(bad("Hostname", format!("{:?} is not a valid host name", req.hostname)));
        }
        let stop_signal = if req.stop_signal.is_empty() { 15 } else { parse_signal(&req.stop_signal)? };
        let stop_timeout = match req.stop_timeout {
            None => 10,
            Some(t) if (0..=86_400).contains(&t) => t as u32,
            Some(t) => return Err(bad("StopTimeout", format!("{t} is out of range 0..=86400 seconds"))),
        };
        Ok(ContainerSpec {
            image: req.image,
            entrypoint: req.entrypoint.map(StringOrList::into_vec).unwrap_or_default(),
            cmd: req.cmd.map(StringOrList::into_vec).unwrap_or_default(),
            env,
            working_dir: req.working_dir,
            user: req.user,
            hostname: req.hostname,
            tty: req.tty,
            open_stdin: req.open_stdin,
            labels: req.labels.unwrap_or_default(),
            mounts,
            network,
            networks,
            ports,
            exposed,
            publish_all: hc.publish_all && network == NetworkMode::Bridge,
            dns,
            dns_search,
            dns_options,
            limits: Limits { memory_bytes, nano_cpus, pids },
            restart,
            auto_remove: hc.auto_remove,
            stop_signal,
            stop_timeout,
        })
    }
}

/// Validates a container name given with `?name=` (a leading `/` is allowed).
pub fn check_name(name: &str) -> Result<String, SpecError> {
    let n = name.strip_prefix('/').unwrap_or(name);
    if crate::model::valid_name(n) && n.len() >= 2 || (n.len() == 1 && n.as_bytes()[0].is_ascii_alphanumeric()) {
        Ok(n.to_owned())
    } else {
        Err(SpecError::BadName(name.to_owned()))
    }
}
