//! Janus VideoRoom signalling over Janus's WebSocket transport.
//!
//! One [`JanusClient`] is one Janus session: a task owns the WebSocket,
//! answers requests by transaction id, keeps the session alive, and turns
//! Janus's asynchronous messages into [`SignalEvent`]s. Anything Janus sends
//! that we cannot parse is logged and dropped; a closed socket ends the
//! session with [`SignalEvent::Closed`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::{Feed, HandleId, JoinedRoom, RoomSettings, SignalError, SignalEvent, Signalling};

const KEEPALIVE: Duration = Duration::from_secs(25);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const VIDEOROOM: &str = "janus.plugin.videoroom";

/// Janus VideoRoom error codes that retrying cannot fix.
fn videoroom_error_is_final(code: i64) -> bool {
    // 426 no such room, 433 unauthorized (wrong PIN / secret), 428 no such feed
    // 436 user ID exists (a second device with our id).
    matches!(code, 426 | 428 | 433)
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// A Janus session over WebSocket.
pub struct JanusClient {
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    session: u64,
    next_tx: AtomicU64,
    publisher: Mutex<Option<PublisherHandle>>,
    room: RoomSettings,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Clone, Copy)]
struct PublisherHandle {
    handle: HandleId,
    private_id: Option<u64>,
}

impl Drop for JanusClient {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The WebSocket handshake request for Janus at `url`, with its
/// sub-protocol.
fn janus_request(
    url: &str,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, SignalError> {
    let mut req = url
        .into_client_request()
        .map_err(|e| SignalError::Connect(url.to_string(), e.to_string()))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("janus-protocol"),
    );
    Ok(req)
}

/// Asks Janus at `url` who it is (`{"janus":"info"}`, no session), within
/// `timeout`: its name and version, e.g. `Janus WebRTC Server 1.1.2`. The
/// self-test's check that the conference server answers.
pub async fn server_info(url: &str, timeout: Duration) -> Result<String, SignalError> {
    let connect = || SignalError::Connect(url.to_string(), "timed out".into());
    let req = janus_request(url)?;
    let ask = async {
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| SignalError::Connect(url.to_string(), e.to_string()))?;
        let msg = json!({"janus": "info", "transaction": "diemcau-selftest"});
        ws.send(Message::Text(msg.to_string().into()))
            .await
            .map_err(|e| SignalError::Connect(url.to_string(), e.to_string()))?;
        while let Some(m) = ws.next().await {
            let m = m.map_err(|e| SignalError::Connect(url.to_string(), e.to_string()))?;
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| SignalError::Protocol(format!("{e}: {text}")))?;
            if v["transaction"] != "diemcau-selftest" {
                continue;
            }
            if v["janus"] != "server_info" {
                return Err(SignalError::Protocol(text.to_string()));
            }
            let _ = ws.close(None).await;
            return Ok(format!(
                "{} {}",
                v["name"].as_str().unwrap_or("Janus"),
                v["version_string"].as_str().unwrap_or("?")
            ));
        }
        Err(SignalError::Closed)
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| connect())?
}

