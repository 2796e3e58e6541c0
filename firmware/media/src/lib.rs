//! GStreamer pipelines: camera and microphone to WebRTC, WebRTC to display
//! and speaker.
//!
//! A call is one [`Publisher`] (our camera and microphone, sent to the
//! conference server) and one [`Subscriber`] per remote bridge point. Both
//! are ordinary GStreamer pipelines around `webrtcbin`, which owns ICE, DTLS
//! and SRTP; this crate only builds the pipelines from the board profile,
//! drives `webrtcbin`'s offer/answer signals and measures what comes out:
//! frames, audio level and glass-to-glass latency from time stamps drawn
//! into the picture ([`stamp`]).
//!
//! Nothing here reaches beyond the configured conference server: no STUN
//! server is set, and [`init`] turns libnice's UPnP off for every ICE agent
//! the process creates.

pub mod adapt;
pub mod echo;
pub mod feed;
mod ice;
pub mod picture;
pub mod publisher;
pub mod screen;
pub mod selftest;
pub mod stamp;
pub mod stats;
pub mod subscriber;
mod webrtc;

use std::path::PathBuf;
use std::sync::Arc;

use diemcau_board::device::DeviceSource;
use diemcau_board::{BoardProfile, ElementSpec};

pub use echo::{AudioDsp, NoiseSuppression, Speaker};
pub use feed::{DeviceState, DeviceStatus};
pub use picture::PictureStats;
pub use publisher::Publisher;
pub use stats::{ReceiveStats, RemoteReport, RtpStats, SendStats, StreamSend};
pub use subscriber::Subscriber;
pub use webrtc::MediaEvent;

/// Why media could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("GStreamer could not start: {0}")]
    Init(String),
    #[error("no usable video encoder: tried {0}")]
    NoEncoder(String),
    #[error("media pipeline failed: {0}")]
    Pipeline(String),
    #[error("WebRTC negotiation failed: {0}")]
    Negotiation(String),
}

/// Where received video goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoOut {
    /// A display sink (the board's `kmssink`, or `autovideosink` at a desktop).
    Sink(ElementSpec),
    /// PNG files in `dir`, one every `every_secs` seconds per remote room
    /// (the last 20 are kept).
    Png { dir: PathBuf, every_secs: u32 },
    /// Decoded and measured, then dropped (tests, benchmarks).
    Discard,
    /// To the room screen's compositor ([`screen::Screen`]): each remote
    /// room's pipeline ends in `intervideosink channel=`[`screen::peer_channel`].
    Screen,
}

/// Where received audio goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioOut {
    Sink(ElementSpec),
    Discard,
}

/// Everything the pipelines need to know.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    pub profile: BoardProfile,
    /// The encoder chosen for this board (see `diemcau_board::select`).
    pub encoder: ElementSpec,
    /// The H.264 decoder chosen for this board.
    pub decoder: ElementSpec,
    /// Drawn on our picture, e.g. "Điểm cầu xã Tiền Phong".
    pub room_name: String,
    /// Jitter buffer of received streams, in milliseconds.
    pub jitter_ms: u32,
    /// Draw time stamps into our picture (see [`stamp`]).
    pub stamp_frames: bool,
    pub video_out: VideoOut,
    pub audio_out: AudioOut,
    /// Where our picture comes from (V4L2, or the sim board's fake); while
    /// it is away the publisher sends a "camera unavailable" slate.
    pub camera: Arc<dyn DeviceSource>,
    /// Where our sound comes from (ALSA, or the fake); silence while away.
    pub microphone: Arc<dyn DeviceSource>,
    /// Echo cancellation and noise suppression of the microphone.
    pub audio_dsp: echo::AudioDsp,
}

/// Initialises GStreamer once per process and turns libnice's UPnP off.
pub fn init() -> Result<(), MediaError> {
    gst::init().map_err(|e| MediaError::Init(e.to_string()))?;
    ice::disable_upnp()?;
    warm_up_dtls();
    Ok(())
}

/// GStreamer generates the process's DTLS certificate (an RSA key, shared by
/// every PeerConnection of the process) when the first DTLS element is made:
/// a noticeable delay on a small ARM board. Pay it at start-up rather than at
/// the first join.
fn warm_up_dtls() {
    let t = std::time::Instant::now();
    let made = gst::ElementFactory::make("dtlsdec").build().is_ok();
    tracing::debug!(
        made,
        elapsed_ms = t.elapsed().as_millis() as u64,
        "DTLS certificate ready"
    );
}

/// Whether an element factory called `name` is installed.
pub fn has_element(name: &str) -> bool {
    gst::ElementFactory::find(name).is_some()
}

/// Escapes a string for use inside double quotes in a `gst-launch` line.
pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
