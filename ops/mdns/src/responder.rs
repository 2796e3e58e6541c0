//! The responder (what `diemcau-ops serve` runs) as a sans-IO state
//! machine: the caller feeds received packets ([`Responder::handle_input`])
//! and the passing of time ([`Responder::handle_timeout`]), and sends what
//! [`Responder::poll_transmit`] gives until it gives nothing; time is an
//! input, so tests run without sockets or clocks.
//!
//! What it does (RFC 6762, RFC 6763):
//! - probes for its instance and host names (three probes 250 ms apart,
//!   §8.1), renaming itself `diemcau-ops (2)` / `diemcau-ops-2.local.` on a
//!   conflict, with the simultaneous-probe tie-break of §8.2;
//! - announces twice, one second apart (§8.3);
//! - answers PTR queries for `_diemcau-ops._tcp.local.` and
//!   `_services._dns-sd._udp.local.`, SRV/TXT for its instance and A for its
//!   host, with SRV, TXT and A as additional records (RFC 6763 §12);
//!   known answers suppress (§7.1); a record is multicast at most once a
//!   second per interface (§6); shared answers wait 20–120 ms (§6);
//!   one-shot queries (source port not 5353) get a unicast answer with the
//!   query id, the question and TTLs of at most 10 s (§6.7), and so do
//!   questions with the QU bit (§5.4);
//! - answers only packets whose source is on the subnet of one of its
//!   interfaces (§11), with the A record of that interface (§15);
//! - sends goodbyes (TTL 0) when stopped (§10.1).
//!
//! Not done: AAAA records and NSEC negative answers (IPv4 only); probes are
//! sent without the QU bit, so a defender's answer is multicast and reaches
//! this socket even when another responder (avahi) shares port 5353.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::service::{SERVICES_META, ServiceInfo, host_name, instance_name, service_type};
use crate::wire::{CLASS_ANY, CLASS_IN, Message, Name, NameError, Question, RData, Record, rtype};

/// The mDNS group.
pub const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// The mDNS port.
pub const MDNS_PORT: u16 = 5353;

/// TTL of records tied to a host's address (SRV, A): RFC 6762 §10.
pub const HOST_TTL: u32 = 120;
/// TTL of the other records (PTR, TXT).
pub const OTHER_TTL: u32 = 4500;
/// Most TTL in an answer to a one-shot query (§6.7).
pub const LEGACY_TTL: u32 = 10;

const PROBE_INTERVAL: Duration = Duration::from_millis(250);
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
const PROBES: u8 = 3;
const ANNOUNCEMENTS: u8 = 2;

/// An IPv4 interface the responder (or browser) works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
}

impl Interface {
    /// Whether `ip` is on this interface's subnet.
    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask);
        u32::from(ip) & m == u32::from(self.addr) & m
    }
}

/// Where a packet goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// To 224.0.0.251:5353 out of the interface with this address.
    Multicast { via: Ipv4Addr },
    /// To one address.
    Unicast(SocketAddrV4),
}

/// A packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: Destination,
    pub payload: Vec<u8>,
}

/// What the responder advertises.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    /// Instance name (`diemcau-ops`), one DNS label of UTF-8.
    pub instance: String,
    /// Host label (`diemcau-ops` for `diemcau-ops.local.`).
    pub host: String,
    /// Port devices connect to.
    pub port: u16,
    pub info: ServiceInfo,
    /// The interfaces to answer on (those the server listens on).
    pub interfaces: Vec<Interface>,
}

/// What became of one received packet (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Malformed(crate::wire::WireError),
    /// Not for us, or not to be answered now; the reason.
    Ignored(&'static str),
    /// A query with nothing we hold.
    NothingToAnswer,
    /// An answer was queued.
    Answered,
    /// Someone else holds our name: renamed or probing again.
    Conflict,
}

/// Things worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponderEvent {
    /// Probing succeeded; the first announcement is out.
    Announced { instance: String, host: String },
    /// A conflict made us take new names.
    Renamed { instance: String, host: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Probing { sent: u8 },
    Announcing { sent: u8 },
    Running,
    Stopped,
}

