//! Capture feeds: the camera and the microphone, each a bin of its own at
//! the head of the publisher's branch.
//!
//! The publisher's video branch starts at a `funnel` named `camera` whose
//! output has fixed caps (I420 at the call's size and rate), its audio
//! branch at a `funnel` named `microphone` (48 kHz mono S16). A [`Feed`]
//! thread per branch puts into the funnel:
//!
//! - while the device is there, a capture bin
//!   (`<device source> ! convert/scale/rate to those caps`) linked to one of
//!   the funnel's pads, its buffers stamped with the publisher's running
//!   time as they leave it. The bin ([`CaptureBin`]) keeps its children's
//!   errors (ENODEV when a USB camera is pulled out) to itself and its end
//!   of stream never reaches the funnel: a failing device is the feed's
//!   business, and the call never sees it;
//! - while it is not (unplugged, unusable, failing, or silent for
//!   [`STALL`]), a still "camera unavailable" slate drawn once by
//!   `textoverlay`, or silence, at the same size and rate, pushed into the
//!   funnel's other pad through an `appsrc` (`camera-fallback`,
//!   `microphone-fallback`), so the encoders, the PeerConnection and the
//!   call never notice.
//!
//! The device's frames go from its streaming thread straight through the
//! publisher's branch, as in a pipeline written with `gst-launch`: no
//! queue, copy or thread hop of the feed's own.
//!
//! The thread asks the [`DeviceSource`] every [`POLL`] whether the device is
//! present, and looks at what the capture bin kept: an error or end of
//! stream stops the capture at once (the bin is taken out of the
//! publisher). A device that is present again is taken back at the next
//! poll; one that is present but fails is retried with a backoff of at most
//! [`MAX_BACKOFF`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diemcau_board::device::{DeviceKind, DeviceSource, Found, Probe};
use gst::glib;
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
            Format::Video { .. } => format!(
                "videoconvert ! videoscale ! videorate ! capsfilter caps=\"{}\"",
                self.caps()
            ),
            Format::Audio => format!(
                "audioconvert ! audioresample ! capsfilter caps=\"{}\"",
                self.caps()
            ),
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

    /// The branch's name, and its funnel's.
    fn name(self) -> &'static str {
        match self {
            Format::Video { .. } => "camera",
            Format::Audio => "microphone",
        }
    }

    /// The funnel heading a publisher branch of this format, with the
    /// fallback's `appsrc` linked to it (a few buffers, the oldest dropped:
    /// it never holds the feed thread).
    fn head(self) -> String {
        let buffers = match self {
            Format::Video { .. } => 3,
            Format::Audio => 25,
        };
        format!(
            "appsrc name={name}-fallback is-live=true do-timestamp=true format=time min-latency=0 \
             max-bytes=0 max-buffers={buffers} leaky-type=downstream caps=\"{caps}\" \
             ! funnel name={name}",
            name = self.name(),
            caps = self.caps(),
        )
    }
}

/// The head of the publisher's video branch: the `camera` funnel, with the
/// slate's `appsrc` on one of its pads. The branch goes on from the funnel.
pub(crate) fn video_head(settings: &MediaSettings) -> String {
    Format::video(settings).head()
}

/// The head of the publisher's audio branch: the `microphone` funnel, with
/// the silence's `appsrc` on one of its pads.
pub(crate) fn audio_head() -> String {
    Format::Audio.head()
}

/// The camera and microphone feeds of one publisher.
pub struct Feeds {
    pub camera: Feed,
    pub microphone: Feed,
}

impl Feeds {
    /// Starts both feeds into the `camera` and `microphone` funnels of
    /// `pipeline` (see [`video_head`], [`audio_head`]).
    pub(crate) fn start(
        pipeline: &gst::Pipeline,
        settings: &MediaSettings,
    ) -> Result<Self, MediaError> {
        Ok(Feeds {
            camera: Feed::start(settings.camera.clone(), pipeline, Format::video(settings))?,
            microphone: Feed::start(settings.microphone.clone(), pipeline, Format::Audio)?,
        })
    }

