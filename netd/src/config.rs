//! Daemon configuration: command-line flags (named as dockerd's) merged over an
//! optional TOML file (`--config FILE`). Flags win over the file, the file wins
//! over the defaults. Every error names the flag or key at fault in one line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

/// Default directory for persistent state.
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/netd";
/// Default directory for runtime state (pid file, socket).
pub const DEFAULT_EXEC_ROOT: &str = "/run/netd";
/// Default API address.
pub const DEFAULT_HOST: &str = "unix:///run/netd/netd.sock";
/// Default bpffs directory for pinned eBPF maps.
pub const DEFAULT_BPF_ROOT: &str = "/sys/fs/bpf/netd";

/// A configuration problem, always naming the flag or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: line {line}: {key}{message}")]
    Parse { path: PathBuf, line: usize, key: String, message: String },
    #[error("invalid {key}: {message}")]
    Invalid { key: String, message: String },
}

/// Log verbosity, as dockerd's `--log-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The tracing filter directive for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line flags of `netd`.
#[derive(Debug, Parser, Default)]
#[command(name = "netd", version, about = "netd: container networking daemon (Docker Engine API on a unix socket)")]
pub struct Flags {
    /// Directory for persistent state (the store) [default: /var/lib/netd]
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Directory for runtime state (pid file, container state) [default: /run/netd]
    #[arg(long, value_name = "DIR")]
    pub exec_root: Option<PathBuf>,
    /// API socket to listen on, unix:///path (repeatable) [default: unix:///run/netd/netd.sock]
    #[arg(short = 'H', long = "host", value_name = "ADDR")]
    pub hosts: Vec<String>,
    /// bpffs directory where eBPF maps are pinned [default: /sys/fs/bpf/netd]
    #[arg(long, value_name = "DIR")]
    pub bpf_root: Option<PathBuf>,
    /// TOML configuration file (keys as the long flags, e.g. data-root)
    #[arg(long = "config", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Log verbosity [default: info]
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,
    /// Log format [default: text]
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Node label key=value, reported by /info (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Parent cgroup (name) for containers [default: netd]
    #[arg(long, value_name = "NAME")]
    pub cgroup_parent: Option<String>,
    /// Interface where published service ports answer (repeatable)
    /// [default: those carrying an IPv4 default route]
    #[arg(long = "lb-interface", value_name = "IFNAME")]
    pub lb_interfaces: Vec<String>,
    /// Address other nodes reach this one on (gossip), IP[:PORT] [default: the first global IPv4 address]
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// Join the cluster through this member, IP[:PORT] (repeatable)
    #[arg(long = "join", value_name = "ADDR")]
    pub join: Vec<String>,
    /// Unique node name in the cluster [default: the host name]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
}

/// The `--config` TOML file. Every key is optional; a key given as a flag too
/// is overridden by the flag. Unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// Directory for persistent state (absolute path). Default `/var/lib/netd`.
    pub data_root: Option<PathBuf>,
    /// Directory for runtime state (absolute path). Default `/run/netd`.
    pub exec_root: Option<PathBuf>,
    /// API sockets, each `unix:///absolute/path`. Default `["unix:///run/netd/netd.sock"]`.
    pub hosts: Option<Vec<String>>,
    /// bpffs directory for pinned eBPF maps (absolute path). Default `/sys/fs/bpf/netd`.
    pub bpf_root: Option<PathBuf>,
    /// `trace`, `debug`, `info`, `warn` or `error`. Default `info`.
    pub log_level: Option<LogLevel>,
    /// `text` or `json`. Default `text`.
    pub log_format: Option<LogFormat>,
    /// Node labels, `key=value` strings, reported by `/info`. Default none.
    pub labels: Option<Vec<String>>,
    /// Seconds between full reconcile passes (besides start and every change),
    /// 1..=3600. Default 30.
    pub reconcile_interval: Option<u64>,
    /// Seconds that shutdown waits for open API connections to finish, 0..=300.
    /// Default 10.
    pub shutdown_timeout: Option<u64>,
    /// Slots of each service's Maglev table: a prime, 251..=65521. Default
    /// 16381. More slots spread load more evenly over many backends.
    pub lb_table_size: Option<u32>,
    /// Parent cgroup name for containers ([a-zA-Z0-9_.-]). Default `netd`.
    pub cgroup_parent: Option<String>,
    /// Interfaces where published service ports answer. Default: those
    /// carrying an IPv4 default route.
    pub lb_interfaces: Option<Vec<String>>,
    /// Seconds an idle established TCP flow keeps its backend, 60..=604800.
    /// Default 21600 (6 h: no 900 s cliff as with IPVS).
    pub lb_tcp_established_timeout: Option<u64>,
    /// Seconds a TCP flow is kept after FIN or RST, 1..=3600. Default 10.
    pub lb_tcp_closing_timeout: Option<u64>,
    /// Seconds an idle UDP flow keeps its backend, 1..=86400. Default 120.
    pub lb_udp_timeout: Option<u64>,
    /// Whether traffic bridged between containers of one network also goes
    /// through the IP firewall hooks (br_netfilter). Default `false`: netd
    /// sets `net.bridge.bridge-nf-call-{iptables,ip6tables,arptables}` to 0 in
    /// its network namespace, since its own rules never filter inside one
    /// bridge (measured: bridge throughput 0.90 -> 0.99 of a plain veth pair,
    /// BENCHMARKS.md). `true` leaves those sysctls as they are.
    pub bridge_netfilter: Option<bool>,
    /// Cluster gossip (memberlist protocol): address other nodes reach this
    /// one on, `IP` or `IP:PORT`. Default: the first global IPv4 address, port 7946.
    pub advertise_addr: Option<String>,
    /// Members to join at start, `IP` or `IP:PORT` (retried in the background).
    /// Default none (a cluster of one until someone joins it).
    pub join: Option<Vec<String>>,
    /// Unique node name in the cluster. Default: the host name.
    pub node_name: Option<String>,
    /// Address gossip listens on (UDP and TCP), `IP:PORT`. Default `0.0.0.0:7946`.
    pub gossip_bind: Option<String>,
    /// Timer preset: `lan` (memberlist's defaults), `wan` or `local`. Default `lan`.
    pub gossip_profile: Option<String>,
    /// Gossip encryption keys, base64 (as `serf keygen` prints them), 16, 24
    /// or 32 bytes each; the first encrypts, all decrypt. Every member needs a
    /// common key; plaintext and foreign packets are dropped. Default: none
    /// (no encryption). Kept out of the flags so keys never show in `ps`.
    pub gossip_keys: Option<Vec<String>>,
    /// memberlist's label: prefixed to every gossip packet and stream (and
    /// authenticated with them when encrypted); members with another label
    /// are ignored, so clusters sharing a network stay apart. 1 to 255
    /// bytes. Default: none.
    pub gossip_label: Option<String>,
    /// Embedded DNS (127.0.0.11): TTL of its answers in seconds, 0..=3600.
    /// Default 5 (Docker's 600 keeps dead containers' addresses in caches
    /// for ten minutes).
    pub dns_ttl: Option<u32>,
    /// Embedded DNS: how long one upstream resolver gets to answer a
    /// forwarded query, in milliseconds, 50..=10000. At most 3 upstreams
    /// are tried, so a client hears back within 3x this. Default 1000.
    pub dns_upstream_timeout_ms: Option<u64>,
    /// Embedded DNS: forwarded queries in flight at once (all containers),
    /// 1..=65536; more are answered REFUSED. Default 1024.
    pub dns_max_inflight: Option<usize>,
}

