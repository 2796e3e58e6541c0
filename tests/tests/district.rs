//! The district server drives the rooms, end to end: a real `diemcau-ops`
//! process (SQLite in the test's scratch folder, first admin from its CLI),
//! a real Janus from Debian that ops creates the meeting rooms in, and the
//! real `diemcau` daemons on the sim board, provisioned with a district URL
//! and a claim token only. Nobody sends `ctl join` here: the rooms enrol,
//! receive the schedule or the "convene now" push, and join by themselves.
//!
//! The tests in this file run one at a time (each starts Janus, ops and up
//! to two encoding rooms on a small machine, and two of them measure time).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use diemcau_tests::ops::{Ops, Provisioned, unix_now};
use diemcau_tests::*;

const A: &str = "Xa An Binh";
const B: &str = "Xa Tien Phong";
const XA_A: &str = "xa-an-binh";
const XA_B: &str = "xa-tien-phong";
const COMMUNES: &[(&str, &str)] = &[(XA_A, "Xã An Bình"), (XA_B, "Xã Tiền Phong")];

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Janus (with its HTTP API for ops) and ops, in a namespace of the test's own.
struct District {
    ops: Ops,
    janus: Janus,
    dir: tempfile::TempDir,
}

fn district(name: &str) -> Result<District> {
    isolate()?;
    let dir = scratch(name)?;
    let janus = Janus::start_with_http(&dir.path().join("janus"), &[])?;
    let ops = Ops::start(&dir.path().join("ops"), &janus, COMMUNES)?;
    Ok(District { ops, janus, dir })
}

impl District {
    /// A room daemon provisioned for `commune` (URL + claim token), with
    /// no conference of its own in use: it only ever joins what ops sends.
    fn room(&self, name: &str, commune: &str) -> Result<(Daemon, Provisioned, RoomSpec)> {
        self.room_with(name, commune, "none")
    }

    /// [`District::room`] with `video_out` (e.g. "screen-png": the room
    /// screen, written to `frames/screen.png` every second).
    fn room_with(
        &self,
        name: &str,
        commune: &str,
        video_out: &str,
    ) -> Result<(Daemon, Provisioned, RoomSpec)> {
        let p = self.ops.provision(self.dir.path(), name, commune)?;
        let mut spec = RoomSpec::new(name, &self.janus, &JanusRoom { id: 1, pin: None });
        spec.video_out = video_out.into();
        spec.extra_media = p.config.clone();
        let d = Daemon::start(self.dir.path(), &spec)?;
        Ok((d, p, spec))
    }
}

fn frames_from(s: &Status, name: &str) -> u64 {
    peer(s, name).map_or(0, |p| p.media.video_frames)
}

fn in_meeting(s: &Status, meeting: &str) -> bool {
    s.state == "in_call" && s.meeting.as_deref() == Some(meeting)
}

/// Polls every room every 50 ms until `pred` holds for each; returns when
/// each first did, in the order given.
fn until_all(
    rooms: &[&Daemon],
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Status) -> bool,
) -> Result<Vec<(Instant, i64)>> {
    let deadline = Instant::now() + timeout;
    let mut when: Vec<Option<(Instant, i64)>> = vec![None; rooms.len()];
    while when.iter().any(Option::is_none) {
        for (i, d) in rooms.iter().enumerate() {
            if when[i].is_none()
                && let Ok(s) = d.status()
                && pred(&s)
            {
                when[i] = Some((Instant::now(), unix_now_ms()));
            }
        }
        if Instant::now() > deadline {
            let i = when.iter().position(Option::is_none).unwrap_or(0);
            let d = rooms[i];
            // Fails with the room's last status and log.
            d.wait_for(what, Duration::from_millis(1), &pred)?;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(when.into_iter().flatten().collect())
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Both rooms receive the other's video.
fn see_each_other(a: &Daemon, b: &Daemon) -> Result<()> {
    for (d, other) in [(a, B), (b, A)] {
        let s = d.wait_for("video from the other room", Duration::from_secs(20), |s| {
            s.state == "in_call" && frames_from(s, other) > 0
        })?;
        let p = peer(&s, other).context("peer")?;
        println!(
            "{} receives {}: {} frames {}x{}",
            d.name, other, p.media.video_frames, p.media.width, p.media.height
        );
    }
    Ok(())
}

/// No panic, no UPnP/SSDP, and no `ctl join` (the run loop logs every
/// control command other than status).
fn clean_and_unasked(d: &Daemon) -> Result<()> {
    d.check_log()?;
    let log = d.log_text();
    // The run loop logs every control command but status as `control cmd=…`.
    ensure!(
        !log.lines()
            .any(|l| l.contains("control") && l.contains("cmd=Join")),
        "{} was sent a join:\n{}",
        d.name,
        tail(&log, 20)
    );
    Ok(())
}

fn kinds(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}{}",
                e["event"]["kind"].as_str().unwrap_or("?"),
                if e["event"]["offline"] == true {
                    "(offline)"
                } else {
                    ""
                }
            )
        })
        .collect()
}

