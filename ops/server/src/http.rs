//! The HTTP server: device API (enrolment, signed requests, push), admin
//! API, and the fleet page. Handlers parse bodies themselves so every
//! malformed input gets a JSON [`ApiError`] with a 4xx status.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header, request::Parts};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use diemcau_ops_api::auth::{MAX_SKEW_MS, SignedHeader, canonical_message, decode_public_key};
use diemcau_ops_api::*;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::guard::{RateLimiter, ReplayCache, Sessions};
use crate::janus::{JanusClient, JanusError};
use crate::push::PushHub;
use crate::store::{DeviceRow, MeetingRow, Store, StoreError, TokenRejection};
use crate::util;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub db_url: String,
    /// Janus HTTP API (`http://127.0.0.1:8088/janus`); `None` runs without
    /// creating rooms (development only: devices get room ids that do not
    /// exist).
    pub janus_url: Option<String>,
    /// What devices connect to (`wss://district.example/janus`).
    pub janus_ws_url: String,
    pub heartbeat_interval_s: u32,
    /// A device is offline after this long without a heartbeat.
    pub offline_after_s: i64,
    pub enrol_per_minute: u32,
    pub login_per_minute: u32,
    /// Advertise the server by DNS-SD over mDNS on the interfaces it
    /// listens on (`None`: do not). Off in [`ServerConfig::new`]; the
    /// `serve` command turns it on unless given `--no-mdns`.
    pub mdns: Option<MdnsSettings>,
}

/// What the mDNS advertisement says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsSettings {
    /// Instance name (`diemcau-ops`; the host name is `<name>.local.`).
    pub name: String,
    /// Port devices connect to; `None`: the listen port. Set it to the TLS
    /// proxy's port when one is in front.
    pub port: Option<u16>,
    /// Devices must use https (a TLS proxy in front).
    pub tls: bool,
}

impl Default for MdnsSettings {
    fn default() -> Self {
        Self {
            name: "diemcau-ops".into(),
            port: None,
            tls: false,
        }
    }
}

impl ServerConfig {
    /// Defaults for a given listen address and database.
    pub fn new(listen: SocketAddr, db_url: &str) -> Self {
        Self {
            listen,
            db_url: db_url.to_owned(),
            janus_url: None,
            janus_ws_url: "ws://127.0.0.1:8188/".into(),
            heartbeat_interval_s: 10,
            offline_after_s: 35,
            enrol_per_minute: 30,
            login_per_minute: 20,
            mdns: None,
        }
    }
}

/// Shared state of the running server.
#[derive(Debug)]
pub struct AppState {
    pub store: Store,
    pub janus: Option<JanusClient>,
    pub config: ServerConfig,
    pub push: PushHub,
    pub sessions: Sessions,
    replay: ReplayCache,
    enrol_limiter: RateLimiter,
    login_limiter: RateLimiter,
    boot_id: String,
    schedule_gen: Mutex<HashMap<String, u64>>,
    /// Devices seen recently, for request authentication without a query.
    /// Entries are dropped when a device is revoked (in this process: one
    /// ops process per district owns its store).
    auth_cache: Mutex<HashMap<String, DeviceRow>>,
    /// Heartbeats are written in batches (one transaction every ≤ 250 ms).
    heartbeats: tokio::sync::mpsc::UnboundedSender<(String, i64, String, String)>,
}

type Shared = Arc<AppState>;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the store")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the Janus client")]
    Janus(#[source] JanusError),
}

/// An error answer.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    body: ApiError,
}

impl HttpError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ApiError {
                code: code.into(),
                message: message.into(),
                server_time: None,
            },
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }
    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"diemcau-ops\""),
            );
        }
        r
    }
}

/// Logs the whole error chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Conflict { what } = e {
            return HttpError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            );
        }
        tracing::error!(error = %chain(&e), "store error");
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (see server log)",
        )
    }
}

impl From<JanusError> for HttpError {
    fn from(e: JanusError) -> Self {
        tracing::error!(error = %chain(&e), "janus error");
        HttpError::new(
            StatusCode::BAD_GATEWAY,
            "janus",
            format!("media server: {e}"),
        )
    }
}

