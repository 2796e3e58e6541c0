//! The local control socket: `diemcau ctl join|leave|toggle|status`.
//!
//! One JSON request per line on a Unix socket, one JSON answer per line.
//! The socket feeds the same inputs to the room as the remote control does.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use diemcau_media::{DeviceStatus, PictureStats, ReceiveStats, RtpStats};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    Join,
    Leave,
    Toggle,
    /// Mute or unmute the microphone of the current call.
    Mute,
    /// The speaker one step louder or quieter (the remote's Volume ±).
    #[serde(rename = "volume_up")]
    VolumeUp,
    #[serde(rename = "volume_down")]
    VolumeDown,
    /// Show the status screen (the remote's Home key).
    Home,
    /// Run the pre-meeting self-test now; answers when it is done.
    #[serde(rename = "selftest")]
    SelfTest,
    Status,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub cmd: Command,
}

/// A remote bridge point as shown in status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PeerStatus {
    pub id: u64,
    pub name: String,
    pub media: ReceiveStats,
    pub rtp: RtpStats,
    /// Received bitrate, kbit/s, over the last stats interval.
    pub bitrate_kbps: f64,
    /// Brightness of the received picture and when it last cut (camera to
    /// slate and back).
    #[serde(default)]
    pub picture: PictureStats,
    /// Loudness of what this room plays on our speaker (after the speaker
    /// volume), dBFS over the last second.
    #[serde(default)]
    pub speaker_level_db: Option<f64>,
}

/// What `diemcau ctl status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Status {
    pub state: String,
    /// Why the room is in `error` or `retrying`.
    pub reason: Option<String>,
    pub last_error: Option<String>,
    pub room_name: String,
    pub conference_room: u64,
    pub board: String,
    pub encoder: String,
    pub call: Option<u64>,
    /// The district meeting the room is in or joining.
    pub meeting: Option<String>,
    /// The district server, when the room is provisioned for one.
    pub district: Option<DistrictStatus>,
    pub peers: Vec<PeerStatus>,
    /// Our outgoing stream.
    pub send: RtpStats,
    pub send_bitrate_kbps: f64,
    pub uptime_s: u64,
    /// The sender adaptation of the call in progress: rung, rate, reason.
    #[serde(default)]
    pub adapt: Option<AdaptStatus>,
    /// Our camera: present or not, what is sent (picture or slate), errors.
    #[serde(default)]
    pub camera: Option<DeviceStatus>,
    /// Our microphone: present or not, what is sent (sound or silence).
    #[serde(default)]
    pub microphone: Option<DeviceStatus>,
    /// The screen shown on the display (idle, joining, incoming, in_call,
    /// error), when the room drives one.
    #[serde(default)]
    pub screen: Option<String>,
    /// The microphone of the current call is muted: nothing audible leaves
    /// the room.
    #[serde(default)]
    pub muted: bool,
    /// The speaker volume, 0 to 100 %.
    #[serde(default)]
    pub volume_percent: u8,
    /// The TV on HDMI-CEC, when the room drives one.
    #[serde(default)]
    pub tv: Option<TvStatus>,
    /// The last self-test (before a meeting, from the remote or `ctl
    /// selftest`).
    #[serde(default)]
    pub self_test: Option<diemcau_agent::api::SelfTestReport>,
}

/// The TV as the room sees it over HDMI-CEC.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TvStatus {
    /// The CEC adapter (`/dev/cec0`).
    pub device: String,
    /// The adapter is open and holds a logical address.
    pub connected: bool,
    /// Our logical address on the bus (4: Playback 1).
    pub logical_address: Option<u8>,
    /// Our physical address, e.g. "1.0.0.0" (the TV's HDMI input 1).
    pub physical_address: Option<String>,
    /// The room believes the TV shows it (it sent Active Source).
    pub active_source: bool,
    /// Why the adapter cannot be used, while it cannot.
    pub problem: Option<String>,
}

