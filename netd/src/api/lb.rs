//! `/lb`: netd's own endpoints (not Docker's) for the service load
//! balancer: list, create or replace, inspect and remove services, and read
//! the flows the datapath tracks. `netctl lb` is their client.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, RawBody, json_body, query};
use crate::events::Event;
use crate::lb::{Lb, LbError, ServiceRecord};

impl From<LbError> for ApiError {
    fn from(e: LbError) -> ApiError {
        match e {
            LbError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            LbError::NotFound(_) => ApiError::NotFound(e.to_string()),
            LbError::Conflict(_) => ApiError::Conflict(e.to_string()),
            LbError::Unavailable(_) => ApiError::NotImplemented(e.to_string()),
            LbError::Datapath(ebpf::datapath::DatapathError::Full { .. }) => ApiError::Conflict(e.to_string()),
            LbError::Datapath(_) | LbError::Store(_) => ApiError::Internal(e.to_string()),
        }
    }
}

fn lb(st: &AppState) -> Result<Arc<Lb>, ApiError> {
    st.lb.clone().ok_or_else(|| ApiError::NotImplemented("this daemon runs without a load balancer".into()))
}

/// Runs a blocking load-balancer call off the async threads.
async fn blocking<T: Send + 'static>(
    lb: Arc<Lb>,
    f: impl FnOnce(&Lb) -> Result<T, LbError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || f(&lb))
        .await
        .map_err(|e| ApiError::Internal(format!("load balancer task failed: {e}")))?
        .map_err(ApiError::from)
}

/// A service as the API shows it: the record, with each backend's counters
/// summed over the service's target ports.
fn service_json(
    s: &ServiceRecord,
    counters: &std::collections::BTreeMap<(std::net::Ipv4Addr, u16), crate::lb::BackendStats>,
) -> Value {
    // Each target port once: two service ports may share one.
    let targets: std::collections::BTreeSet<u16> = s.ports.iter().map(|p| p.target_port).collect();
    let backends: Vec<Value> = s
        .backends
        .iter()
        .map(|b| {
            let mut sum = crate::lb::BackendStats::default();
            for &t in &targets {
                if let Some(c) = counters.get(&(b.addr, t)) {
                    sum.packets += c.packets;
                    sum.bytes += c.bytes;
                    sum.flows += c.flows;
                }
            }
            json!({"Addr": b.addr, "Weight": b.weight, "State": b.state, "Stats": sum})
        })
        .collect();
    json!({"Name": s.name, "VIP": s.vip, "Ports": s.ports, "Backends": backends, "CreatedAt": s.created})
}

/// Every service, as the API shows it.
async fn shown(st: &AppState) -> Result<Vec<(String, Value)>, ApiError> {
    let (services, counters) = blocking(lb(st)?, |lb| Ok((lb.services()?, lb.counters()?))).await?;
    Ok(services.iter().map(|s| (s.name.clone(), service_json(s, &counters))).collect())
}

pub(super) async fn list(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Array(shown(&st).await?.into_iter().map(|(_, v)| v).collect())))
}

pub(super) async fn inspect(State(st): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let found = shown(&st).await?.into_iter().find(|(n, _)| *n == name);
    found.map(|(_, v)| Json(v)).ok_or_else(|| ApiError::from(LbError::NotFound(name)))
}

pub(super) async fn upsert(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let req: ServiceRecord = json_body(&headers, &body)?;
    if !req.created.is_empty() {
        return Err(ApiError::BadRequest("CreatedAt is set by the daemon".into()));
    }
    let s = blocking(lb(&st)?, move |lb| lb.upsert(req)).await?;
    st.runtime.refresh_dns();
    st.events.publish(Event::now("service", "update", &s.name, &[("name", &s.name), ("vip", &s.vip.to_string())]));
    let counters = Default::default();
    Ok((StatusCode::CREATED, Json(service_json(&s, &counters))).into_response())
}

pub(super) async fn remove(State(st): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let s = blocking(lb(&st)?, move |lb| lb.remove(&name)).await?;
    st.runtime.refresh_dns();
    st.events.publish(Event::now("service", "remove", &s.name, &[("name", &s.name)]));
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
struct FlowsQuery {
    limit: Option<String>,
}

pub(super) async fn conntrack(State(st): State<AppState>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let q: FlowsQuery = query(&uri)?;
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit {l:?}: expected a number in 1..=100000")))?,
    };
    let (total, flows) = blocking(lb(&st)?, move |lb| lb.flows(limit)).await?;
    Ok(Json(json!({"Total": total, "Flows": flows})))
}
