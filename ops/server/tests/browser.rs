//! The fleet page in a real headless browser (Debian `chromium`), driven
//! over the DevTools protocol: log in, read the fleet, switch language,
//! "convene now" with clicks (the rooms must get it within 5 s), create a
//! meeting with the form (typed title, start, end, communes ticked, submit
//! clicked with real mouse events; it must show in the schedule, in the
//! API and reach the rooms), open a device. The browser runs in the
//! district's time zone (Asia/Ho_Chi_Minh). Screenshots go to a temp
//! folder, or to `docs/screens/` with `DIEMCAU_UPDATE_SCREENS=1`.

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

    /// A real left click (mouse pressed and released) at the centre of
    /// the element, scrolled into view first.
    async fn click(&mut self, selector: &str) {
        let at = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.left + r.width / 2, r.top + r.height / 2]; }})()",
                json!(selector)
            ))
            .await;
        let (x, y) = match (at[0].as_f64(), at[1].as_f64()) {
            (Some(x), Some(y)) => (x, y),
            _ => panic!("no element {selector} to click"),
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "buttons": 1, "clickCount": 1}),
            )
            .await;
        }
    }

    /// Clicks into a text field and types `text` (as an input method would).
    async fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector).await;
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Sets a date/time field the way its picker does (value, then the
    /// `input` and `change` events); typing into one depends on the locale.
    async fn pick(&mut self, selector: &str, value: &str) {
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); e.value = {}; \
             e.dispatchEvent(new Event('input', {{bubbles: true}})); \
             e.dispatchEvent(new Event('change', {{bubbles: true}})); return e.value; }})()",
            json!(selector),
            json!(value)
        ))
        .await;
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
    cdp.call(
        "Emulation.setTimezoneOverride",
        json!({"timezoneId": "Asia/Ho_Chi_Minh"}),
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

/// Vietnam's offset from UTC (no daylight saving time).
const ICT_S: i64 = 7 * 3600;

/// `YYYY-MM-DD` of a day counted from 1970-01-01 (Hinnant's civil date).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Tomorrow in Vietnam at `hh:mm`: the `datetime-local` text and the unix time.
fn tomorrow_at(now: i64, hh: i64, mm: i64) -> (String, i64) {
    let day = (now + ICT_S).div_euclid(86_400) + 1;
    let text = format!("{}T{hh:02}:{mm:02}", civil_date(day));
    (text, day * 86_400 + hh * 3600 + mm * 60 - ICT_S)
}

#[test]
fn civil_dates() {
    assert_eq!(civil_date(0), "1970-01-01");
    assert_eq!(civil_date(19_782), "2024-02-29");
    assert_eq!(civil_date(20_819), "2027-01-01");
    // 2026-12-01 23:30 in Hanoi is 16:30 UTC; tomorrow 08:30 there is 01:30 UTC.
    let now = 1_796_142_600; // 2026-12-01T16:30:00Z
    assert_eq!(
        tomorrow_at(now, 8, 30),
        ("2026-12-02T08:30".to_owned(), 1_796_175_000)
    );
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
        self_test: None,
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
    let text = cdp
        .eval("document.getElementById('create').innerText")
        .await;
    for needle in [
        "Create meeting",
        "Meeting title",
        "Start",
        "End",
        "Communes",
    ] {
        assert!(
            text.as_str().is_some_and(|t| t.contains(needle)),
            "form lacks {needle}: {text}"
        );
    }
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

    // Create a meeting with the form, in Vietnamese, with real clicks and
    // typing: title, start, end, two communes, submit.
    cdp.click("#lang-vi").await;
    cdp.wait_js(
        "document.getElementById('create').innerText.includes('Kết thúc') && \
         document.getElementById('c-msg').textContent === 'Đã triệu tập; số điểm cầu nhận được: 1'",
        "Vietnamese form and the convene line translated",
    )
    .await;
    let text = cdp
        .eval("document.getElementById('create').innerText")
        .await;
    for needle in [
        "Tạo cuộc họp",
        "Tiêu đề cuộc họp",
        "Bắt đầu",
        "Kết thúc",
        "Các xã",
    ] {
        assert!(
            text.as_str().is_some_and(|t| t.contains(needle)),
            "form lacks {needle}: {text}"
        );
    }
    const TITLE: &str = "Giao ban trực tuyến quý I";
    let (start_text, starts_at) = tomorrow_at(common::now(), 8, 30);
    let (end_text, ends_at) = tomorrow_at(common::now(), 10, 0);
    let (early_text, _) = tomorrow_at(common::now(), 7, 0);
    cdp.type_into("#m-title", TITLE).await;
    cdp.pick("#m-start", &start_text).await;
    // A new start moves the end to an hour later.
    let (hour_later, _) = tomorrow_at(common::now(), 9, 30);
    assert_eq!(
        cdp.eval("document.getElementById('m-end').value").await,
        json!(hour_later)
    );
    // An end before the start is refused on the page, nothing is sent.
    cdp.pick("#m-end", &early_text).await;
    cdp.click("#m-communes input[value=\"xa-a\"]").await;
    cdp.click("#create-btn").await;
    cdp.wait_js(
        "document.getElementById('m-msg').textContent.includes('phải sau giờ bắt đầu')",
        "end-before-start message",
    )
    .await;
    cdp.pick("#m-end", &end_text).await;
    cdp.click("#m-communes input[value=\"xa-son-ha\"]").await;
    assert_eq!(
        cdp.eval("[...document.querySelectorAll('#m-communes input:checked')].map(i => i.value).sort().join(',')")
            .await,
        json!("xa-a,xa-son-ha")
    );
    assert_eq!(
        cdp.eval("document.getElementById('m-title').value").await,
        json!(TITLE)
    );
    cdp.screenshot(&shots, "create-meeting-vi.png").await;
    let r: Vec<Value> = ops
        .get("/api/v1/admin/meetings")
        .await
        .json()
        .await
        .expect("meetings json");
    assert!(
        !r.iter().any(|m| m["title"] == TITLE),
        "refused form still created a meeting"
    );
    cdp.click("#create-btn").await;
    cdp.wait_js(
        &format!(
            "document.getElementById('m-msg').textContent.includes('Đã tạo cuộc họp') && \
             document.getElementById('schedule').textContent.includes({})",
            json!(TITLE)
        ),
        "created meeting in the schedule",
    )
    .await;
    let row = cdp
        .eval(&format!(
            "[...document.querySelectorAll('#schedule tr')].map(r => r.innerText).find(t => t.includes({})) || ''",
            json!(TITLE)
        ))
        .await;
    let row = row.as_str().expect("row text");
    assert!(
        row.contains("08:30 – 10:00") && row.contains("Xã Tân Lập") && row.contains("Xã Sơn Hà"),
        "schedule row: {row}"
    );
    // The form is ready for the next meeting.
    assert_eq!(
        cdp.eval("document.getElementById('m-title').value").await,
        json!("")
    );
    // The API has it with the times the officer chose, in Vietnam's zone.
    let r: Vec<Value> = ops
        .get("/api/v1/admin/meetings")
        .await
        .json()
        .await
        .expect("meetings json");
    let m = r
        .iter()
        .find(|m| m["title"] == TITLE)
        .expect("meeting in the API");
    assert_eq!(m["starts_at"], json!(starts_at));
    assert_eq!(m["ends_at"], json!(ends_at));
    let mut communes: Vec<&str> = m["communes"]
        .as_array()
        .expect("communes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    communes.sort();
    assert_eq!(communes, vec!["xa-a", "xa-son-ha"]);
    assert_eq!(m["urgent"], json!(false));
    // And the room of Xã Tân Lập receives it in its schedule.
    a.wait_for(5, "the form's meeting in the room's schedule", |e| {
        matches!(e, AgentEvent::Schedule(ms) if ms.iter().any(|m| m.title == TITLE && m.starts_at == starts_at))
    })
    .await;

    // Device detail with recent events, in Vietnamese.
    cdp.eval("document.getElementById('lang-vi').click(); document.querySelector('tr.dev').click(); true").await;
    cdp.wait_js("document.getElementById('detail').style.display === 'block' && document.getElementById('d-events').children.length > 0", "device detail")
        .await;
    cdp.eval("window.scrollTo(0, document.body.scrollHeight); true")
        .await;
    cdp.screenshot(&shots, "device-detail-vi.png").await;
}
