//! `/images`: list, inspect, remove, and `POST /images/create?fromSrc=-`
//! (`docker import`: a rootfs tarball in the body). Pulling from registries is
//! not supported: `fromImage` answers 404 "No such image" with the way out.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::filters::{Filters, label_matches};
use super::{ApiError, AppState, bool_param};
use crate::events::Event;
use crate::image::{ImageConfig, ImageError, ImageRecord, Reference, parse_change};

/// Largest tarball `POST /images/create` accepts.
const MAX_UPLOAD: u64 = 8 << 30;

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> ApiError {
        match e {
            ImageError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ImageError::BadReference(_) | ImageError::BadArchive(_) | ImageError::BadChange(_) => {
                ApiError::BadRequest(e.to_string())
            }
            ImageError::Conflict(_) => ApiError::Conflict(e.to_string()),
            ImageError::Io(_) | ImageError::Store(_) => ApiError::Internal(e.to_string()),
        }
    }
}

fn created_secs(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().map(|t| t.as_second()).unwrap_or(0)
}

fn summary(i: &ImageRecord) -> Value {
    json!({
        "Id": format!("sha256:{}", i.id),
        "ParentId": "",
        "RepoTags": i.tags,
        "RepoDigests": [],
        "Created": created_secs(&i.created),
        "Size": i.size,
        "SharedSize": -1,
        "Labels": i.config.labels,
        "Containers": -1,
    })
}

fn config_json(c: &ImageConfig) -> Value {
    let ports: serde_json::Map<String, Value> = c.exposed_ports.iter().map(|p| (p.clone(), json!({}))).collect();
    json!({
        "Cmd": if c.cmd.is_empty() { Value::Null } else { json!(c.cmd) },
        "Entrypoint": if c.entrypoint.is_empty() { Value::Null } else { json!(c.entrypoint) },
        "Env": c.env,
        "WorkingDir": c.working_dir,
        "User": c.user,
        "ExposedPorts": if ports.is_empty() { Value::Null } else { Value::Object(ports) },
        "Labels": c.labels,
    })
}

fn inspect_json(st: &AppState, i: &ImageRecord) -> Value {
    json!({
        "Id": format!("sha256:{}", i.id),
        "RepoTags": i.tags,
        "RepoDigests": [],
        "Parent": "",
        "Comment": i.comment,
        "Created": i.created,
        "DockerVersion": "",
        "Author": "",
        "Config": config_json(&i.config),
        "Architecture": st.host.arch,
        "Os": "linux",
        "Size": i.size,
        "GraphDriver": { "Name": "rootfs-dir", "Data": { "Dir": st.images.rootfs(&i.id) } },
        "RootFS": { "Type": "layers", "Layers": [] },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
    })
}

fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((pre, post)) => {
            s.len() >= pre.len() + post.len() && s.starts_with(pre) && glob_tail(post, &s[pre.len()..])
        }
    }
}

fn glob_tail(pattern: &str, s: &str) -> bool {
    (0..=s.len()).filter(|i| s.is_char_boundary(*i)).any(|i| glob(pattern, &s[i..]))
}