/// The responder state machine.
#[derive(Debug)]
pub struct Responder {
    cfg: ResponderConfig,
    attempt: u32,
    service: Name,
    meta: Name,
    instance: Name,
    host: Name,
    phase: Phase,
    next: Option<Instant>,
    pending: Vec<(Instant, Transmit)>,
    last_multicast: HashMap<(u32, Name, u16), Instant>,
    conflicts: Vec<Instant>,
    events: Vec<ResponderEvent>,
    rng: u64,
}

impl Responder {
    /// A responder that starts probing at `now`. `seed` feeds the random
    /// delays.
    pub fn new(cfg: ResponderConfig, now: Instant, seed: u64) -> Result<Responder, NameError> {
        let mut r = Responder {
            service: service_type(),
            meta: Name::from_dotted(SERVICES_META)?,
            instance: instance_name(&cfg.instance)?,
            host: host_name(&cfg.host)?,
            cfg,
            attempt: 1,
            phase: Phase::Probing { sent: 0 },
            next: None,
            pending: Vec::new(),
            last_multicast: HashMap::new(),
            conflicts: Vec::new(),
            events: Vec::new(),
            rng: seed | 1,
        };
        // §8.1: wait 0-250 ms before the first probe.
        r.next = Some(now + r.random_ms(0, 250));
        Ok(r)
    }

    /// The instance name now used (after any rename).
    pub fn instance(&self) -> &Name {
        &self.instance
    }

    /// The host name now used.
    pub fn host(&self) -> &Name {
        &self.host
    }

    /// Whether probing is over and the records are being answered.
    pub fn is_advertising(&self) -> bool {
        matches!(self.phase, Phase::Announcing { .. } | Phase::Running)
    }

