//! The JSON bodies of the API. Times are unix seconds (UTC) unless a field
//! name says otherwise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Software and hardware versions reported by a device, e.g.
/// `{"daemon": "0.1.0", "image": "2026.11", "janus-client": "..."}`.
pub type Versions = BTreeMap<String, String>;

/// `POST /api/v1/enrol`: a new device presents its claim token and public key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    /// Protocol version spoken by the device ([`crate::API_VERSION`]).
    pub api_version: u32,
    /// The one-time (or few-times) claim token from the provisioning file.
    pub claim_token: String,
    /// The board's serial number (e.g. from `/proc/device-tree/serial-number`).
    pub serial: String,
    /// Board profile name (e.g. `rpi4`, `rk3588`, `sim`).
    pub board: String,
    /// Software versions on the device.
    #[serde(default)]
    pub versions: Versions,
    /// The device's Ed25519 public key, 32 bytes, standard base64.
    pub public_key: String,
    /// The commune the installer wrote in the provisioning file, if any.
    /// A token bound to a commune wins over this.
    #[serde(default)]
    pub commune: Option<String>,
}

/// The identity a device receives at enrolment. It is revocable: the server
/// checks the revocation flag on every signed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceIdentity {
    /// Server-assigned device id (`dev_` + 26 base32 characters).
    pub device_id: String,
    /// The serial number given at enrolment.
    pub serial: String,
    /// The device's Ed25519 public key (standard base64).
    pub public_key: String,
    /// When the device was enrolled (unix seconds).
    pub enrolled_at: i64,
}

/// A commune (one bridge point room per commune, usually).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Commune {
    /// Short stable id, `[a-z0-9-]{1,64}`, e.g. `xa-tan-lap`.
    pub id: String,
    /// Display name, e.g. `Xã Tân Lập`.
    pub name: String,
}

/// Settings pushed to a device at enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceSettings {
    /// How often the device should send a heartbeat.
    pub heartbeat_interval_s: u32,
    /// Name shown on the room's screen and to other rooms.
    pub display_name: String,
}

/// Answer to a successful enrolment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnrolResponse {
    pub identity: DeviceIdentity,
    /// The commune this device serves, if known yet.
    pub commune: Option<Commune>,
    pub settings: DeviceSettings,
    /// The server's clock (unix seconds), so a board without RTC can sign.
    pub server_time: i64,
}

/// Where a device joins a meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JanusRoom {
    /// Janus WebSocket URL the device connects to.
    pub ws_url: String,
    /// VideoRoom room number.
    pub room_id: u64,
    /// Room PIN, when the room has one.
    pub pin: Option<String>,
}

/// A scheduled or urgent meeting, as a device sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Meeting {
    pub id: String,
    pub title: String,
    /// Start (unix seconds, UTC).
    pub starts_at: i64,
    /// End (unix seconds, UTC).
    pub ends_at: i64,
    pub janus: JanusRoom,
    /// Ids of the communes invited.
    pub communes: Vec<String>,
    /// `true` for "convene now" meetings: join at once, show the
    /// incoming-meeting screen.
    pub urgent: bool,
}

/// `GET /api/v1/device/schedule`: the meetings this device takes part in
/// that have not ended yet, ordered by start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Schedule {
    pub meetings: Vec<Meeting>,
    pub server_time: i64,
}

/// What the room is doing, as reported by the room daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Idle,
    Joining,
    InCall,
    Leaving,
    Standby,
    Error,
}

impl DeviceState {
    /// The snake_case name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Idle => "idle",
            DeviceState::Joining => "joining",
            DeviceState::InCall => "in_call",
            DeviceState::Leaving => "leaving",
            DeviceState::Standby => "standby",
            DeviceState::Error => "error",
        }
    }
}

/// The uplink as the device sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LinkStats {
    /// `ethernet`, `wifi`, `lte`...
    #[serde(default)]
    pub kind: Option<String>,
    /// Wi-Fi / LTE signal strength.
    #[serde(default)]
    pub signal_dbm: Option<i32>,
    /// Round trip to the district server, milliseconds.
    #[serde(default)]
    pub rtt_ms: Option<u32>,
    /// Link quality 0..=100 (the device's own estimate).
    #[serde(default)]
    pub quality_pct: Option<u8>,
}

/// Media statistics while in a call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CallStats {
    #[serde(default)]
    pub meeting_id: Option<String>,
    pub bitrate_kbps: u32,
    pub fps: f32,
    pub packets_lost: u64,
    pub rtt_ms: u32,
}

/// `POST /api/v1/device/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Heartbeat {
    pub state: DeviceState,
    #[serde(default)]
    pub versions: Versions,
    pub uptime_s: u64,
    #[serde(default)]
    pub temperature_c: Option<f32>,
    #[serde(default)]
    pub link: LinkStats,
    #[serde(default)]
    pub call: Option<CallStats>,
    /// The room's last self-test (before a meeting, or asked for).
    #[serde(default)]
    pub self_test: Option<SelfTestReport>,
}

/// One check of a room's self-test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SelfTestCheck {
    /// `camera`, `audio`, `ops` or `janus`.
    pub name: String,
    pub passed: bool,
    /// What was measured, or why it failed, for the district's IT staff.
    pub detail: String,
    pub elapsed_ms: u64,
}

