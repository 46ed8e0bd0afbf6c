//! `/volumes`: list, create, inspect, remove, prune.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::filters::{Filters, label_matches};
use super::{ApiError, AppState, RawBody, bool_param, json_body, query};
use crate::events::Event;
use crate::volume::{VolumeError, VolumeRecord};

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> ApiError {
        match e {
            VolumeError::NotFound(_) => ApiError::NotFound(e.to_string()),
            VolumeError::BadName(_) | VolumeError::Unsupported(_) => ApiError::BadRequest(e.to_string()),
            VolumeError::InUse { .. } => ApiError::Conflict(e.to_string()),
            VolumeError::Io(_) | VolumeError::Store(_) => ApiError::Internal(e.to_string()),
        }
    }
}

fn volume_json(st: &AppState, v: &VolumeRecord) -> Value {
    json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": st.volumes.mountpoint(&v.name),
        "CreatedAt": v.created,
        "Labels": v.labels,
        "Scope": "local",
        "Options": {},
    })
}

#[derive(Deserialize, Default)]
struct ListQuery {
    filters: Option<String>,
}

pub(super) async fn list(State(st): State<AppState>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let q: ListQuery = query(&uri)?;
    let f = Filters::parse(q.filters.as_deref(), &["name", "label", "dangling", "driver"])?;
    f.expect_values("dangling", &["true", "false", "1", "0"])?;
    let vols: Vec<Value> = st
        .volumes
        .list()?
        .iter()
        .filter(|v| {
            let used = st.runtime.volume_users(&v.name).map(|u| !u.is_empty()).unwrap_or(true);
            f.any("name", |n| v.name.contains(n))
                && f.get("label").iter().all(|l| label_matches(&v.labels, l))
                && f.any("driver", |d| d == "local")
                && f.any("dangling", |d| matches!(d, "true" | "1") != used)
        })
        .map(|v| volume_json(&st, v))
        .collect();
    Ok(Json(json!({ "Volumes": vols, "Warnings": [] })))
}

#[derive(Deserialize, Default)]
struct CreateBody {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Driver", default)]
    driver: String,
    #[serde(rename = "DriverOpts", default)]
    driver_opts: Option<BTreeMap<String, String>>,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

pub(super) async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let req: CreateBody = json_body(&headers, &body)?;
    let volumes = st.volumes.clone();
    let (rec, new) = tokio::task::spawn_blocking(move || {
        volumes.create(&req.name, &req.driver, &req.driver_opts.unwrap_or_default(), req.labels.unwrap_or_default())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("volume task failed: {e}")))??;
    if new {
        st.events.publish(Event::now("volume", "create", &rec.name, &[("driver", "local")]));
    }
    Ok((StatusCode::CREATED, Json(volume_json(&st, &rec))).into_response())
}

pub(super) async fn inspect(State(st): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(volume_json(&st, &st.volumes.get(&name)?)))
}

#[derive(Deserialize, Default)]
struct RemoveQuery {
    force: Option<String>,
}

pub(super) async fn remove(
    State(st): State<AppState>,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let q: RemoveQuery = query(&uri)?;
    bool_param("force", q.force.as_deref())?;
    let users = st.runtime.volume_users(&name)?;
    let volumes = st.volumes.clone();
    let n = name.clone();
    tokio::task::spawn_blocking(move || volumes.remove(&n, &users))
        .await
        .map_err(|e| ApiError::Internal(format!("volume task failed: {e}")))??;
    st.events.publish(Event::now("volume", "destroy", &name, &[("driver", "local")]));
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn prune(State(st): State<AppState>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let q: ListQuery = query(&uri)?;
    let f = Filters::parse(q.filters.as_deref(), &["label", "label!", "all"])?;
    f.expect_values("all", &["true", "false", "1", "0"])?;
    let all = f.get("all").iter().any(|v| matches!(v.as_str(), "true" | "1"));
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for v in st.volumes.list()? {
        let used = !st.runtime.volume_users(&v.name)?.is_empty();
        let selected = !used
            && (all || v.anonymous)
            && f.get("label").iter().all(|l| label_matches(&v.labels, l))
            && !f.get("label!").iter().any(|l| label_matches(&v.labels, l));
        if selected {
            let size = st.volumes.usage(&v.name);
            st.volumes.remove(&v.name, &[])?;
            st.events.publish(Event::now("volume", "destroy", &v.name, &[("driver", "local")]));
            reclaimed += size;
            deleted.push(v.name);
        }
    }
    Ok(Json(json!({ "VolumesDeleted": deleted, "SpaceReclaimed": reclaimed })))
}
