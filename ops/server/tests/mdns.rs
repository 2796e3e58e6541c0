//! Zero-touch discovery end to end, entirely inside network namespaces made
//! for each test (root needed; nothing is sent on this machine's own
//! interfaces):
//!
//! ```text
//!  ns "room" 10.200.0.2 ──veth── 10.200.0.1 ns "ops" 10.201.0.1 ──veth── 10.201.0.2 ns "other"
//!  agent, no URL                  diemcau-ops serve --listen 10.200.0.1:8080       a browser
//! ```
//!
//! The real `diemcau-ops serve` binary advertises in "ops"; a real agent
//! whose provisioning file has a claim token and no URL finds it by mDNS
//! from "room" and enrols. The browser in "other" (on a subnet the server
//! does not listen on) must hear nothing, and so must a room browsing a
//! server started with `--no-mdns` or on loopback. The agent and browsers
//! run on threads moved into their namespace with setns(2). An independent
//! implementation, python-zeroconf (Debian `python3-zeroconf`), checks that
//! both sides speak the same mDNS as others do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diemcau_agent::discovery::{self, DiscoveryConfig, Method};
use diemcau_agent::{Agent, AgentConfig, AgentEvent};
use diemcau_mdns::{BrowseError, BrowseOptions};

const OPS_BIN: &str = env!("CARGO_BIN_EXE_diemcau-ops");

