//! Camera discovery (V4L2) and the choice of capture mode.
//!
//! - [`enumerate`] lists the capture devices under a root (`/dev/video*`,
//!   queried through the ioctl driver in `v4l2.rs`, plus name, USB id and
//!   USB speed from `/sys/class/video4linux/videoN`).
//! - [`pick_camera`] chooses among them, honouring a [`CameraPin`] from
//!   config (device path, USB id or name).
//! - [`pick_camera_mode`] is pure: given the formats a camera offers and the
//!   board's [`CameraLimits`], it picks MJPEG at 720p30/1080p30 when the board
//!   decodes JPEG in hardware, else raw YUYV at what the USB link carries.
//! - [`parse_v4l2_ctl_formats`] reads `v4l2-ctl --list-formats-ext` output,
//!   so format lists recorded in the field can be replayed in tests.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::profile::BoardProfile;
use crate::select::{DeviceProbe, ElementRegistry};

/// A frame rate as a fraction, frames per second = `num / den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameRate {
    pub num: u32,
    pub den: u32,
}

impl FrameRate {
    /// `num/den` fps, reduced; `None` when either is zero.
    pub fn new(num: u32, den: u32) -> Option<Self> {
        if num == 0 || den == 0 {
            return None;
        }
        let g = gcd(num, den);
        Some(Self {
            num: num / g,
            den: den / g,
        })
    }

    /// Frames per second, in thousandths (30 fps → 30000), for comparisons.
    pub fn millifps(self) -> u64 {
        u64::from(self.num) * 1000 / u64::from(self.den)
    }
}

impl fmt::Display for FrameRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One frame size and the rates the camera offers at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
    pub rates: Vec<FrameRate>,
}

/// One pixel format a camera offers (VIDIOC_ENUM_FMT) with its sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatInfo {
    /// Four-character code, e.g. `MJPG`, `YUYV`.
    pub fourcc: String,
    /// Driver's description, e.g. `Motion-JPEG`.
    pub description: String,
    pub sizes: Vec<FrameSize>,
}

/// Formats this crate knows how to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
    Nv12,
}

impl PixelFormat {
    fn from_fourcc(f: &str) -> Option<Self> {
        match f {
            "MJPG" | "JPEG" => Some(Self::Mjpeg),
            "YUYV" => Some(Self::Yuyv),
            "NV12" => Some(Self::Nv12),
            _ => None,
        }
    }

    /// Bytes per pixel ×2 of raw formats (YUYV 4, NV12 3); `None` for JPEG.
    fn raw_bytes_x2(self) -> Option<u64> {
        match self {
            Self::Mjpeg => None,
            Self::Yuyv => Some(4),
            Self::Nv12 => Some(3),
        }
    }
}

/// USB vendor and product id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsbId {
    pub vendor: u16,
    pub product: u16,
}

impl fmt::Display for UsbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor, self.product)
    }
}

impl FromStr for UsbId {
    type Err = String;
    /// Parses `046d:082d` (hexadecimal, as `lsusb` prints it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a USB id like 046d:082d");
        let (v, p) = s.trim().split_once(':').ok_or_else(bad)?;
        Ok(Self {
            vendor: u16::from_str_radix(v.trim(), 16).map_err(|_| bad())?,
            product: u16::from_str_radix(p.trim(), 16).map_err(|_| bad())?,
        })
    }
}

/// What the board can take from a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraLimits {
    pub max_width: u32,
    pub max_height: u32,
    pub max_fps: u32,
    /// The board decodes JPEG in hardware (so MJPEG costs no CPU).
    pub hw_jpeg_decode: bool,
    /// Bytes per second of raw video the camera's link carries.
    pub raw_budget_bytes_per_s: u64,
}

/// What a USB 2.0 high-speed isochronous endpoint carries at most
/// (3 × 1024 bytes per 125 µs microframe).
pub const USB2_RAW_BUDGET: u64 = 3 * 1024 * 8000;
/// A conservative figure for USB 3 (SuperSpeed) cameras.
pub const USB3_RAW_BUDGET: u64 = 200_000_000;

impl Default for CameraLimits {
    fn default() -> Self {
        Self {
            max_width: 1280,
            max_height: 720,
            max_fps: 30,
            hw_jpeg_decode: false,
            raw_budget_bytes_per_s: USB2_RAW_BUDGET,
        }
    }
}

