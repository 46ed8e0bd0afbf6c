//! Randomised robustness tests of every decoder of outside input: config
//! files, API paths and versions, filters, timestamps, JSON bodies, and the
//! whole router. Seeded, so a failure reproduces; bounded in count. The
//! property: no input panics, and no input makes the API answer 500.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tower::ServiceExt;

const SEEDS: &[&str] = &[
    "data-root = \"/x\"\nhosts = [\"unix:///a.sock\"]\nlabels = [\"a=b\"]\nreconcile-interval = 5\n",
    "/v1.41/networks/abc?filters=%7B%22name%22%3A%5B%22a%22%5D%7D",
    r#"{"name":{"a":true},"type":["custom"],"label":["k=v"]}"#,
    r#"{"Name":"n1","Driver":"bridge","IPAM":{"Driver":"default","Config":[{"Subnet":"10.1.0.0/24"}]},"Labels":{"a":"b"}}"#,
    "1700000000.123456789",
    r#"{"Image":"busybox","ExposedPorts":{"80/tcp":{}},"HostConfig":{"NetworkMode":"front","PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"8000-8010"}]},"PublishAllPorts":true},"NetworkingConfig":{"EndpointsConfig":{"front":{"IPAMConfig":{"IPv4Address":"10.1.0.9"},"Aliases":["web"]}}}}"#,
    "172.18.0.0/16",
    "53/udp",
    r#"{"Name":"web","VIP":"10.9.0.100","Ports":[{"Protocol":"udp","Port":80,"TargetPort":8080,"PublishedPort":30080,"PublishMode":"preserve"}],"Backends":[{"Addr":"10.9.0.2","Weight":3,"State":"draining"}]}"#,
    r#"{"Key":"AAECAwQFBgcICQoLDA0ODw=="}"#,
];

/// Bytes that are structural in the formats under test.
const ALPHABET: &[u8] = b"{}[]\":,=.\\/%\n\0";

fn mutate(rng: &mut StdRng, seed: &str) -> Vec<u8> {
    let mut b = seed.as_bytes().to_vec();
    for _ in 0..rng.random_range(1..6) {
        let pos = if b.is_empty() { 0 } else { rng.random_range(0..b.len()) };
        match rng.random_range(0..4) {
            0 if !b.is_empty() => {
                b.remove(pos);
            }
            1 => b.insert(pos, rng.random()),
            2 if !b.is_empty() => b[pos] = ALPHABET[rng.random_range(0..ALPHABET.len())],
            _ => b.truncate(pos),
        }
    }
    b
}

fn inputs(n: usize) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(0x6e65_7464);
    (0..n)
        .map(|i| {
            let bytes = if i % 4 == 0 {
                (0..rng.random_range(0..64)).map(|_| rng.random()).collect()
            } else {
                mutate(&mut rng, SEEDS[i % SEEDS.len()])
            };
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .collect()
}

#[test]
fn decoders_never_panic() {
    use crate::api::{filters::Filters, version::split_path};
    for s in inputs(20_000) {
        let _ = crate::config::parse_file(std::path::Path::new("/f.toml"), &s);
        let _ = crate::config::parse_host(&s);
        let _ = split_path(&s);
        let _ = Filters::parse(Some(&s), &["name", "type", "label"]);
        let _ = crate::api::parse_timestamp_for_tests(&s);
        let _ = crate::ids::NetworkId::parse(&s);
        let _ = s.parse::<crate::ipam::Ipv4Net>();
        let _ = crate::runtime::netspec::parse_port_key(&s);
        if let Ok(req) = serde_json::from_str::<crate::runtime::spec::ApiCreate>(&s) {
            let _ = crate::runtime::spec::ContainerSpec::from_api(req);
        }
    }
}

#[tokio::test]
async fn router_never_answers_500_to_garbage() {
    let (_dir, ctx, _stop) = crate::api::test_ctx().await;
    let mut rng = StdRng::seed_from_u64(7);
    let methods = [Method::GET, Method::POST, Method::DELETE, Method::PUT, Method::HEAD];
    let paths = [
        "/networks/create",
        "/networks",
        "/networks/none",
        "/networks/none/connect",
        "/events",
        "/info",
        "/lb/services",
        "/lb/services/web",
        "/lb/conntrack?limit=3",
        "/gossip/keys",
        "/gossip/keys/install",
    ];
    let before = ctx.store.networks().unwrap();
    for (i, junk) in inputs(3_000).into_iter().enumerate() {
        let method = methods[rng.random_range(0..methods.len())].clone();
        let path = if i % 2 == 0 {
            paths[rng.random_range(0..paths.len())].to_owned()
        } else {
            format!("/{}", junk.replace(|c: char| c.is_control() || c == ' ' || c == '#', ""))
        };
        let path = if path == "/events" { "/events?until=1".to_owned() } else { path };
        let Ok(req) = Request::builder().method(method.clone()).uri(&path).body(Body::from(junk.clone())) else {
            continue; // not a valid URI: hyper would refuse it before routing
        };
        let resp = crate::api::app(ctx.clone()).oneshot(req).await.unwrap();
        let st = resp.status();
        assert!(st != StatusCode::INTERNAL_SERVER_ERROR, "{method} {path} with body {junk:?} answered 500");
    }
    assert_eq!(ctx.store.networks().unwrap(), before, "garbage changed the store");
}