/// The resolved configuration the daemon runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    /// Socket paths to serve the API on.
    pub sockets: Vec<PathBuf>,
    pub bpf_root: PathBuf,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub labels: BTreeMap<String, String>,
    pub reconcile_interval: Duration,
    pub shutdown_timeout: Duration,
    pub lb_table_size: u32,
    /// None: the interfaces of the IPv4 default routes (found at start).
    pub lb_interfaces: Option<Vec<String>>,
    /// Idle timeouts of tracked flows, per state.
    pub lb_timeouts: ebpf::datapath::Timeouts,
    pub cgroup_parent: String,
    pub bridge_netfilter: bool,
    pub gossip: GossipConfig,
    pub dns: DnsConfig,
}

/// Embedded DNS settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    pub ttl: u32,
    pub upstream_timeout: Duration,
    pub max_inflight: usize,
}

/// Cluster membership settings (see `gossip::Config` for the timers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipConfig {
    pub bind: std::net::SocketAddr,
    /// `None`: found at start (first global IPv4 address).
    pub advertise: Option<std::net::SocketAddr>,
    pub join: Vec<std::net::SocketAddr>,
    /// `None`: the host name.
    pub node_name: Option<String>,
    pub profile: GossipProfile,
    /// Decoded keys, primary first (empty: no encryption).
    pub keys: Vec<Vec<u8>>,
    /// memberlist's label (empty: none).
    pub label: String,
}

