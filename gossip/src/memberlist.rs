//! The SWIM member: one task owns the member table and runs the protocol
//! as memberlist does it — a probe every interval (direct ping, then
//! indirect pings through `indirect_checks` others, asking for nacks),
//! suspicion with Lifeguard's shrinking timeout and local-health
//! (awareness) scaling, refutation of accusations against itself, gossip of
//! alive/suspect/dead broadcasts piggybacked on every packet with a
//! retransmit limit, push-pull anti-entropy over streams, join and graceful
//! leave. Others talk to it through a [`Handle`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{self, Config};
use crate::nodes::NodeTable;
use crate::security::{Keyring, SecurityError};
use crate::tables::{self, Entry, SCOPES, TableEvent, Tables};
use crate::transport::{Inbound, Stream, Transport};
use crate::wire::{self, Accusation, Alive, Message, MsgType, PushNodeState, State};

/// A member's state as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }
}

/// A member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub addr: SocketAddr,
    pub meta: Vec<u8>,
    pub incarnation: u32,
    pub state: MemberState,
    pub vsn: [u8; 6],
}

impl Member {
    /// The member a configuration describes, alive at incarnation 1.
    pub fn of(cfg: &Config) -> Member {
        Member {
            name: cfg.name.clone(),
            addr: cfg.advertise,
            meta: cfg.meta.clone(),
            incarnation: 1,
            state: MemberState::Alive,
            vsn: cfg.vsn(),
        }
    }
}

/// What subscribers hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Join(Member),
    /// Left gracefully.
    Leave(Member),
    /// Declared dead by the failure detector.
    Fail(Member),
    Update(Member),
    /// Suspected (by this member's probe, or heard from others); a
    /// refutation or a `Fail` follows.
    Suspect(Member),
}

/// A failed request to the member task.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("could not join any of {0} seeds: {1}")]
    Join(usize, String),
    #[error("the member is stopped")]
    Stopped,
    #[error("node name {0:?} is already used by another member at {1}")]
    NameClash(String, SocketAddr),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Wire(#[from] wire::WireError),
}

enum Cmd {
    Members(oneshot::Sender<(Vec<Member>, u32)>),
    LocalState(oneshot::Sender<Vec<PushNodeState>>),
    Merge(Vec<PushNodeState>, Option<oneshot::Sender<Result<(), GossipError>>>),
    Leave(oneshot::Sender<()>),
    Stop,
    /// A local write (`None` deletes).
    TableWrite(String, String, String, Option<Vec<u8>>),
    TableList(String, String, oneshot::Sender<Vec<Entry>>),
    JoinScope(String, bool),
    /// Entries from a peer's sync; answers with ours for the scopes it shares.
    TableSync(String, Vec<Entry>, Option<oneshot::Sender<Vec<Entry>>>),
    /// Our entries for the scopes we share with a peer.
    TableDumpFor(String, oneshot::Sender<Vec<Entry>>),
    /// The peer does not speak table sync (e.g. a serf agent).
    SyncFailed(String),
    /// Drops pending membership broadcasts (after a preload).
    Quiet,
    /// Full table syncs with this many random members.
    SyncRandom(usize),
    /// A full table sync with this member.
    SyncWith(String),
    /// A fallback ping over TCP was acked (probe sequence number).
    TcpAck(u32),
}

/// The keyring when encryption is on (shared with the [`Handle`] for rotation).
type SharedKeys = Arc<std::sync::RwLock<Option<Keyring>>>;

/// Packets and streams dropped because of encryption.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecurityStats {
    /// Plaintext while encryption is on.
    pub plaintext: u64,
    /// Encrypted with a key this member does not hold (or tampered with).
    pub undecryptable: u64,
    /// Packets and streams with another label than this member's (or a
    /// malformed label header).
    pub wrong_label: u64,
}

/// Talks to a running member.
#[derive(Clone)]
pub struct Handle {
    cmd: mpsc::Sender<Cmd>,
    events: broadcast::Sender<Event>,
    transport: Arc<dyn Transport>,
    cfg: Arc<Config>,
    keys: SharedKeys,
    stats: Arc<std::sync::Mutex<SecurityStats>>,
    table_events: broadcast::Sender<TableEvent>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("name", &self.cfg.name).finish_non_exhaustive()
    }
}

impl Handle {
    /// Joins through `seeds` (push-pull with each, all tried); returns how
    /// many answered. Fails only if none did.
    pub async fn join(&self, seeds: &[SocketAddr]) -> Result<usize, GossipError> {
        let mut ok = 0;
        let mut last = String::new();
        for s in seeds {
            match self.push_pull(*s, true, None).await {
                Ok(()) => ok += 1,
                Err(e) => last = format!("{s}: {e}"),
            }
        }
        if ok == 0 {
            return Err(GossipError::Join(seeds.len(), last));
        }
        // Bulk table sync with a couple of members, as NetworkDB does on join.
        let _ = self.cmd.send(Cmd::SyncRandom(2)).await;
        Ok(ok)
    }

