//! Call benchmarks through a real Janus on loopback (in a private network
//! namespace). Prints numbers; needs root.
//!
//! ```text
//! sudo cargo bench -p diemcau-tests --bench call
//! ```
//!
//! 1. Join time: `ctl join` on room B → room A's first decoded frame of B
//!    (wall clock of both on this machine), median of 10.
//! 2. Glass-to-glass latency: every frame carries the sender's clock drawn
//!    into its picture before encoding; the far end reads it from the
//!    decoded picture. p50 and p95 over 20 s.
//! 3. CPU seconds per minute of a two-room call (both daemons), beside the
//!    same encode/decode pipelines run bare with gst-launch-1.0 (same
//!    encoder settings, no WebRTC, no Janus).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use diemcau_tests::*;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` and `cargo test --benches` probe this.
        return Ok(());
    }
    // `cargo bench --bench call -- join` runs only the join part, etc.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    // `-- threads`: the CPU of each thread, of a daemon and of a bare room
    // (only when asked for).
    let threads = only.iter().any(|o| o == "threads");
    isolate()?;
    let dir = scratch("bench")?;
    let room = JanusRoom {
        id: 1234,
        pin: None,
    };
    let janus = Janus::start(&dir.path().join("janus"), std::slice::from_ref(&room))?;
    let mut spec_a = RoomSpec::new("Bench A", &janus, &room);
    spec_a.extra_media = String::new();
    let a = Daemon::start(dir.path(), &spec_a)?;
    let b = Daemon::start(dir.path(), &RoomSpec::new("Bench B", &janus, &room))?;
    a.ctl(CtlCommand::Join)?;
    a.wait_for("A in call", Duration::from_secs(20), |s| {
        s.state == "in_call"
    })?;

    // 1. Join time.
    let mut joins = Vec::new();
    let rounds = if wants("join") { 10 } else { 1 };
    for i in 0..rounds {
        let t0 = unix_ms();
        b.ctl(CtlCommand::Join)?;
        let s = a.wait_for("B's first frame", Duration::from_secs(20), |s| {
            peer(s, "Bench B").is_some_and(|p| p.media.first_frame_unix_ms.is_some())
        })?;
        let first = peer(&s, "Bench B")
            .and_then(|p| p.media.first_frame_unix_ms)
            .context("first frame")?;
        let ms = first.saturating_sub(t0);
        println!("join {i}: {ms} ms");
        joins.push(ms);
        b.wait_for("B in call", Duration::from_secs(10), |s| {
            s.state == "in_call"
        })?;
        if i + 1 < rounds {
            b.ctl(CtlCommand::Leave)?;
            b.wait_for("B idle", Duration::from_secs(10), |s| s.state == "idle")?;
            a.wait_for("B gone", Duration::from_secs(10), |s| {
                peer(s, "Bench B").is_none()
            })?;
        }
    }
    let join_median = median(&mut joins.clone());
    if wants("join") {
        println!(
            "join time (ctl join -> far end's first decoded frame), median of 10: {join_median} ms (min {} ms, max {} ms); target <= 1500 ms",
            joins.iter().min().unwrap_or(&0),
            joins.iter().max().unwrap_or(&0)
        );
    }

    // 2. Latency over 20 s of call.
    if wants("latency") {
        b.wait_for("A's video at B", Duration::from_secs(10), |s| {
            peer(s, "Bench A").is_some_and(|p| p.media.video_frames > 30)
        })?;
        std::thread::sleep(Duration::from_secs(20));
        for (d, other) in [(&a, "Bench B"), (&b, "Bench A")] {
            let s = d.status()?;
            let p = peer(&s, other).context("peer")?;
            println!(
                "glass-to-glass {} -> {}: p50 {} ms, p95 {} ms over {} frames ({}x{} {:.0} fps, jitter buffer 50 ms); target p50 <= 120 ms",
                other,
                d.name,
                p.media.latency_p50_ms.unwrap_or(0),
                p.media.latency_p95_ms.unwrap_or(0),
                p.media.latency_samples,
                p.media.width,
                p.media.height,
                p.media.fps
            );
        }
    }

    // 3. CPU per minute of call: fresh rooms without the latency stamps (a
    // test instrument, not product behaviour), measured in windows that
    // alternate with the bare pipelines so that other load on the machine
    // hits both alike.
    if !wants("cpu") && !threads {
        return Ok(());
    }
    drop(a);
    drop(b);
    let mut sa = RoomSpec::new("Bench C", &janus, &room);
    sa.stamp = false;
    let mut sb = RoomSpec::new("Bench D", &janus, &room);
    sb.stamp = false;
    let c = Daemon::start(dir.path(), &sa)?;
    let d = Daemon::start(dir.path(), &sb)?;
    join_both(&c, &d)?;
    let window = Duration::from_secs(20);
    let pids = [pid_of(&c)?, pid_of(&d)?];
    if threads {
        // Where each one's CPU goes, thread by thread: one daemon in the
        // call, then one room's bare pipelines with the call left.
        let settings = Encoding::of(&c)?;
        print_profile(
            "one daemon in the call",
            window,
            &thread_profile(pids[0], window)?,
        );
        leave_both(&c, &d)?;
        let mut bare = bare_room(&settings)?;
        std::thread::sleep(Duration::from_secs(3));
        let profile = thread_profile(bare.id(), window);
        let _ = bare.kill();
        let _ = bare.wait();
        print_profile("one room's bare pipelines", window, &profile?);
        return Ok(());
    }
    let rounds = 3;
    let (mut call_cpu, mut bare_cpu, mut secs) = (0.0, 0.0, 0.0);
    for round in 0..rounds {
        let before: Vec<f64> = pids
            .iter()
            .map(|p| cpu_seconds(*p))
            .collect::<Result<_>>()?;
        std::thread::sleep(window);
        let after: Vec<f64> = pids
            .iter()
            .map(|p| cpu_seconds(*p))
            .collect::<Result<_>>()?;
        let call = after.iter().zip(&before).map(|(a, b)| a - b).sum::<f64>();
        // The bare pipelines encode with what the call's encoders were set
        // to in this window (the adaptation moves the rate and Opus's
        // expected loss from their start values).
        let settings = Encoding::of(&c)?;
        // The bare pipelines run with the call left, so the two never compete.
        leave_both(&c, &d)?;
        let bare = bare_pipelines_cpu(window, &settings)?;
        println!(
            "round {round}: call {call:.2} CPU-s, bare {bare:.2} CPU-s per {window:?} (ratio {:.2}; {settings:?})",
            call / bare
        );
        call_cpu += call;
        bare_cpu += bare;
        secs += window.as_secs_f64();
        if round + 1 < rounds {
            join_both(&c, &d)?;
        }
    }
    let per_min = 60.0 / secs;
    println!(
        "CPU of a two-room call: {:.1} CPU-s per minute (both daemons); bare gst-launch encode+decode of the same streams: {:.1} CPU-s per minute; ratio {:.2}; target <= 1.15",
        call_cpu * per_min,
        bare_cpu * per_min,
        call_cpu / bare_cpu
    );
    drop(janus);
    Ok(())
}

