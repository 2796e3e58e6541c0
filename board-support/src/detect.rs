//! Which board is this? Read from the devicetree (`compatible`, most
//! specific string first) or, on machines without one, from DMI; matched
//! against the profiles' `compatible` and `dmi` entries.
//!
//! A board named in config wins over detection; an unknown board gets the
//! `generic` (software only) profile with a warning, so a room on new
//! hardware still joins its meeting.
//!
//! All reads go through a root path (`/` in production, a fixture tree in
//! tests), and malformed files never panic: they become warnings.

use std::io;
use std::path::{Path, PathBuf};

use crate::profile::{self, BoardProfile, DmiPattern, ProfileError};

/// Devicetree `compatible` locations, relative to the root, in order tried.
const DT_COMPATIBLE: &[&str] = &[
    "proc/device-tree/compatible",
    "sys/firmware/devicetree/base/compatible",
];
const DT_MODEL: &[&str] = &[
    "proc/device-tree/model",
    "sys/firmware/devicetree/base/model",
];
const DMI_DIR: &str = "sys/class/dmi/id";

/// DMI identification of a machine (x86, some UEFI arm64 servers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dmi {
    pub sys_vendor: String,
    pub product_name: String,
}

/// What the system says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Devicetree `compatible` strings, most specific first; empty without a
    /// devicetree.
    pub compatible: Vec<String>,
    /// Devicetree `model`, for logs.
    pub model: Option<String>,
    /// DMI, if the machine has it.
    pub dmi: Option<Dmi>,
    /// Problems met while reading (unreadable or malformed files).
    pub warnings: Vec<String>,
}

impl Identity {
    /// Reads the identity under `root` (`/` on a real system).
    pub fn read(root: &Path) -> Identity {
        let mut id = Identity::default();
        if let Some(bytes) = read_first(root, DT_COMPATIBLE, &mut id.warnings) {
            id.compatible = split_nul_list(&bytes);
            if id.compatible.is_empty() {
                id.warnings
                    .push("devicetree `compatible` is present but holds no string".to_string());
            }
        }
        if let Some(bytes) = read_first(root, DT_MODEL, &mut id.warnings) {
            id.model = split_nul_list(&bytes).into_iter().next();
        }
        let dmi_dir = root.join(DMI_DIR);
        let vendor = read_trimmed(&dmi_dir.join("sys_vendor"), &mut id.warnings);
        let product = read_trimmed(&dmi_dir.join("product_name"), &mut id.warnings);
        if vendor.is_some() || product.is_some() {
            id.dmi = Some(Dmi {
                sys_vendor: vendor.unwrap_or_default(),
                product_name: product.unwrap_or_default(),
            });
        }
        id
    }

    /// One line for logs, e.g. `devicetree "radxa,rock-5b", "rockchip,rk3588"`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = &self.model {
            parts.push(format!("model {m:?}"));
        }
        if !self.compatible.is_empty() {
            let c: Vec<String> = self.compatible.iter().map(|c| format!("{c:?}")).collect();
            parts.push(format!("devicetree {}", c.join(", ")));
        }
        if let Some(d) = &self.dmi {
            parts.push(format!("DMI {:?} {:?}", d.sys_vendor, d.product_name));
        }
        if parts.is_empty() {
            "no devicetree and no DMI".to_string()
        } else {
            parts.join("; ")
        }
    }
}

/// Reads the first of `rels` (relative to `root`) that exists. A missing
/// file is silent; any other failure (a directory, permissions) is a warning.
fn read_first(root: &Path, rels: &[&str], warnings: &mut Vec<String>) -> Option<Vec<u8>> {
    for rel in rels {
        let path = root.join(rel);
        match std::fs::read(&path) {
            Ok(b) => return Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warnings.push(format!("cannot read {}: {e}", path.display())),
        }
    }
    None
}

