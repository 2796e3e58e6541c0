//! Device sources: "is the camera (microphone) there, and how does
//! GStreamer capture from it?"
//!
//! [`DeviceSource`] is the boundary between the room's media and the
//! hardware it captures from. The media crate asks it, a few times a second
//! during a call, what is plugged in ([`DeviceSource::probe`]) and starts,
//! stops or restarts its capture pipeline accordingly; the answer never
//! names a GStreamer object, only a `gst-launch` source description.
//!
//! Real implementations:
//! - [`V4l2Camera`]: enumerates `/dev/video*` ([`crate::camera::enumerate`]),
//!   picks a camera (honouring a [`CameraPin`] from config) and its mode
//!   within the board's [`CameraLimits`]: `v4l2src device=... ! caps [! jpeg
//!   decoder]`. The choice itself is the pure [`choose_camera`].
//! - [`AlsaMicrophone`]: reads `/proc/asound` ([`crate::audio::read_cards`])
//!   and picks the microphone ([`pick_microphone`]): `alsasrc device=...`.
//!
//! Fakes (the sim board), whose presence follows a marker file so a test can
//! unplug and plug them in again:
//! - [`FakeCamera`]: the profile's test source while the marker exists. If
//!   the marker holds a `v4l2-ctl --list-formats-ext` listing, the fake
//!   offers those formats and the real mode choice runs on them (a listing
//!   with no usable format makes the camera [`Probe::Unusable`]).
//! - [`FakeMicrophone`]: the profile's test tone while the marker exists.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::audio::{AlsaCard, AlsaPcm, AudioPin, pick_audio, read_cards};
use crate::camera::{
    CameraError, CameraInfo, CameraLimits, CameraPin, PixelFormat, enumerate,
    parse_v4l2_ctl_formats, pick_camera, pick_camera_mode,
};
use crate::profile::ElementSpec;

/// What a device source captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Camera,
    Microphone,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Camera => "camera",
            Self::Microphone => "microphone",
        })
    }
}

/// A device that is present, and how to capture from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// For people: `/dev/video0 "HD Pro Webcam C920"`.
    pub device: String,
    /// `gst-launch` description of the source part, e.g.
    /// `v4l2src device=/dev/video0 ! image/jpeg,width=1280,...`.
    pub launch: String,
    /// Why this device and mode, for logs.
    pub reason: String,
}

/// The answer of [`DeviceSource::probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Plugged in and usable.
    Present(Found),
    /// Not plugged in (or not the one named in config).
    Absent { why: String },
    /// Plugged in but unusable, e.g. a camera with no usable format.
    Unusable { device: String, error: String },
}

impl Probe {
    pub fn is_present(&self) -> bool {
        matches!(self, Self::Present(_))
    }
}

/// Where the room captures video or sound from. Implementations must be
/// cheap enough to call every 250 ms (cache what is expensive), must not
/// block for long, and must never panic on what the system reports.
pub trait DeviceSource: fmt::Debug + Send + Sync {
    fn kind(&self) -> DeviceKind;
    fn probe(&self) -> Probe;
}

/// A source that is always there, e.g. `libcamerasrc` or a profile's test
/// source when no marker is configured.
#[derive(Debug, Clone)]
pub struct FixedSource {
    kind: DeviceKind,
    found: Found,
}

impl FixedSource {
    pub fn new(kind: DeviceKind, spec: &ElementSpec) -> Self {
        Self {
            kind,
            found: Found {
                device: spec.element.clone(),
                launch: spec.launch_fragment(),
                reason: "the board profile's source".into(),
            },
        }
    }
}

impl DeviceSource for FixedSource {
    fn kind(&self) -> DeviceKind {
        self.kind
    }
    fn probe(&self) -> Probe {
        Probe::Present(self.found.clone())
    }
}

// ---------------------------------------------------------------- camera

