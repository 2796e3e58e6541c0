//! DNS messages as multicast DNS uses them (RFC 1035 §4, RFC 6762 §18):
//! parsing and encoding, with name compression.
//!
//! Parsing takes untrusted bytes off the network: it never panics, follows
//! compression pointers only backwards (so it always ends), and never
//! allocates more than the packet itself could hold.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

/// Largest mDNS message we read or write (RFC 6762 §17).
pub const MAX_MESSAGE: usize = 9000;

/// Record and query types used here.
pub mod rtype {
    pub const A: u16 = 1;
    pub const PTR: u16 = 12;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const NSEC: u16 = 47;
    /// Query type "any" (RFC 1035 `*`).
    pub const ANY: u16 = 255;
}

/// Class IN.
pub const CLASS_IN: u16 = 1;
/// Query class "any".
pub const CLASS_ANY: u16 = 255;
/// Top bit of a question's class: unicast response wanted (RFC 6762 §5.4).
const QU_BIT: u16 = 0x8000;
/// Top bit of a record's class: cache flush (RFC 6762 §10.2).
const FLUSH_BIT: u16 = 0x8000;

/// Header flags: response.
pub const FLAG_RESPONSE: u16 = 0x8000;
/// Header flags: authoritative answer (set on every mDNS response).
pub const FLAG_AUTHORITATIVE: u16 = 0x0400;

/// A message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message ends early (at byte {0})")]
    Truncated(usize),
    #[error("message of {0} bytes is larger than 9000")]
    TooLarge(usize),
    #[error("section counts promise more than the {0} bytes hold")]
    Counts(usize),
    #[error("bad name at byte {at}: {what}")]
    BadName { at: usize, what: &'static str },
    #[error("bad record at byte {at}: {what}")]
    BadRecord { at: usize, what: &'static str },
}

/// A domain name as a list of labels (without the root). Labels are UTF-8
/// (RFC 6762 §16); comparison ignores ASCII case.
#[derive(Clone, Default)]
pub struct Name {
    labels: Vec<String>,
}

/// A name could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty label")]
    EmptyLabel,
    #[error("label longer than 63 bytes")]
    LongLabel,
    #[error("name longer than 255 bytes")]
    LongName,
}

impl Name {
    /// A name from its labels, checking DNS length limits.
    pub fn from_labels<I, S>(labels: I) -> Result<Name, NameError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let labels: Vec<String> = labels.into_iter().map(Into::into).collect();
        let mut total = 1;
        for l in &labels {
            if l.is_empty() {
                return Err(NameError::EmptyLabel);
            }
            if l.len() > 63 {
                return Err(NameError::LongLabel);
            }
            total += l.len() + 1;
        }
        if total > 255 {
            return Err(NameError::LongName);
        }
        Ok(Name { labels })
    }

    /// `"_diemcau-ops._tcp.local."` → a name (dots always separate labels;
    /// use [`Name::child`] for labels holding dots).
    pub fn from_dotted(s: &str) -> Result<Name, NameError> {
        let s = s.strip_suffix('.').unwrap_or(s);
        if s.is_empty() {
            return Ok(Name::default());
        }
        Name::from_labels(s.split('.'))
    }

    /// `label.self`.
    pub fn child(&self, label: &str) -> Result<Name, NameError> {
        let mut labels = Vec::with_capacity(self.labels.len() + 1);
        labels.push(label.to_owned());
        labels.extend(self.labels.iter().cloned());
        Name::from_labels(labels)
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The first label (an instance or host name), if any.
    pub fn first(&self) -> Option<&str> {
        self.labels.first().map(String::as_str)
    }

    /// The name without its first label.
    pub fn parent(&self) -> Name {
        Name {
            labels: self.labels.iter().skip(1).cloned().collect(),
        }
    }

    fn key(&self) -> Vec<String> {
        self.labels.iter().map(|l| l.to_ascii_lowercase()).collect()
    }

    /// Uncompressed wire form (for comparisons, RFC 6762 §8.2).
    fn wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in &self.labels {
            out.push(l.len() as u8);
            out.extend_from_slice(l.as_bytes());
        }
        out.push(0);
        out
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.labels.len() == other.labels.len()
            && self
                .labels
                .iter()
                .zip(&other.labels)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.labels {
            // Dots inside a label are escaped as in zone files.
            write!(f, "{}.", l.replace('.', "\\."))?;
        }
        if self.labels.is_empty() {
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

/// A question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    /// Class without the QU bit.
    pub qclass: u16,
    /// The QU bit: the querier asks for a unicast answer.
    pub unicast: bool,
}

/// Record data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Ptr(Name),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Name,
    },
    /// The character strings of a TXT record.
    Txt(Vec<Vec<u8>>),
    /// Any other type, kept as bytes.
    Other(Vec<u8>),
}