fn read_trimmed(path: &Path, warnings: &mut Vec<String>) -> Option<String> {
    match std::fs::read(path) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            (!s.is_empty()).then(|| s.to_string())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            warnings.push(format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// Splits a devicetree string list (NUL-separated, NUL-terminated).
/// Invalid UTF-8 is replaced, control characters dropped, empties skipped.
pub fn split_nul_list(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .map(|s| {
            String::from_utf8_lossy(s)
                .chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// How the profile was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectedBy {
    /// Named in config.
    Config,
    /// Matched this devicetree `compatible` string.
    DeviceTree(String),
    /// Matched DMI.
    Dmi(Dmi),
    /// Nothing matched: the generic profile.
    Fallback,
}

/// The outcome of detection: the profile to use and why.
#[derive(Debug, Clone)]
pub struct Detection {
    pub profile: BoardProfile,
    pub identity: Identity,
    pub by: DetectedBy,
    /// Things worth a `warn!` line: unknown board, unreadable files.
    pub warnings: Vec<String>,
}

impl Detection {
    /// One line for logs: which profile and why.
    pub fn summary(&self) -> String {
        let why = match &self.by {
            DetectedBy::Config => "named in config".to_string(),
            DetectedBy::DeviceTree(c) => format!("devicetree compatible {c:?}"),
            DetectedBy::Dmi(d) => format!("DMI {:?} {:?}", d.sys_vendor, d.product_name),
            DetectedBy::Fallback => "board not recognised".to_string(),
        };
        format!(
            "board profile {} ({why}); {}",
            self.profile.name,
            self.identity.describe()
        )
    }
}

/// Errors of detection. Only config can cause one: an unknown board there is
/// a mistake to fix, not something to paper over.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("board {name:?} named in config cannot be used")]
    Override {
        name: String,
        #[source]
        source: Box<ProfileError>,
    },
    #[error("no {0:?} profile to fall back to for an unknown board")]
    NoFallback(&'static str),
}

/// Finds the profile for `identity`: the devicetree strings in order (most
/// specific first), then DMI (the pattern naming the most fields wins).
pub fn match_identity<'a>(
    identity: &Identity,
    profiles: &'a [BoardProfile],
) -> Option<(&'a BoardProfile, DetectedBy)> {
    for c in &identity.compatible {
        if let Some(p) = profiles
            .iter()
            .find(|p| p.compatible.iter().any(|pc| pc == c))
        {
            return Some((p, DetectedBy::DeviceTree(c.clone())));
        }
    }
    let dmi = identity.dmi.as_ref()?;
    profiles
        .iter()
        .flat_map(|p| p.dmi.iter().map(move |pat| (p, pat)))
        .filter(|(_, pat)| dmi_matches(pat, dmi))
        .max_by_key(|(_, pat)| {
            // Most specific pattern; among equals, the first profile listed.
            usize::from(pat.sys_vendor.is_some()) + usize::from(pat.product_name.is_some())
        })
        .map(|(p, _)| (p, DetectedBy::Dmi(dmi.clone())))
}

fn dmi_matches(pat: &DmiPattern, dmi: &Dmi) -> bool {
    let contains = |hay: &str, needle: &Option<String>| {
        needle
            .as_ref()
            .is_none_or(|n| hay.to_lowercase().contains(&n.to_lowercase()))
    };
    contains(&dmi.sys_vendor, &pat.sys_vendor) && contains(&dmi.product_name, &pat.product_name)
}

/// Detects the board under `root` among the built-in profiles.
///
/// `override_name` is the board named in config; `None`, an empty string or
/// `"auto"` mean detect.
pub fn detect(root: &Path, override_name: Option<&str>) -> Result<Detection, DetectError> {
    detect_among(root, override_name, &profile::builtin_all())
}

/// [`detect`] among the given profiles (for tests and for profiles loaded
/// from elsewhere).
pub fn detect_among(
    root: &Path,
    override_name: Option<&str>,
    profiles: &[BoardProfile],
) -> Result<Detection, DetectError> {
    let identity = Identity::read(root);
    let mut warnings = identity.warnings.clone();
    let wanted = override_name
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != "auto");
    if let Some(name) = wanted {
        let profile = match profiles.iter().find(|p| p.name == name) {
            Some(p) => p.clone(),
            None => profile::builtin(name).map_err(|source| DetectError::Override {
                name: name.to_string(),
                source: Box::new(source),
            })?,
        };
        if let Some((detected, _)) = match_identity(&identity, profiles)
            && detected.name != profile.name
        {
            warnings.push(format!(
                "config names board {} but this looks like {} ({})",
                profile.name,
                detected.name,
                identity.describe()
            ));
        }
        return Ok(Detection {
            profile,
            identity,
            by: DetectedBy::Config,
            warnings,
        });
    }
    if let Some((p, by)) = match_identity(&identity, profiles) {
        return Ok(Detection {
            profile: p.clone(),
            identity,
            by,
            warnings,
        });
    }
    let generic = profiles
        .iter()
        .find(|p| p.name == profile::GENERIC)
        .cloned()
        .ok_or(DetectError::NoFallback(profile::GENERIC))?;
    warnings.push(format!(
        "unknown board ({}); using the {} profile (software encoding only). \
         Name the board in config or add a profile to board-support/boards/",
        identity.describe(),
        profile::GENERIC
    ));
    Ok(Detection {
        profile: generic,
        identity,
        by: DetectedBy::Fallback,
        warnings,
    })
}

/// The root of the fixture trees used by this crate's tests.
#[doc(hidden)]
pub fn fixture_root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(name: &str) -> Detection {
        detect(&fixture_root(&format!("boards/{name}")), None).unwrap()
    }

    #[test]
    fn devicetree_boards_map_to_their_profiles() {
        for (fixture, profile, matched) in [
            ("rpi4-model-b", "rpi4", "raspberrypi,4-model-b"),
            ("rpi-cm4", "rpi4", "raspberrypi,4-compute-module"),
            ("rpi4-sysfs-only", "rpi4", "raspberrypi,4-model-b"),
            ("rpi5-model-b", "rpi5", "raspberrypi,5-model-b"),
            ("radxa-rock-5b", "rk3588", "rockchip,rk3588"),
            ("orangepi-5", "rk3588", "rockchip,rk3588s"),
            ("jetson-orin-nx", "jetson-orin", "nvidia,tegra234"),
            ("jetson-agx-orin", "jetson-orin", "nvidia,tegra234"),
            ("jetson-orin-nano", "jetson-orin", "nvidia,tegra234"),
        ] {
            let d = board(fixture);
            assert_eq!(d.profile.name, profile, "{fixture}");
            assert_eq!(d.by, DetectedBy::DeviceTree(matched.into()), "{fixture}");
            assert!(d.warnings.is_empty(), "{fixture}: {:?}", d.warnings);
        }
    }

    #[test]
    fn compatible_list_keeps_order_and_model_is_read() {
        let d = board("radxa-rock-5b");
        assert_eq!(d.identity.compatible, ["radxa,rock-5b", "rockchip,rk3588"]);
        assert_eq!(d.identity.model.as_deref(), Some("Radxa ROCK 5B"));
        assert!(d.summary().contains("rk3588"), "{}", d.summary());
    }

    #[test]
    fn x86_is_found_by_dmi() {
        let d = board("x86-nuc");
        assert_eq!(d.profile.name, "x86");
        let DetectedBy::Dmi(dmi) = &d.by else {
            panic!("{:?}", d.by)
        };
        assert_eq!(dmi.sys_vendor, "Intel(R) Client Systems");
        assert_eq!(dmi.product_name, "NUC11TNHi5");
    }

    #[test]
    fn unknown_board_falls_back_to_generic_with_a_warning() {
        let d = board("unknown-orangepi-zero2");
        assert_eq!(d.profile.name, "generic");
        assert_eq!(d.by, DetectedBy::Fallback);
        assert_eq!(d.warnings.len(), 1);
        assert!(
            d.warnings[0].contains("allwinner,sun50i-h616"),
            "{:?}",
            d.warnings
        );
        let empty = board("empty");
        assert_eq!(empty.profile.name, "generic");
        assert!(empty.warnings[0].contains("no devicetree and no DMI"));
    }

    #[test]
    fn config_overrides_detection_and_warns_on_mismatch() {
        let root = fixture_root("boards/rpi4-model-b");
        let d = detect(&root, Some("rpi5")).unwrap();
        assert_eq!(d.profile.name, "rpi5");
        assert_eq!(d.by, DetectedBy::Config);
        assert!(
            d.warnings[0].contains("looks like rpi4"),
            "{:?}",
            d.warnings
        );
        let same = detect(&root, Some(" rpi4 ")).unwrap();
        assert!(same.warnings.is_empty());
        for auto in [None, Some(""), Some("auto")] {
            assert_eq!(
                detect(&root, auto).unwrap().by,
                DetectedBy::DeviceTree("raspberrypi,4-model-b".into())
            );
        }
        let sim = detect(&fixture_root("boards/empty"), Some("sim")).unwrap();
        assert_eq!(sim.profile.name, "sim");
    }

    #[test]
    fn unknown_board_in_config_is_an_error_naming_it() {
        let err = detect(&fixture_root("boards/rpi4-model-b"), Some("rpi3")).unwrap_err();
        assert!(matches!(&err, DetectError::Override { name, .. } if name == "rpi3"));
        let chain = std::error::Error::source(&err).unwrap().to_string();
        assert!(chain.contains("known boards"), "{chain}");
    }

    #[test]
    fn malformed_devicetrees_do_not_panic() {
        let nuls = board("malformed-nuls");
        assert!(nuls.identity.compatible.is_empty());
        assert_eq!(nuls.profile.name, "generic");
        assert!(nuls.warnings.iter().any(|w| w.contains("holds no string")));

        let bin = board("malformed-binary");
        // The readable tail still identifies the SoC.
        assert_eq!(bin.profile.name, "rpi4", "{:?}", bin.identity);

        let dir = board("malformed-dir");
        assert_eq!(dir.profile.name, "generic");
        assert!(
            dir.warnings.iter().any(|w| w.contains("cannot read")),
            "{:?}",
            dir.warnings
        );
    }

    #[test]
    fn split_nul_list_handles_edge_cases() {
        assert!(split_nul_list(b"").is_empty());
        assert_eq!(split_nul_list(b"a\0b"), ["a", "b"]);
        assert_eq!(split_nul_list(b"a\0\0b\0"), ["a", "b"]);
        assert_eq!(split_nul_list(b" a \n\0"), ["a"]);
    }

    #[test]
    fn no_generic_profile_is_an_error_not_a_panic() {
        let only_sim = vec![profile::builtin("sim").unwrap()];
        let err = detect_among(&fixture_root("boards/empty"), None, &only_sim).unwrap_err();
        assert!(matches!(err, DetectError::NoFallback("generic")));
    }

    #[test]
    fn specific_dmi_pattern_beats_catch_all() {
        let mut nuc = profile::builtin("generic").unwrap();
        nuc.name = "nuc".into();
        nuc.dmi = vec![DmiPattern {
            sys_vendor: Some("intel".into()),
            product_name: Some("nuc11".into()),
        }];
        let profiles = vec![profile::builtin("x86").unwrap(), nuc];
        let d = detect_among(&fixture_root("boards/x86-nuc"), None, &profiles).unwrap();
        assert_eq!(d.profile.name, "nuc");
    }
}