impl CameraLimits {
    /// Limits from a profile's `[camera]` table; hardware JPEG decode counts
    /// only if the profile names a decoder that GStreamer has and whose
    /// device nodes exist. Assumes a USB 2.0 camera (see [`Self::for_camera`]).
    pub fn for_profile(
        profile: &BoardProfile,
        registry: &dyn ElementRegistry,
        devices: &dyn DeviceProbe,
    ) -> Self {
        let c = &profile.camera;
        let hw_jpeg_decode = c.jpeg_decoder.as_ref().is_some_and(|d| {
            registry.has_element(&d.element)
                && profile
                    .devices_for(&d.element)
                    .all(|req| req.any_of.iter().any(|p| devices.exists(p)))
        });
        Self {
            max_width: c.max_width,
            max_height: c.max_height,
            max_fps: c.max_framerate,
            hw_jpeg_decode,
            raw_budget_bytes_per_s: USB2_RAW_BUDGET,
        }
    }

    /// The limits adjusted to a camera's link: USB 3 cameras carry more raw
    /// video; cameras not on USB (CSI bridges) are not bandwidth-bound here.
    #[must_use]
    pub fn for_camera(mut self, cam: &CameraInfo) -> Self {
        self.raw_budget_bytes_per_s = match (cam.usb_id, cam.usb_speed_mbps) {
            (Some(_), Some(s)) if s >= 5000 => USB3_RAW_BUDGET,
            (Some(_), _) => USB2_RAW_BUDGET,
            (None, _) => u64::MAX,
        };
        self
    }
}

/// The capture mode chosen for a camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraMode {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub rate: FrameRate,
    /// Why this mode, for logs.
    pub reason: String,
}

impl CameraMode {
    /// Caps for a capsfilter after `v4l2src`.
    pub fn caps(&self) -> String {
        let (media, fmt) = match self.format {
            PixelFormat::Mjpeg => ("image/jpeg", None),
            PixelFormat::Yuyv => ("video/x-raw", Some("YUY2")),
            PixelFormat::Nv12 => ("video/x-raw", Some("NV12")),
        };
        let fmt = fmt.map(|f| format!(",format={f}")).unwrap_or_default();
        format!(
            "{media}{fmt},width={},height={},framerate={}",
            self.width, self.height, self.rate
        )
    }
}

/// Errors of camera discovery and choice.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("cannot list camera devices in {}", path.display())]
    DevDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "camera offers no usable mode (needs MJPEG, YUYV or NV12 within {max_width}x{max_height}); it offers: {offered}"
    )]
    NoUsableMode {
        max_width: u32,
        max_height: u32,
        offered: String,
    },
    #[error("no camera found")]
    NoCamera,
    #[error("camera {pin} named in config not found; cameras present: {present}")]
    PinnedNotFound { pin: String, present: String },
}

/// The tier a candidate mode falls in; lower is better.
fn tier(fmt: PixelFormat, millifps: u64, limits: &CameraLimits) -> u8 {
    match (fmt.raw_bytes_x2(), millifps) {
        (None, f) if limits.hw_jpeg_decode && f >= 25_000 => 0,
        (Some(_), f) if f >= 25_000 => 1,
        (Some(_), f) if f >= 15_000 => 2,
        (None, f) if f >= 15_000 => 3,
        _ => 4,
    }
}

const TIER_REASON: [&str; 5] = [
    "MJPEG, decoded in hardware",
    "raw, full frame rate within the USB bandwidth",
    "raw, reduced frame rate within the USB bandwidth",
    "MJPEG decoded in software (no raw mode fits the USB bandwidth)",
    "low frame rate: the only modes within limits",
];

