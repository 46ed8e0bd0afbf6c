//! The request handler hickory's server calls: one per container (its
//! view), all sharing one [`Shared`] (the current [`Db`] and the
//! forwarder). Our names are answered authoritatively from the view; the
//! rest goes to the container's upstreams.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use hickory_proto::op::{Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::forward::Forwarder;
use crate::records::{Db, Kind, Lookup, ViewId};

/// The largest UDP answer we send (the DNS flag day's 1232 would be too
/// small for large dnsrr answers; 4096 is what resolvers advertise).
const MAX_UDP: u16 = 4096;

/// The name our SOA and NS records give as the zones' server.
const NS_NAME: &str = "netd.internal";

/// What every container's handler shares.
#[derive(Debug)]
pub struct Shared {
    db: RwLock<Arc<Db>>,
    pub forwarder: Forwarder,
}

impl Shared {
    pub fn new(db: Db, forwarder: Forwarder) -> Arc<Shared> {
        Arc::new(Shared { db: RwLock::new(Arc::new(db)), forwarder })
    }

    /// Replaces the records: the next query sees the new ones.
    pub fn swap(&self, db: Db) {
        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(db);
    }

    pub fn db(&self) -> Arc<Db> {
        self.db.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The handler for one container's sockets.
#[derive(Clone, Debug)]
pub struct Resolver {
    pub view: ViewId,
    pub shared: Arc<Shared>,
}

fn fqdn(name: &str) -> Option<Name> {
    let n = if name.ends_with('.') { name.to_owned() } else { format!("{name}.") };
    Name::from_str(&n).ok()
}

fn soa(db: &Db, zone: &str) -> Vec<Record> {
    let Some(owner) = fqdn(zone) else { return Vec::new() };
    let (Some(mname), Some(rname)) = (fqdn(NS_NAME), fqdn("hostmaster.netd.internal")) else {
        return Vec::new();
    };
    // MINIMUM (the negative-caching TTL) is the record TTL: a name that
    // appears is visible as soon as a positive answer would be fresh.
    let rd = SOA::new(mname, rname, db.serial, 3600, 600, 86400, db.ttl);
    vec![Record::from_rdata(owner, db.ttl, RData::SOA(rd))]
}

fn addr_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(a) => Record::from_rdata(name.clone(), ttl, RData::A(A(a))),
        IpAddr::V6(a) => Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(a))),
    }
}

/// The EDNS of an answer: present when the query had one, advertising the
/// client's size (hickory truncates UDP answers to it).
fn answer_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|e| {
        let mut r = Edns::new();
        r.set_max_payload(e.max_payload().clamp(512, MAX_UDP));
        r
    })
}

/// An answer from our own records (or an error), before encoding.
#[derive(Clone, Debug)]
pub struct Reply {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub soa: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Reply {
    fn error(code: ResponseCode) -> Reply {
        Reply { code, answers: Vec::new(), soa: Vec::new(), additionals: Vec::new() }
    }
}

/// What a request needs.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Answered from the records, or refused/failed outright.
    Reply(Reply),
    /// Not ours: ask the upstreams (slow: run it apart).
    Forward,
}

fn reply_meta(request: &Request, code: ResponseCode) -> Metadata {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.response_code = code;
    meta.authoritative = code == ResponseCode::NoError || code == ResponseCode::NXDomain;
    meta.recursion_available = true;
    meta
}

/// hickory's response for `reply` (`edns`: from [`answer_edns`]).
fn response<'q>(
    request: &'q Request,
    reply: &'q Reply,
    edns: &'q Option<Edns>,
) -> hickory_server::zone_handler::MessageResponse<
    'q,
    'q,
    impl Iterator<Item = &'q Record> + Send + 'q,
    impl Iterator<Item = &'q Record> + Send + 'q,
    impl Iterator<Item = &'q Record> + Send + 'q,
    impl Iterator<Item = &'q Record> + Send + 'q,
> {
    let mut b = MessageResponseBuilder::from_message_request(request);
    if let Some(e) = edns {
        b.edns(e);
    }
    b.build(
        reply_meta(request, reply.code),
        reply.answers.iter(),
        std::iter::empty(),
        reply.soa.iter(),
        reply.additionals.iter(),
    )
}

