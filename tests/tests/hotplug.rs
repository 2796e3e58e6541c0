//! Hotplug end to end: a room's camera and microphone come and go in the
//! middle of a real call (Janus from Debian, two `diemcau` daemons on the
//! sim board, in a private network namespace), and the call carries on.
//!
//! Room A's fake devices follow marker files (`media.sim_devices`): the
//! camera is plugged in while `camera` exists (and, if the file holds a
//! `v4l2-ctl --list-formats-ext` listing, offers those formats), the
//! microphone while `microphone` exists. Room B watches what arrives: the
//! mean brightness of A's picture (the sim camera's test pattern is nearly
//! black, the "camera unavailable" slate is a light blue-grey), when it last
//! cut from one to the other, the frame rate and the audio level.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use diemcau_daemon::ctl::PeerStatus;
use diemcau_media::DeviceState;
use diemcau_tests::*;

const ROOM: u64 = 3003;
const A: &str = "Xa Tien Phong";
const B: &str = "Xa An Binh";

/// Mean luma below this: the sim camera's (dark) test pattern.
const CAMERA_MAX_LUMA: f64 = 45.0;
/// Mean luma above this: the slate.
const SLATE_MIN_LUMA: f64 = 60.0;
/// The sim microphone's 440 Hz tone arrives at about -13 dBFS.
const AUDIBLE_DB: f64 = -30.0;
const SILENT_DB: f64 = -50.0;
/// Issue 3: a device is taken back within 3 s of being plugged in again.
const TAKE_BACK: Duration = Duration::from_secs(3);

