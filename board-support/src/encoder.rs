//! Per-element knowledge of H.264 encoders, kept in one place (as
//! gst-plugins-rs `webrtcsink` does): which are software, and in which
//! property and unit each takes its bitrate.
//!
//! Used to validate profiles (the encoder's bitrate must agree with
//! `video.bitrate_kbps`) and by the media code to change the bitrate of an
//! encoder spec without knowing its units ([`with_bitrate`]).

use crate::profile::ElementSpec;

/// Where an encoder takes its bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BitrateProp {
    /// A plain property in kbit/s.
    Kbps(&'static str),
    /// A plain property in bit/s.
    Bps(&'static str),
    /// The `video_bitrate` control inside the V4L2 `extra-controls`
    /// structure, in bit/s.
    V4l2ExtraControls,
}

fn bitrate_prop(element: &str) -> Option<BitrateProp> {
    Some(match element {
        "x264enc" | "vaapih264enc" | "vah264enc" | "vah264lpenc" | "qsvh264enc" | "nvh264enc" => {
            BitrateProp::Kbps("bitrate")
        }
        "openh264enc" | "nvv4l2h264enc" => BitrateProp::Bps("bitrate"),
        "vp8enc" => BitrateProp::Bps("target-bitrate"),
        "mpph264enc" => BitrateProp::Bps("bps"),
        "v4l2h264enc" => BitrateProp::V4l2ExtraControls,
        _ => return None,
    })
}

/// The video codec an encoder produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    H264,
    Vp8,
}

impl Codec {
    /// The RTP encoding name (SDP `a=rtpmap`).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::Vp8 => "VP8",
        }
    }
}

/// What `element` encodes to: VP8 for the VP8 encoders, H.264 for the rest
/// (every board profile's hardware encoder is H.264).
pub fn codec(element: &str) -> Codec {
    match element {
        "vp8enc" | "v4l2vp8enc" | "vavp8enc" => Codec::Vp8,
        _ => Codec::H264,
    }
}

/// True for encoders that run on the CPU.
pub fn is_software(element: &str) -> bool {
    matches!(
        element,
        "x264enc" | "openh264enc" | "avenc_h264" | "vp8enc" | "vp9enc"
    )
}

/// The bitrate `spec` sets, in kbit/s, if the element is known and the
/// property is present and a number.
pub fn bitrate_kbps(spec: &ElementSpec) -> Option<u32> {
    match bitrate_prop(&spec.element)? {
        BitrateProp::Kbps(p) => spec.properties.get(p)?.trim().parse().ok(),
        BitrateProp::Bps(p) => bps_to_kbps(spec.properties.get(p)?),
        BitrateProp::V4l2ExtraControls => {
            let ctrls = spec.properties.get("extra-controls")?;
            let v = structure_field(ctrls, "video_bitrate")?;
            bps_to_kbps(v)
        }
    }
}

fn bps_to_kbps(v: &str) -> Option<u32> {
    let bps: u64 = v.trim().parse().ok()?;
    u32::try_from(bps / 1000).ok()
}

/// Returns `spec` with its bitrate set to `kbps` in the element's own units.
/// Unknown elements are returned unchanged (and `false`).
pub fn with_bitrate(spec: &ElementSpec, kbps: u32) -> (ElementSpec, bool) {
    let mut out = spec.clone();
    let Some(prop) = bitrate_prop(&spec.element) else {
        return (out, false);
    };
    let bps = u64::from(kbps) * 1000;
    match prop {
        BitrateProp::Kbps(p) => {
            out.properties.insert(p.to_string(), kbps.to_string());
        }
        BitrateProp::Bps(p) => {
            out.properties.insert(p.to_string(), bps.to_string());
        }
        BitrateProp::V4l2ExtraControls => {
            let old = out
                .properties
                .get("extra-controls")
                .cloned()
                .unwrap_or_else(|| "controls".to_string());
            let new = set_structure_field(&old, "video_bitrate", &bps.to_string());
            out.properties.insert("extra-controls".to_string(), new);
        }
    }
    (out, true)
}

/// Reads `field=value` (or `field=(type)value`) from a flat GstStructure
/// string such as `controls,video_bitrate=1000000,h264_level=9`.
fn structure_field<'a>(s: &'a str, field: &str) -> Option<&'a str> {
    s.split(',').skip(1).find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        if k.trim() != field {
            return None;
        }
        let v = v.trim();
        Some(match v.strip_prefix('(') {
            Some(rest) => rest.split_once(')').map_or(v, |(_, val)| val),
            None => v,
        })
    })
}

fn set_structure_field(s: &str, field: &str, value: &str) -> String {
    let mut parts: Vec<String> = s.split(',').map(str::to_string).collect();
    let mut found = false;
    for p in parts.iter_mut().skip(1) {
        if p.split_once('=').is_some_and(|(k, _)| k.trim() == field) {
            *p = format!("{field}={value}");
            found = true;
        }
    }
    if !found {
        parts.push(format!("{field}={value}"));
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_follows_the_element() {
        assert_eq!(codec("vp8enc"), Codec::Vp8);
        assert_eq!(codec("x264enc"), Codec::H264);
        assert_eq!(codec("v4l2h264enc"), Codec::H264);
        assert_eq!(Codec::Vp8.encoding_name(), "VP8");
        let v = ElementSpec::new("vp8enc").with_property("target-bitrate", "1500000");
        assert_eq!(bitrate_kbps(&v), Some(1500));
    }

    #[test]
    fn reads_bitrate_in_each_elements_units() {
        let x = ElementSpec::new("x264enc").with_property("bitrate", "1500");
        assert_eq!(bitrate_kbps(&x), Some(1500));
        let m = ElementSpec::new("mpph264enc").with_property("bps", "2000000");
        assert_eq!(bitrate_kbps(&m), Some(2000));
        let v = ElementSpec::new("v4l2h264enc").with_property(
            "extra-controls",
            "controls,video_bitrate=(int)1500000,h264_level=9",
        );
        assert_eq!(bitrate_kbps(&v), Some(1500));
        assert_eq!(bitrate_kbps(&ElementSpec::new("x264enc")), None);
        assert_eq!(bitrate_kbps(&ElementSpec::new("weirdenc")), None);
        let junk = ElementSpec::new("openh264enc").with_property("bitrate", "fast");
        assert_eq!(bitrate_kbps(&junk), None);
    }

    #[test]
    fn with_bitrate_rewrites_in_place_and_keeps_other_controls() {
        let v = ElementSpec::new("v4l2h264enc").with_property(
            "extra-controls",
            "controls,video_bitrate=1500000,h264_level=9",
        );
        let (v2, ok) = with_bitrate(&v, 800);
        assert!(ok);
        assert_eq!(
            v2.properties["extra-controls"],
            "controls,video_bitrate=800000,h264_level=9"
        );
        let (n, _) = with_bitrate(&ElementSpec::new("nvv4l2h264enc"), 2000);
        assert_eq!(n.properties["bitrate"], "2000000");
        let (u, ok) = with_bitrate(&ElementSpec::new("weirdenc"), 1);
        assert!(!ok);
        assert!(u.properties.is_empty());
    }
}
