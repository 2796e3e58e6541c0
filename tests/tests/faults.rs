//! Faults off the network path, end to end (issue 7): names that do not
//! resolve, and a wall clock that jumps. Real Janus from Debian, real
//! `diemcau-ops`, real daemons on the sim board, each test in a network
//! namespace and a mount namespace of its own ([`faults`]): the machine's
//! `/etc/hosts`, `/etc/resolv.conf` and clock are never touched, and no
//! name query leaves the test's namespace.
//!
//! The tests run one at a time: each starts Janus and encoding rooms on a
//! small shared machine, and they measure time and CPU.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use diemcau_tests::faults::{
    DnsStub, FakeClock, append_line, nameservers_unroutable, overlay_file, private_mounts,
};
use diemcau_tests::ops::Ops;
use diemcau_tests::*;

const JANUS_NAME: &str = "janus.diemcau.test";
const OPS_NAME: &str = "ops.diemcau.test";
const ROOM: u64 = 7007;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn room() -> JanusRoom {
    JanusRoom {
        id: ROOM,
        pin: None,
    }
}

/// A test's private view of names: its own `/etc/hosts` (localhost only,
/// appended to by the test) and `/etc/resolv.conf` (the [`DnsStub`] on
/// 127.0.0.1, which says "no such name" to everything).
struct Names {
    hosts: PathBuf,
    dns: DnsStub,
}

impl Names {
    /// Call after [`isolate`], in the test's thread.
    fn private(dir: &Path) -> Result<Names> {
        // The namespace has no route off the machine: the machine's own
        // name servers cannot be reached from here.
        let routable = nameservers_unroutable("/etc/resolv.conf")?;
        ensure!(
            routable.is_empty(),
            "name servers reachable from the test namespace: {routable:?}"
        );
        ensure!(
            run_ip_default_route()?.is_empty(),
            "the test namespace has a default route"
        );
        private_mounts()?;
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n::1 localhost\n")?;
        let resolv = dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )?;
        let dns = DnsStub::start("127.0.0.1")?;
        overlay_file(&hosts, "/etc/hosts")?;
        overlay_file(&resolv, "/etc/resolv.conf")?;
        ensure!(
            std::fs::read_to_string("/etc/hosts")? == std::fs::read_to_string(&hosts)?,
            "the test sees its own hosts file"
        );
        ensure!(
            lookup(JANUS_NAME).is_err(),
            "{JANUS_NAME} does not resolve yet"
        );
        Ok(Names { hosts, dns })
    }

    /// Adds `name` → `ip` to the test's hosts file.
    fn add(&self, name: &str, ip: &str) -> Result<()> {
        append_line(&self.hosts, &format!("{ip} {name}"))?;
        ensure!(lookup(name).is_ok(), "{name} resolves now");
        Ok(())
    }

    fn queries_for(&self, name: &str) -> usize {
        self.dns.queries().iter().filter(|q| *q == name).count()
    }
}

