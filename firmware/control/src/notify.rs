//! systemd service notification (`sd_notify`) in pure Rust.
//!
//! With `Type=notify` and `WatchdogSec=` in the unit, systemd passes `NOTIFY_SOCKET` (a
//! path, or `@name` for the abstract namespace) and `WATCHDOG_USEC`/`WATCHDOG_PID`. The
//! daemon sends `READY=1` once it runs, `WATCHDOG=1` at least every half of
//! `WATCHDOG_USEC` while its main loop is healthy, `STATUS=...` for `systemctl status`,
//! and `STOPPING=1` on shutdown. Messages are newline-separated `KEY=VALUE` lines in one
//! datagram; values are sanitized so a status text cannot inject other keys.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Errors talking to systemd.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is not a usable address.
    #[error("invalid NOTIFY_SOCKET {0:?}")]
    BadSocket(OsString),
    /// The datagram socket could not be created.
    #[error("cannot create notify socket")]
    Socket(#[source] io::Error),
    /// The message could not be sent.
    #[error("cannot send to NOTIFY_SOCKET {socket:?}")]
    Send {
        /// The address.
        socket: OsString,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `WATCHDOG_USEC` is not a positive integer.
    #[error("invalid WATCHDOG_USEC {0:?}")]
    BadWatchdogUsec(String),
}

/// One `KEY=VALUE` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyState<'a> {
    /// `READY=1`.
    Ready,
    /// `RELOADING=1`.
    Reloading,
    /// `STOPPING=1`.
    Stopping,
    /// `WATCHDOG=1`: the keep-alive ping.
    Watchdog,
    /// `WATCHDOG=trigger`: ask systemd to act as if the watchdog expired.
    WatchdogTrigger,
    /// `STATUS=...`: one line for `systemctl status`.
    Status(&'a str),
    /// `ERRNO=...`.
    Errno(i32),
    /// `EXTEND_TIMEOUT_USEC=...`: more time for start-up or shutdown.
    ExtendTimeout(Duration),
}

/// Renders states as the datagram systemd expects. Newlines in a status become spaces.
pub fn format_states(states: &[NotifyState<'_>]) -> String {
    let mut out = String::new();
    for s in states {
        let line = match s {
            NotifyState::Ready => "READY=1".to_owned(),
            NotifyState::Reloading => "RELOADING=1".to_owned(),
            NotifyState::Stopping => "STOPPING=1".to_owned(),
            NotifyState::Watchdog => "WATCHDOG=1".to_owned(),
            NotifyState::WatchdogTrigger => "WATCHDOG=trigger".to_owned(),
            NotifyState::Status(text) => {
                let clean: String = text
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                format!("STATUS={clean}")
            }
            NotifyState::Errno(e) => format!("ERRNO={e}"),
            NotifyState::ExtendTimeout(d) => format!("EXTEND_TIMEOUT_USEC={}", d.as_micros()),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    name: OsString,
}

impl Notifier {
    /// Uses `$NOTIFY_SOCKET`; `Ok(None)` when not run by systemd with `Type=notify`.
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        Self::from_env_value(std::env::var_os("NOTIFY_SOCKET"))
    }

    /// As [`Notifier::from_env`], with the variable's value given.
    pub fn from_env_value(value: Option<OsString>) -> Result<Option<Self>, NotifyError> {
        match value {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => Self::connect(&v).map(Some),
        }
    }

    /// A notifier for a socket path, or `@name` for an abstract socket.
    pub fn connect(socket: &OsStr) -> Result<Self, NotifyError> {
        let bytes = socket.as_bytes();
        let bad = || NotifyError::BadSocket(socket.to_owned());
        let addr = match bytes.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]).map_err(|_| bad())?,
            Some(b'/') => SocketAddr::from_pathname(socket).map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        let sock = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        Ok(Notifier {
            socket: sock,
            addr,
            name: socket.to_owned(),
        })
    }

    /// Sends states in one datagram.
    pub fn notify(&self, states: &[NotifyState<'_>]) -> Result<(), NotifyError> {
        let msg = format_states(states);
        self.socket
            .send_to_addr(msg.as_bytes(), &self.addr)
            .map(|_| ())
            .map_err(|source| NotifyError::Send {
                socket: self.name.clone(),
                source,
            })
    }

    /// `READY=1`.
    pub fn ready(&self) -> Result<(), NotifyError> {
        self.notify(&[NotifyState::Ready])
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) -> Result<(), NotifyError> {
        self.notify(&[NotifyState::Watchdog])
    }

    /// `STATUS=text`.
    pub fn status(&self, text: &str) -> Result<(), NotifyError> {
        self.notify(&[NotifyState::Status(text)])
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.notify(&[NotifyState::Stopping])
    }
}

/// The watchdog period systemd expects from this process, from `WATCHDOG_USEC` and
/// `WATCHDOG_PID` (which, when set, must be our pid). Ping at half of it.
pub fn watchdog_timeout(
    usec: Option<&str>,
    pid: Option<&str>,
    my_pid: u32,
) -> Result<Option<Duration>, NotifyError> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(my_pid)
    {
        return Ok(None);
    }
    match usec.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(NotifyError::BadWatchdogUsec(
            usec.chars().take(40).collect(),
        )),
        Ok(n) => Ok(Some(Duration::from_micros(n))),
    }
}

