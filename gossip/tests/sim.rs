//! Deterministic membership scenarios over the in-memory transport with
//! paused tokio time: convergence after joins, failure detection within
//! memberlist's bounds, refutation, graceful leave, partitions healing.

use std::net::SocketAddr;
use std::time::Duration;

use gossip::transport::Inbound;
use gossip::wire::{self, Accusation, Message};
use gossip::{Config, Event, Handle, MemNetwork, MemberState};

fn addr(i: usize) -> SocketAddr {
    format!("10.0.0.{}:7946", i + 1).parse().unwrap()
}

fn member(net: &MemNetwork, i: usize) -> Handle {
    member_with(net, i, |_| {})
}

fn member_with(net: &MemNetwork, i: usize, tune: impl Fn(&mut Config)) -> Handle {
    let (t, rx) = net.attach(addr(i));
    let mut cfg = Config::lan(&format!("n{i}"), addr(i));
    tune(&mut cfg);
    gossip::start(cfg, t, rx)
}

async fn view(h: &Handle) -> Vec<(String, MemberState, u32)> {
    let (m, _) = h.members().await.unwrap();
    m.into_iter().map(|m| (m.name, m.state, m.incarnation)).collect()
}

async fn states(h: &Handle) -> Vec<MemberState> {
    view(h).await.into_iter().map(|v| v.1).collect()
}

