//! `/networks`: list, inspect, create, remove, connect, disconnect, prune.
//! Names resolve as dockerd resolves them: full id, then exact name, then a
//! unique id prefix.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::filters::{Filters, label_matches};
use super::types::{Network, NetworkConnect, NetworkCreate};
use super::{ApiError, AppState, RawBody, bool_param, json_body, query};
use crate::events::Event;
use crate::model::{Driver, NetworkRecord, valid_name};

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
    if let Some(n) = all.iter().find(|n| n.id.as_str() == key) {
        return Ok(n.clone());
    }
    if let Some(n) = all.iter().find(|n| n.name == key) {
        return Ok(n.clone());
    }
    let by_prefix: Vec<_> =
        if key.is_empty() { Vec::new() } else { all.iter().filter(|n| n.id.as_str().starts_with(key)).collect() };
    match by_prefix.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::NotFound(format!("network {key} not found"))),
        many => Err(ApiError::BadRequest(format!(
            "network {key} is ambiguous ({} matches found based on ID prefix)",
            many.len()
        ))),
    }
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
    let mut out: Vec<Network> = nets
        .iter()
        .filter(|n| {
            f.any("name", |v| n.name.contains(v))
                && f.any("id", |v| n.id.as_str().starts_with(v))
                && f.any("driver", |v| n.driver.as_str() == v)
                && f.get("label").iter().all(|l| label_matches(&n.labels, l))
                && f.any("scope", |v| n.scope.as_str() == v)
                && f.any("type", |v| (v == "builtin") == n.predefined)
                // No network has containers yet: dangling = every custom network.
                && f.any("dangling", |v| matches!(v, "true" | "1") == !n.predefined)
        })
        .map(Network::from)
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
            let mut out: Vec<Network> = st.store.networks()?.iter().map(Network::from).collect();
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
    Ok(Json(Network::from(&n)))
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
        Some(d @ (Driver::Host | Driver::Null)) => {
            Err(ApiError::Forbidden(format!("only one instance of \"{}\" network is allowed", d.as_str())))
        }
        Some(d) if !d.implemented() => Err(ApiError::NotImplemented(format!(
            "network driver \"{}\" is not implemented yet in netd {}",
            d.as_str(),
            env!("CARGO_PKG_VERSION")
        ))),
        Some(_) => Err(ApiError::Internal("driver dispatch missing".into())),
        None if ["macvlan", "ipvlan"].contains(&driver_name) => Err(ApiError::NotImplemented(format!(
            "network driver \"{driver_name}\" is not implemented yet in netd {}",
            env!("CARGO_PKG_VERSION")
        ))),
        None => Err(ApiError::NotFound(format!("plugin \"{driver_name}\" not found"))),
    }
}

pub(super) async fn remove(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let n = resolve(&st, &id)?;
    if n.predefined {
        return Err(ApiError::Forbidden(format!("{} is a pre-defined network and cannot be removed", n.name)));
    }
    let store = st.store.clone();
    let nid = n.id.clone();
    tokio::task::spawn_blocking(move || store.remove_network(&nid))
        .await
        .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))??;
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

async fn attach_common(
    st: &AppState,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
    verb: &str,
) -> Result<Response, ApiError> {
    let n = resolve(st, id)?;
    let req: NetworkConnect = json_body(headers, body)?;
    if req.container.is_empty() {
        return Err(ApiError::BadRequest("container is required (field Container)".into()));
    }
    let _ = req.force;
    Err(ApiError::NotFound(format!(
        "cannot {verb} container {} {} network {}: no such container (this netd runs no containers yet)",
        req.container,
        if verb == "connect" { "to" } else { "from" },
        n.name
    )))
}

pub(super) async fn connect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    attach_common(&st, &id, &headers, &body, "connect").await
}

pub(super) async fn disconnect(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    attach_common(&st, &id, &headers, &body, "disconnect").await
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
    for n in st.store.networks()? {
        // No network has containers yet, so every custom network is unused.
        let selected = !n.predefined
            && f.get("label").iter().all(|l| label_matches(&n.labels, l))
            && !f.get("label!").iter().any(|l| label_matches(&n.labels, l));
        if selected && st.store.remove_network(&n.id)? {
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
