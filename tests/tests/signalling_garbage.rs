//! Garbage on the signalling connection is logged and survived.

use std::time::Duration;

use anyhow::{Result, ensure};
use diemcau_tests::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server that answers every request with garbage first
/// (broken JSON, a binary frame, wrong types, an answer to an unknown
/// transaction) and then with an answer of the wrong shape.
#[allow(clippy::result_large_err)] // the callback type is tungstenite's
async fn garbage_server(listener: tokio::net::TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let cb = |_req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                      mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                resp.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    "janus-protocol".parse().expect("header"),
                );
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                return;
            };
            let garbage = [
                Message::text("{not json"),
                Message::binary(vec![0u8, 159, 146, 150]),
                Message::text("[1,2,3]"),
                Message::text(r#"{"janus":17,"transaction":[]}"#),
                Message::text(r#"{"janus":"success","transaction":"nope","data":{"id":"x"}}"#),
                Message::text(r#"{"janus":"event","plugindata":{"data":{"publishers":"x"}}}"#),
                Message::text(r#"{"janus":"trickle","candidate":7}"#),
                Message::text("\u{0}\u{1}\u{2}"),
            ];
            let mut i = 0;
            while let Some(Ok(msg)) = ws.next().await {
                for m in &garbage {
                    let _ = ws.send(m.clone()).await;
                }
                if let Message::Text(t) = &msg {
                    // Answer the create with a session id of the wrong type.
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(t)
                        && let Some(tx) = v["transaction"].as_str()
                    {
                        let _ = ws
                            .send(Message::text(format!(
                                r#"{{"janus":"success","transaction":"{tx}","data":{{"id":"not a number"}}}}"#
                            )))
                            .await;
                    }
                }
                i += 1;
                if i > 3 {
                    break;
                }
            }
        });
    }
}

#[test]
fn garbage_on_the_signalling_connection_is_logged_and_survived() -> Result<()> {
    isolate()?;
    let dir = scratch("garbage")?;
    let rt = tokio::runtime::Runtime::new()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.2:0"))?;
    let port = listener.local_addr()?.port();
    rt.spawn(garbage_server(listener));

    let spec = RoomSpec {
        name: "Xa Rac".into(),
        room_id: 1234,
        pin: None,
        janus_url: format!("ws://127.0.0.2:{port}/"),
        video_out: "none".into(),
        audio_out: "none".into(),
        extra_media: String::new(),
        extra_control: String::new(),
        stamp: false,
    };
    let mut d = Daemon::start(dir.path(), &spec)?;
    d.ctl(CtlCommand::Join)?;
    let s = d.wait_for("a retry after the garbage", Duration::from_secs(15), |s| {
        s.state == "retrying" && s.last_error.is_some()
    })?;
    println!("reason: {:?}", s.reason);
    // Let it go round a few more times.
    std::thread::sleep(Duration::from_secs(3));
    ensure!(d.alive(), "daemon died:\n{}", d.log_text());
    let s = d.status()?;
    ensure!(s.state == "retrying" || s.state == "joining", "{s:?}");
    let log = d.log_text();
    ensure!(
        log.contains("malformed message"),
        "garbage is logged:\n{}",
        tail(&log, 30)
    );
    ensure!(!log.contains("panicked"), "{log}");
    // Leave stops the retrying.
    let s = d.ctl(CtlCommand::Leave)?;
    ensure!(s.state == "idle" || s.state == "leaving", "{s:?}");
    d.wait_for("idle", Duration::from_secs(5), |s| s.state == "idle")?;
    ensure!(
        d.stop().is_some_and(|st| st.success()),
        "clean exit on SIGTERM"
    );
    Ok(())
}
