//! The district control plane for end-to-end tests: the real `diemcau-ops`
//! binary as a child process in the test's network namespace, its SQLite
//! file in the test's scratch folder, the first admin made with its CLI (as
//! on a real server: there is no default password), and small helpers for
//! the admin API.
//!
//! The admin API is spoken with a tiny blocking HTTP/1.1 client ([`http`])
//! so the harness needs no HTTP library; the admin logs in once through
//! `/login` and uses the session cookie, like the fleet page does.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::{Janus, ops_binary, tail};

/// The admin made with `diemcau-ops admin create`.
pub const ADMIN_USER: &str = "can-bo-huyen";
pub const ADMIN_PASSWORD: &str = "mat-khau-rat-dai-2026";

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not JSON ({}): {}", self.status, self.text()))
    }
}

/// One HTTP/1.1 request to `addr` (`host:port`) with `Connection: close`.
/// `body` is `(content type, bytes)`.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Result<HttpResponse> {
    let sa: SocketAddr = addr.parse().with_context(|| format!("address {addr}"))?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(3))
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let payload = match body {
        Some((ct, b)) => {
            req.push_str(&format!("Content-Type: {ct}\r\n"));
            b
        }
        None => &[][..],
    };
    req.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
    s.write_all(req.as_bytes())?;
    s.write_all(payload)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("{method} {path}: reading the answer"))?;
    parse_response(&raw).with_context(|| format!("{method} {path}"))
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the answer")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk header")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(b.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn form_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Unix seconds now (the clock ops and the daemons share on this machine).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// How a room daemon is provisioned for the district: what to add to its
/// config (through [`crate::RoomSpec::extra_media`]) and where its agent
/// keeps its state.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub provisioning_file: PathBuf,
    pub state_dir: PathBuf,
    pub serial: String,
    pub commune: String,
    /// A `[district]` section for the room's config file.
    pub config: String,
}

/// A real `diemcau-ops` process in the test's namespace.
pub struct Ops {
    child: Option<Child>,
    pub dir: PathBuf,
    pub db_url: String,
    /// `127.0.0.1:PORT` inside the test namespace.
    pub addr: String,
    /// `http://127.0.0.1:PORT`, what rooms are provisioned with.
    pub url: String,
    janus_http: String,
    janus_ws: String,
    session: Option<String>,
    starts: u32,
}

impl Ops {
    /// Waits until room `d` is enrolled and reachable and ops has its push
    /// stream; returns its device id.
    pub fn wait_enrolled(&self, d: &crate::Daemon, timeout: Duration) -> Result<String> {
        let s = d.wait_for("enrolled and reachable", timeout, |s| {
            s.district
                .as_ref()
                .is_some_and(|x| x.enrolled && x.reachable)
        })?;
        let id = s
            .district
            .and_then(|x| x.device_id)
            .context("enrolled without a device id")?;
        self.eventually("the push stream", Duration::from_secs(10), |o| {
            Ok(o.push_connected(&id).then_some(()))
        })?;
        Ok(id)
    }

    /// Makes the store in `dir` (admin [`ADMIN_USER`] and `communes` added
    /// with the CLI), starts the server on a free port on 127.0.0.1 driving
    /// `janus` (which must have its HTTP API on) and logs the admin in.
    pub fn start(dir: &Path, janus: &Janus, communes: &[(&str, &str)]) -> Result<Ops> {
        fs::create_dir_all(dir)?;
        let db_url = format!("sqlite://{}", dir.join("ops.db").display());
        let janus_http = janus
            .http_url
            .clone()
            .context("Janus must be started with Janus::start_with_http for ops")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut ops = Ops {
            child: None,
            dir: dir.to_path_buf(),
            db_url,
            url: format!("http://{addr}"),
            addr,
            janus_http,
            janus_ws: janus.ws_url.clone(),
            session: None,
            starts: 0,
        };
        ops.cli(
            &["admin", "create", "--user", ADMIN_USER, "--password-stdin"],
            Some(ADMIN_PASSWORD),
        )?;
        for (id, name) in communes {
            ops.cli(&["commune", "add", "--id", id, "--name", name], None)?;
        }
        ops.spawn()?;
        Ok(ops)
    }

