//! `GET /events`: replays history (with `since`), then streams live events as
//! newline-separated JSON until `until`, the client leaves, or the daemon stops.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::Response;
use futures::StreamExt;
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;

use super::filters::Filters;
use super::{ApiError, AppState, query};
use crate::events::Event;

#[derive(Deserialize, Default)]
struct EventsQuery {
    since: Option<String>,
    until: Option<String>,
    filters: Option<String>,
}

/// Parses Docker's timestamps: `SECONDS[.FRACTION]` (what the client sends).
pub fn parse_timestamp(name: &str, s: &str) -> Result<i64, ApiError> {
    let bad =
        || ApiError::BadRequest(format!("invalid value for {name}: {s:?} (expected unix seconds, e.g. 1700000000.5)"));
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let nanos: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| bad())? };
    secs.checked_mul(1_000_000_000).and_then(|s| s.checked_add(nanos)).ok_or_else(bad)
}

fn matches(f: &Filters, e: &Event) -> bool {
    f.any("type", |v| v == e.kind)
        && f.any("event", |v| v == e.action)
        && f.any("scope", |v| v == e.scope)
        && f.any("network", |v| {
            e.kind == "network" && (e.actor.id.starts_with(v) || e.actor.attributes.get("name").is_some_and(|n| n == v))
        })
        && f.get("label").iter().all(|l| match l.split_once('=') {
            Some((k, v)) => e.actor.attributes.get(k).is_some_and(|x| x == v),
            None => e.actor.attributes.contains_key(l.as_str()),
        })
}

fn line(e: &Event) -> Bytes {
    let mut v = serde_json::to_vec(e).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

pub(super) async fn stream(State(st): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let q: EventsQuery = query(&uri)?;
    let since = q.since.as_deref().filter(|s| !s.is_empty()).map(|s| parse_timestamp("since", s)).transpose()?;
    let until = q.until.as_deref().filter(|s| !s.is_empty()).map(|s| parse_timestamp("until", s)).transpose()?;
    let f = Filters::parse(
        q.filters.as_deref(),
        &["type", "event", "network", "scope", "label", "container", "image", "volume", "daemon", "node", "service"],
    )?;
    f.expect_values(
        "type",
        &["container", "image", "volume", "network", "daemon", "plugin", "node", "service", "secret", "config"],
    )?;
    let now = jiff::Timestamp::now().as_nanosecond() as i64;
    let (history, rx) = st.events.subscribe();
    let past: Vec<Bytes> = match since {
        None => Vec::new(),
        Some(s) => history
            .iter()
            .filter(|e| e.time_nano >= s && until.is_none_or(|u| e.time_nano <= u) && matches(&f, e))
            .map(line)
            .collect(),
    };
    let past = futures::stream::iter(past.into_iter().map(Ok::<_, std::convert::Infallible>));
    let body = match until {
        Some(u) if u <= now => Body::from_stream(past),
        _ => {
            let wait = until.map(|u| Duration::from_nanos((u - now) as u64));
            let mut shutdown = st.shutdown.clone();
            let stop = async move {
                let deadline = async {
                    match wait {
                        Some(d) => tokio::time::sleep(d).await,
                        None => futures::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = deadline => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
            };
            let live = BroadcastStream::new(rx)
                .filter_map(move |r| {
                    let keep = match r {
                        Ok(e) if until.is_none_or(|u| e.time_nano <= u) && matches(&f, &e) => Some(Ok(line(&e))),
                        Ok(_) => None,
                        Err(lag) => {
                            tracing::warn!(error = %lag, "events subscriber lagged; events dropped");
                            None
                        }
                    };
                    futures::future::ready(keep)
                })
                .take_until(Box::pin(stop));
            Body::from_stream(past.chain(live))
        }
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_like_dockers() {
        assert_eq!(parse_timestamp("since", "0").unwrap(), 0);
        assert_eq!(parse_timestamp("since", "1700000000").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(parse_timestamp("since", "1700000000.5").unwrap(), 1_700_000_000_500_000_000);
        assert_eq!(parse_timestamp("until", "1.000000001").unwrap(), 1_000_000_001);
        for bad in ["", "x", "1.2.3", "1.1234567890", "99999999999999999999", ".5", "1e9"] {
            assert!(parse_timestamp("since", bad).is_err(), "{bad}");
        }
    }
}