    /// The next event worth a log line.
    pub fn poll_event(&mut self) -> Option<ResponderEvent> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    /// The next packet due at `now`, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let i = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, (at, _))| *at <= now)
            .min_by_key(|(_, (at, _))| *at)
            .map(|(i, _)| i)?;
        Some(self.pending.remove(i).1)
    }

    /// When [`Responder::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.iter().map(|(at, _)| *at).min();
        match (self.next, pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: probe, announce.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(at) = self.next.filter(|&at| at <= now) {
            match self.phase {
                Phase::Probing { sent } if sent < PROBES => {
                    for i in 0..self.cfg.interfaces.len() {
                        let p = self.probe(i);
                        self.queue(now, Destination::Multicast { via: p.0 }, p.1);
                    }
                    self.phase = Phase::Probing { sent: sent + 1 };
                    self.next = Some(at + PROBE_INTERVAL);
                }
                Phase::Probing { .. } => {
                    self.phase = Phase::Announcing { sent: 0 };
                    self.next = Some(at);
                }
                Phase::Announcing { sent } => {
                    if sent == 0 {
                        self.events.push(ResponderEvent::Announced {
                            instance: self.instance.to_string(),
                            host: self.host.to_string(),
                        });
                    }
                    for i in 0..self.cfg.interfaces.len() {
                        let iface = self.cfg.interfaces[i].clone();
                        let mut m = Message::response(0);
                        m.answers = self.all_records(&iface);
                        for r in &m.answers {
                            self.last_multicast
                                .insert((iface.index, r.name.clone(), r.rtype), now);
                        }
                        self.queue(now, Destination::Multicast { via: iface.addr }, m.encode());
                    }
                    if sent + 1 < ANNOUNCEMENTS {
                        self.phase = Phase::Announcing { sent: sent + 1 };
                        self.next = Some(at + ANNOUNCE_INTERVAL);
                    } else {
                        self.phase = Phase::Running;
                        self.next = None;
                    }
                }
                Phase::Running | Phase::Stopped => self.next = None,
            }
        }
    }

    /// Stops: queues goodbyes (TTL 0) for everything announced.
    pub fn goodbye(&mut self, now: Instant) {
        let announced = self.is_advertising();
        self.phase = Phase::Stopped;
        self.next = None;
        self.pending.clear();
        if !announced {
            return;
        }
        for iface in self.cfg.interfaces.clone() {
            let mut m = Message::response(0);
            m.answers = self.all_records(&iface);
            for r in &mut m.answers {
                r.ttl = 0;
            }
            self.queue(now, Destination::Multicast { via: iface.addr }, m.encode());
        }
    }

    /// A packet arrived from `src`.
    pub fn handle_input(&mut self, now: Instant, packet: &[u8], src: SocketAddrV4) -> Outcome {
        if self.phase == Phase::Stopped {
            return Outcome::Ignored("stopped");
        }
        let m = match Message::parse(packet) {
            Ok(m) => m,
            Err(e) => return Outcome::Malformed(e),
        };
        if m.opcode() != 0 || m.rcode() != 0 {
            return Outcome::Ignored("opcode or rcode not zero");
        }
        let Some(iface) = self
            .cfg
            .interfaces
            .iter()
            .find(|i| i.on_link(*src.ip()))
            .cloned()
        else {
            return Outcome::Ignored("source not on an advertised subnet");
        };
        if m.is_response() {
            return if self.conflicts_with(&m) {
                self.rename(now);
                Outcome::Conflict
            } else {
                Outcome::Ignored("response")
            };
        }
        if let Phase::Probing { .. } = self.phase {
            return if self.lost_tie_break(&m, &iface) {
                // §8.2: defer, probe again in a second.
                self.phase = Phase::Probing { sent: 0 };
                self.next = Some(now + Duration::from_secs(1));
                self.pending.clear();
                Outcome::Conflict
            } else {
                Outcome::Ignored("still probing")
            };
        }
        self.answer(now, &m, src, &iface)
    }

    fn answer(
        &mut self,
        now: Instant,
        m: &Message,
        src: SocketAddrV4,
        iface: &Interface,
    ) -> Outcome {
        let mut answers: Vec<Record> = Vec::new();
        let mut extra: Vec<Record> = Vec::new();
        let mut shared = false;
        for q in &m.questions {
            if q.qclass != CLASS_IN && q.qclass != CLASS_ANY {
                continue;
            }
            let want = |t: u16| q.qtype == t || q.qtype == rtype::ANY;
            if q.name == self.service && want(rtype::PTR) {
                answers.push(self.ptr());
                extra.extend([self.srv(), self.txt(), self.a(iface)]);
                shared = true;
            }
            if q.name == self.meta && want(rtype::PTR) {
                answers.push(self.meta_ptr());
                shared = true;
            }
            if q.name == self.instance {
                if want(rtype::SRV) {
                    answers.push(self.srv());
                    extra.push(self.a(iface));
                }
                if want(rtype::TXT) {
                    answers.push(self.txt());
                }
            }
            if q.name == self.host && want(rtype::A) {
                answers.push(self.a(iface));
            }
        }
        // §7.1: the querier already holds these with at least half the TTL.
        answers.retain(|a| {
            !m.answers
                .iter()
                .any(|k| k.same_data(a) && k.ttl >= a.ttl / 2)
        });
        dedup(&mut answers);
        dedup(&mut extra);
        extra.retain(|e| !answers.iter().any(|a| a.same_data(e)));
        if answers.is_empty() {
            return Outcome::NothingToAnswer;
        }
        if src.port() != crate::responder::MDNS_PORT {
            // §6.7: a one-shot (legacy) query.
            let mut r = Message::response(m.id);
            r.questions = m
                .questions
                .iter()
                .map(|q| Question {
                    unicast: false,
                    ..q.clone()
                })
                .collect();
            for rec in answers.iter_mut().chain(extra.iter_mut()) {
                rec.ttl = rec.ttl.min(LEGACY_TTL);
                rec.cache_flush = false;
            }
            r.answers = answers;
            r.additionals = extra;
            self.queue(now, Destination::Unicast(src), r.encode());
            return Outcome::Answered;
        }
        if m.questions.iter().all(|q| q.unicast) {
            let mut r = Message::response(0);
            r.answers = answers;
            r.additionals = extra;
            self.queue(now, Destination::Unicast(src), r.encode());
            return Outcome::Answered;
        }
        // §6: at most once a second per record and interface (a quarter of
        // that when defending our names against a probe).
        let min = if m.authorities.is_empty() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(250)
        };
        answers.retain(|a| {
            self.last_multicast
                .get(&(iface.index, a.name.clone(), a.rtype))
                .is_none_or(|&t| now.saturating_duration_since(t) >= min)
        });
        if answers.is_empty() {
            return Outcome::Ignored("answered on this interface less than a second ago");
        }
        let at = if shared {
            now + self.random_ms(20, 120)
        } else {
            now
        };
        for r in answers.iter().chain(&extra) {
            self.last_multicast
                .insert((iface.index, r.name.clone(), r.rtype), at);
        }
        let mut r = Message::response(0);
        r.answers = answers;
        r.additionals = extra;
        self.queue(at, Destination::Multicast { via: iface.addr }, r.encode());
        Outcome::Answered
    }

    /// A response carries a record for one of our unique names with other
    /// data than ours (§9; identical data is no conflict, §8.1).
    fn conflicts_with(&self, m: &Message) -> bool {
        let mine: Vec<Ipv4Addr> = self.cfg.interfaces.iter().map(|i| i.addr).collect();
        let (srv, txt) = (self.srv(), self.txt());
        m.answers
            .iter()
            .chain(&m.authorities)
            .chain(&m.additionals)
            .filter(|r| r.ttl > 0)
            .any(|r| {
                if r.name == self.instance {
                    (r.rtype == rtype::SRV && r.data != srv.data)
                        || (r.rtype == rtype::TXT && r.data != txt.data)
                } else if r.name == self.host {
                    matches!(r.data, RData::A(a) if !mine.contains(&a))
                } else {
                    false
                }
            })
    }

    /// §8.2: a probe for one of our names from someone else with
    /// lexicographically later data wins.
    fn lost_tie_break(&self, m: &Message, iface: &Interface) -> bool {
        if m.authorities.is_empty() {
            return false;
        }
        let ours = self.probe_records(iface);
        for name in [&self.instance, &self.host] {
            let key = |r: &Record| (r.class, r.rtype, r.data.wire());
            let mut theirs: Vec<_> = m
                .authorities
                .iter()
                .filter(|r| &r.name == name)
                .map(key)
                .collect();
            if theirs.is_empty() {
                continue;
            }
            let mut mine: Vec<_> = ours.iter().filter(|r| &r.name == name).map(key).collect();
            theirs.sort();
            mine.sort();
            if mine < theirs {
                return true;
            }
        }
        false
    }

    fn rename(&mut self, now: Instant) {
        self.conflicts
            .retain(|&t| now.saturating_duration_since(t) < Duration::from_secs(10));
        self.conflicts.push(now);
        self.attempt += 1;
        let n = self.attempt;
        let instance = format!("{} ({n})", self.cfg.instance);
        let host = format!("{}-{n}", self.cfg.host);
        match (instance_name(&instance), host_name(&host)) {
            (Ok(i), Ok(h)) => {
                self.instance = i;
                self.host = h;
            }
            _ => {
                // Names too long to number: keep them, probe again later.
            }
        }
        self.events.push(ResponderEvent::Renamed {
            instance: self.instance.to_string(),
            host: self.host.to_string(),
        });
        self.phase = Phase::Probing { sent: 0 };
        self.pending.clear();
        // §8.1: after 15 conflicts in 10 s, wait 5 s before probing again.
        let wait = if self.conflicts.len() > 15 {
            Duration::from_secs(5)
        } else {
            self.random_ms(0, 250)
        };
        self.next = Some(now + wait);
    }

    fn queue(&mut self, at: Instant, to: Destination, payload: Vec<u8>) {
        self.pending.push((at, Transmit { to, payload }));
    }

    fn probe(&self, i: usize) -> (Ipv4Addr, Vec<u8>) {
        let iface = &self.cfg.interfaces[i];
        let mut m = Message::default();
        for name in [&self.instance, &self.host] {
            m.questions.push(Question {
                name: name.clone(),
                qtype: rtype::ANY,
                qclass: CLASS_IN,
                unicast: false,
            });
        }
        m.authorities = self.probe_records(iface);
        (iface.addr, m.encode())
    }

    fn probe_records(&self, iface: &Interface) -> Vec<Record> {
        vec![self.srv(), self.txt(), self.a(iface)]
    }

    fn all_records(&self, iface: &Interface) -> Vec<Record> {
        vec![
            self.ptr(),
            self.srv(),
            self.txt(),
            self.a(iface),
            self.meta_ptr(),
        ]
    }

    fn ptr(&self) -> Record {
        record(
            &self.service,
            rtype::PTR,
            false,
            OTHER_TTL,
            RData::Ptr(self.instance.clone()),
        )
    }

    fn meta_ptr(&self) -> Record {
        record(
            &self.meta,
            rtype::PTR,
            false,
            OTHER_TTL,
            RData::Ptr(self.service.clone()),
        )
    }

    fn srv(&self) -> Record {
        record(
            &self.instance,
            rtype::SRV,
            true,
            HOST_TTL,
            RData::Srv {
                priority: 0,
                weight: 0,
                port: self.cfg.port,
                target: self.host.clone(),
            },
        )
    }

    fn txt(&self) -> Record {
        record(
            &self.instance,
            rtype::TXT,
            true,
            OTHER_TTL,
            RData::Txt(self.cfg.info.to_txt()),
        )
    }

    fn a(&self, iface: &Interface) -> Record {
        record(&self.host, rtype::A, true, HOST_TTL, RData::A(iface.addr))
    }

    fn random_ms(&mut self, lo: u64, hi: u64) -> Duration {
        // xorshift64*: plenty for spreading packets in time.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        Duration::from_millis(lo + r % (hi - lo + 1))
    }
}