impl From<ValidationError> for HttpError {
    fn from(e: ValidationError) -> Self {
        HttpError::bad(e.to_string())
    }
}

fn parse_json<T: DeserializeOwned + Validate>(body: &[u8]) -> Result<T, HttpError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let v: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = if path == "." {
            format!("body: {}", e.inner())
        } else {
            format!("invalid field `{path}`: {}", e.inner())
        };
        HttpError::new(StatusCode::BAD_REQUEST, "invalid_json", msg)
    })?;
    v.validate()?;
    Ok(v)
}

/// Admin JSON bodies must say `application/json` (with the SameSite=Strict
/// session cookie this closes cross-site form posts).
fn admin_json<T: DeserializeOwned + Validate>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, HttpError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "expected Content-Type: application/json",
        ));
    }
    parse_json(body)
}

impl AppState {
    fn schedule_version(&self, commune: Option<&str>) -> String {
        let g = self.schedule_gen.lock().unwrap_or_else(|p| p.into_inner());
        let n = commune.and_then(|c| g.get(c)).copied().unwrap_or(0);
        format!("{}-{n}", self.boot_id)
    }

    fn bump_schedule(&self, communes: &[String]) {
        let mut g = self.schedule_gen.lock().unwrap_or_else(|p| p.into_inner());
        for c in communes {
            *g.entry(c.clone()).or_default() += 1;
        }
    }

    fn meeting(&self, m: &MeetingRow) -> Meeting {
        Meeting {
            id: m.id.clone(),
            title: m.title.clone(),
            starts_at: m.starts_at,
            ends_at: m.ends_at,
            janus: JanusRoom {
                ws_url: m.ws_url.clone(),
                room_id: m.room_id as u64,
                pin: m.pin.clone(),
            },
            communes: m.communes.clone(),
            urgent: m.urgent,
        }
    }

    fn summary(&self, d: &DeviceRow, now: i64) -> DeviceSummary {
        let status = if d.revoked_at.is_some() {
            DeviceStatus::Revoked
        } else if d
            .last_seen
            .is_none_or(|t| now - t > self.config.offline_after_s)
        {
            DeviceStatus::Offline
        } else if d.state.as_deref() == Some("in_call") {
            DeviceStatus::InCall
        } else {
            DeviceStatus::Online
        };
        DeviceSummary {
            device_id: d.id.clone(),
            serial: d.serial.clone(),
            board: d.board.clone(),
            commune: d.commune_id.clone(),
            status,
            last_seen: d.last_seen,
            enrolled_at: d.enrolled_at,
            heartbeat: d
                .heartbeat
                .as_deref()
                .and_then(|h| serde_json::from_str(h).ok()),
        }
    }
}

/// A running server (tests and the binary).
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    /// The mDNS advertisement, when one runs.
    pub mdns: Option<diemcau_mdns::Advertiser>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    join: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl RunningServer {
    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes push streams, stops accepting, and waits (≤ 5 s) for
    /// in-flight requests.
    pub async fn stop(self) {
        if let Some(m) = self.mdns {
            m.stop().await;
        }
        self.state.push.close_all();
        let _ = self.shutdown.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.join).await;
        self.state.store.close().await;
    }

    /// Waits until the server stops by itself (e.g. on an I/O error).
    pub async fn wait(self) -> Result<(), std::io::Error> {
        match self.join.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Opens the store, binds, and serves in the background.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let store = Store::connect(&config.db_url).await?;
    let janus = config
        .janus_url
        .as_deref()
        .map(JanusClient::new)
        .transpose()
        .map_err(ServerError::Janus)?;
    if janus.is_none() {
        tracing::warn!("no --janus-url: meetings get room numbers but no Janus rooms are created");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    let (hb_tx, hb_rx) = tokio::sync::mpsc::unbounded_channel();
    let state = Arc::new(AppState {
        store,
        janus,
        push: PushHub::default(),
        sessions: Sessions::default(),
        replay: ReplayCache::default(),
        enrol_limiter: RateLimiter::new(config.enrol_per_minute),
        login_limiter: RateLimiter::new(config.login_per_minute),
        boot_id: util::random_secret(6),
        schedule_gen: Mutex::new(HashMap::new()),
        auth_cache: Mutex::new(HashMap::new()),
        heartbeats: hb_tx,
        config,
    });
    tokio::spawn(heartbeat_writer(state.store.clone(), hb_rx));
    let app = router(state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        })
        .await
    });
    tracing::info!(%addr, "diemcau-ops listening");
    let mdns = state.config.mdns.as_ref().and_then(|m| advertise(m, addr));
    Ok(RunningServer {
        addr,
        state,
        mdns,
        shutdown: tx,
        join,
    })
}

