//! The remote, end to end: a scripted USB RF remote presses OK, the room
//! joins; Mute, the far end hears silence; OK again, the room leaves.
//!
//! The remote is a fake input device read by the real evdev driver: a FIFO
//! named `event0` in a device folder of the test's, beside the recorded
//! sysfs description of a real RF remote (HAOBO 2.4 GHz, from
//! `firmware/control/tests/fixtures`), which the driver classifies as a
//! remote. The test writes `struct input_event` records into the FIFO as the
//! kernel would.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use diemcau_control::evdev::{EV_KEY, EV_SYN, EventLayout, InputEvent, SYN_REPORT};
use diemcau_control::keys::code;
use diemcau_tests::*;

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// A key press and release, as the kernel writes them.
fn press(fifo: &mut std::fs::File, key: u16) -> Result<()> {
    let layout = EventLayout::native();
    let ev = |kind, code, value| InputEvent {
        sec: 0,
        usec: 0,
        kind,
        code,
        value,
    };
    let mut bytes = Vec::new();
    for e in [
        ev(EV_KEY, key, 1),
        ev(EV_SYN, SYN_REPORT, 0),
        ev(EV_KEY, key, 0),
        ev(EV_SYN, SYN_REPORT, 0),
    ] {
        bytes.extend(e.to_bytes(layout));
    }
    fifo.write_all(&bytes)?;
    Ok(())
}

#[test]
fn scripted_remote_joins_mutes_and_leaves() -> Result<()> {
    isolate()?;
    let dir = scratch("remote")?;
    let room = JanusRoom { id: 55, pin: None };
    let janus = Janus::start(&dir.path().join("janus"), std::slice::from_ref(&room))?;

    // The fake remote: /dev/input/event0 and /sys/class/input/event0.
    let dev = dir.path().join("dev-input");
    let sys = dir.path().join("sys-class-input");
    std::fs::create_dir_all(&dev)?;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../firmware/control/tests/fixtures/sysfs/class/input/event0");
    copy_dir(&fixture, &sys.join("event0"))?;
    let node = dev.join("event0");
    nix::unistd::mkfifo(&node, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    // Held open for writing (and reading, so the open does not wait for
    // the daemon): the driver never sees an unplug.
    let mut fifo = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&node)
        .context("remote FIFO")?;

    let mut spec_a = RoomSpec::new("Xa Remote", &janus, &room);
    spec_a.extra_control = format!(
        "remote = true\ninput_dir = \"{}\"\ninput_sysfs = \"{}\"\n",
        dev.display(),
        sys.display()
    );
    let a = Daemon::start(dir.path(), &spec_a)?;
    let b = Daemon::start(dir.path(), &RoomSpec::new("Xa Far", &janus, &room))?;
    b.ctl(CtlCommand::Join)?;
    b.wait_for("B in call", Duration::from_secs(20), |s| {
        s.state == "in_call"
    })?;
    // The driver opens the remote at its first scan.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.log_text().contains("remote connected") {
        ensure!(
            Instant::now() < deadline,
            "remote not opened:\n{}",
            tail(&a.log_text(), 20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // OK joins.
    let t = Instant::now();
    press(&mut fifo, code::KEY_ENTER)?;
    a.wait_for("A in call after OK", Duration::from_secs(20), |s| {
        s.state == "in_call"
    })?;
    let level = |s: &Status| peer(s, "Xa Remote").and_then(|p| p.media.audio_level_db);
    b.wait_for("A audible at B", Duration::from_secs(15), |s| {
        level(s).is_some_and(|db| db > -30.0)
    })?;
    println!("OK -> A heard at B in {:?}", t.elapsed());

    // Volume -: what A's speaker plays of B gets quieter, what A receives
    // does not; Volume + brings it back, bounded at 100 %.
    let speaker = |s: &Status| peer(s, "Xa Far").and_then(|p| p.speaker_level_db);
    let received = |s: &Status| peer(s, "Xa Far").and_then(|p| p.media.audio_level_db);
    let s = a.wait_for("B on A's speaker", Duration::from_secs(15), |s| {
        speaker(s).is_some_and(|db| db > -40.0)
    })?;
    ensure!(
        s.volume_percent == 80,
        "default volume: {}",
        s.volume_percent
    );
    // The level over a full second at this volume.
    std::thread::sleep(Duration::from_millis(1_200));
    let s = a.status()?;
    let (at80, rx80) = (
        speaker(&s).unwrap_or(-100.0),
        received(&s).unwrap_or(-100.0),
    );
    for _ in 0..5 {
        press(&mut fifo, code::KEY_VOLUMEDOWN)?;
    }
    a.wait_for("volume 30 %", Duration::from_secs(3), |s| {
        s.volume_percent == 30
    })?;
    let s = a.wait_for("quieter speaker", Duration::from_secs(5), |s| {
        speaker(s).is_some_and(|db| db < at80 - 12.0)
    })?;
    std::thread::sleep(Duration::from_millis(1_200));
    let s30 = a.status().unwrap_or(s);
    let (at30, rx30) = (
        speaker(&s30).unwrap_or(-100.0),
        received(&s30).unwrap_or(-100.0),
    );
    ensure!(
        (rx30 - rx80).abs() < 3.0,
        "received level moved with the volume: {rx80:.1} -> {rx30:.1} dBFS"
    );
    for _ in 0..4 {
        press(&mut fifo, code::KEY_VOLUMEDOWN)?;
    }
    a.wait_for("volume 0 %: silent speaker", Duration::from_secs(5), |s| {
        s.volume_percent == 0 && speaker(s).is_some_and(|db| db < -60.0)
    })?;
    for _ in 0..12 {
        press(&mut fifo, code::KEY_VOLUMEUP)?;
    }
    let s = a.wait_for("volume 100 %", Duration::from_secs(5), |s| {
        s.volume_percent == 100 && speaker(s).is_some_and(|db| db > at30 + 15.0)
    })?;
    let at100 = speaker(&s).unwrap_or(-100.0);
    println!(
        "speaker level of B at A: 80 % {at80:.1} dBFS, 30 % {at30:.1} dBFS, 0 % silent, \
         100 % {at100:.1} dBFS; received {rx80:.1} / {rx30:.1} dBFS"
    );
    let text = diemcau_daemon::ctl::render(&s);
    ensure!(text.contains("speaker:  100 %"), "{text}");

    // Mute: the far end hears silence.
    press(&mut fifo, code::KEY_MUTE)?;
    ensure!(
        a.wait_for("muted", Duration::from_secs(3), |s| s.muted)
            .is_ok(),
        "Mute key did not mute"
    );
    b.wait_for("silence from A", Duration::from_secs(5), |s| {
        level(s).is_some_and(|db| db < -60.0)
    })?;

    // OK leaves.
    press(&mut fifo, code::KEY_ENTER)?;
    a.wait_for("A idle after OK", Duration::from_secs(10), |s| {
        s.state == "idle"
    })?;
    b.wait_for("A gone at B", Duration::from_secs(10), |s| {
        peer(s, "Xa Remote").is_none()
    })?;
    let log = a.log_text();
    ensure!(!log.contains("panicked"), "{}", tail(&log, 30));
    Ok(())
}
