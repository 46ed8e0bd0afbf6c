//! memberlist's messages on the wire (protocol versions 2-5): a type byte,
//! then a msgpack map of the Go struct's fields, in the Go field order.
//! Packets may wrap messages: `compound` (several messages with big-endian
//! u16 lengths), `hasCrc` (a big-endian CRC-32 IEEE of the rest), `compress`
//! (LZW, see [`crate::lzw`]). Decoding is total: every malformed input is an
//! error naming what was wrong, never a panic.

use crate::msgpack::{self, DecodeError, Value, Writer};

/// memberlist's message type bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    Ping = 0,
    IndirectPing = 1,
    Ack = 2,
    Suspect = 3,
    Alive = 4,
    Dead = 5,
    PushPull = 6,
    Compound = 7,
    User = 8,
    Compress = 9,
    Encrypt = 10,
    Nack = 11,
    HasCrc = 12,
    Err = 13,
}

impl MsgType {
    pub fn from_byte(b: u8) -> Option<MsgType> {
        use MsgType::*;
        Some(match b {
            0 => Ping,
            1 => IndirectPing,
            2 => Ack,
            3 => Suspect,
            4 => Alive,
            5 => Dead,
            6 => PushPull,
            7 => Compound,
            8 => User,
            9 => Compress,
            10 => Encrypt,
            11 => Nack,
            12 => HasCrc,
            13 => Err,
            _ => return None,
        })
    }
}

/// A malformed packet or message.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("{0:?} messages are not handled here")]
    Unexpected(MsgType),
    #[error(transparent)]
    Msgpack(#[from] DecodeError),
    #[error("compound message truncated: {0}")]
    Compound(&'static str),
    #[error("CRC mismatch: packet says {expected:#010x}, content has {actual:#010x}")]
    Crc { expected: u32, actual: u32 },
    #[error("compressed message: {0}")]
    Compress(String),
    #[error("{0}")]
    Label(&'static str),
}

/// A member's state as push-pull carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Alive = 0,
    Suspect = 1,
    Dead = 2,
    Left = 3,
}

impl State {
    fn from_u64(v: u64) -> Option<State> {
        Some(match v {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Dead,
            3 => State::Left,
            _ => return None,
        })
    }
}

/// `ping`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ping {
    pub seq_no: u32,
    pub node: String,
    pub source_addr: Option<Vec<u8>>,
    pub source_port: Option<u16>,
    pub source_node: Option<String>,
}

/// `indirectPingReq`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndirectPing {
    pub seq_no: u32,
    pub target: Vec<u8>,
    pub port: u16,
    pub node: String,
    pub nack: bool,
    pub source_addr: Option<Vec<u8>>,
    pub source_port: Option<u16>,
    pub source_node: Option<String>,
}

/// `ackResp`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ack {
    pub seq_no: u32,
    pub payload: Option<Vec<u8>>,
}

/// `suspect` and `dead` share a shape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accusation {
    pub incarnation: u32,
    pub node: String,
    pub from: String,
}

/// `alive`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alive {
    pub incarnation: u32,
    pub node: String,
    pub addr: Vec<u8>,
    pub port: u16,
    pub meta: Option<Vec<u8>>,
    /// pmin, pmax, pcur, dmin, dmax, dcur.
    pub vsn: [u8; 6],
}

/// `pushPullHeader`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushPullHeader {
    pub nodes: u32,
    pub user_state_len: u32,
    pub join: bool,
}

/// `pushNodeState`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushNodeState {
    pub name: String,
    pub addr: Vec<u8>,
    pub port: u16,
    pub meta: Option<Vec<u8>>,
    pub incarnation: u32,
    pub state: State,
    pub vsn: [u8; 6],
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Ping(Ping),
    IndirectPing(IndirectPing),
    Ack(Ack),
    Nack { seq_no: u32 },
    Suspect(Accusation),
    Alive(Alive),
    Dead(Accusation),
    User(Vec<u8>),
    Err(String),
}