/// Three namespaces joined by two veth pairs; deleted on drop.
struct Lab {
    ops: String,
    room: String,
    other: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    /// `None` (with a notice) when not root or without iproute2.
    fn new(tag: &str) -> Option<Lab> {
        let root = nix::unistd::geteuid().is_root();
        let has_ip = Command::new("ip").arg("-V").output().is_ok();
        if !root || !has_ip {
            eprintln!("notice: mDNS namespace test skipped (needs root and iproute2)");
            return None;
        }
        let p = std::process::id();
        let lab = Lab {
            ops: format!("dcm-{p}-{tag}-ops"),
            room: format!("dcm-{p}-{tag}-room"),
            other: format!("dcm-{p}-{tag}-oth"),
        };
        for n in [&lab.ops, &lab.room, &lab.other] {
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        // Both ends are made directly inside their namespaces.
        ip(&[
            "link", "add", "v-ops", "netns", &lab.ops, "type", "veth", "peer", "name", "v-room",
            "netns", &lab.room,
        ]);
        ip(&[
            "link", "add", "v-ops2", "netns", &lab.ops, "type", "veth", "peer", "name", "v-other",
            "netns", &lab.other,
        ]);
        for (ns, dev, addr) in [
            (&lab.ops, "v-ops", "10.200.0.1/24"),
            (&lab.room, "v-room", "10.200.0.2/24"),
            (&lab.ops, "v-ops2", "10.201.0.1/24"),
            (&lab.other, "v-other", "10.201.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        Some(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in [&self.ops, &self.room, &self.other] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `f` on a new thread inside namespace `ns`, on its own runtime.
fn in_netns<F, Fut, T>(ns: &str, f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let path = PathBuf::from("/run/netns").join(ns);
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
}

async fn join<T: Send + 'static>(h: std::thread::JoinHandle<T>) -> T {
    tokio::task::spawn_blocking(move || h.join().expect("netns thread"))
        .await
        .expect("join")
}

fn cli(db: &str, args: &[&str]) -> String {
    let out = Command::new(OPS_BIN)
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run diemcau-ops");
    assert!(
        out.status.success(),
        "diemcau-ops {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `diemcau-ops serve` inside a namespace; killed on drop.
struct Serve {
    child: std::process::Child,
    log: PathBuf,
}

impl Serve {
    fn start(ns: &str, db: &str, dir: &Path, name: &str, args: &[&str]) -> Serve {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, OPS_BIN, "--db", db, "serve"])
            .args(args)
            .env("RUST_LOG", "info,diemcau_mdns=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn diemcau-ops");
        Serve { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_log(&self, needle: &str, secs: u64) -> Duration {
        let t0 = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "server log never said `{needle}`:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        t0.elapsed()
    }

    /// SIGTERM, as systemd stops it; waits for the exit.
    fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "server did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn browse_opts(timeout_ms: u64) -> BrowseOptions {
    BrowseOptions {
        timeout: Duration::from_millis(timeout_ms),
        api_version: diemcau_agent::api::API_VERSION,
        interfaces: None,
    }
}

/// A provisioning file with a claim token and no URL, and an agent config
/// for it (an empty resolv.conf, so only mDNS can find the server).
fn room_config(dir: &Path, token: &str) -> AgentConfig {
    let room = dir.join("room");
    std::fs::create_dir_all(&room).expect("room dir");
    let prov = room.join("diemcau-provision.toml");
    std::fs::write(&prov, format!("claim_token = \"{token}\"\n")).expect("provisioning");
    let resolv = room.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").expect("resolv.conf");
    let mut cfg = AgentConfig::new(room.join("state"), prov, "SN-MDNS-1", "sim");
    cfg.resolv_conf = resolv;
    cfg.retry_interval = Duration::from_millis(300);
    cfg.heartbeat_interval = Some(Duration::from_millis(500));
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_without_url_finds_ops_by_mdns_and_enrols() {
    let Some(lab) = Lab::new("e") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("ops.db").display());
    cli(
        &db,
        &["commune", "add", "--id", "xa-a", "--name", "Xã Tân Lập"],
    );
    let token = cli(
        &db,
        &["token", "create", "--uses", "1", "--commune", "xa-a"],
    );
    let mut ops = Serve::start(
        &lab.ops,
        &db,
        dir.path(),
        "ops",
        &["--listen", "10.200.0.1:8080"],
    );
    let announced = ops.wait_log("mDNS: advertising", 10).await;
    assert!(ops.log().contains("v-ops (10.200.0.1)"), "{}", ops.log());

    // The room: discovery alone, timed, then the real agent enrolling.
    let cfg = room_config(dir.path(), &token);
    let room = in_netns(&lab.room, move || async move {
        let found = discovery::discover(&DiscoveryConfig {
            resolv_conf: &cfg.resolv_conf,
            mdns_timeout: cfg.mdns_timeout,
            api_version: diemcau_agent::api::API_VERSION,
        })
        .await;
        let t0 = Instant::now();
        let (agent, mut events) = Agent::start(cfg).await.expect("agent start");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let mut id = None;
        while id.is_none() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(AgentEvent::OpsReachable(true))) => id = agent.device_id(),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        let enrolled = t0.elapsed();
        agent.shutdown();
        (found, id, enrolled)
    });
    // Meanwhile the other subnet hears nothing: ops does not listen there.
    let other = in_netns(&lab.other, || async {
        diemcau_mdns::browse(&browse_opts(1500)).await
    });
    let (found, id, enrolled) = join(room).await;
    let found = found.expect("discovered by mDNS");
    assert_eq!(found.url, "http://10.200.0.1:8080");
    assert_eq!(
        found.method,
        Method::Mdns {
            instance: "diemcau-ops".into()
        }
    );
    assert!(found.took < Duration::from_secs(1), "{:?}", found.took);
    let id = id.expect("agent enrolled through the discovered URL");
    match join(other).await {
        Err(BrowseError::NotFound { interfaces, .. }) => {
            assert_eq!(interfaces, "v-other (10.201.0.2)")
        }
        r => panic!("ops answered on an interface it does not listen on: {r:?}"),
    }

    // The server's store has the device, in the token's commune.
    let store = diemcau_ops::Store::connect(&db).await.expect("store");
    let dev = store.device(&id).await.expect("query").expect("device row");
    assert_eq!(dev.commune_id.as_deref(), Some("xa-a"));
    assert_eq!(dev.serial, "SN-MDNS-1");
    store.close().await;

    // Stopped by SIGTERM, the server says goodbye; then browsing ends,
    // empty-handed, at its timeout.
    ops.terminate();
    assert!(ops.log().contains("goodbye sent"), "{}", ops.log());
    let after = in_netns(&lab.room, || async {
        let t0 = Instant::now();
        (diemcau_mdns::browse(&browse_opts(800)).await, t0.elapsed())
    });
    let (r, waited) = join(after).await;
    assert!(matches!(r, Err(BrowseError::NotFound { .. })), "{r:?}");
    assert!(waited < Duration::from_millis(1300), "{waited:?}");
    eprintln!(
        "mDNS: server start → advertising {announced:?}; discovery {:?}; agent start → enrolled {enrolled:?}; empty browse ended after {waited:?}",
        found.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_mdns_flag_and_loopback_listen_stay_silent() {
    let Some(lab) = Lab::new("q") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("ops.db").display());
    cli(
        &db,
        &["commune", "add", "--id", "xa-a", "--name", "Xã Tân Lập"],
    );
    let token = cli(&db, &["token", "create", "--commune", "xa-a"]);
    let off = Serve::start(
        &lab.ops,
        &db,
        dir.path(),
        "off",
        &["--listen", "10.200.0.1:8080", "--no-mdns"],
    );
    let lo = Serve::start(
        &lab.ops,
        &db,
        dir.path(),
        "lo",
        &["--listen", "127.0.0.1:8081"],
    );
    off.wait_log("listening", 10).await;
    lo.wait_log("mDNS: not advertising", 10).await;

    let mut cfg = room_config(dir.path(), &token);
    cfg.mdns_timeout = Some(Duration::from_millis(700));
    let room = in_netns(&lab.room, move || async move {
        let t0 = Instant::now();
        let r = discovery::discover(&DiscoveryConfig {
            resolv_conf: &cfg.resolv_conf,
            mdns_timeout: cfg.mdns_timeout,
            api_version: diemcau_agent::api::API_VERSION,
        })
        .await;
        (r, t0.elapsed())
    });
    let (r, waited) = join(room).await;
    let e = r.expect_err("nothing advertises");
    let msg = e.to_string();
    assert!(
        msg.contains(
            "no usable answer to _diemcau-ops._tcp.local. on v-room (10.200.0.2) within 700 ms"
        ) && msg.contains("no search domain")
            && msg.contains("district_url"),
        "{msg}"
    );
    assert!(waited < Duration::from_millis(1200), "{waited:?}");
    assert!(!off.log().contains("mDNS"), "{}", off.log());
}

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/zeroconf_peer.py");

fn zeroconf_available() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import zeroconf"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// python-zeroconf advertising `name` on `addr:port` inside `ns` until
/// dropped (its stdin closes: it unregisters, sending goodbyes).
struct ZeroconfPeer(std::process::Child);

impl ZeroconfPeer {
    fn register(ns: &str, addr: &str, name: &str, port: u16) -> ZeroconfPeer {
        use std::io::BufRead as _;
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "/usr/bin/python3",
                PEER,
                "register",
                addr,
                name,
            ])
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut line).expect("read peer");
        assert_eq!(line.trim(), "registered");
        ZeroconfPeer(child)
    }

    fn stop(mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

impl Drop for ZeroconfPeer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interoperates_with_python_zeroconf() {
    let Some(lab) = Lab::new("z") else { return };
    if !zeroconf_available() {
        eprintln!("notice: zeroconf interop test skipped (apt-get install python3-zeroconf)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("ops.db").display());
    cli(
        &db,
        &["commune", "add", "--id", "xa-a", "--name", "Xã Tân Lập"],
    );

    // 1. zeroconf advertises "diemcau-ops" from the room's side; our
    //    browser (one-shot query) resolves it.
    let peer = ZeroconfPeer::register(&lab.room, "10.200.0.2", "diemcau-ops", 9999);
    let found = join(in_netns(&lab.room, || async {
        diemcau_mdns::browse(&browse_opts(3000)).await
    }))
    .await
    .expect("our browser finds the zeroconf service");
    assert_eq!(found.url, "http://10.200.0.2:9999");
    assert_eq!(found.host, "zc-ops.local.");

    // 2. Our server starts on the same link: its probe meets zeroconf's
    //    "diemcau-ops", so it renames itself.
    let ops = Serve::start(
        &lab.ops,
        &db,
        dir.path(),
        "ops",
        &["--listen", "10.200.0.1:8080"],
    );
    ops.wait_log("renamed", 10).await;
    ops.wait_log("mDNS: advertising", 10).await;
    let log = ops.log();
    assert!(
        log.contains("diemcau-ops (2)._diemcau-ops._tcp.local.")
            && log.contains("diemcau-ops-2.local."),
        "{log}"
    );
    peer.stop();

    // 3. zeroconf's browser (multicast queries from port 5353, answered by
    //    multicast) resolves our server: SRV, TXT and A.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.room,
            "/usr/bin/python3",
            PEER,
            "browse",
            "10.200.0.2",
        ])
        .output()
        .expect("run zeroconf browse");
    assert!(
        out.status.success(),
        "zeroconf found nothing: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        ops.log()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("zeroconf json");
    assert_eq!(v["name"], "diemcau-ops (2)._diemcau-ops._tcp.local.");
    assert_eq!(v["server"], "diemcau-ops-2.local.");
    assert_eq!(v["port"], 8080);
    assert_eq!(v["addresses"], serde_json::json!(["10.200.0.1"]));
    assert_eq!(v["properties"]["apiver"], "1");
    assert_eq!(v["properties"]["api"], "/api/v1");
    assert_eq!(v["properties"]["tls"], "0");
}
