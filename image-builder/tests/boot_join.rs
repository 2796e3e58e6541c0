//! Issue #6's emulated boot, end to end, as CI runs it: build the qemu-virt
//! image (cold when the cache is empty), start Janus and the real
//! `diemcau-ops` on this machine, write the site's provisioning file onto
//! the image with `diemcau-image customise` (district URL
//! `http://10.0.2.2:PORT`, a claim token from ops), boot it under
//! `qemu-system-aarch64` (TCG) with no keyboard, and check that the daemon
//! in the guest enrols, gets the meeting scheduled on ops, joins it by
//! itself and publishes media that reaches Janus.
//!
//! The network: after the build (which needs the Debian mirror) the test
//! moves into a network namespace of its own holding only `lo` and a veth
//! device with 198.18.0.1 (a benchmarking address, RFC 2544). QEMU's user
//! networking runs in that namespace, so from the guest 10.0.2.2 is the
//! namespace's 127.0.0.1 (ops listens there) and 198.18.0.1 is Janus. Janus
//! gathers its ICE candidate on the veth (it ignores loopback), the guest
//! reaches it through slirp's NAT and Janus learns the guest's
//! peer-reflexive address from its checks. No STUN server, UPnP off in
//! libnice, and no route out of the namespace: nothing leaves the machine.
//!
//! ```sh
//! DIEMCAU_IMAGE_E2E=1 DIEMCAU_DAEMON=target/cross-aarch64/aarch64-unknown-linux-gnu/debug/diemcau \
//!   DIEMCAU_OPS_BIN=target/debug/diemcau-ops \
//!   cargo test -p diemcau-image --test boot_join -- --ignored --nocapture
//! ```
//! (`image-builder/ci/boot-test.sh` does this, after installing the tools.)
//! Times printed: image build, boot-to-ready, boot-to-enrolled,
//! boot-to-in-call. Env: `DIEMCAU_IMAGE_CACHE` (default
//! `/var/cache/diemcau-image`), `DIEMCAU_BOOT_TIMEOUT` (seconds for the
//! whole boot-and-join part, default 900), `DIEMCAU_KEEP=1` keeps the
//! scratch folder (console log, Janus and ops logs), `DIEMCAU_BOOT_ECHO=1`
//! echoes the guest's console, `DIEMCAU_BOOT_IMAGE=IMG` boots an image
//! built before instead of building one (while working on the test).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diemcau_image::boottest::{self, BootOptions, Guest};
use diemcau_image::build::{BuildOptions, build};
use diemcau_image::spec::{Board, ImageSpec};
use serde_json::{Value, json};

/// Janus's address in the test namespace, as the guest reaches it.
const JANUS_IP: &str = "198.18.0.1";
const DEV: &str = "dcimg0";
const COMMUNE: &str = "xa-ci";
const ADMIN: &str = "can-bo-ci";
const PASSWORD: &str = "mat-khau-ci-rat-dai-2026";

type Res<T> = Result<T, String>;

