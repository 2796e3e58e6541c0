//! The emulated boot test for CI: takes a qemu-virt image, pulls the kernel,
//! initramfs and command line out of its boot partition (mtools, no
//! mount), boots it with `qemu-system-aarch64 -M virt` (software
//! emulation, user-mode networking: the host is 10.0.2.2 from the guest,
//! the disk in snapshot mode so the image is not changed), watches the
//! serial console without a keyboard and reports how long each stage took,
//! up to the ready line (`DIEMCAU-READY`, printed once diemcau.service
//! has told systemd it is ready) or a pattern of the caller's choosing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::layout;
use crate::tools::{self, ToolError};

/// Printed on the console by `diemcau-ready.service`.
pub const READY_LINE: &str = "DIEMCAU-READY";

/// How to run the boot.
#[derive(Debug, Clone)]
pub struct BootOptions {
    pub image: PathBuf,
    /// A line containing this ends the test with success.
    pub ready: String,
    pub timeout: Duration,
    pub memory_mib: u32,
    pub smp: u32,
    /// Copy of the whole console output.
    pub console_log: Option<PathBuf>,
    /// Echo console lines to stderr as they come.
    pub echo: bool,
    /// QEMU's `restrict=on`: the guest reaches nothing outside QEMU, not
    /// even the host (for boots that need no district server: nothing the
    /// guest sends, its DNS and NTP included, leaves the machine).
    pub restrict: bool,
}

/// When each stage was seen, in seconds since QEMU started.
#[derive(Debug, Clone, Default)]
pub struct BootTimes {
    pub kernel: Option<f64>,
    pub initramfs: Option<f64>,
    pub root_mounted: Option<f64>,
    pub multi_user: Option<f64>,
    pub ready: Option<f64>,
}