/// The encoder settings a room's call runs with, from its status.
#[derive(Debug)]
struct Encoding {
    video_kbps: u32,
    opus_loss_percent: u8,
    opus_dtx: bool,
}

impl Encoding {
    fn of(d: &Daemon) -> Result<Encoding> {
        let a = d
            .status()?
            .adapt
            .context("no adaptation status in a call")?;
        Ok(Encoding {
            video_kbps: a.video_kbps,
            opus_loss_percent: a.opus_loss_percent,
            opus_dtx: a.opus_dtx,
        })
    }
}

/// Both rooms join, and each has received 60 frames of the other.
fn join_both(c: &Daemon, d: &Daemon) -> Result<()> {
    c.ctl(CtlCommand::Join)?;
    d.ctl(CtlCommand::Join)?;
    for (x, other) in [(c, d), (d, c)] {
        x.wait_for("video", Duration::from_secs(20), |s| {
            peer(s, &other.name).is_some_and(|p| p.media.video_frames > 60)
        })?;
    }
    Ok(())
}

/// Both rooms leave the call and are idle.
fn leave_both(c: &Daemon, d: &Daemon) -> Result<()> {
    for x in [c, d] {
        x.ctl(CtlCommand::Leave)?;
    }
    for x in [c, d] {
        x.wait_for("idle", Duration::from_secs(10), |s| s.state == "idle")?;
    }
    Ok(())
}

fn pid_of(d: &Daemon) -> Result<u32> {
    d.pid().context("daemon not running")
}

