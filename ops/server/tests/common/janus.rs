//! A real Janus (Debian package `janus`) started for one test: its own
//! config folder (copied from /etc/janus), HTTP transport only, on a free
//! loopback port; VideoRoom the only plugin. Killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Janus {
    child: Child,
    _dir: tempfile::TempDir,
    pub http_url: String,
}

impl Drop for Janus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn list_so(dir: &Path, keep: &str) -> String {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".so") && n != keep)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.join(",")
}

fn replace_once(text: &str, from: &str, to: &str, file: &str) -> String {
    assert!(
        text.contains(from),
        "{file}: expected `{from}` in the packaged config"
    );
    text.replacen(from, to, 1)
}

impl Janus {
    /// Starts Janus and waits until its HTTP API answers.
    pub async fn start() -> Janus {
        let etc = Path::new("/etc/janus");
        assert!(
            etc.join("janus.jcfg").exists(),
            "Janus is not installed: apt-get install janus"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let main = std::fs::read_to_string(etc.join("janus.jcfg")).expect("read janus.jcfg");
        let plugins_dir = main
            .lines()
            .find_map(|l| l.trim().strip_prefix("plugins_folder = \""))
            .and_then(|r| r.split('"').next())
            .unwrap_or("/usr/lib/x86_64-linux-gnu/janus/plugins")
            .to_owned();
        let transports_dir = plugins_dir.replace("/plugins", "/transports");
        let mut main = replace_once(
            &main,
            "configs_folder = \"/etc/janus\"",
            &format!("configs_folder = \"{}\"", d.display()),
            "janus.jcfg",
        );
        main = replace_once(
            &main,
            "#disable = \"libjanus_voicemail.so,libjanus_recordplay.so\"",
            &format!(
                "disable = \"{}\"",
                list_so(Path::new(&plugins_dir), "libjanus_videoroom.so")
            ),
            "janus.jcfg",
        );
        main = replace_once(
            &main,
            "#disable = \"libjanus_rabbitmq.so\"",
            &format!(
                "disable = \"{}\"",
                list_so(Path::new(&transports_dir), "libjanus_http.so")
            ),
            "janus.jcfg",
        );
        main = replace_once(
            &main,
            "#disable = \"libjanus_jsonlog.so\"",
            "disable = \"libjanus_jsonlog.so\"",
            "janus.jcfg",
        );
        std::fs::write(d.join("janus.jcfg"), main).expect("write janus.jcfg");

        let port = free_port();
        let http =
            std::fs::read_to_string(etc.join("janus.transport.http.jcfg")).expect("read http cfg");
        let http = replace_once(
            &http,
            "port = 8088",
            &format!("port = {port}"),
            "janus.transport.http.jcfg",
        );
        let http = replace_once(
            &http,
            "#ip = \"192.168.0.1\"",
            "ip = \"127.0.0.1\"",
            "janus.transport.http.jcfg",
        );
        std::fs::write(d.join("janus.transport.http.jcfg"), http).expect("write http cfg");
        std::fs::copy(
            etc.join("janus.plugin.videoroom.jcfg"),
            d.join("janus.plugin.videoroom.jcfg"),
        )
        .expect("copy videoroom cfg");

        let log = std::fs::File::create(d.join("janus.log")).expect("log file");
        let child = Command::new("janus")
            .arg("-F")
            .arg(d)
            .arg("-C")
            .arg(d.join("janus.jcfg"))
            .arg("--disable-colors")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start janus");
        let janus = Janus {
            child,
            http_url: format!("http://127.0.0.1:{port}/janus"),
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let t0 = Instant::now();
        loop {
            let r = client
                .post(&janus.http_url)
                .json(&serde_json::json!({"janus": "create", "transaction": "probe"}))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if let Ok(r) = r
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["janus"] == "success"
            {
                break;
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let log = std::fs::read_to_string(janus._dir.path().join("janus.log"))
                    .unwrap_or_default();
                panic!("Janus did not answer within 15 s; log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("janus up at {} after {:?}", janus.http_url, t0.elapsed());
        janus
    }
}