fn field<'a>(v: &'a Value, name: &'static str) -> Result<&'a Value, DecodeError> {
    v.get(name).ok_or(DecodeError::Field { field: name, why: "missing" })
}

fn u32_of(v: &Value, name: &'static str) -> Result<u32, DecodeError> {
    field(v, name)?
        .as_u64()
        .and_then(|u| u32::try_from(u).ok())
        .ok_or(DecodeError::Field { field: name, why: "not a 32-bit unsigned integer" })
}

fn u16_opt(v: &Value, name: &'static str) -> Result<Option<u16>, DecodeError> {
    match v.get(name) {
        None | Some(Value::Nil) => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|u| u16::try_from(u).ok())
            .map(Some)
            .ok_or(DecodeError::Field { field: name, why: "not a 16-bit port" }),
    }
}

fn string_of(v: &Value, name: &'static str) -> Result<String, DecodeError> {
    let b = field(v, name)?.as_bytes().ok_or(DecodeError::Field { field: name, why: "not a string" })?;
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Field { field: name, why: "not UTF-8" })
}

fn bytes_opt(v: &Value, name: &'static str) -> Result<Option<Vec<u8>>, DecodeError> {
    match v.get(name) {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b.clone())),
        Some(_) => Err(DecodeError::Field { field: name, why: "not bytes" }),
    }
}

fn vsn_of(v: &Value) -> Result<[u8; 6], DecodeError> {
    let bad = DecodeError::Field { field: "Vsn", why: "not 6 version bytes" };
    let bytes: Vec<u8> = match field(v, "Vsn")? {
        Value::Bytes(b) => b.clone(),
        Value::Array(a) => {
            a.iter().map(|x| x.as_u64().and_then(|u| u8::try_from(u).ok())).collect::<Option<_>>().ok_or(bad.clone())?
        }
        _ => return Err(bad),
    };
    bytes.try_into().map_err(|_| bad)
}

fn opt_string(v: &Value, name: &'static str) -> Result<Option<String>, DecodeError> {
    match v.get(name) {
        None | Some(Value::Nil) => Ok(None),
        Some(_) => string_of(v, name).map(Some),
    }
}

/// Decodes one message (type byte + body). `compound`, `compress`, `hasCrc`
/// and `encrypt` are packet wrappers: see [`unwrap_packet`].
pub fn decode_message(buf: &[u8]) -> Result<Message, WireError> {
    let (&t, body) = buf.split_first().ok_or(WireError::Empty)?;
    let ty = MsgType::from_byte(t).ok_or(WireError::UnknownType(t))?;
    if ty == MsgType::User {
        return Ok(Message::User(body.to_vec()));
    }
    let v = || -> Result<Value, WireError> { Ok(msgpack::decode(body)?.0) };
    Ok(match ty {
        MsgType::Ping => {
            let v = v()?;
            Message::Ping(Ping {
                seq_no: u32_of(&v, "SeqNo")?,
                node: opt_string(&v, "Node")?.unwrap_or_default(),
                source_addr: bytes_opt(&v, "SourceAddr")?,
                source_port: u16_opt(&v, "SourcePort")?,
                source_node: opt_string(&v, "SourceNode")?,
            })
        }
        MsgType::IndirectPing => {
            let v = v()?;
            Message::IndirectPing(IndirectPing {
                seq_no: u32_of(&v, "SeqNo")?,
                target: bytes_opt(&v, "Target")?.unwrap_or_default(),
                port: u16_opt(&v, "Port")?.unwrap_or(0),
                node: opt_string(&v, "Node")?.unwrap_or_default(),
                nack: matches!(v.get("Nack"), Some(Value::Bool(true))),
                source_addr: bytes_opt(&v, "SourceAddr")?,
                source_port: u16_opt(&v, "SourcePort")?,
                source_node: opt_string(&v, "SourceNode")?,
            })
        }
        MsgType::Ack => {
            let v = v()?;
            Message::Ack(Ack { seq_no: u32_of(&v, "SeqNo")?, payload: bytes_opt(&v, "Payload")? })
        }
        MsgType::Nack => Message::Nack { seq_no: u32_of(&v()?, "SeqNo")? },
        MsgType::Suspect | MsgType::Dead => {
            let v = v()?;
            let a = Accusation {
                incarnation: u32_of(&v, "Incarnation")?,
                node: string_of(&v, "Node")?,
                from: opt_string(&v, "From")?.unwrap_or_default(),
            };
            if ty == MsgType::Suspect { Message::Suspect(a) } else { Message::Dead(a) }
        }
        MsgType::Alive => {
            let v = v()?;
            Message::Alive(Alive {
                incarnation: u32_of(&v, "Incarnation")?,
                node: string_of(&v, "Node")?,
                addr: bytes_opt(&v, "Addr")?.unwrap_or_default(),
                port: u16_opt(&v, "Port")?.unwrap_or(0),
                meta: bytes_opt(&v, "Meta")?,
                vsn: vsn_of(&v)?,
            })
        }
        MsgType::Err => Message::Err(string_of(&v()?, "Error")?),
        other => return Err(WireError::Unexpected(other)),
    })
}