/// Starts the mDNS advertisement on the interfaces `addr` is reachable
/// through. A server that cannot advertise still serves (devices can be
/// given the URL), so failures are logged, not returned.
fn advertise(m: &MdnsSettings, addr: SocketAddr) -> Option<diemcau_mdns::Advertiser> {
    let interfaces = match diemcau_mdns::interfaces_for_listen(addr.ip()) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %chain(&e), "mDNS: not advertising");
            return None;
        }
    };
    if interfaces.is_empty() {
        tracing::info!(
            %addr,
            "mDNS: not advertising: no multicast interface holds the listen address (loopback?)"
        );
        return None;
    }
    let cfg = diemcau_mdns::AdvertiseConfig {
        instance: m.name.clone(),
        port: m.port.unwrap_or(addr.port()),
        info: diemcau_mdns::ServiceInfo::new(API_VERSION, m.tls),
        interfaces,
    };
    match diemcau_mdns::Advertiser::start(cfg) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %chain(&e), "mDNS: not advertising");
            None
        }
    }
}

/// Writes queued heartbeats in batches until every sender is gone.
async fn heartbeat_writer(
    store: Store,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, i64, String, String)>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(250);
        while batch.len() < 5000 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(hb)) => batch.push(hb),
                _ => break,
            }
        }
        // Only the latest heartbeat of each device matters.
        let mut latest: HashMap<String, (i64, String, String)> =
            HashMap::with_capacity(batch.len());
        for (id, at, st, json) in batch {
            latest.insert(id, (at, st, json));
        }
        let rows: Vec<_> = latest
            .into_iter()
            .map(|(id, (at, st, json))| (id, at, st, json))
            .collect();
        if let Err(e) = store.record_heartbeats(&rows).await {
            tracing::error!(error = %chain(&e), n = rows.len(), "cannot store heartbeats");
        }
    }
}