pub(super) async fn list(State(st): State<AppState>, uri: Uri) -> Result<Json<Vec<Value>>, ApiError> {
    let q: Vec<(String, String)> = serde_urlencoded::from_str(uri.query().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {e}")))?;
    let filters = q.iter().find(|(k, _)| k == "filters").map(|(_, v)| v.as_str());
    let f = Filters::parse(filters, &["reference", "dangling", "label"])?;
    f.expect_values("dangling", &["true", "false", "1", "0"])?;
    let mut out: Vec<(i64, Value)> = st
        .images
        .list()?
        .iter()
        .filter(|i| {
            f.any("dangling", |v| matches!(v, "true" | "1") == i.tags.is_empty())
                && f.get("label").iter().all(|l| label_matches(&i.config.labels, l))
                && f.any("reference", |pat| {
                    i.tags.iter().any(|t| {
                        let name = t.rsplit_once(':').map_or(t.as_str(), |(n, _)| n);
                        glob(pat, t) || glob(pat, name)
                    })
                })
        })
        .map(|i| (created_secs(&i.created), summary(i)))
        .collect();
    out.sort_by_key(|(created, _)| std::cmp::Reverse(*created));
    Ok(Json(out.into_iter().map(|(_, v)| v).collect()))
}

/// `GET /images/{name}/json` and `DELETE /images/{name}` (names contain `/`).
pub(super) async fn by_name(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    match *req.method() {
        Method::GET | Method::HEAD => {
            let Some(name) = rest.strip_suffix("/json") else {
                return Err(ApiError::NotFound("page not found".into()));
            };
            let img = st.images.resolve(name)?;
            Ok(Json(inspect_json(&st, &img)).into_response())
        }
        Method::DELETE => {
            let q: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
                .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {e}")))?;
            let get = |k: &str| q.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
            let force = bool_param("force", get("force"))?;
            bool_param("noprune", get("noprune"))?;
            let img = st.images.resolve(&rest)?;
            let in_use = st.runtime.image_in_use(img.id.as_str())?;
            let images = st.images.clone();
            let name = rest.clone();
            let items = tokio::task::spawn_blocking(move || images.remove(&name, force, in_use))
                .await
                .map_err(|e| ApiError::Internal(format!("image task failed: {e}")))??;
            let mut out = Vec::new();
            for (action, what) in items {
                let ev_action = if action == "Deleted" { "delete" } else { "untag" };
                st.events.publish(Event::now("image", ev_action, &what, &[("name", &rest)]));
                out.push(json!({ action: what }));
            }
            Ok(Json(out).into_response())
        }
        Method::POST => {
            let Some(name) = rest.strip_suffix("/tag") else {
                return Err(ApiError::NotFound("page not found".into()));
            };
            let q: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
                .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {e}")))?;
            let get = |k: &str| q.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
            let repo = get("repo").ok_or_else(|| ApiError::BadRequest("repo is required".into()))?;
            let reference = match get("tag") {
                Some(t) => format!("{repo}:{t}"),
                None => repo,
            };
            let r = Reference::parse(&reference).map_err(ApiError::BadRequest)?;
            st.images.tag(name, &r)?;
            st.events.publish(Event::now("image", "tag", name, &[("name", &r.to_string())]));
            Ok(StatusCode::CREATED.into_response())
        }
        _ => Err(ApiError::MethodNotAllowed(format!("method {} is not allowed on /images/{rest}", req.method()))),
    }
}

/// `POST /images/create`: `fromSrc=-` imports the body; `fromImage` (pull) is
/// not supported.
pub(super) async fn create(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let q: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {e}")))?;
    let get = |k: &str| q.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    if let Some(image) = get("fromImage") {
        let tag = get("tag").unwrap_or_else(|| "latest".into());
        return Err(ApiError::NotFound(format!(
            "No such image: {image}:{tag} (netd does not pull from registries: import a rootfs with `netctl image import` or `docker import`)"
        )));
    }
    match get("fromSrc").as_deref() {
        Some("-") => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "fromSrc={other:?}: only \"-\" (the tarball in the request body) is supported"
            )));
        }
        None => return Err(ApiError::BadRequest("one of fromSrc or fromImage is required".into())),
    }
    let tag = match (get("repo"), get("tag")) {
        (None, _) => None,
        (Some(repo), Some(tag)) => Some(Reference::parse(&format!("{repo}:{tag}")).map_err(ApiError::BadRequest)?),
        (Some(repo), None) => Some(Reference::parse(&repo).map_err(ApiError::BadRequest)?),
    };
    let mut config = ImageConfig::default();
    for (_, change) in q.iter().filter(|(k, _)| k == "changes") {
        parse_change(change, &mut config)?;
    }
    let message = get("message").unwrap_or_default();
    let upload = st.images.upload_path();
    let result = receive(req.into_body(), &upload).await;
    let result = match result {
        Ok(()) => {
            let images = st.images.clone();
            let path = upload.clone();
            tokio::task::spawn_blocking(move || {
                let f = std::fs::File::open(&path).map_err(|e| ImageError::Io(e.to_string()))?;
                images.import(std::io::BufReader::new(f), tag.as_ref(), config, &message)
            })
            .await
            .map_err(|e| ApiError::Internal(format!("image task failed: {e}")))
            .and_then(|r| r.map_err(ApiError::from))
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&upload).await;
    let img = result?;
    let name = img.tags.first().cloned().unwrap_or_default();
    st.events.publish(Event::now("image", "import", &format!("sha256:{}", img.id), &[("name", &name)]));
    tracing::info!(image = %img.id.short(), tags = ?img.tags, size = img.size, "image imported");
    let body = format!("{}\n", json!({ "status": format!("sha256:{}", img.id) }));
    Ok((StatusCode::OK, [("content-type", "application/json")], body).into_response())
}

/// `POST /images/load`: a `docker save` tarball in the body.
pub(super) async fn load(State(st): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let upload = st.images.upload_path();
    let result = match receive(req.into_body(), &upload).await {
        Ok(()) => {
            let images = st.images.clone();
            let path = upload.clone();
            tokio::task::spawn_blocking(move || {
                let f = std::fs::File::open(&path).map_err(|e| ImageError::Io(e.to_string()))?;
                images.load(std::io::BufReader::new(f))
            })
            .await
            .map_err(|e| ApiError::Internal(format!("image task failed: {e}")))
            .and_then(|r| r.map_err(ApiError::from))
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&upload).await;
    let loaded = result?;
    let mut body = String::new();
    for img in &loaded {
        st.events.publish(Event::now("image", "load", &format!("sha256:{}", img.id), &[]));
        if img.tags.is_empty() {
            body.push_str(&format!("{}\n", json!({ "stream": format!("Loaded image ID: sha256:{}\n", img.id) })));
        }
        for t in &img.tags {
            body.push_str(&format!("{}\n", json!({ "stream": format!("Loaded image: {t}\n") })));
        }
    }
    Ok((StatusCode::OK, [("content-type", "application/json")], body).into_response())
}

async fn receive(body: Body, path: &std::path::Path) -> Result<(), ApiError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ApiError::Internal(format!("create {}: {e}", path.display())))?;
    let mut body = body;
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("cannot read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > MAX_UPLOAD {
                return Err(ApiError::TooLarge(format!("image tarball larger than {} GiB", MAX_UPLOAD >> 30)));
            }
            file.write_all(&data).await.map_err(|e| ApiError::Internal(format!("write upload: {e}")))?;
        }
    }
    file.flush().await.map_err(|e| ApiError::Internal(format!("write upload: {e}")))?;
    if total == 0 {
        return Err(ApiError::BadRequest("invalid archive: the request body is empty".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn globs() {
        assert!(super::glob("busy*", "busybox"));
        assert!(super::glob("*box", "busybox"));
        assert!(super::glob("b*y*x", "busybox"));
        assert!(!super::glob("busy", "busybox"));
        assert!(super::glob("busybox:latest", "busybox:latest"));
    }
}