fn start(t: MsgType) -> Writer {
    Writer { buf: vec![t as u8] }
}

/// The optional `SourceAddr`/`SourcePort`/`SourceNode` of pings (omitempty in Go).
type Source<'a> = (&'a Option<Vec<u8>>, Option<u16>, &'a Option<String>);

fn source_count((a, p, n): Source<'_>) -> usize {
    usize::from(a.is_some()) + usize::from(p.is_some()) + usize::from(n.is_some())
}

fn source_fields(w: &mut Writer, (a, p, n): Source<'_>) {
    if let Some(a) = a {
        w.key("SourceAddr").raw(a);
    }
    if let Some(p) = p {
        w.key("SourcePort").uint(p.into());
    }
    if let Some(n) = n {
        w.key("SourceNode").raw(n.as_bytes());
    }
}

/// Encodes a message as memberlist does (type byte + msgpack map).
pub fn encode_message(m: &Message) -> Vec<u8> {
    match m {
        Message::Ping(p) => {
            let mut w = start(MsgType::Ping);
            let src = (&p.source_addr, p.source_port, &p.source_node);
            w.map(2 + source_count(src)).key("SeqNo").uint(p.seq_no.into()).key("Node").raw(p.node.as_bytes());
            source_fields(&mut w, src);
            w.buf
        }
        Message::IndirectPing(p) => {
            let mut w = start(MsgType::IndirectPing);
            let src = (&p.source_addr, p.source_port, &p.source_node);
            w.map(5 + source_count(src));
            w.key("SeqNo").uint(p.seq_no.into()).key("Target").raw(&p.target).key("Port").uint(p.port.into());
            w.key("Node").raw(p.node.as_bytes()).key("Nack").bool(p.nack);
            source_fields(&mut w, src);
            w.buf
        }
        Message::Ack(a) => {
            let mut w = start(MsgType::Ack);
            w.map(2).key("SeqNo").uint(a.seq_no.into()).key("Payload").opt_raw(a.payload.as_deref());
            w.buf
        }
        Message::Nack { seq_no } => {
            let mut w = start(MsgType::Nack);
            w.map(1).key("SeqNo").uint((*seq_no).into());
            w.buf
        }
        Message::Suspect(a) | Message::Dead(a) => {
            let mut w = start(if matches!(m, Message::Suspect(_)) { MsgType::Suspect } else { MsgType::Dead });
            w.map(3).key("Incarnation").uint(a.incarnation.into()).key("Node").raw(a.node.as_bytes());
            w.key("From").raw(a.from.as_bytes());
            w.buf
        }
        Message::Alive(a) => {
            let mut w = start(MsgType::Alive);
            w.map(6).key("Incarnation").uint(a.incarnation.into()).key("Node").raw(a.node.as_bytes());
            w.key("Addr").raw(&a.addr).key("Port").uint(a.port.into()).key("Meta").opt_raw(a.meta.as_deref());
            w.key("Vsn").raw(&a.vsn);
            w.buf
        }
        Message::User(b) => {
            let mut v = vec![MsgType::User as u8];
            v.extend_from_slice(b);
            v
        }
        Message::Err(e) => {
            let mut w = start(MsgType::Err);
            w.map(1).key("Error").raw(e.as_bytes());
            w.buf
        }
    }
}