fn sh(cmd: &str, args: &[&str]) -> Res<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A process killed when dropped.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; returns (status, Set-Cookie values, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Res<(u16, Vec<String>, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let (ct, payload) = body.unwrap_or(("text/plain", b""));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n",
        payload.len()
    );
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    req.push_str("\r\n");
    let mut raw = Vec::new();
    s.write_all(req.as_bytes())
        .and_then(|()| s.write_all(payload))
        .and_then(|()| s.read_to_end(&mut raw).map(|_| ()))
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no status in {head:?}"))?;
    let cookies = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.trim().split(';').next().unwrap_or("").to_owned())
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, cookies, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .unwrap_or(0);
        b = &b[eol + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

fn json_of(status: u16, body: &[u8], what: &str) -> Res<Value> {
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "{what}: {status}, not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The test's own network: `lo` and a veth device carrying Janus's address.
fn isolate() -> Res<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot make a network namespace (needs root): {e}"))?;
    sh("ip", &["link", "set", "lo", "up"])?;
    sh(
        "ip",
        &["link", "add", DEV, "type", "veth", "peer", "name", "dcimg1"],
    )?;
    sh(
        "ip",
        &["addr", "add", &format!("{JANUS_IP}/24"), "dev", DEV],
    )?;
    sh("ip", &["link", "set", DEV, "up"])?;
    sh("ip", &["link", "set", "dcimg1", "up"])?;
    Ok(())
}

struct Janus {
    _p: Proc,
    http: String,
    admin: String,
    secret: String,
    log: PathBuf,
}

/// Debian's Janus with the VideoRoom plugin, HTTP API and admin API on
/// 198.18.0.1, WebSocket on 198.18.0.1:8188, ICE only on the veth, no STUN.
fn start_janus(dir: &Path) -> Res<Janus> {
    let secret = format!("ci{:x}", std::process::id() as u64 * 2_654_435_761);
    let unused = [
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
    let files = [
        (
            "janus.jcfg",
            format!(
                "general: {{\n\tconfigs_folder = \"{d}\"\n\tlog_to_stdout = true\n\tdebug_level = 4\n\
                 \tadmin_secret = \"{secret}\"\n\tsession_timeout = 120\n\tserver_name = \"diemcau-boot-ci\"\n\
                 \tinterface = \"{JANUS_IP}\"\n}}\ncertificates: {{\n}}\n\
                 media: {{\n\trtp_port_range = \"20000-40000\"\n}}\n\
                 nat: {{\n\tnice_debug = false\n\tignore_mdns = true\n\tice_enforce_list = \"{DEV}\"\n}}\n\
                 plugins: {{\n\tdisable = \"{unused}\"\n}}\n\
                 transports: {{\n\tdisable = \"libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so\"\n}}\n\
                 loggers: {{\n\tdisable = \"libjanus_jsonlog.so\"\n}}\n\
                 events: {{\n\tbroadcast = false\n}}\n",
                d = dir.display()
            ),
        ),
        (
            "janus.transport.http.jcfg",
            format!(
                "general: {{\n\tjson = \"compact\"\n\tbase_path = \"/janus\"\n\thttp = true\n\tport = 8088\n\
                 \tip = \"{JANUS_IP}\"\n\thttps = false\n}}\n\
                 admin: {{\n\tadmin_base_path = \"/admin\"\n\tadmin_http = true\n\tadmin_port = 7088\n\
                 \tadmin_ip = \"{JANUS_IP}\"\n\tadmin_https = false\n}}\n"
            ),
        ),
        (
            "janus.transport.websockets.jcfg",
            format!(
                "general: {{\n\tjson = \"compact\"\n\tws = true\n\tws_port = 8188\n\tws_ip = \"{JANUS_IP}\"\n\
                 \twss = false\n}}\nadmin: {{\n\tadmin_ws = false\n\tadmin_wss = false\n}}\n"
            ),
        ),
        ("janus.plugin.videoroom.jcfg", "general: {\n}\n".to_owned()),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))?;
    }
    let log = dir.join("janus.log");
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let p = Proc(
        Command::new("janus")
            .arg("-F")
            .arg(dir)
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .arg("--disable-colors")
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start janus (apt-get install janus): {e}"))?,
    );
    let http = format!("{JANUS_IP}:8088");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_ok(&http, "/janus/info").is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "janus did not answer within 20 s:\n{}",
                tail_of(&log, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Janus {
        _p: p,
        http,
        admin: format!("{JANUS_IP}:7088"),
        secret,
        log,
    })
}

fn http_ok(addr: &str, path: &str) -> Res<()> {
    match http(addr, "GET", path, None, None)? {
        (200, _, _) => Ok(()),
        (s, _, _) => Err(format!("{s}")),
    }
}