impl RData {
    /// Uncompressed rdata bytes.
    pub fn wire(&self) -> Vec<u8> {
        match self {
            RData::A(a) => a.octets().to_vec(),
            RData::Ptr(n) => n.wire(),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                let mut v = Vec::new();
                v.extend_from_slice(&priority.to_be_bytes());
                v.extend_from_slice(&weight.to_be_bytes());
                v.extend_from_slice(&port.to_be_bytes());
                v.extend_from_slice(&target.wire());
                v
            }
            RData::Txt(strings) => txt_wire(strings),
            RData::Other(b) => b.clone(),
        }
    }
}

fn txt_wire(strings: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in strings {
        let s = &s[..s.len().min(255)];
        v.push(s.len() as u8);
        v.extend_from_slice(s);
    }
    if v.is_empty() {
        // RFC 6763 §6.1: an empty TXT record holds one empty string.
        v.push(0);
    }
    v
}

/// A resource record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: Name,
    pub rtype: u16,
    /// Class without the cache-flush bit.
    pub class: u16,
    /// The cache-flush bit (unique records, RFC 6762 §10.2).
    pub cache_flush: bool,
    pub ttl: u32,
    pub data: RData,
}

impl Record {
    /// Same name, type, class and data (TTL and flush bit aside).
    pub fn same_data(&self, other: &Record) -> bool {
        self.name == other.name
            && self.rtype == other.rtype
            && self.class == other.class
            && self.data == other.data
    }
}