/// Wraps several messages in one `compound` message (at most 255).
pub fn compound(msgs: &[Vec<u8>]) -> Vec<u8> {
    let msgs = &msgs[..msgs.len().min(255)];
    let mut out = vec![MsgType::Compound as u8, msgs.len() as u8];
    for m in msgs {
        out.extend((m.len().min(0xffff) as u16).to_be_bytes());
    }
    for m in msgs {
        out.extend_from_slice(&m[..m.len().min(0xffff)]);
    }
    out
}

/// Prefixes a packet with `hasCrc` and its CRC-32 (IEEE), as protocol >= 5 does.
pub fn with_crc(packet: &[u8]) -> Vec<u8> {
    let mut out = vec![MsgType::HasCrc as u8];
    out.extend(crc32(packet).to_be_bytes());
    out.extend_from_slice(packet);
    out
}

/// Peels the packet wrappers (CRC, compression, compound, nested at most a
/// few levels deep) and returns the messages inside, each with its type byte.
pub fn unwrap_packet(buf: &[u8]) -> Result<Vec<Vec<u8>>, WireError> {
    let mut out = Vec::new();
    unwrap_into(buf, 0, &mut out)?;
    Ok(out)
}

fn unwrap_into(buf: &[u8], depth: usize, out: &mut Vec<Vec<u8>>) -> Result<(), WireError> {
    if depth > 4 {
        return Err(WireError::Compound("nested too deep"));
    }
    let (&t, rest) = buf.split_first().ok_or(WireError::Empty)?;
    match MsgType::from_byte(t).ok_or(WireError::UnknownType(t))? {
        MsgType::HasCrc => {
            if rest.len() < 4 {
                return Err(WireError::Compound("CRC header"));
            }
            let expected = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let actual = crc32(&rest[4..]);
            if expected != actual {
                return Err(WireError::Crc { expected, actual });
            }
            unwrap_into(&rest[4..], depth + 1, out)
        }
        MsgType::Compress => {
            let (v, _) = msgpack::decode(rest)?;
            let algo = v.get("Algo").and_then(Value::as_u64);
            if algo != Some(0) {
                return Err(WireError::Compress(format!("unknown algorithm {algo:?}")));
            }
            let data = v.get("Buf").and_then(Value::as_bytes).ok_or(WireError::Compress("no Buf".into()))?;
            let plain =
                crate::lzw::decompress(data, 2 * 1024 * 1024).map_err(|e| WireError::Compress(e.to_string()))?;
            unwrap_into(&plain, depth + 1, out)
        }
        MsgType::Compound => {
            let (&n, rest) = rest.split_first().ok_or(WireError::Compound("count"))?;
            let n = usize::from(n);
            if rest.len() < 2 * n {
                return Err(WireError::Compound("lengths"));
            }
            let (lens, mut body) = rest.split_at(2 * n);
            for i in 0..n {
                let len = usize::from(u16::from_be_bytes([lens[2 * i], lens[2 * i + 1]]));
                if body.len() < len {
                    return Err(WireError::Compound("part"));
                }
                let (part, tail) = body.split_at(len);
                unwrap_into(part, depth + 1, out)?;
                body = tail;
            }
            Ok(())
        }
        _ => {
            out.push(buf.to_vec());
            Ok(())
        }
    }
}

