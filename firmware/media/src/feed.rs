//! Capture feeds: the camera and the microphone, each in a small pipeline
//! of its own, feeding the publisher through an `appsrc`.
//!
//! The publisher never holds a device. Its video branch starts at an
//! `appsrc` with fixed caps (I420 at the call's size and rate), its audio
//! branch at an `appsrc` of 48 kHz mono S16; a [`Feed`] thread per branch
//! fills it:
//!
//! - while the device is there, from a capture pipeline
//!   (`<device source> ! convert/scale/rate to those caps ! appsink`), each
//!   buffer re-stamped by the publisher's clock (`do-timestamp`);
//! - while it is not (unplugged, unusable, failing, or silent for
//!   [`STALL`]), with a still "camera unavailable" slate drawn by
//!   `textoverlay`, or with silence, at the same size and rate, so the
//!   encoders, the PeerConnection and the call never notice.
//!
//! The thread asks the [`DeviceSource`] every [`POLL`] whether the device is
//! present, and watches the capture pipeline's bus: an error (ENODEV when a
//! USB camera is pulled out) or end of stream stops the capture at once. A
//! device that is present again is taken back at the next poll; one that is
//! present but fails is retried with a backoff of at most [`MAX_BACKOFF`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diemcau_board::device::{DeviceKind, DeviceSource, Found, Probe};
use gst::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{MediaError, MediaSettings, escape};

/// How often the device source is asked whether the device is there.
pub const POLL: Duration = Duration::from_millis(250);
/// A capture that delivers nothing for this long is replaced by the slate
/// (or silence) until it delivers again.
pub const STALL: Duration = Duration::from_millis(500);
/// Longest wait before restarting a capture that failed on a present device.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// A capture that delivers nothing for this long is restarted.
pub const SILENT_CAPTURE: Duration = Duration::from_secs(5);
/// While the device delivers, the feed thread looks this often whether it
/// has stalled (a wake-up per frame would cost more than the look). The
/// slate then follows a stall within `STALL` + `WATCH`.
const WATCH: Duration = Duration::from_millis(100);
/// Length of one buffer of silence.
const SILENCE: Duration = Duration::from_millis(20);
const AUDIO_RATE: u32 = 48_000;
/// The slate's background (ARGB), a blue grey well apart in brightness from
/// a dark room and from black.
const SLATE_ARGB: u32 = 0xff3c_5a82;

/// What a device is doing, as `ctl status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Present; nothing captures from it (no call).
    Ready,
    /// Capture started, no data yet.
    Starting,
    /// Data from the device is being sent.
    Active,
    /// Not plugged in: the slate (silence) is sent.
    #[default]
    Absent,
    /// Present but unusable, or failing: the slate (silence) is sent.
    Error,
}

/// One capture device in `ctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeviceStatus {
    /// `camera` or `microphone`.
    pub kind: String,
    pub state: DeviceState,
    /// The device source reports the device as plugged in and usable.
    pub present: bool,
    /// What goes out: `device`, `slate`, `silence`, or `nothing` (no call).
    pub sending: String,
    /// The device in use or last seen, e.g. `/dev/video0 "HD Pro Webcam C920"`.
    pub device: Option<String>,
    /// The GStreamer source description captured from.
    pub source: Option<String>,
    /// Why the device is absent or unusable, or the capture's last error.
    pub error: Option<String>,
    /// Times the device went away during this call.
    pub lost: u32,
    /// Times it was taken back during this call.
    pub returned: u32,
    /// When `state` last changed (Unix milliseconds).
    pub since_unix_ms: u64,
}

impl DeviceStatus {
    /// The status of a device outside a call, from one probe.
    pub fn from_probe(kind: DeviceKind, probe: &Probe) -> Self {
        let mut s = DeviceStatus {
            kind: kind.to_string(),
            sending: "nothing".into(),
            ..Default::default()
        };
        match probe {
            Probe::Present(f) => {
                s.state = DeviceState::Ready;
                s.present = true;
                s.device = Some(f.device.clone());
                s.source = Some(f.launch.clone());
            }
            Probe::Absent { why } => {
                s.state = DeviceState::Absent;
                s.error = Some(why.clone());
            }
            Probe::Unusable { device, error } => {
                s.state = DeviceState::Error;
                s.device = Some(device.clone());
                s.error = Some(error.clone());
            }
        }
        s
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The fixed format of one publisher branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Video { width: u32, height: u32, fps: u32 },
    Audio,
}

impl Format {
    fn video(settings: &MediaSettings) -> Self {
        let v = &settings.profile.video;
        Format::Video {
            width: v.width.max(16),
            height: v.height.max(16),
            fps: v.framerate.clamp(1, 120),
        }
    }