impl AppState {
    fn forget_device(&self, id: &str) {
        self.auth_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// All routes.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(crate::page::fleet_page))
        .route("/login", get(crate::page::login_page).post(login))
        .route("/logout", post(logout))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/enrol", post(enrol))
        .route("/api/v1/device/schedule", get(device_schedule))
        .route("/api/v1/device/heartbeat", post(heartbeat))
        .route("/api/v1/device/events", post(device_events))
        .route("/api/v1/device/push", get(device_push))
        .route("/api/v1/admin/fleet", get(fleet))
        .route("/api/v1/admin/devices/{id}", get(device_detail))
        .route("/api/v1/admin/devices/{id}/revoke", post(revoke))
        .route(
            "/api/v1/admin/communes",
            get(list_communes).post(add_commune),
        )
        .route(
            "/api/v1/admin/meetings",
            get(list_meetings).post(create_meeting),
        )
        .route("/api/v1/admin/convene", post(convene))
        .route("/api/v1/admin/tokens", post(create_token))
        .fallback(|| async { HttpError::not_found("route") })
        .layer(DefaultBodyLimit::max(256 * 1024))
        .with_state(state)
}

// ----- devices -----

fn enrol_response(state: &AppState, d: &DeviceRow, commune: Option<Commune>) -> EnrolResponse {
    EnrolResponse {
        identity: DeviceIdentity {
            device_id: d.id.clone(),
            serial: d.serial.clone(),
            public_key: d.public_key.clone(),
            enrolled_at: d.enrolled_at,
        },
        settings: DeviceSettings {
            heartbeat_interval_s: state.config.heartbeat_interval_s,
            display_name: commune
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_else(|| d.serial.clone()),
        },
        commune,
        server_time: util::now(),
    }
}

async fn commune_of(state: &AppState, id: Option<&str>) -> Result<Option<Commune>, HttpError> {
    let Some(id) = id else { return Ok(None) };
    Ok(state.store.commune_name(id).await?.map(|name| Commune {
        id: id.to_owned(),
        name,
    }))
}

async fn enrol(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Result<Json<EnrolResponse>, HttpError> {
    if !state.enrol_limiter.allow(peer.ip()) {
        return Err(HttpError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many enrolment attempts from this address; wait a minute",
        ));
    }
    let req: EnrolRequest = parse_json(&body)?;
    let token_hash = util::sha256_hex(&req.claim_token);
    let now = util::now();
    // A device that lost our answer retries with the same key and token:
    // answer with the identity it already has, without using the token again.
    if let Some(d) = state.store.device_by_key(&req.public_key).await? {
        if d.revoked_at.is_some() {
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "revoked",
                "this device key was revoked",
            ));
        }
        if d.token_hash == token_hash && d.serial == req.serial {
            let c = commune_of(&state, d.commune_id.as_deref()).await?;
            return Ok(Json(enrol_response(&state, &d, c)));
        }
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            "conflict",
            "public key already enrolled",
        ));
    }
    let token_commune = match state.store.consume_token(&token_hash, now).await? {
        Ok(c) => c,
        Err(rej) => {
            let why = match rej {
                TokenRejection::Unknown => "unknown",
                TokenRejection::Expired => "expired",
                TokenRejection::UsedUp => "already used up",
            };
            tracing::warn!(%peer, serial = %req.serial, why, "claim token rejected");
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "token_rejected",
                format!("claim token {why}"),
            ));
        }
    };
    let commune = match token_commune {
        Some(c) => commune_of(&state, Some(&c)).await?,
        None => commune_of(&state, req.commune.as_deref()).await?,
    };
    let d = DeviceRow {
        id: util::random_id("dev", 26),
        serial: req.serial.clone(),
        board: req.board.clone(),
        public_key: req.public_key.clone(),
        token_hash,
        commune_id: commune.as_ref().map(|c| c.id.clone()),
        versions: serde_json::to_string(&req.versions).unwrap_or_else(|_| "{}".into()),
        enrolled_at: now,
        revoked_at: None,
        last_seen: Some(now),
        state: None,
        heartbeat: None,
    };
    state.store.insert_device(&d).await?;
    for old in state
        .store
        .revoke_serial_except(&d.serial, &d.id, now)
        .await?
    {
        tracing::info!(old = %old, new = %d.id, "re-enrolled serial: previous identity revoked");
        state.forget_device(&old);
        state.push.revoke(&old);
    }
    tracing::info!(device = %d.id, serial = %d.serial, commune = ?d.commune_id, "device enrolled");
    Ok(Json(enrol_response(&state, &d, commune)))
}

/// Checks a signed device request; returns the device.
async fn authenticate(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<DeviceRow, HttpError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| HttpError::unauthorized("missing device signature"))?;
    let h = SignedHeader::parse(value).map_err(|e| HttpError::unauthorized(e.to_string()))?;
    let now_ms = util::now_ms();
    if (h.ts_ms - now_ms).abs() > MAX_SKEW_MS {
        let mut e = HttpError::new(
            StatusCode::UNAUTHORIZED,
            "clock_skew",
            "request time too far from server time",
        );
        e.body.server_time = Some(now_ms / 1000);
        return Err(e);
    }
    let cached = state
        .auth_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&h.device_id)
        .cloned();
    let d = match cached {
        Some(d) => d,
        None => {
            let d = state
                .store
                .device(&h.device_id)
                .await?
                .ok_or_else(|| HttpError::unauthorized("unknown device"))?;
            let mut c = state.auth_cache.lock().unwrap_or_else(|p| p.into_inner());
            if c.len() > 200_000 {
                c.clear();
            }
            c.insert(d.id.clone(), d.clone());
            d
        }
    };
    let key = decode_public_key(&d.public_key)
        .ok()
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or_else(|| HttpError::unauthorized("device key unusable"))?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let msg = canonical_message(method.as_str(), path, h.ts_ms, &h.nonce, body);
    key.verify_strict(&msg, &Signature::from_bytes(&h.signature))
        .map_err(|_| HttpError::unauthorized("bad signature"))?;
    if d.revoked_at.is_some() {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "revoked",
            "this device was revoked",
        ));
    }
    if !state.replay.check_and_insert(&h.signature, now_ms) {
        return Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "replay",
            "request already seen",
        ));
    }
    Ok(d)
}

