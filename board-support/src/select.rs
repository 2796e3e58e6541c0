//! Choosing the elements a room will actually use, by probing.
//!
//! A profile lists candidates in order of preference (encoders; decoder then
//! `decoder_fallbacks`; sink then `sink_fallbacks`). [`select`] takes the
//! first candidate that (1) GStreamer has, (2) has its device nodes, and
//! (3) is not known to be missing on this board variant, and records for
//! every skipped candidate a human-readable reason, to be logged and shown on
//! the fleet page ("v4l2h264enc skipped: /dev/video11 (bcm2835 codec H.264
//! encoder) not found").
//!
//! Both probes are traits with a real implementation and a fake:
//! [`ElementRegistry`] ([`GstRegistry`] behind the `gstreamer` feature,
//! [`ListRegistry`] from a name list or a recorded `gst-inspect-1.0` output)
//! and [`DeviceProbe`] ([`RootedDevices`] over a filesystem root,
//! [`DeviceList`] from a list).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::detect::Detection;
use crate::profile::{BoardProfile, ElementSpec};

/// Does GStreamer have an element factory of this name?
pub trait ElementRegistry {
    fn has_element(&self, name: &str) -> bool;
}

/// Does this device node exist?
pub trait DeviceProbe {
    fn exists(&self, path: &Path) -> bool;
}

/// A fixed set of element names: the fake registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRegistry {
    names: BTreeSet<String>,
}

impl ListRegistry {
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// Reads the output of `gst-inspect-1.0` (no arguments), whose element
    /// lines look like `x264:  x264enc: x264 H.264 Encoder`. Other lines
    /// (typefinders, the `Total count` line, blank or garbled lines) are
    /// ignored.
    pub fn from_gst_inspect(text: &str) -> Self {
        let names = text.lines().filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_plugin, element, _desc) = (parts.next()?, parts.next()?, parts.next()?);
            let element = element.trim();
            let valid = !element.is_empty()
                && element
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            // Typefinders are listed as e.g. `typefindfunctions: video/x-ms-asf: asf, wm`.
            valid.then(|| element.to_string())
        });
        Self {
            names: names.collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl ElementRegistry for ListRegistry {
    fn has_element(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// A fixed set of existing device paths: the fake device probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceList {
    paths: BTreeSet<PathBuf>,
}

impl DeviceList {
    pub fn new<I, P>(paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        Self {
            paths: paths.into_iter().map(Into::into).collect(),
        }
    }
}

impl DeviceProbe for DeviceList {
    fn exists(&self, path: &Path) -> bool {
        self.paths.contains(path)
    }
}

/// Real device probe: `path` exists under `root` (`/` in production).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootedDevices {
    root: PathBuf,
}

impl RootedDevices {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The live system.
    pub fn system() -> Self {
        Self::new("/")
    }
}

impl DeviceProbe for RootedDevices {
    fn exists(&self, path: &Path) -> bool {
        let rel = path.strip_prefix("/").unwrap_or(path);
        // `exists` follows symlinks; Jetson's /dev/v4l2-nv* are symlinks.
        self.root.join(rel).exists()
    }
}

/// Real registry: asks GStreamer. [`GstRegistry::new`] initialises
/// GStreamer (idempotent).
#[cfg(feature = "gstreamer")]
#[derive(Debug, Clone, Copy)]
pub struct GstRegistry(());

#[cfg(feature = "gstreamer")]
impl GstRegistry {
    pub fn new() -> Result<Self, gst::glib::Error> {
        gst::init()?;
        Ok(Self(()))
    }
}

#[cfg(feature = "gstreamer")]
impl ElementRegistry for GstRegistry {
    fn has_element(&self, name: &str) -> bool {
        gst::ElementFactory::find(name).is_some()
    }
}

/// Which slot of the pipeline a choice is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Encoder,
    Decoder,
    Sink,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Encoder => "video encoder",
            Role::Decoder => "video decoder",
            Role::Sink => "display sink",
        })
    }
}

