//! CPU of a 720p30 call on the sim board with each software encoder that
//! this machine has (x264enc, openh264enc, vp8enc): the reference for boards
//! without a hardware encoder (Raspberry Pi 5, an Orin Nano, x86 without
//! VA-API).
//!
//! For each encoder, two `diemcau` daemons pinned to it (`media.encoder`)
//! join one Janus VideoRoom (in a private network namespace, as every test
//! here) and call each other for a settling period; then the CPU time of
//! both daemons (encode of their own picture, decode of the other's, and the
//! WebRTC around it) is read from /proc over a window, with the far end's
//! frame rate, picture size and the sending bitrate.
//!
//! Run as root: `cargo bench -p diemcau-tests --bench encoders`
//! (`-- x264enc` etc. runs only the named encoders).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use diemcau_tests::*;

const WINDOW: Duration = Duration::from_secs(20);

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let profile = diemcau_board::builtin("sim")?;
    let encoders: Vec<String> = profile
        .video
        .encoders
        .iter()
        .map(|e| e.element.clone())
        .filter(|e| only.is_empty() || only.contains(e))
        .filter(|e| gst_has(e))
        .collect();
    isolate()?;
    let dir = scratch("bench-encoders")?;
    let room = JanusRoom { id: 77, pin: None };
    let janus = Janus::start(&dir.path().join("janus"), std::slice::from_ref(&room))?;
    let mut rows = Vec::new();
    for enc in &encoders {
        let spec = |name: &str| {
            let mut s = RoomSpec::new(name, &janus, &room);
            s.stamp = false;
            s.extra_media = format!("encoder = \"{enc}\"\n");
            s
        };
        let (na, nb) = (format!("{enc} A"), format!("{enc} B"));
        let a = Daemon::start(dir.path(), &spec(&na))?;
        let b = Daemon::start(dir.path(), &spec(&nb))?;
        a.ctl(CtlCommand::Join)?;
        b.ctl(CtlCommand::Join)?;
        for (d, other) in [(&a, &nb), (&b, &na)] {
            d.wait_for("video", Duration::from_secs(30), |s| {
                peer(s, other).is_some_and(|p| p.media.video_frames > 90)
            })?;
        }
        let pids = [a.pid().context("A runs")?, b.pid().context("B runs")?];
        let before: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum::<Result<f64>>()?;
        let t = Instant::now();
        std::thread::sleep(WINDOW);
        let after: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum::<Result<f64>>()?;
        let secs = t.elapsed().as_secs_f64();
        let s = b.status()?;
        let p = peer(&s, &na).context("A seen at B")?;
        let row = format!(
            "| {enc} | {:.0} % | {:.1} | {}x{} | {:.0} | {:.0} |",
            100.0 * (after - before) / secs / 2.0,
            60.0 * (after - before) / secs,
            p.media.width,
            p.media.height,
            p.media.fps,
            a.status()?.send_bitrate_kbps,
        );
        println!("{row}");
        rows.push(row);
        drop(a);
        drop(b);
    }
    println!(
        "\n| encoder | CPU per room (% of one core) | CPU-s per minute, both rooms | far end receives | fps | sent kbit/s |\n| --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        println!("{r}");
    }
    drop(janus);
    Ok(())
}

fn gst_has(element: &str) -> bool {
    std::process::Command::new("gst-inspect-1.0")
        .args(["--exists", element])
        .status()
        .is_ok_and(|s| s.success())
}
