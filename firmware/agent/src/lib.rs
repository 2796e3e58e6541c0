//! The device's agent for the district server (`diemcau-ops`).
//!
//! This crate owns everything a bridge point says to ops: reading the
//! provisioning file from the boot partition ([`provisioning`]), finding the
//! server when the file has no URL ([`discovery`]: mDNS / DNS-SD, then a
//! DNS name), making the device's
//! Ed25519 key pair and enrolling, keeping its identity, the schedule cache
//! and the queue of not-yet-reported events on disk atomically ([`state`]),
//! the heartbeat loop, and the server push stream. The room daemon consumes
//! [`AgentEvent`]s and reports back through [`Agent::report_heartbeat`] and
//! [`Agent::report_event`]; which meeting to be in at a given time is the
//! pure function [`due_meeting`]. It never decides to join or leave a call
//! itself: that is the room's state machine (`firmware/core`).
//!
//! Offline-first: the schedule is cached on every change, so a board
//! restarted while ops is down still knows its meetings (an
//! [`AgentEvent::Schedule`] is sent at start from the cache), and events
//! reported while ops is unreachable are kept (with `offline = true`) and
//! sent when it is back.
//!
//! Daemon usage:
//! ```no_run
//! # async fn f() -> Result<(), diemcau_agent::AgentError> {
//! use diemcau_agent::{Agent, AgentConfig, AgentEvent, due_meeting};
//! let cfg = AgentConfig::new("/var/lib/diemcau/agent", "/boot/diemcau.toml", "SERIAL123", "rpi4");
//! let (agent, mut events) = Agent::start(cfg).await?;
//! while let Some(ev) = events.recv().await {
//!     match ev {
//!         AgentEvent::Schedule(meetings) => { /* feed the room state machine */ }
//!         AgentEvent::Convene(meeting) => { /* show incoming screen, join */ }
//!         AgentEvent::Revoked => break,
//!         AgentEvent::OpsReachable(_) | AgentEvent::EnrolmentRejected(_) => {}
//!     }
//!     let _due = due_meeting(&agent.schedule(), agent.server_now());
//! }
//! # Ok(()) }
//! ```

pub mod client;
pub mod discovery;
pub mod provisioning;
mod schedule;
pub mod sse;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use diemcau_ops_api::*;
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};

pub use client::{ClientError, Credentials, OpsClient};
pub use diemcau_ops_api as api;
pub use provisioning::{Provisioning, ProvisioningError};
pub use schedule::{EARLY_JOIN_S, due_meeting, next_meeting};
pub use state::StateError;

/// What the agent tells the room daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// The full list of meetings this room takes part in (not yet ended).
    /// Sent at start from the cache, then whenever it changes.
    Schedule(Vec<Meeting>),
    /// "Convene now": show the incoming-meeting screen and join at once.
    Convene(Meeting),
    /// This device's identity was revoked: stop, show "disabled". The agent
    /// stops talking to ops.
    Revoked,
    /// Ops became reachable (`true`) or unreachable (`false`).
    OpsReachable(bool),
    /// The server refused the claim token (expired, used up, unknown); the
    /// agent retries every few minutes in case the file is fixed.
    EnrolmentRejected(String),
}

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Folder for identity, key, schedule cache and event queue.
    pub state_dir: PathBuf,
    /// The provisioning file (e.g. `/boot/diemcau.toml`).
    pub provisioning_file: PathBuf,
    /// Read for DNS discovery when the provisioning file has no URL.
    pub resolv_conf: PathBuf,
    /// How long to browse by mDNS for the server when the provisioning
    /// file has no URL (before trying DNS); `None` skips mDNS.
    pub mdns_timeout: Option<Duration>,
    pub serial: String,
    pub board: String,
    pub versions: Versions,
    /// Wait between attempts while ops is unreachable.
    pub retry_interval: Duration,
    /// Overrides the heartbeat interval given by the server (tests).
    pub heartbeat_interval: Option<Duration>,
    /// Reconnect the push stream after this long without a byte (the
    /// server sends a keep-alive every 15 s).
    pub push_idle_timeout: Duration,
}