/// Why the boot test failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read the image's partition table")]
    Layout(#[from] layout::LayoutError),
    #[error("cannot take {file} out of the boot partition")]
    Extract {
        file: &'static str,
        #[source]
        source: ToolError,
    },
    #[error("cannot start QEMU")]
    Qemu(#[source] ToolError),
    #[error("cannot start QEMU")]
    Spawn(#[source] std::io::Error),
    #[error(
        "the guest did not print {ready:?} within {secs} s; last stage seen: {last}; last console lines:\n{tail}"
    )]
    Timeout {
        ready: String,
        secs: u64,
        last: String,
        tail: String,
    },
    #[error("the guest failed: {line}\nlast console lines:\n{tail}")]
    Failed { line: String, tail: String },
    #[error("QEMU exited before the guest was ready; last console lines:\n{tail}")]
    Exited { tail: String },
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Lines that end the test with failure at once.
const FATAL: &[&str] = &[
    "Kernel panic",
    "Gave up waiting for root file system device",
    "ALERT! ",
    "You are in emergency mode",
    "Failed to start diemcau.service",
];

fn extract(image: &Path, offset: u64, file: &'static str, out: &Path) -> Result<(), BootError> {
    let err = |source| BootError::Extract { file, source };
    let mut c = tools::cmd("mcopy").map_err(err)?;
    c.env("MTOOLS_SKIP_CHECK", "1")
        .args(["-o", "-n", "-i"])
        .arg(tools::mtools_target(image, offset))
        .arg(format!("::{file}"))
        .arg(out);
    tools::run(c).map_err(err)?;
    Ok(())
}

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM to `timeout`, which passes it on to QEMU and waits for it;
        // SIGKILL would leave QEMU running.
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// Marks a console line with the stage it shows, if any.
pub fn classify(line: &str, t: f64, times: &mut BootTimes) {
    let set = |slot: &mut Option<f64>| {
        if slot.is_none() {
            *slot = Some(t);
        }
    };
    if line.contains("Booting Linux on physical CPU") || line.contains("Linux version") {
        set(&mut times.kernel);
    }
    if line.contains("Run /init as init process") || line.contains("Loading, please wait") {
        set(&mut times.initramfs);
    }
    if line.contains("EXT4-fs (vda2): mounted") || line.contains("Welcome to Debian") {
        set(&mut times.root_mounted);
    }
    if line.contains("Reached target") && line.contains("Multi-User System") {
        set(&mut times.multi_user);
    }
}

/// A guest running under QEMU, its console read line by line. Dropping it
/// stops QEMU. [`Guest::wait_for`] can be called again and again, so a
/// caller can time several stages of one boot (ready, then enrolled, then
/// in the call) while the guest keeps running.
pub struct Guest {
    _qemu: Guard,
    rx: mpsc::Receiver<Option<String>>,
    started: Instant,
    log: Option<std::fs::File>,
    echo: bool,
    exited: bool,
    /// Stages seen so far.
    pub times: BootTimes,
    tail: Vec<String>,
    // Keeps the kernel and initramfs until QEMU has read them.
    _tmp: tempfile::TempDir,
}

impl Guest {
    /// Takes the kernel, initramfs and command line out of the image's boot
    /// partition and starts QEMU (the image is opened in snapshot mode).
    pub fn start(opts: &BootOptions) -> Result<Guest, BootError> {
        let boot = layout::find_boot(&opts.image)?;
        let tmp = tempfile::tempdir().map_err(|source| BootError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        let kernel = tmp.path().join("vmlinuz");
        let initrd = tmp.path().join("initrd.img");
        let cmdline_file = tmp.path().join("cmdline.txt");
        extract(&opts.image, boot.start, "vmlinuz", &kernel)?;
        extract(&opts.image, boot.start, "initrd.img", &initrd)?;
        extract(&opts.image, boot.start, "cmdline.txt", &cmdline_file)?;
        let cmdline = std::fs::read_to_string(&cmdline_file)
            .map_err(|source| BootError::Io {
                path: cmdline_file.clone(),
                source,
            })?
            .trim()
            .to_owned();
        // Status lines on the serial console so the stages can be seen.
        let cmdline = format!("{cmdline} systemd.show_status=1");

        // Under coreutils' `timeout`, so QEMU cannot outlive a boot test
        // that was itself killed (a signal skips the guard that kills it).
        let qemu = tools::which("qemu-system-aarch64").ok_or_else(|| {
            BootError::Qemu(ToolError::Missing {
                tool: "qemu-system-aarch64".into(),
                package: tools::package_of("qemu-system-aarch64"),
            })
        })?;
        let mut c = tools::cmd("timeout").map_err(BootError::Qemu)?;
        // --foreground: QEMU stays in the caller's process group, so a
        // `timeout` or Ctrl-C around the whole test reaches it too.
        c.args(["--foreground", "--kill-after=10"])
            .arg((opts.timeout.as_secs() + 30).to_string())
            .arg(qemu)
            .args(["-M", "virt", "-cpu", "cortex-a72"])
            .args(["-smp", &opts.smp.to_string()])
            .args(["-m", &opts.memory_mib.to_string()])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &cmdline])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,snapshot=on",
                opts.image.display()
            ))
            .args([
                "-netdev",
                if opts.restrict {
                    "user,id=n0,restrict=on"
                } else {
                    "user,id=n0"
                },
                "-device",
                // No option ROM: the kernel is loaded directly, and without
                // ipxe-qemu (a Recommends) QEMU refuses to start for want of it.
                "virtio-net-pci,netdev=n0,romfile=",
            ])
            .args(["-no-reboot"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = Guard(c.spawn().map_err(BootError::Spawn)?);
        let (tx, rx) = mpsc::channel::<Option<String>>();
        let stdout = child.0.stdout.take().expect("piped");
        let stderr = child.0.stderr.take().expect("piped");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let l = strip_ansi(String::from_utf8_lossy(&buf).trim_end());
                        if tx.send(Some(l)).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = tx.send(None);
        });
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx2.send(Some(format!("[qemu] {l}")));
            }
        });
        let log = match &opts.console_log {
            Some(p) => Some(std::fs::File::create(p).map_err(|source| BootError::Io {
                path: p.clone(),
                source,
            })?),
            None => None,
        };
        Ok(Guest {
            _qemu: child,
            rx,
            started,
            log,
            echo: opts.echo,
            exited: false,
            times: BootTimes::default(),
            tail: Vec::new(),
            _tmp: tmp,
        })
    }

    /// Seconds since QEMU started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The last console lines (at most 30).
    pub fn tail(&self) -> String {
        self.tail.join("\n")
    }

    /// Reads the console for up to `timeout`, feeding every line to `f`,
    /// until `f` returns `true` (returns the time, in seconds since QEMU
    /// started) or a fatal line shows.
    pub fn watch(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&str) -> bool,
    ) -> Result<f64, BootError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BootError::Timeout {
                    ready: what.to_owned(),
                    secs: timeout.as_secs(),
                    last: last_stage(&self.times),
                    tail: self.tail(),
                });
            }
            if self.exited {
                return Err(BootError::Exited { tail: self.tail() });
            }
            let line = match self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(Some(l)) => l,
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.exited = true;
                    return Err(BootError::Exited { tail: self.tail() });
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if f("") {
                        return Ok(self.elapsed());
                    }
                    continue;
                }
            };
            let t = self.elapsed();
            if self.echo {
                eprintln!("{t:7.1} | {line}");
            }
            if let Some(f) = self.log.as_mut() {
                let _ = writeln!(f, "{t:7.1} | {line}");
            }
            self.tail.push(line.clone());
            if self.tail.len() > 30 {
                self.tail.remove(0);
            }
            classify(&line, t, &mut self.times);
            if f(&line) {
                return Ok(t);
            }
            if let Some(p) = FATAL.iter().find(|p| line.contains(*p)) {
                tracing::debug!(pattern = p, "fatal console line");
                return Err(BootError::Failed {
                    line,
                    tail: self.tail(),
                });
            }
        }
    }

    /// Waits for a console line containing `pattern`.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<f64, BootError> {
        self.watch(pattern, timeout, |l| !l.is_empty() && l.contains(pattern))
    }

    /// Keeps reading (and logging) the console for `d`, so QEMU's pipe
    /// never fills while the caller waits on something else.
    pub fn pump(&mut self, d: Duration) -> Result<(), BootError> {
        match self.watch("", d, |_| false) {
            Err(BootError::Timeout { .. }) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }

    /// Stops QEMU (also done on drop).
    pub fn stop(self) {}
}