/// [`watchdog_timeout`] from this process's environment.
pub fn watchdog_timeout_from_env() -> Result<Option<Duration>, NotifyError> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_timeout(usec.as_deref(), pid.as_deref(), std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::from_env_value(Some(path.clone().into_os_string()))
            .unwrap()
            .unwrap();
        n.ready().unwrap();
        assert_eq!(recv(&server), "READY=1\n");
        n.watchdog().unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1\n");
        n.status("in call: Huyen\nREADY=1").unwrap();
        assert_eq!(recv(&server), "STATUS=in call: Huyen READY=1\n");
        n.notify(&[
            NotifyState::Stopping,
            NotifyState::Errno(5),
            NotifyState::ExtendTimeout(Duration::from_secs(3)),
        ])
        .unwrap();
        assert_eq!(
            recv(&server),
            "STOPPING=1\nERRNO=5\nEXTEND_TIMEOUT_USEC=3000000\n"
        );
        n.stopping().unwrap();
        assert_eq!(recv(&server), "STOPPING=1\n");
        drop(server);
        assert!(matches!(n.ready(), Err(NotifyError::Send { .. })));
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!(
            "diemcau-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::connect(OsStr::new(&format!("@{name}"))).unwrap();
        n.notify(&[NotifyState::Ready, NotifyState::Status("idle")])
            .unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=idle\n");
    }

    #[test]
    fn no_or_bad_socket() {
        assert!(Notifier::from_env_value(None).unwrap().is_none());
        assert!(
            Notifier::from_env_value(Some(OsString::new()))
                .unwrap()
                .is_none()
        );
        for bad in ["relative/path", "x", "@"] {
            // "@" alone is an empty abstract name, which Linux accepts; others are errors.
            let r = Notifier::connect(OsStr::new(bad));
            assert_eq!(r.is_ok(), bad == "@", "{bad}");
        }
        let long = format!("/{}", "a".repeat(200));
        assert!(matches!(
            Notifier::connect(OsStr::new(&long)),
            Err(NotifyError::BadSocket(_))
        ));
    }

    #[test]
    fn watchdog_usec_parsing() {
        assert_eq!(watchdog_timeout(None, None, 1).unwrap(), None);
        assert_eq!(
            watchdog_timeout(Some("30000000"), None, 1).unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_timeout(Some("30000000"), Some("42"), 42).unwrap(),
            Some(Duration::from_secs(30))
        );
        // For another process (inherited environment): not ours.
        assert_eq!(
            watchdog_timeout(Some("30000000"), Some("41"), 42).unwrap(),
            None
        );
        assert_eq!(
            watchdog_timeout(Some("30000000"), Some("x"), 42).unwrap(),
            None
        );
        for bad in ["", "0", "-5", "1e6", "99999999999999999999999"] {
            assert!(watchdog_timeout(Some(bad), None, 1).is_err(), "{bad}");
        }
    }
}