/// Encodes a push-pull stream: header, node states, then `user` state bytes.
pub fn encode_push_pull(join: bool, nodes: &[PushNodeState], user: &[u8]) -> Vec<u8> {
    let mut w = start(MsgType::PushPull);
    w.map(3).key("Nodes").uint(nodes.len() as u64).key("UserStateLen").uint(user.len() as u64).key("Join").bool(join);
    for n in nodes {
        w.map(7).key("Name").raw(n.name.as_bytes()).key("Addr").raw(&n.addr).key("Port").uint(n.port.into());
        w.key("Meta").opt_raw(n.meta.as_deref()).key("Incarnation").uint(n.incarnation.into());
        w.key("State").uint(n.state as u64).key("Vsn").raw(&n.vsn);
    }
    w.buf.extend_from_slice(user);
    w.buf
}

/// Decodes a push-pull stream body (after its type byte): the header, the
/// node states and the user state. At most `max_nodes` states.
pub fn decode_push_pull(
    buf: &[u8],
    max_nodes: usize,
) -> Result<(PushPullHeader, Vec<PushNodeState>, Vec<u8>), WireError> {
    let (h, mut pos) = msgpack::decode(buf)?;
    let header = PushPullHeader {
        nodes: u32_of(&h, "Nodes")?,
        user_state_len: u32_of(&h, "UserStateLen")?,
        join: matches!(h.get("Join"), Some(Value::Bool(true))),
    };
    if header.nodes as usize > max_nodes {
        return Err(WireError::Compound("more node states than allowed"));
    }
    let mut nodes = Vec::with_capacity(header.nodes as usize);
    for _ in 0..header.nodes {
        let (v, used) = msgpack::decode(&buf[pos..])?;
        pos += used;
        let state = field(&v, "State")?
            .as_u64()
            .and_then(State::from_u64)
            .ok_or(DecodeError::Field { field: "State", why: "not a node state" })?;
        nodes.push(PushNodeState {
            name: string_of(&v, "Name")?,
            addr: bytes_opt(&v, "Addr")?.unwrap_or_default(),
            port: u16_opt(&v, "Port")?.unwrap_or(0),
            meta: bytes_opt(&v, "Meta")?,
            incarnation: u32_of(&v, "Incarnation")?,
            state,
            vsn: vsn_of(&v)?,
        });
    }
    let user_len = header.user_state_len as usize;
    if buf.len() - pos < user_len {
        return Err(WireError::Compound("user state"));
    }
    let user = buf[pos..pos + user_len].to_vec();
    Ok((header, nodes, user))
}

/// CRC-32 (IEEE 802.3, as Go's `crc32.ChecksumIEEE`).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests;

/// memberlist's label header type byte (`hasLabelMsg`).
pub const HAS_LABEL: u8 = 244;

/// Prefixes `buf` with memberlist's label header (`[244][len][label]`);
/// an empty label adds nothing.
pub fn add_label(label: &[u8], buf: Vec<u8>) -> Vec<u8> {
    if label.is_empty() {
        return buf;
    }
    let mut out = Vec::with_capacity(2 + label.len() + buf.len());
    out.push(HAS_LABEL);
    out.push(label.len() as u8);
    out.extend_from_slice(label);
    out.extend(buf);
    out
}

/// Splits memberlist's label header off a packet: (label, the rest); no
/// header gives an empty label. A header that is empty or runs past the
/// packet is an error.
pub fn split_label(buf: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    if buf.first() != Some(&HAS_LABEL) {
        return Ok((&[], buf));
    }
    let n = usize::from(*buf.get(1).ok_or(WireError::Label("label header truncated"))?);
    if n == 0 {
        return Err(WireError::Label("label header cannot be empty when present"));
    }
    if buf.len() < 2 + n {
        return Err(WireError::Label("label header truncated"));
    }
    Ok((&buf[2..2 + n], &buf[2 + n..]))
}
