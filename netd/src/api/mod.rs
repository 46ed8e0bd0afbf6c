//! The HTTP API: Docker Engine API paths and JSON on a unix socket. A layer in
//! front of the router strips `/vX.Y` prefixes (refusing unsupported versions)
//! and stamps dockerd's headers on every response; handlers are thin and call
//! into the store and the other subsystems.

mod containers;
mod error;
mod events;
mod exec;
pub mod filters;
mod images;
mod keys;
mod lb;
mod networks;
mod system;
pub mod types;
pub mod version;
mod volumes;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

pub use error::ApiError;

use crate::config::Config;
use crate::events::EventBus;
use crate::ids::NodeId;
use crate::reconcile::ReconcileHandle;
use crate::store::Store;
use crate::sysinfo::HostFacts;

/// Everything handlers need, shared by all requests.
#[derive(Debug)]
pub struct Ctx {
    pub store: Store,
    pub runtime: Arc<crate::runtime::manager::Runtime>,
    /// This node's gossip member (absent in unit tests).
    pub gossip: Option<gossip::Handle>,
    /// The service load balancer (absent in unit tests that do not need it).
    pub lb: Option<Arc<crate::lb::Lb>>,
    /// The bridge driver (absent in unprivileged unit tests).
    pub networks: Option<Arc<crate::network::Networks>>,
    pub images: crate::image::ImageStore,
    pub volumes: crate::volume::VolumeStore,
    pub events: Arc<EventBus>,
    pub config: Config,
    pub reconcile: ReconcileHandle,
    pub node_id: NodeId,
    pub host: HostFacts,
    /// Set to true when the daemon shuts down; long-lived streams end on it.
    pub shutdown: watch::Receiver<bool>,
    /// `GET /networks` without filters, serialized, with the store generation
    /// it was made at (read-mostly: answered from here until a write).
    pub networks_json: std::sync::RwLock<(u64, Bytes)>,
}

#[derive(serde::Deserialize, Default)]
struct ResizeQuery {
    h: Option<u16>,
    w: Option<u16>,
}

/// `?h=ROWS&w=COLS` of the container and exec resize endpoints.
fn resize_dims(uri: &axum::http::Uri) -> Result<(u16, u16), ApiError> {
    let q: ResizeQuery = query(uri)?;
    match (q.h, q.w) {
        (Some(h), Some(w)) => Ok((h, w)),
        _ => Err(ApiError::BadRequest("resize needs h and w (rows and columns)".into())),
    }
}

/// Shared handler state.
pub type AppState = Arc<Ctx>;

/// The `Server` header value, as dockerd's `Docker/VERSION (linux)`.
const SERVER: &str = concat!("netd/", env!("CARGO_PKG_VERSION"), " (linux)");

/// Builds the full API service: version layer around the router.
pub fn app(
    state: AppState,
) -> impl tower::Service<Request, Response = Response, Error = std::convert::Infallible, Future = impl Send>
+ Clone
+ Send
+ 'static {
    let router = Router::new()
        .route("/_ping", get(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/nodes", get(system::nodes))
        .route("/events", get(events::stream))
        .route("/containers/json", get(containers::list))
        .route("/containers/create", post(containers::create))
        .route("/containers/{id}/json", get(containers::inspect))
        .route("/containers/{id}/start", post(containers::start))
        .route("/containers/{id}/stop", post(containers::stop))
        .route("/containers/{id}/restart", post(containers::restart))
        .route("/containers/{id}/kill", post(containers::kill))
        .route("/containers/{id}/wait", post(containers::wait))
        .route("/containers/{id}/logs", get(containers::logs))
        .route("/containers/{id}/attach", post(containers::attach))
        .route("/containers/{id}/top", get(containers::top))
        .route("/containers/{id}/resize", post(containers::resize))
        .route("/containers/{id}", axum::routing::delete(containers::remove))
        .route("/containers/{id}/exec", post(exec::create))
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/images/json", get(images::list))
        .route("/images/create", post(images::create))
        .route("/images/load", post(images::load))
        .route("/images/{*rest}", get(images::by_name).delete(images::by_name).post(images::by_name))
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route("/volumes/prune", post(volumes::prune))
        .route("/volumes/{name}", get(volumes::inspect).delete(volumes::remove))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route("/networks/prune", post(networks::prune))
        .route("/networks/{id}", get(networks::inspect).delete(networks::remove))
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .route("/gossip/keys", get(keys::list))
        .route("/gossip/keys/{op}", post(keys::change))
        .route("/lb/services", get(lb::list).post(lb::upsert))
        .route("/lb/services/{name}", get(lb::inspect).delete(lb::remove))
        .route("/lb/conntrack", get(lb::conntrack))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    // A layer around (not inside) the router, so the rewritten path is routed.
    tower::Layer::layer(&middleware::from_fn(version_layer), router)
}

async fn version_layer(req: Request, next: Next) -> Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return route_versioned(req, next).await;
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let t = std::time::Instant::now();
    let resp = route_versioned(req, next).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), micros = t.elapsed().as_micros() as u64, "request");
    resp
}