impl AgentConfig {
    /// Defaults for a board: retry every 5 s, heartbeat as the server says.
    pub fn new(
        state_dir: impl Into<PathBuf>,
        provisioning_file: impl Into<PathBuf>,
        serial: &str,
        board: &str,
    ) -> Self {
        let mut versions = BTreeMap::new();
        versions.insert("agent".to_owned(), env!("CARGO_PKG_VERSION").to_owned());
        Self {
            state_dir: state_dir.into(),
            provisioning_file: provisioning_file.into(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            mdns_timeout: Some(Duration::from_secs(3)),
            serial: serial.to_owned(),
            board: board.to_owned(),
            versions,
            retry_interval: Duration::from_secs(5),
            heartbeat_interval: None,
            push_idle_timeout: Duration::from_secs(45),
        }
    }
}

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("device is not enrolled and has no usable provisioning file")]
    NotProvisioned(#[source] ProvisioningError),
    #[error("device state is unreadable")]
    State(#[source] StateError),
    #[error("device key in {path} is unusable")]
    BadKey { path: PathBuf },
    #[error("cannot set up the client")]
    Client(#[source] ClientError),
}

/// Identity as stored on the device (`identity.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredIdentity {
    identity: DeviceIdentity,
    district_url: String,
    commune: Option<Commune>,
    settings: DeviceSettings,
    #[serde(default)]
    revoked: bool,
}

/// The device's private key (`device-key.json`, mode 0600). Made before the
/// first enrolment attempt so a retried enrolment uses the same key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    secret_key: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ScheduleCache {
    meetings: Vec<Meeting>,
    schedule_version: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct EventQueue {
    events: Vec<DeviceEvent>,
}

/// Most events kept while offline; older ones are dropped first.
pub const MAX_QUEUED_EVENTS: usize = 1000;

struct Files {
    identity: state::StateFile,
    key: state::StateFile,
    schedule: state::StateFile,
    events: state::StateFile,
}

#[derive(Default)]
struct Status {
    heartbeat: Option<Heartbeat>,
    reachable: Option<bool>,
    /// Why the last exchange with ops failed, while it is unreachable.
    unreachable: Option<String>,
    schedule: ScheduleCache,
    identity: Option<StoredIdentity>,
    queue: EventQueue,
    device_id: Option<String>,
}

struct Inner {
    config: AgentConfig,
    files: Files,
    status: Mutex<Status>,
    tx: mpsc::Sender<AgentEvent>,
    wake: Notify,
    refetch: Notify,
    /// Ops answered again after being unreachable: the push stream should
    /// reconnect now rather than at the end of its backoff.
    reconnect: Notify,
    started: Instant,
    stop: watch::Sender<bool>,
    clock: Mutex<Option<OpsClient>>,
}

/// Handle to the running agent; cheap to clone.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("state_dir", &self.inner.config.state_dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Agent {
    /// Loads the device state, sends the cached schedule (if any) and starts
    /// the background work (enrolment if needed, heartbeats, push stream,
    /// event flushing). Fails only when the device is not enrolled and the
    /// provisioning file is missing or invalid, or the state is unreadable.
    pub async fn start(
        config: AgentConfig,
    ) -> Result<(Agent, mpsc::Receiver<AgentEvent>), AgentError> {
        let d = &config.state_dir;
        let files = Files {
            identity: state::StateFile::public(d.join("identity.json")),
            key: state::StateFile::private(d.join("device-key.json")),
            schedule: state::StateFile::public(d.join("schedule.json")),
            events: state::StateFile::public(d.join("events.json")),
        };
        let identity = files
            .identity
            .load::<StoredIdentity>()
            .map_err(AgentError::State)?
            .map(|g| g.data);
        if identity.is_none() {
            Provisioning::load(&config.provisioning_file).map_err(AgentError::NotProvisioned)?;
        }
        // A corrupt cache or queue is not fatal: start empty and say so.
        let schedule = files.schedule.load::<ScheduleCache>().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "schedule cache unreadable; starting empty");
            None
        });
        let queue = files.events.load::<EventQueue>().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "event queue unreadable; starting empty");
            None
        });
        let (tx, rx) = mpsc::channel(256);
        let (stop, _) = watch::channel(false);
        let revoked = identity.as_ref().is_some_and(|i| i.revoked);
        let had_schedule = schedule.is_some();
        let inner = Arc::new(Inner {
            files,
            status: Mutex::new(Status {
                device_id: identity.as_ref().map(|i| i.identity.device_id.clone()),
                identity,
                schedule: schedule.map(|g| g.data).unwrap_or_default(),
                queue: queue.map(|g| g.data).unwrap_or_default(),
                ..Default::default()
            }),
            config,
            tx,
            wake: Notify::new(),
            refetch: Notify::new(),
            reconnect: Notify::new(),
            started: Instant::now(),
            stop,
            clock: Mutex::new(None),
        });
        let agent = Agent { inner };
        if revoked {
            agent.emit(AgentEvent::Revoked);
            return Ok((agent, rx));
        }
        if had_schedule {
            let meetings = agent.schedule();
            agent.emit(AgentEvent::Schedule(meetings));
        }
        agent.report_event(DeviceEventKind::Booted, None, None);
        let a = agent.clone();
        tokio::spawn(async move { a.run().await });
        Ok((agent, rx))
    }

    /// Records the room's latest state and call stats; sent with the next
    /// heartbeat, at once if the state changed. `versions` left empty is
    /// filled from the config.
    pub fn report_heartbeat(&self, mut heartbeat: Heartbeat) {
        if heartbeat.versions.is_empty() {
            heartbeat.versions = self.inner.config.versions.clone();
        }
        let changed = {
            let mut st = lock(&self.inner.status);
            let changed = st.heartbeat.as_ref().map(|h| h.state) != Some(heartbeat.state);
            st.heartbeat = Some(heartbeat);
            changed
        };
        if changed {
            self.inner.wake.notify_one();
        }
    }

    /// Queues an event for ops (kept on disk; sent now if ops is reachable,
    /// else when it is back, marked `offline`).
    pub fn report_event(
        &self,
        kind: DeviceEventKind,
        meeting_id: Option<&str>,
        message: Option<&str>,
    ) {
        let ev = DeviceEvent {
            id: client::random_token(12),
            at: self.server_now(),
            kind,
            meeting_id: meeting_id.map(str::to_owned),
            message: message.map(|m| m.chars().take(1000).collect()),
            offline: lock(&self.inner.status).reachable == Some(false),
        };
        let snapshot = {
            let mut st = lock(&self.inner.status);
            st.queue.events.push(ev);
            let n = st.queue.events.len();
            if n > MAX_QUEUED_EVENTS {
                st.queue.events.drain(..n - MAX_QUEUED_EVENTS);
            }
            st.queue.clone()
        };
        if let Err(e) = self.inner.files.events.store(&snapshot) {
            tracing::warn!(error = %e, "cannot persist event queue");
        }
        self.inner.wake.notify_one();
    }

    /// The meetings known now (from ops or the cache).
    pub fn schedule(&self) -> Vec<Meeting> {
        lock(&self.inner.status).schedule.meetings.clone()
    }

    /// This device's id once enrolled.
    pub fn device_id(&self) -> Option<String> {
        lock(&self.inner.status).device_id.clone()
    }

    /// Whether the last exchange with ops succeeded.
    pub fn is_reachable(&self) -> bool {
        lock(&self.inner.status).reachable == Some(true)
    }

    /// Why ops cannot be reached (the error and its causes, e.g. a name
    /// that does not resolve), while it is unreachable.
    pub fn unreachable_reason(&self) -> Option<String> {
        lock(&self.inner.status).unreachable.clone()
    }

    /// The self-test's link check: one signed request (the schedule) to the
    /// district server; its round trip, or why it failed (with causes).
    pub async fn check_link(&self) -> Result<(String, Duration), String> {
        let id = lock(&self.inner.status)
            .identity
            .clone()
            .ok_or_else(|| "not enrolled with the district server yet".to_string())?;
        let key = self
            .load_key()
            .ok_or_else(|| "the device key is missing".to_string())?;
        let client = OpsClient::new(&id.district_url, None)
            .map_err(|e| error_chain(&e))?
            .with_credentials(Credentials {
                device_id: id.identity.device_id,
                key,
            });
        let t = Instant::now();
        client.schedule().await.map_err(|e| error_chain(&e))?;
        Ok((id.district_url, t.elapsed()))
    }

    /// Events not yet acknowledged by ops.
    pub fn pending_events(&self) -> usize {
        lock(&self.inner.status).queue.events.len()
    }

    /// Unix seconds, corrected by the server's clock once it was seen (a
    /// board without RTC may boot with a wrong clock).
    pub fn server_now(&self) -> i64 {
        match lock(&self.inner.clock).as_ref() {
            Some(c) => c.server_now(),
            None => client::local_now_ms() / 1000,
        }
    }

    /// Stops the background work (the handle stays usable for reads).
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
    }

    fn emit(&self, ev: AgentEvent) {
        if let Err(e) = self.inner.tx.try_send(ev) {
            tracing::warn!(error = %e, "agent event dropped: receiver full or gone");
        }
    }

    /// Ops could not be reached because of `e`: kept for the status, and
    /// logged when the reason changes.
    fn set_unreachable(&self, e: &ClientError) {
        let why = error_chain(e);
        let changed = {
            let mut st = lock(&self.inner.status);
            st.unreachable.replace(why.clone()).as_ref() != Some(&why)
        };
        // Discovery failures have their own, rate-limited, warning.
        if changed && !matches!(e, ClientError::Discovery(_)) {
            tracing::warn!(error = %why, "district server unreachable");
        }
        self.set_reachable(false);
    }

    fn set_reachable(&self, ok: bool) {
        let prev = {
            let mut st = lock(&self.inner.status);
            if ok {
                st.unreachable = None;
            }
            st.reachable.replace(ok)
        };
        if prev != Some(ok) {
            tracing::info!(reachable = ok, "district server reachability changed");
            if ok && prev == Some(false) {
                self.inner.reconnect.notify_one();
            }
            self.emit(AgentEvent::OpsReachable(ok));
            if prev.is_some() {
                let kind = if ok {
                    DeviceEventKind::OpsReachable
                } else {
                    DeviceEventKind::OpsUnreachable
                };
                self.report_event(kind, None, None);
            }
        }
    }

    fn stopped(&self) -> bool {
        *self.inner.stop.borrow()
    }

    async fn sleep_or_stop(&self, d: Duration) -> bool {
        let mut rx = self.inner.stop.subscribe();
        if *rx.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = rx.changed() => true,
        }
    }

    fn revoke(&self) {
        let ident = {
            let mut st = lock(&self.inner.status);
            if let Some(i) = st.identity.as_mut() {
                if i.revoked {
                    return;
                }
                i.revoked = true;
            }
            st.identity.clone()
        };
        tracing::warn!("this device was revoked by the district server");
        if let Some(i) = ident
            && let Err(e) = self.inner.files.identity.store(&i)
        {
            tracing::warn!(error = %e, "cannot persist revocation");
        }
        self.emit(AgentEvent::Revoked);
        self.shutdown();
    }

    async fn run(self) {
        let Some(client) = self.enrolled_client().await else {
            return;
        };
        *lock(&self.inner.clock) = Some(client.clone());
        let push = self.clone();
        let push_client = client.clone();
        tokio::spawn(async move { push.push_loop(push_client).await });
        self.sync_loop(client).await;
    }

    /// Returns a signing client, enrolling first if needed (retries until
    /// it works or the agent is stopped).
    async fn enrolled_client(&self) -> Option<OpsClient> {
        // Discovery failures are logged when they change, else once a minute.
        let mut last_warn: Option<(String, Instant)> = None;
        loop {
            if self.stopped() {
                return None;
            }
            match self.try_enrol().await {
                Ok(c) => return Some(c),
                Err(e) => {
                    if let ClientError::Discovery(d) = &e {
                        let msg = d.to_string();
                        let quiet = last_warn.as_ref().is_some_and(|(m, t)| {
                            *m == msg && t.elapsed() < Duration::from_secs(60)
                        });
                        if !quiet {
                            tracing::warn!(error = %msg, "cannot find the district server; retrying");
                            last_warn = Some((msg, Instant::now()));
                        }
                    }
                    let wait = if e.is_transient() {
                        self.set_unreachable(&e);
                        self.inner.config.retry_interval
                    } else {
                        tracing::error!(error = %e, "enrolment refused");
                        self.emit(AgentEvent::EnrolmentRejected(e.to_string()));
                        self.inner
                            .config
                            .retry_interval
                            .max(Duration::from_secs(60))
                    };
                    if self.sleep_or_stop(wait).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn try_enrol(&self) -> Result<OpsClient, ClientError> {
        let existing = lock(&self.inner.status).identity.clone();
        if let Some(id) = existing {
            let key = self.load_key().ok_or_else(|| ClientError::Rejected {
                path: "device-key.json".into(),
                status: 0,
                error: ApiError {
                    code: "no_key".into(),
                    message: "device key missing".into(),
                    server_time: None,
                },
            })?;
            let c = OpsClient::new(&id.district_url, None)?;
            return Ok(c.with_credentials(Credentials {
                device_id: id.identity.device_id,
                key,
            }));
        }
        let prov = Provisioning::load(&self.inner.config.provisioning_file).map_err(|e| {
            ClientError::Rejected {
                path: "provisioning".into(),
                status: 0,
                error: ApiError {
                    code: "provisioning".into(),
                    message: e.to_string(),
                    server_time: None,
                },
            }
        })?;
        let url = match prov.district_url.clone() {
            Some(u) => u,
            None => {
                let found = discovery::discover(&discovery::DiscoveryConfig {
                    resolv_conf: &self.inner.config.resolv_conf,
                    mdns_timeout: self.inner.config.mdns_timeout,
                    api_version: API_VERSION,
                })
                .await
                .map_err(ClientError::Discovery)?;
                tracing::info!(url = %found.url, method = ?found.method, ms = found.took.as_millis() as u64, "enrolling with the district server found on the network");
                found.url
            }
        };
        let key = match self.load_key() {
            Some(k) => k,
            None => {
                let mut seed = [0u8; 32];
                use rand::TryRngCore as _;
                if rand::rngs::OsRng.try_fill_bytes(&mut seed).is_err() {
                    rand::fill(&mut seed);
                }
                let stored = StoredKey {
                    secret_key: base64::engine::general_purpose::STANDARD.encode(seed),
                };
                self.inner
                    .files
                    .key
                    .store(&stored)
                    .map_err(|e| ClientError::Rejected {
                        path: "device-key.json".into(),
                        status: 0,
                        error: ApiError {
                            code: "state".into(),
                            message: e.to_string(),
                            server_time: None,
                        },
                    })?;
                SigningKey::from_bytes(&seed)
            }
        };
        let c = OpsClient::new(&url, None)?;
        let req = EnrolRequest {
            api_version: API_VERSION,
            claim_token: prov.claim_token.clone(),
            serial: self.inner.config.serial.clone(),
            board: self.inner.config.board.clone(),
            versions: self.inner.config.versions.clone(),
            public_key: base64::engine::general_purpose::STANDARD
                .encode(key.verifying_key().to_bytes()),
            commune: prov.commune.clone(),
        };
        let resp = c.enrol(&req).await?;
        self.set_reachable(true);
        let stored = StoredIdentity {
            identity: resp.identity.clone(),
            district_url: url,
            commune: resp.commune,
            settings: resp.settings,
            revoked: false,
        };
        if let Err(e) = self.inner.files.identity.store(&stored) {
            // Keep going in memory; the next boot enrols again with the same
            // key and token, which the server answers idempotently.
            tracing::error!(error = %e, "cannot persist identity");
        }
        {
            let mut st = lock(&self.inner.status);
            st.device_id = Some(stored.identity.device_id.clone());
            st.identity = Some(stored);
        }
        tracing::info!(device_id = %resp.identity.device_id, "enrolled");
        self.report_event(DeviceEventKind::Enrolled, None, None);
        Ok(c.with_credentials(Credentials {
            device_id: resp.identity.device_id,
            key,
        }))
    }

    fn load_key(&self) -> Option<SigningKey> {
        let k = self.inner.files.key.load::<StoredKey>().ok()??;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(k.data.secret_key)
            .ok()?;
        let seed: [u8; 32] = bytes.try_into().ok()?;
        Some(SigningKey::from_bytes(&seed))
    }

    fn heartbeat_interval(&self) -> Duration {
        if let Some(d) = self.inner.config.heartbeat_interval {
            return d;
        }
        let s = lock(&self.inner.status)
            .identity
            .as_ref()
            .map(|i| i.settings.heartbeat_interval_s)
            .unwrap_or(10);
        Duration::from_secs(u64::from(s.clamp(1, 3600)))
    }

    fn current_heartbeat(&self) -> Heartbeat {
        let st = lock(&self.inner.status);
        st.heartbeat.clone().unwrap_or_else(|| Heartbeat {
            state: DeviceState::Idle,
            versions: self.inner.config.versions.clone(),
            uptime_s: self.inner.started.elapsed().as_secs(),
            temperature_c: None,
            link: LinkStats::default(),
            call: None,
            self_test: None,
        })
    }

    async fn sync_loop(&self, client: OpsClient) {
        let mut force_fetch = true;
        loop {
            if self.stopped() {
                return;
            }
            match client.heartbeat(&self.current_heartbeat()).await {
                Ok(ack) => {
                    self.set_reachable(true);
                    let known = lock(&self.inner.status).schedule.schedule_version.clone();
                    if force_fetch || known.as_deref() != Some(ack.schedule_version.as_str()) {
                        force_fetch = !self
                            .fetch_schedule(&client, Some(ack.schedule_version))
                            .await;
                    }
                    self.flush_events(&client).await;
                }
                Err(e) if e.is_revoked() => return self.revoke(),
                Err(e) if e.is_transient() => {
                    tracing::debug!(error = %e, "heartbeat failed");
                    self.set_unreachable(&e);
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat refused"),
            }
            let wait = if self.is_reachable() {
                self.heartbeat_interval()
            } else {
                self.inner
                    .config
                    .retry_interval
                    .min(self.heartbeat_interval())
            };
            let mut stop = self.inner.stop.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.wake.notified() => {}
                _ = self.inner.refetch.notified() => force_fetch = true,
                _ = stop.changed() => return,
            }
        }
    }

    /// Fetches and caches the schedule; `true` on success.
    async fn fetch_schedule(&self, client: &OpsClient, version: Option<String>) -> bool {
        match client.schedule().await {
            Ok(s) => {
                let cache = ScheduleCache {
                    meetings: s.meetings,
                    schedule_version: version,
                };
                let changed = {
                    let mut st = lock(&self.inner.status);
                    let changed = st.schedule.meetings != cache.meetings;
                    st.schedule = cache.clone();
                    changed
                };
                if let Err(e) = self.inner.files.schedule.store(&cache) {
                    tracing::warn!(error = %e, "cannot cache schedule");
                }
                if changed {
                    self.emit(AgentEvent::Schedule(cache.meetings));
                }
                true
            }
            Err(e) if e.is_revoked() => {
                self.revoke();
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch schedule");
                false
            }
        }
    }

    async fn flush_events(&self, client: &OpsClient) {
        loop {
            let batch: Vec<DeviceEvent> = lock(&self.inner.status)
                .queue
                .events
                .iter()
                .take(500)
                .cloned()
                .collect();
            if batch.is_empty() {
                return;
            }
            let n = batch.len();
            match client
                .events(&EventBatch {
                    events: batch.clone(),
                })
                .await
            {
                Ok(_) => {
                    let snapshot = {
                        let mut st = lock(&self.inner.status);
                        st.queue
                            .events
                            .retain(|e| !batch.iter().any(|b| b.id == e.id));
                        st.queue.clone()
                    };
                    if let Err(e) = self.inner.files.events.store(&snapshot) {
                        tracing::warn!(error = %e, "cannot persist event queue");
                    }
                    if n < 500 {
                        return;
                    }
                }
                Err(e) if e.is_revoked() => return self.revoke(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot send events; will retry");
                    return;
                }
            }
        }
    }

    async fn push_loop(&self, client: OpsClient) {
        let mut backoff = Duration::from_millis(500);
        loop {
            if self.stopped() {
                return;
            }
            let opened = Instant::now();
            let me = self.clone();
            let res = client
                .push_stream(self.inner.config.push_idle_timeout, move |ev| match ev {
                    PushEvent::Convene(m) => {
                        let id = m.id.clone();
                        me.emit(AgentEvent::Convene(m));
                        me.report_event(DeviceEventKind::ConveneReceived, Some(&id), None);
                        me.inner.refetch.notify_one();
                    }
                    PushEvent::ScheduleChanged => me.inner.refetch.notify_one(),
                    PushEvent::Revoked => me.revoke(),
                })
                .await;
            match res {
                Err(e) if e.is_revoked() => return self.revoke(),
                Err(e) => tracing::debug!(error = %e, "push stream failed"),
                Ok(()) => tracing::debug!("push stream closed"),
            }
            if opened.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(500);
            }
            let mut stop = self.inner.stop.subscribe();
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                // A heartbeat got through after an outage: ops is back, so
                // is "convene now" (else it waits up to 30 s of backoff).
                _ = self.inner.reconnect.notified() => backoff = Duration::from_millis(500),
                _ = stop.changed() => return,
            }
        }
    }
}

/// `e` and its causes, `: `-separated (a request error alone says little:
/// "error sending request"; its causes say "failed to lookup address").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.ends_with(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_names_every_cause_once() {
        let source = serde_json::from_str::<u8>("x").expect_err("not JSON");
        let text = source.to_string();
        let e = ClientError::Decode {
            path: "/api/v1/device/schedule".into(),
            source,
        };
        assert_eq!(
            error_chain(&e),
            format!("unexpected answer from district server on /api/v1/device/schedule: {text}")
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let prov = dir.path().join("provision.toml");
        // Port 1 on loopback: refused at once, nothing leaves the machine.
        std::fs::write(
            &prov,
            "district_url = \"http://127.0.0.1:1\"\nclaim_token = \"t\"\n",
        )
        .expect("write");
        let cfg = AgentConfig::new(dir.path().join("state"), &prov, "SN1", "sim");
        let (agent, _rx) = Agent::start(cfg).await.expect("starts");
        let deadline = Instant::now() + Duration::from_secs(5);
        let why = loop {
            if let Some(w) = agent.unreachable_reason() {
                break w;
            }
            assert!(Instant::now() < deadline, "no reason given");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        agent.shutdown();
        assert!(!agent.is_reachable());
        assert!(
            why.starts_with("district server unreachable at http://127.0.0.1:1"),
            "{why}"
        );
        assert!(
            why.to_lowercase().contains("refused"),
            "the cause is named: {why}"
        );
    }
}
