//! The browser (what a device runs when it has no district URL) as a
//! sans-IO state machine, like the responder.
//!
//! It sends one-shot queries (RFC 6762 §5.1: from an ephemeral port, so
//! answers come back by unicast and no port 5353 is needed on the device)
//! for `_diemcau-ops._tcp.local.` PTR at 0, 1, 3 s and so on, follows up
//! with SRV/TXT and A questions for whatever the answers left out, and
//! reports every instance it could resolve completely. Packets from
//! sources off the subnets of its interfaces are ignored (§11).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::responder::Interface;
use crate::service::{ServiceInfo, TxtError, service_type};
use crate::wire::{CLASS_IN, Message, Name, Question, RData, Record, rtype};

/// Follow-up queries allowed in one browse (bounds the traffic a strange
/// answer can cause).
const MAX_FOLLOWUPS: u32 = 6;
/// Longest gap between two periodic queries.
const MAX_INTERVAL: Duration = Duration::from_secs(4);

/// A resolved instance of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The instance label (`diemcau-ops`).
    pub instance: String,
    /// SRV target (`diemcau-ops.local.`).
    pub host: String,
    pub port: u16,
    /// Addresses of the host, those on one of our subnets first.
    pub addrs: Vec<Ipv4Addr>,
    /// The TXT record, read; `Err` when it is not usable.
    pub info: Result<ServiceInfo, TxtError>,
    /// Who answered.
    pub from: Ipv4Addr,
}

impl Resolved {
    /// `http(s)://ADDR:PORT[prefix]` for the first address, or `None`
    /// without a usable TXT record or address.
    pub fn url(&self) -> Option<String> {
        let info = self.info.as_ref().ok()?;
        let base = info.base_path()?;
        let addr = self.addrs.first()?;
        let scheme = if info.tls { "https" } else { "http" };
        Some(format!("{scheme}://{addr}:{}{base}", self.port))
    }
}

/// The browser state machine.
#[derive(Debug)]
pub struct Browser {
    service: Name,
    interfaces: Vec<Interface>,
    id: u16,
    next_query: Instant,
    interval: Duration,
    followup: bool,
    followups: u32,
    /// Instances in the order first heard of.
    instances: Vec<Name>,
    ptr_ttl: HashMap<Name, u32>,
    srv: HashMap<Name, (u16, Name, Ipv4Addr)>,
    txt: HashMap<Name, Vec<Vec<u8>>>,
    addrs: HashMap<Name, Vec<Ipv4Addr>>,
    /// Packets read and not used (malformed, not an answer, off-link).
    pub dropped: u32,
}

impl Browser {
    /// A browser whose first query is due at `now`. `interfaces` is used to
    /// check answer sources (an empty list accepts any source). `id` is the
    /// query id (random, so stray answers stand out).
    pub fn new(now: Instant, interfaces: Vec<Interface>, id: u16) -> Browser {
        Browser {
            service: service_type(),
            interfaces,
            id,
            next_query: now,
            interval: Duration::from_secs(1),
            followup: false,
            followups: 0,
            instances: Vec::new(),
            ptr_ttl: HashMap::new(),
            srv: HashMap::new(),
            txt: HashMap::new(),
            addrs: HashMap::new(),
            dropped: 0,
        }
    }

