//! A minimal HTTP/1.1 client of the netd API over its unix socket. Errors are
//! worded for a person: which daemon could not be reached, or what it refused.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The default API address, as netd's default `-H`.
pub const DEFAULT_HOST: &str = "unix:///run/netd/netd.sock";

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid host {0:?}: expected unix:///absolute/path")]
    BadHost(String),
    #[error("cannot connect to netd at {host}: {source}. Is netd running? (-H or NETD_HOST selects another daemon)")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Error response from daemon: {message}")]
    Api { status: StatusCode, message: String },
    #[error("talking to netd at {host}: {message}")]
    Protocol { host: String, message: String },
}

/// A client of one daemon.
#[derive(Clone, Debug)]
pub struct Client {
    host: String,
    socket: PathBuf,
}

impl Client {
    /// A client for `unix:///path` (or a bare absolute path).
    pub fn new(host: &str) -> Result<Client, ClientError> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        if !path.starts_with('/') {
            return Err(ClientError::BadHost(host.to_owned()));
        }
        Ok(Client { host: host.to_owned(), socket: PathBuf::from(path) })
    }

    fn protocol(&self, message: impl ToString) -> ClientError {
        ClientError::Protocol { host: self.host.clone(), message: message.to_string() }
    }

    /// Sends one request; returns the status and body of any response.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let payload = match body {
            Some(v) => Some(("application/json", Bytes::from(serde_json::to_vec(v).map_err(|e| self.protocol(e))?))),
            None => None,
        };
        self.send(method, path, payload).await
    }

    /// Opens a connection and sends one request; returns the response head
    /// and its (unread) body.
    async fn request(
        &self,
        method: Method,
        path: &str,
        payload: Option<(&str, Bytes)>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect { host: self.host.clone(), source })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| self.protocol(e))?;
        tokio::spawn(conn);
        let mut req = Request::builder().method(method).uri(path).header("host", "netd");
        let payload = match payload {
            Some((ct, bytes)) => {
                req = req.header("content-type", ct);
                bytes
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).map_err(|e| self.protocol(e))?;
        sender.send_request(req).await.map_err(|e| self.protocol(e))
    }

    /// Sends one request with an optional (content type, body).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        payload: Option<(&str, Bytes)>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let resp = self.request(method, path, payload).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| self.protocol(e))?.to_bytes();
        Ok((status, bytes))
    }

    /// Sends a request and decodes a JSON answer; API errors become
    /// [`ClientError::Api`] with the daemon's message.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let (status, bytes) = self.raw(method, path, body).await?;
        self.decode(status, bytes)
    }

    /// Sends a request and hands each chunk of a successful answer's body to
    /// `on_chunk` as it arrives (streams: logs, exec output).
    pub async fn stream(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        mut on_chunk: impl FnMut(&[u8]),
    ) -> Result<(), ClientError> {
        let payload = match body {
            Some(v) => Some(("application/json", Bytes::from(serde_json::to_vec(v).map_err(|e| self.protocol(e))?))),
            None => None,
        };
        let resp = self.request(method, path, payload).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await.map_err(|e| self.protocol(e))?.to_bytes();
            return self.decode(status, bytes).map(|_| ());
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.protocol(e))?;
            if let Ok(data) = frame.into_data() {
                on_chunk(&data);
            }
        }
        Ok(())
    }

    /// Decodes an answer: JSON on success, [`ClientError::Api`] otherwise.
    pub fn decode(&self, status: StatusCode, bytes: Bytes) -> Result<Value, ClientError> {
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{status}: {}", String::from_utf8_lossy(&bytes).trim()));
            return Err(ClientError::Api { status, message });
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(format!("invalid JSON in answer: {e}")))
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse() {
        assert!(Client::new("unix:///run/netd/netd.sock").is_ok());
        assert!(Client::new("/tmp/x.sock").is_ok());
        assert!(matches!(Client::new("tcp://1.2.3.4:2375"), Err(ClientError::BadHost(_))));
    }

    #[tokio::test]
    async fn missing_daemon_is_one_clear_line() {
        let c = Client::new("unix:///nonexistent/netd.sock").unwrap();
        let e = c.get("/_ping").await.unwrap_err().to_string();
        assert!(e.starts_with("cannot connect to netd at unix:///nonexistent/netd.sock"), "{e}");
        assert!(e.contains("Is netd running?"), "{e}");
        assert!(!e.contains('\n'));
    }
}