/// The source description for a chosen camera and mode: `v4l2src` with the
/// mode's caps, then the JPEG decoder for MJPEG (`jpeg_decoder` when the
/// board decodes JPEG in hardware, else `jpegdec`).
fn v4l2_launch(
    cam: &CameraInfo,
    caps: &str,
    format: PixelFormat,
    jpeg_decoder: Option<&ElementSpec>,
) -> String {
    let src = ElementSpec::new("v4l2src")
        .with_property("device", cam.path.to_string_lossy())
        .launch_fragment();
    match format {
        PixelFormat::Mjpeg => {
            let dec = jpeg_decoder
                .map(ElementSpec::launch_fragment)
                .unwrap_or_else(|| "jpegdec".to_string());
            format!("{src} ! {caps} ! {dec}")
        }
        PixelFormat::Yuyv | PixelFormat::Nv12 => format!("{src} ! {caps}"),
    }
}

/// Chooses the camera and its mode among `cameras`: pure, so it runs on
/// fixtures. A missing camera (or a pinned one not plugged in) is
/// [`Probe::Absent`]; a camera with no usable mode is [`Probe::Unusable`]
/// with the reason ("offers no usable mode ...; it offers: H264 up to ...").
/// `jpeg_decoder` is the board's hardware JPEG decoder, used when `limits`
/// says the board has it.
pub fn choose_camera(
    cameras: &[CameraInfo],
    pin: Option<&CameraPin>,
    limits: &CameraLimits,
    jpeg_decoder: Option<&ElementSpec>,
) -> Probe {
    let cam = match pick_camera(cameras, pin) {
        Ok(c) => c,
        Err(e) => return Probe::Absent { why: e.to_string() },
    };
    let device = format!("{} {:?}", cam.path.display(), cam.name);
    let limits = limits.for_camera(cam);
    match pick_camera_mode(&cam.formats, &limits) {
        Ok(mode) => {
            let dec = jpeg_decoder.filter(|_| limits.hw_jpeg_decode);
            Probe::Present(Found {
                launch: v4l2_launch(cam, &mode.caps(), mode.format, dec),
                reason: format!(
                    "{} {}x{} at {} fps: {}",
                    match mode.format {
                        PixelFormat::Mjpeg => "MJPEG",
                        PixelFormat::Yuyv => "YUYV",
                        PixelFormat::Nv12 => "NV12",
                    },
                    mode.width,
                    mode.height,
                    mode.rate,
                    mode.reason
                ),
                device,
            })
        }
        Err(e) => Probe::Unusable {
            device,
            error: e.to_string(),
        },
    }
}

/// How long a V4L2 enumeration is trusted while `/dev` does not change.
const V4L2_CACHE: Duration = Duration::from_secs(3);

/// The real camera: V4L2 capture devices under a root (`/` on a board).
#[derive(Debug)]
pub struct V4l2Camera {
    root: PathBuf,
    pin: Option<CameraPin>,
    limits: CameraLimits,
    jpeg_decoder: Option<ElementSpec>,
    /// The last answer, with the `/dev/video*` nodes (name, inode) it was
    /// made from: enumeration opens every node, so it is only repeated
    /// when a node comes or goes, or the answer is older than
    /// [`V4L2_CACHE`].
    cache: Mutex<Option<CachedProbe>>,
}

/// `/dev/video*` as (name, inode) pairs.
type Nodes = Vec<(String, u64)>;

/// A probe, when it was made, and the nodes it was made from.
type CachedProbe = (Nodes, Instant, Probe);

impl V4l2Camera {
    pub fn new(
        root: impl Into<PathBuf>,
        pin: Option<CameraPin>,
        limits: CameraLimits,
        jpeg_decoder: Option<ElementSpec>,
    ) -> Self {
        Self {
            root: root.into(),
            pin,
            limits,
            jpeg_decoder,
            cache: Mutex::new(None),
        }
    }

    fn nodes(&self) -> Nodes {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(self.root.join("dev")) else {
            return Vec::new();
        };
        let mut v: Nodes = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                name.starts_with("video").then_some(())?;
                let ino = e.metadata().map(|m| m.ino()).unwrap_or(0);
                Some((name, ino))
            })
            .collect();
        v.sort();
        v
    }
}