fn tail_of(path: &Path, n: usize) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Janus {
    fn post(&self, addr: &str, path: &str, mut body: Value) -> Res<Value> {
        body["transaction"] = json!("ci");
        let b = body.to_string();
        let (st, _, r) = http(
            addr,
            "POST",
            path,
            None,
            Some(("application/json", b.as_bytes())),
        )?;
        json_of(st, &r, path)
    }

    fn admin_req(&self, path: &str, what: &str) -> Res<Value> {
        self.post(
            &self.admin,
            path,
            json!({"janus": what, "admin_secret": self.secret}),
        )
    }

    /// The room's publishers, through the VideoRoom API.
    fn publishers(&self, room: u64) -> Res<Vec<Value>> {
        let s = self.post(&self.http, "/janus", json!({"janus": "create"}))?;
        let sid = s["data"]["id"].as_u64().ok_or(format!("create: {s}"))?;
        let h = self.post(
            &self.http,
            &format!("/janus/{sid}"),
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
        )?;
        let hid = h["data"]["id"].as_u64().ok_or(format!("attach: {h}"))?;
        let r = self.post(
            &self.http,
            &format!("/janus/{sid}/{hid}"),
            json!({"janus": "message", "body": {"request": "listparticipants", "room": room}}),
        )?;
        let _ = self.post(
            &self.http,
            &format!("/janus/{sid}"),
            json!({"janus": "destroy"}),
        );
        let parts = r["plugindata"]["data"]["participants"]
            .as_array()
            .cloned()
            .ok_or(format!("listparticipants: {r}"))?;
        Ok(parts
            .into_iter()
            .filter(|p| p["publisher"].as_bool() == Some(true))
            .collect())
    }

    /// Media packets Janus has received on all its PeerConnections, and
    /// the selected ICE pairs (admin API, `handle_info`).
    fn packets_in(&self) -> Res<(u64, Vec<String>)> {
        let mut total = 0;
        let mut pairs = Vec::new();
        let l = self.admin_req("/admin", "list_sessions")?;
        for sid in l["sessions"].as_array().into_iter().flatten() {
            let Some(sid) = sid.as_u64() else { continue };
            let h = self.admin_req(&format!("/admin/{sid}"), "list_handles")?;
            for hid in h["handles"].as_array().into_iter().flatten() {
                let Some(hid) = hid.as_u64() else { continue };
                let info = self.admin_req(&format!("/admin/{sid}/{hid}"), "handle_info")?;
                total += in_packets(&info["info"]["webrtc"], false);
                collect_pairs(&info["info"]["webrtc"], &mut pairs);
            }
        }
        Ok((total, pairs))
    }
}

/// Sums the `packets` counters of what Janus received: `stats.in.packets`
/// of every medium in `handle_info` (Janus 1.1; `in_stats` in older ones).
fn in_packets(v: &Value, inside: bool) -> u64 {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| match x {
                Value::Number(n) if inside && k == "packets" => n.as_u64().unwrap_or(0),
                Value::Object(_) => in_packets(x, k == "in" || k == "in_stats"),
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

fn collect_pairs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s) if k == "selected-pair" => out.push(s.clone()),
                    _ => collect_pairs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_pairs(x, out)),
        _ => {}
    }
}

struct Ops {
    _p: Proc,
    addr: String,
    cookie: String,
    log: PathBuf,
}