async fn device_schedule(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Schedule>, HttpError> {
    let d = authenticate(&state, &method, &uri, &headers, &[]).await?;
    let now = util::now();
    let meetings = match d.commune_id.as_deref() {
        Some(c) => state.store.meetings_for_commune(c, now).await?,
        None => Vec::new(),
    };
    Ok(Json(Schedule {
        meetings: meetings.iter().map(|m| state.meeting(m)).collect(),
        server_time: now,
    }))
}

async fn heartbeat(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<HeartbeatAck>, HttpError> {
    let d = authenticate(&state, &method, &uri, &headers, &body).await?;
    let hb: Heartbeat = parse_json(&body)?;
    let now = util::now();
    let json = serde_json::to_string(&hb).unwrap_or_default();
    if state
        .heartbeats
        .send((d.id.clone(), now, hb.state.as_str().to_owned(), json))
        .is_err()
    {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "server is stopping",
        ));
    }
    Ok(Json(HeartbeatAck {
        server_time: now,
        schedule_version: state.schedule_version(d.commune_id.as_deref()),
    }))
}

async fn device_events(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<EventsAck>, HttpError> {
    let d = authenticate(&state, &method, &uri, &headers, &body).await?;
    let batch: EventBatch = parse_json(&body)?;
    let now = util::now();
    let stored = state.store.insert_events(&d.id, &batch.events, now).await?;
    state.store.touch(&d.id, now).await?;
    Ok(Json(EventsAck { stored }))
}

async fn device_push(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let d = authenticate(&state, &method, &uri, &headers, &[]).await?;
    let sub = state.push.subscribe(&d.id);
    tracing::debug!(device = %d.id, "push stream opened");
    let stream = futures_util::stream::unfold(sub, |mut sub| async move {
        let ev = sub.rx.recv().await?;
        let data = serde_json::to_string(&ev).unwrap_or_default();
        Some((Ok::<_, Infallible>(Event::default().data(data)), sub))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

// ----- admin auth -----

/// An authenticated admin (session cookie or HTTP Basic).
#[derive(Debug, Clone)]
pub struct Admin(pub String);

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "diemcau_session";

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The admin of a session cookie, if any.
pub fn session_admin(state: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE).and_then(|t| state.sessions.user(t, util::now()))
}

async fn check_password(state: &AppState, user: &str, password: &str) -> Result<bool, HttpError> {
    let Some(hash) = state.store.admin_hash(user).await? else {
        return Ok(false);
    };
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || crate::admin::verify_password(&password, &hash))
        .await
        .map_err(|_| {
            HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "password check failed",
            )
        })
}

impl FromRequestParts<Shared> for Admin {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        if let Some(u) = session_admin(state, &parts.headers) {
            return Ok(Admin(u));
        }
        let basic = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        let Some(creds) = basic else {
            return Err(HttpError::unauthorized("admin login required"));
        };
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        let (user, pass) = creds.split_once(':').unwrap_or((creds.as_str(), ""));
        // argon2 is deliberately slow; a verified user:password pair is
        // remembered (as a salted hash, in memory) for a minute.
        let cache_key = util::sha256_hex(&format!("{}\0{creds}", state.boot_id));
        let now = util::now();
        if state.sessions.user(&cache_key, now).as_deref() == Some(user) {
            return Ok(Admin(user.to_owned()));
        }
        if check_password(state, user, pass).await? {
            state.sessions.insert_for(&cache_key, user, now + 60);
            return Ok(Admin(user.to_owned()));
        }
        if !state.login_limiter.allow(ip) {
            return Err(HttpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed logins",
            ));
        }
        Err(HttpError::unauthorized("wrong user name or password"))
    }
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Result<Response, HttpError> {
    if !state.login_limiter.allow(peer.ip()) {
        return Ok(Redirect::to("/login?error=rate").into_response());
    }
    if f.username.len() > 64
        || f.password.len() > 256
        || !check_password(&state, &f.username, &f.password).await?
    {
        tracing::warn!(%peer, user = %f.username.chars().take(64).collect::<String>(), "failed admin login");
        return Ok(Redirect::to("/login?error=1").into_response());
    }
    let token = state.sessions.create(&f.username, util::now());
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        crate::guard::SESSION_S
    )
    .parse()
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

