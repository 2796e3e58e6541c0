//! Board profiles: what the TOML files in `board-support/boards/` say, and
//! the checks that a profile is coherent before anything uses it.
//!
//! Parsing is in two stages: serde reads the file (unknown keys are errors),
//! then [`BoardProfile::validate`] checks what serde cannot (non-empty
//! encoder chain, sizes and rates above zero, device requirements naming
//! elements that the profile uses, encoder bitrate properties agreeing with
//! `video.bitrate_kbps`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Deserialize;

/// An element and the properties to set on it, as GStreamer would parse them
/// from a `gst-launch-1.0` line (values are strings, converted by GStreamer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementSpec {
    /// GStreamer element factory name, e.g. `v4l2h264enc`.
    pub element: String,
    /// Property name → value as text (`gst_util_set_object_arg` syntax).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Caps to force right after the element (a capsfilter), e.g.
    /// `video/x-h264,level=(string)3.1`. Hardware encoders negotiate their
    /// H.264 profile and level through these caps.
    #[serde(default)]
    pub caps: Option<String>,
}

impl ElementSpec {
    /// A spec for `element` with no properties and no caps.
    pub fn new(element: impl Into<String>) -> Self {
        Self {
            element: element.into(),
            ..Self::default()
        }
    }

    /// Returns the spec with `key` set to `value`.
    #[must_use]
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Returns the spec with a caps filter after the element.
    #[must_use]
    pub fn with_caps(mut self, caps: impl Into<String>) -> Self {
        self.caps = Some(caps.into());
        self
    }

    /// The spec as a `gst-launch-1.0` fragment, e.g. `x264enc tune=zerolatency`.
    ///
    /// Values that the launch parser would split (spaces, commas, `=`,
    /// quotes, `!`) are double-quoted. With `caps` set, the fragment is two
    /// elements: `v4l2h264enc ... ! video/x-h264,level=(string)3.1`.
    pub fn launch_fragment(&self) -> String {
        let mut s = self.element.clone();
        for (k, v) in &self.properties {
            s.push(' ');
            s.push_str(k);
            s.push('=');
            s.push_str(&quote_launch_value(v));
        }
        if let Some(caps) = &self.caps {
            s.push_str(" ! ");
            s.push_str(caps);
        }
        s
    }
}

/// Quotes a property value for a launch line when the parser needs it.
fn quote_launch_value(v: &str) -> String {
    let needs_quotes = v.is_empty()
        || v.chars()
            .any(|c| c.is_whitespace() || matches!(c, ',' | '=' | '"' | '!' | '\\' | '(' | ')'));
    if !needs_quotes {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Video capture and encode settings of a board.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoProfile {
    pub source: ElementSpec,
    pub width: u32,
    pub height: u32,
    pub framerate: u32,
    /// Target bitrate of the encoder, kbit/s.
    pub bitrate_kbps: u32,
    /// Encoders in order of preference; the first one present is used.
    pub encoders: Vec<ElementSpec>,
    pub decoder: ElementSpec,
    pub sink: ElementSpec,
    /// Decoders to try, in order, when `decoder` is not usable.
    #[serde(default)]
    pub decoder_fallbacks: Vec<ElementSpec>,
    /// Display sinks to try, in order, when `sink` is not usable.
    #[serde(default)]
    pub sink_fallbacks: Vec<ElementSpec>,
}

/// Audio capture and playback settings of a board.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioProfile {
    pub source: ElementSpec,
    pub sink: ElementSpec,
    /// The board's own microphone and speaker cancel echo in hardware
    /// (a built-in speakerphone): `media.echo_cancel = "auto"` then leaves
    /// software echo cancellation off.
    #[serde(default)]
    pub hardware_echo_cancel: bool,
}

/// A device node that an element needs to work, e.g. the bcm2835 codec
/// `/dev/video11` for `v4l2h264enc` on a Raspberry Pi 4.
///
/// The requirement is met when any one of `any_of` exists.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRequirement {
    /// Element factory name this requirement applies to.
    pub element: String,
    /// Device paths; at least one must exist.
    pub any_of: Vec<PathBuf>,
    /// What the device is, for log lines ("bcm2835 codec (H.264 encode)").
    pub description: String,
}

/// An element known not to work on some variants of a board family, matched
/// by devicetree `compatible` string, e.g. `nvv4l2h264enc` on the Jetson Orin
/// Nano (which has no NVENC block although the plugin is installed).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unavailable {
    pub element: String,
    /// Any of these `compatible` strings marks the element unusable.
    pub compatible: Vec<String>,
    /// Why, for log lines.
    pub reason: String,
}

