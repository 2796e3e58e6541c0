//! The HTTP client for the district server: enrolment (unsigned) and
//! Ed25519-signed device requests (see `diemcau_ops_api::auth`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use diemcau_ops_api::auth::{SignedHeader, canonical_message};
use diemcau_ops_api::*;
use ed25519_dalek::{Signer as _, SigningKey};
use futures_util::StreamExt as _;
use rand::TryRngCore as _;
use serde::de::DeserializeOwned;

use crate::sse::SseParser;

/// A request to the district server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Network error, timeout, or a 5xx/502 from a proxy: try again later.
    #[error("district server unreachable at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status (not worth retrying as is).
    #[error("district server refused {path}: {status} {}: {}", .error.code, .error.message)]
    Rejected {
        path: String,
        status: u16,
        error: ApiError,
    },
    /// The server answered 5xx.
    #[error("district server failed on {path}: {status}")]
    ServerError { path: String, status: u16 },
    /// The server's answer did not parse.
    #[error("unexpected answer from district server on {path}")]
    Decode {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// Could not build an HTTP client (TLS set-up).
    #[error("cannot set up the HTTP client")]
    Setup(#[source] reqwest::Error),
    /// No `district_url` and no server found on the network (try again:
    /// the server or the network may come up later).
    #[error("cannot find the district server")]
    Discovery(#[source] crate::discovery::DiscoveryError),
}

impl ClientError {
    /// `true` when the server said this device is revoked.
    pub fn is_revoked(&self) -> bool {
        matches!(self, ClientError::Rejected { error, .. } if error.code == "revoked")
    }

    /// `true` for errors worth retrying later (network, 5xx, clock skew).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::ServerError { .. }
            | ClientError::Discovery(_) => true,
            ClientError::Rejected { error, status, .. } => {
                error.code == "clock_skew" || error.code == "replay" || *status == 429
            }
            _ => false,
        }
    }
}

/// The signing identity of an enrolled device.
#[derive(Clone)]
pub struct Credentials {
    pub device_id: String,
    pub key: SigningKey,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// Client for one district server.
#[derive(Debug, Clone)]
pub struct OpsClient {
    http: reqwest::Client,
    base: String,
    creds: Option<Credentials>,
    /// The server's clock, shared by the clones of this client.
    clock: Arc<Mutex<ServerClock>>,
}

/// The district server's clock as the device knows it: the server time
/// last learnt and the monotonic instant it was learnt at. A jump of the
/// board's wall clock (NTP stepping it after a boot without RTC, a bad RTC,
/// someone running `date`) does not move it: meetings start by the
/// server's clock and signed requests keep their time stamps. Until the
/// server has been heard, it is the local wall clock.
#[derive(Debug, Default)]
struct ServerClock {
    /// Server time in milliseconds at the instant.
    anchor: Option<(i64, Instant)>,
}

impl ServerClock {
    /// Server time estimate in milliseconds; `local_ms` is the wall clock
    /// read at `now`.
    fn now_ms(&self, local_ms: i64, now: Instant) -> i64 {
        match self.anchor {
            Some((ms, at)) => {
                let since = now.saturating_duration_since(at).as_millis();
                ms.saturating_add(i64::try_from(since).unwrap_or(i64::MAX))
            }
            None => local_ms,
        }
    }

    /// The server said its time is `server_s` (whole seconds).
    fn learn(&mut self, server_s: i64, local_ms: i64, now: Instant) {
        let server_ms = server_s.saturating_mul(1000);
        // Only correct when the difference is larger than the second of
        // rounding; keeps signatures stable on a well-synchronised board.
        if server_ms
            .saturating_sub(self.now_ms(local_ms, now))
            .saturating_abs()
            > 2000
        {
            self.anchor = Some((server_ms, now));
        } else if self.anchor.is_none() {
            // The wall clock agrees with the server: keep its milliseconds,
            // carried on by the monotonic clock from now on.
            self.anchor = Some((local_ms, now));
        }
    }

