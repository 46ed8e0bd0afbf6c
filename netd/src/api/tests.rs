//! API tests over the real router, store and event bus (no socket, no kernel:
//! the link layer is a fake with no links).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::config::{Config, FileConfig, Flags};
use crate::events::Event;
use crate::model::NetworkRecord;
use crate::reconcile::{Links, LinksError, ObservedLink};

struct NoLinks;

impl Links for NoLinks {
    async fn list(&self) -> Result<Vec<ObservedLink>, LinksError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: u32, _: &str) -> Result<(), LinksError> {
        Ok(())
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    ctx: AppState,
    _stop: watch::Sender<bool>,
}

/// A context over a fresh temp store, for tests elsewhere in the crate.
pub(crate) async fn test_ctx() -> (tempfile::TempDir, AppState, watch::Sender<bool>) {
    let h = harness().await;
    (h._dir, h.ctx, h._stop)
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("images")).unwrap();
    let store = Store::open(&dir.path().join("netd.db")).unwrap();
    store.ensure_networks(NetworkRecord::predefined_set("2026-01-01T00:00:00Z")).unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let (reconcile, _task) =
        crate::reconcile::spawn(store.clone(), NoLinks, None, std::time::Duration::from_secs(30), stop_rx.clone())
            .await;
    let config = Config::merge(&Flags::default(), FileConfig::default()).unwrap();
    let images = crate::image::ImageStore::open(dir.path().join("images"), store.clone()).unwrap();
    let volumes = crate::volume::VolumeStore::open(dir.path().join("volumes"), store.clone()).unwrap();
    let events = Arc::new(EventBus::default());
    let runtime = crate::runtime::manager::Runtime::new(
        store.clone(),
        images.clone(),
        volumes.clone(),
        events.clone(),
        crate::runtime::manager::Paths {
            data: dir.path().join("containers"),
            exec: dir.path().join("exec/containers"),
            cgroup_parent: "netd-apitest".into(),
            netd_exe: "/nonexistent/netd".into(),
        },
    )
    .unwrap();
    let ctx = Arc::new(Ctx {
        networks: None,
        gossip: None,
        lb: Some(Arc::new(crate::lb::Lb::with(store.clone(), Box::new(ebpf::datapath::Recording::new())))),
        runtime,
        images,
        volumes,
        node_id: store.node_id().unwrap(),
        store,
        events,
        config,
        reconcile,
        host: HostFacts::read(),
        shutdown: stop_rx,
        networks_json: Default::default(),
    });
    Harness { _dir: dir, ctx, _stop: stop }
}

impl Harness {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(body.map(|b| Body::from(b.to_owned())).unwrap_or_else(Body::empty)).unwrap();
        let resp = app(self.ctx.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, headers, bytes)
    }

    async fn json(&self, method: Method, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let (s, _, b) = self.call(method, uri, body).await;
        (
            s,
            serde_json::from_slice(&b)
                .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {}", String::from_utf8_lossy(&b))),
        )
    }

    async fn error(&self, method: Method, uri: &str, body: Option<&str>, want: StatusCode) -> String {
        let (s, v) = self.json(method, uri, body).await;
        assert_eq!(s, want, "{uri}: {v}");
        v["message"].as_str().unwrap_or_else(|| panic!("no message in {v}")).to_owned()
    }
}

#[test]
fn static_header_matches_max_version() {
    assert_eq!(VERSION_MAX, version::MAX.to_string());
}

#[tokio::test]
async fn ping_announces_version_with_and_without_prefix() {
    let h = harness().await;
    for uri in ["/_ping", "/v1.41/_ping"] {
        let (s, headers, body) = h.call(Method::GET, uri, None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body, b"OK");
        assert_eq!(headers["api-version"], "1.50");
        assert_eq!(headers["ostype"], "linux");
    }
    let (s, headers, body) = h.call(Method::HEAD, "/_ping", None).await;
    assert_eq!((s, body.len()), (StatusCode::OK, 0));
    assert_eq!(headers["api-version"], "1.50");
}

