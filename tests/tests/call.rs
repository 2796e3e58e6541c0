//! A room joins the district conference, end to end: real Janus from
//! Debian, real GStreamer, two `diemcau` daemons on the sim board, all in a
//! private network namespace per test.

use std::time::Duration;

use anyhow::{Result, ensure};
use diemcau_tests::*;

const ROOM: u64 = 1234;

fn room() -> JanusRoom {
    JanusRoom {
        id: ROOM,
        pin: Some("4321".into()),
    }
}

fn frames_from(s: &Status, name: &str) -> u64 {
    peer(s, name).map_or(0, |p| p.media.video_frames)
}

/// Starts Janus and two rooms that both join; returns when each receives
/// video from the other.
fn two_rooms_in_call(name: &str) -> Result<(tempfile::TempDir, Janus, Daemon, Daemon)> {
    isolate()?;
    let dir = scratch(name)?;
    let janus = Janus::start(&dir.path().join("janus"), &[room()])?;
    let a = Daemon::start(dir.path(), &RoomSpec::new("Xa An Binh", &janus, &room()))?;
    let b = Daemon::start(dir.path(), &RoomSpec::new("Xa Tien Phong", &janus, &room()))?;
    a.ctl(CtlCommand::Join)?;
    b.ctl(CtlCommand::Join)?;
    for (d, other) in [(&a, "Xa Tien Phong"), (&b, "Xa An Binh")] {
        d.wait_for("video from the other room", Duration::from_secs(30), |s| {
            s.state == "in_call" && frames_from(s, other) > 0
        })?;
    }
    Ok((dir, janus, a, b))
}

#[test]
fn two_rooms_see_and_hear_each_other() -> Result<()> {
    let (_dir, _janus, a, b) = two_rooms_in_call("two-rooms")?;
    for (d, other) in [(&a, "Xa Tien Phong"), (&b, "Xa An Binh")] {
        let s = d.wait_for(
            "60 decoded frames and audible audio",
            Duration::from_secs(20),
            |s| {
                peer(s, other).is_some_and(|p| {
                    p.media.video_frames >= 60
                        && p.media.audio_level_db.is_some_and(|db| db > -30.0)
                })
            },
        )?;
        let p = peer(&s, other).expect("peer present");
        println!(
            "{} receives {}: {} frames {}x{} {:.0} fps, audio {:.1} dBFS, {:.0} kbit/s, latency p50 {:?} ms",
            d.name,
            other,
            p.media.video_frames,
            p.media.width,
            p.media.height,
            p.media.fps,
            p.media.audio_level_db.unwrap_or(-100.0),
            p.bitrate_kbps,
            p.media.latency_p50_ms
        );
        ensure!(p.media.width == 1280 && p.media.height == 720, "{p:?}");
        ensure!(p.media.latency_samples > 0, "stamps are read: {p:?}");
        // Frames are measured when the display would show them, which is
        // after the 50 ms jitter buffer (regression: the probe once ran
        // before the pipeline's latency was configured and saw ~8 ms).
        ensure!(
            p.media.latency_p50_ms.is_some_and(|ms| ms >= 50),
            "latency includes the jitter buffer: {p:?}"
        );
        ensure!(
            s.send.packets_sent > 0 && s.send_bitrate_kbps > 100.0,
            "{s:?}"
        );
        d.check_log()?;
    }
    Ok(())
}

#[test]
fn muted_room_is_silent_at_the_far_end_and_unmute_brings_it_back() -> Result<()> {
    let (_dir, _janus, a, b) = two_rooms_in_call("mute")?;
    let level = |s: &Status| peer(s, "Xa An Binh").and_then(|p| p.media.audio_level_db);
    b.wait_for("A audible", Duration::from_secs(10), |s| {
        level(s).is_some_and(|db| db > -30.0)
    })?;
    let t = std::time::Instant::now();
    let s = a.ctl(CtlCommand::Mute)?;
    ensure!(s.muted, "A says it is muted: {s:?}");
    let heard = b.wait_for("silence from A", Duration::from_secs(5), |s| {
        level(s).is_some_and(|db| db < -60.0)
    })?;
    println!(
        "mute -> silence at the far end in {:?} ({:?} dBFS)",
        t.elapsed(),
        level(&heard)
    );
    // Muted is not gone: A stays in the call and its video keeps coming.
    let before = frames_from(&heard, "Xa An Binh");
    b.wait_for("A's video while muted", Duration::from_secs(5), |s| {
        frames_from(s, "Xa An Binh") > before + 30
    })?;
    let s = a.ctl(CtlCommand::Mute)?;
    ensure!(!s.muted && s.state == "in_call", "{s:?}");
    b.wait_for("A audible again", Duration::from_secs(5), |s| {
        level(s).is_some_and(|db| db > -30.0)
    })?;
    a.check_log()
}