impl DeviceSource for V4l2Camera {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Camera
    }

    fn probe(&self) -> Probe {
        let nodes = self.nodes();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, at, p)) = cache.as_ref()
            && *n == nodes
            && at.elapsed() < V4L2_CACHE
        {
            return p.clone();
        }
        let probe = match enumerate(&self.root) {
            Ok(e) => {
                for (path, why) in &e.skipped {
                    tracing::trace!(node = %path.display(), %why, "not a camera");
                }
                choose_camera(
                    &e.cameras,
                    self.pin.as_ref(),
                    &self.limits,
                    self.jpeg_decoder.as_ref(),
                )
            }
            Err(e @ CameraError::DevDir { .. }) => Probe::Absent {
                why: crate::error_chain(&e),
            },
            Err(e) => Probe::Absent { why: e.to_string() },
        };
        *cache = Some((nodes, Instant::now(), probe.clone()));
        probe
    }
}

/// The sim board's camera: the profile's test source while `marker`
/// exists (always, without a marker).
///
/// An empty marker gives the test source as the profile describes it. A
/// marker holding a `v4l2-ctl --list-formats-ext` listing makes the fake
/// offer those formats: the mode is chosen as for a real camera and the
/// test source is captured at that size and rate, or, if no format is
/// usable, the camera is [`Probe::Unusable`] with the real error.
#[derive(Debug, Clone)]
pub struct FakeCamera {
    spec: ElementSpec,
    marker: Option<PathBuf>,
    limits: CameraLimits,
}

impl FakeCamera {
    pub fn new(spec: &ElementSpec, marker: Option<PathBuf>, limits: CameraLimits) -> Self {
        Self {
            spec: spec.clone(),
            marker,
            limits,
        }
    }
}

impl DeviceSource for FakeCamera {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Camera
    }

    fn probe(&self) -> Probe {
        let base = self.spec.launch_fragment();
        let Some(marker) = &self.marker else {
            return Probe::Present(Found {
                device: format!("{} (sim)", self.spec.element),
                launch: base,
                reason: "sim board test source".into(),
            });
        };
        let device = format!("{} (sim, {})", self.spec.element, marker.display());
        let text = match std::fs::read(marker) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                return Probe::Absent {
                    why: format!("{} ({e}): the sim camera is unplugged", marker.display()),
                };
            }
        };
        if text.trim().is_empty() {
            return Probe::Present(Found {
                device,
                launch: base,
                reason: "sim board test source, plugged in".into(),
            });
        }
        let formats = parse_v4l2_ctl_formats(&text);
        match pick_camera_mode(&formats, &self.limits) {
            Ok(mode) => Probe::Present(Found {
                device,
                launch: format!(
                    "{base} ! video/x-raw,width={},height={},framerate={}",
                    mode.width, mode.height, mode.rate
                ),
                reason: format!(
                    "sim camera offering recorded formats: {}x{} at {} fps ({})",
                    mode.width, mode.height, mode.rate, mode.reason
                ),
            }),
            Err(e) => Probe::Unusable {
                device,
                error: e.to_string(),
            },
        }
    }
}

// ------------------------------------------------------------ microphone

/// Chooses the microphone among ALSA `cards`: pure, so it runs on
/// fixtures. It is the capture side of [`pick_audio`] (a USB speakerphone
/// first, then any USB device with both, then a USB microphone such as a
/// webcam's, then any card's), and works on a board with no playback card
/// at all. No microphone (or a pinned card not plugged in) is
/// [`Probe::Absent`].
pub fn pick_microphone(cards: &[AlsaCard], pin: Option<&AudioPin>) -> Probe {
    let capture: Result<Option<AlsaPcm>, String> = match pick_audio(cards, pin) {
        Ok(choice) => Ok(choice.capture),
        Err(crate::audio::AudioError::NoPlayback { .. }) => Ok(cards
            .iter()
            .filter(|c| !c.capture.is_empty() && pin.is_none())
            .min_by_key(|c| (!c.is_speakerphone(), !c.is_usb()))
            .map(|c| AlsaPcm {
                card_index: c.index,
                card_id: c.id.clone(),
                card_name: c.name.clone(),
                device: c.capture[0],
                iec958_only: false,
            })),
        Err(e) => Err(e.to_string()),
    };
    match capture {
        Ok(Some(pcm)) => Probe::Present(Found {
            device: format!("{} {:?}", pcm.card_id, pcm.card_name),
            launch: ElementSpec::new("alsasrc")
                .with_property("device", pcm.alsa_device())
                .launch_fragment(),
            reason: format!("microphone {pcm}"),
        }),
        Ok(None) => Probe::Absent {
            why: "no sound card with a microphone".into(),
        },
        Err(why) => Probe::Absent { why },
    }
}