    /// Runs a `diemcau-ops` CLI command on this store.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut child = Command::new(ops_binary()?)
            .arg("--db")
            .arg(&self.db_url)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run diemcau-ops")?;
        if let Some(mut w) = child.stdin.take()
            && let Some(text) = stdin
        {
            writeln!(w, "{text}")?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "diemcau-ops {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("ops-{}.log", self.starts))
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let log = fs::File::create(self.log_path())?;
        let child = Command::new(ops_binary()?)
            .arg("--db")
            .arg(&self.db_url)
            .args(["serve", "--listen", &self.addr])
            .args(["--janus-url", &self.janus_http])
            .args(["--janus-ws-url", &self.janus_ws])
            .args(["--heartbeat-interval-s", "1"])
            .env(
                "RUST_LOG",
                std::env::var("DIEMCAU_OPS_LOG")
                    .unwrap_or_else(|_| "info,diemcau_ops::http=debug".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start diemcau-ops")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(r) = http(&self.addr, "GET", "/healthz", &[], None)
                && r.status == 200
            {
                break;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                bail!("diemcau-ops exited with {st}:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!(
                    "diemcau-ops did not answer within 15 s:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.login()
    }

    /// Logs the admin in through the login form; keeps the session cookie.
    pub fn login(&mut self) -> Result<()> {
        let form = format!(
            "username={}&password={}",
            form_escape(ADMIN_USER),
            form_escape(ADMIN_PASSWORD)
        );
        let r = http(
            &self.addr,
            "POST",
            "/login",
            &[],
            Some(("application/x-www-form-urlencoded", form.as_bytes())),
        )?;
        let cookie = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .find_map(|(_, v)| {
                v.split(';')
                    .next()
                    .filter(|c| c.starts_with("diemcau_session=") && c.len() > 16)
            })
            .map(str::to_string);
        match cookie {
            Some(c) => {
                self.session = Some(c);
                Ok(())
            }
            None => bail!(
                "admin login failed: {} {:?}",
                r.status,
                r.header("location")
            ),
        }
    }

    /// Kills the server (SIGKILL: a crash or a power cut, not a shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same address and store.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.session = None;
        self.spawn()
    }

    /// Whether the process is running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The server's log since its last start.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// An admin API request with the session cookie; returns status and
    /// JSON body (`null` when empty).
    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let cookie = self.session.as_deref().context("admin not logged in")?;
        let bytes = body.map(|b| b.to_string().into_bytes());
        let r = http(
            &self.addr,
            method,
            path,
            &[("Cookie", cookie)],
            bytes.as_deref().map(|b| ("application/json", b)),
        )?;
        let v = if r.body.is_empty() {
            Value::Null
        } else {
            r.json()?
        };
        Ok((r.status, v))
    }

    fn admin_ok(&self, method: &str, path: &str, body: Option<&Value>, want: u16) -> Result<Value> {
        let (st, v) = self.admin(method, path, body)?;
        ensure!(
            st == want,
            "{method} {path}: expected {want}, got {st}: {v}"
        );
        Ok(v)
    }

    /// A single-use claim token for `commune`, valid for an hour.
    pub fn token(&self, commune: &str) -> Result<String> {
        let v = self.admin_ok(
            "POST",
            "/api/v1/admin/tokens",
            Some(&json!({"uses": 1, "expires_in_s": 3600, "commune": commune})),
            201,
        )?;
        Ok(v["token"].as_str().context("token in answer")?.to_string())
    }

    /// Writes a provisioning file (district URL and a new claim token for
    /// `commune`), as `diemcau-image customise` puts on the boot partition,
    /// and returns the `[district]` section for room `name`'s config.
    pub fn provision(&self, dir: &Path, name: &str, commune: &str) -> Result<Provisioned> {
        let slug: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let base = dir.join(format!("district-{slug}"));
        fs::create_dir_all(&base)?;
        let provisioning_file = base.join("diemcau-provision.toml");
        let token = self.token(commune)?;
        fs::write(
            &provisioning_file,
            format!(
                "district_url = \"{}\"\nclaim_token = \"{token}\"\n",
                self.url
            ),
        )?;
        let state_dir = base.join("state");
        let serial = format!("SN-{slug}-{}", std::process::id());
        let config = format!(
            "\n[district]\nprovisioning_file = \"{}\"\nstate_dir = \"{}\"\nserial = \"{serial}\"\nheartbeat_secs = 1\n",
            provisioning_file.display(),
            state_dir.display()
        );
        Ok(Provisioned {
            provisioning_file,
            state_dir,
            serial,
            commune: commune.to_string(),
            config,
        })
    }

    /// Schedules a meeting; returns it (`id`, `janus.room_id`, ...).
    pub fn create_meeting(
        &self,
        title: &str,
        starts_at: i64,
        ends_at: i64,
        communes: &[&str],
    ) -> Result<Value> {
        self.admin_ok(
            "POST",
            "/api/v1/admin/meetings",
            Some(&json!({"title": title, "starts_at": starts_at, "ends_at": ends_at, "communes": communes})),
            201,
        )
    }

    /// "Convene now"; returns `{meeting, notified_devices}`.
    pub fn convene(&self, title: &str, communes: &[&str]) -> Result<Value> {
        self.admin_ok(
            "POST",
            "/api/v1/admin/convene",
            Some(&json!({"title": title, "communes": communes})),
            201,
        )
    }

    /// Revokes a device.
    pub fn revoke(&self, device_id: &str) -> Result<()> {
        self.admin_ok(
            "POST",
            &format!("/api/v1/admin/devices/{device_id}/revoke"),
            Some(&json!({})),
            204,
        )
        .map(|_| ())
    }

    /// `GET /api/v1/admin/devices/{id}`: the device and its recent events.
    pub fn device(&self, device_id: &str) -> Result<Value> {
        self.admin_ok(
            "GET",
            &format!("/api/v1/admin/devices/{device_id}"),
            None,
            200,
        )
    }

    /// The device's events as stored by ops, most recent first; each is
    /// `{"event": {kind, meeting_id, offline, ...}, "received_at": ...}`.
    pub fn events(&self, device_id: &str) -> Result<Vec<Value>> {
        Ok(self.device(device_id)?["events"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Every device on the fleet page.
    pub fn fleet_devices(&self) -> Result<Vec<Value>> {
        let v = self.admin_ok("GET", "/api/v1/admin/fleet", None, 200)?;
        let mut out: Vec<Value> = v["communes"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["devices"].as_array().cloned().unwrap_or_default())
            .collect();
        out.extend(v["unassigned"].as_array().cloned().unwrap_or_default());
        Ok(out)
    }

    /// The fleet status of a device (`online`, `in_call`, `offline`,
    /// `revoked`).
    pub fn fleet_status(&self, device_id: &str) -> Result<Option<String>> {
        Ok(self
            .fleet_devices()?
            .iter()
            .find(|d| d["device_id"] == device_id)
            .and_then(|d| d["status"].as_str().map(str::to_string)))
    }

    /// Whether the server logged a push stream opened by `device_id` since
    /// its last start (needs `diemcau_ops::http=debug`, the default here).
    pub fn push_connected(&self, device_id: &str) -> bool {
        self.log_text()
            .lines()
            .any(|l| l.contains("push stream opened") && l.contains(device_id))
    }

    /// Polls `f` until it gives `Some`, failing after `timeout` with the
    /// tail of the server's log.
    pub fn eventually<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Ops) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut last_err = None;
        loop {
            match f(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what} (last error: {last_err:?})\nops log:\n{}",
                    tail(&self.log_text(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Ops {
    fn drop(&mut self) {
        self.kill();
    }
}
