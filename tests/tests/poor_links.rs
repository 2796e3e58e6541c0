//! Calls over a poor link, end to end: Janus and a clean room on one side
//! of a shaped veth, the room under test on the other ([`netlab`]). The
//! link is limited with `tbf`, made lossy with nftables `numgen random`
//! drops, or cut outright, in both directions.
//!
//! "A" is the room behind the shaped link; "B" is a clean room next to
//! Janus. B receiving A measures A's uplink; A receiving B measures A's
//! downlink. Each test is bounded well under 90 s and needs root.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use diemcau_tests::netlab::Netlab;
use diemcau_tests::*;

const ROOM: u64 = 4242;
const A: &str = "Xa Nui Cao";
const B: &str = "Huyen Trung Tam";

fn room() -> JanusRoom {
    JanusRoom {
        id: ROOM,
        pin: None,
    }
}

/// One call across the lab. Fields drop in order: daemons, Janus, the
/// namespaces, the scratch folder.
struct Call {
    a: Daemon,
    b: Daemon,
    janus: Janus,
    lab: Netlab,
    _dir: tempfile::TempDir,
}

/// Starts the lab, Janus, A behind the link and B beside Janus, and joins
/// both; returns once each decodes the other's video.
fn call(name: &str) -> Result<Call> {
    let dir = scratch(name)?;
    let lab = Netlab::new()?;
    let janus = lab.start_janus(&dir.path().join("janus"), &[room()])?;
    let a = lab.start_shaped_room(dir.path(), &RoomSpec::new(A, &janus, &room()))?;
    let b = lab.start_clean_room(dir.path(), &RoomSpec::new(B, &janus, &room()))?;
    a.ctl(CtlCommand::Join)?;
    b.ctl(CtlCommand::Join)?;
    for (d, other) in [(&a, B), (&b, A)] {
        d.wait_for("video from the other room", Duration::from_secs(30), |s| {
            s.state == "in_call" && frames(s, other) > 0
        })?;
    }
    Ok(Call {
        a,
        b,
        janus,
        lab,
        _dir: dir,
    })
}

fn frames(s: &Status, from: &str) -> u64 {
    peer(s, from).map_or(0, |p| p.media.video_frames)
}

fn samples(s: &Status, from: &str) -> u64 {
    peer(s, from).map_or(0, |p| p.media.audio_samples)
}

/// What `d` received from `from` over a window.
struct Window {
    fps: f64,
    width: u32,
    height: u32,
    audio_ratio: f64,
    packets_lost: i64,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} fps at {}x{}, audio {:.1} % of expected, {} packets lost",
            self.fps,
            self.width,
            self.height,
            self.audio_ratio * 100.0,
            self.packets_lost
        )
    }
}