    /// The server refused a request as skewed and said its time.
    fn set(&mut self, server_s: i64, now: Instant) {
        self.anchor = Some((server_s.saturating_mul(1000), now));
    }
}

/// Current local unix time in milliseconds.
pub fn local_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A random URL-safe string of `n` bytes of entropy.
pub fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    // OsRng failing means the kernel has no entropy source: nothing sane to do.
    if rand::rngs::OsRng.try_fill_bytes(&mut b).is_err() {
        rand::fill(&mut b[..]);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl OpsClient {
    /// A client for `base` (e.g. `https://ops.huyen-a.example`).
    pub fn new(base: &str, creds: Option<Credentials>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("diemcau-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Setup)?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            creds,
            clock: Arc::default(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The same client signing as `creds`.
    pub fn with_credentials(&self, creds: Credentials) -> Self {
        Self {
            creds: Some(creds),
            ..self.clone()
        }
    }

    /// Server time estimate, unix seconds.
    pub fn server_now(&self) -> i64 {
        self.server_now_ms().div_euclid(1000)
    }

    fn server_now_ms(&self) -> i64 {
        self.server_clock().now_ms(local_now_ms(), Instant::now())
    }

    fn server_clock(&self) -> std::sync::MutexGuard<'_, ServerClock> {
        self.clock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn learn_time(&self, server_time_s: i64) {
        self.server_clock()
            .learn(server_time_s, local_now_ms(), Instant::now());
    }

    fn sign(&self, method: &str, path: &str, body: &[u8]) -> Option<String> {
        let creds = self.creds.as_ref()?;
        let ts_ms = self.server_now_ms();
        let nonce = random_token(12);
        let msg = canonical_message(method, path, ts_ms, &nonce, body);
        let h = SignedHeader {
            device_id: creds.device_id.clone(),
            ts_ms,
            nonce,
            signature: creds.key.sign(&msg).to_bytes(),
        };
        Some(h.to_header_value())
    }

    /// Builds a signed request (public for tests that replay it).
    pub fn signed_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path))
            .header("content-type", "application/json");
        if let Some(h) = self.sign(method.as_str(), path, &body) {
            rb = rb.header("authorization", h);
        }
        rb.body(body)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self
                .signed_request(method.clone(), path, body.clone())
                .timeout(timeout)
                .send()
                .await
                .map_err(|source| ClientError::Unreachable {
                    url: self.base.clone(),
                    source,
                })?;
            match decode(path, resp).await {
                Err(ClientError::Rejected { error, .. })
                    if error.code == "clock_skew" && attempt == 1 =>
                {
                    if let Some(t) = error.server_time {
                        self.server_clock().set(t, Instant::now());
                    }
                }
                other => return other,
            }
        }
    }

    /// `POST /api/v1/enrol`.
    pub async fn enrol(&self, req: &EnrolRequest) -> Result<EnrolResponse, ClientError> {
        let body = serde_json::to_vec(req).unwrap_or_default();
        let r: EnrolResponse = self
            .call(
                reqwest::Method::POST,
                "/api/v1/enrol",
                body,
                Duration::from_secs(15),
            )
            .await?;
        self.learn_time(r.server_time);
        Ok(r)
    }

    /// `GET /api/v1/device/schedule`.
    pub async fn schedule(&self) -> Result<Schedule, ClientError> {
        let r: Schedule = self
            .call(
                reqwest::Method::GET,
                "/api/v1/device/schedule",
                Vec::new(),
                Duration::from_secs(15),
            )
            .await?;
        self.learn_time(r.server_time);
        Ok(r)
    }

    /// `POST /api/v1/device/heartbeat`.
    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<HeartbeatAck, ClientError> {
        let body = serde_json::to_vec(hb).unwrap_or_default();
        let r: HeartbeatAck = self
            .call(
                reqwest::Method::POST,
                "/api/v1/device/heartbeat",
                body,
                Duration::from_secs(10),
            )
            .await?;
        self.learn_time(r.server_time);
        Ok(r)
    }

    /// `POST /api/v1/device/events`.
    pub async fn events(&self, batch: &EventBatch) -> Result<EventsAck, ClientError> {
        let body = serde_json::to_vec(batch).unwrap_or_default();
        self.call(
            reqwest::Method::POST,
            "/api/v1/device/events",
            body,
            Duration::from_secs(15),
        )
        .await
    }

    /// Opens `GET /api/v1/device/push` and forwards each [`PushEvent`] to
    /// `on_event` until the stream ends, goes silent for `idle`, or errors.
    /// Returns `Ok(())` when the server closed the stream.
    pub async fn push_stream(
        &self,
        idle: Duration,
        mut on_event: impl FnMut(PushEvent),
    ) -> Result<(), ClientError> {
        let path = "/api/v1/device/push";
        let resp = self
            .signed_request(reqwest::Method::GET, path, Vec::new())
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return decode::<serde_json::Value>(path, resp).await.map(|_| ());
        }
        let mut stream = resp.bytes_stream();
        let mut parser = SseParser::default();
        loop {
            let chunk = match tokio::time::timeout(idle, stream.next()).await {
                Err(_) => return Ok(()),
                Ok(None) => return Ok(()),
                Ok(Some(Err(source))) => {
                    return Err(ClientError::Unreachable {
                        url: self.base.clone(),
                        source,
                    });
                }
                Ok(Some(Ok(c))) => c,
            };
            for data in parser.push(&chunk) {
                match serde_json::from_str::<PushEvent>(&data) {
                    Ok(ev) => on_event(ev),
                    Err(e) => tracing::warn!(error = %e, "ignoring unknown push event"),
                }
            }
        }
    }
}

