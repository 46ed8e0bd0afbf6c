//! `docker exec`: `POST /containers/{id}/exec`, `POST /exec/{id}/start`
//! (hijacked stream, or detached), `POST /exec/{id}/resize`,
//! `GET /exec/{id}/json`. Without a TTY, output is multiplexed (stdout and
//! stderr framed) and stdin, if asked for, is piped; with a TTY (`-it`) netd
//! runs the process on a new pty and relays raw bytes both ways.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

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
    #[serde(rename = "AttachStdin", default)]
    attach_stdin: bool,
    #[serde(rename = "Privileged", default)]
    privileged: bool,
}

#[derive(Deserialize, Default)]
struct StartBody {
    #[serde(rename = "Detach", default)]
    detach: bool,
}

async fn body_of(req: Request) -> Result<(axum::http::HeaderMap, Bytes), ApiError> {
    let headers = req.headers().clone();
    let super::RawBody(body) = <super::RawBody as axum::extract::FromRequest<()>>::from_request(req, &()).await?;
    Ok((headers, body))
}

pub(super) async fn create(
    State(st): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (headers, body) = body_of(req).await?;
    let b: ExecBody = json_body(&headers, &body)?;
    if b.privileged {
        return Err(ApiError::BadRequest("privileged exec is not supported".into()));
    }
    let opts = crate::runtime::manager::ExecOptions {
        args: b.cmd,
        env: b.env.unwrap_or_default(),
        cwd: b.working_dir,
        user: b.user,
        tty: b.tty,
        stdin: b.attach_stdin,
    };
    let rec = st.runtime.exec_create(&id, opts)?;
    Ok((StatusCode::CREATED, Json(json!({ "Id": rec.id }))).into_response())
}

/// Copies client input into the process's stdin (pipe or pty master).
async fn feed(mut input: mpsc::Receiver<Bytes>, mut sink: impl tokio::io::AsyncWrite + Unpin) {
    while let Some(chunk) = input.recv().await {
        if sink.write_all(&chunk).await.is_err() {
            break;
        }
        let _ = sink.flush().await;
    }
}

/// Reads `r` until EOF or error, sending each chunk (framed as `stream`
/// unless 0 = raw) to `tx`.
async fn pump(mut r: impl tokio::io::AsyncRead + Unpin, stream: u8, tx: mpsc::Sender<Bytes>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = if stream == 0 { Bytes::copy_from_slice(&buf[..n]) } else { frame(stream, &buf[..n]) };
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Runs the exec: output into `tx` (if any), input from `input` (if any);
/// records the exit code before `tx` closes (the client inspects right after).
async fn run(st: AppState, id: String, tx: Option<mpsc::Sender<Bytes>>, input: Option<mpsc::Receiver<Bytes>>) {
    let mut p = match st.runtime.exec_spawn(&id) {
        Ok(p) => p,
        Err(e) => {
            if let Some(tx) = &tx {
                let _ = tx.send(frame(2, format!("{e}\n").as_bytes())).await;
            }
            st.runtime.exec_finished(&id, 126);
            return;
        }
    };
    let sink = tx.clone().unwrap_or_else(|| mpsc::channel(1).0);
    let mut pumps = Vec::new();
    if let Some(sock) = p.pty.take() {
        let received = tokio::task::spawn_blocking(move || crate::runtime::manager::receive_pty(&sock)).await;
        let master = match received {
            Ok(Ok(m)) => Arc::new(m),
            other => {
                let why = match other {
                    Ok(Err(e)) => e,
                    Err(e) => e.to_string(),
                    Ok(Ok(_)) => String::new(),
                };
                // The helper says why on its stderr (e.g. the container stopped).
                let mut detail = String::new();
                if let Some(mut err) = p.child.stderr.take() {
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_secs(1), err.read_to_string(&mut detail)).await;
                }
                let _ = p.child.kill().await;
                if let Some(tx) = &tx {
                    let _ = tx.send(Bytes::from(format!("{why}: {}\r\n", detail.trim()))).await;
                }
                st.runtime.exec_finished(&id, 126);
                return;
            }
        };
        st.runtime.exec_set_pty(&id, master.clone());
        if let (Ok(w), Some(input)) = (master.try_clone(), input) {
            tokio::spawn(feed(input, tokio::fs::File::from_std(w)));
        }
        if let Ok(r) = master.try_clone() {
            pumps.push(tokio::spawn(pump(tokio::fs::File::from_std(r), 0, sink.clone())));
        }
    } else {
        if let (Some(stdin), Some(input)) = (p.child.stdin.take(), input) {
            tokio::spawn(feed(input, stdin));
        }
        if let Some(out) = p.child.stdout.take() {
            pumps.push(tokio::spawn(pump(out, 1, sink.clone())));
        }
        if let Some(err) = p.child.stderr.take() {
            pumps.push(tokio::spawn(pump(err, 2, sink.clone())));
        }
    }
    drop(sink);
    let code = match p.child.wait().await {
        Ok(s) => s.code().unwrap_or(137),
        Err(_) => 126,
    };
    for t in pumps {
        // Output pumps end at EOF (pipes) or EIO (pty, once the process is gone).
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
    }
    st.runtime.exec_finished(&id, code);
    drop(tx);
}

pub(super) async fn start(
    State(st): State<AppState>,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let e = st.runtime.exec_get(&id)?;
    let upgrade = req.headers().contains_key(header::UPGRADE).then(|| hyper::upgrade::on(&mut req));
    let (headers, body) = body_of(req).await?;
    let b: StartBody = if body.is_empty() { StartBody::default() } else { json_body(&headers, &body)? };
    if e.running || e.exit_code.is_some() {
        return Err(ApiError::Conflict(format!("exec instance {id} has already been started")));
    }
    if b.detach {
        tokio::spawn(run(st.clone(), id, None, None));
        return Ok(StatusCode::OK.into_response());
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let content_type = if e.config.tty { super::RAW_STREAM } else { super::MULTIPLEXED };
    let frames = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    if let Some(on_upgrade) = upgrade {
        let (in_tx, in_rx) = mpsc::channel::<Bytes>(64);
        let stdin = e.stdin.then_some(in_tx);
        tokio::spawn(run(st.clone(), id, Some(tx), stdin.as_ref().map(|_| in_rx)));
        return Ok(super::hijack(on_upgrade, Box::pin(frames), stdin, content_type));
    }
    tokio::spawn(run(st.clone(), id, Some(tx), None));
    let mut resp = Response::new(Body::from_stream(futures::StreamExt::map(frames, Ok::<_, std::convert::Infallible>)));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

pub(super) async fn resize(
    State(st): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    let (h, w) = super::resize_dims(&uri)?;
    st.runtime.exec_resize(&id, h, w)?;
    Ok(StatusCode::OK)
}

pub(super) async fn inspect(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let e = st.runtime.exec_get(&id)?;
    Ok(Json(json!({
        "ID": e.id,
        "Running": e.running,
        "ExitCode": e.exit_code,
        "ProcessConfig": {
            "tty": e.config.tty,
            "entrypoint": e.config.args.first(),
            "arguments": e.config.args.iter().skip(1).collect::<Vec<_>>(),
            "privileged": false,
            "user": e.user,
        },
        "OpenStdin": e.stdin,
        "OpenStderr": true,
        "OpenStdout": true,
        "CanRemove": false,
        "ContainerID": e.container.to_string(),
        "DetachKeys": "",
        "Pid": e.pid,
    })))
}
