use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn subnets_parse_strictly() {
    assert_eq!(net("10.1.0.0/16").broadcast(), ip("10.1.255.255"));
    for bad in ["10.1.0.0", "10.1.0.1/16", "10.1.0.0/33", "x/8", "10.0.0.0/x", "::1/64"] {
        let e = bad.parse::<Ipv4Net>().unwrap_err();
        assert!(e.to_string().contains(bad), "{e}");
    }
    assert!(net("10.0.0.0/8").overlaps(&net("10.20.0.0/16")));
    assert!(!net("10.0.0.0/16").overlaps(&net("10.1.0.0/16")));
}

#[test]
fn pools_skip_networks_and_host_conflicts() {
    let pools = default_local_pools();
    assert_eq!(pools[0], net("172.17.0.0/16"));
    assert_eq!(pools.len(), 15 + 16);
    let taken = vec![(net("172.17.0.0/16"), "bridge".to_owned())];
    let host = vec![
        HostNet { net: net("0.0.0.0/0"), what: "default route".into() },
        HostNet { net: net("172.18.5.0/24"), what: "route 172.18.5.0/24 dev eth1".into() },
        HostNet { net: net("172.19.0.53/32"), what: "nameserver 172.19.0.53".into() },
    ];
    assert_eq!(pick_subnet(&pools, &taken, &host).unwrap(), net("172.20.0.0/16"));
    let e = check_subnet(net("172.18.0.0/16"), &taken, &host).unwrap_err();
    assert_eq!(e.to_string(), "subnet 172.18.0.0/16 overlaps route 172.18.5.0/24 dev eth1 (172.18.5.0/24)");
    let e = check_subnet(net("172.17.128.0/20"), &taken, &host).unwrap_err();
    assert!(e.to_string().contains("the subnet of network bridge"), "{e}");
    let all: Vec<_> = pools.iter().map(|p| (*p, "x".to_owned())).collect();
    assert_eq!(pick_subnet(&pools, &all, &[]), Err(IpamError::PoolsExhausted));
}

#[test]
fn addresses_skip_reserved_and_used_ones() {
    let s = Space::new(net("10.9.0.0/29"), None, None).unwrap();
    assert_eq!(s.gateway, ip("10.9.0.1"));
    let mut used = BTreeSet::new();
    let mut got = Vec::new();
    while let Ok(a) = s.pick(&used) {
        used.insert(a);
        got.push(a.to_string());
    }
    assert_eq!(got, ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]);
    assert_eq!(s.pick(&used), Err(IpamError::Exhausted(net("10.9.0.0/29"))));
    used.remove(&ip("10.9.0.4"));
    assert_eq!(s.pick(&used).unwrap(), ip("10.9.0.4"), "released addresses come back");
}

#[test]
fn ranges_gateways_and_static_addresses_are_validated() {
    let s = Space::new(net("10.9.0.0/24"), Some(net("10.9.0.128/25")), Some(ip("10.9.0.254"))).unwrap();
    assert_eq!(s.pick(&BTreeSet::new()).unwrap(), ip("10.9.0.128"));
    assert!(Space::new(net("10.9.0.0/24"), Some(net("10.8.0.0/25")), None).is_err());
    assert!(Space::new(net("10.9.0.0/24"), None, Some(ip("10.9.1.1"))).is_err());
    assert!(Space::new(net("10.9.0.0/24"), None, Some(ip("10.9.0.255"))).is_err());
    assert!(Space::new(net("10.9.0.0/31"), None, None).is_err());
    let used: BTreeSet<_> = [ip("10.9.0.7")].into();
    assert_eq!(s.claim(ip("10.9.0.9"), &used).unwrap(), ip("10.9.0.9"));
    assert_eq!(s.claim(ip("10.9.0.7"), &used), Err(IpamError::InUse(ip("10.9.0.7"))));
    assert!(s.claim(ip("10.9.0.254"), &used).is_err());
    assert!(s.claim(ip("10.10.0.3"), &used).is_err());
}

#[test]
fn macs_and_nameservers() {
    assert_eq!(mac_string(mac_for(ip("172.18.0.2"))), "02:42:ac:12:00:02");
    let ns = nameservers("# x\nnameserver 10.0.0.2\nnameserver ::1\nsearch lan\nnameserver 1.1.1.1 # c\n");
    let got: Vec<_> = ns.iter().map(|h| h.net.to_string()).collect();
    assert_eq!(got, ["10.0.0.2/32", "1.1.1.1/32"]);
}
