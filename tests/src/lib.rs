//! End-to-end test harness: a private network, a real Janus from Debian and
//! room daemons on the sim board.
//!
//! Janus does not gather ICE candidates on a loopback interface, so every
//! test moves its thread into a network namespace of its own
//! ([`isolate`]) holding a veth device that carries 127.0.0.2 (Janus) and
//! 127.0.0.3+ (rooms). Everything the test starts (Janus, daemons) inherits
//! that namespace: nothing can reach beyond it, tests can run in parallel
//! with the same ports, and the namespace disappears with the test.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use diemcau_daemon::ctl::{Command as CtlCommand, Status};

pub mod faults;
pub mod netlab;
pub mod ops;

/// Address Janus listens on inside the test namespace.
pub const JANUS_IP: &str = "127.0.0.2";
/// The veth device carrying the test addresses.
pub const DEV: &str = "dcau0";

/// Runs `cmd` with `args`; fails with its stderr; returns its stdout.
pub(crate) fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Moves the calling thread (and so every thread and process it starts
/// afterwards) into a new, empty network namespace, and sets up loopback
/// and a veth device with 127.0.0.2 to 127.0.0.20. Needs root.
pub fn isolate() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("cannot create a network namespace (the end-to-end tests need root)")?;
    run("ip", &["link", "set", "lo", "up"])?;
    run(
        "ip",
        &["link", "add", DEV, "type", "veth", "peer", "name", "dcau1"],
    )?;
    run("ip", &["addr", "add", "127.0.0.2/8", "dev", DEV])?;
    for i in 3..=20 {
        run(
            "ip",
            &["addr", "add", &format!("127.0.0.{i}/32"), "dev", DEV],
        )?;
    }
    run("ip", &["link", "set", DEV, "up"])?;
    run("ip", &["link", "set", "dcau1", "up"])?;
    // Multicast would go out of the veth: lets tests see SSDP if anything sent it.
    run("ip", &["route", "add", "224.0.0.0/4", "dev", DEV])?;
    Ok(())
}

/// A test's scratch folder, kept when `DIEMCAU_KEEP` is set.
pub fn scratch(name: &str) -> Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("diemcau-{name}-"))
        .disable_cleanup(std::env::var_os("DIEMCAU_KEEP").is_some())
        .tempdir()?;
    Ok(dir)
}

/// A Janus room created from the test's VideoRoom config.
#[derive(Debug, Clone)]
pub struct JanusRoom {
    pub id: u64,
    pub pin: Option<String>,
}

/// A real Janus (Debian's package) running in the test's namespace.
pub struct Janus {
    child: Option<Child>,
    dir: PathBuf,
    pub ws_url: String,
    /// The HTTP API (`http://127.0.0.2:8088/janus`), when started with
    /// [`Janus::start_with_http`]: what `diemcau-ops` creates rooms through.
    pub http_url: Option<String>,
    starts: u32,
}

/// Port of Janus's HTTP API in the test namespace.
pub const JANUS_HTTP_PORT: u16 = 8088;

impl Janus {
    /// Writes a configuration into `dir` with the given rooms and starts Janus.
    pub fn start(dir: &Path, rooms: &[JanusRoom]) -> Result<Janus> {
        Self::start_inner(dir, rooms, false)
    }

    /// Like [`Janus::start`], with the HTTP API also on (on 127.0.0.2 in the
    /// test namespace), so a district server can create rooms.
    pub fn start_with_http(dir: &Path, rooms: &[JanusRoom]) -> Result<Janus> {
        Self::start_inner(dir, rooms, true)
    }