/// What the sender adaptation (`diemcau_media::adapt`) does with our video.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct AdaptStatus {
    /// The rung of the ladder: "720p30", "540p25", "360p25", "180p10" or
    /// "paused" (audio only).
    pub rung: String,
    /// Size and frame rate of the video sent (0 while paused).
    pub width: u32,
    pub height: u32,
    pub framerate: u32,
    /// The video encoder's rate, kbit/s (0 while paused).
    pub video_kbps: u32,
    /// Loss in the far end's latest receiver reports, percent (`None`
    /// before the first).
    pub loss_percent: Option<f64>,
    /// How much of it is counted as the link's own rather than congestion,
    /// percent.
    pub random_loss_percent: u8,
    /// The loss Opus's in-band FEC is told to expect, percent.
    pub opus_loss_percent: u8,
    pub opus_dtx: bool,
    /// Why the adaptation is where it is.
    pub reason: String,
}

/// The room's view of the district server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct DistrictStatus {
    pub enrolled: bool,
    pub device_id: Option<String>,
    pub reachable: bool,
    /// Why the room cannot use the district server, if it cannot.
    pub problem: Option<String>,
    pub meetings: usize,
    pub next_meeting: Option<String>,
    pub next_meeting_starts_at: Option<i64>,
    /// Events recorded while the server was unreachable, not yet delivered.
    pub pending_events: usize,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    Ok { status: Box<Status> },
    Error { message: String },
}

/// A request from the socket, with where to send the answer.
pub type CtlRequest = (Command, oneshot::Sender<Status>);

/// Serves the control socket at `path`, forwarding commands to `tx`.
pub async fn serve(path: &Path, tx: mpsc::Sender<CtlRequest>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, tx).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn handle(stream: UnixStream, tx: mpsc::Sender<CtlRequest>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))??
    {
        if line.len() > 4096 {
            break;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let (otx, orx) = oneshot::channel();
                if tx.send((req.cmd, otx)).await.is_err() {
                    Response::Error {
                        message: "the daemon is shutting down".into(),
                    }
                } else {
                    match orx.await {
                        Ok(status) => Response::Ok {
                            status: Box::new(status),
                        },
                        Err(_) => Response::Error {
                            message: "no answer".into(),
                        },
                    }
                }
            }
            Err(e) => Response::Error {
                message: format!("bad request: {e}"),
            },
        };
        let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{}".into());
        out.push('\n');
        w.write_all(out.as_bytes()).await?;
    }
    Ok(())
}

/// Errors of the `ctl` client.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach the daemon at {path}: is it running?")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("control connection failed")]
    Io(#[from] std::io::Error),
    #[error("the daemon answered something unexpected: {0}")]
    Protocol(String),
    #[error("{0}")]
    Daemon(String),
}

/// Sends one command to the daemon at `path` and returns its status.
pub async fn request(path: &Path, cmd: Command) -> Result<Status, CtlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| CtlError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    let (r, mut w) = stream.into_split();
    let mut req =
        serde_json::to_string(&Request { cmd }).map_err(|e| CtlError::Protocol(e.to_string()))?;
    req.push('\n');
    w.write_all(req.as_bytes()).await?;
    let line = BufReader::new(r)
        .lines()
        .next_line()
        .await?
        .ok_or_else(|| CtlError::Protocol("connection closed".into()))?;
    match serde_json::from_str::<Response>(&line) {
        Ok(Response::Ok { status }) => Ok(*status),
        Ok(Response::Error { message }) => Err(CtlError::Daemon(message)),
        Err(e) => Err(CtlError::Protocol(format!("{e}: {line}"))),
    }
}

