use super::*;

fn alive() -> Alive {
    Alive {
        incarnation: 3,
        node: "n1".into(),
        addr: vec![198, 18, 0, 10],
        port: 7946,
        meta: None,
        vsn: [1, 5, 2, 2, 5, 4],
    }
}

#[test]
fn messages_round_trip() {
    let msgs = [
        Message::Ping(Ping { seq_no: 7, node: "n2".into(), ..Default::default() }),
        Message::Ping(Ping {
            seq_no: 8,
            node: "n2".into(),
            source_addr: Some(vec![10, 0, 0, 1]),
            source_port: Some(7946),
            source_node: Some("n1".into()),
        }),
        Message::IndirectPing(IndirectPing {
            seq_no: 9,
            target: vec![1, 2, 3, 4],
            port: 7946,
            node: "t".into(),
            nack: true,
            ..Default::default()
        }),
        Message::Ack(Ack { seq_no: 70_000, payload: None }),
        Message::Ack(Ack { seq_no: 1, payload: Some(vec![1, 2]) }),
        Message::Nack { seq_no: 4 },
        Message::Suspect(Accusation { incarnation: 2, node: "x".into(), from: "y".into() }),
        Message::Dead(Accusation { incarnation: 2, node: "x".into(), from: "x".into() }),
        Message::Alive(alive()),
        Message::User(b"serf event".to_vec()),
        Message::Err("boom".into()),
    ];
    for m in msgs {
        let bytes = encode_message(&m);
        assert_eq!(decode_message(&bytes).unwrap(), m);
    }
}

#[test]
fn alive_is_encoded_as_go_msgpack_does() {
    let b = encode_message(&Message::Alive(alive()));
    // type byte, fixmap of 6, "Incarnation" as fixraw 11, then 3.
    assert_eq!(&b[..3], &[4, 0x86, 0xab]);
    assert_eq!(&b[3..14], b"Incarnation");
    assert_eq!(b[14], 3);
    // Vsn is a []uint8: go-msgpack writes it as raw bytes, not an array.
    assert!(b.ends_with(&[0xa3, b'V', b's', b'n', 0xa6, 1, 5, 2, 2, 5, 4]));
    // Meta nil -> msgpack nil.
    assert!(b.windows(6).any(|w| w == [0xa4, b'M', b'e', b't', b'a', 0xc0]));
}

#[test]
fn packets_unwrap_compound_crc_and_compression() {
    let a = encode_message(&Message::Ping(Ping { seq_no: 1, node: "a".into(), ..Default::default() }));
    let b = encode_message(&Message::Alive(alive()));
    let packet = with_crc(&compound(&[a.clone(), b.clone()]));
    assert_eq!(unwrap_packet(&packet).unwrap(), vec![a.clone(), b.clone()]);
    // compress{Algo: 0, Buf: lzw(compound)}
    let inner = compound(&[a.clone(), b.clone()]);
    let mut w = crate::msgpack::Writer { buf: vec![MsgType::Compress as u8] };
    w.map(2).key("Algo").uint(0).key("Buf").raw(&crate::lzw::compress(&inner));
    assert_eq!(unwrap_packet(&w.buf).unwrap(), vec![a.clone(), b]);
    // A flipped bit fails the CRC.
    let mut bad = packet.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(unwrap_packet(&bad), Err(WireError::Crc { .. })));
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926, "the IEEE check value");
}

#[test]
fn push_pull_round_trips() {
    let nodes = vec![PushNodeState {
        name: "n1".into(),
        addr: vec![198, 18, 0, 10],
        port: 7946,
        meta: Some(vec![0xff, 1]),
        incarnation: 9,
        state: State::Alive,
        vsn: [1, 5, 2, 2, 5, 4],
    }];
    let bytes = encode_push_pull(true, &nodes, b"user");
    assert_eq!(bytes[0], MsgType::PushPull as u8);
    let (h, got, user) = decode_push_pull(&bytes[1..], 100).unwrap();
    assert!(h.join);
    assert_eq!(got, nodes);
    assert_eq!(user, b"user");
    assert!(decode_push_pull(&bytes[1..], 0).is_err(), "node count limit");
}

#[test]
fn garbage_never_panics() {
    let mut x = 0x1234_5678u32;
    let seeds = [
        encode_message(&Message::Alive(alive())),
        with_crc(&compound(&[encode_message(&Message::Nack { seq_no: 1 })])),
        encode_push_pull(false, &[], b""),
    ];
    for i in 0..30_000 {
        let mut b = seeds[i % seeds.len()].clone();
        for _ in 0..1 + i % 4 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let pos = (x as usize >> 8) % (b.len() + 1);
            match x % 3 {
                0 if pos < b.len() => b[pos] = (x >> 24) as u8,
                1 => b.truncate(pos),
                _ => b.insert(pos.min(b.len()), (x >> 16) as u8),
            }
        }
        let _ = decode_message(&b);
        let _ = unwrap_packet(&b);
        if !b.is_empty() {
            let _ = decode_push_pull(&b[1..], 64);
        }
    }
}
