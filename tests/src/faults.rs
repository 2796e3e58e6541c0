//! Faults that are not on the network path: name resolution and the wall
//! clock, each made to fail for one test only, without touching the
//! machine.
//!
//! Names: [`private_mounts`] gives the test thread (and every process it
//! starts afterwards) a mount namespace of its own with private
//! propagation, and [`overlay_file`] bind-mounts a scratch file over
//! `/etc/hosts` or `/etc/resolv.conf` there. glibc reads `/etc/hosts` on
//! every lookup, so writing the scratch file in place is seen by the next
//! lookup of a daemon that is already running. [`DnsStub`] is a name server
//! on 127.0.0.1 inside the test's network namespace that answers every
//! query "no such name" and counts them, so a test sees how often a daemon
//! asks, and no query can go anywhere else ([`nameservers_unroutable`]
//! checks that the machine's own name servers cannot be reached from the
//! namespace).
//!
//! Clock: [`FakeClock`] runs a daemon under libfaketime (`faketime`
//! package) with `DONT_FAKE_MONOTONIC=1`: only its wall clock moves, by an
//! offset read from a file the test rewrites while the daemon runs.

use std::fs;
use std::io::Write as _;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::run;

/// Moves the calling thread into a new mount namespace whose mounts do not
/// propagate to (or from) the machine's. Call after [`crate::isolate`].
pub fn private_mounts() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("cannot create a mount namespace (the fault tests need root)")?;
    run("mount", &["--make-rprivate", "/"])?;
    Ok(())
}

/// Bind-mounts `src` over `target` (in the private mount namespace made by
/// [`private_mounts`]).
pub fn overlay_file(src: &Path, target: &str) -> Result<()> {
    let src = src.to_str().context("scratch path is not UTF-8")?;
    run("mount", &["--bind", src, target])?;
    Ok(())
}

/// Appends `line` to `path` in place (a bind mount follows the inode, so
/// the file must not be replaced).
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    writeln!(f, "{line}")?;
    f.sync_all()?;
    Ok(())
}

/// The `nameserver` addresses of `resolv_conf` that the current network
/// namespace has a route to (`ip route get` succeeds) and that are not on
/// loopback: where a lookup could leave the machine. Empty is what a test
/// wants.
pub fn nameservers_unroutable(resolv_conf: &str) -> Result<Vec<String>> {
    let text = fs::read_to_string(resolv_conf).unwrap_or_default();
    let mut routable = Vec::new();
    for ns in text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(str::trim)
    {
        let Ok(ip) = ns.parse::<std::net::IpAddr>() else {
            continue;
        };
        if ip.is_loopback() {
            continue;
        }
        if let Ok(route) = run("ip", &["route", "get", ns]) {
            routable.push(format!("{ns}: {}", route.trim()));
        }
    }
    Ok(routable)
}

/// A name server that answers every query NXDOMAIN, on UDP port 53 of an
/// address in the test's namespace, and remembers the names asked.
pub struct DnsStub {
    queries: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsStub {
    /// Binds `ip:53` (the socket is made in the calling thread, so in its
    /// network namespace) and serves it from a thread.
    pub fn start(ip: &str) -> Result<DnsStub> {
        let sock = UdpSocket::bind((ip, 53)).with_context(|| format!("bind {ip}:53"))?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((name, answer)) = nxdomain(&buf[..n]) {
                    q.lock().unwrap_or_else(|e| e.into_inner()).push(name);
                    let _ = sock.send_to(&answer, from);
                }
            }
        });
        Ok(DnsStub {
            queries,
            stop,
            thread: Some(thread),
        })
    }

    /// The names asked so far (one entry per query: A and AAAA count twice).
    pub fn queries(&self) -> Vec<String> {
        self.queries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for DnsStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The queried name and an NXDOMAIN answer to the DNS query `q`; `None`
/// for anything that is not a one-question query.
fn nxdomain(q: &[u8]) -> Option<(String, Vec<u8>)> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).into_owned());
        i += len;
    }
    let end = i + 4; // QTYPE, QCLASS
    let question = q.get(12..end)?;
    let mut a = Vec::with_capacity(end);
    a.extend_from_slice(&q[..2]); // id
    a.push(0x80 | (q[2] & 0x79)); // QR, opcode, RD
    a.push(0x80 | 3); // RA, NXDOMAIN
    a.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    a.extend_from_slice(question);
    Some((labels.join("."), a))
}

/// libfaketime for one daemon: its wall clock (`CLOCK_REALTIME`, `time`,
/// `gettimeofday`) runs `offset` seconds away from the machine's, the
/// monotonic clock is left alone, and the offset can be changed while it
/// runs (libfaketime rereads the file at most once a second).
pub struct FakeClock {
    file: PathBuf,
    lib: PathBuf,
}

impl FakeClock {
    /// A clock at the machine's time, its offset kept in `dir`.
    pub fn new(dir: &Path) -> Result<FakeClock> {
        let lib = PathBuf::from(format!(
            "/usr/lib/{}-linux-gnu/faketime/libfaketime.so.1",
            std::env::consts::ARCH
        ));
        if !lib.exists() {
            bail!("{} is missing (apt-get install faketime)", lib.display());
        }
        fs::create_dir_all(dir)?;
        let c = FakeClock {
            file: dir.join("faketime.rc"),
            lib,
        };
        c.set_offset(0)?;
        Ok(c)
    }

    /// The environment that puts a process on this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("LD_PRELOAD", self.lib.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_CACHE_DURATION", "1".into()),
            ("DONT_FAKE_MONOTONIC", "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
            ("NO_FAKE_STAT", "1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Moves the wall clock to the machine's time plus `secs` (atomically:
    /// a half-written file would be read as no offset).
    pub fn set_offset(&self, secs: i64) -> Result<()> {
        let tmp = self.file.with_extension("tmp");
        fs::write(&tmp, format!("{secs:+}\n"))?;
        fs::rename(&tmp, &self.file)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nxdomain_answers_the_question_and_refuses_garbage() {
        // id 0x1234, RD, one question: "janus.test" A IN.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x05janus\x04test\x00\x00\x01\x00\x01");
        let (name, a) = nxdomain(&q).expect("answered");
        assert_eq!(name, "janus.test");
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(a[2] & 0x80, 0x80, "a response");
        assert_eq!(a[3] & 0x0f, 3, "NXDOMAIN");
        assert_eq!(&a[12..], &q[12..]);
        assert!(nxdomain(&q[..11]).is_none());
        assert!(nxdomain(&q[..20]).is_none(), "truncated name");
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert!(nxdomain(&resp).is_none(), "not a query");
    }
}
