//! The daemon's life: prepare the roots, take the data-root lock, open the
//! store, seed the pre-defined networks, run the first reconcile pass, serve the
//! API on every socket, and on SIGTERM/SIGINT stop serving, let requests finish
//! (bounded by `shutdown-timeout`) and remove the socket and pid file.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::api::{self, Ctx};
use crate::config::Config;
use crate::events::{Event, EventBus};
use crate::lb::Lb;
use crate::lock::{DataRootLock, LockError};
use crate::model::NetworkRecord;
use crate::reconcile::{self, Links, LinksError, NetlinkLinks};
use crate::socket::{self, SocketError};
use crate::store::{Store, StoreError};
use crate::sysinfo::HostFacts;

/// Why the daemon could not start (or stopped with an error).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::manager::RuntimeError),
    #[error("API socket: {0}")]
    Socket(#[from] SocketError),
    #[error(transparent)]
    Netlink(#[from] LinksError),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("bridge networking: {0}")]
    Network(#[from] crate::network::NetError),
    #[error("cannot install signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

fn make_dir(path: &Path, mode: u32) -> Result<(), DaemonError> {
    let err = |source| DaemonError::Dir { path: path.to_owned(), source };
    std::fs::DirBuilder::new().recursive(true).mode(mode).create(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutting down");
        let _ = stop_tx.send(true);
    });
    let links = NetlinkLinks::connect()?;
    run_with(config, links, stop_rx).await
}

/// Removes the API socket files this daemon bound when it stops or fails to
/// start (never one it found served by another daemon).
struct SocketFiles(Vec<PathBuf>);

impl Drop for SocketFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Lifts the soft limit on open files to the hard one: every container on a
/// user-defined network holds DNS sockets in netd (two, and up to
/// `dns::server::MAX_TCP` connections), beside the API's.
fn raise_nofile() {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 || r.rlim_cur >= r.rlim_max {
        return;
    }
    let before = r.rlim_cur;
    r.rlim_cur = r.rlim_max;
    // SAFETY: setrlimit reads one rlimit from the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } == 0 {
        tracing::debug!(from = before, to = r.rlim_cur, "raised the open-files limit");
    }
}

/// Loads the load balancer (pinned, re-adopting what a previous netd left),
/// runs it where published ports arrive, and programs the stored services.
async fn load_lb(config: &Config, store: Store, networks: &crate::network::Networks) -> Arc<Lb> {
    let (root, size) = (config.bpf_root.clone(), config.lb_table_size);
    let sockets = crate::runtime::cgroup::detect().ok().and_then(|l| l.unified_parent(&config.cgroup_parent));
    let world = match networks.underlay(config.lb_interfaces.as_deref()).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "published service ports are off");
            Vec::new()
        }
    };
    let lb = tokio::task::spawn_blocking(move || {
        let lb = Lb::load(store, &root, size);
        if lb.status().is_ok() {
            match lb.set_world(&world) {
                Ok(()) => tracing::info!(interfaces = ?world, "published service ports answer here"),
                Err(e) => tracing::error!(error = %e, "published service ports are off"),
            }
            match sockets.as_deref().map(|d| (d, lb.attach_sockets(d))) {
                Some((d, Ok(()))) => tracing::info!(cgroup = %d.display(), "containers' sockets balanced at connect"),
                Some((_, Err(e))) => tracing::warn!(error = %e, "socket-level balancing is off (per-packet NAT only)"),
                None => tracing::warn!("no cgroup v2 hierarchy: socket-level balancing is off (per-packet NAT only)"),
            }
            match lb.restore() {
                Ok(n) => tracing::info!(services = n, "services programmed"),
                Err(e) => tracing::error!(error = %e, "cannot program the stored services"),
            }
        }
        lb
    })
    .await;
    Arc::new(lb.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())))
}

/// Runs the load balancer on the veths of containers that ran before this
/// netd started (their links are re-adopted and switched to this program,
/// their ARP answers rewritten with their bridge's MAC).
async fn attach_running(lb: &Arc<Lb>, store: &Store, networks: &crate::network::Networks) {
    let Ok(all) = store.all::<crate::runtime::container::ContainerRecord>() else { return };
    let mut veths = Vec::new();
    for c in all.iter().filter(|c| c.state.status == crate::runtime::container::Status::Running) {
        for e in &c.endpoints {
            veths.push((e.host_ifname(), networks.bridge_mac(&e.network).await));
        }
    }
    let lb = lb.clone();
    let _ = tokio::task::spawn_blocking(move || veths.iter().for_each(|(v, mac)| lb.attach(v, *mac))).await;
}

/// Every 10 s until `stop`: forgets links of deleted veths and drops
/// tracked flows idle past their timeouts.
async fn lb_housekeeping(lb: Arc<Lb>, timeouts: ebpf::datapath::Timeouts, mut stop: watch::Receiver<bool>) {
    if lb.status().is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let lb = lb.clone();
        match tokio::task::spawn_blocking(move || lb.housekeeping(&timeouts)).await {
            Ok(Ok((links, flows))) if links + flows > 0 => tracing::debug!(links, flows, "load balancer upkeep"),
            Ok(Err(e)) => tracing::warn!(error = %e, "load balancer upkeep failed"),
            _ => {}
        }
    }
}