/// A DNS message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub flags: u16,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Message {
    /// A response as mDNS sends them (QR and AA set).
    pub fn response(id: u16) -> Message {
        Message {
            id,
            flags: FLAG_RESPONSE | FLAG_AUTHORITATIVE,
            ..Default::default()
        }
    }

    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }

    /// OPCODE (0 is a standard query; mDNS ignores anything else).
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }

    /// RCODE (mDNS ignores messages with a non-zero one).
    pub fn rcode(&self) -> u8 {
        (self.flags & 0xF) as u8
    }

    /// Parses a message. Fails on anything malformed; never panics.
    pub fn parse(buf: &[u8]) -> Result<Message, WireError> {
        if buf.len() > MAX_MESSAGE {
            return Err(WireError::TooLarge(buf.len()));
        }
        let mut r = Reader { buf, pos: 0 };
        let id = r.u16()?;
        let flags = r.u16()?;
        let qd = r.u16()? as usize;
        let an = r.u16()? as usize;
        let ns = r.u16()? as usize;
        let ar = r.u16()? as usize;
        // A question takes at least 5 bytes, a record at least 11.
        let room = buf.len() - 12;
        if qd * 5 + (an + ns + ar) * 11 > room {
            return Err(WireError::Counts(buf.len()));
        }
        let mut m = Message {
            id,
            flags,
            questions: Vec::with_capacity(qd),
            answers: Vec::with_capacity(an),
            authorities: Vec::with_capacity(ns),
            additionals: Vec::with_capacity(ar),
        };
        for _ in 0..qd {
            let name = r.name()?;
            let qtype = r.u16()?;
            let class = r.u16()?;
            m.questions.push(Question {
                name,
                qtype,
                qclass: class & !QU_BIT,
                unicast: class & QU_BIT != 0,
            });
        }
        for _ in 0..an {
            m.answers.push(r.record()?);
        }
        for _ in 0..ns {
            m.authorities.push(r.record()?);
        }
        for _ in 0..ar {
            m.additionals.push(r.record()?);
        }
        Ok(m)
    }

    /// Encodes the message, compressing names.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer {
            out: Vec::with_capacity(512),
            names: HashMap::new(),
        };
        w.u16(self.id);
        w.u16(self.flags);
        for n in [
            self.questions.len(),
            self.answers.len(),
            self.authorities.len(),
            self.additionals.len(),
        ] {
            w.u16(n.min(u16::MAX as usize) as u16);
        }
        for q in &self.questions {
            w.name(&q.name);
            w.u16(q.qtype);
            w.u16(q.qclass | if q.unicast { QU_BIT } else { 0 });
        }
        for r in self
            .answers
            .iter()
            .chain(&self.authorities)
            .chain(&self.additionals)
        {
            w.record(r);
        }
        w.out
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(WireError::Truncated(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a name at the current position, following compression
    /// pointers; the position moves past the name as written here.
    fn name(&mut self) -> Result<Name, WireError> {
        let (name, next) = read_name(self.buf, self.pos)?;
        self.pos = next;
        Ok(name)
    }

    fn record(&mut self) -> Result<Record, WireError> {
        let at = self.pos;
        let name = self.name()?;
        let rtype = self.u16()?;
        let class = self.u16()?;
        let ttl = self.u32()?;
        let len = self.u16()? as usize;
        let start = self.pos;
        let rdata = self.bytes(len)?;
        let end = start + len;
        let bad = |what| WireError::BadRecord { at, what };
        let data = match rtype {
            rtype::A => {
                let b: [u8; 4] = rdata.try_into().map_err(|_| bad("A is not 4 bytes"))?;
                RData::A(Ipv4Addr::from(b))
            }
            rtype::PTR => {
                let (n, next) = read_name(self.buf, start)?;
                if next != end {
                    return Err(bad("PTR name does not fill the rdata"));
                }
                RData::Ptr(n)
            }
            rtype::SRV => {
                if len < 7 {
                    return Err(bad("SRV shorter than 7 bytes"));
                }
                let word = |i: usize| u16::from_be_bytes([rdata[i], rdata[i + 1]]);
                let (target, next) = read_name(self.buf, start + 6)?;
                if next != end {
                    return Err(bad("SRV target does not fill the rdata"));
                }
                RData::Srv {
                    priority: word(0),
                    weight: word(2),
                    port: word(4),
                    target,
                }
            }
            rtype::TXT => {
                let mut strings = Vec::new();
                let mut i = 0;
                while i < rdata.len() {
                    let n = rdata[i] as usize;
                    let s = rdata
                        .get(i + 1..i + 1 + n)
                        .ok_or(bad("TXT string runs past the rdata"))?;
                    if n > 0 {
                        strings.push(s.to_vec());
                    }
                    i += 1 + n;
                }
                RData::Txt(strings)
            }
            _ => RData::Other(rdata.to_vec()),
        };
        Ok(Record {
            name,
            rtype,
            class: class & !FLUSH_BIT,
            cache_flush: class & FLUSH_BIT != 0,
            ttl,
            data,
        })
    }
}

/// Reads the name at `pos`; returns it and the position after it (after
/// the first pointer, if any).
fn read_name(buf: &[u8], mut pos: usize) -> Result<(Name, usize), WireError> {
    let mut labels = Vec::new();
    let mut total = 1usize;
    let mut after: Option<usize> = None;
    // Pointers must point before the start of the run being read, so every
    // jump goes strictly backwards and the walk ends.
    let mut limit = pos;
    loop {
        let len = *buf.get(pos).ok_or(WireError::Truncated(pos))?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                pos += 1;
                break;
            }
            0x00 => {
                let n = len as usize;
                let bytes = buf
                    .get(pos + 1..pos + 1 + n)
                    .ok_or(WireError::Truncated(pos))?;
                total += n + 1;
                if total > 255 {
                    return Err(WireError::BadName {
                        at: pos,
                        what: "longer than 255 bytes",
                    });
                }
                let label = std::str::from_utf8(bytes).map_err(|_| WireError::BadName {
                    at: pos,
                    what: "label is not UTF-8",
                })?;
                labels.push(label.to_owned());
                pos += 1 + n;
            }
            0xC0 => {
                let lo = *buf.get(pos + 1).ok_or(WireError::Truncated(pos))?;
                let target = (usize::from(len & 0x3F) << 8) | usize::from(lo);
                if target >= limit {
                    return Err(WireError::BadName {
                        at: pos,
                        what: "compression pointer does not point backwards",
                    });
                }
                if after.is_none() {
                    after = Some(pos + 2);
                }
                limit = target;
                pos = target;
            }
            _ => {
                return Err(WireError::BadName {
                    at: pos,
                    what: "reserved label type",
                });
            }
        }
    }
    Ok((Name { labels }, after.unwrap_or(pos)))
}