/// The real microphone: ALSA capture devices under a root (`/` on a board).
/// `/proc/asound` is cheap to read, so every probe reads it.
#[derive(Debug, Clone)]
pub struct AlsaMicrophone {
    root: PathBuf,
    pin: Option<AudioPin>,
}

impl AlsaMicrophone {
    pub fn new(root: impl Into<PathBuf>, pin: Option<AudioPin>) -> Self {
        Self {
            root: root.into(),
            pin,
        }
    }
}

impl DeviceSource for AlsaMicrophone {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Microphone
    }

    fn probe(&self) -> Probe {
        match read_cards(&self.root) {
            Ok(cards) => pick_microphone(&cards, self.pin.as_ref()),
            Err(e) => Probe::Absent {
                why: crate::error_chain(&e),
            },
        }
    }
}

/// The sim board's microphone: the profile's test tone while `marker`
/// exists (always, without a marker).
///
/// With a room loop ([`FakeMicrophone::with_room_loop`]) it also hears
/// the room: what the speaker plays into `interaudiosink channel=`
/// [`FakeMicrophone::room_loop_sink`], at half its level and a few tens of
/// milliseconds later, as a microphone beside a loudspeaker would.
#[derive(Debug, Clone)]
pub struct FakeMicrophone {
    spec: ElementSpec,
    marker: Option<PathBuf>,
    room_loop: Option<String>,
}

impl FakeMicrophone {
    pub fn new(spec: &ElementSpec, marker: Option<PathBuf>) -> Self {
        Self {
            spec: spec.clone(),
            marker,
            room_loop: None,
        }
    }

    /// The microphone also hears what is played into `channel`.
    #[must_use]
    pub fn with_room_loop(mut self, channel: &str) -> Self {
        self.room_loop = Some(channel.to_string());
        self
    }

    /// The speaker that plays into the room loop `channel`.
    pub fn room_loop_sink(channel: &str) -> ElementSpec {
        ElementSpec::new("interaudiosink").with_property("channel", channel)
    }

    fn launch(&self) -> String {
        let tone = self.spec.launch_fragment();
        match &self.room_loop {
            None => tone,
            Some(channel) => format!(
                "{tone} ! simroom. {air} ! audioconvert ! audioresample \
                 ! audio/x-raw,rate=48000,channels=1 ! volume volume=0.5 ! simroom. \
                 audiomixer name=simroom",
                air = ElementSpec::new("interaudiosrc")
                    .with_property("channel", channel)
                    .with_property("period-time", "10000000")
                    .launch_fragment(),
            ),
        }
    }
}

impl DeviceSource for FakeMicrophone {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Microphone
    }

    fn probe(&self) -> Probe {
        match &self.marker {
            Some(m) if !m.exists() => Probe::Absent {
                why: format!("{} is absent: the sim microphone is unplugged", m.display()),
            },
            m => Probe::Present(Found {
                device: match m {
                    Some(m) => format!("{} (sim, {})", self.spec.element, m.display()),
                    None => format!("{} (sim)", self.spec.element),
                },
                launch: self.launch(),
                reason: if self.room_loop.is_some() {
                    "sim board test tone, hearing the speaker".into()
                } else {
                    "sim board test tone".into()
                },
            }),
        }
    }
}

