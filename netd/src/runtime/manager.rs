//! The container manager: the netd side of the runtime. It validates and
//! records containers, starts them through the shim, watches their exits
//! (pidfd, then the shim's exit record), applies restart policies and
//! auto-removal, and re-adopts running containers after a netd restart. State
//! changes bump a generation counter that waiters (`wait`, attach, log follow)
//! watch. Containers are serialized per operation by one async lock; waiting
//! for an exit never holds it.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch};

use super::cgroup::{self, CgroupError};
use super::container::{ContainerRecord, MountRecord, State, Status};
use super::mounts::{self, Layout};
use super::resolve;
use super::shim::{self, ExitRecord, LaunchConfig};
use super::spec::{ContainerSpec, MountKind, NetworkMode, RestartPolicy, check_name};
use crate::events::{Event, EventBus};
use crate::ids::ContainerId;
use crate::image::{ImageError, ImageStore};
use crate::network::{NetError, Networks};
use crate::store::{Store, StoreError};
use crate::volume::{VolumeError, VolumeStore};

/// A refused or failed container operation.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Network(#[from] NetError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

type R<T> = Result<T, RuntimeError>;

/// Where the runtime keeps things and how it names cgroups.
#[derive(Clone, Debug)]
pub struct Paths {
    /// `<data-root>/containers`: layers, logs, /etc files (persistent).
    pub data: PathBuf,
    /// `<exec-root>/containers`: shim state (runtime).
    pub exec: PathBuf,
    /// Cgroup parent name.
    pub cgroup_parent: String,
    /// The netd binary (runs `netd shim`).
    pub netd_exe: PathBuf,
}

/// The container manager.
#[derive(Debug)]
pub struct Runtime {
    store: Store,
    images: ImageStore,
    volumes: VolumeStore,
    events: Arc<EventBus>,
    paths: Paths,
    cgroups: Result<cgroup::Layout, String>,
    lock: Mutex<()>,
    generation: watch::Sender<u64>,
    /// Exit codes of recently removed containers, for `wait?condition=removed`
    /// callers that only wake after the removal (bounded).
    removed_exits: std::sync::Mutex<std::collections::VecDeque<(ContainerId, i32)>>,
    /// Exec instances (in memory, as dockerd keeps them).
    execs: std::sync::Mutex<BTreeMap<String, ExecRecord>>,
    /// pty masters of running TTY execs (for resize).
    exec_ptys: std::sync::Mutex<BTreeMap<String, Arc<std::fs::File>>>,
    /// The bridge driver, once the daemon has started it.
    networks: std::sync::OnceLock<Arc<Networks>>,
    dns: std::sync::OnceLock<Arc<crate::embedded_dns::EmbeddedDns>>,
}

/// One `docker exec` instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    pub id: String,
    pub container: ContainerId,
    pub config: super::nsexec::ExecConfig,
    pub user: String,
    pub running: bool,
    pub exit_code: Option<i32>,
    pub pid: i32,
    /// Whether the client sends stdin.
    pub stdin: bool,
}

/// What `docker exec` asks for.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub tty: bool,
    pub stdin: bool,
}

/// A started exec process and how to talk to it.
#[derive(Debug)]
pub struct ExecProcess {
    pub child: tokio::process::Child,
    /// For a TTY exec: the socket on which the helper sends the pty master
    /// (see [`receive_pty`]).
    pub pty: Option<std::os::unix::net::UnixStream>,
}

fn internal(what: &str) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |e| RuntimeError::Internal(format!("{what}: {e}"))
}

impl Runtime {
    /// A manager over the given stores; call [`Runtime::adopt`] once at start.
    pub fn new(
        store: Store,
        images: ImageStore,
        volumes: VolumeStore,
        events: Arc<EventBus>,
        paths: Paths,
    ) -> R<Arc<Runtime>> {
        std::fs::create_dir_all(&paths.data).map_err(internal("create containers dir"))?;
        std::fs::create_dir_all(&paths.exec).map_err(internal("create containers exec dir"))?;
        let cgroups = cgroup::detect().map_err(|e| e.to_string());
        Ok(Arc::new(Runtime {
            store,
            images,
            volumes,
            events,
            paths,
            cgroups,
            lock: Mutex::new(()),
            generation: watch::channel(0).0,
            removed_exits: Default::default(),
            execs: Default::default(),
            exec_ptys: Default::default(),
            networks: Default::default(),
            dns: Default::default(),
        }))
    }

    /// Hands the runtime the bridge driver (once, at start).
    pub fn set_networks(&self, n: Arc<Networks>) {
        let _ = self.networks.set(n);
    }

    fn net(&self) -> R<&Arc<Networks>> {
        self.networks
            .get()
            .ok_or_else(|| RuntimeError::Internal("bridge networking is not available in this daemon".into()))
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
        self.refresh_dns();
    }