#[test]
fn enrol_schedule_and_both_rooms_join_by_themselves() -> Result<()> {
    let _one = one_at_a_time();
    let d = district("district-schedule")?;
    let (a, _, _) = d.room(A, XA_A)?;
    let (b, _, _) = d.room(B, XA_B)?;
    let ida = d.ops.wait_enrolled(&a, Duration::from_secs(15))?;
    let idb = d.ops.wait_enrolled(&b, Duration::from_secs(15))?;
    ensure!(ida != idb, "two identities");
    for (id, commune) in [(&ida, XA_A), (&idb, XA_B)] {
        let dev = d.ops.device(id)?;
        ensure!(dev["device"]["commune"] == commune, "{dev}");
        ensure!(dev["device"]["board"] == "sim", "{dev}");
    }

    let start = unix_now() + 4;
    let m = d.ops.create_meeting(
        "Hội nghị giao ban tháng 11",
        start,
        start + 600,
        &[XA_A, XA_B],
    )?;
    let mid = m["id"].as_str().context("meeting id")?.to_string();
    // Both rooms have the meeting ahead of time and wait for it.
    for r in [&a, &b] {
        let s = r.wait_for("the meeting in the schedule", Duration::from_secs(3), |s| {
            s.district.as_ref().is_some_and(|x| {
                x.meetings >= 1
                    && x.next_meeting.as_deref() == Some("Hội nghị giao ban tháng 11")
                    && x.next_meeting_starts_at == Some(start)
            })
        })?;
        ensure!(s.state == "idle", "{} waits for the start: {s:?}", r.name);
    }
    ensure!(unix_now() < start, "the schedule arrived before the start");

    let at = until_all(&[&a, &b], "in the meeting", Duration::from_secs(20), |s| {
        in_meeting(s, &mid)
    })?;
    for (r, (_, ms)) in [&a, &b].iter().zip(&at) {
        println!(
            "{}: scheduled start -> in_call: {} ms",
            r.name,
            ms - start * 1000
        );
        ensure!(*ms >= start * 1000, "{} joined before the start", r.name);
    }
    see_each_other(&a, &b)?;

    // Ops sees both in the call and has their join events.
    for id in [&ida, &idb] {
        d.ops
            .eventually("in_call on the fleet page", Duration::from_secs(5), |o| {
                Ok((o.fleet_status(id)?.as_deref() == Some("in_call")).then_some(()))
            })?;
        let evs = d
            .ops
            .eventually("the joined event", Duration::from_secs(5), |o| {
                let evs = o.events(id)?;
                Ok(evs
                    .iter()
                    .any(|e| e["event"]["kind"] == "joined" && e["event"]["meeting_id"] == *mid)
                    .then_some(evs))
            })?;
        println!("{id}: events {:?}", kinds(&evs));
    }
    clean_and_unasked(&a)?;
    clean_and_unasked(&b)
}

