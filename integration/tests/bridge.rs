//! Lab tests of local networking, driven by the stock docker client: bridge
//! networks, IPAM, port publishing from another node, the node itself and a
//! container (hairpin), connect/disconnect, and the isolation matrix.

use std::process::Output;
use std::time::Duration;

use integration::{Lab, Node, require_root};
use serde_json::Value;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "command failed ({}):\n{}", o.status, text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn docker(n: &Node, args: &[&str]) -> Output {
    match n.docker(args) {
        Some(o) => o,
        None => panic!("no docker client: `cargo xtask setup` provides one"),
    }
}

fn has_docker() -> bool {
    if integration::bins::docker().is_some() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "no docker client in CI: `cargo xtask setup` must provide one");
    eprintln!("SKIPPED: no docker client");
    false
}

fn inspect(n: &Node, what: &str) -> Value {
    let v: Value = serde_json::from_str(&ok(docker(n, &["inspect", what]))).unwrap();
    v[0].clone()
}

/// Runs `wget` from inside container `c`; returns its output or the failure.
fn wget(n: &Node, c: &str, url: &str) -> Result<String, String> {
    // busybox 1.35's `wget -T` crashes: bound it with `timeout` instead.
    let o = docker(n, &["exec", c, "timeout", "5", "wget", "-q", "-O", "-", url]);
    if o.status.success() { Ok(String::from_utf8_lossy(&o.stdout).into_owned()) } else { Err(text(&o)) }
}

/// `wget` from the node's own namespace (busybox from the host), bounded.
fn node_wget(n: &Node, url: &str) -> Result<String, String> {
    let o = n.command("timeout").args(["5", "busybox", "wget", "-q", "-O", "-", url]).output().unwrap();
    if o.status.success() { Ok(String::from_utf8_lossy(&o.stdout).into_owned()) } else { Err(text(&o)) }
}