struct Writer {
    out: Vec<u8>,
    /// Lower-cased name suffix → offset where it was written.
    names: HashMap<Vec<String>, u16>,
}

impl Writer {
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    fn name(&mut self, n: &Name) {
        let key = n.key();
        for i in 0..key.len() {
            if let Some(&off) = self.names.get(&key[i..]) {
                self.u16(0xC000 | off);
                return;
            }
            if self.out.len() < 0x3FFF {
                self.names.insert(key[i..].to_vec(), self.out.len() as u16);
            }
            let l = &n.labels[i];
            self.out.push(l.len() as u8);
            self.out.extend_from_slice(l.as_bytes());
        }
        self.out.push(0);
    }

    fn record(&mut self, r: &Record) {
        self.name(&r.name);
        self.u16(r.rtype);
        self.u16(r.class | if r.cache_flush { FLUSH_BIT } else { 0 });
        self.out.extend_from_slice(&r.ttl.to_be_bytes());
        let len_at = self.out.len();
        self.u16(0);
        match &r.data {
            RData::Ptr(n) => self.name(n),
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                self.u16(*priority);
                self.u16(*weight);
                self.u16(*port);
                self.name(target);
            }
            d => self.out.extend_from_slice(&d.wire()),
        }
        let len = (self.out.len() - len_at - 2) as u16;
        self.out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_dotted(s).unwrap()
    }

    fn sample() -> Message {
        let inst = n("_diemcau-ops._tcp.local.")
            .child("diemcau-ops (2)")
            .unwrap();
        let mut m = Message::response(0);
        m.questions.push(Question {
            name: n("_diemcau-ops._tcp.local"),
            qtype: rtype::PTR,
            qclass: CLASS_IN,
            unicast: true,
        });
        m.answers.push(Record {
            name: n("_diemcau-ops._tcp.local"),
            rtype: rtype::PTR,
            class: CLASS_IN,
            cache_flush: false,
            ttl: 4500,
            data: RData::Ptr(inst.clone()),
        });
        m.additionals.push(Record {
            name: inst.clone(),
            rtype: rtype::SRV,
            class: CLASS_IN,
            cache_flush: true,
            ttl: 120,
            data: RData::Srv {
                priority: 0,
                weight: 0,
                port: 8080,
                target: n("diemcau-ops.local"),
            },
        });
        m.additionals.push(Record {
            name: inst,
            rtype: rtype::TXT,
            class: CLASS_IN,
            cache_flush: true,
            ttl: 4500,
            data: RData::Txt(vec![b"txtvers=1".to_vec(), b"tls=0".to_vec()]),
        });
        m.additionals.push(Record {
            name: n("diemcau-ops.local"),
            rtype: rtype::A,
            class: CLASS_IN,
            cache_flush: true,
            ttl: 120,
            data: RData::A(Ipv4Addr::new(10, 200, 0, 1)),
        });
        m
    }

    #[test]
    fn round_trip_with_compression() {
        let m = sample();
        let bytes = m.encode();
        let back = Message::parse(&bytes).unwrap();
        assert_eq!(back, m);
        // "_diemcau-ops._tcp.local" is written once, then pointed to.
        let needle = b"\x0c_diemcau-ops";
        let count = bytes.windows(needle.len()).filter(|w| w == needle).count();
        assert_eq!(count, 1, "{bytes:?}");
        assert!(back.questions[0].unicast);
        assert!(back.additionals[0].cache_flush && !back.answers[0].cache_flush);
    }

    #[test]
    fn names_compare_without_case() {
        assert_eq!(n("Diemcau-OPS.Local."), n("diemcau-ops.local"));
        assert_ne!(n("a.local"), n("b.local"));
        assert_eq!(
            n("local.").child("x.y").unwrap().to_string(),
            "x\\.y.local."
        );
        assert_eq!(n("a.b").parent(), n("b"));
        assert!(Name::from_dotted(&"x".repeat(64)).is_err());
        assert!(Name::from_dotted("a..b").is_err());
        let long = vec!["a".repeat(63); 4];
        assert_eq!(Name::from_labels(long), Err(NameError::LongName));
    }

    /// A query as `dig -p 5353 @224.0.0.251 _diemcau-ops._tcp.local PTR`
    /// writes it (id 0x1234, recursion desired, one question), byte by byte.
    #[test]
    fn parses_a_hand_written_query() {
        let mut b = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(b"\x0c_diemcau-ops\x04_tcp\x05local\x00");
        b.extend_from_slice(&[0, 12, 0, 1]);
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.id, 0x1234);
        assert!(!m.is_response());
        assert_eq!(m.opcode(), 0);
        assert_eq!(m.questions.len(), 1);
        let q = &m.questions[0];
        assert_eq!(q.name, n("_diemcau-ops._tcp.local."));
        assert_eq!(
            (q.qtype, q.qclass, q.unicast),
            (rtype::PTR, CLASS_IN, false)
        );
        assert_eq!(m.encode(), b);
    }

    #[test]
    fn rejects_pointer_loops_and_forward_pointers() {
        // Header with one question whose name is a pointer to itself.
        let mut b = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert!(matches!(Message::parse(&b), Err(WireError::BadName { .. })));
        // A label followed by a pointer back to that label: a loop.
        let mut b = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[1, b'a', 0xC0, 12, 0, 1, 0, 1]);
        assert!(Message::parse(&b).is_err());
        // Forward pointer.
        let mut b = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[0xC0, 20, 0, 1, 0, 1, 0, 0, 1, b'a', 0]);
        assert!(Message::parse(&b).is_err());
    }

    #[test]
    fn rejects_bad_counts_and_lengths() {
        assert!(matches!(
            Message::parse(&[0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0]),
            Err(WireError::Counts(12))
        ));
        assert!(matches!(
            Message::parse(&[0, 0, 0]),
            Err(WireError::Truncated(_))
        ));
        assert!(matches!(
            Message::parse(&vec![0; MAX_MESSAGE + 1]),
            Err(WireError::TooLarge(_))
        ));
        // An A record with 3 bytes of data.
        let mut b = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        b.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1, 0, 0, 0, 10, 0, 3, 1, 2, 3]);
        assert!(matches!(
            Message::parse(&b),
            Err(WireError::BadRecord { .. })
        ));
        // A TXT string that runs past its rdata.
        let mut b = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        b.extend_from_slice(&[1, b'a', 0, 0, 16, 0, 1, 0, 0, 0, 10, 0, 2, 5, b'x']);
        assert!(Message::parse(&b).is_err());
        // A label that is not UTF-8.
        let mut b = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[2, 0xFF, 0xFE, 0, 0, 1, 0, 1]);
        assert!(Message::parse(&b).is_err());
    }

    #[test]
    fn every_truncation_of_a_good_message_fails_cleanly() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Message::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn empty_txt_is_one_empty_string() {
        assert_eq!(RData::Txt(vec![]).wire(), vec![0]);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

            #[test]
            fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = Message::parse(&b);
            }

            #[test]
            fn mutated_messages_never_panic(
                flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                cut in any::<usize>(),
            ) {
                let mut b = sample().encode();
                for (i, v) in flips {
                    let i = i % b.len();
                    b[i] = v;
                }
                let cut = cut % (b.len() + 1);
                if let Ok(m) = Message::parse(&b[..cut]) {
                    // Whatever parsed encodes and parses again.
                    let again = Message::parse(&m.encode());
                    prop_assert!(again.is_ok(), "{:?}", again);
                }
            }
        }
    }
}
