//! `/networks`: list, inspect, create, remove, connect, disconnect, prune.
//! Names resolve as dockerd resolves them: full id, then exact name, then a
//! unique id prefix.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;

use super::filters::{Filters, label_matches};
use super::types::{Network, NetworkConnect, NetworkCreate};
use super::{ApiError, AppState, RawBody, bool_param, json_body, query};
use crate::events::Event;
use crate::model::{Driver, NetworkRecord, valid_name};
use crate::network::{CreateRequest, NetError};
use crate::runtime::container::ContainerRecord;

impl From<NetError> for ApiError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::NotFound(m) => ApiError::NotFound(m),
            NetError::Conflict(m) => ApiError::Conflict(m),
            NetError::BadRequest(m) => ApiError::BadRequest(m),
            NetError::Forbidden(m) => ApiError::Forbidden(m),
            NetError::Ipam(crate::ipam::IpamError::InUse(a)) => {
                ApiError::Conflict(format!("address {a} is already in use"))
            }
            NetError::Ipam(i) => ApiError::BadRequest(i.to_string()),
            e @ (NetError::Kernel(_) | NetError::Store(_) | NetError::Firewall(_)) => ApiError::Internal(e.to_string()),
        }
    }
}

/// The API view of a network, with the containers attached to it.
fn network_json(n: &NetworkRecord, containers: &[ContainerRecord]) -> Network {
    let mut out = Network::from(n);
    for c in containers {
        for e in c.endpoints.iter().filter(|e| e.network == n.id) {
            out.containers.insert(
                c.id.to_string(),
                json!({
                    "Name": c.name,
                    "EndpointID": e.id,
                    "MacAddress": e.mac,
                    "IPv4Address": format!("{}/{}", e.ip, e.prefix),
                    "IPv6Address": "",
                }),
            );
        }
    }
    out
}

fn containers(st: &AppState) -> Result<Vec<ContainerRecord>, ApiError> {
    Ok(st.store.all::<ContainerRecord>()?)
}

#[derive(Deserialize, Default)]
struct ListQuery {
    filters: Option<String>,
}

#[derive(Deserialize, Default)]
struct InspectQuery {
    verbose: Option<String>,
    scope: Option<String>,
}

/// Finds a network by full id, exact name or unique id prefix.
pub(crate) fn resolve(st: &AppState, key: &str) -> Result<NetworkRecord, ApiError> {
    let all = st.store.networks()?;
    Ok(crate::network::resolve(&all, key)?.clone())
}

pub(super) async fn list(State(st): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    if uri.query().is_none_or(str::is_empty) {
        return cached_list(&st);
    }
    let q: ListQuery = query(&uri)?;
    let f = Filters::parse(q.filters.as_deref(), &["dangling", "driver", "id", "label", "name", "scope", "type"])?;
    f.expect_values("type", &["custom", "builtin"])?;
    f.expect_values("scope", &["local", "swarm", "global"])?;
    f.expect_values("dangling", &["true", "false", "1", "0"])?;
    let nets = st.store.networks()?;
    let all = containers(&st)?;
    let used = |n: &NetworkRecord| all.iter().any(|c| c.endpoints.iter().any(|e| e.network == n.id));
    let mut out: Vec<Network> = nets
        .iter()
        .filter(|n| {
            f.any("name", |v| n.name.contains(v))
                && f.any("id", |v| n.id.as_str().starts_with(v))
                && f.any("driver", |v| n.driver.as_str() == v)
                && f.get("label").iter().all(|l| label_matches(&n.labels, l))
                && f.any("scope", |v| n.scope.as_str() == v)
                && f.any("type", |v| (v == "builtin") == n.predefined)
                && f.any("dangling", |v| matches!(v, "true" | "1") == (!n.predefined && !used(n)))
        })
        .map(|n| network_json(n, &all))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(out).into_response())
}

