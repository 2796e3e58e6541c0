//! Call quality over poor links: one room behind a shaped link
//! ([`netlab`](diemcau_tests::netlab)), one clean room beside Janus, three
//! link profiles in turn. Prints a table and writes it, with the command,
//! to `docs/benchmarks-links.md`. Needs root.
//!
//! ```text
//! sudo cargo bench -p diemcau-tests --bench links
//! LINKS_SECS=30 sudo -E cargo bench -p diemcau-tests --bench links   # longer windows
//! ```
//!
//! For each profile (both directions of the link shaped alike) and each
//! direction (B receiving A is A's uplink, A receiving B its downlink),
//! after 5 s of settling and over `LINKS_SECS` (default 20) seconds, with
//! status polled every 200 ms:
//! * audio frames played / expected: decoded samples ÷ (elapsed × 48 000);
//! * concealment ratio: of the samples played, those that filled packets
//!   the jitter buffer declared lost (Opus in-band FEC or PLC);
//! * receiver video frame rate, and the resolution last decoded;
//! * freezes: gaps of more than 1 s without a new decoded frame (count and
//!   the longest). The daemon refreshes its per-peer counters once a
//!   second, so a gap is the time the counter stood still less that second,
//!   and the resolution of freezes and recovery times is about 1 s;
//! * recovery: after the link is cleared, the time until the receiver
//!   decodes at least 25 frames in one second with audio flowing, and until
//!   it does so at 1280x720 (capped at 30 s);
//! * what the sender's adaptation (`diemcau_media::adapt`) was sending at
//!   the end of the window: rung, rate and the loss it counted as the
//!   link's own (from the sender's `ctl status`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use diemcau_tests::netlab::{Netlab, Shape};
use diemcau_tests::*;

const A: &str = "Bench Shaped";
const B: &str = "Bench Clean";
const POLL: Duration = Duration::from_millis(200);
/// How often the daemon refreshes the per-peer counters in its status.
const STATUS_REFRESH: Duration = Duration::from_secs(1);
const SETTLE: Duration = Duration::from_secs(5);
const RECOVERY_CAP: Duration = Duration::from_secs(30);
/// Frames in one second that count as "full frame rate again" (of 30).
const RECOVERED_FPS: u64 = 25;

/// One poll of what a receiver has decoded from one sender.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    frames: u64,
    samples: u64,
    concealed: u64,
    size: (u32, u32),
}

fn sample(d: &Daemon, from: &str) -> Option<Sample> {
    let s = d.status().ok()?;
    let p = peer(&s, from);
    Some(Sample {
        at: Instant::now(),
        frames: p.map_or(0, |p| p.media.video_frames),
        samples: p.map_or(0, |p| p.media.audio_samples),
        concealed: p.map_or(0, |p| p.media.audio_concealed_samples),
        size: p.map_or((0, 0), |p| (p.media.width, p.media.height)),
    })
}

/// The measured quality of one direction under one profile.
#[derive(Debug, Default, Clone)]
struct Quality {
    audio_ratio: f64,
    /// Share of the audio played that filled lost packets (FEC or PLC).
    concealed: f64,
    fps: f64,
    size: (u32, u32),
    freezes: u32,
    longest_freeze: Duration,
    recovery: Option<Duration>,
    /// ... and until it did so at 1280x720.
    full_size: Option<Duration>,
    /// The sender's adaptation at the end of the window.
    sent: String,
}

/// Polls both directions for `secs`, returning (uplink, downlink).
fn measure(a: &Daemon, b: &Daemon, window: Duration) -> Result<(Quality, Quality)> {
    let dirs = [(b, A), (a, B)];
    let mut series: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    let end = Instant::now() + window;
    while Instant::now() < end {
        for (i, (d, from)) in dirs.iter().enumerate() {
            if let Some(s) = sample(d, from) {
                series[i].push(s);
            }
        }
        std::thread::sleep(POLL);
    }
    let q = |v: &[Sample]| -> Result<Quality> {
        let (first, last) = (
            v.first().context("no samples")?,
            v.last().context("no samples")?,
        );
        let dt = last.at.duration_since(first.at).as_secs_f64().max(0.001);
        let mut freezes = 0;
        let mut longest = Duration::ZERO;
        let mut since = first.at;
        let mut frozen_counted = false;
        for w in v.windows(2) {
            if w[1].frames != w[0].frames {
                since = w[1].at;
                frozen_counted = false;
            } else {
                // The counter moves once per status refresh: a gap longer
                // than one refresh plus half of one is a second at least
                // without a new frame.
                let gap = w[1].at.duration_since(since).saturating_sub(STATUS_REFRESH);
                longest = longest.max(gap);
                if gap > STATUS_REFRESH / 2 && !frozen_counted {
                    freezes += 1;
                    frozen_counted = true;
                }
            }
        }
        Ok(Quality {
            audio_ratio: last.samples.saturating_sub(first.samples) as f64 / (dt * 48_000.0),
            concealed: last.concealed.saturating_sub(first.concealed) as f64
                / last.samples.saturating_sub(first.samples).max(1) as f64,
            fps: last.frames.saturating_sub(first.frames) as f64 / dt,
            size: last.size,
            freezes,
            longest_freeze: longest,
            recovery: None,
            full_size: None,
            sent: String::new(),
        })
    };
    Ok((q(&series[0])?, q(&series[1])?))
}

