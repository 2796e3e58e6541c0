//! Board profiles as data, board detection and device probing.
//!
//! A board profile says which GStreamer elements a room uses on that board:
//! camera and microphone sources, the video encoder and its properties, the
//! decoder and the display and speaker sinks. Profiles live as TOML files in
//! `board-support/boards/` and are compiled into the binary; the daemon picks
//! one at run time (from config, or detected from the devicetree).

use std::collections::BTreeMap;

use serde::Deserialize;

/// An element and the properties to set on it, as GStreamer would parse them
/// from a `gst-launch-1.0` line (values are strings, converted by GStreamer).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementSpec {
    pub element: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl ElementSpec {
    /// The spec as a `gst-launch-1.0` fragment, e.g. `x264enc tune=zerolatency`.
    pub fn launch_fragment(&self) -> String {
        let mut s = self.element.clone();
        for (k, v) in &self.properties {
            s.push(' ');
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        s
    }
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
}

/// Audio capture and playback settings of a board.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioProfile {
    pub source: ElementSpec,
    pub sink: ElementSpec,
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
    pub video: VideoProfile,
    pub audio: AudioProfile,
}

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
}

/// The profiles compiled into the binary, as (file name, TOML text).
const BUILTIN: &[(&str, &str)] = &[("sim", include_str!("../boards/sim.toml"))];

/// Names of all built-in board profiles.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// Parses a board profile from TOML text.
pub fn parse_profile(name: &str, text: &str) -> Result<BoardProfile, ProfileError> {
    toml::from_str(text).map_err(|source| ProfileError::Parse {
        name: name.to_string(),
        source,
    })
}

/// Loads a built-in profile by name.
pub fn builtin(name: &str) -> Result<BoardProfile, ProfileError> {
    let (_, text) = BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| ProfileError::Unknown(name.to_string(), builtin_names().join(", ")))?;
    parse_profile(name, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_parses() {
        for name in builtin_names() {
            let p = builtin(name).expect(name);
            assert_eq!(p.name, name);
            assert!(!p.video.encoders.is_empty());
        }
    }

    #[test]
    fn unknown_board_lists_known_ones() {
        let err = builtin("nope").unwrap_err().to_string();
        assert!(err.contains("sim"), "{err}");
    }
}