fn record(name: &Name, rtype: u16, cache_flush: bool, ttl: u32, data: RData) -> Record {
    Record {
        name: name.clone(),
        rtype,
        class: CLASS_IN,
        cache_flush,
        ttl,
        data,
    }
}

fn dedup(v: &mut Vec<Record>) {
    let mut out: Vec<Record> = Vec::with_capacity(v.len());
    for r in v.drain(..) {
        if !out.iter().any(|o| o.same_data(&r)) {
            out.push(r);
        }
    }
    *v = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);

    fn iface() -> Interface {
        Interface {
            name: "veth0".into(),
            index: 7,
            addr: A,
            netmask: Ipv4Addr::new(255, 255, 255, 0),
        }
    }

    fn cfg() -> ResponderConfig {
        ResponderConfig {
            instance: "diemcau-ops".into(),
            host: "diemcau-ops".into(),
            port: 8080,
            info: ServiceInfo::new(1, false),
            interfaces: vec![iface()],
        }
    }

    fn drain(r: &mut Responder, now: Instant) -> Vec<Transmit> {
        let mut v = Vec::new();
        while let Some(t) = r.poll_transmit(now) {
            v.push(t);
        }
        v
    }

    /// Runs the responder through probing and both announcements.
    fn advertising(r: &mut Responder, t0: Instant) -> Instant {
        let mut now = t0;
        for _ in 0..80 {
            r.handle_timeout(now);
            drain(r, now);
            if r.is_advertising() && r.poll_timeout().is_none() {
                return now;
            }
            now += Duration::from_millis(50);
        }
        panic!("never advertised");
    }

    fn query(name: &str, qtype: u16, unicast: bool) -> Message {
        let mut m = Message {
            id: 0x4242,
            ..Default::default()
        };
        m.questions.push(Question {
            name: Name::from_dotted(name).unwrap(),
            qtype,
            qclass: CLASS_IN,
            unicast,
        });
        m
    }

    fn peer(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 2), port)
    }

    #[test]
    fn probes_three_times_then_announces_twice() {
        let t0 = Instant::now();
        let mut r = Responder::new(cfg(), t0, 1).unwrap();
        let mut probes = 0;
        let mut announcements = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(3) {
            r.handle_timeout(now);
            for t in drain(&mut r, now) {
                assert_eq!(t.to, Destination::Multicast { via: A });
                let m = Message::parse(&t.payload).unwrap();
                if m.is_response() {
                    announcements.push((now, m));
                } else {
                    probes += 1;
                    assert_eq!(m.questions[0].qtype, rtype::ANY);
                    assert_eq!(m.authorities.len(), 3);
                }
            }
            now += Duration::from_millis(10);
        }
        assert_eq!(probes, 3);
        assert_eq!(announcements.len(), 2);
        let gap = announcements[1].0 - announcements[0].0;
        assert!(
            gap >= Duration::from_millis(990) && gap <= Duration::from_millis(1010),
            "{gap:?}"
        );
        let first = announcements[0].0 - t0;
        assert!(
            first >= Duration::from_millis(750) && first <= Duration::from_millis(1010),
            "{first:?}"
        );
        let m = &announcements[0].1;
        let types: Vec<u16> = m.answers.iter().map(|a| a.rtype).collect();
        assert_eq!(
            types,
            vec![rtype::PTR, rtype::SRV, rtype::TXT, rtype::A, rtype::PTR]
        );
        assert!(!m.answers[0].cache_flush && m.answers[1].cache_flush);
        assert_eq!(
            r.poll_event(),
            Some(ResponderEvent::Announced {
                instance: "diemcau-ops._diemcau-ops._tcp.local.".into(),
                host: "diemcau-ops.local.".into(),
            })
        );
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn answers_a_one_shot_query_by_unicast_with_everything() {
        let t0 = Instant::now();
        let mut r = Responder::new(cfg(), t0, 2).unwrap();
        let now = advertising(&mut r, t0);
        let q = query("_diemcau-ops._tcp.local.", rtype::PTR, false);
        assert_eq!(
            r.handle_input(now, &q.encode(), peer(40000)),
            Outcome::Answered
        );
        let out = drain(&mut r, now);
        assert_eq!(out.len(), 1, "legacy answers are not delayed");
        assert_eq!(out[0].to, Destination::Unicast(peer(40000)));
        let m = Message::parse(&out[0].payload).unwrap();
        assert_eq!(m.id, 0x4242);
        assert_eq!(m.questions, q.questions);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.additionals.len(), 3);
        assert!(
            m.answers
                .iter()
                .chain(&m.additionals)
                .all(|a| a.ttl <= LEGACY_TTL && !a.cache_flush)
        );
        let srv = m
            .additionals
            .iter()
            .find(|a| a.rtype == rtype::SRV)
            .unwrap();
        assert!(
            matches!(&srv.data, RData::Srv { port: 8080, target, .. } if target.to_string() == "diemcau-ops.local.")
        );
        let a = m.additionals.iter().find(|a| a.rtype == rtype::A).unwrap();
        assert_eq!(a.data, RData::A(A));
    }

    #[test]
    fn multicast_answers_are_delayed_rate_limited_and_known_answers_suppress() {
        let t0 = Instant::now();
        let mut r = Responder::new(cfg(), t0, 3).unwrap();
        let now = advertising(&mut r, t0) + Duration::from_secs(5);
        let q = query("_diemcau-ops._tcp.local.", rtype::PTR, false);
        assert_eq!(
            r.handle_input(now, &q.encode(), peer(5353)),
            Outcome::Answered
        );
        assert!(
            drain(&mut r, now).is_empty(),
            "shared answer waits 20-120 ms"
        );
        let due = r.poll_timeout().unwrap() - now;
        assert!(
            due >= Duration::from_millis(20) && due <= Duration::from_millis(120),
            "{due:?}"
        );
        let out = drain(&mut r, now + Duration::from_millis(120));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, Destination::Multicast { via: A });
        // Asked again at once: not multicast twice within a second.
        let later = now + Duration::from_millis(300);
        assert!(matches!(
            r.handle_input(later, &q.encode(), peer(5353)),
            Outcome::Ignored(_)
        ));
        // A querier that already knows the PTR gets nothing.
        let mut known = q.clone();
        known.answers.push(Record {
            name: Name::from_dotted("_diemcau-ops._tcp.local.").unwrap(),
            rtype: rtype::PTR,
            class: CLASS_IN,
            cache_flush: false,
            ttl: 4000,
            data: RData::Ptr(r.instance().clone()),
        });
        let much_later = now + Duration::from_secs(10);
        assert_eq!(
            r.handle_input(much_later, &known.encode(), peer(5353)),
            Outcome::NothingToAnswer
        );
        // QU questions get a unicast answer.
        let qu = query("diemcau-ops.local.", rtype::A, true);
        assert_eq!(
            r.handle_input(much_later, &qu.encode(), peer(5353)),
            Outcome::Answered
        );
        let out = drain(&mut r, much_later);
        assert_eq!(out[0].to, Destination::Unicast(peer(5353)));
    }

    #[test]
    fn ignores_off_link_sources_and_garbage() {
        let t0 = Instant::now();
        let mut r = Responder::new(cfg(), t0, 4).unwrap();
        let now = advertising(&mut r, t0);
        let q = query("_diemcau-ops._tcp.local.", rtype::PTR, false).encode();
        let far = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 9), 5353);
        assert!(matches!(r.handle_input(now, &q, far), Outcome::Ignored(_)));
        assert!(matches!(
            r.handle_input(now, &[1, 2, 3], peer(5353)),
            Outcome::Malformed(_)
        ));
        let other = query("_printer._tcp.local.", rtype::PTR, false).encode();
        assert_eq!(
            r.handle_input(now, &other, peer(5353)),
            Outcome::NothingToAnswer
        );
        assert!(drain(&mut r, now + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn service_enumeration_and_direct_questions() {
        let t0 = Instant::now();
        let mut r = Responder::new(cfg(), t0, 5).unwrap();
        let now = advertising(&mut r, t0);
        let q = query(SERVICES_META, rtype::PTR, false);
        r.handle_input(now, &q.encode(), peer(1234));
        let m = Message::parse(&drain(&mut r, now)[0].payload).unwrap();
        assert_eq!(m.answers[0].data, RData::Ptr(service_type()));
        let q = query("diemcau-ops._diemcau-ops._tcp.local.", rtype::ANY, false);
        r.handle_input(now, &q.encode(), peer(1234));
        let m = Message::parse(&drain(&mut r, now)[0].payload).unwrap();
        let types: Vec<u16> = m.answers.iter().map(|a| a.rtype).collect();
        assert_eq!(types, vec![rtype::SRV, rtype::TXT]);
        assert_eq!(m.additionals[0].rtype, rtype::A);
    }

    #[test]
    fn renames_on_conflict_and_probes_again() {
        let t0 = Instant::now();
        let mut r = Responder::new(cfg(), t0, 6).unwrap();
        r.handle_timeout(t0 + Duration::from_millis(250));
        drain(&mut r, t0 + Duration::from_millis(250));
        // Another host answers for diemcau-ops.local. with its own address.
        let mut other = Message::response(0);
        other.answers.push(record(
            r.host(),
            rtype::A,
            true,
            120,
            RData::A(Ipv4Addr::new(10, 200, 0, 9)),
        ));
        let now = t0 + Duration::from_millis(300);
        assert_eq!(
            r.handle_input(now, &other.encode(), peer(5353)),
            Outcome::Conflict
        );
        assert_eq!(r.host().to_string(), "diemcau-ops-2.local.");
        assert_eq!(
            r.instance().to_string(),
            "diemcau-ops (2)._diemcau-ops._tcp.local."
        );
        assert!(matches!(
            r.poll_event(),
            Some(ResponderEvent::Renamed { .. })
        ));
        assert!(!r.is_advertising());
        advertising(&mut r, now);
        // Our own announcement echoed back is no conflict.
        let mut echo = Message::response(0);
        echo.answers = r.all_records(&iface());
        assert_eq!(
            r.handle_input(now, &echo.encode(), SocketAddrV4::new(A, 5353)),
            Outcome::Ignored("response")
        );
    }

    #[test]
    fn simultaneous_probe_tie_break() {
        let t0 = Instant::now();
        let mut r = Responder::new(cfg(), t0, 7).unwrap();
        r.handle_timeout(t0 + Duration::from_millis(250));
        drain(&mut r, t0 + Duration::from_millis(250));
        // A probe for the same host name with a later address wins.
        let mut probe = query("diemcau-ops.local.", rtype::ANY, false);
        probe.authorities.push(record(
            r.host(),
            rtype::A,
            true,
            120,
            RData::A(Ipv4Addr::new(10, 200, 0, 200)),
        ));
        let now = t0 + Duration::from_millis(300);
        assert_eq!(
            r.handle_input(now, &probe.encode(), peer(5353)),
            Outcome::Conflict
        );
        assert_eq!(r.poll_timeout(), Some(now + Duration::from_secs(1)));
        // An earlier address loses against us.
        let mut probe = query("diemcau-ops.local.", rtype::ANY, false);
        probe.authorities.push(record(
            r.host(),
            rtype::A,
            true,
            120,
            RData::A(Ipv4Addr::new(10, 200, 0, 0)),
        ));
        assert!(matches!(
            r.handle_input(now, &probe.encode(), peer(5353)),
            Outcome::Ignored(_)
        ));
        // Our own probe echoed back is a tie: nothing happens.
        let (_, own) = r.probe(0);
        assert!(matches!(
            r.handle_input(now, &own, SocketAddrV4::new(A, 5353)),
            Outcome::Ignored(_)
        ));
    }

    #[test]
    fn goodbye_has_ttl_zero_and_then_silence() {
        let t0 = Instant::now();
        let mut r = Responder::new(cfg(), t0, 8).unwrap();
        let now = advertising(&mut r, t0);
        drain(&mut r, now);
        r.goodbye(now);
        let out = drain(&mut r, now);
        assert_eq!(out.len(), 1);
        let m = Message::parse(&out[0].payload).unwrap();
        assert!(m.answers.iter().all(|a| a.ttl == 0));
        let q = query("_diemcau-ops._tcp.local.", rtype::PTR, false).encode();
        assert!(matches!(
            r.handle_input(now, &q, peer(1234)),
            Outcome::Ignored(_)
        ));
        // Stopping before probing ended sends nothing.
        let mut r = Responder::new(cfg(), t0, 9).unwrap();
        r.goodbye(t0);
        assert!(drain(&mut r, t0).is_empty());
    }

    #[test]
    fn answers_with_the_address_of_the_querier_interface() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.interfaces.push(Interface {
            name: "eth1".into(),
            index: 9,
            addr: Ipv4Addr::new(192, 168, 50, 1),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
        });
        let mut r = Responder::new(c, t0, 10).unwrap();
        let now = advertising(&mut r, t0);
        let q = query("diemcau-ops.local.", rtype::A, false).encode();
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, 77), 40000);
        r.handle_input(now, &q, src);
        let m = Message::parse(&drain(&mut r, now)[0].payload).unwrap();
        assert_eq!(m.answers[0].data, RData::A(Ipv4Addr::new(192, 168, 50, 1)));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_packet_is_handled_without_panic(
                b in proptest::collection::vec(any::<u8>(), 0..400),
                port in any::<u16>(),
            ) {
                let t0 = Instant::now();
                let mut r = Responder::new(cfg(), t0, 11).unwrap();
                let now = advertising(&mut r, t0);
                let _ = r.handle_input(now, &b, peer(port));
                // Also a valid header and questions with random tails.
                let mut q = query("_diemcau-ops._tcp.local.", rtype::PTR, false).encode();
                q.extend_from_slice(&b);
                let _ = r.handle_input(now, &q, peer(port));
                drain(&mut r, now + Duration::from_secs(1));
            }
        }
    }
}