/// Picks the capture mode from what the camera offers.
///
/// Candidates are modes within the board's size limit, in a format this
/// crate handles, and (for raw formats) within the link's bandwidth. They
/// rank by tier: MJPEG at ≥ 25 fps if the board decodes JPEG in hardware;
/// raw at ≥ 25 fps; raw at ≥ 15 fps; MJPEG in software at ≥ 15 fps; anything
/// else. Within a tier the larger frame wins, then the rate closest to (not
/// above) the board's maximum, then the camera's own order.
pub fn pick_camera_mode(
    formats: &[FormatInfo],
    limits: &CameraLimits,
) -> Result<CameraMode, CameraError> {
    let max_mfps = u64::from(limits.max_fps) * 1000;
    let mut best: Option<((u8, u64, u64, bool), CameraMode)> = None;
    for f in formats {
        let Some(fmt) = PixelFormat::from_fourcc(&f.fourcc) else {
            continue;
        };
        for s in &f.sizes {
            if s.width == 0
                || s.height == 0
                || s.width > limits.max_width
                || s.height > limits.max_height
            {
                continue;
            }
            let area = u64::from(s.width) * u64::from(s.height);
            for &rate in &s.rates {
                let mfps = rate.millifps();
                if let Some(bx2) = fmt.raw_bytes_x2() {
                    let bytes_per_s = area * bx2 * mfps / 2000;
                    if bytes_per_s > limits.raw_budget_bytes_per_s {
                        continue;
                    }
                }
                let t = tier(fmt, mfps.min(max_mfps), limits);
                // Sort key, smaller is better: tier, bigger area, rate
                // closest to the maximum, not above it.
                let key = (t, u64::MAX - area, max_mfps.abs_diff(mfps), mfps > max_mfps);
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    let mode = CameraMode {
                        format: fmt,
                        width: s.width,
                        height: s.height,
                        rate,
                        reason: TIER_REASON[usize::from(t)].to_string(),
                    };
                    best = Some((key, mode));
                }
            }
        }
    }
    best.map(|(_, m)| m)
        .ok_or_else(|| CameraError::NoUsableMode {
            max_width: limits.max_width,
            max_height: limits.max_height,
            offered: summarise(formats),
        })
}

fn summarise(formats: &[FormatInfo]) -> String {
    if formats.is_empty() {
        return "nothing".to_string();
    }
    let v: Vec<String> = formats
        .iter()
        .map(|f| {
            let largest = f
                .sizes
                .iter()
                .max_by_key(|s| u64::from(s.width) * u64::from(s.height))
                .map(|s| format!(" up to {}x{}", s.width, s.height))
                .unwrap_or_default();
            format!("{}{largest}", f.fourcc)
        })
        .collect();
    v.join(", ")
}

/// Parses `v4l2-ctl --list-formats-ext` output. Lines it does not know are
/// skipped; stepwise sizes and intervals are skipped (discrete lists are
/// what UVC cameras report).
pub fn parse_v4l2_ctl_formats(text: &str) -> Vec<FormatInfo> {
    let mut out: Vec<FormatInfo> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            // [0]: 'YUYV' (YUYV 4:2:2)
            let Some(q1) = line.find('\'') else { continue };
            let rest = &line[q1 + 1..];
            let Some(q2) = rest.find('\'') else { continue };
            let fourcc = rest[..q2].trim().to_string();
            let description = rest[q2 + 1..]
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .to_string();
            out.push(FormatInfo {
                fourcc,
                description,
                sizes: Vec::new(),
            });
        } else if let Some(size) = line.strip_prefix("Size: Discrete ") {
            let Some(f) = out.last_mut() else { continue };
            let Some((w, h)) = size.trim().split_once('x') else {
                continue;
            };
            if let (Ok(width), Ok(height)) = (w.trim().parse(), h.trim().parse()) {
                f.sizes.push(FrameSize {
                    width,
                    height,
                    rates: Vec::new(),
                });
            }
        } else if let Some(iv) = line.strip_prefix("Interval: Discrete ") {
            // 0.033s (30.000 fps)
            let Some(s) = out.last_mut().and_then(|f| f.sizes.last_mut()) else {
                continue;
            };
            let fps = iv
                .split_once('(')
                .and_then(|(_, r)| r.split_once(" fps"))
                .map(|(n, _)| n.trim());
            if let Some(rate) = fps.and_then(parse_fps) {
                s.rates.push(rate);
            }
        }
    }
    out
}

/// `30.000` → 30/1, `7.500` → 15/2.
fn parse_fps(s: &str) -> Option<FrameRate> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let int: u32 = int.parse().ok()?;
    let frac = format!("{frac:0<3}");
    let milli: u32 = frac.get(..3)?.parse().ok()?;
    FrameRate::new(int.checked_mul(1000)?.checked_add(milli)?, 1000)
}

/// A camera present on the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// Device node, e.g. `/dev/video0`.
    pub path: PathBuf,
    /// Name from sysfs (or the V4L2 card name).
    pub name: String,
    pub driver: String,
    pub bus_info: String,
    pub usb_id: Option<UsbId>,
    /// USB link speed in Mbit/s (480 for USB 2.0 high speed).
    pub usb_speed_mbps: Option<u32>,
    pub formats: Vec<FormatInfo>,
}

