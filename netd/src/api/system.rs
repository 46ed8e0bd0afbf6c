//! `/_ping`, `/version`, `/info`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AppState, version};

pub(super) async fn ping() -> Response {
    let mut resp = "OK".into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Swarm", HeaderValue::from_static("inactive"));
    resp
}

fn engine_details(st: &AppState) -> Value {
    json!({
        "ApiVersion": version::MAX.to_string(),
        "MinAPIVersion": version::MIN.to_string(),
        "GitCommit": env!("NETD_GIT_COMMIT"),
        "GoVersion": env!("NETD_RUSTC_VERSION"),
        "Os": "linux",
        "Arch": st.host.arch,
        "KernelVersion": st.host.kernel_version,
        "BuildTime": "",
        "Experimental": "false",
    })
}

pub(super) async fn version(State(st): State<AppState>) -> Json<Value> {
    let details = engine_details(&st);
    let mut v = json!({
        "Platform": { "Name": format!("netd {}", env!("CARGO_PKG_VERSION")) },
        "Components": [{ "Name": "Engine", "Version": env!("CARGO_PKG_VERSION"), "Details": details }],
        "Version": env!("CARGO_PKG_VERSION"),
    });
    if let (Some(obj), Value::Object(d)) = (v.as_object_mut(), details) {
        obj.extend(d);
        // A string inside Details (a string map), a bool at the top level.
        obj.insert("Experimental".into(), Value::Bool(false));
    }
    Json(v)
}

pub(super) async fn info(State(st): State<AppState>) -> Result<Json<Value>, super::ApiError> {
    let networks = st.store.networks()?;
    let containers = st.runtime.list().map_err(super::ApiError::from)?;
    let c = &st.config;
    let mut drivers: Vec<&str> =
        networks.iter().map(|n| n.driver).filter(|d| d.implemented()).map(|d| d.as_str()).collect();
    drivers.sort_unstable();
    drivers.dedup();
    let status = st.reconcile.status();
    let mut warnings = Vec::new();
    if let Some(e) = &status.last_error {
        warnings.push(format!("WARNING: last reconcile pass failed: {e}"));
    }
    let nfd = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
    let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    Ok(Json(json!({
        "ID": st.node_id.to_string(),
        "Name": st.host.hostname,
        "Containers": containers.len(),
        "ContainersRunning": containers.iter().filter(|c| c.running()).count(),
        "ContainersPaused": 0,
        "ContainersStopped": containers.iter().filter(|c| !c.running()).count(),
        "Images": st.images.list().map(|l| l.len()).unwrap_or(0),
        "Driver": "",
        "DriverStatus": [],
        "Plugins": { "Volume": [], "Network": drivers, "Authorization": null, "Log": [] },
        "MemoryLimit": false, "SwapLimit": false, "CpuCfsPeriod": false, "CpuCfsQuota": false,
        "CPUShares": false, "CPUSet": false, "PidsLimit": false, "IPv4Forwarding": false,
        "Debug": matches!(c.log_level, crate::config::LogLevel::Debug | crate::config::LogLevel::Trace),
        "NFd": nfd,
        "NGoroutines": tasks,
        "SystemTime": jiff::Timestamp::now().to_string(),
        "LoggingDriver": "",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": st.host.cgroup_version,
        "NEventsListener": st.events.listeners(),
        "KernelVersion": st.host.kernel_version,
        "OperatingSystem": st.host.operating_system,
        "OSVersion": st.host.os_version,
        "OSType": "linux",
        "Architecture": st.host.arch,
        "IndexServerAddress": "",
        "NCPU": st.host.ncpu,
        "MemTotal": st.host.mem_total,
        "DockerRootDir": c.data_root,
        "Labels": c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "ExperimentalBuild": false,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": {},
        "DefaultRuntime": "",
        "Swarm": { "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null },
        "LiveRestoreEnabled": false,
        "Isolation": "",
        "InitBinary": "",
        "SecurityOptions": [],
        "Warnings": warnings,
        "Netd": {
            "LoadBalancer": lb_info(&st),
            "ExecRoot": c.exec_root,
            "BpfRoot": c.bpf_root,
            "Sockets": c.sockets,
            "Reconcile": {
                "Passes": status.passes,
                "LastChanges": status.last_changes,
                "LastError": status.last_error,
                "IntervalSeconds": c.reconcile_interval.as_secs(),
            },
        },
    })))
}

/// The load balancer as `/info` shows it: loaded or why not, what it runs
/// on, how many services it holds.
fn lb_info(st: &AppState) -> serde_json::Value {
    let Some(lb) = &st.lb else { return serde_json::json!({"Loaded": false, "Error": "not part of this daemon"}) };
    match lb.status() {
        Err(e) => serde_json::json!({"Loaded": false, "Error": e}),
        Ok(()) => serde_json::json!({
            "Loaded": true,
            "Services": lb.services().map(|s| s.len()).unwrap_or(0),
            "Interfaces": lb.attached().unwrap_or_default(),
            "PublishedOn": lb.node_addrs(),
        }),
    }
}

/// `GET /nodes`: the cluster's members as this node's gossip sees them.
pub(super) async fn nodes(State(st): State<AppState>) -> Result<Json<serde_json::Value>, super::ApiError> {
    let g = st.gossip.as_ref().ok_or_else(|| super::ApiError::Internal("cluster membership is not running".into()))?;
    let (members, health) = g.members().await.map_err(|e| super::ApiError::Internal(e.to_string()))?;
    Ok(Json(crate::cluster::nodes_json(&members, health, g.name())))
}