/// Why a candidate was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// GStreamer has no such element (plugin not installed).
    NoElement,
    /// None of the required device nodes exists.
    NoDevice {
        paths: Vec<PathBuf>,
        description: String,
    },
    /// Known not to work on this board variant.
    Unavailable { reason: String },
}

/// A candidate that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub element: String,
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            SkipReason::NoElement => write!(
                f,
                "{} skipped: GStreamer has no such element (plugin not installed)",
                self.element
            ),
            SkipReason::NoDevice { paths, description } => {
                let p: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "{} skipped: {} ({description}) not found",
                    self.element,
                    p.join(" or ")
                )
            }
            SkipReason::Unavailable { reason } => {
                write!(f, "{} skipped: {reason}", self.element)
            }
        }
    }
}

/// The element chosen for one role and the candidates skipped before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub role: Role,
    pub chosen: ElementSpec,
    /// Position of `chosen` among the candidates (0 = first preference).
    pub rank: usize,
    pub skipped: Vec<Skipped>,
}

impl Choice {
    /// True when the first preference was not usable.
    pub fn is_fallback(&self) -> bool {
        self.rank > 0
    }

    /// One line for logs.
    pub fn describe(&self) -> String {
        let mut s = format!("{}: {}", self.role, self.chosen.element);
        if self.is_fallback() {
            let why: Vec<String> = self.skipped.iter().map(ToString::to_string).collect();
            s.push_str(" (fallback; ");
            s.push_str(&why.join("; "));
            s.push(')');
        }
        s
    }
}

/// The elements chosen for a board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub encoder: Choice,
    pub decoder: Choice,
    pub sink: Choice,
}

impl Selection {
    /// One line per role, for logs.
    pub fn reasons(&self) -> Vec<String> {
        [&self.encoder, &self.decoder, &self.sink]
            .iter()
            .map(|c| c.describe())
            .collect()
    }

    /// True when the chosen encoder runs on the CPU.
    pub fn software_encoding(&self) -> bool {
        crate::encoder::is_software(&self.encoder.chosen.element)
    }
}

/// No candidate for a role was usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("board {board}: no usable {role}: {}", display_all(skipped))]
pub struct SelectError {
    pub board: String,
    pub role: Role,
    pub skipped: Vec<Skipped>,
}

fn display_all(s: &[Skipped]) -> String {
    let v: Vec<String> = s.iter().map(ToString::to_string).collect();
    v.join("; ")
}

/// Picks encoder, decoder and sink for `profile`, ignoring board-variant
/// rules (`unavailable`), which need the devicetree: use
/// [`select_for`] / [`Detection::select`] when it is known.
pub fn select(
    profile: &BoardProfile,
    registry: &dyn ElementRegistry,
    devices: &dyn DeviceProbe,
) -> Result<Selection, SelectError> {
    select_for(profile, &[], registry, devices)
}

/// [`select`] for a board whose devicetree `compatible` list is `compatible`
/// (applies the profile's `unavailable` rules).
pub fn select_for(
    profile: &BoardProfile,
    compatible: &[String],
    registry: &dyn ElementRegistry,
    devices: &dyn DeviceProbe,
) -> Result<Selection, SelectError> {
    let v = &profile.video;
    let pick = |role, candidates: Vec<&ElementSpec>| {
        choose(profile, compatible, registry, devices, role, candidates)
    };
    Ok(Selection {
        encoder: pick(Role::Encoder, v.encoders.iter().collect())?,
        decoder: pick(
            Role::Decoder,
            std::iter::once(&v.decoder)
                .chain(&v.decoder_fallbacks)
                .collect(),
        )?,
        sink: pick(
            Role::Sink,
            std::iter::once(&v.sink).chain(&v.sink_fallbacks).collect(),
        )?,
    })
}