/// A camera named in config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraPin {
    /// A device node, e.g. `/dev/video2` or a `/dev/v4l/by-id/...` link.
    Path(PathBuf),
    /// `usb:046d:082d` or `046d:082d`.
    UsbId(UsbId),
    /// Case-insensitive part of the name, e.g. `C920`.
    Name(String),
}

impl FromStr for CameraPin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty camera name".to_string());
        }
        if s.starts_with('/') {
            return Ok(Self::Path(PathBuf::from(s)));
        }
        if let Some(id) = s.strip_prefix("usb:") {
            return id.parse().map(Self::UsbId);
        }
        if let Ok(id) = s.parse() {
            return Ok(Self::UsbId(id));
        }
        Ok(Self::Name(s.strip_prefix("name:").unwrap_or(s).to_string()))
    }
}

impl fmt::Display for CameraPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::UsbId(id) => write!(f, "usb:{id}"),
            Self::Name(n) => write!(f, "{n:?}"),
        }
    }
}

impl CameraPin {
    fn matches(&self, cam: &CameraInfo) -> bool {
        match self {
            Self::Path(p) => {
                cam.path == *p || std::fs::canonicalize(p).is_ok_and(|c| c == cam.path)
            }
            Self::UsbId(id) => cam.usb_id == Some(*id),
            Self::Name(n) => cam.name.to_lowercase().contains(&n.to_lowercase()),
        }
    }
}

/// Chooses a camera: the pinned one if config names one, else the first USB
/// camera with a format this crate handles, else the first camera.
pub fn pick_camera<'a>(
    cameras: &'a [CameraInfo],
    pin: Option<&CameraPin>,
) -> Result<&'a CameraInfo, CameraError> {
    if let Some(pin) = pin {
        return cameras.iter().find(|c| pin.matches(c)).ok_or_else(|| {
            CameraError::PinnedNotFound {
                pin: pin.to_string(),
                present: describe_all(cameras),
            }
        });
    }
    let usable = |c: &&CameraInfo| {
        c.formats
            .iter()
            .any(|f| PixelFormat::from_fourcc(&f.fourcc).is_some())
    };
    cameras
        .iter()
        .filter(usable)
        .find(|c| c.usb_id.is_some())
        .or_else(|| cameras.iter().find(usable))
        .or_else(|| cameras.first())
        .ok_or(CameraError::NoCamera)
}

fn describe_all(cameras: &[CameraInfo]) -> String {
    if cameras.is_empty() {
        return "none".to_string();
    }
    let v: Vec<String> = cameras
        .iter()
        .map(|c| {
            let id = c.usb_id.map(|i| format!(" usb:{i}")).unwrap_or_default();
            format!("{} {:?}{id}", c.path.display(), c.name)
        })
        .collect();
    v.join(", ")
}

/// The result of [`enumerate`]: capture devices, and nodes passed over.
#[derive(Debug, Clone, Default)]
pub struct Enumeration {
    pub cameras: Vec<CameraInfo>,
    /// `(node, why)` for nodes that are not cameras (codecs, metadata
    /// nodes) or could not be queried.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Lists V4L2 capture devices under `root` (`/` on a real system): every
/// `root/dev/videoN`, queried by ioctl, with sysfs details from
/// `root/sys/class/video4linux/videoN`.
///
/// A missing `dev` directory is [`CameraError::DevDir`]; a node that cannot
/// be opened or queried is listed in `skipped` with the reason.
pub fn enumerate(root: &Path) -> Result<Enumeration, CameraError> {
    let dev = root.join("dev");
    let entries = std::fs::read_dir(&dev).map_err(|source| CameraError::DevDir {
        path: dev.clone(),
        source,
    })?;
    let mut nodes: Vec<(u32, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let n = name.strip_prefix("video")?.parse().ok()?;
            Some((n, name))
        })
        .collect();
    nodes.sort();
    let mut out = Enumeration::default();
    for (_, name) in nodes {
        let path = dev.join(&name);
        let raw = match crate::v4l2::query(&path) {
            Ok(raw) => raw,
            Err(e) => {
                out.skipped.push((path, format!("cannot query: {e}")));
                continue;
            }
        };
        if raw.caps & crate::v4l2::CAP_VIDEO_CAPTURE == 0
            || raw.caps & (crate::v4l2::CAP_VIDEO_M2M | crate::v4l2::CAP_VIDEO_M2M_MPLANE) != 0
        {
            out.skipped.push((
                path,
                format!("{} ({}) is not a capture device", raw.card, raw.driver),
            ));
            continue;
        }
        let sys = SysfsVideo::read(root, &name);
        out.cameras.push(CameraInfo {
            path,
            name: sys.name.unwrap_or(raw.card),
            driver: raw.driver,
            bus_info: raw.bus_info,
            usb_id: sys.usb_id,
            usb_speed_mbps: sys.usb_speed_mbps,
            formats: raw.formats,
        });
    }
    Ok(out)
}