#[test]
fn convene_now_both_rooms_in_call_within_5s() -> Result<()> {
    let _one = one_at_a_time();
    let d = district("district-convene")?;
    // Room A drives its screen (to a PNG: no display here).
    let (a, _, _) = d.room_with(A, XA_A, "screen-png")?;
    let (b, _, _) = d.room(B, XA_B)?;
    let ida = d.ops.wait_enrolled(&a, Duration::from_secs(15))?;
    let idb = d.ops.wait_enrolled(&b, Duration::from_secs(15))?;
    for r in [&a, &b] {
        ensure!(r.status()?.state == "idle");
    }
    a.wait_for("the idle screen", Duration::from_secs(5), |s| {
        s.screen.as_deref() == Some("idle")
    })?;
    let png = a
        .config
        .parent()
        .context("room folder")?
        .join("frames/screen.png");
    let size = png_size(&png)?;
    ensure!(size == (1280, 720), "screen.png is {size:?}");

    let clicked = Instant::now();
    let resp = d
        .ops
        .convene("Họp khẩn: phòng chống lũ quét", &[XA_A, XA_B])?;
    let answered = clicked.elapsed();
    ensure!(resp["notified_devices"] == 2, "{resp}");
    ensure!(resp["meeting"]["urgent"] == true, "{resp}");
    let mid = resp["meeting"]["id"]
        .as_str()
        .context("meeting id")?
        .to_string();
    // The incoming-meeting screen comes up as soon as the call arrives,
    // while the room joins.
    a.wait_for("the incoming-meeting screen", Duration::from_secs(5), |s| {
        s.screen.as_deref() == Some("incoming")
    })?;
    println!("incoming screen after {:?}", clicked.elapsed());
    let at = until_all(
        &[&a, &b],
        "in the urgent meeting",
        Duration::from_secs(15),
        |s| in_meeting(s, &mid),
    )?;
    // The in-call screen follows the 3 s incoming-meeting screen.
    a.wait_for("the in-call screen", Duration::from_secs(6), |s| {
        s.screen.as_deref() == Some("in_call")
    })?;
    self_view_is_shown(&png)?;
    let took: Vec<Duration> = at.iter().map(|(t, _)| *t - clicked).collect();
    let worst = took.iter().max().copied().unwrap_or_default();
    println!(
        "convene now: answered in {answered:?}; click -> in_call {}: {:?}, {}: {:?}; both in {worst:?}",
        a.name, took[0], b.name, took[1]
    );
    ensure!(
        worst <= Duration::from_secs(5),
        "click -> both in_call took {worst:?}"
    );
    see_each_other(&a, &b)?;
    for id in [&ida, &idb] {
        d.ops
            .eventually("convene_received and joined", Duration::from_secs(5), |o| {
                let evs = o.events(id)?;
                let has = |k: &str| {
                    evs.iter()
                        .any(|e| e["event"]["kind"] == k && e["event"]["meeting_id"] == *mid)
                };
                Ok((has("convene_received") && has("joined")).then_some(()))
            })?;
    }
    clean_and_unasked(&a)?;
    clean_and_unasked(&b)
}