/// Time from now until each direction decodes `RECOVERED_FPS` frames within
/// a second, with audio moving, and until it does so at 1280x720; `None`
/// if not within the cap.
fn recovery(a: &Daemon, b: &Daemon) -> [(Option<Duration>, Option<Duration>); 2] {
    let dirs = [(b, A), (a, B)];
    let t0 = Instant::now();
    let mut series: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    let mut done = [(None, None), (None, None)];
    while t0.elapsed() < RECOVERY_CAP && done.iter().any(|d| d.1.is_none()) {
        for (i, (d, from)) in dirs.iter().enumerate() {
            if done[i].1.is_some() {
                continue;
            }
            let Some(s) = sample(d, from) else { continue };
            series[i].push(s);
            let v = &series[i];
            if let Some(old) = v
                .iter()
                .rev()
                .find(|o| s.at.duration_since(o.at) >= Duration::from_secs(1))
                && s.frames.saturating_sub(old.frames) >= RECOVERED_FPS
                && s.samples > old.samples
            {
                done[i].0.get_or_insert(t0.elapsed());
                if s.size == (1280, 720) {
                    done[i].1 = Some(t0.elapsed());
                }
            }
        }
        std::thread::sleep(POLL);
    }
    done
}

/// What `d`'s sender adaptation sends: `360p25 at 217 kbit/s (20 % loss
/// the link's own)`.
fn sending(d: &Daemon) -> String {
    match d.status().ok().and_then(|s| s.adapt) {
        Some(a) if a.random_loss_percent > 0 => format!(
            "{} at {} kbit/s ({} % loss the link's own)",
            a.rung, a.video_kbps, a.random_loss_percent
        ),
        Some(a) => format!("{} at {} kbit/s", a.rung, a.video_kbps),
        None => "-".into(),
    }
}