impl JanusClient {
    /// Connects to Janus at `url` (`ws://host:8188/`), creates a session and
    /// starts delivering events on the returned channel.
    pub async fn connect(
        url: &str,
        room: RoomSettings,
    ) -> Result<(Self, mpsc::UnboundedReceiver<SignalEvent>), SignalError> {
        let req = janus_request(url)?;
        let (ws, _) = tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .map_err(|_| SignalError::Connect(url.to_string(), "timed out".into()))?
            .map_err(|e| SignalError::Connect(url.to_string(), e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();

        let writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        let reader_pending = pending.clone();
        let reader_events = ev_tx.clone();
        let reader = tokio::spawn(async move {
            let reason = loop {
                match stream.next().await {
                    Some(Ok(Message::Text(text))) => {
                        dispatch(text.as_str(), &reader_pending, &reader_events).await
                    }
                    Some(Ok(Message::Binary(_))) => {
                        tracing::warn!("janus sent a binary frame; ignored")
                    }
                    Some(Ok(Message::Close(frame))) => {
                        break format!("janus closed the connection ({frame:?})");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("signalling connection failed: {e}"),
                    None => break "signalling connection closed".to_string(),
                }
            };
            // Wake everyone waiting for an answer that will never come.
            reader_pending.lock().await.clear();
            let _ = reader_events.send(SignalEvent::Closed { reason });
        });

        let mut client = JanusClient {
            out: out_tx,
            pending,
            session: 0,
            next_tx: AtomicU64::new(1),
            publisher: Mutex::new(None),
            room,
            tasks: vec![writer, reader],
        };
        let resp = client.request(json!({"janus": "create"})).await?;
        client.session = resp
            .pointer("/data/id")
            .and_then(Value::as_u64)
            .ok_or_else(|| SignalError::Protocol(format!("create: no session id in {resp}")))?;

        let keepalive_out = client.out.clone();
        let session = client.session;
        client.tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                tokio::time::sleep(KEEPALIVE).await;
                n += 1;
                let msg = json!({"janus": "keepalive", "session_id": session, "transaction": format!("ka{n}")});
                if keepalive_out.send(Message::text(msg.to_string())).is_err() {
                    break;
                }
            }
        }));
        Ok((client, ev_rx))
    }

    fn transaction(&self) -> String {
        format!("t{}", self.next_tx.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends `msg` and waits for the first answer that is not an `ack`.
    async fn request(&self, mut msg: Value) -> Result<Value, SignalError> {
        let tx = self.transaction();
        msg["transaction"] = json!(tx);
        if self.session != 0 {
            msg["session_id"] = json!(self.session);
        }
        let (done_tx, done_rx) = oneshot::channel();
        self.pending.lock().await.insert(tx.clone(), done_tx);
        self.out
            .send(Message::text(msg.to_string()))
            .map_err(|_| SignalError::Closed)?;
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, done_rx).await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => return Err(SignalError::Closed),
            Err(_) => {
                self.pending.lock().await.remove(&tx);
                return Err(SignalError::Timeout(
                    msg["janus"].as_str().unwrap_or("request").to_string(),
                ));
            }
        };
        if resp["janus"] == "error" {
            return Err(SignalError::Server {
                code: resp
                    .pointer("/error/code")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                reason: resp
                    .pointer("/error/reason")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string(),
                fatal: false,
            });
        }
        // Plugin-level errors come inside plugindata.
        if let Some(data) = resp.pointer("/plugindata/data")
            && let Some(code) = data.get("error_code").and_then(Value::as_i64)
        {
            return Err(SignalError::Server {
                code,
                reason: data
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("videoroom error")
                    .to_string(),
                fatal: videoroom_error_is_final(code),
            });
        }
        Ok(resp)
    }

    fn send_nowait(&self, mut msg: Value) {
        msg["transaction"] = json!(self.transaction());
        msg["session_id"] = json!(self.session);
        let _ = self.out.send(Message::text(msg.to_string()));
    }

    async fn attach(&self) -> Result<HandleId, SignalError> {
        let resp = self
            .request(json!({"janus": "attach", "plugin": VIDEOROOM}))
            .await?;
        resp.pointer("/data/id")
            .and_then(Value::as_u64)
            .map(HandleId)
            .ok_or_else(|| SignalError::Protocol(format!("attach: no handle id in {resp}")))
    }

    async fn message(
        &self,
        handle: HandleId,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, SignalError> {
        let mut msg = json!({"janus": "message", "handle_id": handle.0, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        self.request(msg).await
    }

    fn with_pin(&self, mut body: Value) -> Value {
        if let Some(pin) = &self.room.pin {
            body["pin"] = json!(pin);
        }
        body
    }
}

impl Signalling for JanusClient {
    async fn join(&self) -> Result<JoinedRoom, SignalError> {
        let handle = self.attach().await?;
        let body = self.with_pin(json!({
            "request": "join",
            "ptype": "publisher",
            "room": self.room.room_id,
            "display": self.room.display_name,
        }));
        let resp = self.message(handle, body, None).await?;
        let data = resp
            .pointer("/plugindata/data")
            .ok_or_else(|| SignalError::Protocol(format!("join: no plugindata in {resp}")))?;
        if data["videoroom"] != "joined" {
            return Err(SignalError::Protocol(format!(
                "join: unexpected answer {data}"
            )));
        }
        let feed_id = data["id"]
            .as_u64()
            .ok_or_else(|| SignalError::Protocol(format!("join: no feed id in {data}")))?;
        let private_id = data["private_id"].as_u64();
        *self.publisher.lock().await = Some(PublisherHandle { handle, private_id });
        Ok(JoinedRoom {
            handle,
            feed_id,
            publishers: parse_publishers(data.get("publishers")),
        })
    }

    async fn publish(&self, offer_sdp: &str) -> Result<String, SignalError> {
        let handle = self
            .publisher
            .lock()
            .await
            .ok_or_else(|| SignalError::Protocol("publish before join".into()))?
            .handle;
        let resp = self
            .message(
                handle,
                json!({"request": "configure", "audio": true, "video": true}),
                Some(json!({"type": "offer", "sdp": offer_sdp})),
            )
            .await?;
        answer_sdp(&resp, "answer")
    }

    async fn subscribe(&self, feed: u64) -> Result<(HandleId, String), SignalError> {
        let handle = self.attach().await?;
        let private_id = self.publisher.lock().await.and_then(|p| p.private_id);
        let mut body = self.with_pin(json!({
            "request": "join",
            "ptype": "subscriber",
            "room": self.room.room_id,
            "streams": [{"feed": feed}],
        }));
        if let Some(p) = private_id {
            body["private_id"] = json!(p);
        }
        let resp = self.message(handle, body, None).await?;
        let offer = answer_sdp(&resp, "offer")?;
        Ok((handle, offer))
    }

    async fn start(&self, handle: HandleId, answer_sdp: &str) -> Result<(), SignalError> {
        self.message(
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer_sdp})),
        )
        .await
        .map(|_| ())
    }

    async fn unsubscribe(&self, handle: HandleId) {
        self.send_nowait(json!({"janus": "detach", "handle_id": handle.0}));
    }

    fn trickle(&self, handle: HandleId, mline: u32, candidate: Option<&str>) {
        let cand = match candidate {
            Some(c) => json!({"sdpMLineIndex": mline, "candidate": c}),
            None => json!({"completed": true}),
        };
        self.send_nowait(json!({"janus": "trickle", "handle_id": handle.0, "candidate": cand}));
    }

    async fn leave(&self) {
        if let Some(p) = *self.publisher.lock().await {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                self.message(p.handle, json!({"request": "leave"}), None),
            )
            .await;
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.request(json!({"janus": "destroy"})),
        )
        .await;
    }
}

