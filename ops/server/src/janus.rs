//! A minimal client for Janus's HTTP API, enough to create, check and
//! destroy VideoRoom rooms. Each call opens a short session, attaches
//! `janus.plugin.videoroom`, sends one request and destroys the session.

use std::time::Duration;

use serde_json::{Value, json};

/// Talking to Janus failed.
#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    #[error("Janus unreachable at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Janus answered an error: {0}")]
    Janus(String),
    #[error("unexpected answer from Janus: {0}")]
    Protocol(String),
}

/// Settings of every room ops creates.
pub const PUBLISHERS: u32 = 130;

/// Client for one Janus server (`http://host:8088/janus`).
#[derive(Debug, Clone)]
pub struct JanusClient {
    http: reqwest::Client,
    url: String,
}

fn transaction() -> String {
    crate::util::random_id("t", 12)
}

impl JanusClient {
    /// A client for the Janus HTTP endpoint `url`.
    pub fn new(url: &str) -> Result<Self, JanusError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| JanusError::Unreachable {
                url: url.to_owned(),
                source,
            })?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    async fn post(&self, url: &str, body: Value) -> Result<Value, JanusError> {
        let unreachable = |source| JanusError::Unreachable {
            url: url.to_owned(),
            source,
        };
        let v: Value = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(unreachable)?
            .json()
            .await
            .map_err(unreachable)?;
        if v["janus"] == "error" {
            return Err(JanusError::Janus(
                v["error"]["reason"].as_str().unwrap_or("?").to_owned(),
            ));
        }
        Ok(v)
    }

    /// Sends one VideoRoom request and returns `plugindata.data`.
    async fn videoroom(&self, body: Value) -> Result<Value, JanusError> {
        let s = self
            .post(
                &self.url,
                json!({"janus": "create", "transaction": transaction()}),
            )
            .await?;
        let session = s["data"]["id"]
            .as_u64()
            .ok_or_else(|| JanusError::Protocol(format!("create: {s}")))?;
        let session_url = format!("{}/{session}", self.url);
        let result = async {
            let h = self
                .post(
                    &session_url,
                    json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": transaction()}),
                )
                .await?;
            let handle = h["data"]["id"]
                .as_u64()
                .ok_or_else(|| JanusError::Protocol(format!("attach: {h}")))?;
            let r = self
                .post(
                    &format!("{session_url}/{handle}"),
                    json!({"janus": "message", "body": body, "transaction": transaction()}),
                )
                .await?;
            let data = r["plugindata"]["data"].clone();
            if data["videoroom"] == "event" && data.get("error").is_some() {
                return Err(JanusError::Janus(data["error"].as_str().unwrap_or("?").to_owned()));
            }
            if data.is_null() {
                return Err(JanusError::Protocol(format!("message: {r}")));
            }
            Ok(data)
        }
        .await;
        let _ = self
            .post(
                &session_url,
                json!({"janus": "destroy", "transaction": transaction()}),
            )
            .await;
        result
    }

    /// Creates a room for up to [`PUBLISHERS`] rooms publishing H.264/Opus.
    pub async fn create_room(
        &self,
        room: u64,
        description: &str,
        secret: &str,
        pin: Option<&str>,
    ) -> Result<(), JanusError> {
        let mut body = json!({
            "request": "create",
            "room": room,
            "description": description.chars().take(100).collect::<String>(),
            "secret": secret,
            "publishers": PUBLISHERS,
            "videocodec": "h264",
            "audiocodec": "opus",
            "h264_profile": "42e01f",
            "notify_joining": true,
            "permanent": false,
        });
        if let Some(p) = pin {
            body["pin"] = json!(p);
        }
        let d = self.videoroom(body).await?;
        if d["videoroom"] == "created" {
            Ok(())
        } else {
            Err(JanusError::Protocol(format!("create room: {d}")))
        }
    }

    /// Whether a room exists.
    pub async fn room_exists(&self, room: u64) -> Result<bool, JanusError> {
        let d = self
            .videoroom(json!({"request": "exists", "room": room}))
            .await?;
        d["exists"]
            .as_bool()
            .ok_or_else(|| JanusError::Protocol(format!("exists: {d}")))
    }

    /// Lists a room's settings (`pin_required`, `max_publishers`, codecs).
    pub async fn room_info(&self, room: u64) -> Result<Option<Value>, JanusError> {
        let d = self.videoroom(json!({"request": "list"})).await?;
        Ok(d["list"]
            .as_array()
            .and_then(|l| l.iter().find(|r| r["room"].as_u64() == Some(room)).cloned()))
    }
}