    /// Stops both feeds and takes their captures out of the publisher (do
    /// it before stopping the publisher's pipeline).
    pub(crate) fn stop(&mut self) {
        self.camera.stop();
        self.microphone.stop();
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

/// Where a feed puts its frames: the branch's funnel, in its pipeline, and
/// the fallback's `appsrc` on the funnel.
struct Branch {
    pipeline: gst::Pipeline,
    funnel: gst::Element,
    fallback: gst_app::AppSrc,
}

impl Branch {
    fn of(pipeline: &gst::Pipeline, format: Format) -> Result<Self, MediaError> {
        let name = format.name();
        let funnel = pipeline
            .by_name(name)
            .ok_or_else(|| MediaError::Pipeline(format!("publisher has no funnel {name}")))?;
        let fallback = pipeline
            .by_name(&format!("{name}-fallback"))
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| {
                MediaError::Pipeline(format!("publisher has no appsrc {name}-fallback"))
            })?;
        Ok(Branch {
            pipeline: pipeline.clone(),
            funnel,
            fallback,
        })
    }
}

impl Feed {
    fn start(
        source: Arc<dyn DeviceSource>,
        pipeline: &gst::Pipeline,
        format: Format,
    ) -> Result<Self, MediaError> {
        let branch = Branch::of(pipeline, format)?;
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
                    branch,
                    format,
                    shared: sh,
                    capture: None,
                    retired: Vec::new(),
                    captures: 0,
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

    /// Stops the thread; its capture bin leaves the pipeline.
    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bin a capture runs in. It keeps the errors of the elements inside
/// it instead of posting them on the publisher's bus, where an error would
/// end the call: a camera pulled out is the feed's to handle.
mod capture_bin {
    use std::sync::Mutex;

    use gst::glib;
    use gst::subclass::prelude::*;

    #[derive(Default)]
    pub struct CaptureBin {
        /// The first error posted inside, with its debug detail.
        pub(super) failure: Mutex<Option<String>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for CaptureBin {
        const NAME: &'static str = "DiemcauCaptureBin";
        type Type = super::CaptureBin;
        type ParentType = gst::Bin;
    }

    impl ObjectImpl for CaptureBin {}
    impl GstObjectImpl for CaptureBin {}
    impl ElementImpl for CaptureBin {}

    impl BinImpl for CaptureBin {
        fn handle_message(&self, msg: gst::Message) {
            if let gst::MessageView::Error(e) = msg.view() {
                let debug = e.debug().map(|d| format!(" ({d})")).unwrap_or_default();
                let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
                if f.is_none() {
                    *f = Some(format!("{}{debug}", e.error()));
                }
                return;
            }
            self.parent_handle_message(msg);
        }
    }
}

glib::wrapper! {
    /// See [`capture_bin`].
    pub struct CaptureBin(ObjectSubclass<capture_bin::CaptureBin>)
        @extends gst::Bin, gst::Element, gst::Object,
        @implements gst::ChildProxy;
}

impl CaptureBin {
    fn new(name: &str) -> Self {
        glib::Object::builder().property("name", name).build()
    }

    fn failure(&self) -> Option<String> {
        use gst::subclass::prelude::ObjectSubclassIsExt;
        self.imp()
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A capture bin running in the publisher, linked to a pad of the funnel.
struct Capture {
    pipeline: gst::Pipeline,
    funnel: gst::Element,
    bin: CaptureBin,
    /// The funnel's pad the bin feeds.
    pad: Option<gst::Pad>,
    found: Found,
    started_ms: u64,
    /// The capture pushed end of stream (held back from the funnel).
    ended: Arc<AtomicBool>,
}

impl Capture {
    fn start(
        found: &Found,
        format: Format,
        branch: &Branch,
        shared: &Arc<Shared>,
        name: &str,
        retired: &mut Vec<JoinHandle<()>>,
    ) -> Result<Self, String> {
        let desc = format!("{} ! {}", found.launch, format.convert());
        let inner =
            gst::parse::bin_from_description(&desc, true).map_err(|e| format!("{desc}: {e}"))?;
        let bin = CaptureBin::new(name);
        let out = inner
            .static_pad("src")
            .ok_or_else(|| format!("{desc}: no output"))?;
        bin.add(&inner).map_err(|e| e.to_string())?;
        let ghost = gst::GhostPad::with_target(&out).map_err(|e| e.to_string())?;
        bin.add_pad(&ghost).map_err(|e| e.to_string())?;
        let ended = Arc::new(AtomicBool::new(false));
        let (sh, end, weak) = (shared.clone(), ended.clone(), bin.downgrade());
        ghost.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| match &mut info.data {
                Some(gst::PadProbeData::Buffer(buf)) => {
                    // Stamped by the publisher's running time as it leaves
                    // the capture, as an appsrc with do-timestamp would: a
                    // source started in a running pipeline may count from
                    // zero.
                    if let Some(t) = weak.upgrade().and_then(|b| b.current_running_time()) {
                        let b = buf.make_mut();
                        b.set_pts(t);
                        b.set_dts(gst::ClockTime::NONE);
                    }
                    sh.last_device_push
                        .store(sh.ms(Instant::now()), Ordering::Relaxed);
                    gst::PadProbeReturn::Ok
                }
                Some(gst::PadProbeData::Event(ev)) if ev.type_() == gst::EventType::Eos => {
                    // The funnel would hold it anyway; the feed restarts.
                    end.store(true, Ordering::Relaxed);
                    gst::PadProbeReturn::Drop
                }
                _ => gst::PadProbeReturn::Ok,
            },
        );
        branch.pipeline.add(&bin).map_err(|e| e.to_string())?;
        let mut capture = Capture {
            pipeline: branch.pipeline.clone(),
            funnel: branch.funnel.clone(),
            bin,
            pad: None,
            found: found.clone(),
            started_ms: shared.ms(Instant::now()),
            ended,
        };
        let started = (|| {
            let pad = branch
                .funnel
                .request_pad_simple("sink_%u")
                .ok_or_else(|| "the funnel gives no pad".to_string())?;
            capture.pad = Some(pad.clone());
            ghost
                .link(&pad)
                .map_err(|e| format!("the capture does not fit the publisher: {e}"))?;
            capture
                .bin
                .sync_state_with_parent()
                .map_err(|e| capture.bin.failure().unwrap_or_else(|| e.to_string()))
        })();
        match started {
            Ok(()) => Ok(capture),
            Err(why) => {
                retired.extend(capture.retire());
                Err(why)
            }
        }
    }

    /// An error or end of stream in the capture, or a capture that has
    /// delivered nothing for [`SILENT_CAPTURE`].
    fn failure(&self, shared: &Shared, now: Instant) -> Option<String> {
        if let Some(e) = self.bin.failure() {
            return Some(e);
        }
        if self.ended.load(Ordering::Relaxed) {
            return Some("the device stopped (end of stream)".into());
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

impl Capture {
    /// Takes the capture out of the publisher at once and stops it on a
    /// thread of its own, whose handle is returned. Its streaming thread may
    /// be held downstream (webrtcbin holds its input until the session is
    /// negotiated): stopping the bin waits for that thread, so it is
    /// unlinked and out of the pipeline first, which neither waits nor lets
    /// the publisher's own state changes wait for it. The funnel's pad is
    /// given back once the bin has stopped.
    fn retire(mut self) -> Option<JoinHandle<()>> {
        let _ = self.pipeline.remove(&self.bin);
        let bin = self.bin.clone();
        let funnel = self.funnel.clone();
        let pad = self.pad.take();
        std::thread::Builder::new()
            .name("capture-end".into())
            .spawn(move || {
                let _ = bin.set_state(gst::State::Null);
                if let Some(pad) = pad {
                    funnel.release_request_pad(&pad);
                }
            })
            .inspect_err(|e| tracing::warn!(error = %e, "cannot start the thread ending a capture"))
            .ok()
    }
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
    branch: Branch,
    format: Format,
    shared: Arc<Shared>,
    capture: Option<Capture>,
    /// Captures being stopped (see [`Capture::retire`]).
    retired: Vec<JoinHandle<()>>,
    /// Captures started so far (each bin is named by its number).
    captures: u32,
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
        if let Some(c) = self.capture.take() {
            self.retired.extend(c.retire());
        }
        for t in self.retired.drain(..) {
            let _ = t.join();
        }
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
                self.captures += 1;
                let name = format!("capture-{kind}-{}", self.captures);
                match Capture::start(
                    &found,
                    self.format,
                    &self.branch,
                    &self.shared,
                    &name,
                    &mut self.retired,
                ) {
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
        let had = match self.capture.take() {
            Some(c) => {
                self.retired.retain(|t| !t.is_finished());
                self.retired.extend(c.retire());
                true
            }
            None => false,
        };
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
                let _ = self.branch.fallback.push_buffer(b);
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

    /// A publisher stand-in: the branch's head into a counting,
    /// luma-reading sink.
    struct Sink {
        pipeline: gst::Pipeline,
        luma: Arc<Mutex<Vec<u8>>>,
    }

    fn sink(format: Format) -> Sink {
        let desc = format!("{} ! appsink name=out sync=false", format.head());
        let pipeline = gst::parse::launch(&desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
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
        Sink { pipeline, luma }
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
        let feed = Feed::start(src.clone(), &out.pipeline, VIDEO).unwrap();
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
        let feed = Feed::start(src, &out.pipeline, VIDEO).unwrap();
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
        let feed = Feed::start(bad, &out2.pipeline, VIDEO).unwrap();
        let s = wait(&feed, "error", |s| {
            s.state == DeviceState::Error && s.sending == "slate"
        });
        assert!(s.error.unwrap().contains("nosuchelement-xyz"));
    }

    #[test]
    fn a_device_error_stays_in_the_capture_and_off_the_publishers_bus() {
        crate::init().unwrap();
        let out = sink(VIDEO);
        let src = Arc::new(Switch {
            kind: DeviceKind::Camera,
            probe: Mutex::new(found("filesrc location=/nonexistent/diemcau-camera")),
        });
        let feed = Feed::start(src.clone(), &out.pipeline, VIDEO).unwrap();
        let s = wait(&feed, "error", |s| {
            s.state == DeviceState::Error && s.sending == "slate"
        });
        let error = s.error.unwrap();
        assert!(error.contains("nonexistent/diemcau-camera"), "{error}");
        // A good device then: the publisher never saw the error.
        *src.probe.lock().unwrap() =
            found("videotestsrc is-live=true pattern=solid-color foreground-color=0xff000000");
        wait(&feed, "device", |s| s.state == DeviceState::Active);
        let bus = out.pipeline.bus().unwrap();
        assert!(
            bus.pop_filtered(&[gst::MessageType::Error]).is_none(),
            "a capture's error reached the publisher"
        );
        // Only the capture of the moment is in the pipeline.
        let captures = out
            .pipeline
            .children()
            .iter()
            .filter(|c| c.name().starts_with("capture-"))
            .count();
        assert_eq!(captures, 1);
        drop(feed);
        assert!(
            !out.pipeline
                .children()
                .iter()
                .any(|c| c.name().starts_with("capture-"))
        );
    }

    /// webrtcbin holds its input until the session is negotiated: a device
    /// lost then must not hold the feed, nor the publisher's stopping.
    #[test]
    fn a_capture_held_downstream_is_let_go() {
        crate::init().unwrap();
        let out = sink(VIDEO);
        let src = Arc::new(Switch {
            kind: DeviceKind::Camera,
            probe: Mutex::new(found("videotestsrc is-live=true")),
        });
        let feed = Feed::start(src.clone(), &out.pipeline, VIDEO).unwrap();
        wait(&feed, "device", |s| s.state == DeviceState::Active);
        let held = out
            .pipeline
            .by_name("out")
            .unwrap()
            .static_pad("sink")
            .unwrap();
        held.add_probe(
            gst::PadProbeType::BLOCK_DOWNSTREAM | gst::PadProbeType::BUFFER,
            |_, _| gst::PadProbeReturn::Ok,
        );
        std::thread::sleep(Duration::from_millis(200));
        *src.probe.lock().unwrap() = Probe::Absent {
            why: "pulled out".into(),
        };
        let s = wait(&feed, "absent", |s| s.state == DeviceState::Absent);
        assert_eq!(s.lost, 1);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = out.pipeline.set_state(gst::State::Null);
            drop(feed);
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the publisher and its feed did not stop"
        );
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
        let feed = Feed::start(src, &out.pipeline, VIDEO).unwrap();
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
        let feed = Feed::start(src.clone(), &out.pipeline, Format::Audio).unwrap();
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