/// A room's self-test: camera frames, the speaker's test tone heard by the
/// microphone, the district server and Janus reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SelfTestReport {
    /// When it ran (unix seconds).
    pub at: i64,
    /// Every check passed.
    pub passed: bool,
    /// `schedule` (before a meeting), `remote` or `ctl`.
    pub trigger: String,
    /// The meeting it ran before, for `schedule`.
    #[serde(default)]
    pub meeting_id: Option<String>,
    pub checks: Vec<SelfTestCheck>,
    pub elapsed_ms: u64,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAck {
    pub server_time: i64,
    /// Changes whenever this device's schedule changes; a device that
    /// missed a push refetches when it differs from the last one it saw.
    pub schedule_version: String,
}

/// Kinds of things a device reports having happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceEventKind {
    Booted,
    Enrolled,
    Joined,
    JoinFailed,
    Left,
    ConveneReceived,
    OpsUnreachable,
    OpsReachable,
    Error,
}

impl DeviceEventKind {
    /// The snake_case name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceEventKind::Booted => "booted",
            DeviceEventKind::Enrolled => "enrolled",
            DeviceEventKind::Joined => "joined",
            DeviceEventKind::JoinFailed => "join_failed",
            DeviceEventKind::Left => "left",
            DeviceEventKind::ConveneReceived => "convene_received",
            DeviceEventKind::OpsUnreachable => "ops_unreachable",
            DeviceEventKind::OpsReachable => "ops_reachable",
            DeviceEventKind::Error => "error",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// Something that happened on a device. Events carry a device-chosen id so
/// a batch re-sent after a lost answer is stored once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceEvent {
    /// Device-chosen unique id, `[A-Za-z0-9_-]{1,64}`.
    pub id: String,
    /// When it happened on the device (unix seconds).
    pub at: i64,
    pub kind: DeviceEventKind,
    #[serde(default)]
    pub meeting_id: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// `true` when it happened while ops was unreachable.
    #[serde(default)]
    pub offline: bool,
}

/// `POST /api/v1/device/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventBatch {
    pub events: Vec<DeviceEvent>,
}

/// Answer to an event batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventsAck {
    /// Events newly stored (duplicates are acknowledged but not counted).
    pub stored: u32,
}

/// What the server pushes to a device on `GET /api/v1/device/push`
/// (Server-Sent Events; each `data:` line is one JSON `PushEvent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", content = "meeting", rename_all = "snake_case")]
pub enum PushEvent {
    /// Join this meeting now ("convene now").
    Convene(Meeting),
    /// The schedule changed: fetch it again.
    ScheduleChanged,
    /// This device's identity was revoked; the stream closes.
    Revoked,
}

/// Error body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `invalid_input`, `token_rejected`,
    /// `revoked`, `clock_skew`, `replay`, `unauthorized`, `rate_limited`.
    pub code: String,
    /// Human-readable explanation (English).
    pub message: String,
    /// The server's clock, set with `clock_skew` so the device can correct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_time: Option<i64>,
}

// ----- admin API -----

/// `POST /api/v1/admin/communes`.
pub type CreateCommune = Commune;

/// `POST /api/v1/admin/meetings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMeeting {
    pub title: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub communes: Vec<String>,
}

/// `POST /api/v1/admin/convene`: an urgent meeting starting now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConveneRequest {
    pub title: String,
    pub communes: Vec<String>,
    /// How long the room stays booked, minutes (default 60).
    #[serde(default)]
    pub duration_min: Option<u32>,
}

/// Answer to "convene now".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConveneResponse {
    pub meeting: Meeting,
    /// Devices that had a live push stream and were notified.
    pub notified_devices: u32,
}

/// `POST /api/v1/admin/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub uses: u32,
    pub expires_in_s: u64,
    #[serde(default)]
    pub commune: Option<String>,
}

/// A new claim token; the secret is shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub token: String,
    pub uses: u32,
    pub expires_at: i64,
    pub commune: Option<String>,
}

/// Fleet status of a device, derived by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Online,
    InCall,
    Offline,
    Revoked,
}

/// One device on the fleet page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceSummary {
    pub device_id: String,
    pub serial: String,
    pub board: String,
    pub commune: Option<String>,
    pub status: DeviceStatus,
    pub last_seen: Option<i64>,
    pub enrolled_at: i64,
    /// The last heartbeat received, if any.
    pub heartbeat: Option<Heartbeat>,
}

/// One commune on the fleet page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommuneStatus {
    pub commune: Commune,
    pub devices: Vec<DeviceSummary>,
}

/// `GET /api/v1/admin/fleet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetView {
    pub server_time: i64,
    pub communes: Vec<CommuneStatus>,
    /// Devices not (yet) attached to a commune.
    pub unassigned: Vec<DeviceSummary>,
}

/// An event as stored by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StoredEvent {
    pub event: DeviceEvent,
    pub received_at: i64,
}

/// `GET /api/v1/admin/devices/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceDetail {
    pub device: DeviceSummary,
    pub versions: Versions,
    pub revoked_at: Option<i64>,
    /// Most recent first, at most 100.
    pub events: Vec<StoredEvent>,
}