    fn caps(self) -> String {
        match self {
            Format::Video { width, height, fps } => format!(
                "video/x-raw,format=I420,width={width},height={height},framerate={fps}/1,pixel-aspect-ratio=1/1"
            ),
            Format::Audio => {
                format!("audio/x-raw,format=S16LE,layout=interleaved,rate={AUDIO_RATE},channels=1")
            }
        }
    }

    /// What turns any capture into exactly these caps.
    fn convert(self) -> String {
        match self {
            Format::Video { .. } => {
                format!("videoconvert ! videoscale ! videorate ! {}", self.caps())
            }
            Format::Audio => format!("audioconvert ! audioresample ! {}", self.caps()),
        }
    }

    fn interval(self) -> Duration {
        match self {
            Format::Video { fps, .. } => Duration::from_nanos(1_000_000_000 / u64::from(fps)),
            Format::Audio => SILENCE,
        }
    }

    fn fallback_name(self) -> &'static str {
        match self {
            Format::Video { .. } => "slate",
            Format::Audio => "silence",
        }
    }
}

/// The `appsrc` that starts the publisher's video branch (named `camera`).
pub(crate) fn video_appsrc(settings: &MediaSettings) -> String {
    format!(
        "appsrc name=camera is-live=true do-timestamp=true format=time min-latency=0 \
         max-bytes=0 max-buffers=3 leaky-type=downstream caps=\"{}\"",
        Format::video(settings).caps()
    )
}

/// The `appsrc` that starts the publisher's audio branch (named `microphone`).
pub(crate) fn audio_appsrc() -> String {
    format!(
        "appsrc name=microphone is-live=true do-timestamp=true format=time min-latency=0 \
         max-bytes=0 max-buffers=25 leaky-type=downstream caps=\"{}\"",
        Format::Audio.caps()
    )
}

/// The camera and microphone feeds of one publisher.
pub struct Feeds {
    pub camera: Feed,
    pub microphone: Feed,
}

impl Feeds {
    /// Starts both feeds into the `camera` and `microphone` appsrcs of
    /// `pipeline` (see [`video_appsrc`], [`audio_appsrc`]).
    pub(crate) fn start(
        pipeline: &gst::Pipeline,
        settings: &MediaSettings,
    ) -> Result<Self, MediaError> {
        let appsrc = |name: &str| {
            pipeline
                .by_name(name)
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
                .ok_or_else(|| MediaError::Pipeline(format!("publisher has no appsrc {name}")))
        };
        Ok(Feeds {
            camera: Feed::start(
                settings.camera.clone(),
                appsrc("camera")?,
                Format::video(settings),
            )?,
            microphone: Feed::start(
                settings.microphone.clone(),
                appsrc("microphone")?,
                Format::Audio,
            )?,
        })
    }
}

struct Shared {
    stop: AtomicBool,
    status: Mutex<DeviceStatus>,
    /// Milliseconds after `epoch` of the last buffer pushed from the device
    /// (`u64::MAX`: none yet).
    last_device_push: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn update(&self, f: impl FnOnce(&mut DeviceStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let before = s.state;
        f(&mut s);
        if s.state != before {
            s.since_unix_ms = unix_ms();
        }
    }
}

/// One device feeding one publisher branch, on a thread of its own.
/// Dropping it stops the thread and the capture.
pub struct Feed {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Feed {
    fn start(
        source: Arc<dyn DeviceSource>,
        appsrc: gst_app::AppSrc,
        format: Format,
    ) -> Result<Self, MediaError> {
        let kind = source.kind();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            status: Mutex::new(DeviceStatus {
                kind: kind.to_string(),
                state: DeviceState::Absent,
                sending: "nothing".into(),
                since_unix_ms: unix_ms(),
                ..Default::default()
            }),
            last_device_push: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("feed-{kind}"))
            .spawn(move || {
                let mut w = Worker {
                    source,
                    appsrc,
                    format,
                    shared: sh,
                    capture: None,
                    fallbacks: Fallbacks::default(),
                    retry_at: None,
                    backoff: FIRST_BACKOFF,
                    was_active: false,
                };
                w.run();
            })
            .map_err(|e| MediaError::Pipeline(format!("cannot start the {kind} feed: {e}")))?;
        Ok(Feed {
            shared,
            thread: Some(thread),
        })
    }