/// What sysfs says about `/dev/videoN`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysfsVideo {
    pub name: Option<String>,
    pub usb_id: Option<UsbId>,
    pub usb_speed_mbps: Option<u32>,
}

impl SysfsVideo {
    /// Reads `root/sys/class/video4linux/<node>/name` and, through the
    /// `device` link (the USB interface), the USB device's `idVendor`,
    /// `idProduct` and `speed`. Missing or malformed files give `None`.
    pub fn read(root: &Path, node: &str) -> Self {
        let base = root.join("sys/class/video4linux").join(node);
        let read = |p: PathBuf| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let usb = base.join("device/..");
        let hex = |f: &str| read(usb.join(f)).and_then(|s| u16::from_str_radix(&s, 16).ok());
        let usb_id = match (hex("idVendor"), hex("idProduct")) {
            (Some(vendor), Some(product)) => Some(UsbId { vendor, product }),
            _ => None,
        };
        Self {
            name: read(base.join("name")),
            usb_id,
            usb_speed_mbps: read(usb.join("speed"))
                .and_then(|s| s.parse::<f32>().ok())
                .map(|f| f as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::fixture_root;
    use crate::select::{DeviceList, ListRegistry};

    fn formats(name: &str) -> Vec<FormatInfo> {
        let bytes = std::fs::read(fixture_root(&format!("cameras/{name}.txt"))).unwrap();
        parse_v4l2_ctl_formats(&String::from_utf8_lossy(&bytes))
    }

    fn limits(hw_jpeg: bool) -> CameraLimits {
        CameraLimits {
            hw_jpeg_decode: hw_jpeg,
            ..CameraLimits::default()
        }
    }

    #[test]
    fn v4l2_ctl_output_is_parsed() {
        let f = formats("logitech-c920");
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].fourcc, "YUYV");
        assert_eq!(f[0].description, "YUYV 4:2:2");
        assert_eq!(f[1].fourcc, "MJPG");
        let s640 = &f[0].sizes[0];
        assert_eq!((s640.width, s640.height), (640, 480));
        assert!(s640.rates.contains(&FrameRate { num: 30, den: 1 }));
        assert!(s640.rates.contains(&FrameRate { num: 15, den: 2 }));
    }

    #[test]
    fn c920_on_a_board_with_jpeg_hardware_gets_mjpeg_720p30() {
        let m = pick_camera_mode(&formats("logitech-c920"), &limits(true)).unwrap();
        assert_eq!(
            (m.format, m.width, m.height),
            (PixelFormat::Mjpeg, 1280, 720)
        );
        assert_eq!(m.rate, FrameRate { num: 30, den: 1 });
        assert_eq!(m.caps(), "image/jpeg,width=1280,height=720,framerate=30/1");
        let big = CameraLimits {
            max_width: 1920,
            max_height: 1080,
            ..limits(true)
        };
        let m = pick_camera_mode(&formats("logitech-c920"), &big).unwrap();
        assert_eq!((m.width, m.height), (1920, 1080));
    }

    #[test]
    fn c920_without_jpeg_hardware_gets_yuyv_within_usb2() {
        // 800x448 YUYV at 30 fps is 21.5 MB/s: the largest 30 fps raw mode
        // under the 24.6 MB/s of a USB 2.0 isochronous endpoint.
        let m = pick_camera_mode(&formats("logitech-c920"), &limits(false)).unwrap();
        assert_eq!((m.format, m.width, m.height), (PixelFormat::Yuyv, 800, 448));
        assert_eq!(m.rate.millifps(), 30_000);
        assert_eq!(
            m.caps(),
            "video/x-raw,format=YUY2,width=800,height=448,framerate=30/1"
        );
        assert!(m.reason.contains("raw"), "{}", m.reason);
    }

    #[test]
    fn cheap_yuyv_only_webcam_gets_the_best_raw_mode() {
        let f = formats("cheap-yuyv-only");
        let m = pick_camera_mode(&f, &limits(true)).unwrap();
        assert_eq!((m.format, m.width, m.height), (PixelFormat::Yuyv, 640, 480));
        assert_eq!(m.rate.millifps(), 30_000);
        // On a USB 3 link (or CSI) 720p30 raw fits.
        let fat = CameraLimits {
            raw_budget_bytes_per_s: USB3_RAW_BUDGET,
            ..limits(false)
        };
        let m = pick_camera_mode(&f, &fat).unwrap();
        assert_eq!((m.width, m.height, m.rate.millifps()), (1280, 720, 30_000));
    }

    #[test]
    fn camera_without_usable_format_is_a_clear_error() {
        let err = pick_camera_mode(&formats("h264-grey-only"), &limits(true)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CameraError::NoUsableMode { .. }));
        assert!(msg.contains("H264 up to 1920x1080"), "{msg}");
        assert!(msg.contains("GREY"), "{msg}");
        let none = pick_camera_mode(&[], &limits(true))
            .unwrap_err()
            .to_string();
        assert!(none.contains("offers: nothing"), "{none}");
    }