/// One line for a camera or microphone: `camera:   absent, sending slate
/// (lost 1, back 0): /run/sim/camera is absent`.
pub fn render_device(d: &DeviceStatus) -> String {
    let state = serde_json::to_value(d.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut line = format!(
        "{:<9} {state}, sending {}",
        format!("{}:", d.kind),
        d.sending
    );
    if let Some(dev) = &d.device {
        line.push_str(&format!(", {dev}"));
    }
    if d.lost > 0 || d.returned > 0 {
        line.push_str(&format!(" (lost {}, back {})", d.lost, d.returned));
    }
    if let Some(e) = &d.error {
        line.push_str(&format!(": {e}"));
    }
    line
}

/// One line for the sender adaptation: `adapting: 360p25 (640x360, 25 fps)
/// at 191 kbit/s, loss 20.3 % (20 % the link's own), Opus FEC for 20 %,
/// DTX on: <reason>`.
pub fn render_adapt(a: &AdaptStatus) -> String {
    let video = if a.rung == "paused" {
        "video paused (audio only)".to_string()
    } else {
        format!(
            "{} ({}x{}, {} fps) at {} kbit/s",
            a.rung, a.width, a.height, a.framerate, a.video_kbps
        )
    };
    let loss = match a.loss_percent {
        Some(l) if a.random_loss_percent > 0 => {
            format!("loss {l:.1} % ({} % the link's own)", a.random_loss_percent)
        }
        Some(l) => format!("loss {l:.1} %"),
        None => "no receiver report yet".to_string(),
    };
    format!(
        "adapting: {video}, {loss}, Opus FEC for {} %, DTX {}: {}",
        a.opus_loss_percent,
        if a.opus_dtx { "on" } else { "off" },
        a.reason
    )
}

/// One line for the TV: `tv:       /dev/cec0 connected as 4 at 1.0.0.0,
/// showing the room`.
pub fn render_tv(tv: &TvStatus) -> String {
    let mut line = format!("tv:       {}", tv.device);
    if tv.connected {
        line.push_str(&format!(
            " connected as {} at {}",
            tv.logical_address
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            tv.physical_address.as_deref().unwrap_or("-")
        ));
        if tv.active_source {
            line.push_str(", showing the room");
        }
    } else {
        line.push_str(" not connected");
    }
    if let Some(p) = &tv.problem {
        line.push_str(&format!(": {p}"));
    }
    line
}

/// Human-readable status.
pub fn render(s: &Status) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "room:     {} (board {}, encoder {})",
        s.room_name, s.board, s.encoder
    );
    let _ = writeln!(o, "state:    {}", s.state);
    let _ = writeln!(
        o,
        "speaker:  {} %{}",
        s.volume_percent,
        if s.muted { ", microphone muted" } else { "" }
    );
    if let Some(tv) = &s.tv {
        let _ = writeln!(o, "{}", render_tv(tv));
    }
    if let Some(r) = &s.reason {
        let _ = writeln!(o, "reason:   {r}");
    }
    let _ = writeln!(o, "conference room: {}", s.conference_room);
    if let Some(m) = &s.meeting {
        let _ = writeln!(o, "meeting:  {m}");
    }
    if let Some(d) = &s.district {
        let _ = writeln!(
            o,
            "district: {} {}, {} meetings, next {}{}",
            if d.enrolled {
                "enrolled"
            } else {
                "not enrolled"
            },
            if d.reachable { "(online)" } else { "(offline)" },
            d.meetings,
            d.next_meeting.as_deref().unwrap_or("-"),
            d.problem
                .as_ref()
                .map(|p| format!("; problem: {p}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        o,
        "sending:  {:.0} kbit/s, {} packets, lost {} (far end), rtt {}",
        s.send_bitrate_kbps,
        s.send.packets_sent,
        s.send.packets_lost,
        s.send
            .rtt_ms
            .map(|r| format!("{r:.0} ms"))
            .unwrap_or_else(|| "-".into())
    );
    for d in [&s.camera, &s.microphone].into_iter().flatten() {
        let _ = writeln!(o, "{}", render_device(d));
    }
    if let Some(a) = &s.adapt {
        let _ = writeln!(o, "{}", render_adapt(a));
    }
    let _ = writeln!(o, "peers:    {}", s.peers.len());
    for p in &s.peers {
        let m = &p.media;
        let _ = writeln!(
            o,
            "  {} [{}]: {:.0} kbit/s, {:.1} fps {}x{}, {} frames, lost {}, audio {} (concealed {:.1} %), latency p50 {} p95 {}",
            p.name,
            p.id,
            p.bitrate_kbps,
            m.fps,
            m.width,
            m.height,
            m.video_frames,
            p.rtp.packets_lost,
            m.audio_level_db
                .map(|d| format!("{d:.1} dBFS"))
                .unwrap_or_else(|| "-".into()),
            m.audio_concealed_samples as f64 * 100.0 / m.audio_samples.max(1) as f64,
            m.latency_p50_ms
                .map(|l| format!("{l} ms"))
                .unwrap_or_else(|| "-".into()),
            m.latency_p95_ms
                .map(|l| format!("{l} ms"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    if let Some(e) = &s.last_error {
        let _ = writeln!(o, "last error: {e}");
    }
    let _ = write!(o, "uptime:   {} s", s.uptime_s);
    o
}