    /// Rebuilds the embedded DNS's records from the store (containers,
    /// networks, load-balanced services).
    pub fn refresh_dns(&self) {
        if let Some(d) = self.dns.get() {
            let services = self.store.all::<crate::lb::ServiceRecord>();
            match (self.store.networks(), self.store.all::<ContainerRecord>(), services) {
                (Ok(nets), Ok(cs), Ok(svcs)) => d.refresh(&nets, &cs, &svcs),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    tracing::warn!(error = %e, "cannot refresh the embedded DNS")
                }
            }
        }
    }

    /// Hands the runtime the embedded DNS (once, at start).
    pub fn set_dns(&self, d: Arc<crate::embedded_dns::EmbeddedDns>) {
        let _ = self.dns.set(d);
    }

    fn data_dir(&self, id: &ContainerId) -> PathBuf {
        self.paths.data.join(id.as_str())
    }

    fn shim_dir(&self, id: &ContainerId) -> PathBuf {
        self.paths.exec.join(id.as_str())
    }

    /// The json-file log of a container.
    pub fn log_path(&self, id: &ContainerId) -> PathBuf {
        self.data_dir(id).join(format!("{id}-json.log"))
    }

    fn event(&self, c: &ContainerRecord, action: &str, extra: &[(&str, &str)]) {
        let mut attrs: Vec<(&str, &str)> = vec![("name", &c.name), ("image", &c.image)];
        attrs.extend_from_slice(extra);
        for (k, v) in &c.spec.labels {
            attrs.push((k, v));
        }
        self.events.publish(Event::now("container", action, c.id.as_str(), &attrs));
    }

    /// All containers.
    pub fn list(&self) -> R<Vec<ContainerRecord>> {
        Ok(self.store.all::<ContainerRecord>()?)
    }

    /// Finds a container by full id, name (with or without `/`), or unique id prefix.
    pub fn find(&self, key: &str) -> R<ContainerRecord> {
        let all = self.list()?;
        let name = key.strip_prefix('/').unwrap_or(key);
        if let Some(c) = all.iter().find(|c| c.id.as_str() == key || c.name == name) {
            return Ok(c.clone());
        }
        let hits: Vec<_> =
            if key.is_empty() { vec![] } else { all.iter().filter(|c| c.id.as_str().starts_with(key)).collect() };
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(RuntimeError::NotFound(key.to_owned())),
            _ => Err(RuntimeError::BadRequest(format!("multiple containers found with provided prefix: {key}"))),
        }
    }

    fn save(&self, c: &ContainerRecord) -> R<()> {
        self.store.put_all(std::slice::from_ref(c))?;
        self.bump();
        Ok(())
    }

    /// The input descriptor of a running container, from its shim: the pty
    /// master (`-t`) or the stdin pipe (`-i`, handed out once). Blocking.
    pub fn input_fd(&self, c: &ContainerRecord) -> R<std::fs::File> {
        let sock = self.shim_dir(&c.id).join(shim::ATTACH_SOCKET);
        let conn = crate::socket::ShortPath::new(&sock)
            .and_then(|s| std::os::unix::net::UnixStream::connect(s.path()))
            .map_err(|e| RuntimeError::Conflict(format!("container {} has no input to attach to: {e}", c.name)))?;
        receive_pty(&conn).map_err(RuntimeError::Conflict)
    }

    /// `network connect`: allocates an endpoint and, if the container runs,
    /// plumbs it into its namespace at once.
    pub async fn connect(&self, key: &str, req: super::netspec::NetworkRequest) -> R<ContainerRecord> {
        let _g = self.lock.lock().await;
        let mut c = self.find(key)?;
        if c.spec.network != NetworkMode::Bridge {
            return Err(RuntimeError::BadRequest(format!(
                "container {} is on the {} network: it cannot be connected to other networks",
                c.name,
                if c.spec.network == NetworkMode::Host { "host" } else { "none" }
            )));
        }
        let net = self.net()?.clone();
        let _ng = net.locked().await;
        let eps = net.allocate(std::slice::from_ref(&req), &c.endpoints, &self.list()?)?;
        if c.state.status == Status::Running && c.state.pid > 0 {
            net.plumb(c.state.pid, &eps, c.endpoints.is_empty()).await?;
        }
        c.endpoints.extend(eps);
        self.write_resolv_conf(&c)?;
        self.save(&c)?;
        drop(_ng);
        net.sync_firewall().await?;
        Ok(c)
    }

    /// `network disconnect`: removes the endpoint (and its interface from a
    /// running container); its address is free again.
    pub async fn disconnect(&self, key: &str, network: &crate::ids::NetworkId, _force: bool) -> R<ContainerRecord> {
        let _g = self.lock.lock().await;
        let mut c = self.find(key)?;
        let Some(pos) = c.endpoints.iter().position(|e| &e.network == network) else {
            return Err(RuntimeError::Conflict(format!(
                "container {} is not connected to network {}",
                c.name,
                network.short()
            )));
        };
        let net = self.net()?.clone();
        let _ng = net.locked().await;
        if c.state.status == Status::Running && c.state.pid > 0 {
            net.unplumb(c.state.pid, &c.endpoints[pos]).await?;
        }
        c.endpoints.remove(pos);
        self.write_resolv_conf(&c)?;
        self.save(&c)?;
        drop(_ng);
        net.sync_firewall().await?;
        Ok(c)
    }

    /// Sets the window size of a running TTY container.
    pub fn resize(&self, key: &str, rows: u16, cols: u16) -> R<()> {
        let c = self.find(key)?;
        if !c.spec.tty || c.state.status != Status::Running {
            return Err(RuntimeError::Conflict(format!("container {} has no running TTY to resize", c.name)));
        }
        let master = self.input_fd(&c)?;
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
        let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&master), libc::TIOCSWINSZ, &ws) };
        if r != 0 {
            return Err(RuntimeError::Internal(format!("resize: {}", std::io::Error::last_os_error())));
        }
        Ok(())
    }

    /// Host pids of a container's processes (from its cgroup).
    pub fn pids(&self, c: &ContainerRecord) -> Vec<u32> {
        match &self.cgroups {
            Ok(layout) => layout.cgroup(&self.paths.cgroup_parent, c.id.as_str()).pids(),
            Err(_) => Vec::new(),
        }
    }

    /// Whether any container uses the image.
    pub fn image_in_use(&self, image_id: &str) -> R<bool> {
        Ok(self.list()?.iter().any(|c| c.image_id.as_str() == image_id))
    }

    /// Containers using a volume.
    pub fn volume_users(&self, name: &str) -> R<Vec<String>> {
        Ok(self
            .list()?
            .iter()
            .filter(|c| c.mounts.iter().any(|m| m.kind == MountKind::Volume && m.name == name))
            .map(|c| c.name.clone())
            .collect())
    }

    /// Creates a container (not started). Nothing is left behind on failure.
    pub async fn create(self: &Arc<Self>, spec: ContainerSpec, name: Option<&str>) -> R<ContainerRecord> {
        let _g = self.lock.lock().await;
        let id = ContainerId::random();
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => check_name(n).map_err(|e| RuntimeError::BadRequest(e.to_string()))?,
            None => format!("netd_{}", &id.as_str()[..8]),
        };
        if let Some(other) = self.list()?.iter().find(|c| c.name == name) {
            return Err(RuntimeError::Conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                other.id
            )));
        }
        let image = self.images.resolve(&spec.image)?;
        let mut spec = spec;
        for key in &image.config.exposed_ports {
            let Ok((port, proto)) = super::netspec::parse_port_key(key) else { continue };
            if !spec.exposed.contains(&(port, proto)) {
                spec.exposed.push((port, proto));
            }
            if spec.publish_all && !spec.ports.iter().any(|p| p.container_port == port && p.proto == proto) {
                spec.ports.push(super::netspec::PortRequest {
                    proto,
                    container_port: port,
                    host_ip: None,
                    host_ports: (0, 0),
                });
            }
        }
        // Held until the record (which holds the addresses) is saved.
        let (_net_guard, endpoints) = if spec.network == NetworkMode::Bridge {
            let net = self.net()?;
            let g = net.locked().await;
            let eps = net.allocate(&spec.networks, &[], &self.list()?)?;
            (Some(g), eps)
        } else {
            (None, Vec::new())
        };
        let rootfs = self.images.rootfs(&image.id);
        let process = resolve::process(&spec, &image.config).map_err(RuntimeError::BadRequest)?;
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
        let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
        let (uid, gid) = resolve::user_ids(&process.user, &passwd, &group).map_err(RuntimeError::BadRequest)?;
        if let Err(e) = &self.cgroups
            && spec.limits != Default::default()
        {
            return Err(RuntimeError::BadRequest(format!("resource limits cannot be enforced: {e}")));
        }
        if let Ok(layout) = &self.cgroups {
            layout.limit_writes(&spec.limits)?;
        }
        let mut mounts = Vec::new();
        for m in &spec.mounts {
            if m.kind == MountKind::Bind {
                let p = Path::new(&m.source);
                if !p.exists() {
                    return Err(RuntimeError::BadRequest(format!(
                        "invalid mount config: bind source path does not exist: {}",
                        m.source
                    )));
                }
            }
        }
        let mut made_volumes = Vec::new();
        let result = (|| {
            for m in &spec.mounts {
                let (name, source, file) = match m.kind {
                    MountKind::Bind => (m.source.clone(), m.source.clone(), Path::new(&m.source).is_file()),
                    MountKind::Volume => {
                        let (v, new) = self.volumes.create(&m.source, "local", &BTreeMap::new(), BTreeMap::new())?;
                        if new {
                            made_volumes.push(v.name.clone());
                        }
                        let src = self.volumes.mountpoint(&v.name).display().to_string();
                        (v.name, src, false)
                    }
                    MountKind::Tmpfs => (String::new(), String::new(), false),
                };
                mounts.push(MountRecord {
                    kind: m.kind.clone(),
                    name,
                    source,
                    target: m.target.clone(),
                    read_only: m.read_only,
                    tmpfs_size: m.tmpfs_size,
                    file,
                });
            }
            let hostname = if spec.hostname.is_empty() { id.short().to_owned() } else { spec.hostname.clone() };
            let rec = ContainerRecord {
                id: id.clone(),
                name: name.clone(),
                created: jiff::Timestamp::now().to_string(),
                image: spec.image.clone(),
                image_id: image.id.clone(),
                args: process.args.clone(),
                env: process.env.clone(),
                cwd: process.cwd.clone(),
                uid,
                gid,
                hostname,
                mounts: mounts.clone(),
                endpoints: endpoints.clone(),
                spec: spec.clone(),
                state: State::default(),
            };
            self.prepare_dirs(&rec)?;
            self.save(&rec)?;
            Ok(rec)
        })();
        match result {
            Ok(rec) => {
                self.event(&rec, "create", &[]);
                Ok(rec)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(self.data_dir(&id));
                for v in made_volumes {
                    let _ = self.volumes.remove(&v, &[]);
                }
                Err(e)
            }
        }
    }

    /// (Re)writes the container's resolv.conf: at creation, at every start
    /// and when a `network connect` brings it onto a user-defined network
    /// (same file, so a running container sees the new one).
    fn write_resolv_conf(&self, c: &ContainerRecord) -> R<()> {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let path = self.data_dir(&c.id).join("resolv.conf");
        let want = crate::embedded_dns::resolv_conf(c, &host);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            std::fs::write(&path, want).map_err(internal("write resolv.conf"))?;
        }
        Ok(())
    }

    fn prepare_dirs(&self, c: &ContainerRecord) -> R<()> {
        let d = self.data_dir(&c.id);
        for sub in ["upper", "work", "rootfs"] {
            std::fs::create_dir_all(d.join(sub)).map_err(internal("create container dirs"))?;
        }
        let host = c.spec.network == NetworkMode::Host;
        let hosts = if host {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            let own = match c.endpoints.first() {
                Some(e) => format!("{}\t{}\n", e.ip, c.hostname),
                None => format!("127.0.1.1\t{}\n", c.hostname),
            };
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}")
        };
        for (f, content) in [("hostname", format!("{}\n", c.hostname)), ("hosts", hosts)] {
            std::fs::write(d.join(f), content).map_err(internal("write /etc files"))?;
        }
        self.write_resolv_conf(c)?;
        // Exists from creation on, so an attach made before start holds the
        // file (and still reads it after --rm unlinks it).
        std::fs::write(self.log_path(&c.id), b"").map_err(internal("create log file"))?;
        Ok(())
    }

    fn launch_config(&self, c: &ContainerRecord, cgroup_dirs: Vec<PathBuf>) -> LaunchConfig {
        let d = self.data_dir(&c.id);
        let layout = Layout {
            image_rootfs: self.images.rootfs(&c.image_id),
            upper: d.join("upper"),
            work: d.join("work"),
            hostname_file: d.join("hostname"),
            hosts_file: d.join("hosts"),
            resolv_file: d.join("resolv.conf"),
        };
        let resolved: Vec<_> = c.mounts.iter().map(MountRecord::resolved).collect();
        LaunchConfig {
            id: c.id.to_string(),
            rootfs: d.join("rootfs"),
            ops: mounts::plan(&layout, c.spec.network, &resolved),
            args: c.args.clone(),
            env: c.env.clone(),
            cwd: c.cwd.clone(),
            uid: c.uid,
            gid: c.gid,
            hostname: if c.spec.network == NetworkMode::Host { String::new() } else { c.hostname.clone() },
            network: c.spec.network,
            cgroup_dirs,
            log_path: self.log_path(&c.id),
            log_max_bytes: super::logfile::DEFAULT_MAX_BYTES,
            log_max_files: super::logfile::DEFAULT_MAX_FILES,
            tty: c.spec.tty,
            open_stdin: c.spec.open_stdin,
        }
    }

    /// Starts a created or exited container. Returns false if it was running.
    pub async fn start(self: &Arc<Self>, key: &str) -> R<bool> {
        let g = self.lock.lock().await;
        let c = self.find(key)?;
        if c.running() {
            return Ok(false);
        }
        match self.start_locked(c.clone()).await {
            Ok(_) => Ok(true),
            Err(e) => {
                drop(g);
                // As dockerd: a container that cannot start and should be
                // removed on exit is removed now (the client waits for it).
                if c.spec.auto_remove {
                    let _ = self.remove(c.id.as_str(), true, true).await;
                }
                Err(e)
            }
        }
    }

    async fn start_locked(self: &Arc<Self>, mut c: ContainerRecord) -> R<ContainerRecord> {
        if !self.images.rootfs(&c.image_id).exists() {
            return Err(RuntimeError::Conflict(format!("the image of container {} ({}) was removed", c.name, c.image)));
        }
        let net = match c.spec.network {
            NetworkMode::Bridge => Some(self.net()?.clone()),
            _ => None,
        };
        let ports = match &net {
            Some(n) => n.ports_for(&c, &self.list()?)?,
            None => Vec::new(),
        };
        let layout = self.cgroups.clone().map_err(|e| RuntimeError::Internal(format!("no usable cgroups: {e}")))?;
        let parent = self.paths.cgroup_parent.clone();
        let cg = layout.cgroup(&parent, c.id.as_str());
        cg.remove();
        let cg = layout.create(&parent, c.id.as_str(), &c.spec.limits)?;
        let dir = self.shim_dir(&c.id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(internal("create shim dir"))?;
        // Fresh upper layer? No: a restarted container keeps its writes, as Docker's do.
        let cfg = self.launch_config(&c, cg.dirs.values().cloned().collect());
        let bytes = serde_json::to_vec(&cfg).map_err(|e| RuntimeError::Internal(e.to_string()))?;
        std::fs::write(dir.join(shim::LAUNCH_FILE), bytes).map_err(internal("write launch config"))?;
        let exe = self.paths.netd_exe.clone();
        let d2 = dir.clone();
        let (eps, tokio_rt) = (c.endpoints.clone(), tokio::runtime::Handle::current());
        let net2 = net.clone();
        let dns = self.dns.get().filter(|_| crate::embedded_dns::uses_embedded_dns(&c)).cloned();
        let id = c.id.clone();
        self.write_resolv_conf(&c)?;
        if let Some(d) = &dns {
            // Its view and names exist before its command runs.
            let services = self.store.all::<crate::lb::ServiceRecord>()?;
            d.refresh_starting(&self.store.networks()?, &self.list()?, &services, Some(&c.id));
        }
        // Runs while the container's first process waits: its namespace
        // exists, its command has not started yet (so its first lookup
        // finds the embedded DNS listening).
        let setup = move |pid: i32| {
            if let Some(n) = &net2 {
                tokio_rt.block_on(n.plumb(pid, &eps, true)).map_err(|e| format!("network setup: {e}"))?;
            }
            if let Some(d) = &dns {
                let _g = tokio_rt.enter();
                d.open(&id, pid).map_err(|e| format!("embedded DNS: {e}"))?;
            }
            Ok(())
        };
        let report = tokio::task::spawn_blocking(move || shim::spawn(&exe, &d2, setup))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?
            .map_err(RuntimeError::Internal)?;
        let pid = match (report.pid, report.error) {
            (Some(pid), _) => pid,
            (None, err) => {
                cg.remove();
                let msg = err.unwrap_or_else(|| "the shim reported nothing".into());
                c.state.error = msg.clone();
                c.state.exit_code = if msg.contains("not found") {
                    127
                } else if msg.contains("ermission denied") {
                    126
                } else {
                    128
                };
                let _ = self.save(&c);
                return Err(RuntimeError::BadRequest(format!("failed to start container {}: {msg}", c.name)));
            }
        };
        c.state.status = Status::Running;
        c.state.pid = pid;
        c.state.started_at = jiff::Timestamp::now().to_string();
        c.state.error.clear();
        c.state.stopped_by_user = false;
        c.state.ports = ports;
        self.save(&c)?;
        if let Some(n) = &net
            && let Err(e) = n.sync_firewall().await
        {
            // Published ports that do not work: better not run at all.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            self.watch(c.id.clone(), pid);
            return Err(RuntimeError::Internal(format!("cannot publish the ports of {}: {e}", c.name)));
        }
        self.event(&c, "start", &[]);
        tracing::info!(container = %c.name, id = %c.id.short(), pid, "container started");
        self.watch(c.id.clone(), pid);
        Ok(c)
    }

    /// Waits for the process `pid` of container `id` to end, then records it.
    fn watch(self: &Arc<Self>, id: ContainerId, pid: i32) {
        let rt = self.clone();
        tokio::spawn(async move {
            wait_pid(pid).await;
            rt.on_exit(&id, pid, true).await;
        });
    }

    /// Records a container's end. `fresh`: the process just ended, so the
    /// shim's exit record may still be on its way (poll for it briefly);
    /// otherwise (adoption at start) it is on disk already or never coming.
    async fn on_exit(self: &Arc<Self>, id: &ContainerId, pid: i32, fresh: bool) {
        let exit_file = self.shim_dir(id).join(shim::EXIT_FILE);
        // The pidfd fires when the container's process ends; the shim writes
        // the exit record a moment later (after reaping it).
        let mut exit: Option<ExitRecord> = None;
        for _ in 0..if fresh { 2500 } else { 1 } {
            if let Ok(b) = std::fs::read(&exit_file) {
                exit = serde_json::from_slice(&b).ok();
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let g = self.lock.lock().await;
        let Ok(mut c) = self.find(id.as_str()) else { return };
        if c.state.pid != pid || !c.running() {
            return;
        }
        let exit = exit.unwrap_or_else(|| ExitRecord {
            code: 255,
            signal: None,
            finished_at: jiff::Timestamp::now().to_string(),
        });
        c.state.status = Status::Exited;
        c.state.pid = 0;
        c.state.exit_code = exit.code;
        c.state.finished_at = exit.finished_at.clone();
        c.state.exits += 1;
        let had_ports = !std::mem::take(&mut c.state.ports).is_empty();
        if let Ok(layout) = &self.cgroups {
            layout.cgroup(&self.paths.cgroup_parent, id.as_str()).remove();
        }
        if let Err(e) = self.save(&c) {
            tracing::error!(container = %c.name, error = %e, "cannot record exit");
        }
        if had_ports
            && let Some(n) = self.networks.get()
            && let Err(e) = n.sync_firewall().await
        {
            tracing::error!(container = %c.name, error = %e, "cannot withdraw published ports");
        }
        self.event(&c, "die", &[("exitCode", &exit.code.to_string())]);
        tracing::info!(container = %c.name, code = exit.code, "container exited");
        let restart = !c.state.stopped_by_user
            && match c.spec.restart {
                RestartPolicy::No => false,
                RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
                RestartPolicy::OnFailure { max_retries } => {
                    exit.code != 0 && (max_retries == 0 || c.state.restart_count < max_retries)
                }
            };
        if restart {
            let delay = Duration::from_millis(100u64 << c.state.restart_count.min(8));
            c.state.restart_count += 1;
            c.state.status = Status::Restarting;
            let _ = self.save(&c);
            drop(g);
            let rt = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _g = rt.lock.lock().await;
                if let Ok(c) = rt.find(c.id.as_str())
                    && c.state.status == Status::Restarting
                {
                    match rt.start_locked(c.clone()).await {
                        Ok(c) => rt.event(&c, "restart", &[]),
                        Err(e) => {
                            tracing::warn!(container = %c.name, error = %e, "restart failed");
                            let mut c = c;
                            c.state.status = Status::Exited;
                            c.state.error = e.to_string();
                            let _ = rt.save(&c);
                        }
                    }
                }
            });
        } else if c.spec.auto_remove {
            drop(g);
            if let Err(e) = self.remove(c.id.as_str(), true, true).await {
                tracing::warn!(container = %c.name, error = %e, "auto-remove failed");
            }
        }
    }

    /// Sends a signal to a running container.
    pub async fn kill(self: &Arc<Self>, key: &str, signal: i32) -> R<()> {
        let c = self.find(key)?;
        if !c.running() || c.state.pid <= 0 {
            return Err(RuntimeError::Conflict(format!("Container {} is not running", c.id)));
        }
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| RuntimeError::BadRequest(format!("invalid signal: {signal}")))?;
        if signal == 9 || c.spec.restart == RestartPolicy::No {
            // An explicit kill is a user stop for restart policies, as Docker does.
            let _g = self.lock.lock().await;
            if let Ok(mut c) = self.find(key) {
                c.state.stopped_by_user = true;
                let _ = self.save(&c);
            }
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.state.pid), sig)
            .map_err(|e| RuntimeError::Internal(format!("kill: {e}")))?;
        self.event(&c, "kill", &[("signal", &signal.to_string())]);
        Ok(())
    }

    /// Prepares a process to run in a running container (`docker exec`).
    pub fn exec_create(&self, key: &str, opts: ExecOptions) -> R<ExecRecord> {
        let ExecOptions { args, env, cwd, user, tty, stdin } = opts;
        let (env, cwd, user) = (env.as_slice(), cwd.as_str(), user.as_str());
        let c = self.find(key)?;
        if c.state.status != Status::Running || c.state.pid <= 0 {
            return Err(RuntimeError::Conflict(format!("Container {} is not running", c.id)));
        }
        if args.is_empty() {
            return Err(RuntimeError::BadRequest("no exec command specified".into()));
        }
        if let Some(e) = env.iter().find(|e| e.is_empty() || e.starts_with('=') || e.contains('\0')) {
            return Err(RuntimeError::BadRequest(format!("invalid environment variable {e:?}: not KEY=VALUE")));
        }
        if !cwd.is_empty() && !cwd.starts_with('/') {
            return Err(RuntimeError::BadRequest(format!("the working directory {cwd:?} is not an absolute path")));
        }
        let (uid, gid) = if user.is_empty() {
            (c.uid, c.gid)
        } else {
            let root = format!("/proc/{}/root/etc", c.state.pid);
            let passwd = std::fs::read_to_string(format!("{root}/passwd")).unwrap_or_default();
            let group = std::fs::read_to_string(format!("{root}/group")).unwrap_or_default();
            resolve::user_ids(user, &passwd, &group).map_err(RuntimeError::BadRequest)?
        };
        let mut all_env = c.env.clone();
        for e in env {
            let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
            all_env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
            all_env.push(e.clone());
        }
        let cgroup_dirs = match &self.cgroups {
            Ok(layout) => layout.cgroup(&self.paths.cgroup_parent, c.id.as_str()).dirs.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        let rec = ExecRecord {
            id: ContainerId::random().to_string(),
            container: c.id.clone(),
            config: super::nsexec::ExecConfig {
                pid: c.state.pid,
                cgroup_dirs,
                args,
                env: all_env,
                cwd: if cwd.is_empty() { c.cwd.clone() } else { cwd.to_owned() },
                uid,
                gid,
                tty,
            },
            user: user.to_owned(),
            running: false,
            exit_code: None,
            pid: 0,
            stdin,
        };
        let mut execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
        execs.retain(|_, e| e.running || e.exit_code.is_none());
        if execs.len() >= 1024 {
            return Err(RuntimeError::Conflict("too many pending exec instances".into()));
        }
        execs.insert(rec.id.clone(), rec.clone());
        Ok(rec)
    }

    /// An exec instance by id.
    pub fn exec_get(&self, id: &str) -> R<ExecRecord> {
        let execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
        execs.get(id).cloned().ok_or_else(|| RuntimeError::NotFound(format!("exec instance {id}")))
    }

    /// Starts an exec instance: spawns `netd nsexec`, on a new pty for a TTY
    /// exec, else with piped output (and stdin if the client sends it).
    pub fn exec_spawn(&self, id: &str) -> R<ExecProcess> {
        use std::process::Stdio;
        let mut execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
        let e = execs.get_mut(id).ok_or_else(|| RuntimeError::NotFound(format!("exec instance {id}")))?;
        if e.running || e.exit_code.is_some() {
            return Err(RuntimeError::Conflict(format!("exec instance {id} has already been started")));
        }
        let json = serde_json::to_string(&e.config).map_err(|x| RuntimeError::Internal(x.to_string()))?;
        let mut cmd = tokio::process::Command::new(&self.paths.netd_exe);
        cmd.arg("nsexec").arg(json).kill_on_drop(true);
        let mut pty_socket = None;
        if e.config.tty {
            // The helper opens the pty inside the container (its devpts) and
            // sends the master back over fd 3.
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(internal("socketpair"))?;
            let theirs = OwnedFd::from(theirs);
            let raw = std::os::fd::AsRawFd::as_raw_fd(&theirs);
            // SAFETY: runs in the forked child before exec; dup2 is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    // dup2 onto itself would keep close-on-exec: clear it then.
                    let r = if raw == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(raw, 3) };
                    if r < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
            pty_socket = Some((ours, theirs));
        } else {
            cmd.stdin(if e.stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        let child = cmd.spawn().map_err(|x| RuntimeError::Internal(format!("cannot run the exec helper: {x}")))?;
        e.running = true;
        e.pid = child.id().map(|p| p as i32).unwrap_or(0);
        let pty = pty_socket.map(|(ours, theirs)| {
            drop(theirs);
            ours
        });
        Ok(ExecProcess { child, pty })
    }

    /// Remembers a running TTY exec's pty master (for resize).
    pub fn exec_set_pty(&self, id: &str, master: Arc<std::fs::File>) {
        self.exec_ptys.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned(), master);
    }

    /// Sets the window size of a TTY exec.
    pub fn exec_resize(&self, id: &str, rows: u16, cols: u16) -> R<()> {
        self.exec_get(id)?;
        let ptys = self.exec_ptys.lock().unwrap_or_else(|p| p.into_inner());
        let master = ptys
            .get(id)
            .ok_or_else(|| RuntimeError::Conflict(format!("exec instance {id} has no running TTY to resize")))?;
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
        let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(master.as_ref()), libc::TIOCSWINSZ, &ws) };
        if r != 0 {
            return Err(RuntimeError::Internal(format!("resize: {}", std::io::Error::last_os_error())));
        }
        Ok(())
    }

    /// Records how an exec instance ended.
    pub fn exec_finished(&self, id: &str, code: i32) {
        self.exec_ptys.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        let mut execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = execs.get_mut(id) {
            e.running = false;
            e.exit_code = Some(code);
        }
    }

    /// The exit code a removed container had, if it was removed recently.
    pub fn removed_exit_code(&self, id: &ContainerId) -> Option<i32> {
        let r = self.removed_exits.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().rev().find(|(x, _)| x == id).map(|(_, c)| *c)
    }

    /// Waits until `pred` holds for the container (or it is gone: `None`).
    pub async fn wait_for(
        &self,
        id: &ContainerId,
        pred: impl Fn(Option<&ContainerRecord>) -> bool,
    ) -> Option<ContainerRecord> {
        let mut rx = self.generation.subscribe();
        loop {
            let c = self.store.get::<ContainerRecord>(id.as_str()).ok().flatten();
            if pred(c.as_ref()) {
                return c;
            }
            if rx.changed().await.is_err() {
                return c;
            }
        }
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout` s.
    /// Returns false if it was not running.
    pub async fn stop(self: &Arc<Self>, key: &str, timeout: Option<u32>) -> R<bool> {
        let c = {
            let _g = self.lock.lock().await;
            let mut c = self.find(key)?;
            if !c.running() {
                return Ok(false);
            }
            c.state.stopped_by_user = true;
            if c.state.status == Status::Restarting {
                c.state.status = Status::Exited;
                self.save(&c)?;
                return Ok(true);
            }
            self.save(&c)?;
            c
        };
        let pid = nix::unistd::Pid::from_raw(c.state.pid);
        let sig = nix::sys::signal::Signal::try_from(c.spec.stop_signal).unwrap_or(nix::sys::signal::Signal::SIGTERM);
        let _ = nix::sys::signal::kill(pid, sig);
        // As dockerd: every signal stop sends is a `kill` event.
        self.event(&c, "kill", &[("signal", &(sig as i32).to_string())]);
        let t = timeout.unwrap_or(c.spec.stop_timeout);
        let exits = c.state.exits;
        let done = |x: Option<&ContainerRecord>| x.is_none_or(|x| x.state.exits > exits || !x.running());
        let stopped = tokio::time::timeout(Duration::from_secs(t.into()), self.wait_for(&c.id, done)).await;
        if stopped.is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            self.event(&c, "kill", &[("signal", "9")]);
            let _ = tokio::time::timeout(Duration::from_secs(10), self.wait_for(&c.id, done)).await;
        }
        self.event(&c, "stop", &[]);
        Ok(true)
    }

    /// Removes a container (`force` stops a running one first).
    pub async fn remove(self: &Arc<Self>, key: &str, force: bool, volumes: bool) -> R<()> {
        let c = self.find(key)?;
        if c.running() {
            if !force {
                return Err(RuntimeError::Conflict(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    c.id
                )));
            }
            self.stop(c.id.as_str(), Some(0)).await?;
        }
        let _g = self.lock.lock().await;
        let c = self.find(c.id.as_str())?;
        if c.running() {
            return Err(RuntimeError::Conflict(format!("container {} is still running", c.id)));
        }
        if let Ok(layout) = &self.cgroups {
            layout.cgroup(&self.paths.cgroup_parent, c.id.as_str()).remove();
        }
        {
            let mut r = self.removed_exits.lock().unwrap_or_else(|p| p.into_inner());
            if r.len() >= 256 {
                r.pop_front();
            }
            r.push_back((c.id.clone(), c.state.exit_code));
        }
        self.store.remove::<ContainerRecord>(c.id.as_str())?;
        self.bump();
        let _ = std::fs::remove_dir_all(self.data_dir(&c.id));
        let _ = std::fs::remove_dir_all(self.shim_dir(&c.id));
        if volumes {
            for m in c.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
                if let Ok(v) = self.volumes.get(&m.name)
                    && v.anonymous
                {
                    let _ = self.volumes.remove(&m.name, &[]);
                }
            }
        }
        self.event(&c, "destroy", &[]);
        Ok(())
    }

    /// At start: containers recorded as running are re-adopted if their
    /// process lives, else marked exited with what the shim recorded.
    pub async fn adopt(self: &Arc<Self>) -> R<()> {
        for c in self.list()? {
            if !c.running() {
                continue;
            }
            let alive = c.state.pid > 0
                && Path::new(&format!("/proc/{}", c.state.pid)).exists()
                && !self.shim_dir(&c.id).join(shim::EXIT_FILE).exists();
            if alive {
                tracing::info!(container = %c.name, pid = c.state.pid, "re-adopted running container");
                self.watch(c.id.clone(), c.state.pid);
            } else {
                self.on_exit(&c.id, c.state.pid, false).await;
            }
        }
        // Serves the embedded DNS to the re-adopted containers again.
        self.bump();
        Ok(())
    }
}

/// Receives the pty master the exec helper sends (SCM_RIGHTS), waiting at
/// most 10 s. Blocking: call from a blocking context.
pub fn receive_pty(sock: &std::os::unix::net::UnixStream) -> Result<std::fs::File, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    sock.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let fd = std::os::fd::AsRawFd::as_raw_fd(sock);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::empty())
        .map_err(|e| format!("receive the terminal: {e}"))?;
    for c in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us.
            return Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(*fd) }));
        }
    }
    Err("no descriptor was sent (see the sender's error output)".into())
}

/// Resolves when process `pid` has exited (pidfd; polling if unavailable).
async fn wait_pid(pid: i32) {
    // SAFETY: pidfd_open has no memory arguments; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        // SAFETY: the kernel just returned this new descriptor to us.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: `owned` is a valid open pidfd that the AsyncFd owns until it is dropped.
        let registered =
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) };
        if let Ok(afd) = registered {
            let _ = afd.readable().await;
            return;
        }
    }
    while Path::new(&format!("/proc/{pid}")).exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