/// Runs the daemon with the given link layer until `stop` turns true.
pub async fn run_with<L: Links + Send + Sync + 'static>(
    config: Config,
    links: L,
    stop: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    make_dir(&config.data_root, 0o700)?;
    make_dir(&config.exec_root, 0o711)?;
    let _lock = DataRootLock::acquire(&config.data_root)?;
    raise_nofile();
    let pid_file = config.exec_root.join("netd.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(|source| DaemonError::Dir { path: pid_file.clone(), source })?;

    // Sockets first: a daemon already serving one is found before anything
    // is changed. Connections wait in the backlog until the API serves.
    let mut listeners = Vec::new();
    let mut bound = SocketFiles(Vec::new());
    for path in &config.sockets {
        listeners.push((path.clone(), socket::bind(path)?));
        bound.0.push(path.clone());
    }

    let store = Store::open(&config.data_root.join("netd.db"))?;
    let node_id = store.node_id()?;
    let events = Arc::new(EventBus::default());
    let now = jiff::Timestamp::now().to_string();
    for n in store.ensure_networks(NetworkRecord::predefined_set(&now))? {
        tracing::info!(network = %n.name, id = %n.id.short(), driver = n.driver.as_str(), "created pre-defined network");
        events.publish(Event::now(
            "network",
            "create",
            n.id.as_str(),
            &[("name", &n.name), ("type", n.driver.as_str())],
        ));
    }

    let images = crate::image::ImageStore::open(config.data_root.join("images"), store.clone())?;
    images.clean()?;
    match images.ensure_busybox(std::path::Path::new(crate::image::HOST_BUSYBOX)) {
        Ok(Some(img)) => {
            tracing::info!(image = %img.id.short(), "created busybox:latest from the host's busybox-static");
            events.publish(Event::now("image", "import", &format!("sha256:{}", img.id), &[("name", "busybox:latest")]));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot provide the busybox image"),
    }

    let volumes = crate::volume::VolumeStore::open(config.data_root.join("volumes"), store.clone())?;
    let runtime = crate::runtime::manager::Runtime::new(
        store.clone(),
        images.clone(),
        volumes.clone(),
        events.clone(),
        crate::runtime::manager::Paths {
            data: config.data_root.join("containers"),
            exec: config.exec_root.join("containers"),
            cgroup_parent: config.cgroup_parent.clone(),
            netd_exe: std::env::current_exe()
                .map_err(|e| DaemonError::Dir { path: "/proc/self/exe".into(), source: e })?,
        },
    )?;
    let networks = crate::network::Networks::connect(store.clone(), config.bridge_netfilter)?;
    networks.init().await?;
    runtime.set_networks(networks.clone());
    let lb = load_lb(&config, store.clone(), &networks).await;
    networks.set_lb(lb.clone());
    // Before adoption: re-adopted containers get their DNS sockets back.
    runtime.set_dns(crate::embedded_dns::EmbeddedDns::new(&config.dns));
    runtime.adopt().await?;
    attach_running(&lb, &store, &networks).await;
    let housekeeping = tokio::spawn(lb_housekeeping(lb.clone(), config.lb_timeouts, stop.clone()));

    let host = HostFacts::read();
    // A keyring rotated through the API outlives restarts (the config
    // file's gossip-keys only seed a node that never rotated).
    let mut gossip_cfg = config.gossip.clone();
    match store.meta(crate::cluster::KEYRING_META)?.map(|m| crate::cluster::keyring_from_meta(&m)) {
        Some(Ok(keys)) if !keys.is_empty() => {
            if keys != gossip_cfg.keys {
                tracing::info!(
                    keys = keys.len(),
                    "gossip keyring from the store (rotated through the API), not the config file's"
                );
            }
            gossip_cfg.keys = keys;
        }
        Some(Err(e)) => tracing::error!(error = %e, "ignoring the stored gossip keyring; using the config file's"),
        _ => {}
    }
    let gossip = crate::cluster::start(&gossip_cfg, &host.hostname, node_id.as_str()).await?;

    let (reconcile, reconcile_task) =
        reconcile::spawn(store.clone(), links, Some(networks.clone()), config.reconcile_interval, stop.clone()).await;

    let ctx = Arc::new(Ctx {
        store,
        runtime,
        networks: Some(networks),
        images,
        volumes,
        events,
        config: config.clone(),
        reconcile,
        node_id: node_id.clone(),
        host,
        gossip: Some(gossip.clone()),
        lb: Some(lb),
        shutdown: stop.clone(),
        networks_json: Default::default(),
    });
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(api::app(ctx));
    let mut servers = tokio::task::JoinSet::new();
    for (path, listener) in listeners {
        let mut stop = stop.clone();
        let app = app.clone();
        servers.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(socket = %path.display(), error = %e, "API server failed");
            }
        });
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node_id = %node_id.short(),
        data_root = %config.data_root.display(),
        sockets = ?config.sockets,
        "netd started"
    );

    let mut stop_wait = stop.clone();
    let _ = stop_wait.wait_for(|s| *s).await;
    let drained =
        tokio::time::timeout(config.shutdown_timeout, async { while servers.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(timeout = ?config.shutdown_timeout, "API connections still open at shutdown timeout; closing them");
        servers.abort_all();
    }
    let _ = reconcile_task.await;
    let _ = housekeeping.await;
    // Tell the cluster this node leaves (not fails); bounded.
    if tokio::time::timeout(std::time::Duration::from_secs(3), gossip.leave()).await.is_err() {
        tracing::warn!("leaving the cluster timed out");
    }
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("netd stopped");
    Ok(())
}
