//! The fleet page in a real headless browser (Debian `chromium`), driven
//! over the DevTools protocol: log in, read the fleet, switch language,
//! "convene now" with clicks (the rooms must get it within 5 s), open a
//! device. Screenshots go to a temp folder, or to `docs/screens/` with
//! `DIEMCAU_UPDATE_SCREENS=1`.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{ADMIN, Device, Ops, PASSWORD};
use diemcau_agent::AgentEvent;
use diemcau_agent::api::{CallStats, DeviceState, Heartbeat, LinkStats};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Cdp {
    ws: Ws,
    next: u64,
    session: Option<String>,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("cdp send");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(20), self.ws.next())
                .await
                .expect("cdp answer in time")
                .expect("cdp open")
                .expect("cdp read");
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).expect("cdp json");
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    async fn wait_js(&mut self, expr: &str, what: &str) {
        let t0 = Instant::now();
        while self.eval(expr).await != json!(true) {
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "page never showed {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&mut self, dir: &std::path::Path, name: &str) {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("png data"))
            .expect("png b64");
        assert!(png.len() > 10_000, "screenshot {name} looks empty");
        std::fs::write(dir.join(name), png).expect("write screenshot");
    }
}

struct Browser {
    child: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn launch() -> (Browser, Cdp) {
    let profile = tempfile::tempdir().expect("profile");
    let mut child = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
            "--lang=vi-VN",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium must be installed (apt-get install chromium)");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let ws_url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(u) = l.split("DevTools listening on ").nth(1) {
                return u.trim().to_owned();
            }
        }
        panic!("chromium exited without a DevTools URL");
    })
    .await
    .expect("chromium DevTools URL within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .expect("cdp connect");
    let mut cdp = Cdp {
        ws,
        next: 0,
        session: None,
    };
    let target = cdp
        .call("Target.createTarget", json!({"url": "about:blank"}))
        .await;
    let s = cdp
        .call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )
        .await;
    cdp.session = Some(s["sessionId"].as_str().expect("session").to_owned());
    cdp.call("Page.enable", json!({})).await;
    cdp.call("Runtime.enable", json!({})).await;
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await;
    (
        Browser {
            child,
            _profile: profile,
        },
        cdp,
    )
}