/// Encodes `reply` in at most `max` bytes (see [`udp_limit`]; `u16::MAX`
/// over TCP), truncated with TC beyond it, as hickory's server does.
pub fn encode(request: &Request, reply: &Reply, max: u16) -> Vec<u8> {
    use hickory_proto::serialize::binary::BinEncoder;
    let edns = answer_edns(request);
    let resp = response(request, reply, &edns);
    let mut out = Vec::with_capacity(512);
    let mut enc = BinEncoder::new(&mut out);
    enc.set_max_size(max);
    if resp.destructive_emit(&mut enc).is_err() {
        out.clear();
        let mut enc = BinEncoder::new(&mut out);
        let header = Header { metadata: reply_meta(request, ResponseCode::ServFail), counts: HeaderCounts::default() };
        let _ = hickory_proto::serialize::binary::BinEncodable::emit(&header, &mut enc);
    }
    out
}

impl Resolver {
    async fn send_reply<R: ResponseHandler>(&self, request: &Request, rh: &mut R, reply: &Reply) -> ResponseInfo {
        let edns = answer_edns(request);
        let resp = response(request, reply, &edns);
        match rh.send_response(resp).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a DNS answer");
                failed(request)
            }
        }
    }

    async fn error<R: ResponseHandler>(&self, request: &Request, rh: &mut R, code: ResponseCode) -> ResponseInfo {
        self.send_reply(request, rh, &Reply::error(code)).await
    }

    /// Answers from the records, without waiting on anything (the UDP
    /// server runs this inline); `Forward` when the upstreams are needed.
    pub fn decide(&self, request: &Request) -> Decision {
        if request.metadata.op_code != OpCode::Query {
            return Decision::Reply(Reply::error(ResponseCode::NotImp));
        }
        let queries = request.queries.queries();
        if queries.len() != 1 {
            return Decision::Reply(Reply::error(ResponseCode::FormErr));
        }
        let q = &queries[0];
        if q.query_class() != DNSClass::IN {
            return Decision::Reply(Reply::error(ResponseCode::Refused));
        }
        let kind = match q.query_type() {
            RecordType::A => Kind::A,
            RecordType::AAAA => Kind::Aaaa,
            RecordType::ANY => Kind::Any,
            RecordType::PTR => Kind::Ptr,
            RecordType::SRV => Kind::Srv,
            RecordType::SOA => Kind::Soa,
            RecordType::NS => Kind::Ns,
            RecordType::AXFR | RecordType::IXFR => return Decision::Reply(Reply::error(ResponseCode::Refused)),
            _ => Kind::Other,
        };
        let qname: Name = q.name().into();
        let db = self.shared.db();
        let ttl = db.ttl;
        let mut r = Reply::error(ResponseCode::NoError);
        match db.lookup(&self.view, &qname.to_ascii(), kind) {
            Lookup::Addresses(ips) => r.answers = ips.into_iter().map(|ip| addr_record(&qname, ttl, ip)).collect(),
            Lookup::Ptr(target) => {
                r.answers = fqdn(&target)
                    .map(|t| Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(t))))
                    .into_iter()
                    .collect();
            }
            Lookup::Srv(srv, extra) => {
                r.answers = srv
                    .into_iter()
                    .filter_map(|(prio, weight, port, target)| {
                        let t = fqdn(&target)?;
                        Some(Record::from_rdata(qname.clone(), ttl, RData::SRV(SRV::new(prio, weight, port, t))))
                    })
                    .collect();
                r.additionals =
                    extra.into_iter().filter_map(|(name, ip)| Some(addr_record(&fqdn(&name)?, ttl, ip))).collect();
            }
            Lookup::NoData { zone } => r.soa = soa(&db, &zone),
            Lookup::Apex { zone } => match kind {
                Kind::Soa => r.answers = soa(&db, &zone),
                Kind::Ns => {
                    r.answers = fqdn(&zone)
                        .zip(fqdn(NS_NAME))
                        .map(|(z, ns)| Record::from_rdata(z, ttl, RData::NS(NS(ns))))
                        .into_iter()
                        .collect();
                }
                _ => r.soa = soa(&db, &zone),
            },
            Lookup::NxDomain { zone } => {
                r.code = ResponseCode::NXDomain;
                r.soa = soa(&db, &zone);
            }
            Lookup::Forward => return Decision::Forward,
        }
        Decision::Reply(r)
    }

    /// Forwards `request` to its view's upstreams: the answer as the
    /// upstream sent it (with the client's id), or the error to answer.
    pub async fn forward_raw(&self, request: &Request) -> Forwarded {
        let db = self.shared.db();
        if !db.may_forward(&self.view) {
            // Containers only on internal networks reach nothing outside,
            // and neither do their names.
            return Forwarded::Error(ResponseCode::Refused);
        }
        let upstreams = db.view(&self.view).map(|v| v.upstreams.clone()).unwrap_or_default();
        match self.shared.forwarder.forward(request.as_slice(), &upstreams).await {
            Ok(raw) => Forwarded::Raw(raw),
            Err(crate::DnsError::Busy(n)) => {
                tracing::warn!(limit = n, "too many forwards in flight: refusing");
                Forwarded::Error(ResponseCode::Refused)
            }
            Err(e) => {
                tracing::debug!(view = %self.view.0, error = %e, "forwarding failed");
                Forwarded::Error(ResponseCode::ServFail)
            }
        }
    }

    /// The bytes a forwarded request is answered with: the upstream's
    /// answer relayed as it came (records hickory cannot parse included),
    /// cut to its question with TC set when longer than `limit` (the
    /// client then asks again over TCP), or an error answer.
    pub async fn forward_bytes(&self, request: &Request, limit: u16) -> Vec<u8> {
        match self.forward_raw(request).await {
            Forwarded::Raw(r) if r.len() <= usize::from(limit) => r,
            Forwarded::Raw(r) => truncated(&r, request.as_slice()),
            Forwarded::Error(code) => encode(request, &Reply::error(code), limit),
        }
    }

    /// For hickory's handler interface: the relayed answer re-encoded.
    async fn forward<R: ResponseHandler>(&self, request: &Request, rh: &mut R) -> ResponseInfo {
        let raw = match self.forward_raw(request).await {
            Forwarded::Raw(r) => r,
            Forwarded::Error(code) => return self.error(request, rh, code).await,
        };
        let Ok(up) = Message::from_vec(&raw) else {
            tracing::debug!("an upstream answered with a message hickory cannot parse");
            return self.error(request, rh, ResponseCode::ServFail).await;
        };
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.response_code = up.metadata.response_code;
        meta.recursion_available = up.metadata.recursion_available;
        meta.authentic_data = up.metadata.authentic_data;
        meta.authoritative = up.metadata.authoritative;
        // The upstream's EDNS options come back; the size is the client's.
        let edns = match (&request.edns, up.edns.clone()) {
            (Some(q), Some(mut e)) => {
                e.set_max_payload(q.max_payload().clamp(512, MAX_UDP));
                Some(e)
            }
            (Some(_), None) => answer_edns(request),
            (None, _) => None,
        };
        let mut b = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            b.edns(e);
        }
        let resp = b.build(meta, up.answers.iter(), up.authorities.iter(), std::iter::empty(), up.additionals.iter());
        match rh.send_response(resp).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a forwarded answer");
                failed(request)
            }
        }
    }
}