async fn route_versioned(mut req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/v") {
        let mut resp = next.run(req).await;
        stamp(&mut resp);
        return resp;
    }
    let path = req.uri().path().to_owned();
    let mut resp = match version::split_path(&path) {
        Err(e) => e.into_response(),
        Ok((v, tail)) => {
            if v.is_some() {
                let new = match req.uri().query() {
                    Some(q) => format!("{tail}?{q}"),
                    None => tail.to_owned(),
                };
                match new.parse::<Uri>() {
                    Ok(uri) => *req.uri_mut() = uri,
                    Err(_) => return ApiError::BadRequest(format!("invalid request path {path:?}")).into_response(),
                }
            }
            next.run(req).await
        }
    };
    stamp(&mut resp);
    resp
}

/// dockerd's headers, on every response.
fn stamp(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(VERSION_MAX));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert(header::SERVER, HeaderValue::from_static(SERVER));
}

/// `version::MAX` as a static header value (a unit test keeps them equal).
const VERSION_MAX: &str = "1.50";

async fn not_found(uri: Uri) -> ApiError {
    tracing::debug!(path = %uri.path(), "unknown API path");
    ApiError::NotFound("page not found".into())
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!("method {} is not allowed on {}", req.method(), req.uri().path()))
}

/// One frame of Docker's multiplexed stream (1 = stdout, 2 = stderr): an
/// 8-byte header (stream, 0, 0, 0, big-endian length) and the payload.
pub(crate) fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(8 + data.len());
    v.extend_from_slice(&[stream, 0, 0, 0]);
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    Bytes::from(v)
}

/// Hijacks the connection (`Upgrade: tcp`, as the docker client asks for
/// attach and exec; `on_upgrade` from `hyper::upgrade::on`): writes `output`
/// to it and, with `input`, forwards what the client sends (stdin). Returns
/// the 101 answer.
pub(crate) fn hijack(
    on_upgrade: hyper::upgrade::OnUpgrade,
    mut output: std::pin::Pin<Box<dyn futures::Stream<Item = Bytes> + Send>>,
    input: Option<tokio::sync::mpsc::Sender<Bytes>>,
    content_type: &'static str,
) -> Response {
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "connection upgrade failed");
                return;
            }
        };
        let (mut rd, mut wr) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        let reader = input.map(|tx| {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            })
        });
        while let Some(chunk) = output.next().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
        if let Some(r) = reader {
            r.abort();
        }
    });
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = axum::http::StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Content type of raw (TTY) output streams.
pub(crate) const RAW_STREAM: &str = "application/vnd.docker.raw-stream";

/// Content type of Docker's multiplexed output streams.
pub(crate) const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 1 << 20;

/// A request body, read whole (at most [`MAX_BODY`]); failures are API errors
/// (413 for too large) instead of axum's plain-text rejections.
pub(crate) struct RawBody(pub Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
        match http_body_util::BodyExt::collect(limited).await {
            Ok(c) => Ok(RawBody(c.to_bytes())),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                Err(ApiError::TooLarge(format!("request body larger than {MAX_BODY} bytes")))
            }
            Err(e) => Err(ApiError::BadRequest(format!("cannot read request body: {e}"))),
        }
    }
}

/// Decodes a JSON request body; errors are 400 with serde's reason.
pub(crate) fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !ct.is_empty() && !ct.starts_with("application/json") {
            return Err(ApiError::BadRequest(format!("unsupported Content-Type {ct:?}: expected application/json")));
        }
    }
    if body.is_empty() {
        return Err(ApiError::BadRequest("invalid JSON: request body is empty".into()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::BadRequest("invalid JSON: the request body must be a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
}

/// Parses the query string into `T`; errors are 400.
pub(crate) fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    let q = uri.query().unwrap_or("");
    axum::extract::Query::<T>::try_from_uri(&format!("/?{q}").parse::<Uri>().unwrap_or_default())
        .map(|axum::extract::Query(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {}", e.body_text())))
}

/// Parses Docker's boolean query values (`1`, `true`, `0`, `false`).
pub(crate) fn bool_param(name: &str, v: Option<&str>) -> Result<bool, ApiError> {
    match v {
        None | Some("") | Some("0") | Some("false") | Some("False") => Ok(false),
        Some("1") | Some("true") | Some("True") => Ok(true),
        Some(other) => {
            Err(ApiError::BadRequest(format!("invalid value for {name}: {other:?} (expected true or false)")))
        }
    }
}

/// Exposes the `/events` timestamp parser to the crate's fuzz tests.
#[cfg(test)]
pub(crate) fn parse_timestamp_for_tests(s: &str) -> Result<i64, ApiError> {
    events::parse_timestamp("since", s)
}

#[cfg(test)]
pub(crate) use tests::test_ctx;

#[cfg(test)]
mod tests;