fn answer_sdp(resp: &Value, kind: &str) -> Result<String, SignalError> {
    let jsep = resp
        .get("jsep")
        .ok_or_else(|| SignalError::Protocol(format!("no jsep {kind} in {resp}")))?;
    if jsep["type"] != kind {
        return Err(SignalError::Protocol(format!(
            "expected a jsep {kind}, got {}",
            jsep["type"]
        )));
    }
    jsep["sdp"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| SignalError::Protocol(format!("jsep {kind} without sdp")))
}

fn parse_publishers(v: Option<&Value>) -> Vec<Feed> {
    v.and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|p| {
                    Some(Feed {
                        id: p.get("id")?.as_u64()?,
                        display: p
                            .get("display")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Routes one text frame from Janus: answers to waiting requests, the rest
/// to the event channel. Malformed frames are logged and dropped.
async fn dispatch(text: &str, pending: &Pending, events: &mpsc::UnboundedSender<SignalEvent>) {
    let msg: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => {
            tracing::warn!(
                frame = %text.chars().take(200).collect::<String>(),
                "malformed message on the signalling connection; ignored"
            );
            return;
        }
    };
    let kind = msg["janus"].as_str().unwrap_or("");
    if let Some(tx) = msg["transaction"].as_str()
        && kind != "ack"
        && let Some(waiter) = pending.lock().await.remove(tx)
    {
        let _ = waiter.send(msg);
        return;
    }
    for ev in parse_event(&msg) {
        let _ = events.send(ev);
    }
}

/// Turns an unsolicited Janus message into events.
pub(crate) fn parse_event(msg: &Value) -> Vec<SignalEvent> {
    let handle = HandleId(msg["sender"].as_u64().unwrap_or(0));
    match msg["janus"].as_str().unwrap_or("") {
        "trickle" => {
            let c = &msg["candidate"];
            if c.get("completed").and_then(Value::as_bool) == Some(true) {
                return vec![SignalEvent::RemoteCandidate {
                    handle,
                    mline: 0,
                    candidate: None,
                }];
            }
            match (c["sdpMLineIndex"].as_u64(), c["candidate"].as_str()) {
                (Some(m), Some(cand)) => vec![SignalEvent::RemoteCandidate {
                    handle,
                    mline: m as u32,
                    candidate: Some(cand.to_string()),
                }],
                _ => {
                    tracing::warn!(%msg, "trickle without a usable candidate; ignored");
                    vec![]
                }
            }
        }
        "hangup" => vec![SignalEvent::HangUp {
            handle,
            reason: msg["reason"].as_str().unwrap_or("hangup").to_string(),
        }],
        "webrtcup" => vec![SignalEvent::WebRtcUp { handle }],
        "event" => {
            let data = &msg["plugindata"]["data"];
            let mut out = vec![];
            for feed in parse_publishers(data.get("publishers")) {
                out.push(SignalEvent::PublisherJoined(feed));
            }
            for key in ["unpublished", "leaving"] {
                if let Some(id) = data.get(key).and_then(Value::as_u64) {
                    out.push(SignalEvent::PublisherLeft { id });
                }
            }
            if data["videoroom"] == "destroyed" {
                out.push(SignalEvent::Closed {
                    reason: "the conference room was destroyed".into(),
                });
            }
            out
        }
        "timeout" => vec![SignalEvent::Closed {
            reason: "janus session timed out".into(),
        }],
        "ack" | "success" | "media" | "slowlink" | "detached" => vec![],
        other => {
            tracing::debug!(kind = other, "unhandled janus message");
            vec![]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_event_becomes_peer_joined() {
        let m = json!({"janus":"event","sender":5,"plugindata":{"plugin":VIDEOROOM,"data":{"videoroom":"event","room":1,"publishers":[{"id":77,"display":"Xã A"},{"display":"no id"}]}}});
        assert_eq!(
            parse_event(&m),
            vec![SignalEvent::PublisherJoined(Feed {
                id: 77,
                display: "Xã A".into()
            })]
        );
    }

    #[test]
    fn leaving_and_unpublished_become_peer_left() {
        let m =
            json!({"janus":"event","plugindata":{"data":{"videoroom":"event","unpublished":9}}});
        assert_eq!(parse_event(&m), vec![SignalEvent::PublisherLeft { id: 9 }]);
        let m = json!({"janus":"event","plugindata":{"data":{"videoroom":"event","leaving":9}}});
        assert_eq!(parse_event(&m), vec![SignalEvent::PublisherLeft { id: 9 }]);
    }

    #[test]
    fn trickle_candidates_are_parsed_and_bad_ones_dropped() {
        let m = json!({"janus":"trickle","sender":3,"candidate":{"sdpMLineIndex":1,"candidate":"candidate:1 1 udp 1 127.0.0.2 5000 typ host"}});
        assert!(matches!(
            &parse_event(&m)[..],
            [SignalEvent::RemoteCandidate {
                mline: 1,
                candidate: Some(_),
                ..
            }]
        ));
        let m = json!({"janus":"trickle","candidate":{"completed":true}});
        assert!(matches!(
            &parse_event(&m)[..],
            [SignalEvent::RemoteCandidate {
                candidate: None,
                ..
            }]
        ));
        let m = json!({"janus":"trickle","candidate":"garbage"});
        assert!(parse_event(&m).is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        for v in [
            json!(null),
            json!([]),
            json!({"janus": 5}),
            json!({"janus":"event","plugindata":"x"}),
            json!({"janus":"event","plugindata":{"data":{"publishers":"x","leaving":"y"}}}),
            json!({"janus":"hangup","reason":7}),
        ] {
            let _ = parse_event(&v);
        }
    }

    #[tokio::test]
    async fn dispatch_routes_answers_and_drops_garbage() {
        let pending: Pending = Arc::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (w_tx, w_rx) = oneshot::channel();
        pending.lock().await.insert("t1".into(), w_tx);
        dispatch("not json {", &pending, &tx).await;
        dispatch("[1,2,3]", &pending, &tx).await;
        dispatch(r#"{"janus":"ack","transaction":"t1"}"#, &pending, &tx).await;
        dispatch(
            r#"{"janus":"success","transaction":"t1","data":{"id":1}}"#,
            &pending,
            &tx,
        )
        .await;
        let v = w_rx.await.expect("answered");
        assert_eq!(v["janus"], "success");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn final_errors() {
        assert!(videoroom_error_is_final(433));
        assert!(videoroom_error_is_final(426));
        assert!(!videoroom_error_is_final(500));
    }
}