impl Detection {
    /// Selects elements for the detected board, applying its variant rules.
    pub fn select(
        &self,
        registry: &dyn ElementRegistry,
        devices: &dyn DeviceProbe,
    ) -> Result<Selection, SelectError> {
        select_for(&self.profile, &self.identity.compatible, registry, devices)
    }
}

fn choose(
    profile: &BoardProfile,
    compatible: &[String],
    registry: &dyn ElementRegistry,
    devices: &dyn DeviceProbe,
    role: Role,
    candidates: Vec<&ElementSpec>,
) -> Result<Choice, SelectError> {
    let mut skipped = Vec::new();
    for (rank, spec) in candidates.into_iter().enumerate() {
        match usable(profile, compatible, registry, devices, &spec.element) {
            None => {
                return Ok(Choice {
                    role,
                    chosen: spec.clone(),
                    rank,
                    skipped,
                });
            }
            Some(reason) => skipped.push(Skipped {
                element: spec.element.clone(),
                reason,
            }),
        }
    }
    Err(SelectError {
        board: profile.name.clone(),
        role,
        skipped,
    })
}

/// `None` if `element` is usable, else why not. Board-variant rules first
/// (they are the most specific reason), then the registry, then devices.
fn usable(
    profile: &BoardProfile,
    compatible: &[String],
    registry: &dyn ElementRegistry,
    devices: &dyn DeviceProbe,
    element: &str,
) -> Option<SkipReason> {
    if let Some(u) = profile
        .unavailable
        .iter()
        .find(|u| u.element == element && u.compatible.iter().any(|c| compatible.contains(c)))
    {
        return Some(SkipReason::Unavailable {
            reason: u.reason.clone(),
        });
    }
    if !registry.has_element(element) {
        return Some(SkipReason::NoElement);
    }
    for req in profile.devices_for(element) {
        if !req.any_of.iter().any(|p| devices.exists(p)) {
            return Some(SkipReason::NoDevice {
                paths: req.any_of.clone(),
                description: req.description.clone(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{detect, fixture_root};
    use crate::profile::builtin;

    fn inspect(name: &str) -> ListRegistry {
        let path = fixture_root(&format!("gst-inspect/{name}.txt"));
        let text = std::fs::read_to_string(&path).unwrap();
        let r = ListRegistry::from_gst_inspect(&text);
        assert!(!r.is_empty(), "{}", path.display());
        r
    }

    #[test]
    fn gst_inspect_output_is_parsed_into_element_names() {
        let r = inspect("bookworm-x86-software");
        for e in [
            "x264enc",
            "openh264enc",
            "avdec_h264",
            "kmssink",
            "v4l2src",
            "webrtcbin",
        ] {
            assert!(r.has_element(e), "{e}");
        }
        assert!(!r.has_element("v4l2h264enc"));
        assert!(!r.has_element("video/x-ms-asf"));
        assert!(!r.has_element("Total count"));
        let garbled = ListRegistry::from_gst_inspect("\u{0}::\n:::\nfoo\nx: bad name: y\n");
        assert!(garbled.is_empty(), "{garbled:?}");
    }

    #[test]
    fn rpi4_with_codec_uses_the_hardware_encoder() {
        let p = builtin("rpi4").unwrap();
        let devs = DeviceList::new(["/dev/video10", "/dev/video11", "/dev/dri/card1"]);
        let s = select(&p, &inspect("rpi4-bookworm"), &devs).unwrap();
        assert_eq!(s.encoder.chosen.element, "v4l2h264enc");
        assert!(!s.encoder.is_fallback());
        assert_eq!(s.decoder.chosen.element, "v4l2h264dec");
        assert_eq!(s.sink.chosen.element, "kmssink");
        assert!(!s.software_encoding());
    }

    #[test]
    fn rpi4_without_codec_node_falls_back_and_says_why() {
        let p = builtin("rpi4").unwrap();
        let devs = DeviceList::new(["/dev/dri/card0"]);
        let s = select(&p, &inspect("rpi4-bookworm"), &devs).unwrap();
        assert_eq!(s.encoder.chosen.element, "x264enc");
        assert_eq!(s.encoder.rank, 1);
        assert_eq!(
            s.encoder.skipped[0].to_string(),
            "v4l2h264enc skipped: /dev/video11 (bcm2835 codec H.264 encoder) not found"
        );
        assert_eq!(s.decoder.chosen.element, "avdec_h264");
        assert!(s.reasons()[0].contains("fallback"), "{:?}", s.reasons());
    }

    #[test]
    fn rpi5_is_detected_and_encodes_in_software_by_design() {
        let d = detect(&fixture_root("boards/rpi5-model-b"), None).unwrap();
        assert_eq!(d.profile.name, "rpi5");
        // The Pi OS registry has v4l2h264enc, but the Pi 5 has no H.264
        // block: its profile never asks for it, so x264 is no fallback.
        let devs = DeviceList::new(["/dev/dri/card1"]);
        let s = d.select(&inspect("rpi4-bookworm"), &devs).unwrap();
        assert_eq!(s.encoder.chosen.element, "x264enc");
        assert!(!s.encoder.is_fallback(), "{:?}", s.reasons());
        assert_eq!(s.encoder.chosen.properties["speed-preset"], "veryfast");
        assert_eq!(s.decoder.chosen.element, "avdec_h264");
        assert_eq!(s.sink.chosen.element, "kmssink");
        assert!(s.software_encoding());
        // Without a DRM node (no HDMI driver loaded) the window sink is used.
        let s = d
            .select(&inspect("rpi4-bookworm"), &DeviceList::default())
            .unwrap();
        assert_eq!(s.sink.chosen.element, "autovideosink");
        assert!(s.reasons()[2].contains("not found"), "{:?}", s.reasons());
        // A GStreamer without x264 (not installed) takes openh264.
        let no_x264 = ListRegistry::new(["openh264enc", "avdec_h264", "kmssink"]);
        let s = d.select(&no_x264, &devs).unwrap();
        assert_eq!(s.encoder.chosen.element, "openh264enc");
        assert_eq!(s.encoder.skipped[0].reason, SkipReason::NoElement);
    }

    #[test]
    fn rpi4_profile_on_a_plain_debian_gstreamer_uses_software() {
        let p = builtin("rpi4").unwrap();
        let s = select(
            &p,
            &inspect("bookworm-x86-software"),
            &DeviceList::default(),
        )
        .unwrap();
        assert_eq!(s.encoder.chosen.element, "x264enc");
        assert_eq!(s.encoder.skipped[0].reason, SkipReason::NoElement);
        assert_eq!(s.sink.chosen.element, "autovideosink");
        assert!(s.software_encoding());
    }

    #[test]
    fn rk3588_with_mpp_uses_mpp() {
        let p = builtin("rk3588").unwrap();
        let devs = DeviceList::new(["/dev/mpp_service", "/dev/dri/card0"]);
        let s = select(&p, &inspect("rk3588-mpp"), &devs).unwrap();
        assert_eq!(s.encoder.chosen.element, "mpph264enc");
        assert_eq!(s.decoder.chosen.element, "mppvideodec");
    }

    #[test]
    fn jetson_orin_nx_uses_nvenc_but_orin_nano_falls_back_with_reason() {
        let reg = inspect("jetson-l4t");
        let devs = DeviceList::default();
        let nx = detect(&fixture_root("boards/jetson-orin-nx"), None).unwrap();
        let s = nx.select(&reg, &devs).unwrap();
        assert_eq!(s.encoder.chosen.element, "nvv4l2h264enc");
        assert_eq!(s.decoder.chosen.element, "nvv4l2decoder");

        let nano = detect(&fixture_root("boards/jetson-orin-nano"), None).unwrap();
        let s = nano.select(&reg, &devs).unwrap();
        assert_eq!(s.encoder.chosen.element, "x264enc");
        assert_eq!(
            s.encoder.skipped[0].to_string(),
            "nvv4l2h264enc skipped: the Jetson Orin Nano has no NVENC hardware encoder"
        );
        // Decoding is still in hardware on the Nano.
        assert_eq!(s.decoder.chosen.element, "nvv4l2decoder");
    }

    #[test]
    fn x86_without_render_node_skips_vaapi() {
        let p = builtin("x86").unwrap();
        let reg = ListRegistry::new([
            "vaapih264enc",
            "vaapih264dec",
            "x264enc",
            "avdec_h264",
            "glimagesink",
        ]);
        let s = select(&p, &reg, &DeviceList::default()).unwrap();
        assert_eq!(s.encoder.chosen.element, "x264enc");
        assert_eq!(s.encoder.skipped.len(), 2);
        assert!(matches!(
            s.encoder.skipped[0].reason,
            SkipReason::NoDevice { .. }
        ));
        assert_eq!(s.decoder.chosen.element, "avdec_h264");
        assert_eq!(s.sink.chosen.element, "glimagesink");
        let with_gpu = DeviceList::new(["/dev/dri/renderD128"]);
        let s = select(&p, &reg, &with_gpu).unwrap();
        assert_eq!(s.encoder.chosen.element, "vaapih264enc");
    }

    #[test]
    fn sim_selects_software_on_this_machines_gstreamer() {
        let p = builtin("sim").unwrap();
        let s = select(
            &p,
            &inspect("bookworm-x86-software"),
            &DeviceList::default(),
        )
        .unwrap();
        assert_eq!(s.encoder.chosen.element, "x264enc");
        assert_eq!(s.sink.chosen.element, "autovideosink");
    }

    #[test]
    fn nothing_usable_is_an_error_listing_every_reason() {
        let p = builtin("rpi4").unwrap();
        let err = select(&p, &ListRegistry::default(), &DeviceList::default()).unwrap_err();
        assert_eq!(err.role, Role::Encoder);
        assert_eq!(err.skipped.len(), 3);
        let msg = err.to_string();
        assert!(
            msg.starts_with("board rpi4: no usable video encoder: v4l2h264enc skipped"),
            "{msg}"
        );
        assert!(msg.contains("openh264enc skipped"), "{msg}");
    }

    #[test]
    fn rooted_devices_check_paths_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        std::fs::write(dir.path().join("dev/video11"), b"").unwrap();
        let devs = RootedDevices::new(dir.path());
        assert!(devs.exists(Path::new("/dev/video11")));
        assert!(!devs.exists(Path::new("/dev/video10")));
    }

    #[cfg(feature = "gstreamer")]
    #[test]
    fn real_registry_finds_core_elements() {
        let r = GstRegistry::new().unwrap();
        assert!(r.has_element("fakesink"));
        assert!(!r.has_element("no-such-element-here"));
    }

    /// Every element spec of every profile whose element this machine has
    /// must parse in a launch line: property names, values, caps, quoting.
    #[cfg(feature = "gstreamer")]
    #[test]
    fn launch_fragments_of_installed_elements_parse() {
        let r = GstRegistry::new().unwrap();
        let mut checked = 0;
        for p in crate::profile::builtin_all() {
            for e in &p.video.encoders {
                if !r.has_element(&e.element) {
                    continue;
                }
                let line = format!(
                    "videotestsrc num-buffers=1 ! videoconvert ! {} ! fakesink",
                    e.launch_fragment()
                );
                if let Err(err) = gst::parse::launch(&line) {
                    panic!("{}: {line}: {err}", p.name);
                }
                checked += 1;
            }
        }
        assert!(checked >= 6, "{checked}");
        // And the check would catch a bad value.
        let bad = ElementSpec::new("openh264enc").with_property("rate-control", "nonsense");
        let line = format!("videotestsrc ! {} ! fakesink", bad.launch_fragment());
        assert!(gst::parse::launch(&line).is_err());
    }
}