#[tokio::test]
async fn version_and_info_have_docker_fields() {
    let h = harness().await;
    let (s, v) = h.json(Method::GET, "/v1.50/version", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["ApiVersion"], "1.50");
    assert_eq!(v["MinAPIVersion"], "1.24");
    assert_eq!(v["Components"][0]["Name"], "Engine");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Experimental"], false, "the docker client wants a bool here");
    let (s, v) = h.json(Method::GET, "/info", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["ID"], h.ctx.node_id.to_string());
    assert_eq!(v["OSType"], "linux");
    assert_eq!(v["Swarm"]["LocalNodeState"], "inactive");
    assert_eq!(v["Plugins"]["Network"], serde_json::json!(["bridge", "host", "null"]));
    assert_eq!(v["Netd"]["Reconcile"]["Passes"], 1);
}

#[tokio::test]
async fn default_networks_list_and_inspect() {
    let h = harness().await;
    let (s, v) = h.json(Method::GET, "/networks", None).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<_> = v.as_array().unwrap().iter().map(|n| n["Name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bridge", "host", "none"]);
    let none = &v[2];
    assert_eq!(none["Driver"], "null");
    assert_eq!(none["Scope"], "local");
    let id = none["Id"].as_str().unwrap().to_owned();
    for key in [id.as_str(), "none", &id[..12], &id[..5]] {
        let (s, n) = h.json(Method::GET, &format!("/v1.41/networks/{key}"), None).await;
        assert_eq!(s, StatusCode::OK, "{key}");
        assert_eq!(n["Id"], id.as_str());
        assert!(n["Containers"].as_object().unwrap().is_empty());
    }
}