/// How a forward ended.
#[derive(Clone, Debug)]
pub enum Forwarded {
    /// The upstream's answer, with the client's id.
    Raw(Vec<u8>),
    /// Nobody answered usefully (or forwarding is not allowed): answer this.
    Error(ResponseCode),
}

/// An answer cut to its header and the query's question, TC set.
fn truncated(resp: &[u8], query: &[u8]) -> Vec<u8> {
    let q = crate::forward::question(query).unwrap_or(&[]);
    let mut out = resp[..12].to_vec();
    out[2] |= 0x02;
    out[4..12].copy_from_slice(&[0, u8::from(!q.is_empty()), 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(q);
    out
}

/// The most a UDP answer to `request` may take: the client's EDNS size
/// (at most 4096), or 512 without EDNS.
pub fn udp_limit(request: &Request) -> u16 {
    request.edns.as_ref().map(|e| e.max_payload().clamp(512, MAX_UDP)).unwrap_or(512)
}

fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
}

#[async_trait::async_trait]
impl RequestHandler for Resolver {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut rh: R) -> ResponseInfo {
        match self.decide(request) {
            Decision::Reply(r) => self.send_reply(request, &mut rh, &r).await,
            Decision::Forward => self.forward(request, &mut rh).await,
        }
    }
}
