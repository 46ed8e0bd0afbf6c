//! `/containers`: create, list, inspect, start, stop, restart, kill, wait,
//! remove, logs, attach, top. Output streams use Docker's multiplexed framing
//! (8-byte header: stream, 0, 0, 0, big-endian length) since netd containers
//! have no TTY yet.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::filters::{Filters, label_matches};
use super::{ApiError, AppState, RawBody, bool_param, frame, json_body, query};
use crate::runtime::container::{ContainerRecord, Status};
use crate::runtime::logfile::Entry;
use crate::runtime::manager::{Runtime, RuntimeError};
use crate::runtime::spec::{ApiCreate, ContainerSpec, MountKind, NetworkMode, RestartPolicy, SpecError, parse_signal};

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> ApiError {
        match e {
            RuntimeError::NotFound(_) => ApiError::NotFound(e.to_string()),
            RuntimeError::Conflict(_) => ApiError::Conflict(e.to_string()),
            RuntimeError::BadRequest(_) => ApiError::BadRequest(e.to_string()),
            RuntimeError::Image(i) => i.into(),
            RuntimeError::Network(n) => n.into(),
            RuntimeError::Volume(v) => v.into(),
            RuntimeError::Cgroup(c) => ApiError::BadRequest(c.to_string()),
            RuntimeError::Store(_) | RuntimeError::Internal(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn secs(t: &str) -> i64 {
    t.parse::<jiff::Timestamp>().map(|t| t.as_second()).unwrap_or(0)
}

fn zero_time(t: &str) -> &str {
    if t.is_empty() { "0001-01-01T00:00:00Z" } else { t }
}

fn command_line(c: &ContainerRecord) -> String {
    c.args.join(" ")
}

fn mounts_json(c: &ContainerRecord) -> Vec<Value> {
    c.mounts
        .iter()
        .map(|m| {
            let kind = match m.kind {
                MountKind::Bind => "bind",
                MountKind::Volume => "volume",
                MountKind::Tmpfs => "tmpfs",
            };
            json!({
                "Type": kind,
                "Name": if m.kind == MountKind::Volume { m.name.as_str() } else { "" },
                "Source": m.source,
                "Destination": m.target,
                "Driver": if m.kind == MountKind::Volume { "local" } else { "" },
                "Mode": if m.read_only { "ro" } else { "" },
                "RW": !m.read_only,
                "Propagation": "",
            })
        })
        .collect()
}

fn network_mode(c: &ContainerRecord) -> String {
    match c.spec.network {
        NetworkMode::None => "none".into(),
        NetworkMode::Host => "host".into(),
        NetworkMode::Bridge => c.spec.networks.first().map(|n| n.network.clone()).unwrap_or_else(|| "bridge".into()),
    }
}

fn port_key(port: u16, proto: crate::firewall::Proto) -> String {
    format!("{port}/{}", proto.as_str())
}

fn endpoint_json(c: &ContainerRecord, e: &crate::model::Endpoint) -> Value {
    let mut dns = vec![c.name.clone(), c.id.short().to_owned()];
    dns.extend(e.aliases.iter().cloned());
    json!({
        "IPAMConfig": if e.static_ip { json!({ "IPv4Address": e.ip.to_string() }) } else { Value::Null },
        "Links": null,
        "Aliases": if e.aliases.is_empty() { Value::Null } else { json!(e.aliases) },
        "MacAddress": e.mac,
        "DriverOpts": null,
        "NetworkID": e.network.to_string(),
        "EndpointID": e.id,
        "Gateway": e.gateway.to_string(),
        "IPAddress": e.ip.to_string(),
        "IPPrefixLen": e.prefix,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": dns,
    })
}

fn networks_json(c: &ContainerRecord) -> Value {
    let mut m = serde_json::Map::new();
    for e in &c.endpoints {
        m.insert(e.network_name.clone(), endpoint_json(c, e));
    }
    if c.spec.network != NetworkMode::Bridge {
        m.insert(
            network_mode(c),
            json!({ "NetworkID": "", "EndpointID": "", "IPAddress": "", "Gateway": "", "MacAddress": "" }),
        );
    }
    Value::Object(m)
}

/// `NetworkSettings.Ports`: every exposed or published port, with its host
/// bindings while running (null when not published).
fn ports_json(c: &ContainerRecord) -> Value {
    let mut m = serde_json::Map::new();
    for (port, proto) in &c.spec.exposed {
        m.insert(port_key(*port, *proto), Value::Null);
    }
    for r in &c.spec.ports {
        m.entry(port_key(r.container_port, r.proto)).or_insert(Value::Null);
    }
    for p in &c.state.ports {
        let v = m.entry(port_key(p.container_port, p.proto)).or_insert(Value::Null);
        if v.is_null() {
            *v = json!([]);
        }
        if let Value::Array(a) = v {
            a.push(json!({
                "HostIp": p.host_ip.map(|i| i.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
                "HostPort": p.host_port.to_string(),
            }));
        }
    }
    Value::Object(m)
}

fn port_bindings_json(c: &ContainerRecord) -> Value {
    let mut m = serde_json::Map::new();
    for r in &c.spec.ports {
        let host_port = match r.host_ports {
            (0, 0) => String::new(),
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}-{b}"),
        };
        let v = m.entry(port_key(r.container_port, r.proto)).or_insert_with(|| json!([]));
        if let Value::Array(a) = v {
            a.push(json!({ "HostIp": r.host_ip.map(|i| i.to_string()).unwrap_or_default(), "HostPort": host_port }));
        }
    }
    Value::Object(m)
}

fn primary(c: &ContainerRecord) -> (String, String, u8, String) {
    match c.endpoints.first() {
        Some(e) => (e.ip.to_string(), e.gateway.to_string(), e.prefix, e.mac.clone()),
        None => Default::default(),
    }
}

fn summary(c: &ContainerRecord) -> Value {
    json!({
        "Id": c.id.to_string(),
        "Names": [format!("/{}", c.name)],
        "Image": c.image,
        "ImageID": format!("sha256:{}", c.image_id),
        "Command": command_line(c),
        "Created": secs(&c.created),
        "Ports": c.state.ports.iter().map(|p| json!({
            "IP": p.host_ip.map(|i| i.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
            "PrivatePort": p.container_port,
            "PublicPort": p.host_port,
            "Type": p.proto.as_str(),
        })).collect::<Vec<_>>(),
        "Labels": c.spec.labels,
        "State": c.state.status.as_str(),
        "Status": c.status_text(now()),
        "HostConfig": { "NetworkMode": network_mode(c) },
        "NetworkSettings": { "Networks": networks_json(c) },
        "Mounts": mounts_json(c),
    })
}

fn restart_json(p: &RestartPolicy) -> Value {
    match p {
        RestartPolicy::No => json!({ "Name": "no", "MaximumRetryCount": 0 }),
        RestartPolicy::OnFailure { max_retries } => json!({ "Name": "on-failure", "MaximumRetryCount": max_retries }),
        RestartPolicy::Always => json!({ "Name": "always", "MaximumRetryCount": 0 }),
        RestartPolicy::UnlessStopped => json!({ "Name": "unless-stopped", "MaximumRetryCount": 0 }),
    }
}

fn inspect_json(rt: &Runtime, c: &ContainerRecord) -> Value {
    let s = &c.state;
    let data = rt.log_path(&c.id);
    let dir = data.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    json!({
        "Id": c.id.to_string(),
        "Created": c.created,
        "Path": c.args.first().cloned().unwrap_or_default(),
        "Args": c.args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": s.status.as_str(),
            "Running": s.status == Status::Running,
            "Paused": false,
            "Restarting": s.status == Status::Restarting,
            "OOMKilled": false,
            "Dead": s.status == Status::Dead,
            "Pid": s.pid,
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": zero_time(&s.started_at),
            "FinishedAt": zero_time(&s.finished_at),
        },
        "Image": format!("sha256:{}", c.image_id),
        "ResolvConfPath": dir.join("resolv.conf"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        "LogPath": data,
        "Name": format!("/{}", c.name),
        "RestartCount": s.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "ExecIDs": null,
        "HostConfig": {
            "NetworkMode": network_mode(c),
            "RestartPolicy": restart_json(&c.spec.restart),
            "AutoRemove": c.spec.auto_remove,
            "Memory": c.spec.limits.memory_bytes.unwrap_or(0),
            "NanoCpus": c.spec.limits.nano_cpus.unwrap_or(0),
            "PidsLimit": c.spec.limits.pids,
            "PortBindings": port_bindings_json(c),
            "PublishAllPorts": c.spec.publish_all,
            "Dns": c.spec.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "DnsSearch": c.spec.dns_search,
            "DnsOptions": c.spec.dns_options,
            "Binds": c.mounts.iter().filter(|m| m.kind != MountKind::Tmpfs)
                .map(|m| format!("{}:{}{}", m.name, m.target, if m.read_only { ":ro" } else { "" })).collect::<Vec<_>>(),
        },
        "GraphDriver": { "Name": "overlay", "Data": { "UpperDir": dir.join("upper"), "WorkDir": dir.join("work") } },
        "Mounts": mounts_json(c),
        "Config": {
            "Hostname": c.hostname,
            "User": c.spec.user,
            "Tty": c.spec.tty,
            "ExposedPorts": c.spec.exposed.iter().map(|(p, proto)| (port_key(*p, *proto), json!({}))).collect::<serde_json::Map<_, _>>(),
            "OpenStdin": c.spec.open_stdin,
            "Env": c.env,
            "Cmd": c.spec.cmd,
            "Image": c.image,
            "WorkingDir": c.spec.working_dir,
            "Entrypoint": if c.spec.entrypoint.is_empty() { Value::Null } else { json!(c.spec.entrypoint) },
            "Labels": c.spec.labels,
            "StopSignal": c.spec.stop_signal.to_string(),
            "StopTimeout": c.spec.stop_timeout,
        },
        "NetworkSettings": {
            "Networks": networks_json(c),
            "Ports": ports_json(c),
            "SandboxKey": if s.pid > 0 && c.spec.network != NetworkMode::Host { format!("/proc/{}/ns/net", s.pid) } else { String::new() },
            "IPAddress": primary(c).0,
            "Gateway": primary(c).1,
            "IPPrefixLen": primary(c).2,
            "MacAddress": primary(c).3,
        },
    })
}

#[derive(Deserialize, Default)]
struct CreateQuery {
    name: Option<String>,
    platform: Option<String>,
}

pub(super) async fn create(
    State(st): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let q: CreateQuery = query(&uri)?;
    if let Some(p) = q.platform.as_deref().filter(|p| !p.is_empty() && !p.starts_with("linux")) {
        return Err(ApiError::BadRequest(format!("platform {p:?} is not supported: netd runs linux containers")));
    }
    let req: ApiCreate = json_body(&headers, &body)?;
    let spec = ContainerSpec::from_api(req)?;
    let c = st.runtime.create(spec, q.name.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(json!({ "Id": c.id.to_string(), "Warnings": [] }))).into_response())
}

#[derive(Deserialize, Default)]
struct ListQuery {
    all: Option<String>,
    limit: Option<i64>,
    filters: Option<String>,
}

pub(super) async fn list(State(st): State<AppState>, uri: Uri) -> Result<Json<Vec<Value>>, ApiError> {
    let q: ListQuery = query(&uri)?;
    let all = bool_param("all", q.all.as_deref())?;
    let f = Filters::parse(q.filters.as_deref(), &["id", "name", "status", "label", "exited", "ancestor"])?;
    f.expect_values("status", &["created", "restarting", "running", "removing", "paused", "exited", "dead"])?;
    let mut cs = st.runtime.list()?;
    cs.sort_by_key(|c| std::cmp::Reverse(secs(&c.created)));
    let mut out: Vec<Value> = cs
        .iter()
        .filter(|c| (all || c.running() || !f.get("status").is_empty()) || q.limit.is_some_and(|l| l > 0))
        .filter(|c| {
            f.any("id", |v| c.id.as_str().starts_with(v))
                && f.any("name", |v| c.name.contains(v.trim_start_matches('/')))
                && f.any("status", |v| v == c.state.status.as_str())
                && f.get("label").iter().all(|l| label_matches(&c.spec.labels, l))
                && f.any("exited", |v| c.state.status == Status::Exited && v == c.state.exit_code.to_string())
                && f.any("ancestor", |v| {
                    c.image == v || c.image_id.as_str().starts_with(v.trim_start_matches("sha256:"))
                })
        })
        .map(summary)
        .collect();
    if let Some(l) = q.limit.filter(|l| *l > 0) {
        out.truncate(l as usize);
    }
    Ok(Json(out))
}

pub(super) async fn inspect(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let c = st.runtime.find(&id)?;
    Ok(Json(inspect_json(&st.runtime, &c)))
}

pub(super) async fn start(State(st): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    Ok(if st.runtime.start(&id).await? { StatusCode::NO_CONTENT } else { StatusCode::NOT_MODIFIED })
}

#[derive(Deserialize, Default)]
struct StopQuery {
    t: Option<i64>,
    timeout: Option<i64>,
    signal: Option<String>,
}

fn stop_timeout(q: &StopQuery) -> Result<Option<u32>, ApiError> {
    match q.t.or(q.timeout) {
        None => Ok(None),
        Some(t) if t < 0 => Ok(Some(86_400)),
        Some(t) if t <= 86_400 => Ok(Some(t as u32)),
        Some(t) => Err(ApiError::BadRequest(format!("invalid timeout {t}: at most 86400 seconds"))),
    }
}

pub(super) async fn stop(State(st): State<AppState>, Path(id): Path<String>, uri: Uri) -> Result<StatusCode, ApiError> {
    let q: StopQuery = query(&uri)?;
    let t = stop_timeout(&q)?;
    if q.signal.is_some() {
        return Err(ApiError::NotImplemented("stop with a custom signal is not supported yet: use kill".into()));
    }
    Ok(if st.runtime.stop(&id, t).await? { StatusCode::NO_CONTENT } else { StatusCode::NOT_MODIFIED })
}

pub(super) async fn restart(
    State(st): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let q: StopQuery = query(&uri)?;
    let t = stop_timeout(&q)?;
    st.runtime.stop(&id, t).await?;
    st.runtime.start(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
struct KillQuery {
    signal: Option<String>,
}

pub(super) async fn kill(State(st): State<AppState>, Path(id): Path<String>, uri: Uri) -> Result<StatusCode, ApiError> {
    let q: KillQuery = query(&uri)?;
    let sig = match q.signal.as_deref().filter(|s| !s.is_empty()) {
        None => 9,
        Some(s) => parse_signal(s)?,
    };
    st.runtime.find(&id)?;
    st.runtime.kill(&id, sig).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
struct WaitQuery {
    condition: Option<String>,
}

pub(super) async fn wait(State(st): State<AppState>, Path(id): Path<String>, uri: Uri) -> Result<Response, ApiError> {
    let q: WaitQuery = query(&uri)?;
    let c = st.runtime.find(&id)?;
    let cond = q.condition.unwrap_or_else(|| "not-running".into());
    if !["not-running", "next-exit", "removed"].contains(&cond.as_str()) {
        return Err(ApiError::BadRequest(format!("invalid condition {cond:?}: not-running, next-exit or removed")));
    }
    // Headers go out now, the status code when the condition holds: the
    // docker client waits for these headers before it starts the container.
    let rt = st.runtime.clone();
    let body = futures::stream::once(async move {
        let code = wait_code(&rt, c, &cond).await;
        Ok::<_, std::convert::Infallible>(Bytes::from(format!("{}\n", json!({ "StatusCode": code, "Error": null }))))
    });
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// Waits for `cond` and returns the exit code last seen.
async fn wait_code(rt: &Runtime, c: ContainerRecord, cond: &str) -> i32 {
    if cond == "not-running" && !c.running() && c.state.status != Status::Created {
        return c.state.exit_code;
    }
    let exits = c.state.exits;
    let last = std::sync::Mutex::new(c.clone());
    let done = |x: Option<&ContainerRecord>| {
        if let Some(x) = x {
            *last.lock().unwrap_or_else(|p| p.into_inner()) = x.clone();
        }
        match (cond, x) {
            (_, None) => true,
            ("removed", Some(_)) => false,
            (_, Some(x)) => x.state.exits > exits && x.state.status != Status::Restarting,
        }
    };
    let now = rt.wait_for(&c.id, done).await;
    match now {
        Some(x) => x.state.exit_code,
        None => rt
            .removed_exit_code(&c.id)
            .unwrap_or_else(|| last.lock().unwrap_or_else(|p| p.into_inner()).state.exit_code),
    }
}

#[derive(Deserialize, Default)]
struct RemoveQuery {
    force: Option<String>,
    v: Option<String>,
    link: Option<String>,
}

pub(super) async fn remove(
    State(st): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let q: RemoveQuery = query(&uri)?;
    let force = bool_param("force", q.force.as_deref())?;
    let v = bool_param("v", q.v.as_deref())?;
    if bool_param("link", q.link.as_deref())? {
        return Err(ApiError::BadRequest("links are not supported".into()));
    }
    st.runtime.remove(&id, force, v).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn top(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let c = st.runtime.find(&id)?;
    if c.state.status != Status::Running {
        return Err(ApiError::Conflict(format!("Container {} is not running", c.id)));
    }
    let pids = st.runtime.pids(&c);
    let procs: Vec<Value> = pids
        .iter()
        .map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let cmd: Vec<String> = cmd
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            json!([p.to_string(), cmd.join(" ")])
        })
        .collect();
    Ok(Json(json!({ "Titles": ["PID", "CMD"], "Processes": procs })))
}

/// Which streams, and how to print them.
#[derive(Clone, Copy, Debug)]
struct Select {
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    /// A TTY container: one raw stream, no frame headers (as Docker sends).
    raw: bool,
}

fn entry_frame(e: &Entry, sel: Select) -> Option<Bytes> {
    let (id, want) = if e.stream == "stderr" { (2, sel.stderr) } else { (1, sel.stdout) };
    if !want {
        return None;
    }
    let text = if sel.timestamps { format!("{} {}", e.time, e.log) } else { e.log.clone() };
    Some(if sel.raw { Bytes::from(text) } else { frame(id, text.as_bytes()) })
}

/// When a followed stream ends.
#[derive(Clone, Copy, Debug)]
enum End {
    /// As soon as the container is not running (logs -f).
    NotRunning,
    /// After the container's next exit (attach before start).
    ExitAfter(u64),
}

/// Streams frames of new log entries from `offset` on until `end`.
fn follow(rt: Arc<Runtime>, c: ContainerRecord, offset: u64, sel: Select, end: End) -> impl Stream<Item = Bytes> {
    struct St {
        file: Option<std::fs::File>,
        ino: u64,
        offset: u64,
        partial: Vec<u8>,
        done: bool,
    }
    let path = rt.log_path(&c.id);
    let open = |p: &std::path::Path| {
        std::fs::File::open(p).ok().map(|f| {
            let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
            (f, ino)
        })
    };
    let (file, ino) = match open(&path) {
        Some((f, i)) => (Some(f), i),
        None => (None, 0),
    };
    let state = St { file, ino, offset, partial: Vec::new(), done: false };
    futures::stream::unfold(state, move |mut s| {
        let rt = rt.clone();
        let path = path.clone();
        let id = c.id.clone();
        async move {
            loop {
                if s.done {
                    return None;
                }
                if s.file.is_none()
                    && let Some((f, i)) = open(&path)
                {
                    s.file = Some(f);
                    s.ino = i;
                }
                let mut fresh = Vec::new();
                if let Some(f) = s.file.as_mut()
                    && f.seek(SeekFrom::Start(s.offset)).is_ok()
                {
                    let _ = f.read_to_end(&mut fresh);
                    s.offset += fresh.len() as u64;
                }
                s.partial.extend_from_slice(&fresh);
                let mut out = Vec::new();
                while let Some(i) = s.partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = s.partial.drain(..=i).collect();
                    if let Ok(e) = serde_json::from_slice::<Entry>(&line)
                        && let Some(fr) = entry_frame(&e, sel)
                    {
                        out.extend_from_slice(&fr);
                    }
                }
                if !out.is_empty() {
                    return Some((Bytes::from(out), s));
                }
                if fresh.is_empty() {
                    let rec = rt.find(id.as_str()).ok();
                    let finished = match (end, &rec) {
                        (_, None) => true,
                        (End::NotRunning, Some(r)) => !r.running(),
                        (End::ExitAfter(n), Some(r)) => r.state.exits > n && r.state.status != Status::Restarting,
                    };
                    // The shim writes every line before the exit record, so
                    // once finished the file holds all there is: one last read.
                    if finished {
                        s.done = true;
                        continue;
                    }
                    // Rotated: the path now names a new file.
                    if let Some((f, i)) = open(&path)
                        && i != s.ino
                    {
                        s.file = Some(f);
                        s.ino = i;
                        s.offset = 0;
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

#[derive(Deserialize, Default)]
struct LogsQuery {
    follow: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    timestamps: Option<String>,
    tail: Option<String>,
    since: Option<String>,
    until: Option<String>,
    details: Option<String>,
}

pub(super) async fn logs(State(st): State<AppState>, Path(id): Path<String>, uri: Uri) -> Result<Response, ApiError> {
    let q: LogsQuery = query(&uri)?;
    let c = st.runtime.find(&id)?;
    let sel = Select {
        stdout: bool_param("stdout", q.stdout.as_deref())?,
        stderr: bool_param("stderr", q.stderr.as_deref())?,
        timestamps: bool_param("timestamps", q.timestamps.as_deref())?,
        raw: c.spec.tty,
    };
    bool_param("details", q.details.as_deref())?;
    if !sel.stdout && !sel.stderr {
        return Err(ApiError::BadRequest("you must choose at least one stream".into()));
    }
    let follow_on = bool_param("follow", q.follow.as_deref())?;
    let tail = match q.tail.as_deref() {
        None | Some("") | Some("all") => None,
        Some(t) => Some(
            t.parse::<usize>().map_err(|_| ApiError::BadRequest(format!("invalid tail {t:?}: a number or \"all\"")))?,
        ),
    };
    let ts = |name: &str, v: Option<&str>| -> Result<Option<i64>, ApiError> {
        match v.filter(|v| !v.is_empty() && *v != "0") {
            None => Ok(None),
            Some(v) => super::events::parse_timestamp(name, v).map(Some),
        }
    };
    let since = ts("since", q.since.as_deref())?;
    let until = ts("until", q.until.as_deref())?;
    let c_tty = c.spec.tty;
    let path = st.runtime.log_path(&c.id);
    let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let entries = crate::runtime::logfile::read_all(&path, crate::runtime::logfile::DEFAULT_MAX_FILES);
    let nanos = |e: &Entry| e.time.parse::<jiff::Timestamp>().map(|t| t.as_nanosecond() as i64).unwrap_or(0);
    let mut picked: Vec<&Entry> = entries
        .iter()
        .filter(|e| since.is_none_or(|s| nanos(e) >= s) && until.is_none_or(|u| nanos(e) <= u))
        .filter(|e| if e.stream == "stderr" { sel.stderr } else { sel.stdout })
        .collect();
    if let Some(n) = tail {
        picked = picked.split_off(picked.len().saturating_sub(n));
    }
    let past: Vec<Bytes> = picked.iter().filter_map(|e| entry_frame(e, sel)).collect();
    let past = futures::stream::iter(past);
    let body = if follow_on && c.running() {
        let live = follow(st.runtime.clone(), c, offset, sel, End::NotRunning);
        Body::from_stream(past.chain(live).map(Ok::<_, std::convert::Infallible>))
    } else {
        Body::from_stream(past.map(Ok::<_, std::convert::Infallible>))
    };
    let mut resp = Response::new(body);
    let ct = if c_tty { super::RAW_STREAM } else { super::MULTIPLEXED };
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(resp)
}

#[derive(Deserialize, Default)]
struct AttachQuery {
    stream: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    stdin: Option<String>,
    logs: Option<String>,
    #[serde(rename = "detachKeys")]
    detach_keys: Option<String>,
}

pub(super) async fn attach(
    State(st): State<AppState>,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let q: AttachQuery = query(req.uri())?;
    let c = st.runtime.find(&id)?;
    let sel = Select {
        stdout: bool_param("stdout", q.stdout.as_deref())?,
        stderr: bool_param("stderr", q.stderr.as_deref())?,
        timestamps: false,
        raw: c.spec.tty,
    };
    let stream_on = bool_param("stream", q.stream.as_deref())?;
    let logs_on = bool_param("logs", q.logs.as_deref())?;
    let stdin_on = bool_param("stdin", q.stdin.as_deref())?;
    let _ = q.detach_keys;
    let path = st.runtime.log_path(&c.id);
    let offset = if logs_on { 0 } else { std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) };
    let end = if c.running() { End::NotRunning } else { End::ExitAfter(c.state.exits) };
    let ct = if c.spec.tty { super::RAW_STREAM } else { super::MULTIPLEXED };
    let input = (stdin_on && c.spec.open_stdin).then(|| forward_input(st.runtime.clone(), c.clone()));
    let frames: std::pin::Pin<Box<dyn Stream<Item = Bytes> + Send>> = if stream_on {
        Box::pin(follow(st.runtime.clone(), c, offset, sel, end))
    } else {
        let entries = crate::runtime::logfile::read_all(&path, crate::runtime::logfile::DEFAULT_MAX_FILES);
        let frames: Vec<Bytes> =
            if logs_on { entries.iter().filter_map(|e| entry_frame(e, sel)).collect() } else { vec![] };
        Box::pin(futures::stream::iter(frames))
    };
    if req.headers().contains_key(header::UPGRADE) {
        return Ok(super::hijack(hyper::upgrade::on(&mut req), frames, input, ct));
    }
    let mut resp = Response::new(Body::from_stream(frames.map(Ok::<_, std::convert::Infallible>)));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(resp)
}

/// Relays what an attached client types to the container: waits until it
/// runs (attach comes before start in `docker run`), fetches its input
/// descriptor from the shim, and copies until the client's input ends.
fn forward_input(rt: Arc<Runtime>, c: ContainerRecord) -> tokio::sync::mpsc::Sender<Bytes> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let exits = c.state.exits;
        let now =
            rt.wait_for(&c.id, |x| x.is_none_or(|x| x.state.status == Status::Running || x.state.exits > exits)).await;
        let Some(now) = now.filter(|x| x.state.status == Status::Running) else { return };
        let rt2 = rt.clone();
        let fd = match tokio::task::spawn_blocking(move || rt2.input_fd(&now)).await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                tracing::debug!(container = %c.name, error = %e, "no input to attach to");
                return;
            }
            Err(_) => return,
        };
        let mut sink = tokio::fs::File::from_std(fd);
        while let Some(chunk) = rx.recv().await {
            if tokio::io::AsyncWriteExt::write_all(&mut sink, &chunk).await.is_err() {
                break;
            }
        }
        // Dropping `sink` closes netd's copy: for a stdin pipe that is EOF.
    });
    tx
}

pub(super) async fn resize(
    State(st): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let (h, w) = super::resize_dims(&uri)?;
    let rt = st.runtime.clone();
    tokio::task::spawn_blocking(move || rt.resize(&id, h, w))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_have_dockers_header() {
        let f = super::super::frame(2, b"oops\n");
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(&f[8..], b"oops\n");
    }
}