/// Each room's work without WebRTC: encode our camera and microphone with the
/// same settings and the same microphone processing (noise suppression),
/// and decode one remote stream (the other room's), twice. The
/// decoded video is taken at its display time (`sync=true`), as the room's
/// display sink takes it; decoded audio as it comes, as the rooms' discarded
/// audio is.
fn bare_pipelines_cpu(window: Duration, settings: &Encoding) -> Result<f64> {
    let mut children = Vec::new();
    for _ in 0..2 {
        children.push(bare_room(settings)?);
    }
    std::thread::sleep(Duration::from_secs(3));
    let before: Vec<f64> = children
        .iter()
        .map(|c| cpu_seconds(c.id()))
        .collect::<Result<_>>()?;
    let t = Instant::now();
    std::thread::sleep(window);
    let after: Vec<f64> = children
        .iter()
        .map(|c| cpu_seconds(c.id()))
        .collect::<Result<_>>()?;
    let elapsed = t.elapsed();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    if elapsed < window {
        bail!("measurement window too short");
    }
    Ok(after.iter().zip(&before).map(|(a, b)| a - b).sum())
}

/// One room's bare pipelines, started with gst-launch-1.0.
fn bare_room(settings: &Encoding) -> Result<Child> {
    let profile = diemcau_board::builtin("sim")?;
    let spec = profile
        .video
        .encoders
        .first()
        .context("sim has an encoder")?;
    let enc = diemcau_board::encoder::with_bitrate(spec, settings.video_kbps)
        .0
        .launch_fragment();
    let (plp, dtx) = (settings.opus_loss_percent, settings.opus_dtx);
    // The rooms' microphone processing at its default (noise suppression;
    // no echo cancelling: the bench rooms play no sound), as the daemon
    // writes it.
    let dsp = diemcau_media::AudioDsp {
        echo_cancel: false,
        noise_suppression: Some(diemcau_media::NoiseSuppression::Moderate),
    }
    .fragment(None)
    .map(|d| format!("! {d} "))
    .unwrap_or_default();
    let one_room = format!(
        "videotestsrc is-live=true pattern=ball ! videoconvert ! videoscale ! videorate \
         ! video/x-raw,width=1280,height=720,framerate=30/1 \
         ! textoverlay text=\"Bench\" valignment=bottom halignment=left font-desc=\"Sans 24\" shaded-background=true \
         ! videoconvert ! video/x-raw,format=I420 ! queue max-size-buffers=2 leaky=downstream \
         ! {enc} ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream ! h264parse \
         ! rtph264pay config-interval=-1 aggregate-mode=zero-latency mtu=1200 pt=96 \
         ! rtph264depay ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=I420 \
         ! fakesink sync=true \
         audiotestsrc is-live=true wave=sine freq=440 volume=0.3 ! audioconvert ! audioresample \
         ! audio/x-raw,format=S16LE,rate=48000,channels=1 {dsp}! opusenc inband-fec=true packet-loss-percentage={plp} dtx={dtx} bitrate=32000 frame-size={opus_ms} \
         ! rtpopuspay pt=111 ! rtpopusdepay ! opusdec plc=true ! audioconvert ! audioresample \
         ! audio/x-raw,format=S16LE,rate=48000 ! fakesink sync=false",
        opus_ms = diemcau_media::publisher::OPUS_FRAME_MS,
    );
    Command::new("gst-launch-1.0")
        .arg("-q")
        .args(shell_words(&one_room))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("gst-launch-1.0")
}

/// CPU seconds of each of `pid`'s threads (by name) over `window`.
fn thread_profile(pid: u32, window: Duration) -> Result<Vec<(String, f64)>> {
    let before = thread_cpu_seconds(pid)?;
    std::thread::sleep(window);
    let mut after = thread_cpu_seconds(pid)?;
    for (name, cpu) in &mut after {
        if let Some((_, b)) = before.iter().find(|(n, _)| n == name) {
            *cpu -= b;
        }
    }
    after.retain(|(_, c)| *c > 0.0);
    after.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(after)
}

fn print_profile(what: &str, window: Duration, threads: &[(String, f64)]) {
    let total: f64 = threads.iter().map(|(_, c)| c).sum();
    println!(
        "threads of {what}: {total:.2} CPU-s over {window:?} ({:.1} CPU-s a minute)",
        total * 60.0 / window.as_secs_f64()
    );
    for (name, cpu) in threads {
        println!("  {name:<24} {cpu:>6.2}");
    }
}

/// Splits a gst-launch line into arguments, keeping double-quoted parts.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
