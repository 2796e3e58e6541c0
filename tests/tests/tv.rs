//! The TV over HDMI-CEC, end to end: `ctl join` wakes the TV and switches
//! its input to the room (Image View On, Active Source); the TV remote's
//! Select (User Control Pressed) joins the room; an idle room puts the TV
//! to standby after the configured time; the adapter vanishing in the
//! middle of a call and coming back is survived, the TV is shown the call
//! again and its remote works again.
//!
//! The adapter is the daemon's simulated CEC bus (`cec = "sim:DIR"`,
//! `diemcau_control::cec_sim`): the test plays the TV by appending frames
//! to `DIR/rx` and reads what the room sent from `DIR/tx`, both in
//! `cec-ctl` hex notation. Removing `DIR/rx` unplugs the adapter.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use diemcau_control::cec::{CecCommand, PhysicalAddress};
use diemcau_control::cec_sim::parse_line;
use diemcau_tests::*;

/// The TV sends `hex` (one frame) on the bus.
fn tv_sends(dir: &Path, hex: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("rx"))?;
    writeln!(f, "{hex}")?;
    Ok(())
}

/// What the room has sent so far, decoded.
fn sent(dir: &Path) -> Vec<CecCommand> {
    std::fs::read_to_string(dir.join("tx"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| parse_line(l).ok()?.command().ok())
        .collect()
}

/// Waits until the room has sent `want` after the first `after` frames.
fn wait_sent(dir: &Path, after: usize, want: &[CecCommand], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let new: Vec<CecCommand> = sent(dir).into_iter().skip(after).collect();
        if want.iter().all(|w| new.contains(w)) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the TV did not receive {want:?}; it got {new:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tv_wakes_for_the_call_its_remote_joins_and_idle_sends_standby() -> Result<()> {
    isolate()?;
    let dir = scratch("tv")?;
    let room = JanusRoom { id: 66, pin: None };
    let janus = Janus::start(&dir.path().join("janus"), std::slice::from_ref(&room))?;
    let bus = dir.path().join("cec");
    std::fs::create_dir_all(&bus)?;
    std::fs::write(bus.join("rx"), "")?;

    let mut spec = RoomSpec::new("Xa Tivi", &janus, &room);
    spec.extra_control = format!(
        "remote = false\ncec = \"sim:{}\"\ncec_standby_after_secs = 3\n",
        bus.display()
    );
    let a = Daemon::start(dir.path(), &spec)?;
    let s = a.wait_for("CEC connected", Duration::from_secs(10), |s| {
        s.tv.as_ref().is_some_and(|t| t.connected)
    })?;
    let tv = s.tv.clone().unwrap_or_default();
    ensure!(tv.logical_address == Some(4), "{tv:?}");
    ensure!(tv.physical_address.as_deref() == Some("1.0.0.0"), "{tv:?}");
    ensure!(
        std::fs::read_to_string(bus.join("osd_name"))? == "Xa Tivi",
        "OSD name"
    );

    // ctl join: TV on, input to us.
    let wake = [
        CecCommand::ImageViewOn,
        CecCommand::ActiveSource(PhysicalAddress(0x1000)),
    ];
    let before = sent(&bus).len();
    let t = Instant::now();
    a.ctl(CtlCommand::Join)?;
    wait_sent(&bus, before, &wake, Duration::from_secs(3))?;
    println!(
        "ctl join -> Image View On + Active Source in {:?}",
        t.elapsed()
    );
    a.wait_for("in call", Duration::from_secs(20), |s| s.state == "in_call")?;
    a.wait_for("active source", Duration::from_secs(3), |s| {
        s.tv.as_ref().is_some_and(|t| t.active_source)
    })?;

    // In a call: no standby, however long past the idle time.
    let before = sent(&bus).len();
    std::thread::sleep(Duration::from_secs(4));
    ensure!(
        !sent(&bus)
            .into_iter()
            .skip(before)
            .any(|c| c == CecCommand::Standby),
        "standby in a call"
    );

    // Leave; idle for 3 s: standby.
    a.ctl(CtlCommand::Leave)?;
    a.wait_for("idle", Duration::from_secs(10), |s| s.state == "idle")?;
    let idle = Instant::now();
    wait_sent(&bus, before, &[CecCommand::Standby], Duration::from_secs(8))?;
    let after = idle.elapsed();
    println!("idle -> Standby after {after:?} (configured 3 s)");
    ensure!(
        after >= Duration::from_millis(2_500),
        "standby too early: {after:?}"
    );

    // The TV remote's Select (OK): the room joins, and the TV is woken.
    let before = sent(&bus).len();
    tv_sends(&bus, "04:44:00")?;
    tv_sends(&bus, "04:45")?;
    a.wait_for("in call after TV Select", Duration::from_secs(20), |s| {
        s.state == "in_call"
    })?;
    wait_sent(&bus, before, &wake, Duration::from_secs(3))?;

    // The adapter vanishes mid-call and comes back.
    std::fs::remove_file(bus.join("rx"))?;
    a.wait_for("adapter lost", Duration::from_secs(5), |s| {
        s.tv.as_ref()
            .is_some_and(|t| !t.connected && t.problem.is_some())
    })?;
    ensure!(a.status()?.state == "in_call", "the call survives");
    let before = sent(&bus).len();
    std::thread::sleep(Duration::from_millis(1_500));
    std::fs::write(bus.join("rx"), "")?;
    let back = Instant::now();
    a.wait_for("adapter back", Duration::from_secs(10), |s| {
        s.tv.as_ref().is_some_and(|t| t.connected)
    })?;
    println!("adapter back -> connected in {:?}", back.elapsed());
    wait_sent(&bus, before, &wake, Duration::from_secs(3))?;
    // Its remote works again: Select leaves (OK toggles).
    tv_sends(&bus, "04:44:00")?;
    tv_sends(&bus, "04:45")?;
    a.wait_for("idle after TV Select", Duration::from_secs(10), |s| {
        s.state == "idle"
    })?;
    let log = a.log_text();
    ensure!(log.contains("HDMI-CEC adapter lost"), "{}", tail(&log, 30));
    a.check_log()?;
    Ok(())
}