fn run_ip_default_route() -> Result<String> {
    let out = std::process::Command::new("ip")
        .args(["route", "show", "default"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn lookup(name: &str) -> std::io::Result<Vec<std::net::SocketAddr>> {
    use std::net::ToSocketAddrs as _;
    (name, 80).to_socket_addrs().map(|a| a.collect())
}

fn names_the_lookup(reason: &str) -> bool {
    let r = reason.to_lowercase();
    r.contains("resolve") || r.contains("lookup") || r.contains("name or service")
}

/// CPU share of one core `pid` used over `secs` seconds.
fn cpu_share(pid: u32, secs: u64) -> Result<f64> {
    let c0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    Ok((cpu_seconds(pid)? - c0) / t0.elapsed().as_secs_f64())
}

#[test]
fn janus_name_that_does_not_resolve_is_retried_and_joined_once_it_does() -> Result<()> {
    let _one = one_at_a_time();
    isolate()?;
    let dir = scratch("dns-janus")?;
    let names = Names::private(dir.path())?;
    let janus = Janus::start(&dir.path().join("janus"), &[room()])?;
    let mut spec = RoomSpec::new("Xa Ban Ve", &janus, &room());
    spec.janus_url = format!("ws://{JANUS_NAME}:8188/");
    spec.video_out = "screen-png".into();
    spec.stamp = false;
    let mut d = Daemon::start(dir.path(), &spec)?;
    let idle = cpu_share(d.pid().context("pid")?, 3)?;
    d.ctl(CtlCommand::Join)?;
    let s = d.wait_for(
        "retrying, saying the name does not resolve",
        Duration::from_secs(10),
        |s| s.state == "retrying" && s.reason.as_deref().is_some_and(names_the_lookup),
    )?;
    println!(
        "name does not resolve: state {} reason {:?}",
        s.state, s.reason
    );
    // Keeps trying, calmly.
    let q0 = names.queries_for(JANUS_NAME);
    let pid = d.pid().context("pid")?;
    let cpu = cpu_share(pid, 6)?;
    let asked = names.queries_for(JANUS_NAME) - q0;
    let s = d.status()?;
    println!(
        "while failing: {:.1} % of a core (idle with the screen: {:.1} %), {asked} queries for {JANUS_NAME} in 6 s, state {}, screen {:?}",
        cpu * 100.0,
        idle * 100.0,
        s.state,
        s.screen
    );
    ensure!(d.alive(), "the daemon keeps running");
    ensure!(asked >= 1, "it keeps asking");
    ensure!(asked <= 12, "no lookup storm: {asked} queries in 6 s");
    ensure!(
        cpu - idle < 0.15,
        "no busy retry loop: {:.1} % of a core over the idle {:.1} %",
        cpu * 100.0,
        idle * 100.0
    );
    ensure!(s.state == "retrying" || s.state == "joining", "{s:?}");
    ensure!(
        s.screen.as_deref() == Some("error"),
        "the screen says why: {:?}",
        s.screen
    );

    names.add(JANUS_NAME, JANUS_IP)?;
    let t0 = Instant::now();
    let s = d.wait_for("in the call by itself", Duration::from_secs(15), |s| {
        s.state == "in_call"
    })?;
    let took = t0.elapsed();
    println!("name added to the hosts file -> in_call in {took:.1?}");
    ensure!(
        took <= Duration::from_secs(7),
        "joined {took:?} after the name resolved"
    );
    ensure!(
        s.last_error.as_deref().is_some_and(names_the_lookup),
        "the failure is remembered: {s:?}"
    );
    d.check_log()
}

const XA: &str = "xa-ban-ve";
const A: &str = "Xa Ban Ve";
const B: &str = "Huyen Trung Tam";

fn in_meeting(s: &Status, meeting: &str) -> bool {
    s.state == "in_call" && s.meeting.as_deref() == Some(meeting)
}

#[test]
fn district_names_that_do_not_resolve_enrol_and_join_once_they_do() -> Result<()> {
    let _one = one_at_a_time();
    isolate()?;
    let dir = scratch("dns-district")?;
    let names = Names::private(dir.path())?;
    let mut janus = Janus::start_with_http(&dir.path().join("janus"), &[])?;
    // Ops hands out meetings naming Janus by its host name.
    janus.ws_url = format!("ws://{JANUS_NAME}:8188/");
    let ops = Ops::start(&dir.path().join("ops"), &janus, &[(XA, "Xã Bản Vẽ")])?;
    let p = ops.provision(dir.path(), A, XA)?;
    // The provisioning file names ops by its host name too.
    let text = std::fs::read_to_string(&p.provisioning_file)?;
    let ops_url = ops.url.replace("127.0.0.1", OPS_NAME);
    std::fs::write(&p.provisioning_file, text.replace(&ops.url, &ops_url))?;
    let mut spec = RoomSpec::new(A, &janus, &room());
    spec.extra_media = p.config.clone();
    spec.stamp = false;
    let mut d = Daemon::start(dir.path(), &spec)?;

    let s = d.wait_for(
        "ops unreachable, saying the name does not resolve",
        Duration::from_secs(10),
        |s| {
            s.district
                .as_ref()
                .is_some_and(|x| !x.reachable && x.problem.as_deref().is_some_and(names_the_lookup))
        },
    )?;
    println!(
        "{OPS_NAME} does not resolve: district {:?}",
        s.district.as_ref().and_then(|x| x.problem.clone())
    );
    let q0 = names.queries_for(OPS_NAME);
    let cpu = cpu_share(d.pid().context("pid")?, 6)?;
    let asked = names.queries_for(OPS_NAME) - q0;
    println!(
        "while failing: {:.1} % of a core, {asked} queries for {OPS_NAME} in 6 s",
        cpu * 100.0
    );
    ensure!(d.alive(), "the daemon keeps running");
    ensure!((1..=12).contains(&asked), "{asked} queries in 6 s");
    ensure!(cpu < 0.10, "no busy retry loop: {:.1} %", cpu * 100.0);
    ensure!(d.status()?.state == "idle");

    names.add(OPS_NAME, "127.0.0.1")?;
    let t0 = Instant::now();
    ops.wait_enrolled(&d, Duration::from_secs(15))?;
    let took = t0.elapsed();
    println!("{OPS_NAME} added to the hosts file -> enrolled and reachable in {took:.1?}");
    ensure!(took <= Duration::from_secs(8), "enrolled {took:?} after");
    let s = d.status()?;
    ensure!(
        s.district.as_ref().is_some_and(|x| x.problem.is_none()),
        "the problem is gone: {:?}",
        s.district
    );

    // "Convene now": the meeting's Janus does not resolve yet.
    let r = ops.convene("Họp khẩn: sạt lở đất", &[XA])?;
    let mid = r["meeting"]["id"].as_str().context("id")?.to_string();
    let s = d.wait_for(
        "retrying the meeting, saying the name does not resolve",
        Duration::from_secs(10),
        |s| {
            s.state == "retrying"
                && s.meeting.as_deref() == Some(mid.as_str())
                && s.reason.as_deref().is_some_and(names_the_lookup)
        },
    )?;
    println!("meeting's {JANUS_NAME} does not resolve: {:?}", s.reason);
    names.add(JANUS_NAME, JANUS_IP)?;
    let t0 = Instant::now();
    d.wait_for("in the meeting", Duration::from_secs(15), |s| {
        in_meeting(s, &mid)
    })?;
    let took = t0.elapsed();
    println!("{JANUS_NAME} added -> in the meeting in {took:.1?}");
    ensure!(took <= Duration::from_secs(7), "joined {took:?} after");
    d.check_log()
}

/// Unix seconds of a daemon log line's time stamp
/// (`2026-12-01T22:27:01.858707Z ...`).
fn log_time(line: &str) -> Option<i64> {
    let n = |r: std::ops::Range<usize>| line.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn frames_from(s: &Status, name: &str) -> u64 {
    peer(s, name).map_or(0, |p| p.media.video_frames)
}

/// Frames per second A decodes from B and B from A over `secs` seconds;
/// fails if A leaves call `call` (or B its call) meanwhile.
fn fps_over(a: &Daemon, b: &Daemon, secs: u64, call: Option<u64>) -> Result<(f64, f64)> {
    let (a0, b0) = (a.status()?, b.status()?);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(250));
        let s = a.status()?;
        ensure!(
            s.state == "in_call" && s.call == call,
            "{} left call {call:?}: {s:?}\n{}",
            a.name,
            tail(&a.log_text(), 20)
        );
        ensure!(b.status()?.state == "in_call", "{} left", b.name);
    }
    let (a1, b1) = (a.status()?, b.status()?);
    let dt = t0.elapsed().as_secs_f64();
    let fps = |s0: &Status, s1: &Status, from: &str| {
        frames_from(s1, from).saturating_sub(frames_from(s0, from)) as f64 / dt
    };
    Ok((fps(&a0, &a1, B), fps(&b0, &b1, A)))
}

fn joins_logged(d: &Daemon) -> usize {
    d.log_text()
        .lines()
        .filter(|l| l.contains("joining district meeting"))
        .count()
}

#[test]
fn wall_clock_jumps_do_not_disturb_the_call_or_the_schedule() -> Result<()> {
    use diemcau_tests::ops::unix_now;
    let _one = one_at_a_time();
    isolate()?;
    let dir = scratch("clock")?;
    let janus = Janus::start_with_http(&dir.path().join("janus"), &[])?;
    let mut ops = Ops::start(&dir.path().join("ops"), &janus, &[(XA, "Xã Bản Vẽ")])?;
    let p = ops.provision(dir.path(), A, XA)?;
    let clock = FakeClock::new(&dir.path().join("clock"))?;
    let mut spec = RoomSpec::new(A, &janus, &room());
    spec.extra_media = p.config.clone();
    spec.stamp = false;
    let a = Daemon::start_with_env(dir.path(), &spec, &clock.env())?;
    ops.wait_enrolled(&a, Duration::from_secs(15))?;

    // A meeting an hour from now by the district's clock.
    let start = unix_now() + 3600;
    let m = ops.create_meeting("Họp giao ban quý I", start, start + 7200, &[XA])?;
    let mid = m["id"].as_str().context("meeting id")?.to_string();
    a.wait_for("the meeting in the schedule", Duration::from_secs(5), |s| {
        s.district
            .as_ref()
            .is_some_and(|x| x.next_meeting_starts_at == Some(start))
    })?;
    // B sits in the meeting's Janus room already, on the machine's clock.
    let mut bspec = RoomSpec::new(B, &janus, &room());
    bspec.room_id = m["janus"]["room_id"].as_u64().context("room id")?;
    bspec.pin = m["janus"]["pin"].as_str().map(str::to_string);
    bspec.stamp = false;
    let b = Daemon::start(dir.path(), &bspec)?;
    b.ctl(CtlCommand::Join)?;

    // 1. Ops reachable: A's clock jumps past the start. The district's
    //    clock says the meeting is an hour away: A stays idle, and its
    //    signed requests keep being accepted.
    clock.set_offset(3660)?;
    let jumped = Instant::now();
    while jumped.elapsed() < Duration::from_secs(3) {
        let s = a.status()?;
        ensure!(
            s.state == "idle" && s.district.as_ref().is_some_and(|x| x.reachable),
            "a jump of the room's clock is not the district's clock: {s:?}\n{}",
            tail(&a.log_text(), 20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(joins_logged(&a) == 0, "A joined early");
    // Ops goes away; A's log line about it carries A's (jumped) clock.
    ops.kill();
    a.wait_for("ops unreachable", Duration::from_secs(8), |s| {
        s.district.as_ref().is_some_and(|x| !x.reachable)
    })?;
    let line = a
        .log_text()
        .lines()
        .rev()
        .find(|l| l.contains("reachability changed"))
        .map(str::to_string)
        .context("no reachability line")?;
    let ahead = log_time(&line).context("log time")? - unix_now();
    println!("A's clock is {ahead} s ahead of the machine's (set: 3660)");
    ensure!((3600..3720).contains(&ahead), "the jump reached A: {line}");
    ensure!(a.status()?.state == "idle");
    drop(a);

    // 2. A board that has not reached ops since it booted has only its own
    //    clock: it starts with ops down and the cached schedule, then its
    //    clock jumps past the start (NTP after a boot without RTC).
    clock.set_offset(0)?;
    let a = Daemon::start_with_env(dir.path(), &spec, &clock.env())?;
    a.wait_for("the cached meeting", Duration::from_secs(5), |s| {
        s.district
            .as_ref()
            .is_some_and(|x| !x.reachable && x.next_meeting_starts_at == Some(start))
    })?;
    std::thread::sleep(Duration::from_millis(1500));
    ensure!(a.status()?.state == "idle", "not due yet");
    b.wait_for("B in its call", Duration::from_secs(20), |s| {
        s.state == "in_call"
    })?;
    clock.set_offset(3660)?;
    let t0 = Instant::now();
    let s = a.wait_for("in the meeting", Duration::from_secs(15), |s| {
        in_meeting(s, &mid)
    })?;
    println!(
        "clock jumped past the start -> in the meeting in {:.1?}",
        t0.elapsed()
    );
    let call = s.call;
    a.wait_for("B's video", Duration::from_secs(20), |s| {
        frames_from(s, B) > 30
    })?;
    b.wait_for("A's video", Duration::from_secs(20), |s| {
        frames_from(s, A) > 30
    })?;
    let before = fps_over(&a, &b, 3, call)?;

    // 3. Backwards, to before the start: A stays in the same call.
    clock.set_offset(-3600)?;
    let after_back = fps_over(&a, &b, 5, call)?;
    // 4. Forward past the start again: not joined a second time.
    clock.set_offset(3660)?;
    let after_fwd = fps_over(&a, &b, 4, call)?;
    println!(
        "fps A<-B / B<-A: before {before:.1?}, after the backward jump {after_back:.1?}, after the forward jump {after_fwd:.1?}"
    );
    for (what, (ab, ba)) in [("backward", after_back), ("forward", after_fwd)] {
        ensure!(
            ab > 10.0 && ba > 10.0,
            "media after the {what} jump: A<-B {ab:.1} fps, B<-A {ba:.1} fps"
        );
    }
    ensure!(
        joins_logged(&a) == 1,
        "joined once:\n{}",
        tail(&a.log_text(), 30)
    );
    let log = a.log_text();
    ensure!(!log.contains("call lost"), "{}", tail(&log, 30));
    a.check_log()?;
    b.check_log()
}