#[test]
fn ops_down_at_the_scheduled_start_rooms_still_join_and_report_later() -> Result<()> {
    let _one = one_at_a_time();
    let mut d = district("district-ops-down")?;
    let (a, pa, _) = d.room(A, XA_A)?;
    let (b, pb, _) = d.room(B, XA_B)?;
    let ida = d.ops.wait_enrolled(&a, Duration::from_secs(15))?;
    let idb = d.ops.wait_enrolled(&b, Duration::from_secs(15))?;

    let start = unix_now() + 7;
    let m = d
        .ops
        .create_meeting("Họp định kỳ quý IV", start, start + 900, &[XA_A, XA_B])?;
    let mid = m["id"].as_str().context("meeting id")?.to_string();
    for (r, p) in [(&a, &pa), (&b, &pb)] {
        r.wait_for("the meeting in the schedule", Duration::from_secs(3), |s| {
            s.district.as_ref().is_some_and(|x| x.meetings >= 1)
        })?;
        let cache =
            std::fs::read_to_string(p.state_dir.join("schedule.json")).context("schedule cache")?;
        ensure!(cache.contains(&mid), "{} cached the meeting", r.name);
    }

    // Ops dies before the start; the rooms notice.
    d.ops.kill();
    for r in [&a, &b] {
        r.wait_for("ops unreachable", Duration::from_secs(5), |s| {
            s.district.as_ref().is_some_and(|x| !x.reachable)
        })?;
    }
    ensure!(
        unix_now() < start,
        "ops was down before the start (too slow to get here)"
    );

    let at = until_all(
        &[&a, &b],
        "in the meeting without ops",
        Duration::from_secs(25),
        |s| in_meeting(s, &mid),
    )?;
    for (r, (_, ms)) in [&a, &b].iter().zip(&at) {
        println!(
            "{} (ops down): scheduled start -> in_call: {} ms",
            r.name,
            ms - start * 1000
        );
        ensure!(*ms >= start * 1000, "{} joined before the start", r.name);
    }
    see_each_other(&a, &b)?;
    for r in [&a, &b] {
        let s = r.status()?;
        let x = s.district.context("district status")?;
        ensure!(
            !x.reachable && x.pending_events > 0,
            "{}: the join waits to be reported: {x:?}",
            r.name
        );
    }

    // Ops comes back on the same store: what happened reaches it.
    let t = Instant::now();
    d.ops.restart()?;
    for id in [&ida, &idb] {
        let evs = d
            .ops
            .eventually("the offline join reported", Duration::from_secs(10), |o| {
                let evs = o.events(id)?;
                Ok(evs
                    .iter()
                    .any(|e| {
                        e["event"]["kind"] == "joined"
                            && e["event"]["meeting_id"] == *mid
                            && e["event"]["offline"] == true
                    })
                    .then_some(evs))
            })?;
        println!(
            "{id}: events after ops came back ({:?}): {:?}",
            t.elapsed(),
            kinds(&evs)
        );
    }
    for r in [&a, &b] {
        r.wait_for("the queue drained", Duration::from_secs(5), |s| {
            s.district
                .as_ref()
                .is_some_and(|x| x.reachable && x.pending_events == 0)
        })?;
        ensure!(
            r.status()?.state == "in_call",
            "{} stayed in the call",
            r.name
        );
    }

    // Server push is back soon too: "convene now" reaches both rooms.
    for id in [&ida, &idb] {
        d.ops.eventually(
            "the push stream back after ops returned",
            Duration::from_secs(3),
            |o| Ok(o.push_connected(id).then_some(())),
        )?;
    }
    println!("push streams back {:?} after ops restarted", t.elapsed());
    let clicked = Instant::now();
    let resp = d.ops.convene("Họp khẩn sau sự cố", &[XA_A, XA_B])?;
    ensure!(resp["notified_devices"] == 2, "{resp}");
    let urgent = resp["meeting"]["id"].as_str().context("id")?.to_string();
    let at = until_all(
        &[&a, &b],
        "in the urgent meeting",
        Duration::from_secs(10),
        |s| in_meeting(s, &urgent),
    )?;
    let worst = at
        .iter()
        .map(|(t, _)| *t - clicked)
        .max()
        .unwrap_or_default();
    println!("convene after ops came back: click -> both in_call {worst:?}");
    ensure!(worst <= Duration::from_secs(5), "took {worst:?}");
    clean_and_unasked(&a)?;
    clean_and_unasked(&b)
}

#[test]
fn a_revoked_device_is_refused() -> Result<()> {
    let _one = one_at_a_time();
    let d = district("district-revoked")?;
    let (mut a, pa, spec) = d.room(A, XA_A)?;
    let id = d.ops.wait_enrolled(&a, Duration::from_secs(15))?;
    let r = d.ops.convene("Họp khẩn", &[XA_A])?;
    ensure!(r["notified_devices"] == 1, "{r}");
    let mid = r["meeting"]["id"].as_str().context("id")?.to_string();
    a.wait_for("in the urgent meeting", Duration::from_secs(10), |s| {
        in_meeting(s, &mid)
    })?;

    // Revoked during the call: the room leaves at once and says why.
    let t = Instant::now();
    d.ops.revoke(&id)?;
    let s = a.wait_for("idle and revoked", Duration::from_secs(5), |s| {
        s.state == "idle"
            && s.district
                .as_ref()
                .and_then(|x| x.problem.as_deref())
                .is_some_and(|p| p.contains("revoked"))
    })?;
    println!("revoked -> room out of the call: {:?}", t.elapsed());
    ensure!(s.call.is_none(), "{s:?}");
    ensure!(d.ops.fleet_status(&id)?.as_deref() == Some("revoked"));

    // It is not called any more.
    let r = d.ops.convene("Họp khẩn lần 2", &[XA_A])?;
    ensure!(r["notified_devices"] == 0, "{r}");
    std::thread::sleep(Duration::from_secs(2));
    let s = a.status()?;
    ensure!(s.state == "idle" && s.meeting.is_none(), "{s:?}");

    // Restarted, it stays revoked and does not enrol again.
    a.stop();
    let a2 = Daemon::start(d.dir.path(), &spec)?;
    let s = a2.wait_for("revoked after a restart", Duration::from_secs(5), |s| {
        s.district
            .as_ref()
            .and_then(|x| x.problem.as_deref())
            .is_some_and(|p| p.contains("revoked"))
    })?;
    ensure!(s.state == "idle", "{s:?}");
    std::thread::sleep(Duration::from_secs(2));
    let same_serial = d
        .ops
        .fleet_devices()?
        .into_iter()
        .filter(|x| x["serial"] == pa.serial.as_str())
        .count();
    ensure!(same_serial == 1, "no second identity: {same_serial}");
    ensure!(a2.status()?.state == "idle");
    clean_and_unasked(&a2)
}