#[test]
fn docker_networks_publish_and_connect() {
    if !require_root("docker_networks_publish_and_connect") || !has_docker() {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let (n, other) = (lab.node(0), lab.node(1));
    lab.start_all().unwrap();

    // The default bridge has a device and a subnet from the first pool.
    let bridge = inspect(n, "bridge");
    let subnet = bridge["IPAM"]["Config"][0]["Subnet"].as_str().unwrap().to_owned();
    assert_eq!(subnet, "172.17.0.0/16", "{bridge}");
    let brnf = ok(n.sh("sysctl -n net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables"));
    assert_eq!(brnf.split_whitespace().collect::<Vec<_>>(), ["1", "0"], "forwarding on, br_netfilter off (node only)");
    let dev = text(&n.sh("ip -o addr show netd0"));
    assert!(dev.contains("172.17.0.1/16"), "{dev}");

    // User-defined network with explicit IPAM; a second one gets the next pool.
    ok(docker(n, &["network", "create", "--subnet", "10.30.0.0/24", "--gateway", "10.30.0.254", "front"]));
    ok(docker(n, &["network", "create", "back"]));
    let back = inspect(n, "back");
    assert_eq!(back["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16", "{back}");
    let ls = ok(docker(n, &["network", "ls", "--format", "{{.Name}} {{.Driver}}"]));
    assert!(ls.contains("front bridge") && ls.contains("back bridge"), "{ls}");
    // Overlap with another network, and with the node's own route, are refused.
    let o = docker(n, &["network", "create", "--subnet", "10.30.0.0/16", "clash"]);
    assert!(!o.status.success() && text(&o).contains("overlaps the subnet of network front"), "{}", text(&o));
    let o = docker(n, &["network", "create", "--subnet", "198.18.0.0/24", "clash"]);
    assert!(!o.status.success() && text(&o).contains("overlaps route 198.18.0.0/24"), "{}", text(&o));

    // A bridge name that is someone else's device: refused, the device untouched.
    let o = docker(n, &["network", "create", "-o", "com.docker.network.bridge.name=eth0", "steal"]);
    assert!(!o.status.success() && text(&o).contains("not this network's bridge"), "{}", text(&o));
    let eth0 = text(&n.sh("ip -o link show eth0; ip -o -4 addr show eth0"));
    assert!(!eth0.contains("alias") && eth0.matches("inet ").count() == 1, "eth0 changed: {eth0}");
    assert!(!docker(n, &["network", "inspect", "steal"]).status.success(), "half-made network left");
    // The acceptance line of the issue: a web server published on 8080.
    ok(docker(
        n,
        &[
            "run",
            "-d",
            "--network",
            "front",
            "-p",
            "8080:80",
            "--name",
            "web",
            "busybox",
            "sh",
            "-c",
            "echo hello-from-web > /index.html && exec httpd -f -p 80 -h /",
        ],
    ));
    let port = ok(docker(n, &["port", "web"]));
    assert!(port.contains("80/tcp -> 0.0.0.0:8080"), "{port}");
    let web = inspect(n, "web");
    let web_ip = web["NetworkSettings"]["Networks"]["front"]["IPAddress"].as_str().unwrap().to_owned();
    assert_eq!(web_ip, "10.30.0.1", "first free address (the gateway is .254): {web}");
    assert_eq!(web["NetworkSettings"]["Networks"]["front"]["MacAddress"], "02:42:0a:1e:00:01");
    let addr = format!("http://{}:8080/", n.addr);
    // From another node of the lab.
    let mut page = Err(String::new());
    for _ in 0..20 {
        page = node_wget(other, &addr);
        if page.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(page.unwrap().trim(), "hello-from-web");
    // From the node itself, on its address and on localhost.
    assert_eq!(node_wget(n, &addr).unwrap().trim(), "hello-from-web");
    assert_eq!(node_wget(n, "http://127.0.0.1:8080/").unwrap().trim(), "hello-from-web");
    // From a container on the same network (hairpin through the node's address).
    ok(docker(n, &["run", "-d", "--network", "front", "--name", "peer", "busybox", "sleep", "300"]));
    assert_eq!(wget(n, "peer", &addr).unwrap().trim(), "hello-from-web");
    assert_eq!(wget(n, "peer", &format!("http://{web_ip}/")).unwrap().trim(), "hello-from-web");
    // ... and from the published container itself, through its own published port.
    assert_eq!(wget(n, "web", &addr).unwrap().trim(), "hello-from-web");
    // Host port ranges: the first free port of the range.
    ok(docker(
        n,
        &["run", "-d", "--network", "front", "-p", "8080-8082:80", "--name", "ranged", "busybox", "sleep", "300"],
    ));
    let port = ok(docker(n, &["port", "ranged", "80"]));
    assert!(port.ends_with(":8081"), "{port}");
    ok(docker(n, &["rm", "-f", "ranged"]));
    // The container's own interface: eth0, its address, default route via the gateway.
    let ip = ok(docker(n, &["exec", "peer", "ip", "-o", "-4", "addr", "show", "eth0"]));
    assert!(ip.contains("10.30.0.2/24"), "{ip}");
    let route = ok(docker(n, &["exec", "peer", "ip", "route"]));
    assert!(route.contains("default via 10.30.0.254 dev eth0"), "{route}");

    // The published port is taken: a second container cannot have it, and nothing is left behind.
    let o =
        docker(n, &["run", "-d", "--network", "front", "-p", "8080:80", "--name", "web2", "busybox", "sleep", "300"]);
    assert!(!o.status.success() && text(&o).contains("port is already allocated"), "{}", text(&o));
    assert_eq!(inspect(n, "web2")["State"]["Status"], "created");
    ok(docker(n, &["rm", "web2"]));
    // A port a socket of the node holds is refused too (409), before the container runs.
    let node_ns = std::path::PathBuf::from(format!("/run/netns/{}", n.netns.name));
    let _holder =
        integration::probe::in_netns(&node_ns, || std::net::TcpListener::bind(("0.0.0.0", 9090))).unwrap().unwrap();
    let o =
        docker(n, &["run", "-d", "--network", "front", "-p", "9090:80", "--name", "web3", "busybox", "sleep", "300"]);
    assert!(!o.status.success() && text(&o).contains("9090/tcp failed: port is already allocated"), "{}", text(&o));
    ok(docker(n, &["rm", "web3"]));
    // netctl: MTU and address range of a network reach the container's interface.
    ok(n.netctl(&[
        "network",
        "create",
        "--subnet",
        "10.40.0.0/24",
        "--ip-range",
        "10.40.0.128/25",
        "--opt",
        "mtu=1400",
        "small",
    ]));
    ok(n.netctl(&["run", "-d", "--network", "small", "--name", "mtu", "busybox", "sleep", "300"]));
    let link = ok(docker(n, &["exec", "mtu", "ip", "-o", "addr", "show", "eth0"]));
    assert!(link.contains("10.40.0.128/24"), "first address of the range: {link}");
    let link = ok(docker(n, &["exec", "mtu", "cat", "/sys/class/net/eth0/mtu"]));
    assert_eq!(link, "1400");
    let ps = ok(n.netctl(&["ps"]));
    assert!(ps.contains("PORTS") && ps.contains("0.0.0.0:8080->80/tcp"), "{ps}");
    ok(docker(n, &["rm", "-f", "mtu"]));
    ok(n.netctl(&["network", "rm", "small"]));
    // Not published, not reachable from another node (even with a route to it).
    ok(other.sh(&format!("ip route add 10.30.0.0/24 via {}", n.addr)));
    assert!(node_wget(other, &format!("http://{web_ip}/")).is_err(), "unpublished container reachable from outside");

    // -P: every exposed port on a random host port in 49153-65535.
    ok(docker(
        n,
        &["run", "-d", "--network", "back", "--expose", "7000", "-P", "--name", "pall", "busybox", "sleep", "300"],
    ));
    let port = ok(docker(n, &["port", "pall", "7000"]));
    let host_port: u16 = port.rsplit(':').next().unwrap().parse().unwrap();
    assert!((49153..=65535).contains(&host_port), "{port}");
    let ps = ok(docker(n, &["ps", "--format", "{{.Names}} {{.Ports}}"]));
    assert!(ps.contains("web 0.0.0.0:8080->80/tcp"), "{ps}");

    // connect / disconnect a running container.
    ok(docker(n, &["network", "connect", "--ip", "172.18.0.50", "back", "peer"]));
    let ip = ok(docker(n, &["exec", "peer", "ip", "-o", "-4", "addr", "show", "eth1"]));
    assert!(ip.contains("172.18.0.50/16"), "{ip}");
    let o = docker(n, &["network", "connect", "--ip", "172.18.0.50", "back", "web"]);
    assert!(!o.status.success() && text(&o).contains("already in use"), "{}", text(&o));
    let net = inspect(n, "back");
    assert!(net["Containers"].as_object().unwrap().values().any(|c| c["Name"] == "peer"), "{net}");
    let o = docker(n, &["network", "rm", "back"]);
    assert!(!o.status.success() && text(&o).contains("active endpoints"), "{}", text(&o));
    ok(docker(n, &["network", "disconnect", "back", "peer"]));
    let o = docker(n, &["exec", "peer", "ip", "link", "show", "eth1"]);
    assert!(!o.status.success(), "eth1 still there after disconnect");

    // Addresses survive a netd crash and are not handed out twice afterwards.
    n.kill_netd().unwrap();
    n.start_netd(&[]).unwrap();
    assert_eq!(wget(n, "peer", &format!("http://{web_ip}/")).unwrap().trim(), "hello-from-web");
    ok(docker(n, &["run", "-d", "--network", "front", "--name", "late", "busybox", "sleep", "300"]));
    assert_eq!(inspect(n, "late")["NetworkSettings"]["Networks"]["front"]["IPAddress"], "10.30.0.3");
    assert_eq!(node_wget(other, &addr).unwrap().trim(), "hello-from-web", "published port after restart");

    // Removal: containers free their addresses, networks go with their bridge.
    ok(docker(n, &["rm", "-f", "web", "peer", "pall", "late"]));
    assert!(node_wget(n, &addr).is_err(), "published port still answers after rm");
    ok(docker(n, &["network", "rm", "front", "back"]));
    let links = text(&n.sh("ip -o link show type bridge"));
    assert!(!links.contains("br-"), "bridges left behind: {links}");
}

/// The seed's isolation rules as a matrix: 3 networks (one internal), 6
/// containers (one on two networks), TCP and UDP, every direction, plus a
/// host outside (another lab node, routed to every subnet) and egress to it.
#[test]
fn isolation_matrix() {
    use integration::probe::{self, Servers};
    use std::net::Ipv4Addr;
    if !require_root("isolation_matrix") || !has_docker() {
        return;
    }
    let lab = Lab::new(2).unwrap();
    let (n, outside) = (lab.node(0), lab.node(1));
    lab.start_all().unwrap();
    ok(docker(n, &["network", "create", "red"]));
    ok(docker(n, &["network", "create", "green"]));
    ok(docker(n, &["network", "create", "--internal", "blue"]));
    let placement: &[(&str, &[&str])] = &[
        ("r1", &["red"]),
        ("r2", &["red"]),
        ("g1", &["green"]),
        ("g2", &["green"]),
        ("rg", &["red", "green"]),
        ("b1", &["blue"]),
    ];
    const PORT: u16 = 7000;
    let mut servers = Vec::new();
    // (container, network, address) for every endpoint; (name, netns) for every source.
    let mut targets: Vec<(String, String, Ipv4Addr)> = Vec::new();
    let mut sources: Vec<(String, std::path::PathBuf, Vec<String>)> = Vec::new();
    for (name, nets) in placement {
        ok(docker(n, &["run", "-d", "--network", nets[0], "--name", name, "busybox", "sleep", "600"]));
        for extra in &nets[1..] {
            ok(docker(n, &["network", "connect", extra, name]));
        }
        let c = inspect(n, name);
        let ns = probe::ns_of(c["State"]["Pid"].as_u64().unwrap() as u32);
        servers.push(Servers::start(&ns, PORT, name).unwrap());
        for net in nets.iter() {
            let ip = c["NetworkSettings"]["Networks"][net]["IPAddress"].as_str().unwrap().parse().unwrap();
            targets.push((name.to_string(), net.to_string(), ip));
            ok(outside.sh(&format!("ip route replace {ip}/32 via {}", n.addr)));
        }
        sources.push((name.to_string(), ns, nets.iter().map(|s| s.to_string()).collect()));
    }
    let outside_ns = std::path::PathBuf::from(format!("/run/netns/{}", outside.netns.name));
    sources.push(("outside".into(), outside_ns.clone(), Vec::new()));
    let _egress = Servers::start(&outside_ns, PORT, "outside").unwrap();
    let timeout = Duration::from_millis(700);
    // Rows in parallel (one thread per source), probes in a row in sequence.
    let rows: Vec<_> = sources
        .iter()
        .map(|(src, ns, nets)| {
            let (src, ns, nets, targets) = (src.clone(), ns.clone(), nets.clone(), targets.clone());
            let outside_addr = outside.addr;
            std::thread::spawn(move || {
                let mut cells = Vec::new();
                for (dst, net, ip) in targets.iter().filter(|t| t.0 != src) {
                    let expect = nets.contains(net);
                    let t = probe::tcp(&ns, *ip, PORT, timeout);
                    let u = probe::udp(&ns, *ip, PORT, timeout);
                    let good = |r: &Option<String>| r.as_deref().is_some_and(|a| a.starts_with(&format!("{dst}@")));
                    cells.push((format!("{dst}@{net}"), expect, good(&t), good(&u)));
                }
                // Egress to a host outside Docker networks: NATed to the node's address.
                let egress = if src == "outside" {
                    None
                } else {
                    let expect = !(nets.len() == 1 && nets[0] == "blue");
                    let t = probe::tcp(&ns, outside_addr, PORT, timeout);
                    let u = probe::udp(&ns, outside_addr, PORT, timeout);
                    Some((expect, t, u))
                };
                (src, cells, egress)
            })
        })
        .collect();
    let rows: Vec<_> = rows.into_iter().map(|h| h.join().unwrap()).collect();
    let mut table = String::from(
        "isolation matrix (T=tcp U=udp reachable, - = blocked; ! marks a cell that differs from the rules)\n",
    );
    let mut wrong = Vec::new();
    for (src, cells, egress) in &rows {
        table.push_str(&format!("{src:>8} |"));
        for (dst, expect, t, u) in cells {
            let mark = if *t == *expect && *u == *expect { ' ' } else { '!' };
            if mark == '!' {
                wrong.push(format!("{src} -> {dst}: expected {expect}, tcp {t} udp {u}"));
            }
            table.push_str(&format!(" {dst}:{}{}{mark}", if *t { 'T' } else { '-' }, if *u { 'U' } else { '-' }));
        }
        if let Some((expect, t, u)) = egress {
            let seen = |r: &Option<String>| r.as_deref().and_then(|a| a.split('@').nth(1)).map(str::to_owned);
            let ok_t = seen(t).is_some_and(|s| s == n.addr.to_string());
            let ok_u = seen(u).is_some_and(|s| s == n.addr.to_string());
            if ok_t != *expect || ok_u != *expect {
                wrong.push(format!("{src} -> outside: expected {expect}, tcp {t:?} udp {u:?} (NAT to {})", n.addr));
            }
            table.push_str(&format!(" | egress:{}{}", if ok_t { 'T' } else { '-' }, if ok_u { 'U' } else { '-' }));
        }
        table.push('\n');
    }
    println!("{table}");
    assert!(wrong.is_empty(), "{table}\n{}", wrong.join("\n"));
    drop(servers);
    ok(docker(n, &["rm", "-f", "r1", "r2", "g1", "g2", "rg", "b1"]));
}
