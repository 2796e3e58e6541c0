//! The daemon under supervision, as systemd and the board run it: the
//! notify protocol (`READY=1`, `WATCHDOG=1`, `STATUS=`, `STOPPING=1`) on a
//! real datagram socket, the hardware watchdog driver writing to a stand-in
//! device file (pets, then the magic close on a clean stop), and a GPIO line
//! that cannot be opened failing the start with a clear message.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use diemcau_tests::*;

fn config(dir: &std::path::Path, hardware: &str) -> Result<std::path::PathBuf> {
    let path = dir.join("room.toml");
    std::fs::write(
        &path,
        format!(
            "[room]\nname = \"Xa Supervised\"\nboard = \"sim\"\n\n\
             [conference]\njanus_url = \"ws://127.0.0.1:9/\"\nroom_id = 1\n\n\
             [media]\nvideo_out = \"none\"\naudio_out = \"none\"\n\n\
             [control]\nsocket = \"{}\"\n\n[hardware]\n{hardware}\n",
            dir.join("ctl.sock").display()
        ),
    )?;
    Ok(path)
}

fn recv_until(sock: &UnixDatagram, what: &str, within: Duration) -> Result<Vec<String>> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let done = msg.lines().any(|l| l == what);
                seen.push(msg);
                if done {
                    return Ok(seen);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("no {what} within {within:?}; got {seen:?}")
}

#[test]
fn notify_watchdog_and_clean_stop() -> Result<()> {
    let dir = scratch("supervision")?;
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path)?;
    let dog = dir.path().join("watchdog");
    std::fs::write(&dog, b"")?;
    let cfg = config(dir.path(), &format!("watchdog = \"{}\"\n", dog.display()))?;
    let log = std::fs::File::create(dir.path().join("daemon.log"))?;
    let mut child = Command::new(daemon_binary()?)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        // systemd's WatchdogSec=2: a ping at least every second.
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let pid = child.id();
    let result = (|| -> Result<()> {
        let first = recv_until(&sock, "READY=1", Duration::from_secs(20))?;
        ensure!(
            first.iter().any(|m| m.contains("STATUS=idle")),
            "the first status says idle: {first:?}"
        );
        let t = Instant::now();
        let mut pings = 0;
        while pings < 3 {
            recv_until(&sock, "WATCHDOG=1", Duration::from_secs(3))?;
            pings += 1;
        }
        println!("3 systemd watchdog pings in {:?}", t.elapsed());
        let pets = std::fs::read(&dog)?;
        ensure!(
            pets.len() >= 2 && pets.iter().all(|b| *b == 0),
            "the hardware watchdog is petted with NUL bytes: {pets:?}"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        recv_until(&sock, "STOPPING=1", Duration::from_secs(10))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            ensure!(Instant::now() < deadline, "daemon did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        ensure!(status.success(), "clean exit: {status:?}");
        let last = std::fs::read(&dog)?.last().copied();
        ensure!(
            last == Some(b'V'),
            "a clean stop disarms the watchdog: {last:?}"
        );
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
        .with_context(|| std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default())
}

#[test]
fn missing_gpio_chip_fails_the_start_clearly() -> Result<()> {
    let dir = scratch("supervision-gpio")?;
    let cfg = config(
        dir.path(),
        "gpio_chip = \"/dev/gpiochip-none\"\nstatus_led = 17\n",
    )?;
    let out = Command::new(daemon_binary()?)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "{err}");
    ensure!(
        err.contains("status LED") && err.contains("/dev/gpiochip-none"),
        "says which line of which chip: {err}"
    );
    ensure!(!err.contains("panicked"), "{err}");

    let bad = config(dir.path(), "status_led = -3\n")?;
    let out = Command::new(daemon_binary()?)
        .args(["run", "--config"])
        .arg(&bad)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(2), "{err}");
    ensure!(err.contains("hardware.status_led"), "{err}");
    Ok(())
}