    #[test]
    fn malformed_v4l2_ctl_output_does_not_panic() {
        let f = formats("malformed");
        // Only the well-formed parts survive.
        let m = pick_camera_mode(&f, &limits(false)).unwrap();
        assert_eq!((m.width, m.height), (320, 240));
        for junk in [
            "",
            "[",
            "['",
            "Size: Discrete x",
            "\tInterval: Discrete (",
            "[0]: 'MJPG'\nSize: Discrete 99999999999x1",
        ] {
            let _ = parse_v4l2_ctl_formats(junk);
        }
        assert_eq!(parse_fps("30"), FrameRate::new(30, 1));
        assert_eq!(parse_fps("29.97"), FrameRate::new(29970, 1000));
        assert_eq!(parse_fps("x"), None);
        assert_eq!(parse_fps("0.000"), None);
        assert_eq!(parse_fps("4294967295.000"), None);
    }

    #[test]
    fn only_low_rates_still_give_a_mode() {
        let f = vec![FormatInfo {
            fourcc: "YUYV".into(),
            description: String::new(),
            sizes: vec![FrameSize {
                width: 1280,
                height: 720,
                rates: vec![
                    FrameRate::new(10, 1).unwrap(),
                    FrameRate::new(5, 1).unwrap(),
                ],
            }],
        }];
        let m = pick_camera_mode(&f, &limits(false)).unwrap();
        assert_eq!(m.rate.millifps(), 10_000);
        assert!(m.reason.contains("low frame rate"));
    }

    #[test]
    fn limits_come_from_the_profile_and_probes() {
        let p = crate::profile::builtin("rpi4").unwrap();
        let reg = ListRegistry::new(["v4l2jpegdec"]);
        let l = CameraLimits::for_profile(&p, &reg, &DeviceList::default());
        assert!(l.hw_jpeg_decode);
        assert_eq!((l.max_width, l.max_height, l.max_fps), (1280, 720, 30));
        let none = CameraLimits::for_profile(&p, &ListRegistry::default(), &DeviceList::default());
        assert!(!none.hw_jpeg_decode);
        let rk = crate::profile::builtin("rk3588").unwrap();
        let reg = ListRegistry::new(["mppjpegdec"]);
        assert!(!CameraLimits::for_profile(&rk, &reg, &DeviceList::default()).hw_jpeg_decode);
        let devs = DeviceList::new(["/dev/mpp_service"]);
        assert!(CameraLimits::for_profile(&rk, &reg, &devs).hw_jpeg_decode);
    }

    fn cam(path: &str, name: &str, usb: Option<&str>, fourcc: &str) -> CameraInfo {
        CameraInfo {
            path: path.into(),
            name: name.into(),
            driver: "uvcvideo".into(),
            bus_info: String::new(),
            usb_id: usb.map(|u| u.parse().unwrap()),
            usb_speed_mbps: Some(480),
            formats: vec![FormatInfo {
                fourcc: fourcc.into(),
                description: String::new(),
                sizes: vec![],
            }],
        }
    }