#[test]
fn leaving_and_rejoining_is_seen_by_the_other_room() -> Result<()> {
    let (_dir, _janus, a, b) = two_rooms_in_call("rejoin")?;
    let s = b.ctl(CtlCommand::Leave)?;
    ensure!(s.state == "leaving" || s.state == "idle", "{s:?}");
    b.wait_for("idle", Duration::from_secs(5), |s| s.state == "idle")?;
    a.wait_for("B gone", Duration::from_secs(10), |s| {
        peer(s, "Xa Tien Phong").is_none()
    })?;
    ensure!(a.status()?.state == "in_call");

    b.ctl(CtlCommand::Join)?;
    a.wait_for("B back with video", Duration::from_secs(20), |s| {
        frames_from(s, "Xa Tien Phong") >= 30
    })?;
    b.wait_for("A's video again", Duration::from_secs(20), |s| {
        frames_from(s, "Xa An Binh") >= 30
    })?;
    a.check_log()?;
    b.check_log()
}

#[test]
fn janus_restart_mid_call_both_rooms_return_by_themselves() -> Result<()> {
    let (_dir, mut janus, mut a, mut b) = two_rooms_in_call("janus-restart")?;
    janus.kill();
    for d in [&a, &b] {
        d.wait_for("the call to drop", Duration::from_secs(10), |s| {
            s.state != "in_call"
        })?;
    }
    std::thread::sleep(Duration::from_secs(2));
    janus.restart()?;
    let t0 = std::time::Instant::now();
    for (d, other) in [(&a, "Xa Tien Phong"), (&b, "Xa An Binh")] {
        d.wait_for("back in call with video", Duration::from_secs(30), |s| {
            s.state == "in_call" && frames_from(s, other) >= 30
        })?;
    }
    println!(
        "both rooms back in the call {:?} after Janus restarted",
        t0.elapsed()
    );
    ensure!(a.alive() && b.alive(), "no daemon restarted");
    let s = a.status()?;
    ensure!(s.last_error.is_some(), "the failure is remembered: {s:?}");
    a.check_log()?;
    b.check_log()
}

#[test]
fn wrong_pin_is_an_error_and_the_daemon_takes_another_join() -> Result<()> {
    isolate()?;
    let dir = scratch("wrong-pin")?;
    let janus = Janus::start(&dir.path().join("janus"), &[room()])?;
    let mut spec = RoomSpec::new("Xa Sai Ma", &janus, &room());
    spec.pin = Some("0000".into());
    let mut bad = Daemon::start(dir.path(), &spec)?;
    bad.ctl(CtlCommand::Join)?;
    let s = bad.wait_for("error state", Duration::from_secs(10), |s| {
        s.state == "error"
    })?;
    let reason = s.reason.clone().unwrap_or_default();
    println!("wrong PIN: {reason}");
    ensure!(reason.to_lowercase().contains("pin"), "{s:?}");
    // It does not retry by itself...
    std::thread::sleep(Duration::from_secs(2));
    let s2 = bad.status()?;
    ensure!(s2.state == "error" && s2.call.is_none(), "{s2:?}");
    // ...but takes another join.
    let s3 = bad.ctl(CtlCommand::Join)?;
    ensure!(s3.state == "joining", "{s3:?}");
    bad.wait_for("error again", Duration::from_secs(10), |s| {
        s.state == "error"
    })?;
    ensure!(bad.alive());
    // A leave from the error state goes back to idle.
    let s4 = bad.ctl(CtlCommand::Leave)?;
    ensure!(s4.state == "idle", "{s4:?}");
    bad.check_log()
}

#[test]
fn malformed_config_exits_non_zero_with_a_clear_message() -> Result<()> {
    let dir = scratch("bad-config")?;
    let cases = [
        ("not toml [", "not valid"),
        (
            "[room]\nname = \"x\"\n[conference]\njanus_url = \"http://x\"\nroom_id = 1\n",
            "conference.janus_url",
        ),
        (
            "[room]\nname = \"x\"\n[conference]\njanus_url = \"ws://x:8188/\"\nroom_id = 0\n",
            "conference.room_id",
        ),
        (
            "[room]\nname = \"x\"\nboard = \"pi9\"\n[conference]\njanus_url = \"ws://x:8188/\"\nroom_id = 1\n",
            "room.board",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text)?;
        let out = std::process::Command::new(daemon_binary()?)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.code() == Some(2), "exit {:?}: {err}", out.status);
        ensure!(
            err.contains(&*path.to_string_lossy()),
            "names the file: {err}"
        );
        ensure!(err.contains(expected), "expected {expected:?} in: {err}");
        ensure!(!err.contains("panicked"), "{err}");
    }
    let out = std::process::Command::new(daemon_binary()?)
        .args(["run", "--config", "/nonexistent/room.toml"])
        .output()?;
    ensure!(out.status.code() == Some(2));
    ensure!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/room.toml"));
    Ok(())
}