fn room() -> JanusRoom {
    JanusRoom {
        id: ROOM,
        pin: None,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn luma(p: &PeerStatus) -> f64 {
    p.picture.mean_luma.unwrap_or(-1.0)
}

fn level(p: &PeerStatus) -> f64 {
    p.media.audio_level_db.unwrap_or(-100.0)
}

fn from_a(s: &Status) -> Option<&PeerStatus> {
    peer(s, A)
}

/// B's view of A, after `pred` holds.
fn b_sees(
    b: &Daemon,
    what: &str,
    within: Duration,
    pred: impl Fn(&PeerStatus) -> bool,
) -> Result<PeerStatus> {
    let s = b.wait_for(what, within, |s| from_a(s).is_some_and(&pred))?;
    from_a(&s).cloned().context("A present")
}

/// Frames from A keep coming for `span`: at least 10 fps on average (the
/// sim camera and the slate both run at 30; the margin is for a loaded CI
/// machine).
fn frames_keep_coming(b: &Daemon, span: Duration) -> Result<()> {
    let f0 = from_a(&b.status()?).map_or(0, |p| p.media.video_frames);
    std::thread::sleep(span);
    let f1 = from_a(&b.status()?).map_or(0, |p| p.media.video_frames);
    let fps = (f1.saturating_sub(f0)) as f64 / span.as_secs_f64();
    ensure!(fps >= 10.0, "A's frames slowed to {fps:.1} fps at B");
    Ok(())
}

fn in_call(a: &Daemon) -> Result<Status> {
    let s = a.status()?;
    ensure!(s.state == "in_call", "A left the call: {s:#?}");
    Ok(s)
}

/// Plugs a marker in with `content` and returns the Unix time it happened.
fn plug(marker: &Path, content: &[u8]) -> Result<u64> {
    // Written whole, then renamed: the fake never reads half a listing.
    let tmp = marker.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, marker)?;
    Ok(unix_ms())
}

fn unplug(marker: &Path) -> Result<u64> {
    std::fs::remove_file(marker)?;
    Ok(unix_ms())
}

#[test]
fn camera_and_microphone_come_and_go_mid_call_and_the_call_carries_on() -> Result<()> {
    let t_start = Instant::now();
    isolate()?;
    let dir = scratch("hotplug")?;
    let janus = Janus::start(&dir.path().join("janus"), &[room()])?;
    let devices = dir.path().join("devices-a");
    std::fs::create_dir_all(&devices)?;
    let camera = devices.join("camera");
    let microphone = devices.join("microphone");

    // A starts with a camera that offers no format the board can use
    // (H.264 and greyscale only): an audio-only call with the slate.
    let grey_only = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../board-support/tests/fixtures/cameras/h264-grey-only.txt"),
    )?;
    plug(&camera, &grey_only)?;
    plug(&microphone, b"")?;
    let mut spec = RoomSpec::new(A, &janus, &room());
    spec.extra_media = format!("sim_devices = \"{}\"\n", devices.display());
    spec.stamp = false;
    let a = Daemon::start(dir.path(), &spec)?;
    let mut spec_b = RoomSpec::new(B, &janus, &room());
    spec_b.stamp = false;
    let b = Daemon::start(dir.path(), &spec_b)?;
    a.ctl(CtlCommand::Join)?;
    b.ctl(CtlCommand::Join)?;

    // 1. Unusable camera: B gets the slate and A's voice; A says why.
    let p = b_sees(&b, "A's slate and voice", Duration::from_secs(30), |p| {
        p.media.video_frames >= 30 && luma(p) > SLATE_MIN_LUMA && level(p) > AUDIBLE_DB
    })?;
    println!(
        "unusable camera: B receives the slate (luma {:.0}) at {:.0} fps and A's voice at {:.1} dBFS",
        luma(&p),
        p.media.fps,
        level(&p)
    );
    let s = a.wait_for("the camera error in status", Duration::from_secs(5), |s| {
        s.camera.as_ref().is_some_and(|c| {
            c.state == DeviceState::Error
                && c.sending == "slate"
                && c.error
                    .as_deref()
                    .is_some_and(|e| e.contains("no usable mode"))
        })
    })?;
    ensure!(s.state == "in_call", "{s:#?}");
    let cam = s.camera.clone().context("camera status")?;
    println!(
        "A's status: camera {:?}: {}",
        cam.state,
        cam.error.clone().unwrap_or_default()
    );
    let text = std::process::Command::new(daemon_binary()?)
        .args(["ctl", "--socket"])
        .arg(&a.socket)
        .arg("status")
        .output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    ensure!(
        text.contains("camera:") && text.contains("no usable mode") && text.contains("microphone:"),
        "ctl status shows the devices:\n{text}"
    );

    // 2. A usable camera: the picture replaces the slate.
    let t = plug(&camera, b"")?;
    let p = b_sees(&b, "A's camera picture", Duration::from_secs(10), |p| {
        luma(p) < CAMERA_MAX_LUMA && p.picture.last_cut_unix_ms.is_some_and(|c| c >= t)
    })?;
    let first_picture_ms = p.picture.last_cut_unix_ms.unwrap_or(t) - t;
    println!("usable camera plugged in: picture at B after {first_picture_ms} ms");

    // 3. Camera unplugged mid-call: slate, frames keep coming, audio stays.
    let t = unplug(&camera)?;
    let p = b_sees(&b, "the slate", Duration::from_secs(5), |p| {
        luma(p) > SLATE_MIN_LUMA && p.picture.last_cut_unix_ms.is_some_and(|c| c >= t)
    })?;
    let slate_ms = p.picture.last_cut_unix_ms.unwrap_or(t) - t;
    frames_keep_coming(&b, Duration::from_secs(2))?;
    let p = from_a(&b.status()?).cloned().context("A present")?;
    ensure!(luma(&p) > SLATE_MIN_LUMA, "still the slate: {p:?}");
    ensure!(
        level(&p) > AUDIBLE_DB,
        "A's voice carries on without the camera: {p:?}"
    );
    let s = in_call(&a)?;
    let cam = s.camera.context("camera status")?;
    ensure!(
        cam.state == DeviceState::Absent && cam.sending == "slate",
        "{cam:?}"
    );
    println!(
        "camera unplugged: slate at B after {slate_ms} ms, {:.0} fps, audio {:.1} dBFS",
        p.media.fps,
        level(&p)
    );

    // 4. Camera back: B sees the picture again within 3 s.
    let t = plug(&camera, b"")?;
    let p = b_sees(
        &b,
        "A's camera again",
        TAKE_BACK + Duration::from_secs(3),
        |p| luma(p) < CAMERA_MAX_LUMA && p.picture.last_cut_unix_ms.is_some_and(|c| c >= t),
    )?;
    let back_ms = p.picture.last_cut_unix_ms.unwrap_or(t) - t;
    println!(
        "camera plugged in again: picture back at B after {back_ms} ms (limit {} ms)",
        TAKE_BACK.as_millis()
    );
    ensure!(
        back_ms <= TAKE_BACK.as_millis() as u64,
        "picture back after {back_ms} ms"
    );
    let s = a.wait_for("the camera active again", Duration::from_secs(3), |s| {
        s.camera
            .as_ref()
            .is_some_and(|c| c.state == DeviceState::Active)
    })?;
    ensure!(s.state == "in_call");
    let cam = s.camera.context("camera status")?;
    ensure!(
        cam.lost >= 1 && cam.returned >= 1 && cam.sending == "device",
        "{cam:?}"
    );

    // 5. Microphone unplugged: B hears silence, video carries on.
    let t = unplug(&microphone)?;
    let p = b_sees(&b, "silence from A", Duration::from_secs(6), |p| {
        level(p) < SILENT_DB
    })?;
    let silence_s = (unix_ms() - t) as f64 / 1000.0;
    ensure!(
        luma(&p) < CAMERA_MAX_LUMA,
        "still the camera picture: {p:?}"
    );
    frames_keep_coming(&b, Duration::from_secs(1))?;
    let s = in_call(&a)?;
    let mic = s.microphone.context("microphone status")?;
    ensure!(
        mic.state == DeviceState::Absent && mic.sending == "silence",
        "{mic:?}"
    );
    println!(
        "microphone unplugged: B hears {:.0} dBFS within {silence_s:.1} s (status polled once a second)",
        level(&p)
    );

    // 6. Microphone back: the tone returns; A takes the device back fast.
    let t = plug(&microphone, b"")?;
    let s = a.wait_for("the microphone active again", Duration::from_secs(5), |s| {
        s.microphone
            .as_ref()
            .is_some_and(|m| m.state == DeviceState::Active)
    })?;
    let mic = s.microphone.context("microphone status")?;
    let mic_back_ms = mic.since_unix_ms.saturating_sub(t);
    ensure!(
        mic_back_ms <= TAKE_BACK.as_millis() as u64,
        "microphone back after {mic_back_ms} ms"
    );
    let p = b_sees(&b, "A's voice again", Duration::from_secs(6), |p| {
        level(p) > AUDIBLE_DB
    })?;
    let voice_s = (unix_ms() - t) as f64 / 1000.0;
    ensure!(mic.lost >= 1 && mic.returned >= 1, "{mic:?}");
    println!(
        "microphone plugged in again: A sends it after {mic_back_ms} ms; B hears {:.1} dBFS within {voice_s:.1} s",
        level(&p)
    );

    in_call(&a)?;
    in_call(&b)?;
    a.check_log()?;
    b.check_log()?;
    println!("hotplug test took {:.1} s", t_start.elapsed().as_secs_f64());
    Ok(())
}