    /// Every known member (self included) and this node's health score
    /// (Lifeguard awareness, 0 = healthy).
    pub async fn members(&self) -> Result<(Vec<Member>, u32), GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Members(tx)).await.map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)
    }

    /// Drops counted because of encryption.
    pub fn security_stats(&self) -> SecurityStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this member encrypts (has a keyring).
    pub fn encrypted(&self) -> bool {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Changes the keyring (install / use / remove a key) while running.
    pub fn with_keyring<T>(
        &self,
        f: impl FnOnce(&mut Keyring) -> Result<T, SecurityError>,
    ) -> Result<T, SecurityError> {
        let mut g = self.keys.write().unwrap_or_else(|p| p.into_inner());
        match g.as_mut() {
            Some(k) => f(k),
            None => Err(SecurityError::NoSuchKey("(encryption is off)".into())),
        }
    }

    /// This member's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Leaves gracefully: tells every member, then stops.
    pub async fn leave(&self) -> Result<(), GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Leave(tx)).await.map_err(|_| GossipError::Stopped)?;
        let _ = rx.await;
        let _ = self.cmd.send(Cmd::Stop).await;
        Ok(())
    }

    /// Writes an entry of a replicated table (this node owns it). The scope
    /// must be one this node joined (or `""`, reaching every node).
    pub async fn table_put(&self, table: &str, scope: &str, key: &str, value: Vec<u8>) -> Result<(), GossipError> {
        self.cmd
            .send(Cmd::TableWrite(table.into(), scope.into(), key.into(), Some(value)))
            .await
            .map_err(|_| GossipError::Stopped)
    }

    /// Deletes an entry (a tombstone replicates the delete).
    pub async fn table_delete(&self, table: &str, scope: &str, key: &str) -> Result<(), GossipError> {
        self.cmd
            .send(Cmd::TableWrite(table.into(), scope.into(), key.into(), None))
            .await
            .map_err(|_| GossipError::Stopped)
    }

    /// Live entries of a table in a scope, as this node has them.
    pub async fn table_list(&self, table: &str, scope: &str) -> Result<Vec<Entry>, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::TableList(table.into(), scope.into(), tx)).await.map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)
    }

    /// Joins (`true`) or leaves a scope: its entries reach this node (after
    /// a full sync with members of the scope) or stop reaching it.
    pub async fn scope(&self, scope: &str, join: bool) -> Result<(), GossipError> {
        self.cmd.send(Cmd::JoinScope(scope.into(), join)).await.map_err(|_| GossipError::Stopped)
    }

    /// Table changes as they are applied here.
    pub fn table_events(&self) -> broadcast::Receiver<TableEvent> {
        self.table_events.subscribe()
    }

    /// Full table sync with one peer (both ways) for the scopes both joined.
    async fn table_sync(&self, peer: String, to: SocketAddr) -> Result<(), GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::TableDumpFor(peer.clone(), tx)).await.map_err(|_| GossipError::Stopped)?;
        let ours = rx.await.map_err(|_| GossipError::Stopped)?;
        let io = async {
            let mut s = self.transport.connect(to).await?;
            s.write_all(&open_stream(&self.keys, &self.cfg.label, sync_frame(&self.cfg.name, &ours))).await?;
            s.flush().await?;
            match read_stream(&mut s, &self.keys, &self.stats, &self.cfg.label, false).await? {
                StreamMsg::Tables(_, e) => Ok(e),
                _ => Err(bad_data("answered a table sync with something else")),
            }
        };
        let theirs = tokio::time::timeout(self.cfg.tcp_timeout, io)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "table sync timed out"))??;
        self.cmd.send(Cmd::TableSync(peer, theirs, None)).await.map_err(|_| GossipError::Stopped)
    }

    /// Merges member states as a push-pull would (simulations preload
    /// large clusters with it instead of N joins).
    pub async fn preload(&self, states: Vec<PushNodeState>) -> Result<(), GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Merge(states, Some(tx))).await.map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)??;
        // Everyone was preloaded with the same view: nothing to gossip about.
        self.cmd.send(Cmd::Quiet).await.map_err(|_| GossipError::Stopped)
    }

    /// Stops without telling anyone (as a crash would, for tests).
    pub async fn stop(&self) {
        let _ = self.cmd.send(Cmd::Stop).await;
    }

    /// memberlist's push-pull: full member states both ways. With
    /// `tables` (the peer's name; the peer keeps tables too), the user
    /// states carry both sides' table digests (the entries of the scopes
    /// they share), and only a mismatch costs a full table sync: at rest,
    /// anti-entropy is one stream with a few bytes of tables.
    async fn push_pull(&self, to: SocketAddr, join: bool, tables: Option<String>) -> Result<(), GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::LocalState(tx)).await.map_err(|_| GossipError::Stopped)?;
        let local = rx.await.map_err(|_| GossipError::Stopped)?;
        let mine = match &tables {
            Some(peer) => Some(self.table_digest(peer).await?),
            None => None,
        };
        let user = mine.map(|d| digest_frame(&self.cfg.name, d)).unwrap_or_default();
        let io = async {
            let mut s = self.transport.connect(to).await?;
            s.write_all(&open_stream(&self.keys, &self.cfg.label, wire::encode_push_pull(join, &local, &user))).await?;
            s.flush().await?;
            match read_stream(&mut s, &self.keys, &self.stats, &self.cfg.label, false).await? {
                StreamMsg::PushPull(n, user) => Ok((n, user)),
                _ => Err(bad_data("answered a push-pull with something else")),
            }
        };
        let (remote, user) = tokio::time::timeout(self.cfg.tcp_timeout, io)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "push-pull timed out"))??;
        if let (Some(peer), Some(mine)) = (tables, mine) {
            // Its digest of the same entries, in its answer's user state.
            let cmd = match parse_digest(&user) {
                Some((_, theirs)) if theirs == mine => None,
                Some(_) => Some(Cmd::SyncWith(peer)),
                None => Some(Cmd::SyncFailed(peer)),
            };
            if let Some(cmd) = cmd {
                self.cmd.send(cmd).await.map_err(|_| GossipError::Stopped)?;
            }
        }
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Merge(remote, Some(tx))).await.map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)?
    }

    /// The digest of this member's entries for the scopes it shares with `peer`.
    async fn table_digest(&self, peer: &str) -> Result<u64, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::TableDumpFor(peer.to_owned(), tx)).await.map_err(|_| GossipError::Stopped)?;
        Ok(digest(&rx.await.map_err(|_| GossipError::Stopped)?))
    }

    /// memberlist's `sendPingAndWaitForAck`: one ping over a TCP stream,
    /// answered by an ack with the same sequence number.
    async fn tcp_ping(&self, to: SocketAddr, ping: Vec<u8>, seq: u32) -> Result<(), GossipError> {
        let mut s = self.transport.connect(to).await?;
        s.write_all(&open_stream(&self.keys, &self.cfg.label, ping)).await?;
        s.flush().await?;
        match read_stream(&mut s, &self.keys, &self.stats, &self.cfg.label, false).await? {
            StreamMsg::Ack(got) if got == seq => Ok(()),
            StreamMsg::Ack(got) => Err(bad_data(&format!("ack over TCP for ping {got}, expected {seq}"))),
            _ => Err(bad_data("answered a ping over TCP with something else")),
        }
    }
}

/// A stream message, encrypted when a keyring is set (the label
/// authenticated with it). The label header itself opens the stream:
/// [`open_stream`] writes it.
fn seal_stream(keys: &SharedKeys, label: &[u8], msg: Vec<u8>) -> Vec<u8> {
    match keys.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(k) => k.encrypt_stream(&msg, label),
        None => msg,
    }
}

/// The first write of a stream this member opened: the label header (if
/// it has a label), then the sealed message.
fn open_stream(keys: &SharedKeys, label: &[u8], msg: Vec<u8>) -> Vec<u8> {
    wire::add_label(label, seal_stream(keys, label, msg))
}

fn bad_data(why: &str) -> GossipError {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned()).into()
}

/// First byte of a table digest in a push-pull's user state: `[0xAC][u32
/// name len][name][u64 digest]` (other user states, e.g. serf's, start
/// with their own type).
const DIGEST_TAG: u8 = 0xAC;