/// Waits (in virtual time) until `f` holds, at most `limit`.
async fn within(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let start = tokio::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Whether every member in `hs` passes `f`.
async fn every(hs: &[Handle], mut f: impl AsyncFnMut(&Handle) -> bool) -> bool {
    for h in hs {
        if !f(h).await {
            return false;
        }
    }
    true
}

/// Every member sees `n` members, all alive.
async fn all_alive(hs: &[Handle], n: usize) -> bool {
    every(hs, async |h| {
        let s = states(h).await;
        s.len() == n && s.iter().all(|s| *s == MemberState::Alive)
    })
    .await
}

/// Every member in `hs` sees `node` in `state`.
async fn all_see(hs: &[Handle], node: &str, state: MemberState) -> bool {
    every(hs, async |h| view(h).await.iter().any(|(n, s, _)| n == node && *s == state)).await
}

async fn cluster(net: &MemNetwork, n: usize) -> Vec<Handle> {
    cluster_with(net, n, |_| {}).await
}

async fn cluster_with(net: &MemNetwork, n: usize, tune: impl Fn(&mut Config)) -> Vec<Handle> {
    let hs: Vec<Handle> = (0..n).map(|i| member_with(net, i, &tune)).collect();
    for h in &hs[1..] {
        h.join(&[addr(0)]).await.unwrap();
    }
    // Gossip reaches everyone only with high probability: with 5 members
    // and memberlist's retransmit limit (4 sends per member), once in a
    // few hundred runs one member misses a join until the next push-pull
    // (every 30 s) repairs it, as in memberlist. Allow that repair.
    let limit = Duration::from_secs(45);
    let start = tokio::time::Instant::now();
    while !all_alive(&hs, n).await {
        if start.elapsed() > limit {
            let mut views = Vec::new();
            for h in &hs {
                views.push(view(h).await);
            }
            panic!("no convergence within {limit:?}: {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hs
}

#[tokio::test(start_paused = true)]
async fn members_converge_after_joining_one_seed() {
    let net = MemNetwork::default();
    let hs = cluster(&net, 6).await;
    let v = view(&hs[5]).await;
    assert_eq!(v.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["n0", "n1", "n2", "n3", "n4", "n5"]);
}

#[tokio::test(start_paused = true)]
async fn a_crashed_member_is_declared_dead_within_the_suspicion_bound() {
    let net = MemNetwork::default();
    let hs = cluster(&net, 5).await;
    let mut ev = hs[0].subscribe();
    net.detach(addr(4));
    hs[4].stop().await;
    // Bound: it is probed within n-1 probe intervals, then the suspicion
    // timeout (mult 4 x max(1, log10 5) x 1 s = 4 s; up to 6x that without
    // confirmations), plus a probe interval.
    let took = within(Duration::from_secs(40), async || {
        view(&hs[0]).await.iter().any(|(n, s, _)| n == "n4" && *s == MemberState::Dead)
    })
    .await;
    println!("declared dead after {took:?}");
    // Lifeguard: the others' independent suspicions confirm n0's and shrink
    // its timeout from the 24 s maximum towards the 4 s minimum.
    assert!(took < Duration::from_secs(20), "confirmations did not shorten the suspicion: {took:?}");
    let (mut suspected, mut failed) = (false, false);
    while let Ok(e) = ev.try_recv() {
        suspected |= matches!(&e, Event::Suspect(m) if m.name == "n4") && !failed;
        failed |= matches!(e, Event::Fail(m) if m.name == "n4");
    }
    assert!(suspected && failed, "a Suspect event, then a Fail event");
    // Everyone else agrees.
    within(Duration::from_secs(10), async || all_see(&hs[1..4], "n4", MemberState::Dead).await).await;
}

#[tokio::test(start_paused = true)]
async fn a_falsely_accused_member_refutes() {
    let net = MemNetwork::default();
    let hs = cluster(&net, 3).await;
    // A fake member injects "n2 is suspect" into n0.
    let (fake, _rx) = net.attach(addr(9));
    let s = wire::encode_message(&Message::Suspect(Accusation {
        incarnation: 1,
        node: "n2".into(),
        from: "mallory".into(),
    }));
    gossip::transport::Transport::send(&*fake, addr(0), s).await.unwrap();
    within(Duration::from_secs(10), async || {
        let v = view(&hs[0]).await;
        v.iter().any(|(n, s, inc)| n == "n2" && *s == MemberState::Alive && *inc > 1)
    })
    .await;
    let me = view(&hs[2]).await.into_iter().find(|v| v.0 == "n2").unwrap();
    assert!(me.2 > 1, "n2 raised its incarnation: {me:?}");
}

#[tokio::test(start_paused = true)]
async fn a_graceful_leave_is_seen_as_left() {
    let net = MemNetwork::default();
    let hs = cluster(&net, 4).await;
    hs[3].leave().await.unwrap();
    within(Duration::from_secs(5), async || all_see(&hs[..3], "n3", MemberState::Left).await).await;
}

#[tokio::test(start_paused = true)]
async fn a_partition_heals() {
    let net = MemNetwork::default();
    let hs = cluster(&net, 4).await;
    for i in 0..3 {
        net.partition(addr(i), addr(3), true);
    }
    within(Duration::from_secs(60), async || {
        view(&hs[0]).await.iter().any(|(n, s, _)| n == "n3" && *s == MemberState::Dead)
    })
    .await;
    for i in 0..3 {
        net.partition(addr(i), addr(3), false);
    }
    // Gossip to the dead (30 s) carries the news both ways; refutations follow.
    within(Duration::from_secs(60), async || all_alive(&hs, 4).await).await;
}

/// Every packet to and from member 3 is dropped; its streams still pass.
fn cut_udp_to_last(net: &MemNetwork, n: usize) {
    for i in 0..n - 1 {
        net.block_packets(addr(i), addr(n - 1), true);
    }
}

#[tokio::test(start_paused = true)]
async fn a_member_reachable_over_tcp_only_is_not_declared_dead() {
    let net = MemNetwork::default();
    let hs = cluster(&net, 4).await;
    cut_udp_to_last(&net, 4);
    // Suspicion would time out within 4 x 1 s x 6 (max) = 24 s; watch 60 s.
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(all_alive(&hs, 4).await, "a member answering TCP pings was suspected: {:?}", view(&hs[0]).await);
    }
}

#[tokio::test(start_paused = true)]
async fn without_tcp_pings_a_member_cut_from_udp_is_declared_dead() {
    // The control for the test above: the same cut is seen without them.
    let net = MemNetwork::default();
    let hs = cluster_with(&net, 4, |c| c.tcp_pings = false).await;
    cut_udp_to_last(&net, 4);
    within(Duration::from_secs(60), async || all_see(&hs[..3], "n3", MemberState::Dead).await).await;
}

#[tokio::test(start_paused = true)]
async fn garbage_packets_change_nothing() {
    let net = MemNetwork::default();
    let hs = cluster(&net, 2).await;
    let before = view(&hs[0]).await;
    let (fake, _rx) = net.attach(addr(9));
    for junk in
        [&[][..], &[7, 200, 0], &[4, 0x85, 0xa1], &[12, 0, 0, 0, 0, 4], &[9, 0x82, 0xa4, b'A', b'l', b'g', b'o', 0]]
    {
        gossip::transport::Transport::send(&*fake, addr(0), junk.to_vec()).await.unwrap();
    }
    let _: Option<Inbound> = None;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(view(&hs[0]).await, before);
}

fn keyed(net: &MemNetwork, i: usize, key: Option<&[u8]>) -> Handle {
    let (t, rx) = net.attach(addr(i));
    let mut c = Config::lan(&format!("n{i}"), addr(i));
    c.keyring = key.map(|k| gossip::Keyring::new(k.to_vec(), vec![]).unwrap());
    gossip::start(c, t, rx)
}

#[tokio::test(start_paused = true)]
async fn encryption_admits_only_the_same_key() {
    let net = MemNetwork::default();
    let key = [7u8; 16];
    let a = keyed(&net, 0, Some(&key));
    let b = keyed(&net, 1, Some(&key));
    b.join(&[addr(0)]).await.unwrap();
    within(Duration::from_secs(10), async || states(&a).await == [MemberState::Alive, MemberState::Alive]).await;
    // Another key, and no key at all: neither gets in.
    let c = keyed(&net, 2, Some(&[9u8; 32]));
    assert!(c.join(&[addr(0)]).await.is_err(), "a wrong key joined");
    let d = keyed(&net, 3, None);
    assert!(d.join(&[addr(0)]).await.is_err(), "plaintext joined an encrypted cluster");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(view(&a).await.len(), 2, "{:?}", view(&a).await);
    let st = a.security_stats();
    assert!(st.undecryptable >= 1 && st.plaintext >= 1, "drops are counted: {st:?}");
    // Rotation: a new key installed everywhere, used, the old one removed.
    let new = vec![8u8; 32];
    for h in [&a, &b] {
        h.with_keyring(|k| k.install(new.clone())).unwrap();
    }
    for h in [&a, &b] {
        h.with_keyring(|k| k.use_key(&new)).unwrap();
        h.with_keyring(|k| k.remove(&key)).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(states(&a).await, [MemberState::Alive, MemberState::Alive], "still one cluster after rotation");
}

#[tokio::test(start_paused = true)]
async fn a_name_clash_is_refused() {
    let net = MemNetwork::default();
    let a = member(&net, 0);
    let (t, rx) = net.attach(addr(5));
    let twin = gossip::start(Config::lan("n0", addr(5)), t, rx);
    let e = twin.join(&[addr(0)]).await.unwrap_err();
    assert!(e.to_string().contains("already used by another member"), "{e}");
    let _ = a;
}

async fn keys_of(h: &Handle, scope: &str) -> Vec<String> {
    let mut v: Vec<String> = h.table_list("ep", scope).await.unwrap().into_iter().map(|e| e.key).collect();
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn tables_replicate_within_their_scope_only() {
    let net = MemNetwork::default();
    let hs = cluster(&net, 5).await;
    let mut outsider_events = hs[4].table_events();
    for h in &hs[..3] {
        h.scope("net1", true).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    hs[0].table_put("ep", "net1", "c1", b"10.0.0.2".to_vec()).await.unwrap();
    hs[1].table_put("ep", "net1", "c2", b"10.0.0.3".to_vec()).await.unwrap();
    hs[2].table_put("ep", "", "everyone", b"x".to_vec()).await.unwrap();
    within(Duration::from_secs(5), async || {
        every(&hs[..3], async |h| keys_of(h, "net1").await == ["c1", "c2"]).await
            && every(&hs, async |h| keys_of(h, "").await == ["everyone"]).await
    })
    .await;
    // Nodes outside the scope never saw its entries.
    for h in &hs[3..] {
        assert!(keys_of(h, "net1").await.is_empty());
    }
    while let Ok(ev) = outsider_events.try_recv() {
        let scope = match &ev {
            gossip::TableEvent::Put(e) | gossip::TableEvent::Delete(e) => e.scope.clone(),
        };
        assert!(scope != "net1", "an outsider got {ev:?}");
    }
    // A late joiner gets everything by full sync; a delete reaches everyone.
    hs[3].scope("net1", true).await.unwrap();
    within(Duration::from_secs(5), async || keys_of(&hs[3], "net1").await == ["c1", "c2"]).await;
    hs[0].table_delete("ep", "net1", "c1").await.unwrap();
    within(Duration::from_secs(5), async || every(&hs[..4], async |h| keys_of(h, "net1").await == ["c2"]).await).await;
}

#[tokio::test(start_paused = true)]
async fn entries_of_a_dead_owner_go_after_the_grace() {
    let net = MemNetwork::default();
    let hs = cluster(&net, 4).await;
    for h in &hs {
        h.scope("net1", true).await.unwrap();
    }
    hs[3].table_put("ep", "net1", "from-n3", vec![1]).await.unwrap();
    within(Duration::from_secs(5), async || keys_of(&hs[0], "net1").await == ["from-n3"]).await;
    net.detach(addr(3));
    hs[3].stop().await;
    // Dead within ~30 s, then the 60 s grace.
    let took = within(Duration::from_secs(150), async || keys_of(&hs[0], "net1").await.is_empty()).await;
    assert!(took >= Duration::from_secs(60), "entries went before the grace: {took:?}");
}

#[tokio::test(start_paused = true)]
async fn writes_during_a_partition_meet_after_healing() {
    let net = MemNetwork::default();
    let hs = cluster(&net, 4).await;
    for h in &hs {
        h.scope("net1", true).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        net.partition(addr(i), addr(3), true);
    }
    hs[3].table_put("ep", "net1", "island", vec![1]).await.unwrap();
    hs[0].table_put("ep", "net1", "mainland", vec![2]).await.unwrap();
    within(Duration::from_secs(60), async || {
        view(&hs[0]).await.iter().any(|(n, s, _)| n == "n3" && *s == MemberState::Dead)
    })
    .await;
    for i in 0..3 {
        net.partition(addr(i), addr(3), false);
    }
    within(Duration::from_secs(60), async || {
        keys_of(&hs[0], "net1").await == ["island", "mainland"]
            && keys_of(&hs[3], "net1").await == ["island", "mainland"]
    })
    .await;
}

fn labelled(net: &MemNetwork, i: usize, label: &str, key: Option<&[u8]>) -> Handle {
    member_with(net, i, |c| {
        c.label = label.as_bytes().to_vec();
        c.keyring = key.map(|k| gossip::Keyring::new(k.to_vec(), vec![]).unwrap());
    })
}

#[tokio::test(start_paused = true)]
async fn labels_keep_clusters_apart_with_and_without_encryption() {
    let net = MemNetwork::default();
    let a = labelled(&net, 0, "prod", None);
    let b = labelled(&net, 1, "prod", None);
    b.join(&[addr(0)]).await.unwrap();
    within(Duration::from_secs(10), async || states(&a).await == [MemberState::Alive, MemberState::Alive]).await;
    // Another label, or none, is refused both ways.
    let c = labelled(&net, 2, "test", None);
    assert!(c.join(&[addr(0)]).await.is_err(), "another label joined");
    let d = member(&net, 3);
    assert!(d.join(&[addr(0)]).await.is_err(), "an unlabelled member joined a labelled cluster");
    assert!(a.join(&[addr(3)]).await.is_err(), "a labelled member joined an unlabelled one");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(view(&a).await.len(), 2, "{:?}", view(&a).await);
    assert!(a.security_stats().wrong_label >= 2, "drops are counted: {:?}", a.security_stats());
    assert_eq!(view(&d).await.len(), 1);

    // With encryption the label is authenticated too.
    let key = [5u8; 16];
    let e = labelled(&net, 4, "prod", Some(&key));
    let f = labelled(&net, 5, "prod", Some(&key));
    f.join(&[addr(4)]).await.unwrap();
    within(Duration::from_secs(10), async || states(&e).await == [MemberState::Alive, MemberState::Alive]).await;
    let g = labelled(&net, 6, "dev", Some(&key));
    assert!(g.join(&[addr(4)]).await.is_err(), "the same key with another label joined");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(view(&e).await.len(), 2);
    // The two labelled clusters never mixed.
    assert_eq!(view(&a).await.len(), 2);
}

#[test]
fn label_headers_are_memberlists() {
    assert_eq!(wire::add_label(b"ab", vec![1, 2]), vec![244, 2, b'a', b'b', 1, 2]);
    assert_eq!(wire::add_label(b"", vec![1, 2]), vec![1, 2], "no label, no header");
    assert_eq!(wire::split_label(&[244, 2, b'a', b'b', 9]).unwrap(), (&b"ab"[..], &[9u8][..]));
    assert_eq!(wire::split_label(&[9, 8]).unwrap(), (&[][..], &[9u8, 8][..]));
    for bad in [&[244u8][..], &[244, 0, 1], &[244, 5, b'a']] {
        assert!(wire::split_label(bad).is_err(), "{bad:?}");
    }
}

/// Past 64 members the engine samples gossip targets and helpers at random
/// offsets instead of scanning its table, and members preloaded from one
/// shared list copy an entry only when it changes for them: a newcomer
/// still reaches all 200, and a crash is still detected by all the others
/// within memberlist's formula (with slack for where the crash lands).
#[tokio::test(start_paused = true)]
async fn two_hundred_preloaded_members_detect_a_crash_and_learn_a_newcomer() {
    let n = 200;
    let net = MemNetwork::default();
    let addr = |i: usize| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 7946));
    let cfg = |i: usize| Config { event_buffer: 64, ..Config::lan(&format!("n{i}"), addr(i)) };
    let hs = gossip::start_preloaded(&net, (0..n).map(cfg).collect());
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A newcomer joins through member 0.
    let (t, rx) = net.attach(addr(n));
    let late = gossip::start(cfg(n), t, rx);
    late.join(&[addr(0)]).await.unwrap();
    let took = within(Duration::from_secs(10), async || {
        every(&hs, async |h| view(h).await.iter().any(|(m, s, _)| m == "n200" && *s == MemberState::Alive)).await
    })
    .await;
    println!("the join reached all {n} after {took:?}");
    assert_eq!(view(&late).await.len(), n + 1, "the newcomer learned every member");
    // Member 199 crashes.
    net.detach(addr(n - 1));
    hs[n - 1].stop().await;
    let base = Config::lan("x", addr(0));
    let theory = base.probe_interval
        + base.probe_timeout
        + gossip::config::suspicion_timeout(base.suspicion_mult, n, base.probe_interval);
    let took = within(theory * 3, async || all_see(&hs[..n - 1], "n199", MemberState::Dead).await).await;
    println!("declared dead by all after {took:?} (theory {theory:?})");
    assert!(took >= gossip::config::suspicion_timeout(base.suspicion_mult, n, base.probe_interval));
    // Nobody else was accused.
    for h in &hs[..3] {
        let v = view(h).await;
        assert_eq!(v.iter().filter(|x| x.1 != MemberState::Alive).count(), 1, "{:?}", h.name());
    }
}

/// Anti-entropy between members that keep tables is one stream per round:
/// the table sync rides in the push-pull's user state. An entry whose
/// broadcasts were all lost (UDP blocked both ways) still arrives by it.
#[tokio::test(start_paused = true)]
async fn table_anti_entropy_rides_on_the_push_pull() {
    let net = MemNetwork::default();
    let hs = cluster(&net, 2).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // At rest: push-pulls only (each member one per 30 s).
    let s0 = net.streams();
    tokio::time::sleep(Duration::from_secs(120)).await;
    let streams = net.streams() - s0;
    assert!((6..=10).contains(&streams), "{streams} streams in 120 s at rest: 2 members x 4 rounds expected");
    // UDP blocked: the write's broadcasts are lost; the next push-pull's
    // digests differ and a table sync brings it (within one round).
    net.block_packets(addr(0), addr(1), true);
    hs[0].table_put("ep", "", "k", b"v".to_vec()).await.unwrap();
    let took = within(Duration::from_secs(40), async || keys_of(&hs[1], "").await == ["k"]).await;
    println!("the entry arrived by push-pull after {took:?}");
    net.block_packets(addr(0), addr(1), false);
}

/// memberlist's buddy system: a member probing a suspect puts the
/// accusation in the probe itself, so the suspect can refute even when no
/// gossip about it reaches it (here: once the broadcasts of the suspicion
/// ran out of retransmissions, the probes still carry it).
#[tokio::test(start_paused = true)]
async fn probes_of_a_suspect_carry_the_suspicion() {
    let net = MemNetwork::default();
    let n0 = member(&net, 0);
    // A raw endpoint "x" announces itself to n0, then someone accuses it.
    let (x, mut inbox) = net.attach(addr(9));
    let alive = wire::encode_message(&Message::Alive(wire::Alive {
        incarnation: 1,
        node: "x".into(),
        addr: vec![10, 0, 0, 10],
        port: 7946,
        meta: None,
        vsn: [1, 5, 2, 2, 5, 4],
    }));
    gossip::transport::Transport::send(&*x, addr(0), alive).await.unwrap();
    let s = wire::encode_message(&Message::Suspect(Accusation { incarnation: 1, node: "x".into(), from: "m".into() }));
    gossip::transport::Transport::send(&*x, addr(0), s).await.unwrap();
    within(Duration::from_secs(1), async || view(&n0).await.iter().any(|v| v.0 == "x" && v.1 == MemberState::Suspect))
        .await;
    // Let the broadcasts of the suspicion run out (4 transmissions with 2 members).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while inbox.try_recv().is_ok() {}
    // The suspicion lasts 4 s: the probes in the next 2 s must carry it.
    let mut buddy = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < until {
        if let Ok(Some(Inbound::Packet(data, _))) = tokio::time::timeout(Duration::from_millis(100), inbox.recv()).await
        {
            let msgs: Vec<Message> =
                wire::unwrap_packet(&data).unwrap().iter().map(|m| wire::decode_message(m).unwrap()).collect();
            let ping = msgs.iter().any(|m| matches!(m, Message::Ping(p) if p.node == "x"));
            let suspect = msgs.iter().any(|m| matches!(m, Message::Suspect(s) if s.node == "x" && s.from == "n0"));
            if ping {
                assert!(suspect, "a probe of a suspect without the accusation: {msgs:?}");
                buddy += 1;
            }
        }
    }
    assert!(buddy >= 1, "no probe of the suspect within 2 s");
}

/// A partition that outlasts the gossip to the dead (30 s) heals too: each
/// side retries the members it declared dead (serf's reconnect, every
/// 30 s), and both refute their deaths when they meet. memberlist alone
/// would stay split.
#[tokio::test(start_paused = true)]
async fn a_long_partition_heals_by_reconnecting() {
    let net = MemNetwork::default();
    let hs = cluster(&net, 4).await;
    for i in 0..2 {
        for j in 2..4 {
            net.partition(addr(i), addr(j), true);
        }
    }
    within(Duration::from_secs(60), async || {
        all_see(&hs[..2], "n3", MemberState::Dead).await && all_see(&hs[2..], "n0", MemberState::Dead).await
    })
    .await;
    // Well past the gossip to the dead.
    tokio::time::sleep(Duration::from_secs(120)).await;
    for i in 0..2 {
        for j in 2..4 {
            net.partition(addr(i), addr(j), false);
        }
    }
    let took = within(Duration::from_secs(120), async || all_alive(&hs, 4).await).await;
    println!("healed {took:?} after the partition ended");
    let (m, _) = hs[0].members().await.unwrap();
    assert!(m.iter().filter(|m| m.name == "n0" || m.name == "n3").all(|m| m.incarnation > 1), "deaths refuted: {m:?}");
}

/// Time until a newcomer's join reached all of 100 preloaded members.
async fn join_spread(eager: bool) -> Duration {
    let n = 100;
    let net = MemNetwork::default();
    let addr = |i: usize| SocketAddr::from(([10, 2, (i >> 8) as u8, i as u8], 7946));
    let cfg = |i: usize| Config { event_buffer: 64, eager_gossip: eager, ..Config::lan(&format!("n{i}"), addr(i)) };
    let hs = gossip::start_preloaded(&net, (0..n).map(cfg).collect());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (t, rx) = net.attach(addr(n));
    let late = gossip::start(cfg(n), t, rx);
    late.join(&[addr(0)]).await.unwrap();
    within(Duration::from_secs(10), async || {
        every(&hs, async |h| view(h).await.iter().any(|(m, s, _)| m == "n100" && *s == MemberState::Alive)).await
    })
    .await
}

/// With eager gossip, news does not wait for the next gossip tick (200 ms,
/// half of it on average per hop): a join reaches 100 members in about one
/// polling step of this test, where memberlist's behaviour takes several
/// ticks.
#[tokio::test(start_paused = true)]
async fn eager_gossip_spreads_news_without_waiting_for_ticks() {
    let eager = join_spread(true).await;
    let ticks = join_spread(false).await;
    println!("a join reached 100 members in {eager:?} eagerly, {ticks:?} on gossip ticks");
    assert!(eager < Duration::from_millis(200), "{eager:?}");
    assert!(eager < ticks, "{eager:?} vs {ticks:?}");
}