#[tokio::test]
async fn list_filters_select_and_reject() {
    let h = harness().await;
    let names = |v: Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|n| n["Name"].as_str().unwrap().to_owned()).collect()
    };
    let (_, v) = h.json(Method::GET, "/networks?filters=%7B%22driver%22%3A%7B%22null%22%3Atrue%7D%7D", None).await;
    assert_eq!(names(v), ["none"]);
    let (_, v) = h.json(Method::GET, "/networks?filters=%7B%22type%22%3A%5B%22custom%22%5D%7D", None).await;
    assert!(names(v).is_empty());
    let (_, v) = h.json(Method::GET, "/networks?filters=%7B%22name%22%3A%5B%22o%22%5D%7D", None).await;
    assert_eq!(names(v), ["host", "none"]);
    let m = h
        .error(Method::GET, "/networks?filters=%7B%22colour%22%3A%5B%22x%22%5D%7D", None, StatusCode::BAD_REQUEST)
        .await;
    assert_eq!(m, "invalid filter 'colour'");
    let m = h.error(Method::GET, "/networks?filters=%7Bbroken", None, StatusCode::BAD_REQUEST).await;
    assert!(m.starts_with("invalid filters"), "{m}");
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let h = harness().await;
    let before = h.ctx.store.networks().unwrap();
    let e = |m: &str| m.to_owned();
    let cases: Vec<(Method, &str, Option<&str>, StatusCode, &str)> = vec![
        (Method::POST, "/networks/create", Some("{not json"), StatusCode::BAD_REQUEST, "invalid JSON"),
        (Method::POST, "/networks/create", None, StatusCode::BAD_REQUEST, "request body is empty"),
        (Method::POST, "/networks/create", Some("[]"), StatusCode::BAD_REQUEST, "invalid JSON"),
        (Method::POST, "/networks/create", Some(r#"{"Name": 5}"#), StatusCode::BAD_REQUEST, "invalid JSON"),
        (Method::POST, "/networks/create", Some(r#"{"Name": ""}"#), StatusCode::BAD_REQUEST, "name is required"),
        (Method::POST, "/networks/create", Some(r#"{"Name": "a b"}"#), StatusCode::BAD_REQUEST, "invalid network name"),
        (Method::POST, "/networks/create", Some(r#"{"Name": "bridge"}"#), StatusCode::CONFLICT, "already exists"),
        (
            Method::POST,
            "/networks/create",
            Some(r#"{"Name": "n1", "Driver": "bridge", "IPAM": {"Config": [{"Subnet": "10.1.0.1/16"}]}}"#),
            StatusCode::BAD_REQUEST,
            "host bits set",
        ),
        (
            Method::POST,
            "/networks/create",
            Some(r#"{"Name": "n1", "Driver": "overlay"}"#),
            StatusCode::NOT_IMPLEMENTED,
            "not implemented yet",
        ),
        (
            Method::POST,
            "/networks/create",
            Some(r#"{"Name": "n1", "Driver": "host"}"#),
            StatusCode::FORBIDDEN,
            "only one instance",
        ),
        (
            Method::POST,
            "/networks/create",
            Some(r#"{"Name": "n1", "Driver": "wat"}"#),
            StatusCode::NOT_FOUND,
            "plugin \"wat\" not found",
        ),
        (
            Method::POST,
            "/networks/create",
            Some(r#"{"Name": "n1", "Scope": "galaxy"}"#),
            StatusCode::BAD_REQUEST,
            "invalid scope",
        ),
        (Method::GET, "/networks/nosuchnet", None, StatusCode::NOT_FOUND, "network nosuchnet not found"),
        (Method::GET, "/networks/none?verbose=maybe", None, StatusCode::BAD_REQUEST, "invalid value for verbose"),
        (Method::DELETE, "/networks/nosuchnet", None, StatusCode::NOT_FOUND, "not found"),
        (Method::DELETE, "/networks/bridge", None, StatusCode::FORBIDDEN, "pre-defined network"),
        (Method::POST, "/networks/none/connect", Some("{}"), StatusCode::BAD_REQUEST, "container is required"),
        (
            Method::POST,
            "/networks/none/connect",
            Some(r#"{"Container":"c1"}"#),
            StatusCode::NOT_FOUND,
            "No such container: c1",
        ),
        (
            Method::POST,
            "/networks/nosuch/connect",
            Some(r#"{"Container":"c1"}"#),
            StatusCode::NOT_FOUND,
            "network nosuch not found",
        ),
        (Method::GET, "/no/such/path", None, StatusCode::NOT_FOUND, "page not found"),
        (Method::GET, "/v1.99/networks", None, StatusCode::BAD_REQUEST, "is too new"),
        (Method::GET, "/v1.10/networks", None, StatusCode::BAD_REQUEST, "is too old"),
        (Method::GET, "/v1.2.3/networks", None, StatusCode::BAD_REQUEST, "invalid API version"),
        (Method::PUT, "/networks", None, StatusCode::METHOD_NOT_ALLOWED, "not allowed"),
        (Method::GET, "/events?since=yesterday", None, StatusCode::BAD_REQUEST, "invalid value for since"),
        (
            Method::GET,
            "/events?filters=%7B%22type%22%3A%5B%22bogus%22%5D%7D",
            None,
            StatusCode::BAD_REQUEST,
            "invalid filter",
        ),
    ];
    for (method, uri, body, status, want) in cases {
        let m = h.error(method.clone(), uri, body, status).await;
        assert!(m.contains(want), "{method} {uri}: {m:?} lacks {:?}", e(want));
    }
    let mut req =
        Request::post("/networks/create").header("content-type", "text/plain").body(Body::from("{}")).unwrap();
    *req.method_mut() = Method::POST;
    let resp = app(h.ctx.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(h.ctx.store.networks().unwrap(), before, "store must be unchanged");
    // Still serving afterwards.
    let (s, _) = h.json(Method::GET, "/networks", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn custom_network_remove_and_prune_emit_events() {
    let h = harness().await;
    let mut rec = NetworkRecord::predefined_set("t").remove(0);
    rec.name = "leftover".into();
    rec.predefined = false;
    rec.labels.insert("team".into(), "a".into());
    h.ctx.store.insert_network(&rec).unwrap();
    let (s, _, _) = h.call(Method::DELETE, "/networks/leftover", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(h.ctx.store.network(&rec.id).unwrap().is_none());
    rec.id = crate::ids::NetworkId::random();
    h.ctx.store.insert_network(&rec).unwrap();
    let (s, v) = h.json(Method::POST, "/networks/prune?filters=%7B%22label%22%3A%5B%22team%3Db%22%5D%7D", None).await;
    assert_eq!((s, v["NetworksDeleted"].as_array().unwrap().len()), (StatusCode::OK, 0));
    let (s, v) = h.json(Method::POST, "/networks/prune?filters=%7B%22label%22%3A%5B%22team%3Da%22%5D%7D", None).await;
    assert_eq!((s, &v["NetworksDeleted"]), (StatusCode::OK, &serde_json::json!(["leftover"])));
    assert_eq!(h.ctx.store.networks().unwrap().len(), 3);
    let (history, _) = h.ctx.events.subscribe();
    let actions: Vec<_> = history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["destroy", "destroy"]);
}

#[tokio::test]
async fn events_replay_history_and_stop_at_until() {
    let h = harness().await;
    h.ctx.events.publish(Event::now("network", "create", "aaa", &[("name", "n1"), ("type", "bridge")]));
    h.ctx.events.publish(Event::now("network", "destroy", "aaa", &[("name", "n1"), ("type", "bridge")]));
    let now = jiff::Timestamp::now().as_second() + 1;
    let (s, _, body) = h.call(Method::GET, &format!("/events?since=0&until={now}"), None).await;
    assert_eq!(s, StatusCode::OK);
    let lines: Vec<Value> =
        body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["Action"], "destroy");
    let filtered = format!("/events?since=0&until={now}&filters=%7B%22event%22%3A%5B%22create%22%5D%7D");
    let (_, _, body) = h.call(Method::GET, &filtered, None).await;
    assert_eq!(body.iter().filter(|b| **b == b'\n').count(), 1);
}

#[tokio::test]
async fn events_stream_live_until_deadline() {
    let h = harness().await;
    let until = jiff::Timestamp::now().as_second() + 2;
    let ctx = h.ctx.clone();
    let publisher = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        ctx.events.publish(Event::now("network", "create", "live1", &[("name", "x")]));
    });
    let (s, _, body) = h.call(Method::GET, &format!("/events?until={until}"), None).await;
    publisher.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("\"live1\""), "{text}");
}

fn rootfs_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("etc/os-release").unwrap();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"test\n"[..]).unwrap();
    b.into_inner().unwrap()
}

async fn import(h: &Harness, query: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let req = Request::post(format!("/images/create?{query}")).body(Body::from(body)).unwrap();
    let resp = app(h.ctx.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn images_import_list_inspect_remove() {
    let h = harness().await;
    let (s, v) =
        import(&h, "fromSrc=-&repo=my/app&tag=1.0&changes=CMD%20%5B%22echo%22%5D&changes=EXPOSE%2080", rootfs_tar())
            .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = v["status"].as_str().unwrap().to_owned();
    assert!(id.starts_with("sha256:"));
    let (_, list) = h.json(Method::GET, "/v1.41/images/json", None).await;
    assert_eq!(list[0]["RepoTags"], serde_json::json!(["my/app:1.0"]));
    let (s, img) = h.json(Method::GET, "/images/my/app:1.0/json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(img["Id"], id.as_str());
    assert_eq!(img["Config"]["Cmd"], serde_json::json!(["echo"]));
    assert!(img["Config"]["ExposedPorts"]["80/tcp"].is_object());
    let (_, list) = h.json(Method::GET, "/images/json?filters=%7B%22reference%22%3A%5B%22my%2F*%22%5D%7D", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (s, del) = h.json(Method::DELETE, "/images/my/app:1.0", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(del[0]["Untagged"], "my/app:1.0");
    assert_eq!(del[1]["Deleted"], id.as_str());
    let m = h.error(Method::GET, "/images/my/app:1.0/json", None, StatusCode::NOT_FOUND).await;
    assert_eq!(m, "No such image: my/app:1.0");
}

#[tokio::test]
async fn image_bad_input_changes_nothing() {
    let h = harness().await;
    let cases: &[(&str, Vec<u8>, StatusCode, &str)] = &[
        ("fromSrc=-&repo=app", b"not a tarball".to_vec(), StatusCode::BAD_REQUEST, "invalid archive"),
        ("fromSrc=-&repo=app", Vec::new(), StatusCode::BAD_REQUEST, "body is empty"),
        ("fromSrc=-&repo=Bad%20Name", rootfs_tar(), StatusCode::BAD_REQUEST, "repository names"),
        ("fromSrc=-&repo=app&changes=RUN%20rm", rootfs_tar(), StatusCode::BAD_REQUEST, "invalid change"),
        ("fromSrc=http%3A%2F%2Fx", rootfs_tar(), StatusCode::BAD_REQUEST, "only \"-\""),
        ("fromImage=alpine&tag=3", Vec::new(), StatusCode::NOT_FOUND, "No such image: alpine:3"),
        ("", Vec::new(), StatusCode::BAD_REQUEST, "fromSrc or fromImage"),
    ];
    for (q, body, want, msg) in cases {
        let (s, v) = import(&h, q, body.clone()).await;
        assert_eq!(s, *want, "{q}: {v}");
        assert!(v["message"].as_str().unwrap().contains(msg), "{q}: {v}");
    }
    assert!(h.ctx.images.list().unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(h._dir.path().join("images")).unwrap().flatten().collect();
    assert!(left.is_empty(), "no staging or upload files left: {left:?}");
    h.error(Method::DELETE, "/images/nosuch", None, StatusCode::NOT_FOUND).await;
    h.error(
        Method::GET,
        "/images/json?filters=%7B%22dangling%22%3A%5B%22maybe%22%5D%7D",
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;
    h.error(Method::GET, "/images/x/notjson", None, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn volumes_create_inspect_list_remove_prune() {
    let h = harness().await;
    let (s, v) = h.json(Method::POST, "/volumes/create", Some(r#"{"Name":"data","Labels":{"team":"a"}}"#)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["Name"], "data");
    assert_eq!(v["Driver"], "local");
    assert!(v["Mountpoint"].as_str().unwrap().ends_with("/volumes/data/_data"));
    let (s, again) = h.json(Method::POST, "/volumes/create", Some(r#"{"Name":"data"}"#)).await;
    assert_eq!((s, &again["Labels"]["team"]), (StatusCode::CREATED, &serde_json::json!("a")));
    let (_, anon) = h.json(Method::POST, "/volumes/create", Some("{}")).await;
    let (_, list) = h.json(Method::GET, "/volumes?filters=%7B%22label%22%3A%5B%22team%3Da%22%5D%7D", None).await;
    assert_eq!(list["Volumes"].as_array().unwrap().len(), 1);
    let (s, p) = h.json(Method::POST, "/volumes/prune", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["VolumesDeleted"], serde_json::json!([anon["Name"]]), "default prune: anonymous only");
    let (s, _, _) = h.call(Method::DELETE, "/volumes/data", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let m = h.error(Method::GET, "/volumes/data", None, StatusCode::NOT_FOUND).await;
    assert_eq!(m, "get data: no such volume");
    for (body, want) in [
        (r#"{"Name":"a/b"}"#, "invalid volume name"),
        (r#"{"Name":"x1","Driver":"nfs"}"#, "plugin \"nfs\" not found"),
        (r#"{"Name":"x1","DriverOpts":{"type":"tmpfs"}}"#, "not supported"),
        (r#"{"Name":7}"#, "invalid JSON"),
    ] {
        let m = h.error(Method::POST, "/volumes/create", Some(body), StatusCode::BAD_REQUEST).await;
        assert!(m.contains(want), "{body}: {m}");
    }
    let (_, list) = h.json(Method::GET, "/volumes", None).await;
    assert!(list["Volumes"].as_array().unwrap().is_empty(), "refused creates wrote nothing: {list}");
}

#[tokio::test]
async fn network_list_snapshot_follows_every_store_write() {
    let h = harness().await;
    let names = |v: Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|n| n["Name"].as_str().unwrap().to_owned()).collect()
    };
    let (_, v) = h.json(Method::GET, "/networks", None).await;
    assert_eq!(names(v).len(), 3);
    let mut rec = NetworkRecord::predefined_set("t").remove(0);
    rec.name = "added-behind-the-api".into();
    rec.predefined = false;
    h.ctx.store.insert_network(&rec).unwrap();
    let (_, v) = h.json(Method::GET, "/networks", None).await;
    assert!(names(v).contains(&"added-behind-the-api".to_owned()), "stale snapshot after insert");
    h.ctx.store.remove_network(&rec.id).unwrap();
    let (_, v) = h.json(Method::GET, "/networks", None).await;
    assert_eq!(names(v).len(), 3, "stale snapshot after remove");
}

#[tokio::test]
async fn lb_services_create_replace_list_remove_and_refuse_bad_ones() {
    let h = harness().await;
    let web = r#"{"Name":"web","VIP":"10.9.0.100","Ports":[{"Port":80,"TargetPort":8080}],"Backends":[{"Addr":"10.9.0.2"},{"Addr":"10.9.0.3","State":"draining"}]}"#;
    let (s, v) = h.json(Method::POST, "/lb/services", Some(web)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!((v["Name"].as_str(), v["Ports"][0]["Protocol"].as_str()), (Some("web"), Some("tcp")));
    assert_eq!(v["Backends"][1]["State"], "draining");
    // Bad requests: 400 (or 409 for a taken VIP port), and nothing changes.
    for (body, want, code) in [
        (r#"{"Name":"x","VIP":"10.9.0.100","Ports":[{"Port":80}]}"#, "10.9.0.100:80/tcp is already service web", 409),
        (r#"{"Name":"x","VIP":"10.9.0.101","Ports":[{"Port":80}],"Backend":[]}"#, "unknown field `Backend`", 400),
        (r#"{"Name":"x","VIP":"10.9.0.300","Ports":[{"Port":80}]}"#, "invalid JSON", 400),
        (r#"{"Name":"x","VIP":"10.9.0.101","Ports":[{"Port":70000}]}"#, "invalid JSON", 400),
        (r#"{"Name":"x","VIP":"10.9.0.101","Ports":[{"Port":80}],"CreatedAt":"now"}"#, "set by the daemon", 400),
        (r#"{"Name":"x y","VIP":"10.9.0.101","Ports":[{"Port":80}]}"#, "invalid service name", 400),
    ] {
        let m = h.error(Method::POST, "/lb/services", Some(body), StatusCode::from_u16(code).unwrap()).await;
        assert!(m.contains(want), "{body}: {m}");
    }
    let (_, list) = h.json(Method::GET, "/lb/services", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (_, info) = h.json(Method::GET, "/info", None).await;
    assert_eq!(info["Netd"]["LoadBalancer"]["Loaded"], true, "{info}");
    assert_eq!(info["Netd"]["LoadBalancer"]["Services"], 1, "{info}");
    // Replace: the same name, new backends.
    let web2 = web.replace("draining", "active");
    let (s, _) = h.json(Method::POST, "/lb/services", Some(&web2)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, one) = h.json(Method::GET, "/lb/services/web", None).await;
    assert_eq!(one["Backends"][1]["State"], "active");
    assert_eq!(one["Backends"][0]["Stats"]["Flows"], 0);
    let (_, ct) = h.json(Method::GET, "/lb/conntrack?limit=5", None).await;
    assert_eq!(ct["Total"], 0);
    let m = h.error(Method::GET, "/lb/conntrack?limit=0", None, StatusCode::BAD_REQUEST).await;
    assert!(m.contains("1..=100000"), "{m}");
    let (s, _, _) = h.call(Method::DELETE, "/lb/services/web", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let m = h.error(Method::DELETE, "/lb/services/web", None, StatusCode::NOT_FOUND).await;
    assert_eq!(m, "no such service: web");
}
