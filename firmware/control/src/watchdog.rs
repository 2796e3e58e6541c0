//! The hardware watchdog (`/dev/watchdog`): if the daemon hangs, the board reboots.
//!
//! [`Watchdog::open`] opens the device (which arms it), optionally sets the timeout
//! (`WDIOC_SETTIMEOUT`; the driver may round it, so the applied value is kept), and
//! [`Watchdog::pet`] writes to it. On a clean shutdown [`Watchdog::close_cleanly`] writes
//! the magic `'V'` so the kernel disarms it; dropping without that (a crash, a panic)
//! leaves it armed on purpose, and the board resets when the timeout expires. Kernels
//! built with `CONFIG_WATCHDOG_NOWAYOUT` never disarm; that is fine too.
//!
//! Where systemd supervises the daemon, prefer [`crate::notify`] (`WatchdogSec=`) and
//! let systemd own the hardware watchdog (`RuntimeWatchdogSec=`); use this when the
//! daemon runs without systemd or as a second line of defence.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys;

/// Errors from the watchdog device.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// The device could not be opened (missing, or already open: it is single-open).
    #[error("cannot open watchdog {path}")]
    Open {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The driver refused the timeout.
    #[error("cannot set watchdog timeout to {seconds} s on {path}")]
    SetTimeout {
        /// The device.
        path: PathBuf,
        /// The requested timeout.
        seconds: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A write (pet or magic close) failed.
    #[error("cannot write to watchdog {path}")]
    Write {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// An armed hardware watchdog.
#[derive(Debug)]
pub struct Watchdog {
    file: Option<File>,
    path: PathBuf,
    timeout: Option<Duration>,
}

impl Watchdog {
    /// Opens (and so arms) the watchdog; with `timeout`, sets it (whole seconds, at least 1).
    pub fn open(path: impl AsRef<Path>, timeout: Option<Duration>) -> Result<Self, WatchdogError> {
        let path = path.as_ref().to_owned();
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| WatchdogError::Open {
                path: path.clone(),
                source,
            })?;
        let mut dog = Watchdog {
            file: Some(file),
            path,
            timeout: None,
        };
        if let Some(t) = timeout {
            let seconds = t.as_secs().max(1);
            let requested = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
            let applied = dog
                .file
                .as_ref()
                .map(|f| sys::wdioc_settimeout(f, requested))
                .unwrap_or_else(|| Err(io::Error::from(io::ErrorKind::NotConnected)));
            match applied {
                Ok(applied) => {
                    let applied = u64::try_from(applied).unwrap_or(seconds);
                    if applied != seconds {
                        tracing::info!(
                            requested = seconds,
                            applied,
                            "watchdog timeout rounded by driver"
                        );
                    }
                    dog.timeout = Some(Duration::from_secs(applied));
                }
                Err(source) => {
                    // Leave it armed with the driver's default rather than disarm:
                    // the caller decides whether to go on.
                    let path = dog.path.clone();
                    let _ = dog.close_cleanly();
                    return Err(WatchdogError::SetTimeout {
                        path,
                        seconds,
                        source,
                    });
                }
            }
        } else if let Some(f) = dog.file.as_ref() {
            dog.timeout = sys::wdioc_gettimeout(f)
                .ok()
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs);
        }
        Ok(dog)
    }

    /// The timeout in force, when the driver reports it.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// How often to pet: a third of the timeout, so one late tick is survived.
    pub fn pet_interval(&self) -> Option<Duration> {
        self.timeout.map(|t| t / 3)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), WatchdogError> {
        let res = match self.file.as_mut() {
            Some(f) => f.write_all(bytes),
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        };
        res.map_err(|source| WatchdogError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Resets the countdown. Any byte but `'V'` works; a NUL also cancels an earlier
    /// magic close.
    pub fn pet(&mut self) -> Result<(), WatchdogError> {
        self.write(b"\0")
    }

    /// Disarms the watchdog (magic close) and closes it. Use only on a deliberate,
    /// clean shutdown.
    pub fn close_cleanly(mut self) -> Result<(), WatchdogError> {
        let res = self.write(b"V");
        self.file = None;
        res
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if self.file.is_some() {
            tracing::warn!(path = %self.path.display(), "watchdog closed without magic close; the board will reset unless it is reopened");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pets_and_magic_close_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watchdog");
        std::fs::write(&path, b"").unwrap();
        let mut dog = Watchdog::open(&path, None).unwrap();
        assert_eq!(dog.timeout(), None, "a plain file has no timeout ioctl");
        assert_eq!(dog.pet_interval(), None);
        dog.pet().unwrap();
        dog.pet().unwrap();
        dog.close_cleanly().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0V");
    }

    #[test]
    fn drop_without_magic_close_leaves_it_armed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watchdog");
        std::fs::write(&path, b"").unwrap();
        let mut dog = Watchdog::open(&path, None).unwrap();
        dog.pet().unwrap();
        drop(dog);
        assert_eq!(std::fs::read(&path).unwrap(), b"\0");
    }

    #[test]
    fn timeout_on_a_non_watchdog_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watchdog");
        std::fs::write(&path, b"").unwrap();
        let err = Watchdog::open(&path, Some(Duration::from_secs(15))).unwrap_err();
        match err {
            WatchdogError::SetTimeout {
                seconds, source, ..
            } => {
                assert_eq!(seconds, 15);
                assert_eq!(source.raw_os_error(), Some(libc::ENOTTY));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_device_is_an_open_error() {
        let err = Watchdog::open("/nonexistent/watchdog", None).unwrap_err();
        assert!(matches!(err, WatchdogError::Open { .. }));
        assert!(std::error::Error::source(&err).is_some());
    }
}