async fn decode<T: DeserializeOwned>(
    path: &str,
    resp: reqwest::Response,
) -> Result<T, ClientError> {
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|source| ClientError::Unreachable {
            url: path.to_owned(),
            source,
        })?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            path: path.to_owned(),
            source,
        });
    }
    if status.is_server_error() {
        return Err(ClientError::ServerError {
            path: path.to_owned(),
            status: status.as_u16(),
        });
    }
    let error = serde_json::from_slice::<ApiError>(&bytes).unwrap_or_else(|_| ApiError {
        code: "http".into(),
        message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        server_time: None,
    });
    Err(ClientError::Rejected {
        path: path.to_owned(),
        status: status.as_u16(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_796_000_000;

    #[test]
    fn server_clock_follows_the_server_not_a_jumping_wall_clock() {
        let t0 = Instant::now();
        let mut c = ServerClock::default();
        // Not heard yet: the wall clock.
        assert_eq!(c.now_ms(S * 1000, t0), S * 1000);
        // The board is an hour behind; the server says so.
        c.learn(S, (S - 3600) * 1000, t0);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(c.now_ms((S - 3590) * 1000, t1), (S + 10) * 1000);
        // NTP steps the wall clock forward two hours, then back three:
        // the server's time goes on by the monotonic clock.
        assert_eq!(c.now_ms((S + 7210) * 1000, t1), (S + 10) * 1000);
        assert_eq!(c.now_ms((S - 10_000) * 1000, t1), (S + 10) * 1000);
        // The server confirming within its rounding changes nothing.
        c.learn(S + 10, 0, t1);
        assert_eq!(c.now_ms(0, t1), (S + 10) * 1000);
        // A server that really moved (its clock was corrected) is followed.
        c.learn(S + 100, 0, t1);
        assert_eq!(c.now_ms(0, t1), (S + 100) * 1000);
        c.set(S + 200, t1);
        assert_eq!(c.now_ms(0, t1), (S + 200) * 1000);
    }

    #[test]
    fn a_synchronised_board_keeps_its_milliseconds() {
        let t0 = Instant::now();
        let mut c = ServerClock::default();
        c.learn(S, S * 1000 + 700, t0);
        assert_eq!(
            c.now_ms(0, t0 + Duration::from_millis(300)),
            S * 1000 + 1000
        );
    }

    #[test]
    fn absurd_server_times_do_not_overflow() {
        let t0 = Instant::now();
        let mut c = ServerClock::default();
        c.learn(i64::MIN, i64::MAX, t0);
        let mut c = ServerClock::default();
        c.learn(i64::MAX, 0, t0);
        let _ = c.now_ms(0, t0 + Duration::from_secs(1));
        c.set(i64::MIN, t0);
        let _ = c.now_ms(i64::MIN, t0);
        c.learn(i64::MIN, i64::MAX, t0);
    }
}