/// The marker files of the sim board's fake devices in `dir`.
pub fn sim_markers(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("camera"), dir.join("microphone"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::{FormatInfo, SysfsVideo, parse_v4l2_ctl_formats};
    use crate::detect::fixture_root;

    fn formats(name: &str) -> Vec<FormatInfo> {
        let bytes = std::fs::read(fixture_root(&format!("cameras/{name}.txt"))).unwrap();
        parse_v4l2_ctl_formats(&String::from_utf8_lossy(&bytes))
    }

    fn cam(path: &str, name: &str, usb: Option<&str>, fixture: &str) -> CameraInfo {
        CameraInfo {
            path: path.into(),
            name: name.into(),
            driver: "uvcvideo".into(),
            bus_info: String::new(),
            usb_id: usb.map(|u| u.parse().unwrap()),
            usb_speed_mbps: Some(480),
            formats: formats(fixture),
        }
    }

    /// The Pi 4 with a C920 as the sysfs fixture records it, with the
    /// C920's recorded formats.
    fn pi4_c920() -> CameraInfo {
        let sys = SysfsVideo::read(&fixture_root("sysfs/pi4-c920"), "video0");
        CameraInfo {
            path: "/dev/video0".into(),
            name: sys.name.unwrap(),
            driver: "uvcvideo".into(),
            bus_info: "usb-fe980000.usb-1.3".into(),
            usb_id: sys.usb_id,
            usb_speed_mbps: sys.usb_speed_mbps,
            formats: formats("logitech-c920"),
        }
    }

    fn limits(hw_jpeg: bool) -> CameraLimits {
        CameraLimits {
            hw_jpeg_decode: hw_jpeg,
            ..CameraLimits::default()
        }
    }

    fn present(p: Probe) -> Found {
        match p {
            Probe::Present(f) => f,
            other => panic!("expected present, got {other:?}"),
        }
    }

    #[test]
    fn pi4_c920_with_hardware_jpeg_gets_mjpeg_through_the_boards_decoder() {
        let rpi4 = crate::profile::builtin("rpi4").unwrap();
        let dec = rpi4.camera.jpeg_decoder.as_ref();
        let f = present(choose_camera(&[pi4_c920()], None, &limits(true), dec));
        assert_eq!(
            f.launch,
            "v4l2src device=/dev/video0 ! image/jpeg,width=1280,height=720,framerate=30/1 ! v4l2jpegdec"
        );
        assert_eq!(f.device, "/dev/video0 \"HD Pro Webcam C920\"");
        assert!(f.reason.contains("MJPEG 1280x720"), "{}", f.reason);
        // The same camera without the hardware decoder: raw within USB 2.0.
        let f = present(choose_camera(&[pi4_c920()], None, &limits(false), dec));
        assert_eq!(
            f.launch,
            "v4l2src device=/dev/video0 ! video/x-raw,format=YUY2,width=800,height=448,framerate=30/1"
        );
    }

    #[test]
    fn mjpeg_in_software_uses_jpegdec() {
        // A camera offering MJPEG only at 720p30 with no hardware decoder.
        let mut c = cam(
            "/dev/video2",
            "MJPEG cam",
            Some("1234:5678"),
            "logitech-c920",
        );
        c.formats.retain(|f| f.fourcc == "MJPG");
        let f = present(choose_camera(&[c], None, &limits(false), None));
        assert!(f.launch.ends_with("! jpegdec"), "{}", f.launch);
        assert!(
            f.launch
                .starts_with("v4l2src device=/dev/video2 ! image/jpeg,width=1280,height=720")
        );
    }

    #[test]
    fn pinned_camera_is_chosen_or_absent_with_what_is_present() {
        let cams = [
            pi4_c920(),
            cam(
                "/dev/video2",
                "USB2.0 PC CAMERA",
                Some("1908:2311"),
                "cheap-yuyv-only",
            ),
        ];
        let pin: CameraPin = "usb:1908:2311".parse().unwrap();
        let f = present(choose_camera(&cams, Some(&pin), &limits(true), None));
        assert_eq!(
            f.launch,
            "v4l2src device=/dev/video2 ! video/x-raw,format=YUY2,width=640,height=480,framerate=30/1"
        );
        let pin: CameraPin = "name:Brio".parse().unwrap();
        let Probe::Absent { why } = choose_camera(&cams, Some(&pin), &limits(true), None) else {
            panic!()
        };
        assert!(why.contains("\"Brio\" named in config not found"), "{why}");
        assert!(
            why.contains("/dev/video0 \"HD Pro Webcam C920\" usb:046d:082d"),
            "{why}"
        );
        assert!(matches!(
            choose_camera(&[], None, &limits(true), None),
            Probe::Absent { .. }
        ));
    }

    #[test]
    fn camera_with_no_usable_format_is_unusable_with_a_clear_error() {
        let c = cam(
            "/dev/video0",
            "Grey H264 cam",
            Some("0c45:6366"),
            "h264-grey-only",
        );
        let Probe::Unusable { device, error } = choose_camera(&[c], None, &limits(true), None)
        else {
            panic!()
        };
        assert_eq!(device, "/dev/video0 \"Grey H264 cam\"");
        assert!(error.contains("no usable mode"), "{error}");
        assert!(error.contains("H264"), "{error}");
        // A usable USB camera beside it is preferred.
        let cams = [
            cam(
                "/dev/video2",
                "Grey H264 cam",
                Some("0c45:6366"),
                "h264-grey-only",
            ),
            pi4_c920(),
        ];
        let f = present(choose_camera(&cams, None, &limits(true), None));
        assert_eq!(f.device, "/dev/video0 \"HD Pro Webcam C920\"");
    }

    #[test]
    fn usb3_camera_gets_raw_720p30() {
        let mut c = cam(
            "/dev/video0",
            "USB3 cam",
            Some("2bdf:0280"),
            "cheap-yuyv-only",
        );
        c.usb_speed_mbps = Some(5000);
        let f = present(choose_camera(&[c], None, &limits(false), None));
        assert!(
            f.launch.contains("width=1280,height=720,framerate=30/1"),
            "{}",
            f.launch
        );
    }

    #[test]
    fn v4l2_camera_on_a_root_without_cameras_is_absent_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let c = V4l2Camera::new(dir.path(), None, limits(false), None);
        assert_eq!(c.kind(), DeviceKind::Camera);
        let Probe::Absent { why } = c.probe() else {
            panic!()
        };
        assert!(why.contains("cannot list camera devices"), "{why}");
        std::fs::create_dir(dir.path().join("dev")).unwrap();
        std::fs::write(dir.path().join("dev/video0"), b"").unwrap();
        assert_eq!(
            c.probe(),
            Probe::Absent {
                why: "no camera found".into()
            }
        );
        // The real machine (no camera here): answers, twice (cached).
        let real = V4l2Camera::new("/", None, limits(false), None);
        let first = real.probe();
        assert_eq!(real.probe(), first);
    }

    fn cards(name: &str) -> Vec<AlsaCard> {
        read_cards(&fixture_root(&format!("asound/{name}"))).unwrap()
    }

    #[test]
    fn microphone_prefers_the_usb_speakerphone() {
        let f = present(pick_microphone(&cards("pi4-jabra410"), None));
        assert_eq!(f.launch, r#"alsasrc device="plughw:CARD=USB,DEV=0""#);
        assert_eq!(f.device, "USB \"Jabra SPEAK 410 USB\"");
        let f = present(pick_microphone(&cards("x86-anker-c920"), None));
        assert_eq!(f.launch, r#"alsasrc device="plughw:CARD=PowerConf,DEV=0""#);
    }

    #[test]
    fn webcam_microphone_when_there_is_no_speakerphone() {
        let f = present(pick_microphone(&cards("pi5-c920-mic"), None));
        assert_eq!(f.launch, r#"alsasrc device="plughw:CARD=C920,DEV=0""#);
    }

    #[test]
    fn hdmi_only_board_has_no_microphone() {
        let Probe::Absent { why } = pick_microphone(&cards("pi4-hdmi-only"), None) else {
            panic!()
        };
        assert!(why.contains("no sound card with a microphone"), "{why}");
    }

    #[test]
    fn pinned_microphone_or_absent_and_capture_without_playback() {
        let c = cards("x86-anker-c920");
        let pin: AudioPin = "usb:046d:082d".parse().unwrap();
        let f = present(pick_microphone(&c, Some(&pin)));
        assert_eq!(f.launch, r#"alsasrc device="plughw:CARD=C920,DEV=0""#);
        let pin: AudioPin = "Jabra".parse().unwrap();
        let Probe::Absent { why } = pick_microphone(&c, Some(&pin)) else {
            panic!()
        };
        assert!(why.contains("\"Jabra\" named in config not found"), "{why}");
        // A board whose only card captures (no playback anywhere).
        let mut c = cards("pi5-c920-mic");
        c.retain(|c| c.id == "C920");
        c[0].playback.clear();
        let f = present(pick_microphone(&c, None));
        assert_eq!(f.launch, r#"alsasrc device="plughw:CARD=C920,DEV=0""#);
        assert!(matches!(pick_microphone(&[], None), Probe::Absent { .. }));
    }

    #[test]
    fn alsa_microphone_reads_the_fixture_trees() {
        let m = AlsaMicrophone::new(fixture_root("asound/pi4-jabra410"), None);
        assert_eq!(m.kind(), DeviceKind::Microphone);
        assert!(m.probe().is_present());
        let none = AlsaMicrophone::new(fixture_root("boards/empty"), None);
        let Probe::Absent { why } = none.probe() else {
            panic!()
        };
        assert!(why.contains("proc/asound/cards"), "{why}");
        // Garbage in the tree: no panic, the well-formed card is used.
        let _ = AlsaMicrophone::new(fixture_root("asound/malformed"), None).probe();
    }

    fn sim_spec() -> ElementSpec {
        crate::profile::builtin("sim").unwrap().video.source
    }

    #[test]
    fn fake_camera_follows_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        let (marker, _) = sim_markers(dir.path());
        let cam = FakeCamera::new(&sim_spec(), Some(marker.clone()), limits(false));
        let Probe::Absent { why } = cam.probe() else {
            panic!()
        };
        assert!(why.contains("unplugged"), "{why}");
        std::fs::write(&marker, b"").unwrap();
        let f = present(cam.probe());
        assert_eq!(f.launch, "videotestsrc is-live=true pattern=ball");
        std::fs::remove_file(&marker).unwrap();
        assert!(!cam.probe().is_present());
        // Without a marker the fake is always there.
        let always = FakeCamera::new(&sim_spec(), None, limits(false));
        assert!(always.probe().is_present());
    }

    #[test]
    fn fake_camera_offers_recorded_formats_through_the_real_choice() {
        let dir = tempfile::tempdir().unwrap();
        let (marker, _) = sim_markers(dir.path());
        let cam = FakeCamera::new(&sim_spec(), Some(marker.clone()), limits(false));
        let rec = |name: &str| std::fs::read(fixture_root(&format!("cameras/{name}.txt"))).unwrap();
        std::fs::write(&marker, rec("logitech-c920")).unwrap();
        let f = present(cam.probe());
        assert_eq!(
            f.launch,
            "videotestsrc is-live=true pattern=ball ! video/x-raw,width=800,height=448,framerate=30/1"
        );
        std::fs::write(&marker, rec("h264-grey-only")).unwrap();
        let Probe::Unusable { error, .. } = cam.probe() else {
            panic!()
        };
        assert!(error.contains("no usable mode"), "{error}");
        // A garbled listing: what parses is used (its one good mode).
        std::fs::write(&marker, rec("malformed")).unwrap();
        let f = present(cam.probe());
        assert!(
            f.launch.ends_with("width=320,height=240,framerate=15/1"),
            "{}",
            f.launch
        );
        let binary = [0xff, 0xfe, 0, 1, 2];
        std::fs::write(&marker, binary).unwrap();
        let Probe::Unusable { error, .. } = cam.probe() else {
            panic!()
        };
        assert!(error.contains("it offers: nothing"), "{error}");
    }

    #[test]
    fn fake_microphone_follows_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        let (_, marker) = sim_markers(dir.path());
        let spec = crate::profile::builtin("sim").unwrap().audio.source;
        let mic = FakeMicrophone::new(&spec, Some(marker.clone()));
        assert_eq!(mic.kind(), DeviceKind::Microphone);
        assert!(!mic.probe().is_present());
        std::fs::write(&marker, b"").unwrap();
        let f = present(mic.probe());
        assert!(f.launch.starts_with("audiotestsrc"), "{}", f.launch);
        assert!(FakeMicrophone::new(&spec, None).probe().is_present());
    }

    #[test]
    fn fixed_source_is_always_present() {
        let s = FixedSource::new(DeviceKind::Camera, &ElementSpec::new("libcamerasrc"));
        assert_eq!(present(s.probe()).launch, "libcamerasrc");
    }
}