async fn logout(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(t) = cookie(&headers, SESSION_COOKIE) {
        state.sessions.remove(t);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static("diemcau_session=; Path=/; Max-Age=0"),
    );
    r
}

// ----- admin API -----

async fn fleet(State(state): State<Shared>, _a: Admin) -> Result<Json<FleetView>, HttpError> {
    Ok(Json(fleet_view(&state).await?))
}

/// Builds the fleet view.
pub async fn fleet_view(state: &AppState) -> Result<FleetView, HttpError> {
    let now = util::now();
    let communes = state.store.communes().await?;
    let mut by_commune: HashMap<String, Vec<DeviceSummary>> = HashMap::new();
    let mut unassigned = Vec::new();
    for d in state.store.devices().await? {
        let s = state.summary(&d, now);
        match &d.commune_id {
            Some(c) => by_commune.entry(c.clone()).or_default().push(s),
            None => unassigned.push(s),
        }
    }
    Ok(FleetView {
        server_time: now,
        communes: communes
            .into_iter()
            .map(|(id, name)| CommuneStatus {
                devices: by_commune.remove(&id).unwrap_or_default(),
                commune: Commune { id, name },
            })
            .collect(),
        unassigned,
    })
}

async fn device_detail(
    State(state): State<Shared>,
    _a: Admin,
    Path(id): Path<String>,
) -> Result<Json<DeviceDetail>, HttpError> {
    let d = state
        .store
        .device(&id)
        .await?
        .ok_or_else(|| HttpError::not_found("device"))?;
    let events = state.store.recent_events(&d.id, 100).await?;
    Ok(Json(DeviceDetail {
        device: state.summary(&d, util::now()),
        versions: serde_json::from_str(&d.versions).unwrap_or_default(),
        revoked_at: d.revoked_at,
        events,
    }))
}

async fn revoke(
    State(state): State<Shared>,
    a: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    if !state.store.revoke_device(&id, util::now()).await? {
        return Err(HttpError::not_found("device"));
    }
    state.forget_device(&id);
    state.push.revoke(&id);
    tracing::warn!(device = %id, admin = %a.0, "device revoked");
    Ok(StatusCode::NO_CONTENT)
}

async fn list_communes(
    State(state): State<Shared>,
    _a: Admin,
) -> Result<Json<Vec<Commune>>, HttpError> {
    Ok(Json(
        state
            .store
            .communes()
            .await?
            .into_iter()
            .map(|(id, name)| Commune { id, name })
            .collect(),
    ))
}