/// memberlist's timer presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GossipProfile {
    Lan,
    Wan,
    Local,
}

/// The default gossip port (memberlist's, Docker's).
pub const GOSSIP_PORT: u16 = 7946;

fn gossip_addr(key: &'static str, s: &str) -> Result<std::net::SocketAddr, ConfigError> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        if a.port() == 0 {
            return invalid(key, format!("{s:?}: port 0 is not usable"));
        }
        return Ok(a);
    }
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(std::net::SocketAddr::new(ip, GOSSIP_PORT)),
        Err(_) => invalid(key, format!("{s:?}: expected IP or IP:PORT")),
    }
}

impl Config {
    /// Reads `--config` (if any) and merges the flags over it.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config_file {
            Some(path) => parse_file(path, &read_file(path)?)?,
            None => FileConfig::default(),
        };
        Config::merge(flags, file)
    }

    /// Merges flags over a parsed file and validates the result.
    pub fn merge(flags: &Flags, file: FileConfig) -> Result<Config, ConfigError> {
        let data_root = abs_dir(
            "data-root",
            flags.data_root.clone().or(file.data_root).unwrap_or_else(|| DEFAULT_DATA_ROOT.into()),
        )?;
        let exec_root = abs_dir(
            "exec-root",
            flags.exec_root.clone().or(file.exec_root).unwrap_or_else(|| DEFAULT_EXEC_ROOT.into()),
        )?;
        let bpf_root =
            abs_dir("bpf-root", flags.bpf_root.clone().or(file.bpf_root).unwrap_or_else(|| DEFAULT_BPF_ROOT.into()))?;
        let hosts = if !flags.hosts.is_empty() {
            flags.hosts.clone()
        } else {
            file.hosts.unwrap_or_else(|| vec![DEFAULT_HOST.to_owned()])
        };
        if hosts.is_empty() {
            return invalid("host", "at least one unix:// address is needed".into());
        }
        let sockets = hosts.iter().map(|h| parse_host(h)).collect::<Result<Vec<_>, _>>()?;
        let labels_src = if !flags.labels.is_empty() { flags.labels.clone() } else { file.labels.unwrap_or_default() };
        let mut labels = BTreeMap::new();
        for l in &labels_src {
            let (k, v) = parse_label(l)?;
            labels.insert(k, v);
        }
        let reconcile_interval = file.reconcile_interval.unwrap_or(30);
        if !(1..=3600).contains(&reconcile_interval) {
            return invalid(
                "reconcile-interval",
                format!("{reconcile_interval} is out of range: expected 1..=3600 seconds"),
            );
        }
        let shutdown_timeout = file.shutdown_timeout.unwrap_or(10);
        if shutdown_timeout > 300 {
            return invalid(
                "shutdown-timeout",
                format!("{shutdown_timeout} is out of range: expected 0..=300 seconds"),
            );
        }
        let lb_table_size = file.lb_table_size.unwrap_or(ebpf::maglev::DEFAULT_SIZE);
        if !(251..=65521).contains(&lb_table_size) || !ebpf::maglev::is_prime(lb_table_size) {
            return invalid(
                "lb-table-size",
                format!("{lb_table_size} is not a prime in 251..=65521 (e.g. 16381, 32749, 65521)"),
            );
        }
        let lb_interfaces =
            if flags.lb_interfaces.is_empty() { file.lb_interfaces } else { Some(flags.lb_interfaces.clone()) };
        let secs = |key: &str, v: Option<u64>, default: u64, range: std::ops::RangeInclusive<u64>| {
            let v = v.unwrap_or(default);
            if range.contains(&v) {
                Ok(Duration::from_secs(v))
            } else {
                invalid(key, format!("{v} is out of range: expected {}..={} seconds", range.start(), range.end()))
            }
        };
        let lb_timeouts = ebpf::datapath::Timeouts {
            tcp_established: secs("lb-tcp-established-timeout", file.lb_tcp_established_timeout, 21600, 60..=604_800)?,
            tcp_closing: secs("lb-tcp-closing-timeout", file.lb_tcp_closing_timeout, 10, 1..=3600)?,
            udp: secs("lb-udp-timeout", file.lb_udp_timeout, 120, 1..=86_400)?,
        };
        for i in lb_interfaces.iter().flatten() {
            if i.is_empty() || i.len() > 15 || i.contains(['/', ':']) || i.chars().any(char::is_whitespace) {
                return invalid(
                    "lb-interface",
                    format!("{i:?} is not an interface name (1 to 15 characters, no /, : or spaces)"),
                );
            }
        }
        let cgroup_parent = flags.cgroup_parent.clone().or(file.cgroup_parent).unwrap_or_else(|| "netd".into());
        if !crate::model::valid_name(&cgroup_parent) {
            return invalid("cgroup-parent", format!("{cgroup_parent:?}: expected a name of [a-zA-Z0-9_.-]"));
        }
        let advertise = match flags.advertise_addr.clone().or(file.advertise_addr) {
            Some(a) => {
                let a = gossip_addr("advertise-addr", &a)?;
                if a.ip().is_unspecified() {
                    return invalid("advertise-addr", format!("{a}: other nodes cannot reach an unspecified address"));
                }
                Some(a)
            }
            None => None,
        };
        let join_src = if flags.join.is_empty() { file.join.unwrap_or_default() } else { flags.join.clone() };
        let join = join_src.iter().map(|j| gossip_addr("join", j)).collect::<Result<Vec<_>, _>>()?;
        let bind = gossip_addr("gossip-bind", file.gossip_bind.as_deref().unwrap_or("0.0.0.0:7946"))?;
        let node_name = flags.node_name.clone().or(file.node_name);
        if let Some(n) = &node_name
            && (n.is_empty() || n.len() > 128 || n.contains(|c: char| c.is_control() || c.is_whitespace()))
        {
            return invalid("node-name", format!("{n:?}: 1-128 characters, no spaces or control characters"));
        }
        let profile = match file.gossip_profile.as_deref().unwrap_or("lan") {
            "lan" => GossipProfile::Lan,
            "wan" => GossipProfile::Wan,
            "local" => GossipProfile::Local,
            other => return invalid("gossip-profile", format!("{other:?}: expected lan, wan or local")),
        };
        let mut keys = Vec::new();
        for (i, k) in file.gossip_keys.unwrap_or_default().iter().enumerate() {
            match base64_decode(k) {
                Some(b) if matches!(b.len(), 16 | 24 | 32) => keys.push(b),
                Some(b) => {
                    return invalid("gossip-keys", format!("key {i} is {} bytes: expected 16, 24 or 32", b.len()));
                }
                None => return invalid("gossip-keys", format!("key {i} is not base64")),
            }
        }
        let label = match file.gossip_label {
            Some(l) if l.is_empty() || l.len() > 255 => {
                return invalid("gossip-label", format!("{} bytes: expected 1 to 255", l.len()));
            }
            l => l.unwrap_or_default(),
        };
        let ttl = file.dns_ttl.unwrap_or(5);
        if ttl > 3600 {
            return invalid("dns-ttl", format!("{ttl} is out of range: expected 0..=3600 seconds"));
        }
        let up_ms = file.dns_upstream_timeout_ms.unwrap_or(1000);
        if !(50..=10_000).contains(&up_ms) {
            return invalid("dns-upstream-timeout-ms", format!("{up_ms} is out of range: expected 50..=10000"));
        }
        let max_inflight = file.dns_max_inflight.unwrap_or(1024);
        if !(1..=65_536).contains(&max_inflight) {
            return invalid("dns-max-inflight", format!("{max_inflight} is out of range: expected 1..=65536"));
        }
        Ok(Config {
            dns: DnsConfig { ttl, upstream_timeout: Duration::from_millis(up_ms), max_inflight },
            gossip: GossipConfig { bind, advertise, join, node_name, profile, keys, label },
            cgroup_parent,
            bridge_netfilter: file.bridge_netfilter.unwrap_or(false),
            data_root,
            exec_root,
            sockets,
            bpf_root,
            log_level: flags.log_level.or(file.log_level).unwrap_or(LogLevel::Info),
            log_format: flags.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            labels,
            reconcile_interval: Duration::from_secs(reconcile_interval),
            shutdown_timeout: Duration::from_secs(shutdown_timeout),
            lb_table_size,
            lb_interfaces,
            lb_timeouts,
        })
    }
}