fn hb(state: DeviceState, quality: u8, temp: f32) -> Heartbeat {
    Heartbeat {
        state,
        versions: Default::default(),
        uptime_s: 3600,
        temperature_c: Some(temp),
        link: LinkStats {
            kind: Some("ethernet".into()),
            signal_dbm: None,
            rtt_ms: Some(15),
            quality_pct: Some(quality),
        },
        call: (state == DeviceState::InCall).then_some(CallStats {
            meeting_id: None,
            bitrate_kbps: 1500,
            fps: 25.0,
            packets_lost: 2,
            rtt_ms: 30,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_page_in_headless_chromium() {
    let ops = Ops::start().await;
    {
        let store = &ops.server.as_ref().expect("server").state.store;
        diemcau_ops::admin::add_commune(store, "xa-son-ha", "Xã Sơn Hà")
            .await
            .expect("commune");
    }
    let mut a =
        Device::start(ops.device_config("a", &ops.token(1, Some("xa-a")).await, None)).await;
    let mut b =
        Device::start(ops.device_config("b", &ops.token(1, Some("xa-b")).await, None)).await;
    let mut c =
        Device::start(ops.device_config("c", &ops.token(1, Some("xa-son-ha")).await, None)).await;
    a.wait_enrolled(&ops).await;
    b.wait_enrolled(&ops).await;
    c.wait_enrolled(&ops).await;
    a.agent.report_heartbeat(hb(DeviceState::Idle, 88, 48.0));
    b.agent.report_heartbeat(hb(DeviceState::InCall, 55, 61.0));
    c.agent.shutdown(); // goes offline
    let start = common::now() + 3600;
    let r = ops
        .post(
            "/api/v1/admin/meetings",
            json!({"title": "Hội nghị triển khai kế hoạch tháng 12", "starts_at": start, "ends_at": start + 5400, "communes": ["xa-a", "xa-b", "xa-son-ha"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let cid = c.agent.device_id().expect("c id");
    common::eventually(15, "c offline", || async {
        let v: Value = ops
            .get(&format!("/api/v1/admin/devices/{cid}"))
            .await
            .json()
            .await
            .ok()?;
        (v["device"]["status"] == "offline").then_some(())
    })
    .await;

    let shots = match std::env::var_os("DIEMCAU_UPDATE_SCREENS") {
        Some(_) => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screens"),
        None => ops.dir.path().join("screens"),
    };
    std::fs::create_dir_all(&shots).expect("screens dir");

    let (_browser, mut cdp) = launch().await;
    cdp.call("Page.navigate", json!({"url": format!("{}/", ops.url)}))
        .await;
    cdp.wait_js(
        "location.pathname === '/login' && document.readyState === 'complete'",
        "login page",
    )
    .await;
    cdp.screenshot(&shots, "login.png").await;
    cdp.eval(&format!(
        "document.getElementById('u').value = {}; document.getElementById('p').value = {}; document.querySelector('form').submit(); true",
        json!(ADMIN),
        json!(PASSWORD)
    ))
    .await;
    cdp.wait_js(
        "location.pathname === '/' && document.querySelectorAll('tr.dev').length === 3",
        "fleet rows",
    )
    .await;
    cdp.wait_js(
        "document.getElementById('schedule').textContent.includes('tháng 12')",
        "schedule",
    )
    .await;
    let text = cdp.eval("document.body.innerText").await;
    let text = text.as_str().expect("text");
    for needle in [
        "Trực tuyến",
        "Đang họp",
        "Mất kết nối",
        "Xã Tân Lập",
        "Xã Sơn Hà",
        "Triệu tập ngay",
        "Lịch họp",
    ] {
        assert!(text.contains(needle), "page lacks {needle}:\n{text}");
    }
    assert_eq!(
        cdp.eval("document.getElementById('n-in_call').textContent")
            .await,
        "1"
    );
    assert_eq!(
        cdp.eval("document.getElementById('n-offline').textContent")
            .await,
        "1"
    );
    cdp.screenshot(&shots, "fleet-vi.png").await;

    cdp.eval("document.getElementById('lang-en').click(); true")
        .await;
    cdp.wait_js("document.body.innerText.includes('Convene now') && document.body.innerText.includes('In call')", "English labels")
        .await;
    cdp.screenshot(&shots, "fleet-en.png").await;

    // Convene now with clicks: tick Xã Tân Lập, type a title, click.
    cdp.eval(
        "document.querySelector('#c-communes input[value=\"xa-a\"]').click(); \
         document.getElementById('c-title').value = 'Họp khẩn phòng chống lũ'; true",
    )
    .await;
    let clicked = Instant::now();
    cdp.eval("document.getElementById('convene-btn').click(); true")
        .await;
    let ev = a
        .wait_for(5, "convene from the page", |e| {
            matches!(e, AgentEvent::Convene(_))
        })
        .await;
    let latency = clicked.elapsed();
    assert!(latency < Duration::from_secs(5), "convene took {latency:?}");
    assert!(
        matches!(ev, AgentEvent::Convene(m) if m.title == "Họp khẩn phòng chống lũ" && m.urgent)
    );
    eprintln!("convene click → room event: {latency:?}");
    cdp.wait_js(
        "document.getElementById('c-msg').textContent.includes('1')",
        "convene confirmation",
    )
    .await;
    cdp.wait_js(
        "document.getElementById('schedule').textContent.includes('phòng chống lũ')",
        "urgent meeting in schedule",
    )
    .await;
    cdp.screenshot(&shots, "convene-en.png").await;
    // The other commune's room is not called.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                if let Some(AgentEvent::Convene(_)) = b.events.recv().await {
                    return;
                }
            }
        })
        .await
        .is_err()
    );

    // Device detail with recent events, in Vietnamese.
    cdp.eval("document.getElementById('lang-vi').click(); document.querySelector('tr.dev').click(); true").await;
    cdp.wait_js("document.getElementById('detail').style.display === 'block' && document.getElementById('d-events').children.length > 0", "device detail")
        .await;
    cdp.eval("window.scrollTo(0, document.body.scrollHeight); true")
        .await;
    cdp.screenshot(&shots, "device-detail-vi.png").await;
}
