//! `/gossip/keys`: netd's own endpoints (not Docker's) to rotate this
//! node's gossip encryption keys as memberlist's keyring allows: list
//! (fingerprints, never keys), install a decryption key, make an installed
//! key the primary one, remove a non-primary key. The keyring is kept in
//! the store after each change, so a restart keeps the rotation. A
//! cluster-wide rotation runs the same steps on every node: install
//! everywhere, then use everywhere, then remove the old key everywhere.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, RawBody, json_body};
use crate::cluster::{KEYRING_META, fingerprint, keyring_to_meta};

fn keys_json(encrypted: bool, keys: &[Vec<u8>]) -> Value {
    let list: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"Fingerprint": fingerprint(k), "Primary": i == 0, "Bits": k.len() * 8}))
        .collect();
    json!({"Encrypted": encrypted, "Keys": list})
}

fn gossip(st: &AppState) -> Result<&gossip::Handle, ApiError> {
    st.gossip.as_ref().ok_or_else(|| ApiError::NotImplemented("cluster membership is not running here".into()))
}

pub(super) async fn list(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let g = gossip(&st)?;
    let keys = if g.encrypted() { g.with_keyring(|k| Ok(k.keys().to_vec())).unwrap_or_default() } else { Vec::new() };
    Ok(Json(keys_json(g.encrypted(), &keys)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    #[serde(rename = "Key")]
    key: String,
}

pub(super) async fn change(
    State(st): State<AppState>,
    Path(op): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    let g = gossip(&st)?;
    if !matches!(op.as_str(), "install" | "use" | "remove") {
        return Err(ApiError::NotFound(format!("no key operation {op:?}: install, use or remove")));
    }
    let req: KeyBody = json_body(&headers, &body)?;
    let key = crate::config::base64_decode(&req.key)
        .ok_or_else(|| ApiError::BadRequest("Key is not base64 (as `serf keygen` prints keys)".into()))?;
    if !g.encrypted() {
        return Err(ApiError::Conflict(
            "gossip encryption is off on this node: start it with gossip-keys in its config file".into(),
        ));
    }
    let keys = g
        .with_keyring(|k| {
            match op.as_str() {
                "install" => k.install(key.clone())?,
                "use" => k.use_key(&key)?,
                _ => k.remove(&key)?,
            }
            Ok(k.keys().to_vec())
        })
        .map_err(|e| match e {
            gossip::SecurityError::KeySize(_) => ApiError::BadRequest(e.to_string()),
            gossip::SecurityError::NoSuchKey(_) => {
                ApiError::NotFound(format!("the keyring has no key with fingerprint {}", fingerprint(&key)))
            }
            other => ApiError::Conflict(other.to_string()),
        })?;
    st.store.set_meta(KEYRING_META, &keyring_to_meta(&keys))?;
    tracing::info!(op = %op, key = %fingerprint(&key), keys = keys.len(), "gossip keyring changed");
    Ok(Json(keys_json(true, &keys)))
}