async fn add_commune(
    State(state): State<Shared>,
    _a: Admin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Commune>), HttpError> {
    let c: Commune = admin_json(&headers, &body)?;
    state
        .store
        .add_commune(&c.id, c.name.trim(), util::now())
        .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

async fn list_meetings(
    State(state): State<Shared>,
    _a: Admin,
) -> Result<Json<Vec<Meeting>>, HttpError> {
    let ms = state.store.upcoming_meetings(util::now()).await?;
    Ok(Json(ms.iter().map(|m| state.meeting(m)).collect()))
}

async fn check_communes_exist(
    state: &AppState,
    communes: &[String],
) -> Result<Vec<String>, HttpError> {
    let known: std::collections::HashSet<String> = state
        .store
        .communes()
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut out: Vec<String> = Vec::new();
    for c in communes {
        if !known.contains(c) {
            return Err(HttpError::bad(format!(
                "invalid field `communes`: unknown commune `{c}`"
            )));
        }
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    Ok(out)
}

/// Creates the Janus room and stores the meeting.
async fn new_meeting(
    state: &AppState,
    title: &str,
    starts_at: i64,
    ends_at: i64,
    communes: Vec<String>,
    urgent: bool,
) -> Result<MeetingRow, HttpError> {
    // Room numbers stay below 2^53 so JavaScript clients read them exactly.
    let mut b = [0u8; 8];
    util::fill_random(&mut b);
    let room_id = (u64::from_le_bytes(b) % ((1u64 << 53) - 1_000_000)) + 1_000_000;
    let mut pin_b = [0u8; 4];
    util::fill_random(&mut pin_b);
    let pin = format!("{:06}", u32::from_le_bytes(pin_b) % 1_000_000);
    let secret = util::random_secret(24);
    if let Some(j) = &state.janus {
        j.create_room(room_id, title, &secret, Some(&pin)).await?;
    }
    let m = MeetingRow {
        id: util::random_id("mtg", 20),
        title: title.trim().to_owned(),
        starts_at,
        ends_at,
        room_id: room_id as i64,
        pin: Some(pin),
        secret,
        ws_url: state.config.janus_ws_url.clone(),
        urgent,
        created_at: util::now(),
        communes,
    };
    state.store.insert_meeting(&m).await?;
    state.bump_schedule(&m.communes);
    Ok(m)
}

async fn create_meeting(
    State(state): State<Shared>,
    a: Admin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Meeting>), HttpError> {
    let req: CreateMeeting = admin_json(&headers, &body)?;
    if req.ends_at <= util::now() {
        return Err(HttpError::bad(
            "invalid field `ends_at`: expected a time in the future",
        ));
    }
    let communes = check_communes_exist(&state, &req.communes).await?;
    let m = new_meeting(
        &state,
        &req.title,
        req.starts_at,
        req.ends_at,
        communes,
        false,
    )
    .await?;
    let mut notified = 0;
    for d in state.store.device_ids_in_communes(&m.communes).await? {
        notified += state.push.send(&d, &PushEvent::ScheduleChanged);
    }
    tracing::info!(meeting = %m.id, admin = %a.0, room = m.room_id, notified, "meeting created");
    Ok((StatusCode::CREATED, Json(state.meeting(&m))))
}

async fn convene(
    State(state): State<Shared>,
    a: Admin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ConveneResponse>), HttpError> {
    let req: ConveneRequest = admin_json(&headers, &body)?;
    let communes = check_communes_exist(&state, &req.communes).await?;
    let now = util::now();
    let ends = now + i64::from(req.duration_min.unwrap_or(60)) * 60;
    let m = new_meeting(&state, &req.title, now, ends, communes, true).await?;
    let meeting = state.meeting(&m);
    let ev = PushEvent::Convene(meeting.clone());
    let mut notified = 0u32;
    for d in state.store.device_ids_in_communes(&m.communes).await? {
        if state.push.send(&d, &ev) > 0 {
            notified += 1;
        }
    }
    tracing::info!(meeting = %m.id, admin = %a.0, notified, "convene now");
    Ok((
        StatusCode::CREATED,
        Json(ConveneResponse {
            meeting,
            notified_devices: notified,
        }),
    ))
}

async fn create_token(
    State(state): State<Shared>,
    a: Admin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<TokenCreated>), HttpError> {
    let req: CreateToken = admin_json(&headers, &body)?;
    if let Some(c) = &req.commune {
        check_communes_exist(&state, std::slice::from_ref(c)).await?;
    }
    let t = crate::admin::create_token(
        &state.store,
        req.uses,
        req.expires_in_s,
        req.commune.as_deref(),
    )
    .await?;
    tracing::info!(admin = %a.0, uses = t.uses, "claim token created");
    Ok((StatusCode::CREATED, Json(t)))
}