    #[test]
    fn cameras_are_pinned_by_path_usb_id_or_name() {
        let cams = vec![
            cam("/dev/video0", "unicam", None, "YUYV"),
            cam(
                "/dev/video2",
                "HD Pro Webcam C920",
                Some("046d:082d"),
                "MJPG",
            ),
            cam("/dev/video4", "USB2.0 PC CAMERA", Some("1908:2311"), "YUYV"),
        ];
        assert_eq!(
            pick_camera(&cams, None).unwrap().path,
            Path::new("/dev/video2")
        );
        let pin = |s: &str| s.parse::<CameraPin>().unwrap();
        assert_eq!(
            pick_camera(&cams, Some(&pin("usb:1908:2311")))
                .unwrap()
                .path,
            Path::new("/dev/video4")
        );
        assert_eq!(
            pick_camera(&cams, Some(&pin("1908:2311"))).unwrap().path,
            Path::new("/dev/video4")
        );
        assert_eq!(
            pick_camera(&cams, Some(&pin("c920"))).unwrap().path,
            Path::new("/dev/video2")
        );
        assert_eq!(
            pick_camera(&cams, Some(&pin("/dev/video0"))).unwrap().path,
            Path::new("/dev/video0")
        );
        let err = pick_camera(&cams, Some(&pin("name:Jabra")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"Jabra\" named in config not found"), "{err}");
        assert!(
            err.contains("/dev/video2 \"HD Pro Webcam C920\" usb:046d:082d"),
            "{err}"
        );
        assert!(matches!(pick_camera(&[], None), Err(CameraError::NoCamera)));
        assert!("".parse::<CameraPin>().is_err());
        assert!("usb:zz:1".parse::<CameraPin>().is_err());
    }

    #[test]
    fn sysfs_gives_name_usb_id_and_speed() {
        let root = fixture_root("sysfs/pi4-c920");
        let s = SysfsVideo::read(&root, "video0");
        assert_eq!(s.name.as_deref(), Some("HD Pro Webcam C920"));
        assert_eq!(
            s.usb_id,
            Some(UsbId {
                vendor: 0x046d,
                product: 0x082d
            })
        );
        assert_eq!(s.usb_speed_mbps, Some(480));
        // The codec node has a name but no USB parent.
        let codec = SysfsVideo::read(&root, "video11");
        assert_eq!(codec.name.as_deref(), Some("bcm2835-codec-encode"));
        assert_eq!(codec.usb_id, None);
        assert_eq!(SysfsVideo::read(&root, "video99"), SysfsVideo::default());
    }

    #[test]
    fn usb_link_speed_sets_the_raw_budget() {
        let mut c = cam("/dev/video0", "x", Some("046d:082d"), "YUYV");
        assert_eq!(
            CameraLimits::default()
                .for_camera(&c)
                .raw_budget_bytes_per_s,
            USB2_RAW_BUDGET
        );
        c.usb_speed_mbps = Some(5000);
        assert_eq!(
            CameraLimits::default()
                .for_camera(&c)
                .raw_budget_bytes_per_s,
            USB3_RAW_BUDGET
        );
        c.usb_id = None;
        assert_eq!(
            CameraLimits::default()
                .for_camera(&c)
                .raw_budget_bytes_per_s,
            u64::MAX
        );
    }

    #[test]
    fn enumerate_handles_a_missing_dev_gracefully() {
        let err = enumerate(Path::new("/nonexistent-root")).unwrap_err();
        assert!(
            matches!(&err, CameraError::DevDir { path, .. } if path == Path::new("/nonexistent-root/dev"))
        );
        // A tree whose "video" nodes are plain files: skipped with a reason.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("dev")).unwrap();
        std::fs::write(dir.path().join("dev/video0"), b"").unwrap();
        std::fs::write(dir.path().join("dev/videoX"), b"").unwrap();
        let e = enumerate(dir.path()).unwrap();
        assert!(e.cameras.is_empty());
        assert_eq!(e.skipped.len(), 1);
        assert!(e.skipped[0].1.contains("cannot query"), "{:?}", e.skipped);
        // The real /dev of this machine (no camera here): no panic, no error.
        let real = enumerate(Path::new("/")).unwrap();
        for c in &real.cameras {
            assert!(!c.path.as_os_str().is_empty());
        }
    }
}