/// Boots the image and waits for the ready line.
pub fn run(opts: &BootOptions) -> Result<BootTimes, BootError> {
    let mut g = Guest::start(opts)?;
    let t = g.wait_for(&opts.ready, opts.timeout)?;
    g.times.ready = Some(t);
    Ok(g.times.clone())
}

/// Removes terminal colour codes (systemd colours its status lines), so
/// patterns such as "Started diemcau.service" match.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn last_stage(t: &BootTimes) -> String {
    if t.multi_user.is_some() {
        "multi-user target reached".into()
    } else if t.root_mounted.is_some() {
        "root file system mounted, systemd starting".into()
    } else if t.initramfs.is_some() {
        "initramfs running".into()
    } else if t.kernel.is_some() {
        "kernel booting".into()
    } else {
        "nothing on the console".into()
    }
}

/// The summary printed at the end.
pub fn summary(t: &BootTimes) -> String {
    let f = |x: Option<f64>| x.map(|v| format!("{v:.1} s")).unwrap_or_else(|| "-".into());
    format!(
        "kernel {} | initramfs {} | root mounted {} | multi-user {} | ready {}\nboot-to-ready under emulation: {}",
        f(t.kernel),
        f(t.initramfs),
        f(t.root_mounted),
        f(t.multi_user),
        f(t.ready),
        f(t.ready)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_removed() {
        assert_eq!(
            strip_ansi("[\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mdiemcau.service\x1b[0m - x"),
            "[  OK  ] Started diemcau.service - x"
        );
    }

    #[test]
    fn stages_are_recognised_once() {
        let mut t = BootTimes::default();
        classify(
            "[    0.000000] Booting Linux on physical CPU 0x0",
            1.0,
            &mut t,
        );
        classify("[    2.1] Run /init as init process", 3.0, &mut t);
        classify("Welcome to Debian GNU/Linux 12 (bookworm)!", 8.0, &mut t);
        classify(
            "[  OK  ] Reached target multi-user.target - Multi-User System.",
            20.0,
            &mut t,
        );
        classify(
            "[  OK  ] Reached target multi-user.target - Multi-User System.",
            30.0,
            &mut t,
        );
        assert_eq!(t.kernel, Some(1.0));
        assert_eq!(t.initramfs, Some(3.0));
        assert_eq!(t.root_mounted, Some(8.0));
        assert_eq!(t.multi_user, Some(20.0));
        assert!(summary(&t).contains("multi-user 20.0 s"));
    }
}