    fn start_inner(dir: &Path, rooms: &[JanusRoom], http: bool) -> Result<Janus> {
        fs::create_dir_all(dir)?;
        write_janus_config(dir, rooms, http)?;
        let mut j = Janus {
            child: None,
            dir: dir.to_path_buf(),
            ws_url: format!("ws://{JANUS_IP}:8188/"),
            http_url: http.then(|| format!("http://{JANUS_IP}:{JANUS_HTTP_PORT}/janus")),
            starts: 0,
        };
        j.spawn()?;
        Ok(j)
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let log = self.dir.join(format!("janus-{}.log", self.starts));
        let mut child = Command::new("janus")
            .arg("-F")
            .arg(&self.dir)
            .arg("-C")
            .arg(self.dir.join("janus.jcfg"))
            .arg("--disable-colors")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start janus (apt-get install janus)")?;
        let stdout = child.stdout.take().context("janus stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut f = fs::File::create(&log).ok();
            let mut ready_sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(f) = f.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if !ready_sent && line.contains("JANUS WebSockets transport plugin initialized") {
                    ready_sent = true;
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        rx.recv_timeout(Duration::from_secs(10))
            .context("janus did not start its WebSocket server within 10 s")?;
        if self.http_url.is_some() {
            let addr = format!("{JANUS_IP}:{JANUS_HTTP_PORT}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while ops::http(&addr, "GET", "/janus/info", &[], None).is_err() {
                if Instant::now() > deadline {
                    bail!("janus did not answer on its HTTP API within 10 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Kills Janus (SIGKILL: a crash, not a clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts Janus again with the same configuration.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write_janus_config(dir: &Path, rooms: &[JanusRoom], http: bool) -> Result<()> {
    let unused_plugins = [
        "audiobridge",
        "duktape",
        "echotest",
        "lua",
        "nosip",
        "recordplay",
        "sip",
        "streaming",
        "textroom",
        "videocall",
        "voicemail",
    ]
    .map(|p| format!("libjanus_{p}.so"))
    .join(",");
    let admin = format!("{:x}", std::process::id() as u64 * 0x9E37_79B9 + 17);
    let transports_off = if http {
        "libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so"
    } else {
        "libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so,libjanus_http.so"
    };
    fs::write(
        dir.join("janus.jcfg"),
        format!(
            r#"general: {{
	configs_folder = "{dir}"
	log_to_stdout = true
	debug_level = 4
	admin_secret = "{admin}"
	session_timeout = 60
	server_name = "diemcau-test"
	interface = "{JANUS_IP}"
}}
certificates: {{
}}
media: {{
	rtp_port_range = "20000-40000"
}}
nat: {{
	nice_debug = false
	ignore_mdns = true
	ice_enforce_list = "{DEV}"
}}
plugins: {{
	disable = "{unused_plugins}"
}}
transports: {{
	disable = "{transports_off}"
}}
loggers: {{
	disable = "libjanus_jsonlog.so"
}}
events: {{
	broadcast = false
	disable = "libjanus_gelfevh.so,libjanus_mqttevh.so,libjanus_nanomsgevh.so,libjanus_rabbitmqevh.so,libjanus_sampleevh.so,libjanus_wsevh.so"
}}
"#,
            dir = dir.display()
        ),
    )?;
    fs::write(
        dir.join("janus.transport.websockets.jcfg"),
        format!(
            "general: {{\n\tjson = \"compact\"\n\tws = true\n\tws_port = 8188\n\tws_ip = \"{JANUS_IP}\"\n\twss = false\n}}\nadmin: {{\n\tadmin_ws = false\n\tadmin_wss = false\n}}\n"
        ),
    )?;
    if http {
        fs::write(
            dir.join("janus.transport.http.jcfg"),
            format!(
                "general: {{\n\tjson = \"compact\"\n\tbase_path = \"/janus\"\n\thttp = true\n\tport = {JANUS_HTTP_PORT}\n\tip = \"{JANUS_IP}\"\n\thttps = false\n}}\nadmin: {{\n\tadmin_http = false\n\tadmin_https = false\n}}\n"
            ),
        )?;
    }
    // As ops creates its rooms (ops/server/src/janus.rs), no periodic
    // keyframe requests from Janus (`fir_freq` 0, its default; the rooms'
    // encoders send one every two seconds and on every PLI). The 2 Mbit/s
    // cap, which ops does not set, is the top of the rooms' own ladder.
    let mut vr = String::from("general: {\n}\n");
    for r in rooms {
        vr.push_str(&format!(
            "room-{id}: {{\n\tdescription = \"diemcau test room {id}\"\n\tpublishers = 64\n\tbitrate = 2000000\n\tvideocodec = \"h264,vp8\"\n\taudiocodec = \"opus\"\n\tnotify_joining = true\n{pin}}}\n",
            id = r.id,
            pin = r
                .pin
                .as_ref()
                .map(|p| format!("\tpin = \"{p}\"\n"))
                .unwrap_or_default()
        ));
    }
    fs::write(dir.join("janus.plugin.videoroom.jcfg"), vr)?;
    Ok(())
}

static ROOM_IP: AtomicU32 = AtomicU32::new(3);

/// How a test daemon is configured.
#[derive(Debug, Clone)]
pub struct RoomSpec {
    pub name: String,
    pub room_id: u64,
    pub pin: Option<String>,
    pub janus_url: String,
    pub video_out: String,
    /// `media.audio_out`: "none" (default) or "device".
    pub audio_out: String,
    pub extra_media: String,
    /// More keys of the `[control]` section (e.g. where the remotes are).
    pub extra_control: String,
    /// Draw time stamps into the picture (latency measurement).
    pub stamp: bool,
}

impl RoomSpec {
    pub fn new(name: &str, janus: &Janus, room: &JanusRoom) -> Self {
        RoomSpec {
            name: name.into(),
            room_id: room.id,
            pin: room.pin.clone(),
            janus_url: janus.ws_url.clone(),
            video_out: "none".into(),
            audio_out: "none".into(),
            extra_media: String::new(),
            extra_control: String::new(),
            stamp: true,
        }
    }
}

static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
static BUILT_OPS: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();

/// The `diemcau` binary of this workspace, built (once per process) with
/// the same profile as the running test or benchmark, or `$DIEMCAU_BIN`.
pub fn daemon_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("DIEMCAU_BIN") {
        return Ok(PathBuf::from(p));
    }
    BUILT
        .get_or_init(|| build_binary("diemcau", "diemcau").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// The `diemcau-ops` binary of this workspace, built like
/// [`daemon_binary`], or `$DIEMCAU_OPS_BIN`.
pub fn ops_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("DIEMCAU_OPS_BIN") {
        return Ok(PathBuf::from(p));
    }
    BUILT_OPS
        .get_or_init(|| build_binary("diemcau-ops", "diemcau-ops").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn build_binary(package: &str, name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test binary has no folder")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("no target folder")?;
    }
    let release = dir.ends_with("release");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.args(["build", "--quiet", "-p", package, "--bin", name])
        .arg("--manifest-path")
        .arg(&manifest);
    if release {
        cmd.arg("--release");
    }
    if let Some(target) = dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    // What cargo sets for the running test must not reach the inner build:
    // build scripts that watch these (ring watches CARGO_MANIFEST_DIR) would
    // see them change and rebuild half the workspace on every outer build.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_EXE_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&k.as_ref())
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let st = cmd
        .status()
        .with_context(|| format!("cannot run cargo to build {name}"))?;
    if !st.success() {
        bail!("building {name} failed");
    }
    let bin = dir.join(name);
    if !bin.exists() {
        bail!("{} does not exist after building", bin.display());
    }
    Ok(bin)
}

/// A room daemon started as its own process.
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub name: String,
    env: Vec<(String, String)>,
}

impl Daemon {
    pub fn start(dir: &Path, spec: &RoomSpec) -> Result<Daemon> {
        Self::start_with_env(dir, spec, &[])
    }

    /// [`Daemon::start`] with extra environment for the daemon's process
    /// (e.g. [`faults::FakeClock::env`]).
    pub fn start_with_env(dir: &Path, spec: &RoomSpec, env: &[(String, String)]) -> Result<Daemon> {
        let n = ROOM_IP.fetch_add(1, Ordering::Relaxed);
        let slug: String = spec
            .name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let base = dir.join(format!("room-{slug}-{n}"));
        fs::create_dir_all(&base)?;
        let socket = base.join("ctl.sock");
        let config = base.join("room.toml");
        let pin = spec
            .pin
            .as_ref()
            .map(|p| format!("pin = \"{p}\"\n"))
            .unwrap_or_default();
        fs::write(
            &config,
            format!(
                "[room]\nname = \"{name}\"\nboard = \"sim\"\n\n[conference]\njanus_url = \"{url}\"\nroom_id = {room}\n{pin}\n[media]\nvideo_out = \"{vo}\"\npng_dir = \"{png}\"\naudio_out = \"{ao}\"\nstamp_frames = {stamp}\n{extra}\n[control]\nsocket = \"{sock}\"\n{control}",
                control = spec.extra_control,
                name = spec.name,
                url = spec.janus_url,
                room = spec.room_id,
                vo = spec.video_out,
                ao = spec.audio_out,
                png = base.join("frames").display(),
                extra = spec.extra_media,
                stamp = spec.stamp,
                sock = socket.display(),
            ),
        )?;
        let log = base.join("daemon.log");
        let mut d = Daemon {
            child: None,
            socket,
            config,
            log,
            name: spec.name.clone(),
            env: env.to_vec(),
        };
        d.spawn()?;
        Ok(d)
    }

    fn spawn(&mut self) -> Result<()> {
        let logf = fs::File::create(&self.log)?;
        let child = Command::new(daemon_binary()?)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env(
                "DIEMCAU_LOG",
                std::env::var("DIEMCAU_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .context("cannot start diemcau")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.status().is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                bail!("diemcau exited with {st}: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "diemcau did not open its control socket: {}",
            self.log_text()
        )
    }

    /// The daemon's log shows no panic and no UPnP/SSDP search (libnice's
    /// UPnP would look for routers with SSDP; gssdp logs each try).
    pub fn check_log(&self) -> Result<()> {
        let log = self.log_text();
        if log.contains("panicked") {
            bail!("{} panicked:\n{}", self.name, tail(&log, 40));
        }
        if log.contains("SSDP") || log.contains("gssdp") {
            bail!("{} tried UPnP/SSDP:\n{}", self.name, tail(&log, 10));
        }
        Ok(())
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a control command and returns the status.
    pub fn ctl(&self, cmd: CtlCommand) -> Result<Status> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(diemcau_daemon::ctl::request(&self.socket, cmd))?)
    }

    pub fn status(&self) -> Result<Status> {
        self.ctl(CtlCommand::Status)
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Polls status until `pred` holds or `timeout` passes.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Status) -> bool,
    ) -> Result<Status> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(s) = self.status() {
                if pred(&s) {
                    return Ok(s);
                }
                last = Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{}: timed out after {:?} waiting for {what}; last status: {last:#?}\nlog:\n{}",
            self.name,
            timeout,
            tail(&self.log_text(), 40)
        )
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The peer called `name` in `s`, if present.
pub fn peer<'a>(s: &'a Status, name: &str) -> Option<&'a diemcau_daemon::ctl::PeerStatus> {
    s.peers.iter().find(|p| p.name == name)
}

/// User + system CPU seconds that process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    stat_cpu_seconds(&fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// CPU seconds (user and system) of each thread of process `pid`, by
/// thread name with its digits taken out (`queue3:src` and `queue4:src`
/// add up as `queue#:src`), largest first.
pub fn thread_cpu_seconds(pid: u32) -> Result<Vec<(String, f64)>> {
    let mut by_name: std::collections::BTreeMap<String, f64> = Default::default();
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(stat) = fs::read_to_string(task?.path().join("stat")) else {
            continue; // the thread ended
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map(|(n, _)| n)
            .unwrap_or("?");
        let mut short = String::new();
        for c in name.chars() {
            if !c.is_ascii_digit() {
                short.push(c);
            } else if !short.ends_with('#') {
                short.push('#');
            }
        }
        let name = short;
        *by_name.entry(name).or_default() += stat_cpu_seconds(&stat)?;
    }
    let mut v: Vec<_> = by_name.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(v)
}

fn stat_cpu_seconds(stat: &str) -> Result<f64> {
    let after = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state(0) ... utime(11) stime(12).
    let ut: f64 = f.get(11).context("utime")?.parse()?;
    let st: f64 = f.get(12).context("stime")?.parse()?;
    // Clock ticks: USER_HZ is 100 on every architecture we ship.
    Ok((ut + st) / 100.0)
}