    pub fn status(&self) -> DeviceStatus {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running capture pipeline.
struct Capture {
    pipeline: gst::Pipeline,
    found: Found,
    started_ms: u64,
}

impl Capture {
    fn start(
        found: &Found,
        format: Format,
        appsrc: &gst_app::AppSrc,
        shared: &Arc<Shared>,
    ) -> Result<Self, String> {
        let desc = format!(
            "{} ! {} ! appsink name=sink sync=false max-buffers=2 drop=true enable-last-sample=false",
            found.launch,
            format.convert()
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| format!("{desc}: {e}"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "the capture is not a pipeline".to_string())?;
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| "the capture has no appsink".to_string())?;
        let target = appsrc.downgrade();
        let sh = shared.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let Ok(sample) = sink.pull_sample() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let (Some(mut buf), Some(src)) = (sample.buffer_owned(), target.upgrade())
                    else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    drop(sample);
                    {
                        // The publisher's clock stamps it (do-timestamp).
                        let b = buf.make_mut();
                        b.set_pts(gst::ClockTime::NONE);
                        b.set_dts(gst::ClockTime::NONE);
                    }
                    sh.last_device_push
                        .store(sh.ms(Instant::now()), Ordering::Relaxed);
                    // A publisher going down refuses buffers (flushing):
                    // that is not the capture's failure.
                    let _ = src.push_buffer(buf);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let started_ms = shared.ms(Instant::now());
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let why = bus_error(&pipeline).unwrap_or_else(|| e.to_string());
            let _ = pipeline.set_state(gst::State::Null);
            return Err(why);
        }
        Ok(Capture {
            pipeline,
            found: found.clone(),
            started_ms,
        })
    }

    /// An error or end of stream posted by the capture, or a capture that
    /// has delivered nothing for [`SILENT_CAPTURE`].
    fn failure(&self, shared: &Shared, now: Instant) -> Option<String> {
        if let Some(e) = bus_error(&self.pipeline) {
            return Some(e);
        }
        let last = shared.last_device_push.load(Ordering::Relaxed);
        let since = if last == u64::MAX || last < self.started_ms {
            self.started_ms
        } else {
            last
        };
        let silent = shared.ms(now).saturating_sub(since);
        (silent > SILENT_CAPTURE.as_millis() as u64)
            .then(|| format!("the device delivered nothing for {} s", silent / 1000))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Pops the pipeline's bus: the first error (with its debug detail, e.g.
/// "No such device") or end of stream.
fn bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
        match msg.view() {
            gst::MessageView::Error(e) => {
                let debug = e.debug().map(|d| format!(" ({d})")).unwrap_or_default();
                return Some(format!("{}{debug}", e.error()));
            }
            gst::MessageView::Eos(_) => return Some("the device stopped (end of stream)".into()),
            _ => {}
        }
    }
    None
}

/// The buffers sent while the device is away.
#[derive(Default)]
struct Fallbacks {
    /// Slates already drawn, by text.
    slates: Vec<(String, gst::Buffer)>,
    silence: Option<gst::Buffer>,
}

impl Fallbacks {
    fn get(&mut self, format: Format, text: &str) -> Option<gst::Buffer> {
        match format {
            Format::Video { .. } => {
                if let Some((_, b)) = self.slates.iter().find(|(t, _)| t == text) {
                    return Some(b.clone());
                }
                let b = draw_slate(format, text)?;
                self.slates.push((text.to_string(), b.clone()));
                Some(b)
            }
            Format::Audio => {
                if self.silence.is_none() {
                    let samples = AUDIO_RATE as usize * SILENCE.as_millis() as usize / 1000;
                    let mut b = gst::Buffer::from_mut_slice(vec![0u8; samples * 2]);
                    if let Some(m) = b.get_mut() {
                        m.set_duration(gst::ClockTime::from_nseconds(SILENCE.as_nanos() as u64));
                    }
                    self.silence = Some(b);
                }
                self.silence.clone()
            }
        }
    }
}

/// Draws the slate once: a still picture with `text` in the middle, at the
/// branch's size. A machine without text rendering gets a plain slate.
fn draw_slate(format: Format, text: &str) -> Option<gst::Buffer> {
    let Format::Video { width, height, .. } = format else {
        return None;
    };
    let size = (height / 24).clamp(8, 96);
    let desc = format!(
        "videotestsrc num-buffers=1 pattern=solid-color foreground-color={SLATE_ARGB} ! {caps} \
         ! textoverlay text=\"{text}\" valignment=center halignment=center line-alignment=center \
           font-desc=\"Sans Bold {size}\" shaded-background=false ! {caps} \
         ! appsink name=sink sync=false",
        caps = format.caps(),
        text = escape(text),
    );
    let drawn = (|| {
        let p = gst::parse::launch(&desc)
            .ok()?
            .downcast::<gst::Pipeline>()
            .ok()?;
        let sink = p.by_name("sink")?.downcast::<gst_app::AppSink>().ok()?;
        p.set_state(gst::State::Playing).ok()?;
        let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(5));
        let _ = p.set_state(gst::State::Null);
        sample?.buffer_owned()
    })();
    if drawn.is_some() {
        return drawn;
    }
    tracing::warn!("cannot draw the camera slate with textoverlay; sending a plain one");
    // I420: the luma plane, then both chroma planes at quarter size.
    let (w, h) = (width as usize, height as usize);
    let luma = w * h;
    let chroma = w.div_ceil(2) * h.div_ceil(2);
    let mut data = vec![90u8; luma + 2 * chroma];
    data[luma..].fill(128);
    Some(gst::Buffer::from_mut_slice(data))
}

fn slate_text(state: DeviceState) -> &'static str {
    match state {
        DeviceState::Error => "Camera unavailable\n(no usable video format)",
        _ => "Camera unavailable",
    }
}