/// A DMI pattern (x86 boards). Absent fields match anything, so an empty
/// pattern matches every machine that has DMI at all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DmiPattern {
    /// Case-insensitive substring of `/sys/class/dmi/id/sys_vendor`.
    #[serde(default)]
    pub sys_vendor: Option<String>,
    /// Case-insensitive substring of `/sys/class/dmi/id/product_name`.
    #[serde(default)]
    pub product_name: Option<String>,
}

/// What the board can do with a USB camera's output; input to
/// [`crate::camera::pick_camera_mode`] via [`CameraLimits`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraProfile {
    /// Largest capture width the board should handle.
    #[serde(default = "default_cam_width")]
    pub max_width: u32,
    /// Largest capture height the board should handle.
    #[serde(default = "default_cam_height")]
    pub max_height: u32,
    /// Highest capture frame rate wanted.
    #[serde(default = "default_cam_fps")]
    pub max_framerate: u32,
    /// Hardware JPEG decoder for MJPEG cameras, if the board has one.
    #[serde(default)]
    pub jpeg_decoder: Option<ElementSpec>,
}

fn default_cam_width() -> u32 {
    1280
}
fn default_cam_height() -> u32 {
    720
}
fn default_cam_fps() -> u32 {
    30
}

impl Default for CameraProfile {
    fn default() -> Self {
        Self {
            max_width: default_cam_width(),
            max_height: default_cam_height(),
            max_framerate: default_cam_fps(),
            jpeg_decoder: None,
        }
    }
}

/// Everything the daemon needs to know about one board.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardProfile {
    /// Short name used in config files, e.g. `sim`, `rpi4`.
    pub name: String,
    pub description: String,
    /// Devicetree `compatible` strings this profile matches.
    #[serde(default)]
    pub compatible: Vec<String>,
    /// DMI patterns this profile matches (boards without a devicetree).
    #[serde(default)]
    pub dmi: Vec<DmiPattern>,
    pub video: VideoProfile,
    pub audio: AudioProfile,
    /// USB camera handling on this board.
    #[serde(default)]
    pub camera: CameraProfile,
    /// Device nodes that elements of this profile need.
    #[serde(default)]
    pub devices: Vec<DeviceRequirement>,
    /// Elements that do not work on some variants of this board.
    #[serde(default)]
    pub unavailable: Vec<Unavailable>,
    /// Free-form notes for people reading logs and the fleet page.
    #[serde(default)]
    pub notes: Vec<String>,
}

impl BoardProfile {
    /// Every element spec the profile names, for probing and validation.
    pub fn all_elements(&self) -> impl Iterator<Item = &ElementSpec> {
        let v = &self.video;
        std::iter::once(&v.source)
            .chain(&v.encoders)
            .chain(std::iter::once(&v.decoder))
            .chain(&v.decoder_fallbacks)
            .chain(std::iter::once(&v.sink))
            .chain(&v.sink_fallbacks)
            .chain([&self.audio.source, &self.audio.sink])
            .chain(&self.camera.jpeg_decoder)
    }