/// The unfiltered list from the snapshot, rebuilt when the store changed.
fn cached_list(st: &AppState) -> Result<Response, ApiError> {
    let generation = st.store.generation();
    let hit = {
        let c = st.networks_json.read().unwrap_or_else(|p| p.into_inner());
        (c.0 == generation && !c.1.is_empty()).then(|| c.1.clone())
    };
    let body = match hit {
        Some(b) => b,
        None => {
            let all = containers(st)?;
            let mut out: Vec<Network> = st.store.networks()?.iter().map(|n| network_json(n, &all)).collect();
            out.sort_by(|a, b| a.name.cmp(&b.name));
            let b = Bytes::from(serde_json::to_vec(&out).map_err(|e| ApiError::Internal(e.to_string()))?);
            *st.networks_json.write().unwrap_or_else(|p| p.into_inner()) = (generation, b.clone());
            b
        }
    };
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub(super) async fn inspect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<Network>, ApiError> {
    let q: InspectQuery = query(&uri)?;
    bool_param("verbose", q.verbose.as_deref())?;
    if let Some(s) = q.scope.as_deref()
        && !["", "local", "swarm", "global"].contains(&s)
    {
        return Err(ApiError::BadRequest(format!("invalid scope {s:?}: expected local, swarm or global")));
    }
    let n = resolve(&st, &id)?;
    if let Some(s) = q.scope.as_deref().filter(|s| !s.is_empty())
        && s != n.scope.as_str()
    {
        return Err(ApiError::NotFound(format!("network {id} not found")));
    }
    Ok(Json(network_json(&n, &containers(&st)?)))
}

pub(super) async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let req: NetworkCreate = json_body(&headers, &body)?;
    let name = req.name.unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::BadRequest("network name is required (field Name)".into()));
    }
    if !valid_name(&name) {
        return Err(ApiError::BadRequest(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    if let Some(scope) = req.scope.as_deref()
        && !["", "local", "swarm", "global"].contains(&scope)
    {
        return Err(ApiError::BadRequest(format!("invalid scope {scope:?}: expected local, swarm or global")));
    }
    if st.store.networks()?.iter().any(|n| n.name == name) {
        return Err(ApiError::Conflict(format!("network with name {name} already exists")));
    }
    let driver_name = req.driver.as_deref().filter(|d| !d.is_empty()).unwrap_or("bridge");
    match Driver::from_name(driver_name) {
        Some(Driver::Bridge) => {}
        Some(d @ (Driver::Host | Driver::Null)) => {
            return Err(ApiError::Forbidden(format!("only one instance of \"{}\" network is allowed", d.as_str())));
        }
        Some(d) => {
            return Err(ApiError::NotImplemented(format!(
                "network driver \"{}\" is not implemented yet in netd {}",
                d.as_str(),
                env!("CARGO_PKG_VERSION")
            )));
        }
        None if ["macvlan", "ipvlan"].contains(&driver_name) => {
            return Err(ApiError::NotImplemented(format!(
                "network driver \"{driver_name}\" is not implemented yet in netd {}",
                env!("CARGO_PKG_VERSION")
            )));
        }
        None => return Err(ApiError::NotFound(format!("plugin \"{driver_name}\" not found"))),
    }
    if req.enable_ipv6 == Some(true) {
        return Err(ApiError::NotImplemented("IPv6 networks are not implemented yet in netd".into()));
    }
    if req.ingress {
        return Err(ApiError::NotImplemented("ingress networks come with the overlay driver".into()));
    }
    let ipam = req.ipam.unwrap_or_default();
    if !matches!(ipam.driver.as_str(), "" | "default") {
        return Err(ApiError::NotFound(format!("IPAM driver {:?} not found: netd has only \"default\"", ipam.driver)));
    }
    let pools = ipam.config.unwrap_or_default();
    if pools.len() > 1 {
        return Err(ApiError::BadRequest("only one IPv4 address pool per network is supported".into()));
    }
    let pool = pools.into_iter().next();
    let opt = |s: Option<&String>| s.filter(|v| !v.is_empty()).cloned();
    if let Some(p) = &pool {
        // Validate before anything else, so bad input never needs the driver.
        for (what, v) in [("subnet", &p.subnet), ("ip-range", &p.ip_range)] {
            if !v.is_empty() {
                v.parse::<crate::ipam::Ipv4Net>().map_err(|e| ApiError::BadRequest(format!("invalid {what}: {e}")))?;
            }
        }
        if p.subnet.is_empty() && (!p.ip_range.is_empty() || !p.gateway.is_empty()) {
            return Err(ApiError::BadRequest("ip-range and gateway need a subnet".into()));
        }
    }
    let create = CreateRequest {
        name: name.clone(),
        internal: req.internal,
        attachable: req.attachable,
        subnet: opt(pool.as_ref().map(|p| &p.subnet)),
        ip_range: opt(pool.as_ref().map(|p| &p.ip_range)),
        gateway: opt(pool.as_ref().map(|p| &p.gateway)),
        options: req.options.unwrap_or_default(),
        labels: req.labels.unwrap_or_default(),
    };
    let networks = st
        .networks
        .as_ref()
        .ok_or_else(|| ApiError::NotImplemented("the bridge driver is not running in this daemon".into()))?;
    let rec = networks.create(create).await?;
    st.events.publish(Event::now("network", "create", rec.id.as_str(), &[("name", &rec.name), ("type", "bridge")]));
    st.reconcile.notify();
    Ok((StatusCode::CREATED, Json(json!({ "Id": rec.id.to_string(), "Warning": "" }))).into_response())
}

pub(super) async fn remove(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let n = resolve(&st, &id)?;
    if n.predefined {
        return Err(ApiError::Forbidden(format!("{} is a pre-defined network and cannot be removed", n.name)));
    }
    match &st.networks {
        Some(networks) => networks.remove(&n).await?,
        None => {
            st.store.remove_network(&n.id)?;
        }
    }
    st.events.publish(Event::now(
        "network",
        "destroy",
        n.id.as_str(),
        &[("name", &n.name), ("type", n.driver.as_str())],
    ));
    st.reconcile.notify();
    tracing::info!(network = %n.name, id = %n.id.short(), "network removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn connect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let n = resolve(&st, &id)?;
    let req: NetworkConnect = json_body(&headers, &body)?;
    if req.container.is_empty() {
        return Err(ApiError::BadRequest("container is required (field Container)".into()));
    }
    st.runtime.find(&req.container)?;
    let settings = req.endpoint_config.unwrap_or(serde_json::Value::Null);
    let settings: crate::runtime::netspec::ApiEndpointSettings = if settings.is_null() {
        Default::default()
    } else {
        serde_json::from_value(settings).map_err(|e| ApiError::BadRequest(format!("invalid EndpointConfig: {e}")))?
    };
    let mut eps = BTreeMap::new();
    eps.insert(n.name.clone(), settings);
    let reqs = crate::runtime::netspec::networks(&n.name, Some(eps))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?
        .unwrap_or_default();
    let Some(r) = reqs.into_iter().next() else {
        return Err(ApiError::BadRequest(format!("container cannot be connected to the {} network", n.name)));
    };
    let c = st.runtime.connect(&req.container, r).await?;
    st.events.publish(Event::now(
        "network",
        "connect",
        n.id.as_str(),
        &[("container", c.id.as_str()), ("name", &n.name), ("type", n.driver.as_str())],
    ));
    Ok(StatusCode::OK.into_response())
}

pub(super) async fn disconnect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let n = resolve(&st, &id)?;
    let req: NetworkConnect = json_body(&headers, &body)?;
    if req.container.is_empty() {
        return Err(ApiError::BadRequest("container is required (field Container)".into()));
    }
    let c = st.runtime.disconnect(&req.container, &n.id, req.force).await?;
    st.events.publish(Event::now(
        "network",
        "disconnect",
        n.id.as_str(),
        &[("container", c.id.as_str()), ("name", &n.name), ("type", n.driver.as_str())],
    ));
    Ok(StatusCode::OK.into_response())
}

pub(super) async fn prune(State(st): State<AppState>, uri: Uri) -> Result<Json<serde_json::Value>, ApiError> {
    #[derive(Deserialize, Default)]
    struct PruneQuery {
        filters: Option<String>,
    }
    let q: PruneQuery = query(&uri)?;
    let f = Filters::parse(q.filters.as_deref(), &["label", "label!", "until"])?;
    if !f.get("until").is_empty() {
        return Err(ApiError::NotImplemented("the 'until' prune filter is not implemented yet".into()));
    }
    let mut deleted = Vec::new();
    let all = containers(&st)?;
    for n in st.store.networks()? {
        let selected = !n.predefined
            && !all.iter().any(|c| c.endpoints.iter().any(|e| e.network == n.id))
            && f.get("label").iter().all(|l| label_matches(&n.labels, l))
            && !f.get("label!").iter().any(|l| label_matches(&n.labels, l));
        let removed = match (&st.networks, selected) {
            (_, false) => false,
            (Some(networks), true) => networks.remove(&n).await.is_ok(),
            (None, true) => st.store.remove_network(&n.id)?,
        };
        if removed {
            st.events.publish(Event::now(
                "network",
                "destroy",
                n.id.as_str(),
                &[("name", &n.name), ("type", n.driver.as_str())],
            ));
            deleted.push(n.name);
        }
    }
    if !deleted.is_empty() {
        st.reconcile.notify();
    }
    Ok(Json(json!({ "NetworksDeleted": deleted })))
}