struct Worker {
    source: Arc<dyn DeviceSource>,
    appsrc: gst_app::AppSrc,
    format: Format,
    shared: Arc<Shared>,
    capture: Option<Capture>,
    fallbacks: Fallbacks,
    /// Do not restart a failed capture before this.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The device has delivered during this call (so losing it counts).
    was_active: bool,
}

impl Worker {
    fn run(&mut self) {
        let kind = self.source.kind();
        let interval = self.format.interval();
        let mut next_probe = Instant::now();
        let mut next_fill = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let failed = self
                .capture
                .as_ref()
                .and_then(|c| c.failure(&self.shared, now));
            if let Some(why) = failed {
                tracing::warn!(device = %kind, error = %why, "capture failed");
                self.stop_capture(DeviceState::Error, Some(why));
                self.retry_at = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                next_probe = now;
            }
            if now >= next_probe {
                next_probe = now + POLL;
                self.poll(now);
            }
            self.check_active();
            if now >= next_fill {
                if self.fill(now) {
                    // The device delivers: nothing to fill until it stalls,
                    // which a look every WATCH notices soon enough.
                    next_fill = now + WATCH;
                } else {
                    next_fill += interval;
                    if next_fill < now {
                        // Late (a slow probe): no burst to catch up.
                        next_fill = now + interval;
                    }
                }
            }
            let wake = next_fill.min(next_probe);
            let nap = wake.saturating_duration_since(Instant::now()).min(WATCH);
            std::thread::sleep(nap);
        }
        self.capture = None;
    }

    fn poll(&mut self, now: Instant) {
        let kind = self.source.kind();
        match self.source.probe() {
            Probe::Present(found) => {
                if self.capture.as_ref().is_some_and(|c| c.found != found) {
                    tracing::info!(device = %kind, new = %found.device, "device changed");
                    self.stop_capture(DeviceState::Absent, None);
                    self.retry_at = None;
                }
                if self.capture.is_some() || self.retry_at.is_some_and(|t| now < t) {
                    return;
                }
                match Capture::start(&found, self.format, &self.appsrc, &self.shared) {
                    Ok(c) => {
                        tracing::info!(device = %kind, name = %found.device, source = %found.launch, reason = %found.reason, "capturing");
                        self.capture = Some(c);
                        self.shared.update(|s| {
                            s.state = DeviceState::Starting;
                            s.present = true;
                            s.device = Some(found.device.clone());
                            s.source = Some(found.launch.clone());
                        });
                    }
                    Err(why) => {
                        tracing::warn!(device = %kind, error = %why, "cannot start the capture");
                        self.shared.update(|s| {
                            s.state = DeviceState::Error;
                            s.present = true;
                            s.device = Some(found.device.clone());
                            s.source = Some(found.launch.clone());
                            s.error = Some(why);
                        });
                        self.retry_at = Some(now + self.backoff);
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            Probe::Absent { why } => {
                let was = self.status_state();
                if was != DeviceState::Absent {
                    tracing::warn!(device = %kind, %why, "device absent");
                }
                self.stop_capture(DeviceState::Absent, Some(why));
                self.shared.update(|s| s.present = false);
                self.retry_at = None;
                self.backoff = FIRST_BACKOFF;
            }
            Probe::Unusable { device, error } => {
                if self.status_state() != DeviceState::Error {
                    tracing::error!(device = %kind, name = %device, %error, "device unusable");
                }
                self.stop_capture(DeviceState::Error, Some(error));
                self.shared.update(|s| {
                    s.present = false;
                    s.device = Some(device);
                    s.source = None;
                });
                self.retry_at = None;
            }
        }
    }

    fn status_state(&self) -> DeviceState {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state
    }

    fn stop_capture(&mut self, state: DeviceState, error: Option<String>) {
        let had = self.capture.take().is_some();
        let lost = had && self.status_state() == DeviceState::Active;
        self.shared.update(|s| {
            s.state = state;
            if error.is_some() {
                s.error = error;
            }
            if lost {
                s.lost += 1;
            }
        });
    }

    /// Marks the capture active once it has delivered.
    fn check_active(&mut self) {
        let Some(c) = &self.capture else { return };
        let last = self.shared.last_device_push.load(Ordering::Relaxed);
        if last == u64::MAX || last < c.started_ms {
            return;
        }
        if self.status_state() == DeviceState::Starting {
            let returned = self.was_active;
            self.was_active = true;
            self.backoff = FIRST_BACKOFF;
            tracing::info!(device = %self.source.kind(), returned, "device delivering");
            self.shared.update(|s| {
                s.state = DeviceState::Active;
                s.error = None;
                if returned {
                    s.returned += 1;
                }
            });
        }
    }

    /// Sends the slate or silence unless the device delivered recently;
    /// true if it did (nothing sent).
    fn fill(&mut self, now: Instant) -> bool {
        let fresh = self.capture.as_ref().is_some_and(|_| {
            let last = self.shared.last_device_push.load(Ordering::Relaxed);
            last != u64::MAX && self.shared.ms(now).saturating_sub(last) < STALL.as_millis() as u64
        });
        // At the start of a call, give the device a moment before the
        // slate; a device coming back keeps the slate until it delivers.
        let starting = !self.was_active
            && self.capture.as_ref().is_some_and(|c| {
                self.status_state() == DeviceState::Starting
                    && self.shared.ms(now).saturating_sub(c.started_ms) < STALL.as_millis() as u64
            });
        let sending = if fresh || starting {
            "device"
        } else {
            let text = slate_text(self.status_state());
            if let Some(b) = self.fallbacks.get(self.format, text) {
                let mut b = b.copy();
                if let Some(m) = b.get_mut() {
                    m.set_pts(gst::ClockTime::NONE);
                    m.set_dts(gst::ClockTime::NONE);
                }
                let _ = self.appsrc.push_buffer(b);
            }
            self.format.fallback_name()
        };
        self.shared.update(|s| {
            if s.sending != sending {
                s.sending = sending.to_string();
            }
        });
        fresh || starting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diemcau_board::device::FixedSource;

    /// A source whose answer the test changes.
    #[derive(Debug)]
    struct Switch {
        kind: DeviceKind,
        probe: Mutex<Probe>,
    }

    impl DeviceSource for Switch {
        fn kind(&self) -> DeviceKind {
            self.kind
        }
        fn probe(&self) -> Probe {
            self.probe.lock().unwrap().clone()
        }
    }

    fn found(launch: &str) -> Probe {
        Probe::Present(Found {
            device: "test".into(),
            launch: launch.into(),
            reason: "test".into(),
        })
    }

    /// A publisher stand-in: the appsrc into a counting, luma-reading sink.
    struct Sink {
        pipeline: gst::Pipeline,
        appsrc: gst_app::AppSrc,
        luma: Arc<Mutex<Vec<u8>>>,
    }

    fn sink(format: Format) -> Sink {
        let src = match format {
            Format::Video { .. } => "appsrc name=camera is-live=true do-timestamp=true format=time max-bytes=0 max-buffers=3 leaky-type=downstream".to_string(),
            Format::Audio => "appsrc name=microphone is-live=true do-timestamp=true format=time max-bytes=0 max-buffers=25 leaky-type=downstream".to_string(),
        };
        let desc = format!(
            "{src} caps=\"{}\" ! appsink name=out sync=false",
            format.caps()
        );
        let pipeline = gst::parse::launch(&desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let appsrc = pipeline
            .by_name(if matches!(format, Format::Audio) {
                "microphone"
            } else {
                "camera"
            })
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        let out = pipeline
            .by_name("out")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let luma = Arc::new(Mutex::new(Vec::new()));
        let l = luma.clone();
        out.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(b) = sample.buffer()
                        && let Ok(m) = b.map_readable()
                    {
                        // Mean of a few samples away from the edges.
                        let d = m.as_slice();
                        let n = d.len().min(64 * 48 * 2);
                        let v = d[n / 4..n / 2].iter().map(|x| u64::from(*x)).sum::<u64>()
                            / (n / 4).max(1) as u64;
                        l.lock().unwrap().push(v as u8);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        Sink {
            pipeline,
            appsrc,
            luma,
        }
    }

    impl Drop for Sink {
        fn drop(&mut self) {
            let _ = self.pipeline.set_state(gst::State::Null);
        }
    }

    const VIDEO: Format = Format::Video {
        width: 64,
        height: 48,
        fps: 30,
    };

    fn wait(feed: &Feed, what: &str, pred: impl Fn(&DeviceStatus) -> bool) -> DeviceStatus {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = feed.status();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn slate_while_absent_device_when_back_and_counts() {
        crate::init().unwrap();
        let out = sink(VIDEO);
        let src = Arc::new(Switch {
            kind: DeviceKind::Camera,
            probe: Mutex::new(Probe::Absent {
                why: "unplugged".into(),
            }),
        });
        let feed = Feed::start(src.clone(), out.appsrc.clone(), VIDEO).unwrap();
        let s = wait(&feed, "slate", |s| s.sending == "slate");
        assert_eq!(s.state, DeviceState::Absent);
        assert_eq!(s.error.as_deref(), Some("unplugged"));
        std::thread::sleep(Duration::from_millis(300));
        let slate_frames = out.luma.lock().unwrap().len();
        assert!(slate_frames >= 5, "{slate_frames}");
        // The slate is bright blue-grey; the test source below is black.
        let slate_luma = *out.luma.lock().unwrap().last().unwrap();
        assert!(slate_luma > 60, "{slate_luma}");

        *src.probe.lock().unwrap() =
            found("videotestsrc is-live=true pattern=solid-color foreground-color=0xff000000");
        let t = Instant::now();
        let s = wait(&feed, "device", |s| {
            s.state == DeviceState::Active && s.sending == "device"
        });
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!((s.lost, s.returned), (0, 0));
        std::thread::sleep(Duration::from_millis(200));
        let dark = *out.luma.lock().unwrap().last().unwrap();
        assert!(dark < 30, "{dark}");

        *src.probe.lock().unwrap() = Probe::Absent {
            why: "pulled out".into(),
        };
        let s = wait(&feed, "slate again", |s| s.sending == "slate");
        assert_eq!(s.lost, 1);
        *src.probe.lock().unwrap() =
            found("videotestsrc is-live=true pattern=solid-color foreground-color=0xff000000");
        let s = wait(&feed, "back", |s| s.state == DeviceState::Active);
        assert_eq!((s.lost, s.returned), (1, 1));
        assert!(s.error.is_none(), "{s:?}");
    }

    #[test]
    fn a_capture_that_errors_or_ends_is_replaced_and_retried() {
        crate::init().unwrap();
        let out = sink(VIDEO);
        // Ends after 10 frames (as a camera whose stream stops), forever.
        let src = Arc::new(FixedSource::new(
            DeviceKind::Camera,
            &diemcau_board::ElementSpec::new("videotestsrc")
                .with_property("is-live", "true")
                .with_property("num-buffers", "10"),
        ));
        let feed = Feed::start(src, out.appsrc.clone(), VIDEO).unwrap();
        let s = wait(&feed, "retried after the end", |s| {
            s.lost >= 1 && s.returned >= 1
        });
        assert!(s.present);
        let s = wait(&feed, "the error", |s| s.error.is_some());
        assert!(s.error.unwrap().contains("end of stream"));
        // A source that cannot start at all: error with the reason, slate.
        let bad = Arc::new(Switch {
            kind: DeviceKind::Camera,
            probe: Mutex::new(found("nosuchelement-xyz")),
        });
        let out2 = sink(VIDEO);
        let feed = Feed::start(bad, out2.appsrc.clone(), VIDEO).unwrap();
        let s = wait(&feed, "error", |s| {
            s.state == DeviceState::Error && s.sending == "slate"
        });
        assert!(s.error.unwrap().contains("nosuchelement-xyz"));
    }

    #[test]
    fn unusable_device_sends_the_slate_with_its_error() {
        crate::init().unwrap();
        let out = sink(VIDEO);
        let src = Arc::new(Switch {
            kind: DeviceKind::Camera,
            probe: Mutex::new(Probe::Unusable {
                device: "/dev/video0 \"Grey cam\"".into(),
                error: "camera offers no usable mode".into(),
            }),
        });
        let feed = Feed::start(src, out.appsrc.clone(), VIDEO).unwrap();
        let s = wait(&feed, "error", |s| {
            s.state == DeviceState::Error && s.sending == "slate"
        });
        assert_eq!(s.device.as_deref(), Some("/dev/video0 \"Grey cam\""));
        assert!(!s.present);
        assert!(s.error.unwrap().contains("no usable mode"));
    }

    #[test]
    fn microphone_gone_sends_silence_at_the_right_rate() {
        crate::init().unwrap();
        let out = sink(Format::Audio);
        let src = Arc::new(Switch {
            kind: DeviceKind::Microphone,
            probe: Mutex::new(Probe::Absent {
                why: "unplugged".into(),
            }),
        });
        let feed = Feed::start(src.clone(), out.appsrc.clone(), Format::Audio).unwrap();
        wait(&feed, "silence", |s| s.sending == "silence");
        let n0 = out.luma.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(500));
        let n = out.luma.lock().unwrap().len() - n0;
        // 20 ms buffers: 25 in half a second, give or take scheduling.
        assert!((18..=30).contains(&n), "{n}");
        assert!(out.luma.lock().unwrap().iter().all(|v| *v == 0));
        *src.probe.lock().unwrap() = found("audiotestsrc is-live=true wave=sine volume=0.5");
        wait(&feed, "tone", |s| {
            s.state == DeviceState::Active && s.sending == "device"
        });
    }

    #[test]
    fn status_outside_a_call_comes_from_a_probe() {
        let s = DeviceStatus::from_probe(
            DeviceKind::Camera,
            &Probe::Unusable {
                device: "d".into(),
                error: "e".into(),
            },
        );
        assert_eq!(
            (s.state, s.sending.as_str()),
            (DeviceState::Error, "nothing")
        );
        let s = DeviceStatus::from_probe(DeviceKind::Microphone, &found("alsasrc"));
        assert_eq!(s.state, DeviceState::Ready);
        assert_eq!(s.kind, "microphone");
        assert!(s.present);
    }
}