/// Width and height from a PNG file's header.
/// The in-call screen's picture-in-picture shows our own camera: the sim
/// board's test pattern with the room's name drawn in white at its bottom
/// left (the publisher's overlay), where a self-view without a picture is
/// black. Looks at a few screen PNGs, as the one being written may be
/// caught half-way.
fn self_view_is_shown(png: &std::path::Path) -> Result<()> {
    use diemcau_media::screen::{Frame, LinkQuality, SELF_CHANNEL, Scene, ScreenState};
    let state = ScreenState::InCall {
        large: Some((0, String::new())),
        strip: vec![],
        muted: false,
        link_quality: LinkQuality::Good,
    };
    let pip = Scene::layout(&state, 1280, 720)
        .video(SELF_CHANNEL)
        .context("no self-view in the layout")?;
    let mut last = String::new();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(700));
        let Ok(frame) = Frame::read_png(png) else {
            continue;
        };
        // The name's corner: the lower third, the left half of the PiP.
        let (x0, y0) = (pip.x, pip.y + pip.h * 2 / 3);
        let mut bright = 0;
        for y in y0..pip.y + pip.h {
            for x in x0..pip.x + pip.w / 2 {
                let p = frame.pixel(x as u32, y as u32).unwrap_or([0; 3]);
                if p.iter().all(|c| *c > 170) {
                    bright += 1;
                }
            }
        }
        if bright >= 20 {
            println!("self-view at {pip:?}: {bright} white pixels of the room's name");
            return Ok(());
        }
        last = format!("{bright} white pixels in the self-view's name corner at {pip:?}");
    }
    bail!("no self-view on the in-call screen: {last}")
}

fn png_size(path: &std::path::Path) -> Result<(u32, u32)> {
    let b = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    ensure!(
        b.len() > 24 && b.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG"
    );
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Ok((be(16), be(20)))
}

#[test]
fn self_test_result_reaches_the_district() -> Result<()> {
    let _one = one_at_a_time();
    let d = district("district-selftest")?;
    let (a, _, _) = d.room(A, XA_A)?;
    let id = d.ops.wait_enrolled(&a, Duration::from_secs(15))?;
    let asked = Instant::now();
    let s = a.ctl(CtlCommand::SelfTest)?;
    let r = s.self_test.context("no self-test in the status")?;
    println!("self-test at the room after {:?}: {r:?}", asked.elapsed());
    for name in ["ops", "janus"] {
        let c = r
            .checks
            .iter()
            .find(|c| c.name == name)
            .with_context(|| format!("no {name} check in {r:?}"))?;
        ensure!(c.passed, "the {name} check failed: {c:?}");
    }
    // The next heartbeat carries it to the district, as the room ran it.
    let stored = d.ops.eventually(
        "the self-test at the district",
        Duration::from_secs(25),
        |o| {
            let dev = o.device(&id)?;
            let st = &dev["device"]["heartbeat"]["self_test"];
            Ok((st["at"].as_i64() == Some(r.at)).then(|| st.clone()))
        },
    )?;
    println!(
        "self-test at the district after {:?}: {stored}",
        asked.elapsed()
    );
    ensure!(stored["passed"] == r.passed, "{stored}");
    ensure!(stored["trigger"] == "ctl", "{stored}");
    let names: Vec<&str> = stored["checks"]
        .as_array()
        .context("checks")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let want: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    ensure!(
        names == want,
        "checks at the district {names:?}, at the room {want:?}"
    );
    clean_and_unasked(&a)
}