/// Standard base64 (with or without padding).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if s.is_empty() || bits >= 6 { None } else { Some(out) }
}

/// Standard base64 with padding (as `serf keygen` prints keys).
pub fn base64_encode(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn invalid<T>(key: &str, message: String) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid { key: key.to_owned(), message })
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })
}

/// Parses the TOML text of a config file; errors name the line and the key.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let start = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
        let line = text[..start].matches('\n').count() + 1;
        let line_text = text.lines().nth(line - 1).unwrap_or("");
        let key = match line_text.split_once('=') {
            Some((k, _)) if !k.trim().is_empty() && !k.contains('[') => format!("key `{}`: ", k.trim()),
            _ => String::new(),
        };
        let message = e.message().lines().next().unwrap_or("invalid TOML").trim().to_owned();
        ConfigError::Parse { path: path.to_owned(), line, key, message }
    })
}

fn abs_dir(key: &str, p: PathBuf) -> Result<PathBuf, ConfigError> {
    if !p.is_absolute() {
        return invalid(key, format!("{} is not an absolute path", p.display()));
    }
    if p.parent().is_none() {
        return invalid(key, "/ cannot be used as a netd directory".into());
    }
    Ok(p)
}

/// Parses `unix:///abs/path` (or a bare absolute path) into a socket path.
pub fn parse_host(h: &str) -> Result<PathBuf, ConfigError> {
    let path = if let Some(rest) = h.strip_prefix("unix://") {
        rest
    } else if h.starts_with('/') {
        h
    } else if let Some((scheme, _)) = h.split_once("://") {
        return invalid("host", format!("{h:?}: the {scheme}:// scheme is not supported, only unix:///absolute/path"));
    } else {
        return invalid("host", format!("{h:?}: expected unix:///absolute/path"));
    };
    if !path.starts_with('/') || path.len() < 2 {
        return invalid("host", format!("{h:?}: the socket path must be absolute"));
    }
    if path.len() > 107 {
        return invalid("host", format!("{h:?}: socket path longer than 107 bytes"));
    }
    Ok(PathBuf::from(path))
}