/// The status just after the daemon's next refresh of its per-peer
/// counters (once a second), and when it was seen: a window between two
/// refreshes spans whole refresh periods, so its rates carry no error of a
/// refresh more or less (±7 % over 15 s).
fn at_refresh(d: &Daemon, from: &str) -> Result<(Status, Instant)> {
    let before = samples(&d.status()?, from);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = d.status()?;
        if samples(&s, from) != before {
            return Ok((s, Instant::now()));
        }
        ensure!(
            Instant::now() < deadline,
            "no audio from {from} for 5 s: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Measures what `d` receives from `from` for about `secs` seconds.
fn measure(d: &Daemon, from: &str, secs: u64) -> Result<Window> {
    let (s0, t0) = at_refresh(d, from)?;
    std::thread::sleep(Duration::from_secs(secs).saturating_sub(Duration::from_millis(500)));
    let (s1, t1) = at_refresh(d, from)?;
    let dt = t1.duration_since(t0).as_secs_f64();
    let p = peer(&s1, from).with_context(|| format!("{from} is gone: {s1:?}"))?;
    Ok(Window {
        fps: frames(&s1, from).saturating_sub(frames(&s0, from)) as f64 / dt,
        width: p.media.width,
        height: p.media.height,
        audio_ratio: samples(&s1, from).saturating_sub(samples(&s0, from)) as f64 / (dt * 48_000.0),
        packets_lost: p.rtp.packets_lost,
    })
}

/// Waits until `d` is in the call and decoding fresh video (and audio)
/// from `from`: both counters moved between two polls 200 ms apart.
fn wait_media_flowing(d: &Daemon, from: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last: Option<(u64, u64)> = None;
    while Instant::now() < deadline {
        if let Ok(s) = d.status() {
            let now = (frames(&s, from), samples(&s, from));
            if s.state == "in_call"
                && last.is_some_and(|(f, a)| now.0 > f && now.1 > a && now.0 > 0)
            {
                return Ok(());
            }
            last = Some(now);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = d.status();
    anyhow::bail!(
        "{}: no fresh media from {from} within {timeout:?}; status {s:#?}\nlog:\n{}",
        d.name,
        tail(&d.log_text(), 30)
    )
}

#[test]
fn call_survives_1_mbit_with_5_percent_loss_with_video_over_10_fps() -> Result<()> {
    let c = call("link-1m-5")?;
    c.lab.link.set(1_000, 5)?;
    std::thread::sleep(Duration::from_secs(4));
    let up = measure(&c.b, A, 10)?;
    let down = measure(&c.a, B, 3)?;
    println!(
        "1 Mbit/s, 5 % loss: B receives A (A's uplink): {up:?}; A receives B (A's downlink): {down:?}; {} packets dropped by the link",
        c.lab.link.dropped_packets()
    );
    ensure!(c.a.status()?.state == "in_call", "A stays in the call");
    ensure!(up.fps > 10.0, "uplink video {up:?}");
    ensure!(up.audio_ratio > 0.9, "uplink audio {up:?}");
    ensure!(down.audio_ratio > 0.9, "downlink audio {down:?}");
    c.a.check_log()?;
    c.b.check_log()
}

#[test]
fn link_cut_for_30_s_back_in_the_call_within_5_s_of_restore() -> Result<()> {
    let c = call("link-cut")?;
    c.lab.link.cut()?;
    let cut_at = Instant::now();
    // What the shaped room shows during the cut.
    std::thread::sleep(Duration::from_secs(10));
    let during = c.a.status()?;
    println!(
        "A 10 s into the cut: state {} reason {:?} last_error {:?}",
        during.state, during.reason, during.last_error
    );
    std::thread::sleep(Duration::from_secs(30).saturating_sub(cut_at.elapsed()));
    c.lab.link.restore()?;
    let t0 = Instant::now();
    wait_media_flowing(&c.a, B, Duration::from_secs(25))?;
    let a_back = t0.elapsed();
    wait_media_flowing(&c.b, A, Duration::from_secs(25))?;
    let both_back = t0.elapsed();
    println!(
        "link cut 30 s: A receives B again {a_back:.1?} after restore, B receives A again {both_back:.1?} after restore"
    );
    let mut a = c.a;
    ensure!(a.alive(), "the daemon never restarts");
    ensure!(
        both_back <= Duration::from_secs(5),
        "back in the call {both_back:?} after the link returned (target 5 s)"
    );
    a.check_log()?;
    c.b.check_log()
}

#[test]
fn janus_restart_with_the_room_behind_a_link() -> Result<()> {
    let mut c = call("link-janus-restart")?;
    // A plausible thin link, so reconnection runs through tbf and loss.
    c.lab.link.set(2_000, 1)?;
    c.janus.kill();
    c.a.wait_for("the call to drop", Duration::from_secs(15), |s| {
        s.state != "in_call"
    })?;
    std::thread::sleep(Duration::from_secs(2));
    c.lab.restart_janus(&mut c.janus)?;
    let t0 = Instant::now();
    wait_media_flowing(&c.a, B, Duration::from_secs(30))?;
    wait_media_flowing(&c.b, A, Duration::from_secs(30))?;
    println!(
        "Janus restarted: both rooms exchange media again {:.1?} later",
        t0.elapsed()
    );
    let s = c.a.status()?;
    ensure!(s.last_error.is_some(), "the failure is remembered: {s:?}");
    ensure!(c.a.alive() && c.b.alive(), "no daemon restarted");
    c.a.check_log()?;
    c.b.check_log()
}

#[test]
fn shaping_reaches_the_rooms_traffic() -> Result<()> {
    // The lab itself: a cut stops A's media at B, a restore brings it back
    // (whatever the daemon does about it), and loss drops packets.
    let c = call("link-lab")?;
    c.lab.link.set(2_000, 10)?;
    std::thread::sleep(Duration::from_secs(3));
    ensure!(
        c.lab.link.dropped_packets() > 10,
        "loss rules see the media"
    );
    c.lab.link.cut()?;
    std::thread::sleep(Duration::from_secs(2));
    let before = frames(&c.b.status()?, A);
    std::thread::sleep(Duration::from_secs(2));
    let after = frames(&c.b.status()?, A);
    ensure!(
        after <= before,
        "no video across a cut link: {before} → {after}"
    );
    c.lab.link.clear()?;
    ensure!(c.lab.link.dropped_packets() == 0, "counters restart");
    Ok(())
}

/// A's sender adaptation as its status shows it.
fn adapt(d: &Daemon) -> Result<diemcau_daemon::ctl::AdaptStatus> {
    d.status()?
        .adapt
        .with_context(|| format!("{} shows no adaptation in its status", d.name))
}

#[test]
fn at_300_kbit_with_20_percent_loss_audio_plays_and_video_steps_to_360p_at_10_fps() -> Result<()> {
    let c = call("link-300k-20")?;
    c.lab.link.set(300, 20)?;
    // Stepping down takes a few reports; then measure.
    std::thread::sleep(Duration::from_secs(8));
    let sent = adapt(&c.a)?;
    let up = measure(&c.b, A, 15)?;
    println!(
        "300 kbit/s, 20 % loss: B receives A: {up:?}; A sends {}",
        diemcau_daemon::ctl::render_adapt(&sent)
    );
    ensure!(up.audio_ratio >= 0.95, "audio first: {up:?}");
    ensure!(up.fps >= 10.0, "video frame rate: {up:?}");
    ensure!((up.width, up.height) == (640, 360), "video at 360p: {up:?}");
    ensure!(
        sent.rung.starts_with("360p") && sent.random_loss_percent > 0,
        "A shows the rung and counts the random loss as the link's: {sent:?}"
    );
    // Full quality returns after the link clears.
    c.lab.link.clear()?;
    let t0 = Instant::now();
    c.b.wait_for("720p again", Duration::from_secs(40), |s| {
        peer(s, A).is_some_and(|p| p.media.height == 720 && p.media.fps >= 25.0)
    })?;
    println!(
        "full quality {:.1?} after the link cleared; A: {}",
        t0.elapsed(),
        diemcau_daemon::ctl::render_adapt(&adapt(&c.a)?)
    );
    c.a.check_log()
}