/// The real district server: store made with its CLI (admin, commune),
/// serving on 127.0.0.1:PORT (10.0.2.2:PORT from the guest), driving Janus.
fn start_ops(bin: &Path, dir: &Path, janus: &Janus) -> Res<Ops> {
    let db = format!("sqlite://{}", dir.join("ops.db").display());
    let cli = |args: &[&str], stdin: Option<&str>| -> Res<()> {
        let mut c = Command::new(bin)
            .arg("--db")
            .arg(&db)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        if let (Some(mut w), Some(t)) = (c.stdin.take(), stdin) {
            let _ = writeln!(w, "{t}");
        }
        let out = c.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "diemcau-ops {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    cli(
        &["admin", "create", "--user", ADMIN, "--password-stdin"],
        Some(PASSWORD),
    )?;
    cli(
        &[
            "commune",
            "add",
            "--id",
            COMMUNE,
            "--name",
            "Xã Thử Nghiệm CI",
        ],
        None,
    )?;
    let addr = format!("127.0.0.1:{}", free_port());
    let log = dir.join("ops.log");
    let err = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let p = Proc(
        Command::new(bin)
            .arg("--db")
            .arg(&db)
            .args(["serve", "--listen", &addr, "--no-mdns"])
            .args(["--janus-url", &format!("http://{}/janus", janus.http)])
            .args(["--janus-ws-url", &format!("ws://{JANUS_IP}:8188/")])
            .args(["--heartbeat-interval-s", "5"])
            .env("RUST_LOG", "info,diemcau_ops::http=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_ok(&addr, "/healthz").is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "diemcau-ops did not answer within 20 s:\n{}",
                tail_of(&log, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let form = format!("username={ADMIN}&password={PASSWORD}");
    let (st, cookies, _) = http(
        &addr,
        "POST",
        "/login",
        None,
        Some(("application/x-www-form-urlencoded", form.as_bytes())),
    )?;
    let cookie = cookies
        .into_iter()
        .find(|c| c.starts_with("diemcau_session=") && c.len() > 16)
        .ok_or(format!("admin login failed: {st}"))?;
    Ok(Ops {
        _p: p,
        addr,
        cookie,
        log,
    })
}

impl Ops {
    fn api(&self, method: &str, path: &str, body: Option<Value>, want: u16) -> Res<Value> {
        let b = body.map(|b| b.to_string());
        let (st, _, r) = http(
            &self.addr,
            method,
            path,
            Some(&self.cookie),
            b.as_deref().map(|b| ("application/json", b.as_bytes())),
        )?;
        if st != want {
            return Err(format!(
                "{method} {path}: expected {want}, got {st}: {}",
                String::from_utf8_lossy(&r)
            ));
        }
        if r.is_empty() {
            Ok(Value::Null)
        } else {
            json_of(st, &r, path)
        }
    }

    /// The fleet page's devices: `(device_id, status)`.
    fn devices(&self) -> Res<Vec<(String, String)>> {
        let v = self.api("GET", "/api/v1/admin/fleet", None, 200)?;
        let mut all: Vec<Value> = v["communes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["devices"].as_array().cloned().unwrap_or_default())
            .collect();
        all.extend(v["unassigned"].as_array().cloned().unwrap_or_default());
        Ok(all
            .iter()
            .map(|d| {
                (
                    d["device_id"].as_str().unwrap_or("").to_owned(),
                    d["status"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Watches the guest's console while polling `f` once a second, until `f`
/// gives `Some` or `timeout` passes.
fn until<T>(
    g: &mut Guest,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Res<Option<T>>,
) -> Res<(f64, T)> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok((g.elapsed(), v)),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {} s waiting for {what} (last error: {last:?}); last console lines:\n{}",
                timeout.as_secs(),
                g.tail()
            ));
        }
        g.pump(Duration::from_secs(1)).map_err(|e| e.to_string())?;
    }
}

/// A path from the environment: relative ones are from the workspace root
/// (cargo runs tests in the package's folder).
fn from_workspace(p: String) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
    }
}

#[test]
fn received_packets_are_read_from_handle_info() {
    let info = json!({"media": {
        "video0": {"stats": {"in": {"packets": 1465, "bytes": 976116}, "out": {"packets": 7}}},
        "audio1": {"stats": {"in": {"packets": 3930}, "out": {"packets": 0}}},
    }, "ice": {"selected-pair": "198.18.0.1:37624 [host,udp] <-> 198.18.0.1:32945 [prflx,udp]"}});
    assert_eq!(in_packets(&info, false), 1465 + 3930);
    let mut pairs = Vec::new();
    collect_pairs(&info, &mut pairs);
    assert_eq!(pairs.len(), 1);
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!("\n  caused by: {c}"));
        cur = c.source();
    }
    s
}

#[test]
#[ignore = "cold image build and emulated boot and join: DIEMCAU_IMAGE_E2E=1, as root (image-builder/ci/boot-test.sh)"]
fn image_boots_enrols_and_joins_the_scheduled_meeting() {
    if std::env::var("DIEMCAU_IMAGE_E2E").as_deref() != Ok("1") {
        eprintln!("skipped: set DIEMCAU_IMAGE_E2E=1");
        return;
    }
    if let Err(e) = run() {
        panic!("{e}");
    }
}

fn run() -> Res<()> {
    let total = Instant::now();
    let cache = PathBuf::from(
        std::env::var("DIEMCAU_IMAGE_CACHE").unwrap_or_else(|_| "/var/cache/diemcau-image".into()),
    );
    let daemon = from_workspace(std::env::var("DIEMCAU_DAEMON").map_err(
        |_| "set DIEMCAU_DAEMON to the cross-built aarch64 daemon (scripts/cross/build-aarch64.sh)",
    )?);
    let ops_bin = from_workspace(
        std::env::var("DIEMCAU_OPS_BIN").unwrap_or_else(|_| "target/debug/diemcau-ops".into()),
    );
    let limit = Duration::from_secs(
        std::env::var("DIEMCAU_BOOT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(900),
    );
    let dir = tempfile::Builder::new()
        .prefix("diemcau-boot-join-")
        .disable_cleanup(std::env::var_os("DIEMCAU_KEEP").is_some())
        .tempdir()
        .map_err(|e| e.to_string())?;
    eprintln!("scratch folder: {}", dir.path().display());

    // 1. The image (the Debian base from the cache when it is there), or
    // one built before (DIEMCAU_BOOT_IMAGE, while working on the test).
    let t = Instant::now();
    let image = if let Ok(img) = std::env::var("DIEMCAU_BOOT_IMAGE") {
        from_workspace(img)
    } else {
        build(&BuildOptions {
            spec: ImageSpec::for_board(Board::QemuVirt).map_err(|e| chain(&e))?,
            daemon: Some(daemon),
            out_dir: dir.path().join("out"),
            cache_dir: cache,
            epoch: diemcau_image::DEFAULT_EPOCH,
            keep_rootfs: false,
        })
        .map_err(|e| chain(&e))
        .inspect(|b| eprintln!("base root file system from the cache: {}", b.base_cached))?
        .image
    };
    let build_s = t.elapsed().as_secs_f64();
    eprintln!("image build: {build_s:.0} s");

    // 2. This machine's district: Janus and ops, in a namespace of our own.
    isolate()?;
    let jdir = dir.path().join("janus");
    std::fs::create_dir_all(&jdir).map_err(|e| e.to_string())?;
    let janus = start_janus(&jdir)?;
    let odir = dir.path().join("ops");
    std::fs::create_dir_all(&odir).map_err(|e| e.to_string())?;
    let ops = start_ops(&ops_bin, &odir, &janus)?;
    let port = ops.addr.rsplit(':').next().unwrap_or("");
    let token = ops.api(
        "POST",
        "/api/v1/admin/tokens",
        Some(json!({"uses": 1, "expires_in_s": 3600, "commune": COMMUNE})),
        201,
    )?["token"]
        .as_str()
        .ok_or("no token in the answer")?
        .to_owned();

    // A meeting scheduled on ops before the room is even switched on, under
    // way by the time it boots: the room must learn of it from its
    // schedule and join by itself.
    let start = unix_now() + 5;
    let m = ops.api(
        "POST",
        "/api/v1/admin/meetings",
        Some(json!({"title": "Giao ban CI", "starts_at": start, "ends_at": start + 3600, "communes": [COMMUNE]})),
        201,
    )?;
    let room = m["janus"]["room_id"]
        .as_u64()
        .ok_or(format!("no janus.room_id in {m}"))?;

    // 3. The technician's step: the site's provisioning file.
    let img = image.to_string_lossy().into_owned();
    sh(
        env!("CARGO_BIN_EXE_diemcau-image"),
        &[
            "customise",
            &img,
            "--district-url",
            &format!("http://10.0.2.2:{port}"),
            "--claim-token",
            &token,
            "--commune",
            COMMUNE,
        ],
    )?;

    // 4. Boot, no keyboard.
    let console = dir.path().join("console.log");
    let mut g = Guest::start(&BootOptions {
        image: image.clone(),
        ready: boottest::READY_LINE.into(),
        timeout: limit,
        memory_mib: 1024,
        smp: 2,
        console_log: Some(console.clone()),
        echo: std::env::var_os("DIEMCAU_BOOT_ECHO").is_some(),
        // The guest must reach ops and Janus; the namespace keeps it here.
        restrict: false,
    })
    .map_err(|e| chain(&e))?;
    let boot = Instant::now();
    let left = |what: &str| -> Res<Duration> {
        limit
            .checked_sub(boot.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or(format!("no time left for {what}"))
    };
    let ready = g
        .wait_for(boottest::READY_LINE, left("ready")?)
        .map_err(|e| format!("{}\n(console: {})", chain(&e), console.display()))?;
    g.times.ready = Some(ready);
    eprintln!("{}", boottest::summary(&g.times));

    let (enrolled, device) = until(
        &mut g,
        "the device on the fleet page",
        left("enrolment")?,
        || Ok(ops.devices()?.into_iter().next().map(|(id, _)| id)),
    )
    .map_err(|e| format!("{e}\nops log:\n{}", tail_of(&ops.log, 20)))?;
    eprintln!("boot-to-enrolled: {enrolled:.1} s (device {device})");

    let (in_call, _) = until(
        &mut g,
        "in_call on the fleet page",
        left("the join")?,
        || {
            Ok(ops
                .devices()?
                .into_iter()
                .any(|(id, st)| id == device && st == "in_call")
                .then_some(()))
        },
    )
    .map_err(|e| {
        format!(
            "{e}\nops log:\n{}\njanus log:\n{}",
            tail_of(&ops.log, 20),
            tail_of(&janus.log, 20)
        )
    })?;
    eprintln!("boot-to-in-call: {in_call:.1} s (the meeting was under way before the boot)");

    // 5. Media from the guest reaches Janus: a publisher in the meeting's
    // room, and Janus's received packet count grows.
    let (_, publishers) = until(
        &mut g,
        "the guest publishing in the Janus room",
        left("publishing")?,
        || {
            let p = janus.publishers(room)?;
            Ok((!p.is_empty()).then_some(p))
        },
    )?;
    let (_, (first, pairs)) = until(&mut g, "media packets at Janus", left("media")?, || {
        let (n, pairs) = janus.packets_in()?;
        Ok((n > 0).then_some((n, pairs)))
    })?;
    g.pump(Duration::from_secs(5)).map_err(|e| chain(&e))?;
    let (second, _) = janus.packets_in()?;
    eprintln!(
        "janus room {room}: publishers {}; packets in {first} then {second} 5 s later; ICE pair {pairs:?}",
        publishers
            .iter()
            .map(|p| p["display"].as_str().unwrap_or("?").to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if second <= first {
        return Err(format!(
            "media stopped: Janus received {first} then {second} packets\njanus log:\n{}",
            tail_of(&janus.log, 30)
        ));
    }
    let events = ops.api("GET", &format!("/api/v1/admin/devices/{device}"), None, 200)?;
    let joined = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["event"]["kind"] == "joined");
    if !joined {
        return Err(format!("ops has no joined event: {events}"));
    }
    eprintln!(
        "emulated boot and join: image build {build_s:.0} s | boot-to-ready {ready:.1} s | boot-to-enrolled {enrolled:.1} s | boot-to-in-call {in_call:.1} s | whole test {:.0} s",
        total.elapsed().as_secs_f64()
    );
    g.stop();
    Ok(())
}