fn fmt_dur(d: Option<Duration>) -> String {
    d.map_or(format!("> {} s", RECOVERY_CAP.as_secs()), |d| {
        format!("{:.1} s", d.as_secs_f64())
    })
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let window = Duration::from_secs(
        std::env::var("LINKS_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
    );
    let profiles = [
        Shape {
            kbit: Some(2_000),
            loss_percent: 0,
            cut: false,
        },
        Shape {
            kbit: Some(1_000),
            loss_percent: 5,
            cut: false,
        },
        Shape {
            kbit: Some(300),
            loss_percent: 20,
            cut: false,
        },
    ];

    let dir = scratch("links-bench")?;
    let lab = Netlab::new()?;
    let room = JanusRoom { id: 77, pin: None };
    let janus = lab.start_janus(&dir.path().join("janus"), std::slice::from_ref(&room))?;
    let a = lab.start_shaped_room(dir.path(), &RoomSpec::new(A, &janus, &room))?;
    let b = lab.start_clean_room(dir.path(), &RoomSpec::new(B, &janus, &room))?;
    a.ctl(CtlCommand::Join)?;
    b.ctl(CtlCommand::Join)?;
    for (d, other) in [(&a, B), (&b, A)] {
        d.wait_for("the other room's video", Duration::from_secs(30), |s| {
            peer(s, other).is_some_and(|p| p.media.video_frames > 30)
        })?;
    }

    let mut rows = Vec::new();
    for shape in profiles {
        lab.link.apply(shape)?;
        std::thread::sleep(SETTLE);
        let (mut up, mut down) = measure(&a, &b, window)?;
        up.sent = sending(&a);
        down.sent = sending(&b);
        let dropped = lab.link.dropped_packets();
        let state = a
            .status()
            .map(|s| s.state)
            .unwrap_or_else(|e| e.to_string());
        lab.link.clear()?;
        let [r_up, r_down] = recovery(&a, &b);
        (up.recovery, up.full_size) = r_up;
        (down.recovery, down.full_size) = r_down;
        println!(
            "{shape}: A {state}, {dropped} packets dropped by the link\n  uplink   (B receives A): {up:?}\n  downlink (A receives B): {down:?}"
        );
        rows.push((shape, up, down));
        // Let the call settle back to full quality before the next profile.
        std::thread::sleep(SETTLE);
    }

    let mut table = String::from(
        "| link (each direction) | direction | audio played / expected | concealed | video fps | resolution | freezes > 1 s (longest) | recovery after clear: 25 fps / 720p | sender sends |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for (shape, up, down) in &rows {
        for (name, q) in [
            ("uplink: B receives A", up),
            ("downlink: A receives B", down),
        ] {
            writeln!(
                table,
                "| {shape} | {name} | {:.1} % | {:.1} % | {:.1} | {}x{} | {} ({:.1} s) | {} / {} | {} |",
                q.audio_ratio * 100.0,
                q.concealed * 100.0,
                q.fps,
                q.size.0,
                q.size.1,
                q.freezes,
                q.longest_freeze.as_secs_f64(),
                fmt_dur(q.recovery),
                fmt_dur(q.full_size),
                q.sent,
            )?;
        }
    }
    println!("\n{table}");
    let doc = format!(
        "# Benchmarks: calls over poor links\n\n\
         Measured by `tests/benches/links.rs` (issue #7):\n\n\
         ```text\nsudo cargo bench -p diemcau-tests --bench links\n```\n\n\
         Topology (`tests/src/netlab.rs`): Janus and room B in one network namespace, room A in another, \
         joined by a veth pair on 127.0.0.2 ↔ 127.0.0.3. Both directions of the veth are shaped alike: \
         `tc tbf` for bandwidth (bucket ≈ 20 ms, queue ≈ 150 ms), nftables `numgen random mod 100 < N drop` \
         on input for loss. Uplink = B receives A (through A's shaped uplink); downlink = A receives B. \
         Each profile: {settle} s settling, then {window} s measured with status polled every 200 ms; \
         then the link is cleared and recovery is the time until the receiver decodes ≥ {RECOVERED_FPS} frames \
         in one second with audio flowing (360p25 counts), and then until it does so at 1280x720. The daemon \
         refreshes per-peer counters once a second, so freeze lengths and recovery times have a resolution of \
         about 1 s (a freeze is counted when the frame counter stands still for more than 1.5 s of polling), and \
         audio played / expected one of about ±5 % (a refresh more or less in the window). Audio played / \
         expected counts decoded samples against 48 000 per second; \"concealed\" is the share of them that \
         filled packets the receiver's jitter buffer declared lost (gap events into `opusdec`, which fills them \
         from the next packet's in-band FEC where it has one, else by loss concealment).\n\n\
         Sim board (videotestsrc ball 720p30; x264enc starting at 1500 kbit/s, which the ball fills only \
         to about 265; Opus 32 kbit/s with in-band FEC), with the sender adaptation on: once a second each \
         room's controller (`firmware/media/src/adapt.rs`) takes Janus's receiver reports on its own streams \
         and sets the ladder rung (720p30, 540p25, 360p25, 180p10 or paused), the encoder rate and Opus's \
         expected loss, and Opus DTX from 360p down; \"sender sends\" is that at the end of the window. \
         B's link is clean, so B keeps sending 720p30 and Janus forwards it whole through A's shaped \
         downlink (an SFU without simulcast cannot thin it per receiver): A's downlink stays overfilled at \
         300 kbit/s.\n\n\
         Before the adaptation was wired (commit 626a3c6, same bench), 300 kbit/s with 20 % loss gave the \
         uplink 6.2 fps at 1280x720 (the target is >= 10 fps at 360p).\n\n\
         {table}\n\
         Targets (issue #7): audio ≥ 95 % at 300 kbit/s with 20 % loss; video ≥ 10 fps at 360p there; recovery ≤ 5 s.\n",
        settle = SETTLE.as_secs(),
        window = window.as_secs(),
    );
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks-links.md");
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    println!("written to {}", path.display());
    drop((a, b, janus, lab));
    Ok(())
}
