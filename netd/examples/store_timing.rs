fn main() {
    let dir = std::env::temp_dir().join(format!("netd-timing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = netd::store::Store::open(&dir.join("netd.db")).unwrap();
    store.ensure_networks(netd::model::NetworkRecord::predefined_set("t")).unwrap();
    let n = 20_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let v = store.networks().unwrap();
        std::hint::black_box(v);
    }
    println!("store.networks(): {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let nets = store.networks().unwrap();
    let t = std::time::Instant::now();
    for _ in 0..n {
        let out: Vec<netd::api::types::Network> = nets.iter().map(Into::into).collect();
        std::hint::black_box(serde_json::to_vec(&out).unwrap());
    }
    println!("to docker json: {:.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    std::fs::remove_dir_all(&dir).unwrap();
}