    /// When the next periodic query is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_query
    }

    /// The next query to send (to 224.0.0.251:5353 on every interface), if
    /// one is due at `now`.
    pub fn poll_query(&mut self, now: Instant) -> Option<Vec<u8>> {
        let periodic = now >= self.next_query;
        if !periodic && !self.followup {
            return None;
        }
        if periodic {
            self.next_query = now + self.interval;
            self.interval = (self.interval * 2).min(MAX_INTERVAL);
        } else {
            self.followups += 1;
        }
        self.followup = false;
        let q = |name: &Name, qtype| Question {
            name: name.clone(),
            qtype,
            qclass: CLASS_IN,
            unicast: false,
        };
        let mut m = Message {
            id: self.id,
            ..Default::default()
        };
        m.questions.push(q(&self.service, rtype::PTR));
        for inst in &self.instances {
            if !self.srv.contains_key(inst) {
                m.questions.push(q(inst, rtype::SRV));
            }
            if !self.txt.contains_key(inst) {
                m.questions.push(q(inst, rtype::TXT));
            }
            if let Some((_, target, _)) = self.srv.get(inst)
                && self.addrs.get(target).is_none_or(Vec::is_empty)
            {
                m.questions.push(q(target, rtype::A));
            }
            // §7.1: what we know already need not be sent again.
            if let Some(&ttl) = self.ptr_ttl.get(inst) {
                m.answers.push(Record {
                    name: self.service.clone(),
                    rtype: rtype::PTR,
                    class: CLASS_IN,
                    cache_flush: false,
                    ttl,
                    data: RData::Ptr(inst.clone()),
                });
            }
        }
        m.questions.dedup();
        Some(m.encode())
    }

    /// A packet arrived from `src`; returns whether it was used.
    pub fn handle_packet(&mut self, packet: &[u8], src: SocketAddrV4) -> bool {
        let used = self.read(packet, src);
        if !used {
            self.dropped += 1;
        }
        used
    }

    fn read(&mut self, packet: &[u8], src: SocketAddrV4) -> bool {
        let Ok(m) = Message::parse(packet) else {
            return false;
        };
        if !m.is_response() || m.opcode() != 0 || m.rcode() != 0 {
            return false;
        }
        if !self.interfaces.is_empty() && !self.interfaces.iter().any(|i| i.on_link(*src.ip())) {
            return false;
        }
        let mut used = false;
        for r in m.answers.iter().chain(&m.additionals) {
            used |= self.take(r, *src.ip());
        }
        if used && self.followups < MAX_FOLLOWUPS && !self.complete() {
            self.followup = true;
        }
        used
    }

    fn take(&mut self, r: &Record, from: Ipv4Addr) -> bool {
        let gone = r.ttl == 0;
        match &r.data {
            RData::Ptr(inst) if r.name == self.service && inst.parent() == self.service => {
                if gone {
                    self.instances.retain(|i| i != inst);
                    self.srv.remove(inst);
                    self.txt.remove(inst);
                    self.ptr_ttl.remove(inst);
                } else {
                    if !self.instances.contains(inst) {
                        self.instances.push(inst.clone());
                    }
                    self.ptr_ttl.insert(inst.clone(), r.ttl);
                }
                true
            }
            RData::Srv { port, target, .. } if r.name.parent() == self.service => {
                if gone {
                    self.srv.remove(&r.name);
                } else {
                    self.srv
                        .insert(r.name.clone(), (*port, target.clone(), from));
                    if !self.instances.contains(&r.name) {
                        self.instances.push(r.name.clone());
                    }
                }
                true
            }
            RData::Txt(strings) if r.name.parent() == self.service => {
                if gone {
                    self.txt.remove(&r.name);
                } else {
                    self.txt.insert(r.name.clone(), strings.clone());
                }
                true
            }
            RData::A(a) => {
                let list = self.addrs.entry(r.name.clone()).or_default();
                if gone {
                    list.retain(|x| x != a);
                } else if !list.contains(a) {
                    list.push(*a);
                }
                true
            }
            _ => false,
        }
    }

    fn complete(&self) -> bool {
        !self.instances.is_empty()
            && self.instances.iter().all(|i| {
                self.txt.contains_key(i)
                    && self
                        .srv
                        .get(i)
                        .is_some_and(|(_, t, _)| self.addrs.get(t).is_some_and(|a| !a.is_empty()))
            })
    }

    /// Every instance resolved so far (SRV, TXT and an address), in the
    /// order first heard of.
    pub fn resolved(&self) -> Vec<Resolved> {
        let mut out = Vec::new();
        for inst in &self.instances {
            let (Some((port, target, from)), Some(txt)) = (self.srv.get(inst), self.txt.get(inst))
            else {
                continue;
            };
            let Some(addrs) = self.addrs.get(target).filter(|a| !a.is_empty()) else {
                continue;
            };
            let mut addrs = addrs.clone();
            addrs.sort_by_key(|a| !self.interfaces.iter().any(|i| i.on_link(*a)));
            out.push(Resolved {
                instance: inst.first().unwrap_or_default().to_owned(),
                host: target.to_string(),
                port: *port,
                addrs,
                info: ServiceInfo::from_txt(txt),
                from: *from,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responder::{Destination, Responder, ResponderConfig};

    fn iface(addr: [u8; 4]) -> Interface {
        Interface {
            name: "veth1".into(),
            index: 3,
            addr: Ipv4Addr::from(addr),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
        }
    }

    fn responder(t0: Instant) -> (Responder, Instant) {
        let mut r = Responder::new(
            ResponderConfig {
                instance: "diemcau-ops".into(),
                host: "diemcau-ops".into(),
                port: 8080,
                info: ServiceInfo::new(1, false),
                interfaces: vec![iface([10, 200, 0, 1])],
            },
            t0,
            42,
        )
        .unwrap();
        let mut now = t0;
        while !r.is_advertising() {
            r.handle_timeout(now);
            while r.poll_transmit(now).is_some() {}
            now += Duration::from_millis(50);
        }
        (r, now)
    }

    const ME: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 2), 40001);
    const OPS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, 1), 5353);

    #[test]
    fn finds_the_responder_in_one_exchange() {
        let t0 = Instant::now();
        let (mut r, now) = responder(t0);
        let mut b = Browser::new(now, vec![iface([10, 200, 0, 2])], 7);
        let q = b.poll_query(now).unwrap();
        assert!(b.poll_query(now).is_none(), "one query at a time");
        r.handle_input(now, &q, ME);
        let t = r.poll_transmit(now).unwrap();
        assert_eq!(t.to, Destination::Unicast(ME));
        assert!(b.handle_packet(&t.payload, OPS));
        let found = b.resolved();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].url().as_deref(), Some("http://10.200.0.1:8080"));
        assert_eq!(found[0].instance, "diemcau-ops");
        assert!(b.poll_query(now).is_none(), "complete: no follow-up");
    }

    #[test]
    fn follows_up_on_a_bare_ptr_answer() {
        let now = Instant::now();
        let mut b = Browser::new(now, vec![], 1);
        b.poll_query(now).unwrap();
        let inst = crate::service::instance_name("hop").unwrap();
        let mut m = Message::response(0);
        m.answers.push(Record {
            name: service_type(),
            rtype: rtype::PTR,
            class: CLASS_IN,
            cache_flush: false,
            ttl: 4500,
            data: RData::Ptr(inst.clone()),
        });
        assert!(b.handle_packet(&m.encode(), OPS));
        let q = Message::parse(&b.poll_query(now).unwrap()).unwrap();
        let asked: Vec<u16> = q.questions.iter().map(|q| q.qtype).collect();
        assert_eq!(asked, vec![rtype::PTR, rtype::SRV, rtype::TXT]);
        assert_eq!(q.answers.len(), 1, "known answer listed");
        // SRV and TXT come, the address does not: ask for A.
        let target = Name::from_dotted("hop.local.").unwrap();
        let mut m = Message::response(0);
        m.answers.push(Record {
            name: inst.clone(),
            rtype: rtype::SRV,
            class: CLASS_IN,
            cache_flush: true,
            ttl: 120,
            data: RData::Srv {
                priority: 0,
                weight: 0,
                port: 443,
                target: target.clone(),
            },
        });
        m.answers.push(Record {
            name: inst,
            rtype: rtype::TXT,
            class: CLASS_IN,
            cache_flush: true,
            ttl: 4500,
            data: RData::Txt(ServiceInfo::new(1, true).to_txt()),
        });
        b.handle_packet(&m.encode(), OPS);
        let q = Message::parse(&b.poll_query(now).unwrap()).unwrap();
        assert!(
            q.questions
                .iter()
                .any(|q| q.qtype == rtype::A && q.name == target)
        );
        let mut m = Message::response(0);
        m.answers.push(Record {
            name: target,
            rtype: rtype::A,
            class: CLASS_IN,
            cache_flush: true,
            ttl: 120,
            data: RData::A(Ipv4Addr::new(10, 200, 0, 1)),
        });
        b.handle_packet(&m.encode(), OPS);
        assert_eq!(
            b.resolved()[0].url().as_deref(),
            Some("https://10.200.0.1:443")
        );
    }

    #[test]
    fn periodic_queries_back_off_and_follow_ups_are_bounded() {
        let t0 = Instant::now();
        let mut b = Browser::new(t0, vec![], 1);
        let mut sent = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(8) {
            if b.poll_query(now).is_some() {
                sent.push((now - t0).as_millis() / 100);
            }
            now += Duration::from_millis(100);
        }
        assert_eq!(sent, vec![0, 10, 30, 70]);
        // A flood of useless-but-parsable answers causes at most 6 follow-ups.
        let inst = crate::service::instance_name("x").unwrap();
        let mut m = Message::response(0);
        m.answers.push(Record {
            name: service_type(),
            rtype: rtype::PTR,
            class: CLASS_IN,
            cache_flush: false,
            ttl: 10,
            data: RData::Ptr(inst),
        });
        let mut follow = 0;
        for _ in 0..50 {
            b.handle_packet(&m.encode(), OPS);
            if b.poll_query(now).is_some() {
                follow += 1;
            }
        }
        assert_eq!(follow, MAX_FOLLOWUPS);
    }

    #[test]
    fn drops_queries_garbage_and_off_link_answers() {
        let t0 = Instant::now();
        let (mut r, now) = responder(t0);
        let mut b = Browser::new(now, vec![iface([10, 200, 0, 2])], 7);
        let q = b.poll_query(now).unwrap();
        assert!(!b.handle_packet(&q, OPS), "a query is not an answer");
        assert!(!b.handle_packet(&[0xFF; 40], OPS));
        r.handle_input(now, &q, ME);
        let t = r.poll_transmit(now).unwrap();
        let far = SocketAddrV4::new(Ipv4Addr::new(8, 8, 8, 8), 5353);
        assert!(!b.handle_packet(&t.payload, far));
        assert!(b.resolved().is_empty());
        assert_eq!(b.dropped, 3);
    }

    #[test]
    fn goodbye_forgets_the_instance() {
        let t0 = Instant::now();
        let (mut r, now) = responder(t0);
        let mut b = Browser::new(now, vec![], 7);
        let q = b.poll_query(now).unwrap();
        r.handle_input(now, &q, ME);
        b.handle_packet(&r.poll_transmit(now).unwrap().payload, OPS);
        assert_eq!(b.resolved().len(), 1);
        r.goodbye(now);
        b.handle_packet(&r.poll_transmit(now).unwrap().payload, OPS);
        assert!(b.resolved().is_empty());
    }

    #[test]
    fn unusable_txt_is_reported_not_used() {
        let r = Resolved {
            instance: "x".into(),
            host: "x.local.".into(),
            port: 1,
            addrs: vec![Ipv4Addr::LOCALHOST],
            info: Err(TxtError::NoVersion),
            from: Ipv4Addr::LOCALHOST,
        };
        assert_eq!(r.url(), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_packet_is_handled_without_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
                let now = Instant::now();
                let mut br = Browser::new(now, vec![], 1);
                br.handle_packet(&b, OPS);
                let mut m = Message::response(0).encode();
                m.extend_from_slice(&b);
                br.handle_packet(&m, OPS);
                let _ = br.resolved();
                let _ = br.poll_query(now);
            }
        }
    }
}