/// FNV-1a (64 bits) of the entries' encoding: equal entry sets (as
/// [`Tables::dump`] orders them) give equal digests on every member.
fn digest(entries: &[Entry]) -> u64 {
    tables::encode(entries).iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

fn digest_frame(name: &str, digest: u64) -> Vec<u8> {
    let mut f = vec![DIGEST_TAG];
    f.extend((name.len() as u32).to_be_bytes());
    f.extend_from_slice(name.as_bytes());
    f.extend(digest.to_be_bytes());
    f
}

/// A digest frame: the sender's name and digest; `None` for anything else
/// (no user state, serf's, or a malformed frame).
fn parse_digest(user: &[u8]) -> Option<(String, u64)> {
    let (&DIGEST_TAG, rest) = user.split_first()? else { return None };
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    if len > 1024 || rest.len() != 4 + len + 8 {
        tracing::debug!(bytes = user.len(), "malformed table digest in a push-pull");
        return None;
    }
    let name = std::str::from_utf8(&rest[4..4 + len]).ok()?.to_owned();
    Some((name, u64::from_be_bytes(rest[4 + len..].try_into().ok()?)))
}

/// What a stream carries.
enum StreamMsg {
    /// Member states and the sender's user state.
    PushPull(Vec<PushNodeState>, Vec<u8>),
    /// A table sync: the sender's name and its entries.
    Tables(String, Vec<Entry>),
    /// A ping over TCP (memberlist's fallback when UDP probes fail).
    Ping(wire::Ping),
    /// The answer to a ping over TCP.
    Ack(u32),
}

/// First byte of a table-sync stream frame: `[0xAB][u32 name len][name][u32
/// len][table entries]` (inside memberlist's encryption when it is on).
const SYNC_TAG: u8 = 0xAB;

fn sync_frame(name: &str, entries: &[Entry]) -> Vec<u8> {
    let body = tables::encode(entries);
    let mut f = vec![SYNC_TAG];
    f.extend((name.len() as u32).to_be_bytes());
    f.extend_from_slice(name.as_bytes());
    f.extend((body.len() as u32).to_be_bytes());
    f.extend(body);
    f
}

/// A complete sync frame, `None` if more bytes are needed.
fn parse_sync(buf: &[u8]) -> Result<Option<(String, Vec<Entry>)>, GossipError> {
    let n = |at: usize| buf.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let Some(name_len) = n(1) else { return Ok(None) };
    if name_len > 1024 {
        return Err(bad_data("sync frame: node name too long"));
    }
    let Some(len) = n(5 + name_len) else { return Ok(None) };
    let start = 9 + name_len;
    if buf.len() < start + len {
        return Ok(None);
    }
    let name = String::from_utf8(buf[5..5 + name_len].to_vec()).map_err(|_| bad_data("sync frame: name not UTF-8"))?;
    let entries = tables::decode(&buf[start..start + len]).map_err(|e| bad_data(&e.to_string()))?;
    Ok(Some((name, entries)))
}

/// Reads what the stream already holds, without waiting: `None` if
/// nothing is there yet (a read that would block consumes nothing).
async fn read_ready(s: &mut Box<dyn Stream>, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    std::future::poll_fn(|cx| {
        let mut rb = tokio::io::ReadBuf::new(buf);
        match std::pin::Pin::new(&mut **s).poll_read(cx, &mut rb) {
            std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(Ok(Some(rb.filled().len()))),
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
            std::task::Poll::Pending => std::task::Poll::Ready(Ok(None)),
        }
    })
    .await
}

/// Reads one stream message (push-pull plain, LZW-compressed, or a table
/// sync; encrypted when a keyring is set, with `label` authenticated).
/// `header`: the stream's first message, which opens with the label header
/// when the sender has a label; a label other than ours is refused.
async fn read_stream(
    s: &mut Box<dyn Stream>,
    keys: &SharedKeys,
    stats: &std::sync::Mutex<SecurityStats>,
    label: &[u8],
    header: bool,
) -> Result<StreamMsg, GossipError> {
    const LIMIT: usize = 20 * 1024 * 1024;
    let mut chunk = vec![0u8; 16 * 1024];
    let keyring = keys.read().unwrap_or_else(|p| p.into_inner()).clone();
    let mut start = if header { None } else { Some(0) };
    let mut all = Vec::new();
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "stream closed before a full state").into()
            );
        }
        all.extend_from_slice(&chunk[..n]);
        // Take in everything already there before trying to decode: a
        // decode attempt starts from the beginning, so one per 16 KB chunk
        // would cost O(size²) on a large state (10,000 members: ~1 MB).
        while all.len() <= LIMIT
            && let Some(n) = read_ready(s, &mut chunk).await?
        {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&chunk[..n]);
        }
        if all.len() > LIMIT {
            return Err(bad_data("remote state too large"));
        }
        let at = match start {
            Some(at) => at,
            None if all[0] == wire::HAS_LABEL && (all.len() < 2 || all.len() < 2 + usize::from(all[1])) => continue,
            None => {
                let wrong = |why: String| {
                    stats.lock().unwrap_or_else(|p| p.into_inner()).wrong_label += 1;
                    Err(bad_data(&why))
                };
                let (got, _) = match wire::split_label(&all) {
                    Ok(x) => x,
                    Err(e) => return wrong(e.to_string()),
                };
                if got != label {
                    return wrong(format!(
                        "stream labelled {:?}, this member's label is {:?}",
                        String::from_utf8_lossy(got),
                        String::from_utf8_lossy(label)
                    ));
                }
                let at = if got.is_empty() { 0 } else { 2 + got.len() };
                start = Some(at);
                at
            }
        };
        let raw = &all[at..];
        if raw.is_empty() {
            continue;
        }
        let decrypted;
        let buf: &[u8] = match (&keyring, raw[0] == MsgType::Encrypt as u8) {
            (Some(k), true) => {
                if raw.len() < 5 {
                    continue;
                }
                let len = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize;
                if len > LIMIT {
                    return Err(bad_data("encrypted state too large"));
                }
                if raw.len() < 5 + len {
                    continue;
                }
                let mut aad = raw[..5].to_vec();
                aad.extend_from_slice(label);
                decrypted = k.decrypt(&raw[5..5 + len], &aad).map_err(|e| {
                    stats.lock().unwrap_or_else(|p| p.into_inner()).undecryptable += 1;
                    bad_data(&e.to_string())
                })?;
                &decrypted
            }
            (Some(_), false) => {
                stats.lock().unwrap_or_else(|p| p.into_inner()).plaintext += 1;
                return Err(bad_data("plaintext stream refused: encryption is on"));
            }
            (None, true) => return Err(bad_data("encrypted stream, but encryption is off here")),
            (None, false) => raw,
        };
        if buf[0] == SYNC_TAG {
            match parse_sync(buf)? {
                Some((name, entries)) => return Ok(StreamMsg::Tables(name, entries)),
                None => continue,
            }
        }
        let plain = if buf[0] == MsgType::Compress as u8 {
            match wire::unwrap_packet(buf) {
                Ok(mut v) if v.len() == 1 => v.remove(0),
                Ok(_) => return Err(wire::WireError::Compound("compressed stream").into()),
                Err(wire::WireError::Msgpack(crate::msgpack::DecodeError::Truncated(_))) => continue,
                Err(e) => return Err(e.into()),
            }
        } else {
            buf.to_vec()
        };
        if plain[0] == MsgType::Ping as u8 || plain[0] == MsgType::Ack as u8 {
            match wire::decode_message(&plain) {
                Ok(Message::Ping(p)) => return Ok(StreamMsg::Ping(p)),
                Ok(Message::Ack(a)) => return Ok(StreamMsg::Ack(a.seq_no)),
                Ok(_) => return Err(bad_data("unexpected message on a stream")),
                Err(wire::WireError::Msgpack(crate::msgpack::DecodeError::Truncated(_))) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if plain[0] != MsgType::PushPull as u8 {
            return Err(wire::WireError::Unexpected(MsgType::from_byte(plain[0]).unwrap_or(MsgType::Err)).into());
        }
        match wire::decode_push_pull(&plain[1..], 100_000) {
            Ok((_, nodes, user)) => return Ok(StreamMsg::PushPull(nodes, user)),
            Err(wire::WireError::Msgpack(crate::msgpack::DecodeError::Truncated(_)))
            | Err(wire::WireError::Compound("user state")) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

struct Suspicion {
    k: u32,
    confirmations: HashSet<String>,
    start: Instant,
    min: Duration,
    max: Duration,
    deadline: Instant,
}

struct Broadcast {
    node: String,
    msg: Vec<u8>,
    sent: u32,
}

struct Probe {
    seq: u32,
    target: String,
    indirect_at: Option<Instant>,
    acked: bool,
    /// The target answered a ping over TCP only (UDP to it is failing).
    tcp_acked: bool,
    /// When the direct ping left: the TCP fallback's deadline is one probe
    /// interval after it, as memberlist's.
    sent: Instant,
}

struct Relay {
    to: SocketAddr,
    seq: u32,
    nack: bool,
    deadline: Instant,
}

struct Engine {
    cfg: Arc<Config>,
    transport: Arc<dyn Transport>,
    events: broadcast::Sender<Event>,
    nodes: NodeTable,
    incarnation: u32,
    seq: u32,
    awareness: u32,
    suspicions: HashMap<String, Suspicion>,
    queue: Vec<Broadcast>,
    probe: Option<Probe>,
    /// Positions in `nodes` still to probe this round (popped from the end).
    probe_order: Vec<usize>,
    relays: HashMap<u32, Relay>,
    /// Indirect probes awaiting nacks: seq -> (expected, received, due).
    nack_watch: HashMap<u32, (u32, u32, Instant)>,
    leaving: bool,
    keys: SharedKeys,
    stats: Arc<std::sync::Mutex<SecurityStats>>,
    tables: Tables,
    table_events: broadcast::Sender<TableEvent>,
    /// Table broadcasts: (scope, user message, times sent).
    table_queue: Vec<(String, Vec<u8>, u32)>,
    /// Syncs the engine asks for (peer name, address); run by `run`.
    sync_wanted: Vec<(String, SocketAddr)>,
    /// Members a table sync failed with (not netd, or unreachable): only a
    /// sync they start, or a rejoin, clears it.
    unsyncable: HashSet<String>,
    /// Fallback pings over TCP to run: (seq, target, ping message, deadline).
    tcp_pings: Vec<(u32, SocketAddr, Vec<u8>, Instant)>,
    /// The last gossip round (see `Config::eager_gossip`).
    last_eager: Option<Instant>,
}

/// Starts members on an in-memory network, each knowing all of them alive
/// from one shared list (copied per member only where it changes): how the
/// simulator builds large clusters without N joins.
pub fn start_preloaded(net: &crate::MemNetwork, cfgs: Vec<Config>) -> Vec<Handle> {
    let known: Vec<Arc<Member>> = cfgs.iter().map(|c| Arc::new(Member::of(c))).collect();
    cfgs.into_iter()
        .map(|c| {
            let (t, rx) = net.attach(c.advertise);
            start_with(c, t, rx, known.clone())
        })
        .collect()
}

/// Starts a member on `transport`, reading what `inbound` delivers.
pub fn start(cfg: Config, transport: Arc<dyn Transport>, inbound: mpsc::Receiver<Inbound>) -> Handle {
    start_with(cfg, transport, inbound, Vec::new())
}

/// [`start`] with a member list already known (alive), as after a join: the
/// simulator builds large clusters with it instead of N joins.
pub fn start_with(
    cfg: Config,
    transport: Arc<dyn Transport>,
    inbound: mpsc::Receiver<Inbound>,
    known: Vec<Arc<Member>>,
) -> Handle {
    let keys: SharedKeys = Arc::new(std::sync::RwLock::new(cfg.keyring.clone()));
    let stats = Arc::new(std::sync::Mutex::new(SecurityStats::default()));
    let cfg = Arc::new(cfg);
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (events, _) = broadcast::channel(cfg.event_buffer.max(1));
    let (table_events, _) = broadcast::channel(cfg.event_buffer.max(1) * 4);
    let now = Instant::now();
    let me = Member::of(&cfg);
    let nodes = NodeTable::new(std::iter::once(Arc::new(me)).chain(known), now);
    let engine = Engine {
        cfg: cfg.clone(),
        transport: transport.clone(),
        events: events.clone(),
        nodes,
        incarnation: 1,
        seq: rand::random::<u32>() >> 1,
        awareness: 0,
        suspicions: HashMap::new(),
        queue: Vec::new(),
        probe: None,
        probe_order: Vec::new(),
        relays: HashMap::new(),
        nack_watch: HashMap::new(),
        leaving: false,
        keys: keys.clone(),
        stats: stats.clone(),
        tables: {
            let mut t = Tables::new(&cfg.name);
            t.tombstone_ttl = cfg.tombstone_ttl;
            t.owner_grace = cfg.owner_grace;
            t
        },
        table_events: table_events.clone(),
        table_queue: Vec::new(),
        sync_wanted: Vec::new(),
        unsyncable: HashSet::new(),
        tcp_pings: Vec::new(),
        last_eager: None,
    };
    let handle = Handle { cmd: cmd_tx.clone(), events, transport, cfg, keys, stats, table_events };
    let h2 = handle.clone();
    tokio::spawn(engine.run(inbound, cmd_rx, h2));
    handle
}

fn addr_of(bytes: &[u8], port: u16) -> Option<SocketAddr> {
    let ip: IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn ip_bytes(a: SocketAddr) -> Vec<u8> {
    match a.ip() {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

impl Engine {
    async fn run(mut self, mut inbound: mpsc::Receiver<Inbound>, mut cmds: mpsc::Receiver<Cmd>, handle: Handle) {
        // The first tick of each timer comes at a random offset within its
        // interval, as memberlist staggers its tickers: members started
        // together (a simulation, a fleet rebooted at once) do not probe,
        // gossip and exchange full state in lockstep.
        let start = Instant::now();
        let stagger = |d: Duration| d.mul_f64(rand::random_range(0.0..1.0));
        let mut next_probe = start + stagger(self.cfg.probe_interval);
        let mut next_gossip = start + stagger(self.cfg.gossip_interval);
        // Full state exchanges are spread over the interval scaled to the
        // members already known (preloaded ones, in a simulation); a
        // member that knows only itself uses the base interval.
        let mut next_push_pull =
            start + stagger(config::push_pull_scale(self.cfg.push_pull_interval, self.nodes.len()));
        let mut next_reconnect = start + stagger(self.cfg.reconnect_interval);
        // Announce ourselves, as memberlist's setAlive does: after a join
        // the newcomer spreads its own alive message too.
        let me_alive = self.alive_msg();
        let my_name = self.cfg.name.clone();
        self.queue(&my_name, me_alive);
        // Every netd member is in the global scope: it receives global entries.
        let e = self.tables.write(SCOPES, "", "", Some(Vec::new()), Instant::now());
        self.table_changed(e, None);
        loop {
            for (seq, to, ping, deadline) in std::mem::take(&mut self.tcp_pings) {
                let h = handle.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout_at(deadline, h.tcp_ping(to, ping, seq)).await {
                        Ok(Ok(())) => {
                            let _ = h.cmd.send(Cmd::TcpAck(seq)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%to, error = %e, "fallback ping over TCP failed"),
                        Err(_) => tracing::debug!(%to, "fallback ping over TCP timed out"),
                    }
                });
            }
            for (peer, addr) in std::mem::take(&mut self.sync_wanted) {
                let h = handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = h.table_sync(peer.clone(), addr).await {
                        tracing::debug!(%peer, error = %e, "table sync failed");
                        let _ = h.cmd.send(Cmd::SyncFailed(peer)).await;
                    }
                });
            }
            if self.eager_at().is_some_and(|t| t <= Instant::now()) {
                self.gossip().await;
            }
            let deadline = self
                .next_deadline()
                .unwrap_or(next_probe)
                .min(next_probe)
                .min(next_gossip)
                .min(next_push_pull)
                .min(next_reconnect);
            tokio::select! {
                msg = inbound.recv() => match msg {
                    Some(Inbound::Packet(data, from)) => self.packet(&data, from).await,
                    Some(Inbound::Stream(s, from)) => {
                        let h = handle.clone();
                        tokio::spawn(async move { serve_stream(h, s, from).await });
                    }
                    None => return,
                },
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Members(tx)) => {
                        let mut all: Vec<Member> = self.nodes.iter().map(|n| (*n.m).clone()).collect();
                        all.sort_by(|a, b| a.name.cmp(&b.name));
                        let _ = tx.send((all, self.awareness));
                    }
                    Some(Cmd::LocalState(tx)) => {
                        let _ = tx.send(self.local_state());
                    }
                    Some(Cmd::Merge(states, tx)) => {
                        let r = self.merge(states).await;
                        if let Some(tx) = tx {
                            let _ = tx.send(r);
                        }
                    }
                    Some(Cmd::Leave(tx)) => {
                        self.leave().await;
                        let _ = tx.send(());
                    }
                    Some(Cmd::Stop) | None => return,
                    Some(Cmd::TableWrite(t, sc, k, v)) => {
                        let e = self.tables.write(&t, &sc, &k, v, Instant::now());
                        self.table_changed(e, None);
                    }
                    Some(Cmd::TableList(t, sc, tx)) => {
                        let _ = tx.send(self.tables.list(&t, &sc));
                    }
                    Some(Cmd::JoinScope(sc, join)) => {
                        let e = self.tables.write(SCOPES, "", &sc, join.then(Vec::new), Instant::now());
                        self.table_changed(e, None);
                        if join {
                            // Full sync with a few members that already joined it
                            // (or any members: a sync returns the scopes both share).
                            let mut peers: Vec<String> = self.tables.members_of(&sc).into_iter().filter(|n| *n != self.cfg.name).collect();
                            peers.shuffle(&mut rand::rng());
                            if peers.is_empty() {
                                self.sync_random(2);
                            }
                            for p in peers.into_iter().take(2) {
                                self.want_sync(&p);
                            }
                        }
                    }
                    Some(Cmd::TableSync(peer, entries, tx)) => {
                        self.unsyncable.remove(&peer);
                        for e in entries {
                            self.apply_entry(e);
                        }
                        if let Some(tx) = tx {
                            let _ = tx.send(self.dump_for(&peer));
                        }
                    }
                    Some(Cmd::TableDumpFor(peer, tx)) => {
                        let _ = tx.send(self.dump_for(&peer));
                    }
                    Some(Cmd::SyncFailed(peer)) => {
                        self.unsyncable.insert(peer);
                    }
                    Some(Cmd::Quiet) => {
                        self.queue.clear();
                    }
                    Some(Cmd::SyncRandom(n)) => self.sync_random(n),
                    Some(Cmd::SyncWith(peer)) => self.want_sync(&peer),
                    Some(Cmd::TcpAck(seq)) => {
                        if let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq) {
                            p.tcp_acked = true;
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    self.expire(now).await;
                    if now >= next_probe {
                        self.probe_tick().await;
                        next_probe = now + self.cfg.probe_interval * (self.awareness + 1);
                    }
                    if now >= next_gossip {
                        self.gossip().await;
                        next_gossip = now + self.cfg.gossip_interval;
                    }
                    if now >= next_reconnect {
                        next_reconnect = now + self.cfg.reconnect_interval;
                        if let Some(addr) = self.reconnect_target(now) {
                            let h = handle.clone();
                            tokio::spawn(async move {
                                match h.push_pull(addr, true, None).await {
                                    Ok(()) => tracing::info!(peer = %addr, "reached a member declared dead"),
                                    Err(e) => tracing::debug!(peer = %addr, error = %e, "reconnect failed"),
                                }
                            });
                        }
                    }
                    if now >= next_push_pull {
                        next_push_pull = now + config::push_pull_scale(self.cfg.push_pull_interval, self.nodes.len());
                        let me = self.cfg.name.clone();
                        let peer = self.nodes.sample(1, |x| x.live() && x.m.name != me).first().map(|x| (x.m.name.clone(), x.m.addr));
                        let sharing = self.tables.members_of("");
                        // Table anti-entropy rides on the push-pull (its user
                        // state) when the peer keeps tables; otherwise (a
                        // serf agent) it is a sync of its own with a member
                        // that does.
                        let tables = peer.as_ref().map(|p| &p.0).filter(|p| sharing.contains(*p) && !self.unsyncable.contains(*p)).cloned();
                        if tables.is_none() {
                            let mut others: Vec<String> = sharing.into_iter().filter(|n| *n != me && !self.unsyncable.contains(n)).collect();
                            others.shuffle(&mut rand::rng());
                            if let Some(p) = others.first().cloned() {
                                self.want_sync(&p);
                            }
                        }
                        if let Some((_, addr)) = peer {
                            let h = handle.clone();
                            tokio::spawn(async move {
                                if let Err(e) = h.push_pull(addr, false, tables).await {
                                    tracing::debug!(peer = %addr, error = %e, "push-pull failed");
                                }
                            });
                        }
                    }
                }
            }
        }
    }

    /// When pending broadcasts may be gossiped before the next tick (`None`:
    /// nothing pending, nobody to tell, or eager gossip off).
    fn eager_at(&self) -> Option<Instant> {
        (self.cfg.eager_gossip && !self.queue.is_empty() && self.nodes.live_count() > 1)
            .then(|| self.last_eager.map_or_else(Instant::now, |t| t + self.cfg.gossip_interval / 4))
    }

    /// serf's reconnect: with probability dead / live, one member declared
    /// dead (within the reconnect timeout) at random.
    fn reconnect_target(&self, now: Instant) -> Option<SocketAddr> {
        let dead = self.nodes.dead_count();
        if dead == 0 || rand::random::<f64>() > dead as f64 / self.nodes.live_count().max(1) as f64 {
            return None;
        }
        let within = self.cfg.reconnect_timeout;
        let pick = self.nodes.sample(1, |n| n.m.state == MemberState::Dead && now.duration_since(n.since) < within);
        pick.first().map(|n| n.m.addr)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let s = self.suspicions.values().map(|s| s.deadline).min();
        let r = self.relays.values().map(|r| r.deadline).chain(self.nack_watch.values().map(|w| w.2)).min();
        let p = self.probe.as_ref().and_then(|p| if p.acked { None } else { p.indirect_at });
        [s, r, p, self.tables.next_reap(), self.eager_at()].into_iter().flatten().min()
    }

    /// Queues a changed entry for its scope and reports it.
    fn table_changed(&mut self, e: Entry, ev: Option<TableEvent>) {
        let ev =
            ev.or_else(|| Some(if e.deleted { TableEvent::Delete(e.clone()) } else { TableEvent::Put(e.clone()) }));
        let mut msg = vec![MsgType::User as u8];
        msg.extend(tables::encode(std::slice::from_ref(&e)));
        self.table_queue.push((e.scope.clone(), msg, 0));
        if self.table_queue.len() > 10_000 {
            self.table_queue.remove(0);
        }
        if let Some(ev) = ev {
            let _ = self.table_events.send(ev);
        }
    }

    /// Applies a replicated entry; re-broadcasts it if it changed anything.
    /// (Full syncs are the joiner's job, as NetworkDB's bulk sync: a node
    /// that joins a scope, or the cluster, syncs with a few members; the
    /// others do not all sync back, which would cost O(N) syncs per join.)
    fn apply_entry(&mut self, e: Entry) {
        if let Some(ev) = self.tables.apply(e.clone(), Instant::now()) {
            self.table_changed(e, Some(ev));
        }
    }

    /// Full table syncs with up to `n` random live members.
    fn sync_random(&mut self, n: usize) {
        let peers: Vec<String> = self
            .nodes
            .sample(n, |x| {
                x.m.name != self.cfg.name && x.m.state == MemberState::Alive && !self.unsyncable.contains(&x.m.name)
            })
            .into_iter()
            .map(|x| x.m.name.clone())
            .collect();
        for p in peers {
            self.want_sync(&p);
        }
    }

    fn want_sync(&mut self, peer: &str) {
        if self.unsyncable.contains(peer) || self.sync_wanted.iter().any(|(p, _)| p == peer) {
            return;
        }
        if let Some(n) = self.nodes.get(peer).filter(|n| n.live()) {
            self.sync_wanted.push((peer.to_owned(), n.m.addr));
        }
    }

    /// Our entries for the scopes `peer` shares with us (global included).
    fn dump_for(&self, peer: &str) -> Vec<Entry> {
        let mine = self.tables.scopes_of(&self.cfg.name);
        let theirs = self.tables.scopes_of(peer);
        let common: BTreeSet<String> = mine.intersection(&theirs).cloned().collect();
        self.tables.dump(&common)
    }

    fn alive_count(&self) -> usize {
        self.nodes.live_count()
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn me(&self) -> &Member {
        // Inserted at start, never removed.
        self.nodes.get(&self.cfg.name).map(|n| &*n.m).expect("a member knows itself")
    }

    fn queue(&mut self, node: &str, msg: Vec<u8>) {
        self.queue.retain(|b| b.node != node);
        self.queue.push(Broadcast { node: node.to_owned(), msg, sent: 0 });
    }

    /// Broadcasts that fit in `budget` bytes, least-sent first.
    fn take_broadcasts(&mut self, mut budget: usize) -> Vec<Vec<u8>> {
        let limit = config::retransmit_limit(self.cfg.retransmit_mult, self.alive_count()).max(1);
        self.queue.sort_by_key(|b| b.sent);
        let mut out = Vec::new();
        for b in &mut self.queue {
            if b.msg.len() + 2 > budget {
                continue;
            }
            budget -= b.msg.len() + 2;
            b.sent += 1;
            out.push(b.msg.clone());
        }
        self.queue.retain(|b| b.sent < limit);
        out
    }

    /// Sends a packet, encrypted when a keyring is set.
    async fn raw_send(&self, to: SocketAddr, packet: Vec<u8>) {
        let packet = match self.keys.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(k) => k.encrypt(&packet, &self.cfg.label),
            None => packet,
        };
        let packet = wire::add_label(&self.cfg.label, packet);
        if let Err(e) = self.transport.send(to, packet).await {
            tracing::debug!(%to, error = %e, "send failed");
        }
    }

    /// Sends `msg` with as many broadcasts as fit piggybacked.
    async fn send(&mut self, to: SocketAddr, msg: Vec<u8>) {
        self.send_all(to, vec![msg]).await
    }

    /// Sends `msgs` in one packet (a compound if more than one), with as
    /// many broadcasts as fit piggybacked.
    async fn send_all(&mut self, to: SocketAddr, mut msgs: Vec<Vec<u8>>) {
        let label = if self.cfg.label.is_empty() { 0 } else { 2 + self.cfg.label.len() };
        let overhead = label + if self.cfg.keyring.is_some() { 4 + 29 } else { 4 };
        let own: usize = msgs.iter().map(|m| m.len() + 2).sum();
        let budget = self.cfg.udp_buffer_size.saturating_sub(own + overhead);
        msgs.extend(self.take_broadcasts(budget));
        let packet = if msgs.len() == 1 { msgs.remove(0) } else { wire::compound(&msgs) };
        self.raw_send(to, packet).await;
    }

    fn alive_msg(&self) -> Vec<u8> {
        let me = self.me();
        wire::encode_message(&Message::Alive(Alive {
            incarnation: self.incarnation,
            node: me.name.clone(),
            addr: ip_bytes(me.addr),
            port: me.addr.port(),
            meta: Some(me.meta.clone()),
            vsn: me.vsn,
        }))
    }

    fn local_state(&self) -> Vec<PushNodeState> {
        self.nodes
            .iter()
            .map(|n| PushNodeState {
                name: n.m.name.clone(),
                addr: ip_bytes(n.m.addr),
                port: n.m.addr.port(),
                meta: Some(n.m.meta.clone()),
                incarnation: n.m.incarnation,
                state: match n.m.state {
                    MemberState::Alive => State::Alive,
                    MemberState::Suspect => State::Suspect,
                    MemberState::Dead => State::Dead,
                    MemberState::Left => State::Left,
                },
                vsn: n.m.vsn,
            })
            .collect()
    }

    async fn merge(&mut self, states: Vec<PushNodeState>) -> Result<(), GossipError> {
        let mut clash = None;
        for s in states {
            let Some(addr) = addr_of(&s.addr, s.port) else { continue };
            match s.state {
                State::Alive => {
                    let a = Alive {
                        incarnation: s.incarnation,
                        node: s.name,
                        addr: s.addr,
                        port: s.port,
                        meta: s.meta,
                        vsn: s.vsn,
                    };
                    if a.node == self.cfg.name && addr != self.cfg.advertise && a.incarnation > 0 && !self.leaving {
                        // Another process claims our name: refuse it loudly (memberlist logs a conflict).
                        // The rest of the state still merges; the caller hears of it.
                        tracing::warn!(node = %a.node, other = %addr, "another member uses this node name");
                        clash = Some(GossipError::NameClash(a.node, addr));
                        continue;
                    }
                    self.alive(a).await;
                }
                // memberlist prefers to suspect a node another member thinks is dead.
                State::Suspect | State::Dead => {
                    let from = self.cfg.name.clone();
                    self.suspect(Accusation { incarnation: s.incarnation, node: s.name, from }).await;
                }
                State::Left => {
                    let name = s.name.clone();
                    self.dead(Accusation { incarnation: s.incarnation, node: s.name, from: name }).await;
                }
            }
        }
        clash.map_or(Ok(()), Err)
    }

    async fn packet(&mut self, data: &[u8], from: SocketAddr) {
        let (label, data) = match wire::split_label(data) {
            Ok((l, rest)) if l == self.cfg.label.as_slice() => (l, rest),
            Ok((l, _)) => {
                self.stats.lock().unwrap_or_else(|p| p.into_inner()).wrong_label += 1;
                tracing::debug!(%from, label = %String::from_utf8_lossy(l), "dropped a packet with another label");
                return;
            }
            Err(e) => {
                self.stats.lock().unwrap_or_else(|p| p.into_inner()).wrong_label += 1;
                tracing::debug!(%from, error = %e, "dropped a packet with a malformed label");
                return;
            }
        };
        let keyring = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let decrypted;
        let data = match keyring {
            Some(k) => match k.decrypt(data, label) {
                Ok(p) => {
                    decrypted = p;
                    &decrypted[..]
                }
                Err(e) => {
                    let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                    // Plaintext memberlist, or someone else's key?
                    if wire::unwrap_packet(data).is_ok() {
                        st.plaintext += 1;
                    } else {
                        st.undecryptable += 1;
                    }
                    tracing::debug!(%from, error = %e, "dropped a packet that is not encrypted with our keys");
                    return;
                }
            },
            None => data,
        };
        let msgs = match wire::unwrap_packet(data) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropped a malformed packet");
                return;
            }
        };
        for raw in msgs {
            match wire::decode_message(&raw) {
                Ok(m) => self.message(m, from).await,
                Err(e) => tracing::debug!(%from, error = %e, "dropped a malformed message"),
            }
        }
    }

    async fn message(&mut self, m: Message, from: SocketAddr) {
        match m {
            Message::Ping(p) => {
                if !p.node.is_empty() && p.node != self.cfg.name {
                    tracing::debug!(target_node = %p.node, "ping for another node");
                    return;
                }
                let to =
                    p.source_addr.as_deref().zip(p.source_port).and_then(|(a, port)| addr_of(a, port)).unwrap_or(from);
                let ack = wire::encode_message(&Message::Ack(wire::Ack { seq_no: p.seq_no, payload: None }));
                self.send(to, ack).await;
            }
            Message::IndirectPing(ip) => {
                let Some(target) = addr_of(&ip.target, ip.port) else { return };
                let reply_to = ip
                    .source_addr
                    .as_deref()
                    .zip(ip.source_port)
                    .and_then(|(a, port)| addr_of(a, port))
                    .unwrap_or(from);
                self.seq = self.seq.wrapping_add(1);
                let seq = self.seq;
                self.relays.insert(
                    seq,
                    Relay {
                        to: reply_to,
                        seq: ip.seq_no,
                        nack: ip.nack,
                        deadline: Instant::now() + self.cfg.probe_timeout,
                    },
                );
                let ping = wire::encode_message(&Message::Ping(wire::Ping {
                    seq_no: seq,
                    node: ip.node,
                    ..Default::default()
                }));
                self.send(target, ping).await;
            }
            Message::Ack(a) => {
                // An ack through a helper: the target lives; no nack verdict.
                self.nack_watch.remove(&a.seq_no);
                if let Some(p) = self.probe.as_mut()
                    && p.seq == a.seq_no
                {
                    p.acked = true;
                    self.awareness = self.awareness.saturating_sub(1);
                } else if let Some(r) = self.relays.remove(&a.seq_no) {
                    let ack = wire::encode_message(&Message::Ack(wire::Ack { seq_no: r.seq, payload: None }));
                    self.send(r.to, ack).await;
                }
            }
            Message::Nack { seq_no } => {
                if let Some(w) = self.nack_watch.get_mut(&seq_no) {
                    w.1 += 1;
                }
            }
            Message::Alive(a) => self.alive(a).await,
            Message::Suspect(s) => self.suspect(s).await,
            Message::Dead(d) => self.dead(d).await,
            Message::User(b) => {
                if b.first() == Some(&tables::USER_TAG) {
                    match tables::decode(&b) {
                        Ok(entries) => {
                            for e in entries {
                                self.apply_entry(e);
                            }
                        }
                        Err(e) => tracing::debug!(%from, error = %e, "dropped a malformed table message"),
                    }
                }
            }
            Message::Err(e) => tracing::debug!(%from, error = %e, "remote error"),
        }
    }

    async fn refute(&mut self, accused: u32) {
        self.incarnation = self.incarnation.max(accused) + 1;
        let inc = self.incarnation;
        self.nodes.update(&self.cfg.name, |m, _| m.incarnation = inc);
        self.awareness = (self.awareness + 1).min(self.cfg.awareness_max_multiplier - 1);
        let msg = self.alive_msg();
        let name = self.cfg.name.clone();
        self.queue(&name, msg);
        tracing::info!(incarnation = inc, "refuted an accusation");
    }

    async fn alive(&mut self, a: Alive) {
        let Some(addr) = addr_of(&a.addr, a.port) else { return };
        if a.node == self.cfg.name {
            if a.incarnation < self.incarnation || self.leaving {
                return;
            }
            if a.incarnation == self.incarnation && a.meta.as_deref().unwrap_or(&[]) == self.me().meta.as_slice() {
                return;
            }
            self.refute(a.incarnation).await;
            return;
        }
        let now = Instant::now();
        let meta = a.meta.clone().unwrap_or_default();
        let mut rejoined = false;
        let (event, changed) = match self.nodes.get(&a.node) {
            None => {
                let m = Member {
                    name: a.node.clone(),
                    addr,
                    meta,
                    incarnation: a.incarnation,
                    state: MemberState::Alive,
                    vsn: a.vsn,
                };
                let at = self.nodes.insert(m.clone(), now);
                // Positions at or after the new member moved up; it is
                // probed soon, in random order.
                for p in &mut self.probe_order {
                    *p += usize::from(*p >= at);
                }
                let pos = rand::random_range(0..=self.probe_order.len());
                self.probe_order.insert(pos, at);
                (Some(Event::Join(m)), true)
            }
            Some(n) => {
                let dead = matches!(n.m.state, MemberState::Dead | MemberState::Left);
                if a.incarnation <= n.m.incarnation && !(dead && a.incarnation == n.m.incarnation && n.m.addr != addr) {
                    return;
                }
                let meta_changed = n.m.meta != meta;
                let m = self.nodes.update(&a.node, |m, since| {
                    m.incarnation = a.incarnation;
                    m.meta = meta;
                    m.addr = addr;
                    m.vsn = a.vsn;
                    if m.state != MemberState::Alive {
                        m.state = MemberState::Alive;
                        *since = now;
                    }
                    m.clone()
                });
                rejoined = dead;
                let ev = match m {
                    Some(m) if dead => Some(Event::Join(m)),
                    Some(m) if meta_changed => Some(Event::Update(m)),
                    _ => None,
                };
                (ev, true)
            }
        };
        self.suspicions.remove(&a.node);
        if rejoined {
            // Back from the dead (a healed partition): full table sync.
            self.tables.owner_back(&a.node);
            self.unsyncable.remove(&a.node);
            let node = a.node.clone();
            self.want_sync(&node);
        }
        if changed {
            let node = a.node.clone();
            self.queue(&node, wire::encode_message(&Message::Alive(a)));
        }
        if let Some(e) = event {
            tracing::info!(event = ?e, "member change");
            self.emit(e);
        }
    }

    async fn suspect(&mut self, s: Accusation) {
        let n_alive = self.alive_count();
        let Some(n) = self.nodes.get(&s.node) else { return };
        if s.incarnation < n.m.incarnation {
            return;
        }
        if let Some(susp) = self.suspicions.get_mut(&s.node) {
            if susp.confirmations.len() as u32 <= susp.k && susp.confirmations.insert(s.from.clone()) {
                let c = susp.confirmations.len() as u32 - 1;
                let left = config::remaining_suspicion(c, susp.k, susp.start.elapsed(), susp.min, susp.max);
                susp.deadline = Instant::now() + left;
                self.queue(&s.node.clone(), wire::encode_message(&Message::Suspect(s)));
            }
            return;
        }
        if n.m.state != MemberState::Alive {
            return;
        }
        if s.node == self.cfg.name {
            self.refute(s.incarnation).await;
            return;
        }
        let Some(m) = self.nodes.update(&s.node, |m, since| {
            m.incarnation = s.incarnation;
            m.state = MemberState::Suspect;
            *since = Instant::now();
            m.clone()
        }) else {
            return;
        };
        let mult = self.cfg.suspicion_mult;
        let k = if n_alive.saturating_sub(2) < (mult.saturating_sub(2)) as usize { 0 } else { mult.saturating_sub(2) };
        let min = config::suspicion_timeout(mult, n_alive, self.cfg.probe_interval);
        let max = min * self.cfg.suspicion_max_timeout_mult;
        let start = Instant::now();
        let mut confirmations = HashSet::new();
        confirmations.insert(s.from.clone());
        let deadline = start + if k < 1 { min } else { max };
        self.suspicions.insert(s.node.clone(), Suspicion { k, confirmations, start, min, max, deadline });
        tracing::info!(node = %s.node, from = %s.from, "member suspected");
        self.emit(Event::Suspect(m));
        self.queue(&s.node.clone(), wire::encode_message(&Message::Suspect(s)));
    }

    async fn dead(&mut self, d: Accusation) {
        let Some(n) = self.nodes.get(&d.node) else { return };
        if d.incarnation < n.m.incarnation || matches!(n.m.state, MemberState::Dead | MemberState::Left) {
            return;
        }
        if d.node == self.cfg.name && !self.leaving {
            self.refute(d.incarnation).await;
            return;
        }
        let Some(m) = self.nodes.update(&d.node, |m, since| {
            m.incarnation = d.incarnation;
            m.state = if d.node == d.from { MemberState::Left } else { MemberState::Dead };
            *since = Instant::now();
            m.clone()
        }) else {
            return;
        };
        self.suspicions.remove(&d.node);
        self.queue(&d.node.clone(), wire::encode_message(&Message::Dead(d)));
        self.tables.owner_gone(&m.name, Instant::now());
        let e = if m.state == MemberState::Left { Event::Leave(m) } else { Event::Fail(m) };
        tracing::info!(event = ?e, "member change");
        self.emit(e);
    }

    async fn expire(&mut self, now: Instant) {
        let due: Vec<u32> = self.nack_watch.iter().filter(|(_, w)| w.2 <= now).map(|(k, _)| *k).collect();
        for seq in due {
            if let Some((expected, got, _)) = self.nack_watch.remove(&seq)
                && got < expected
            {
                self.awareness = (self.awareness + (expected - got)).min(self.cfg.awareness_max_multiplier - 1);
            }
        }
        for ev in self.tables.reap(now) {
            let _ = self.table_events.send(ev);
        }
        let due: Vec<String> =
            self.suspicions.iter().filter(|(_, s)| s.deadline <= now).map(|(k, _)| k.clone()).collect();
        for node in due {
            self.suspicions.remove(&node);
            let inc = self.nodes.get(&node).map(|n| n.m.incarnation).unwrap_or(0);
            let from = self.cfg.name.clone();
            tracing::info!(%node, "suspicion timed out: member is dead");
            self.dead(Accusation { incarnation: inc, node, from }).await;
        }
        let relays: Vec<u32> = self.relays.iter().filter(|(_, r)| r.deadline <= now).map(|(k, _)| *k).collect();
        for seq in relays {
            if let Some(r) = self.relays.remove(&seq)
                && r.nack
            {
                let nack = wire::encode_message(&Message::Nack { seq_no: r.seq });
                self.send(r.to, nack).await;
            }
        }
        // Direct probe unanswered: ask others to try.
        let pending = self
            .probe
            .as_ref()
            .filter(|p| !p.acked && p.indirect_at.is_some_and(|t| t <= now))
            .map(|p| (p.seq, p.target.clone(), p.sent));
        if let Some((seq, target, sent)) = pending {
            let Some(t) = self.nodes.get(&target).map(|n| n.m.clone()) else { return };
            // And try the target directly over TCP, as memberlist does for
            // members speaking protocol 3 or later: a member cut off from
            // UDP only is not declared dead (and does not flap).
            if self.cfg.tcp_pings && t.vsn[1] >= 3 {
                let me = self.me().clone();
                let ping = wire::encode_message(&Message::Ping(wire::Ping {
                    seq_no: seq,
                    node: t.name.clone(),
                    source_addr: Some(ip_bytes(me.addr)),
                    source_port: Some(me.addr.port()),
                    source_node: Some(me.name.clone()),
                }));
                self.tcp_pings.push((seq, t.addr, ping, sent + self.cfg.probe_interval));
            }
            let helpers: Vec<SocketAddr> = self
                .nodes
                .sample(self.cfg.indirect_checks, |n| {
                    n.m.name != target && n.m.name != self.cfg.name && n.m.state == MemberState::Alive
                })
                .into_iter()
                .map(|n| n.m.addr)
                .collect();
            if let Some(p) = self.probe.as_mut() {
                p.indirect_at = None;
            }
            // Lifeguard: helpers that cannot reach the target say so (nack)
            // after their probe timeout; missing nacks hint that we, not the
            // target, are unwell. Judged once they are due (plus slack).
            if !helpers.is_empty() {
                let due = now + self.cfg.probe_timeout + self.cfg.probe_timeout / 2;
                self.nack_watch.insert(seq, (helpers.len() as u32, 0, due));
            }
            let me = self.me().clone();
            for h in helpers {
                let req = wire::encode_message(&Message::IndirectPing(wire::IndirectPing {
                    seq_no: seq,
                    target: ip_bytes(t.addr),
                    port: t.addr.port(),
                    node: t.name.clone(),
                    nack: true,
                    source_addr: Some(ip_bytes(me.addr)),
                    source_port: Some(me.addr.port()),
                    source_node: Some(me.name.clone()),
                }));
                self.send(h, req).await;
            }
        }
    }

    async fn probe_tick(&mut self) {
        // The last probe's verdict.
        if let Some(p) = self.probe.take()
            && !p.acked
        {
            if p.tcp_acked {
                // memberlist's verdict too: alive, but the network between
                // us drops UDP; no suspicion, no penalty to our health.
                tracing::warn!(node = %p.target, "reached over TCP but UDP probes failed: network may be misconfigured");
                self.nack_watch.remove(&p.seq);
                return self.probe_next().await;
            }
            // Suspect it, or confirm a suspicion others raised (Lifeguard).
            if let Some(n) = self.nodes.get(&p.target).filter(|n| n.live()) {
                let inc = n.m.incarnation;
                let from = self.cfg.name.clone();
                self.suspect(Accusation { incarnation: inc, node: p.target, from }).await;
            }
        }
        self.probe_next().await
    }

    /// Pings the next member in the (shuffled, round-robin) probe order.
    async fn probe_next(&mut self) {
        if self.probe_order.is_empty() {
            let mut order: Vec<usize> = (0..self.nodes.len())
                .filter(|i| self.nodes.at(*i).is_some_and(|n| n.m.name != self.cfg.name))
                .collect();
            order.shuffle(&mut rand::rng());
            self.probe_order = order;
        }
        while let Some(i) = self.probe_order.pop() {
            let Some(n) = self.nodes.at(i) else { continue };
            if !n.live() || n.m.name == self.cfg.name {
                continue;
            }
            let (addr, target) = (n.m.addr, n.m.name.clone());
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            let me = self.me().clone();
            let ping = wire::encode_message(&Message::Ping(wire::Ping {
                seq_no: seq,
                node: target.clone(),
                source_addr: Some(ip_bytes(me.addr)),
                source_port: Some(me.addr.port()),
                source_node: Some(me.name),
            }));
            // memberlist's buddy system: a suspect member is told so in the
            // probe itself, so it can refute at once rather than when the
            // gossip reaches it (if it ever does).
            let buddy = (n.m.state == MemberState::Suspect).then(|| {
                wire::encode_message(&Message::Suspect(Accusation {
                    incarnation: n.m.incarnation,
                    node: n.m.name.clone(),
                    from: self.cfg.name.clone(),
                }))
            });
            let timeout = self.cfg.probe_timeout * (self.awareness + 1);
            let now = Instant::now();
            self.probe = Some(Probe {
                seq,
                target,
                indirect_at: Some(now + timeout),
                acked: false,
                tcp_acked: false,
                sent: now,
            });
            self.send_all(addr, std::iter::once(ping).chain(buddy).collect()).await;
            return;
        }
    }

    fn random_peers(&self, n: usize, with_dead: bool) -> Vec<SocketAddr> {
        let now = Instant::now();
        self.nodes
            .sample(n, |x| {
                x.m.name != self.cfg.name
                    && match x.m.state {
                        MemberState::Alive | MemberState::Suspect => true,
                        MemberState::Dead => {
                            with_dead && now.duration_since(x.since) < self.cfg.gossip_to_the_dead_time
                        }
                        MemberState::Left => false,
                    }
            })
            .into_iter()
            .map(|x| x.m.addr)
            .collect()
    }

    async fn gossip(&mut self) {
        self.last_eager = Some(Instant::now());
        self.gossip_tables().await;
        if self.queue.is_empty() {
            return;
        }
        for to in self.random_peers(self.cfg.gossip_nodes, true) {
            let msgs = self.take_broadcasts(self.cfg.udp_buffer_size - 2);
            if msgs.is_empty() {
                return;
            }
            let packet =
                if msgs.len() == 1 { msgs.into_iter().next().unwrap_or_default() } else { wire::compound(&msgs) };
            self.raw_send(to, packet).await;
        }
    }

    /// Table broadcasts go only to members of their scope.
    async fn gossip_tables(&mut self) {
        let scopes: BTreeSet<String> = self.table_queue.iter().map(|q| q.0.clone()).collect();
        for scope in scopes {
            let members = self.tables.members_of(&scope);
            let limit = config::retransmit_limit(self.cfg.retransmit_mult, members.len()).max(1);
            let mut peers: Vec<SocketAddr> = members
                .iter()
                .filter(|n| **n != self.cfg.name)
                .filter_map(|n| self.nodes.get(n))
                .filter(|n| n.live())
                .map(|n| n.m.addr)
                .collect();
            peers.shuffle(&mut rand::rng());
            peers.truncate(self.cfg.gossip_nodes);
            if peers.is_empty() {
                // Nobody else known in the scope yet: keep the messages
                // (the queue is bounded) until someone is.
                continue;
            }
            let mut budget = self.cfg.udp_buffer_size.saturating_sub(64);
            let mut msgs = Vec::new();
            for q in self.table_queue.iter_mut().filter(|q| q.0 == scope) {
                if q.1.len() + 2 > budget {
                    continue;
                }
                budget -= q.1.len() + 2;
                q.2 += 1;
                msgs.push(q.1.clone());
            }
            self.table_queue.retain(|q| q.2 < limit);
            if msgs.is_empty() {
                continue;
            }
            let packet = if msgs.len() == 1 { msgs.remove(0) } else { wire::compound(&msgs) };
            for to in peers {
                self.raw_send(to, packet.clone()).await;
            }
        }
    }

    async fn leave(&mut self) {
        self.leaving = true;
        let name = self.cfg.name.clone();
        let d = Accusation { incarnation: self.incarnation, node: name.clone(), from: name.clone() };
        self.nodes.update(&name, |m, _| m.state = MemberState::Left);
        let msg = wire::encode_message(&Message::Dead(d));
        // serf tells a leave from a failure by its own "leave intent" user
        // message (serf type 0: {LTime, Node}); send it first, as serf does.
        let ltime =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1);
        let intent = serf_leave_intent(&name, ltime);
        let packet = wire::compound(&[intent.clone(), msg.clone()]);
        // Tell every live member directly, then let gossip repeat it.
        for to in self.random_peers(usize::MAX, false) {
            self.raw_send(to, packet.clone()).await;
        }
        self.queue(&format!("serf-leave:{name}"), intent);
        self.queue(&name, msg);
        self.gossip().await;
    }
}

