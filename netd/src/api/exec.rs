//! `docker exec`: `POST /containers/{id}/exec`, `POST /exec/{id}/start`
//! (hijacked stream with Docker's framing, or detached), `GET /exec/{id}/json`.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::{ApiError, AppState, frame, json_body};

#[derive(Deserialize, Default)]
struct ExecBody {
    #[serde(rename = "Cmd", default)]
    cmd: Vec<String>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: String,
    #[serde(rename = "User", default)]
    user: String,
    #[serde(rename = "Tty", default)]
    tty: bool,
    #[serde(rename = "Privileged", default)]
    privileged: bool,
}

#[derive(Deserialize, Default)]
struct StartBody {
    #[serde(rename = "Detach", default)]
    detach: bool,
    #[serde(rename = "Tty", default)]
    tty: bool,
}

pub(super) async fn create(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let headers = req.headers().clone();
    let super::RawBody(body) = <super::RawBody as axum::extract::FromRequest<()>>::from_request(req, &()).await?;
    let b: ExecBody = json_body(&headers, &body)?;
    if b.tty {
        return Err(ApiError::NotImplemented("a TTY (-t) for exec is not supported yet by netd's runtime".into()));
    }
    if b.privileged {
        return Err(ApiError::BadRequest("privileged exec is not supported".into()));
    }
    let rec = st.runtime.exec_create(&id, b.cmd, &b.env.unwrap_or_default(), &b.working_dir, &b.user)?;
    Ok((StatusCode::CREATED, Json(json!({ "Id": rec.id }))).into_response())
}

/// Runs the exec, sending output frames into `tx` until it exits.
async fn run(st: AppState, id: String, tx: Option<tokio::sync::mpsc::Sender<Bytes>>) {
    let mut child = match st.runtime.exec_spawn(&id) {
        Ok(c) => c,
        Err(e) => {
            if let Some(tx) = &tx {
                let _ = tx.send(frame(2, format!("{e}\n").as_bytes())).await;
            }
            st.runtime.exec_finished(&id, 126);
            return;
        }
    };
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let pump = |mut r: Option<tokio::process::ChildStdout>, tx: Option<tokio::sync::mpsc::Sender<Bytes>>| async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Some(p) = r.as_mut() {
            match p.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(tx) = &tx {
                        let _ = tx.send(frame(1, &buf[..n])).await;
                    }
                }
            }
        }
    };
    let tx2 = tx.clone();
    let err_pump = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Some(p) = err.as_mut() {
            match p.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(tx) = &tx2 {
                        let _ = tx.send(frame(2, &buf[..n])).await;
                    }
                }
            }
        }
    };
    tokio::join!(pump(out.take(), tx.clone()), err_pump);
    let code = match child.wait().await {
        Ok(s) => s.code().unwrap_or(137),
        Err(_) => 126,
    };
    // Recorded before the stream closes: the client inspects right after.
    st.runtime.exec_finished(&id, code);
    drop(tx);
}

pub(super) async fn start(
    State(st): State<AppState>,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    st.runtime.exec_get(&id)?;
    let headers = req.headers().clone();
    let upgrade = headers.contains_key(header::UPGRADE);
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let super::RawBody(body) = <super::RawBody as axum::extract::FromRequest<()>>::from_request(req, &()).await?;
    let b: StartBody = if body.is_empty() { StartBody::default() } else { json_body(&headers, &body)? };
    if b.tty {
        return Err(ApiError::NotImplemented("a TTY (-t) for exec is not supported yet by netd's runtime".into()));
    }
    let e = st.runtime.exec_get(&id)?;
    if e.running || e.exit_code.is_some() {
        return Err(ApiError::Conflict(format!("exec instance {id} has already been started")));
    }
    if b.detach {
        tokio::spawn(run(st.clone(), id, None));
        return Ok(StatusCode::OK.into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(run(st.clone(), id, Some(tx)));
    let frames = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    if let Some(on_upgrade) = on_upgrade {
        return Ok(super::hijack(on_upgrade, Box::pin(frames)));
    }
    let ct = HeaderValue::from_static(super::MULTIPLEXED);
    let mut resp = Response::new(Body::from_stream(futures::StreamExt::map(frames, Ok::<_, std::convert::Infallible>)));
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    Ok(resp)
}

pub(super) async fn inspect(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let e = st.runtime.exec_get(&id)?;
    Ok(Json(json!({
        "ID": e.id,
        "Running": e.running,
        "ExitCode": e.exit_code,
        "ProcessConfig": {
            "tty": false,
            "entrypoint": e.config.args.first(),
            "arguments": e.config.args.iter().skip(1).collect::<Vec<_>>(),
            "privileged": false,
            "user": e.user,
        },
        "OpenStdin": false,
        "OpenStderr": true,
        "OpenStdout": true,
        "CanRemove": false,
        "ContainerID": e.container.to_string(),
        "DetachKeys": "",
        "Pid": e.pid,
    })))
}