    /// Device requirements of `element` in this profile.
    pub fn devices_for<'a>(
        &'a self,
        element: &'a str,
    ) -> impl Iterator<Item = &'a DeviceRequirement> + 'a {
        self.devices.iter().filter(move |d| d.element == element)
    }

    /// Checks what serde cannot; returns every problem found, not just the
    /// first, so a profile author fixes them in one go.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push("`name` is empty".to_string());
        }
        let v = &self.video;
        for (key, value) in [
            ("video.width", v.width),
            ("video.height", v.height),
            ("video.framerate", v.framerate),
            ("video.bitrate_kbps", v.bitrate_kbps),
        ] {
            if value == 0 {
                problems.push(format!("`{key}` must be above zero"));
            }
        }
        if v.encoders.is_empty() {
            problems.push("`video.encoders` is empty: list at least one encoder".to_string());
        }
        for spec in self.all_elements() {
            if spec.element.trim().is_empty() {
                problems.push("an element spec has an empty `element`".to_string());
            }
        }
        for enc in &v.encoders {
            if let Some(kbps) = crate::encoder::bitrate_kbps(enc)
                && kbps != v.bitrate_kbps
            {
                problems.push(format!(
                    "encoder {} sets a bitrate of {kbps} kbit/s but `video.bitrate_kbps` is {}",
                    enc.element, v.bitrate_kbps
                ));
            }
        }
        let used: Vec<&str> = self.all_elements().map(|e| e.element.as_str()).collect();
        for d in &self.devices {
            if !used.contains(&d.element.as_str()) {
                problems.push(format!(
                    "`devices` names element {} which the profile does not use",
                    d.element
                ));
            }
            if d.any_of.is_empty() {
                problems.push(format!("`devices` entry for {} lists no path", d.element));
            }
        }
        for u in &self.unavailable {
            if !used.contains(&u.element.as_str()) {
                problems.push(format!(
                    "`unavailable` names element {} which the profile does not use",
                    u.element
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Errors loading a board profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown board {0:?}; known boards: {1}")]
    Unknown(String, String),
    #[error("board profile {name} is invalid")]
    Parse {
        name: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("board profile {name} is invalid: {}", problems.join("; "))]
    Invalid { name: String, problems: Vec<String> },
}

/// The profiles compiled into the binary, as (file name, TOML text).
const BUILTIN: &[(&str, &str)] = &[
    ("sim", include_str!("../boards/sim.toml")),
    ("rpi4", include_str!("../boards/rpi4.toml")),
    ("rpi5", include_str!("../boards/rpi5.toml")),
    ("rk3588", include_str!("../boards/rk3588.toml")),
    ("jetson-orin", include_str!("../boards/jetson-orin.toml")),
    ("x86", include_str!("../boards/x86.toml")),
    ("generic", include_str!("../boards/generic.toml")),
];

/// Name of the profile used for boards that detection does not recognise.
pub const GENERIC: &str = "generic";

/// Names of all built-in board profiles.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// Parses and validates a board profile from TOML text; `name` is used in
/// error messages (the file name without `.toml`).
pub fn parse_profile(name: &str, text: &str) -> Result<BoardProfile, ProfileError> {
    let profile: BoardProfile = toml::from_str(text).map_err(|source| ProfileError::Parse {
        name: name.to_string(),
        source,
    })?;
    profile
        .validate()
        .map_err(|problems| ProfileError::Invalid {
            name: name.to_string(),
            problems,
        })?;
    Ok(profile)
}

/// Loads a built-in profile by name.
pub fn builtin(name: &str) -> Result<BoardProfile, ProfileError> {
    let (_, text) = BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| ProfileError::Unknown(name.to_string(), builtin_names().join(", ")))?;
    parse_profile(name, text)
}

/// All built-in profiles, parsed. A profile that fails to parse is a build
/// defect caught by the unit tests; here it is skipped with an error log so
/// one bad file cannot stop a room from starting.
pub fn builtin_all() -> Vec<BoardProfile> {
    BUILTIN
        .iter()
        .filter_map(|(name, text)| match parse_profile(name, text) {
            Ok(p) => Some(p),
            Err(e) => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    let _ = write!(msg, ": {s}");
                    src = s.source();
                }
                tracing::error!(board = name, "skipping built-in profile: {msg}");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_parses_and_is_named_after_its_file() {
        for name in builtin_names() {
            let p = builtin(name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(p.name, name);
            assert!(!p.video.encoders.is_empty());
            assert!(!p.description.is_empty());
        }
        assert_eq!(builtin_all().len(), builtin_names().len());
    }

    #[test]
    fn unknown_board_lists_known_ones() {
        let err = builtin("nope").unwrap_err().to_string();
        assert!(err.contains("sim"), "{err}");
        assert!(err.contains("rpi4"), "{err}");
    }

    #[test]
    fn sim_keeps_its_test_sources_and_software_chain() {
        let p = builtin("sim").unwrap();
        assert_eq!(p.video.source.element, "videotestsrc");
        assert_eq!(p.audio.source.element, "audiotestsrc");
        let encs: Vec<_> = p
            .video
            .encoders
            .iter()
            .map(|e| e.element.as_str())
            .collect();
        assert_eq!(encs, ["x264enc", "openh264enc", "vp8enc"]);
        let x264 = &p.video.encoders[0];
        assert_eq!(x264.properties["tune"], "zerolatency");
        assert_eq!(x264.properties["speed-preset"], "ultrafast");
    }

    #[test]
    fn every_hardware_profile_ends_in_a_software_encoder() {
        for name in builtin_names() {
            let p = builtin(name).unwrap();
            let last = p.video.encoders.last().unwrap();
            assert!(
                crate::encoder::is_software(&last.element),
                "{name}: last encoder {} is not software",
                last.element
            );
        }
    }

    #[test]
    fn rpi4_uses_the_bcm2835_codec_with_constrained_baseline_level_3_1() {
        let p = builtin("rpi4").unwrap();
        let enc = &p.video.encoders[0];
        assert_eq!(enc.element, "v4l2h264enc");
        let ctrls = &enc.properties["extra-controls"];
        assert!(ctrls.contains("video_bitrate=1500000"), "{ctrls}");
        assert!(ctrls.contains("h264_profile=1"), "{ctrls}");
        assert!(ctrls.contains("h264_level=9"), "{ctrls}");
        assert!(ctrls.contains("h264_i_frame_period=60"), "{ctrls}");
        assert!(enc.caps.as_deref().unwrap().contains("level=(string)3.1"));
        let devs: Vec<_> = p.devices_for("v4l2h264enc").collect();
        assert_eq!(devs.len(), 1);
        assert_eq!(devs[0].any_of, [PathBuf::from("/dev/video11")]);
        assert!(p.compatible.iter().any(|c| c == "raspberrypi,4-model-b"));
    }

    #[test]
    fn launch_fragment_quotes_structured_values_and_appends_caps() {
        let spec = ElementSpec::new("v4l2h264enc")
            .with_property("extra-controls", "controls,video_bitrate=1000000")
            .with_property("output-io-mode", "dmabuf-import")
            .with_caps("video/x-h264,level=(string)3.1");
        assert_eq!(
            spec.launch_fragment(),
            "v4l2h264enc extra-controls=\"controls,video_bitrate=1000000\" \
             output-io-mode=dmabuf-import ! video/x-h264,level=(string)3.1"
        );
        let plain = ElementSpec::new("x264enc").with_property("tune", "zerolatency");
        assert_eq!(plain.launch_fragment(), "x264enc tune=zerolatency");
        let odd = ElementSpec::new("textoverlay").with_property("text", "say \"hi\"");
        assert_eq!(odd.launch_fragment(), r#"textoverlay text="say \"hi\"""#);
    }

    const MINIMAL: &str = r#"
name = "t"
description = "test"
[video]
source = { element = "videotestsrc" }
width = 1280
height = 720
framerate = 30
bitrate_kbps = 1000
decoder = { element = "avdec_h264" }
sink = { element = "fakesink" }
[[video.encoders]]
element = "x264enc"
properties = { bitrate = "1000" }
[audio]
source = { element = "audiotestsrc" }
sink = { element = "fakesink" }
"#;

    #[test]
    fn minimal_profile_gets_defaults() {
        let p = parse_profile("t", MINIMAL).unwrap();
        assert_eq!(p.camera, CameraProfile::default());
        assert!(p.devices.is_empty() && p.unavailable.is_empty() && p.dmi.is_empty());
        assert!(p.video.decoder_fallbacks.is_empty());
    }

    #[test]
    fn malformed_profiles_are_errors_naming_the_board_not_panics() {
        for bad in [
            "",
            "name = ",
            "\u{0}\u{1}garbage",
            "name = \"t\"\ndescription = \"x\"",
            &MINIMAL.replace("width = 1280", "width = -5"),
            &MINIMAL.replace("[audio]", "[audio]\nbogus = 1"),
        ] {
            let err = parse_profile("broken", bad).unwrap_err();
            assert!(matches!(err, ProfileError::Parse { .. }), "{err:?}");
            assert!(err.to_string().contains("broken"));
        }
    }

    #[test]
    fn incoherent_profiles_list_every_problem() {
        let text = MINIMAL
            .replace("framerate = 30", "framerate = 0")
            .replace("bitrate = \"1000\"", "bitrate = \"2500\"")
            + "\n[[devices]]\nelement = \"v4l2h264enc\"\nany_of = []\ndescription = \"x\"\n";
        let err = parse_profile("t", &text).unwrap_err();
        let ProfileError::Invalid { problems, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        let msg = err.to_string();
        assert!(msg.contains("video.framerate"), "{msg}");
        assert!(msg.contains("2500 kbit/s"), "{msg}");
        assert!(msg.contains("v4l2h264enc"), "{msg}");
    }

    #[test]
    fn empty_encoder_chain_is_invalid() {
        let text = MINIMAL.replace(
            "[[video.encoders]]\nelement = \"x264enc\"\nproperties = { bitrate = \"1000\" }",
            "encoders = []",
        );
        let err = parse_profile("t", &text).unwrap_err().to_string();
        assert!(err.contains("video.encoders"), "{err}");
    }
}