fn parse_label(l: &str) -> Result<(String, String), ConfigError> {
    match l.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => Ok((k.to_owned(), v.to_owned())),
        _ => invalid("label", format!("{l:?}: expected key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        parse_file(Path::new("/etc/netd.toml"), text)
    }

    #[test]
    fn defaults_match_dockerd_layout() {
        let c = Config::merge(&Flags::default(), FileConfig::default()).unwrap();
        assert_eq!(c.data_root, PathBuf::from("/var/lib/netd"));
        assert_eq!(c.exec_root, PathBuf::from("/run/netd"));
        assert_eq!(c.sockets, vec![PathBuf::from("/run/netd/netd.sock")]);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.reconcile_interval, Duration::from_secs(30));
    }

    #[test]
    fn gossip_settings_parse_and_bad_ones_are_named() {
        let file = parse(
            "join = [\"10.0.0.1\", \"10.0.0.2:8000\"]\nnode-name = \"a\"\ngossip-profile = \"wan\"\ngossip-keys = [\"AAECAwQFBgcICQoLDA0ODw==\"]\n",
        )
        .unwrap();
        let flags = Flags::try_parse_from(["netd", "--advertise-addr", "10.0.0.9"]).unwrap();
        let c = Config::merge(&flags, file).unwrap();
        assert_eq!(c.gossip.join, ["10.0.0.1:7946".parse().unwrap(), "10.0.0.2:8000".parse().unwrap()]);
        assert_eq!(c.gossip.advertise, Some("10.0.0.9:7946".parse().unwrap()));
        assert_eq!(c.gossip.profile, GossipProfile::Wan);
        assert_eq!(c.gossip.keys, vec![(0u8..16).collect::<Vec<_>>()]);
        assert_eq!(c.gossip.label, "", "no label unless set");
        let l = Config::merge(&Flags::default(), parse("gossip-label = \"prod\"\n").unwrap()).unwrap();
        assert_eq!(l.gossip.label, "prod");
        for bad in ["gossip-label = \"\"\n".to_owned(), format!("gossip-label = \"{}\"\n", "x".repeat(256))] {
            let e = Config::merge(&Flags::default(), parse(&bad).unwrap()).unwrap_err().to_string();
            assert!(e.starts_with("invalid gossip-label: "), "{e}");
        }
        assert_eq!(base64_encode(&c.gossip.keys[0]), "AAECAwQFBgcICQoLDA0ODw==");
        for n in 0..40u8 {
            let b: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            if n > 0 {
                assert_eq!(base64_decode(&base64_encode(&b)), Some(b), "round trip of {n} bytes");
            }
        }
        for (text, key) in [
            ("gossip-keys = [\"AAAA\"]", "gossip-keys"),
            ("gossip-keys = [\"!!\"]", "gossip-keys"),
            ("join = [\"nowhere\"]", "join"),
            ("gossip-profile = \"moon\"", "gossip-profile"),
            ("node-name = \"a b\"", "node-name"),
        ] {
            let e = Config::merge(&Flags::default(), parse(text).unwrap()).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        let flags = Flags::try_parse_from(["netd", "--advertise-addr", "0.0.0.0"]).unwrap();
        assert!(Config::merge(&flags, FileConfig::default()).is_err());
        assert_eq!(base64_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("aGk"), Some(b"hi".to_vec()));
    }

    #[test]
    fn flags_override_file() {
        let file = parse("data-root = \"/a\"\nlog-level = \"debug\"\nhosts = [\"unix:///a.sock\"]\n").unwrap();
        let flags = Flags::try_parse_from(["netd", "--data-root", "/b", "-H", "unix:///b.sock"]).unwrap();
        let c = Config::merge(&flags, file).unwrap();
        assert_eq!(c.data_root, PathBuf::from("/b"));
        assert_eq!(c.sockets, vec![PathBuf::from("/b.sock")]);
        assert_eq!(c.log_level, LogLevel::Debug);
    }

    #[test]
    fn unknown_key_is_named_in_one_line() {
        let err = parse("data-root = \"/a\"\nlog-levle = \"debug\"\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("log-levle"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = parse("log-level = \"loud\"\n").unwrap_err().to_string();
        assert!(err.contains("key `log-level`"), "{err}");
        assert!(err.contains("loud"), "{err}");
        let err = parse("reconcile-interval = \"soon\"\n").unwrap_err().to_string();
        assert!(err.contains("key `reconcile-interval`"), "{err}");
        let err = Config::merge(&Flags::default(), parse("reconcile-interval = 0\n").unwrap()).unwrap_err().to_string();
        assert_eq!(err, "invalid reconcile-interval: 0 is out of range: expected 1..=3600 seconds");
        for bad in ["lb-table-size = 16380\n", "lb-table-size = 7\n", "lb-table-size = 65537\n"] {
            let err = Config::merge(&Flags::default(), parse(bad).unwrap()).unwrap_err().to_string();
            assert!(err.starts_with("invalid lb-table-size: ") && err.contains("not a prime in 251..=65521"), "{err}");
        }
        let c = Config::merge(&Flags::default(), parse("lb-table-size = 32749\n").unwrap()).unwrap();
        assert_eq!(c.lb_table_size, 32749);
        let err = Config::merge(&Flags::default(), parse("lb-interfaces = [\"a/b\"]\n").unwrap()).unwrap_err();
        assert!(err.to_string().contains("not an interface name"), "{err}");
        let flags = Flags { lb_interfaces: vec!["eth1".into()], ..Flags::default() };
        let c = Config::merge(&flags, parse("lb-interfaces = [\"eth0\"]\n").unwrap()).unwrap();
        assert_eq!(c.lb_interfaces, Some(vec!["eth1".to_owned()]), "flags win over the file");
        assert_eq!(c.lb_timeouts, ebpf::datapath::Timeouts::default(), "the datapath's defaults");
        let c = Config::merge(
            &Flags::default(),
            parse("lb-udp-timeout = 30\nlb-tcp-established-timeout = 86400\n").unwrap(),
        )
        .unwrap();
        assert_eq!((c.lb_timeouts.udp.as_secs(), c.lb_timeouts.tcp_established.as_secs()), (30, 86400));
        let err = Config::merge(&Flags::default(), parse("lb-tcp-established-timeout = 5\n").unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid lb-tcp-established-timeout: 5 is out of range: expected 60..=604800 seconds"
        );
    }

    #[test]
    fn broken_toml_is_reported_with_line() {
        let err = parse("data-root = \n").unwrap_err().to_string();
        assert!(err.starts_with("config file /etc/netd.toml: line 1"), "{err}");
    }

    #[test]
    fn hosts_must_be_unix_and_absolute() {
        assert!(parse_host("unix:///run/x.sock").is_ok());
        assert!(parse_host("/run/x.sock").is_ok());
        for bad in ["tcp://0.0.0.0:2375", "unix://relative.sock", "x.sock", "unix://"] {
            let err = parse_host(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid host"), "{err}");
        }
    }

    #[test]
    fn relative_roots_and_bad_labels_are_refused() {
        let flags = Flags::try_parse_from(["netd", "--data-root", "rel"]).unwrap();
        let err = Config::merge(&flags, FileConfig::default()).unwrap_err().to_string();
        assert!(err.contains("data-root") && err.contains("absolute"), "{err}");
        let flags = Flags::try_parse_from(["netd", "--label", "novalue"]).unwrap();
        let err = Config::merge(&flags, FileConfig::default()).unwrap_err().to_string();
        assert!(err.contains("label"), "{err}");
    }

    #[test]
    fn bad_flags_are_refused_by_clap() {
        assert!(Flags::try_parse_from(["netd", "--log-level", "loud"]).is_err());
        assert!(Flags::try_parse_from(["netd", "--no-such-flag"]).is_err());
    }
}
