//! The pre-meeting self-test end to end: `diemcau ctl selftest` on the sim
//! board (its camera and microphone follow marker files, its speaker plays
//! into its microphone: `media.sim_speaker_loop`), with Janus from Debian in
//! a private network namespace. It passes with everything there, and fails
//! with the right reason when the camera is unplugged or Janus is down.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use diemcau_daemon::selftest::{SelfTestCheck, SelfTestReport};
use diemcau_tests::*;

fn selftest(d: &Daemon) -> Result<(SelfTestReport, Duration)> {
    let t = Instant::now();
    let s = d.ctl(CtlCommand::SelfTest)?;
    let r = s
        .self_test
        .ok_or_else(|| anyhow::anyhow!("no self-test in the status"))?;
    Ok((r, t.elapsed()))
}

fn check<'a>(r: &'a SelfTestReport, name: &str) -> Result<&'a SelfTestCheck> {
    r.checks
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| anyhow::anyhow!("no {name} check in {r:?}"))
}

fn print(r: &SelfTestReport, took: Duration) {
    println!(
        "self-test passed={} in {took:?} (daemon: {} ms)",
        r.passed, r.elapsed_ms
    );
    for c in &r.checks {
        println!(
            "  {:<7} {} {} ({} ms)",
            c.name,
            if c.passed { "ok  " } else { "FAIL" },
            c.detail,
            c.elapsed_ms
        );
    }
}

#[test]
fn selftest_passes_on_the_sim_board_and_names_what_fails() -> Result<()> {
    isolate()?;
    let dir = scratch("selftest")?;
    let room = JanusRoom { id: 77, pin: None };
    let mut janus = Janus::start(&dir.path().join("janus"), std::slice::from_ref(&room))?;
    let devices = dir.path().join("sim");
    std::fs::create_dir_all(&devices)?;
    std::fs::write(devices.join("camera"), b"")?;
    std::fs::write(devices.join("microphone"), b"")?;
    let mut spec = RoomSpec::new("Xa Tu Kiem", &janus, &room);
    spec.audio_out = "device".into();
    spec.extra_media = format!(
        "sim_devices = \"{}\"\nsim_speaker_loop = true\n",
        devices.display()
    );
    let d = Daemon::start(dir.path(), &spec)?;

    // Everything there: passes.
    let (r, took) = selftest(&d)?;
    print(&r, took);
    ensure!(r.passed, "the self-test failed on the sim board: {r:?}");
    ensure!(r.trigger == "ctl");
    for name in ["camera", "audio", "janus"] {
        ensure!(check(&r, name)?.passed, "{name}: {r:?}");
    }
    ensure!(check(&r, "audio")?.detail.contains("test tone heard"));
    ensure!(check(&r, "janus")?.detail.contains("Janus"));

    // The camera unplugged: the camera check fails, saying so.
    std::fs::remove_file(devices.join("camera"))?;
    let (r, took) = selftest(&d)?;
    print(&r, took);
    let cam = check(&r, "camera")?;
    ensure!(!r.passed && !cam.passed, "{r:?}");
    ensure!(
        cam.detail.contains("no camera") && cam.detail.contains("unplugged"),
        "{}",
        cam.detail
    );
    ensure!(
        check(&r, "audio")?.passed && check(&r, "janus")?.passed,
        "{r:?}"
    );
    std::fs::write(devices.join("camera"), b"")?;

    // Janus down: the janus check fails, the rest passes.
    janus.kill();
    let (r, took) = selftest(&d)?;
    print(&r, took);
    let j = check(&r, "janus")?;
    ensure!(!r.passed && !j.passed, "{r:?}");
    ensure!(j.detail.contains("Janus is unreachable"), "{}", j.detail);
    ensure!(
        check(&r, "camera")?.passed && check(&r, "audio")?.passed,
        "{r:?}"
    );
    // The last result stays in the status.
    ensure!(d.status()?.self_test.is_some_and(|s| !s.passed));
    d.check_log()?;
    Ok(())
}
