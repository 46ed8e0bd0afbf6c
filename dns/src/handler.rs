//! The request handler hickory's server calls: one per container (its
//! view), all sharing one [`Shared`] (the current [`Db`] and the
//! forwarder). Our names are answered authoritatively from the view; the
//! rest goes to the container's upstreams.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use hickory_proto::op::{Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::forward::Forwarder;
use crate::records::{Db, Kind, Lookup, ViewId};

/// The largest UDP answer we send (the DNS flag day's 1232 would be too
/// small for large dnsrr answers; 4096 is what resolvers advertise).
const MAX_UDP: u16 = 4096;

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
    let (Some(mname), Some(rname)) = (fqdn("netd.internal"), fqdn("hostmaster.netd.internal")) else {
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

impl Resolver {
    async fn reply<R: ResponseHandler>(
        &self,
        request: &Request,
        rh: &mut R,
        code: ResponseCode,
        answers: &[Record],
        soa: &[Record],
        additionals: &[Record],
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.response_code = code;
        meta.authoritative = code == ResponseCode::NoError || code == ResponseCode::NXDomain;
        meta.recursion_available = true;
        let edns = answer_edns(request);
        let mut b = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            b.edns(e);
        }
        let resp = b.build(meta, answers.iter(), std::iter::empty(), soa.iter(), additionals.iter());
        match rh.send_response(resp).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a DNS answer");
                failed(request)
            }
        }
    }

    async fn error<R: ResponseHandler>(&self, request: &Request, rh: &mut R, code: ResponseCode) -> ResponseInfo {
        self.reply(request, rh, code, &[], &[], &[]).await
    }

    async fn forward<R: ResponseHandler>(&self, request: &Request, rh: &mut R, db: &Db) -> ResponseInfo {
        if !db.may_forward(&self.view) {
            // Containers only on internal networks reach nothing outside,
            // and neither do their names.
            return self.error(request, rh, ResponseCode::Refused).await;
        }
        let upstreams = db.view(&self.view).map(|v| v.upstreams.clone()).unwrap_or_default();
        let raw = match self.shared.forwarder.forward(request.as_slice(), &upstreams).await {
            Ok(raw) => raw,
            Err(crate::DnsError::Busy(n)) => {
                tracing::warn!(limit = n, "too many forwards in flight: refusing");
                return self.error(request, rh, ResponseCode::Refused).await;
            }
            Err(e) => {
                tracing::debug!(view = %self.view.0, error = %e, "forwarding failed");
                return self.error(request, rh, ResponseCode::ServFail).await;
            }
        };
        let Ok(up) = Message::from_vec(&raw) else {
            tracing::debug!("an upstream answered with a malformed message");
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

fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
}

#[async_trait::async_trait]
impl RequestHandler for Resolver {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut rh: R) -> ResponseInfo {
        if request.metadata.op_code != OpCode::Query {
            return self.error(request, &mut rh, ResponseCode::NotImp).await;
        }
        let queries = request.queries.queries();
        if queries.len() != 1 {
            return self.error(request, &mut rh, ResponseCode::FormErr).await;
        }
        let q = &queries[0];
        if q.query_class() != DNSClass::IN {
            return self.error(request, &mut rh, ResponseCode::Refused).await;
        }
        let kind = match q.query_type() {
            RecordType::A => Kind::A,
            RecordType::AAAA => Kind::Aaaa,
            RecordType::ANY => Kind::Any,
            RecordType::PTR => Kind::Ptr,
            RecordType::SRV => Kind::Srv,
            RecordType::AXFR | RecordType::IXFR => {
                return self.error(request, &mut rh, ResponseCode::Refused).await;
            }
            _ => Kind::Other,
        };
        let qname: Name = q.name().into();
        let db = self.shared.db();
        let ttl = db.ttl;
        match db.lookup(&self.view, &qname.to_ascii(), kind) {
            Lookup::Addresses(ips) => {
                let answers: Vec<Record> = ips.into_iter().map(|ip| addr_record(&qname, ttl, ip)).collect();
                self.reply(request, &mut rh, ResponseCode::NoError, &answers, &[], &[]).await
            }
            Lookup::Ptr(target) => {
                let answers: Vec<Record> = fqdn(&target)
                    .map(|t| Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(t))))
                    .into_iter()
                    .collect();
                self.reply(request, &mut rh, ResponseCode::NoError, &answers, &[], &[]).await
            }
            Lookup::Srv(srv, extra) => {
                let answers: Vec<Record> = srv
                    .into_iter()
                    .filter_map(|(prio, weight, port, target)| {
                        let t = fqdn(&target)?;
                        Some(Record::from_rdata(qname.clone(), ttl, RData::SRV(SRV::new(prio, weight, port, t))))
                    })
                    .collect();
                let additionals: Vec<Record> =
                    extra.into_iter().filter_map(|(name, ip)| Some(addr_record(&fqdn(&name)?, ttl, ip))).collect();
                self.reply(request, &mut rh, ResponseCode::NoError, &answers, &[], &additionals).await
            }
            Lookup::NoData { zone } => {
                let soa = soa(&db, &zone);
                self.reply(request, &mut rh, ResponseCode::NoError, &[], &soa, &[]).await
            }
            Lookup::NxDomain { zone } => {
                let soa = soa(&db, &zone);
                self.reply(request, &mut rh, ResponseCode::NXDomain, &[], &soa, &[]).await
            }
            Lookup::Forward => self.forward(request, &mut rh, &db).await,
        }
    }
}