/// serf's leave intent as a memberlist user message: serf message type 0
/// (`messageLeave`), then its msgpack map `{LTime, Node}`.
pub fn serf_leave_intent(node: &str, ltime: u64) -> Vec<u8> {
    let mut w = crate::msgpack::Writer { buf: vec![MsgType::User as u8, 0] };
    w.map(2).key("LTime").uint(ltime).key("Node").raw(node.as_bytes());
    w.buf
}

/// Answers an inbound stream: a push-pull (the remote sends first).
async fn serve_stream(h: Handle, mut s: Box<dyn Stream>, from: SocketAddr) {
    let r = tokio::time::timeout(h.cfg.tcp_timeout, async {
        let (remote, user) = match read_stream(&mut s, &h.keys, &h.stats, &h.cfg.label, true).await? {
            StreamMsg::PushPull(n, user) => (n, user),
            StreamMsg::Ping(p) => {
                if !p.node.is_empty() && p.node != h.cfg.name {
                    return Err(bad_data(&format!("ping over TCP for {}, but this member is {}", p.node, h.cfg.name)));
                }
                let ack = wire::encode_message(&Message::Ack(wire::Ack { seq_no: p.seq_no, payload: None }));
                s.write_all(&seal_stream(&h.keys, &h.cfg.label, ack)).await?;
                s.flush().await?;
                return Ok(());
            }
            StreamMsg::Ack(_) => return Err(bad_data("an ack nobody asked for")),
            StreamMsg::Tables(peer, entries) => {
                let (tx, rx) = oneshot::channel();
                h.cmd.send(Cmd::TableSync(peer, entries, Some(tx))).await.map_err(|_| GossipError::Stopped)?;
                let ours = rx.await.map_err(|_| GossipError::Stopped)?;
                s.write_all(&seal_stream(&h.keys, &h.cfg.label, sync_frame(&h.cfg.name, &ours))).await?;
                s.flush().await?;
                return Ok(());
            }
        };
        let (tx, rx) = oneshot::channel();
        h.cmd.send(Cmd::LocalState(tx)).await.map_err(|_| GossipError::Stopped)?;
        let local = rx.await.map_err(|_| GossipError::Stopped)?;
        // A table digest in the user state: answer with ours (the sender
        // starts a full table sync if they differ).
        let answer = match parse_digest(&user) {
            Some((peer, _)) => digest_frame(&h.cfg.name, h.table_digest(&peer).await?),
            None => Vec::new(),
        };
        s.write_all(&seal_stream(&h.keys, &h.cfg.label, wire::encode_push_pull(false, &local, &answer))).await?;
        s.flush().await?;
        h.cmd.send(Cmd::Merge(remote, None)).await.map_err(|_| GossipError::Stopped)?;
        Ok::<_, GossipError>(())
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%from, error = %e, "stream refused"),
        Err(_) => tracing::debug!(%from, "stream timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, ltime: u64) -> Entry {
        Entry {
            table: "ep".into(),
            scope: "net1".into(),
            key: key.into(),
            value: b"v".to_vec(),
            owner: "n1".into(),
            ltime,
            deleted: false,
        }
    }

    #[test]
    fn digests_tell_entry_sets_apart() {
        let a = [entry("c1", 1), entry("c2", 2)];
        assert_eq!(digest(&a), digest(&a.clone()));
        assert_ne!(digest(&a), digest(&[entry("c1", 1), entry("c2", 3)]), "a newer write");
        assert_ne!(digest(&a), digest(&a[..1]), "a missing entry");
        assert_ne!(digest(&a), digest(&[]));
        let f = digest_frame("n1", digest(&a));
        assert_eq!(parse_digest(&f), Some(("n1".to_owned(), digest(&a))));
    }

    #[test]
    fn foreign_or_malformed_user_states_are_not_digests() {
        let f = digest_frame("n1", 42);
        assert_eq!(parse_digest(&[]), None);
        // serf's push-pull user state starts with its own message type.
        assert_eq!(parse_digest(&[2, 0x85, 0xa5]), None);
        for cut in 0..f.len() {
            assert_eq!(parse_digest(&f[..cut]), None, "truncated at {cut}");
        }
        let mut long = f.clone();
        long.push(0);
        assert_eq!(parse_digest(&long), None, "trailing bytes");
        let mut huge = f.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_digest(&huge), None, "name length beyond the frame");
        let mut bad = digest_frame("n1", 1);
        bad[5] = 0xff;
        assert_eq!(parse_digest(&bad), None, "name not UTF-8");
    }
}
