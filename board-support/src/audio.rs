//! Speakerphone discovery (ALSA).
//!
//! [`read_cards`] reads `/proc/asound/cards` and each `cardN/{id,usbid,
//! pcm*p,pcm*c}` under a root; [`pick_audio`] chooses where the room listens
//! and speaks: a USB speakerphone (Jabra, Poly/Plantronics, Anker, Yealink,
//! eMeet, ...) for both when there is one, since echo cancellation works best
//! with capture and playback on one clock; otherwise a USB microphone (often
//! the webcam's) and the HDMI output. Device strings are ALSA's
//! (`plughw:CARD=USB,DEV=0`), by card id rather than index, because indexes
//! change with USB plug order.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::camera::UsbId;
use crate::profile::AudioProfile;

/// USB vendors whose audio devices are conference speakerphones.
const SPEAKERPHONE_VENDORS: &[(u16, &str)] = &[
    (0x0b0e, "Jabra (GN Audio)"),
    (0x047f, "Poly/Plantronics"),
    (0x095d, "Polycom"),
    (0x291a, "Anker"),
    (0x6993, "Yealink"),
    (0x328f, "eMeet"),
];

/// Lower-case name parts of conference speakerphones.
const SPEAKERPHONE_NAMES: &[&str] = &[
    "jabra",
    "speak",
    "poly",
    "plantronics",
    "anker",
    "powerconf",
    "yealink",
    "emeet",
    "speakerphone",
];

/// One ALSA card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlsaCard {
    pub index: u32,
    /// Card id, e.g. `USB`, `vc4hdmi0`; stable across reboots.
    pub id: String,
    /// Driver, e.g. `USB-Audio`, `vc4-hdmi`.
    pub driver: String,
    /// Short name, e.g. `Jabra SPEAK 410 USB`.
    pub name: String,
    /// Long name, e.g. `Jabra SPEAK 410 USB at usb-0000:01:00.0-1.3, full speed`.
    pub long_name: String,
    pub usb_id: Option<UsbId>,
    /// PCM device numbers with playback (`pcmNp`).
    pub playback: Vec<u32>,
    /// PCM device numbers with capture (`pcmNc`).
    pub capture: Vec<u32>,
}

impl AlsaCard {
    fn text(&self) -> String {
        format!(
            "{} {} {} {}",
            self.id, self.driver, self.name, self.long_name
        )
        .to_lowercase()
    }

    /// A USB audio device.
    pub fn is_usb(&self) -> bool {
        self.usb_id.is_some() || self.driver == "USB-Audio"
    }

    /// A known conference speakerphone, by USB vendor or name.
    pub fn is_speakerphone(&self) -> bool {
        let by_vendor = self
            .usb_id
            .is_some_and(|id| SPEAKERPHONE_VENDORS.iter().any(|(v, _)| *v == id.vendor));
        let text = self.text();
        by_vendor || (self.is_usb() && SPEAKERPHONE_NAMES.iter().any(|n| text.contains(n)))
    }

    /// An HDMI output (the TV of the meeting room).
    pub fn is_hdmi(&self) -> bool {
        self.text().contains("hdmi")
    }

    /// Has both a microphone and a speaker.
    pub fn is_duplex(&self) -> bool {
        !self.playback.is_empty() && !self.capture.is_empty()
    }

    fn pcm(&self, device: u32) -> AlsaPcm {
        AlsaPcm {
            card_index: self.index,
            card_id: self.id.clone(),
            card_name: self.name.clone(),
            device,
            iec958_only: self.driver == "vc4-hdmi",
        }
    }
}

/// One PCM device of a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlsaPcm {
    pub card_index: u32,
    pub card_id: String,
    pub card_name: String,
    pub device: u32,
    /// The card takes IEC958 subframes only (the Pi's `vc4-hdmi`):
    /// `plughw` cannot feed it, the `hdmi:` plugin from alsa-lib's card
    /// config must.
    pub iec958_only: bool,
}

impl AlsaPcm {
    /// `hw:CARD=USB,DEV=0`: the device as is.
    pub fn hw(&self) -> String {
        format!("hw:CARD={},DEV={}", self.card_id, self.device)
    }

    /// `plughw:CARD=USB,DEV=0`: with rate and format conversion.
    pub fn plughw(&self) -> String {
        format!("plughw:CARD={},DEV={}", self.card_id, self.device)
    }

    /// The string to give `alsasrc`/`alsasink` as `device`.
    pub fn alsa_device(&self) -> String {
        if self.iec958_only {
            format!("hdmi:CARD={},DEV={}", self.card_id, self.device)
        } else {
            self.plughw()
        }
    }
}

impl fmt::Display for AlsaPcm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.alsa_device(), self.card_name)
    }
}

/// A sound card named in config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioPin {
    /// `usb:0b0e:0412` or `0b0e:0412`.
    UsbId(UsbId),
    /// Case-insensitive part of the card id or name, e.g. `Jabra`.
    Name(String),
}

impl FromStr for AudioPin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty sound card name".to_string());
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

impl fmt::Display for AudioPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UsbId(id) => write!(f, "usb:{id}"),
            Self::Name(n) => write!(f, "{n:?}"),
        }
    }
}

impl AudioPin {
    fn matches(&self, card: &AlsaCard) -> bool {
        match self {
            Self::UsbId(id) => card.usb_id == Some(*id),
            Self::Name(n) => card.text().contains(&n.to_lowercase()),
        }
    }
}

/// Errors of audio discovery.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("cannot read the ALSA card list {}", path.display())]
    Cards {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sound card {pin} named in config not found; cards present: {present}")]
    PinnedNotFound { pin: String, present: String },
    #[error("no sound card can play audio; cards present: {present}")]
    NoPlayback { present: String },
}

/// A line of `/proc/asound/cards`: ` 2 [USB  ]: USB-Audio - Jabra SPEAK 410 USB`.
fn parse_card_line(line: &str) -> Option<(u32, String, String, String)> {
    let line = line.trim_start();
    let (index, rest) = line.split_once(' ')?;
    let index = index.parse().ok()?;
    let rest = rest.trim_start().strip_prefix('[')?;
    let (id, rest) = rest.split_once(']')?;
    let rest = rest.trim_start().strip_prefix(':')?;
    let (driver, name) = rest.split_once(" - ").unwrap_or((rest, ""));
    Some((
        index,
        id.trim().to_string(),
        driver.trim().to_string(),
        name.trim().to_string(),
    ))
}

/// Parses `/proc/asound/cards` into cards without the per-card details.
pub fn parse_cards(text: &str) -> Vec<AlsaCard> {
    let mut cards: Vec<AlsaCard> = Vec::new();
    let mut expect_long = false;
    for line in text.lines() {
        if let Some((index, id, driver, name)) = parse_card_line(line) {
            cards.push(AlsaCard {
                index,
                id,
                driver,
                name,
                long_name: String::new(),
                usb_id: None,
                playback: Vec::new(),
                capture: Vec::new(),
            });
            expect_long = true;
        } else if expect_long && line.starts_with(' ') && !line.trim().is_empty() {
            if let Some(c) = cards.last_mut() {
                c.long_name = line.trim().to_string();
            }
            expect_long = false;
        }
    }
    cards
}

/// Reads the ALSA cards under `root` (`/` on a real system).
pub fn read_cards(root: &Path) -> Result<Vec<AlsaCard>, AudioError> {
    let asound = root.join("proc/asound");
    let cards_path = asound.join("cards");
    let bytes = std::fs::read(&cards_path).map_err(|source| AudioError::Cards {
        path: cards_path,
        source,
    })?;
    let mut cards = parse_cards(&String::from_utf8_lossy(&bytes));
    for card in &mut cards {
        let dir = asound.join(format!("card{}", card.index));
        let read = |f: &str| {
            std::fs::read(dir.join(f))
                .ok()
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .filter(|s| !s.is_empty())
        };
        if let Some(id) = read("id") {
            card.id = id;
        }
        card.usb_id = read("usbid").and_then(|s| s.parse().ok());
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.filter_map(Result::ok) {
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Some(rest) = name.strip_prefix("pcm") else {
                    continue;
                };
                let (num, dir_kind) = rest.split_at(rest.len().saturating_sub(1));
                let Ok(num) = num.parse::<u32>() else {
                    continue;
                };
                match dir_kind {
                    "p" => card.playback.push(num),
                    "c" => card.capture.push(num),
                    _ => {}
                }
            }
        }
        card.playback.sort_unstable();
        card.capture.sort_unstable();
    }
    Ok(cards)
}

/// Where the room listens and speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioChoice {
    /// Microphone; `None` when the room has none (it can still listen).
    pub capture: Option<AlsaPcm>,
    pub playback: AlsaPcm,
    /// Capture and playback on one card (one clock: best for AEC).
    pub same_card: bool,
    /// Capture and playback are one known conference speakerphone, which
    /// cancels its own echo (Jabra Speak, Poly Sync, Anker PowerConf,
    /// Yealink CP, eMeet Luna all do): software echo cancellation on top
    /// only costs CPU and can distort double talk.
    pub hardware_echo_cancel: bool,
    /// Why, one line each, for logs.
    pub reasons: Vec<String>,
}

impl AudioChoice {
    /// Sets `device` on the profile's `alsasrc`/`alsasink` (other elements,
    /// e.g. the sim board's test sources, are left alone).
    pub fn apply(&self, audio: &mut AudioProfile) {
        if let Some(c) = &self.capture
            && audio.source.element == "alsasrc"
        {
            audio
                .source
                .properties
                .insert("device".to_string(), c.alsa_device());
        }
        if audio.sink.element == "alsasink" {
            audio
                .sink
                .properties
                .insert("device".to_string(), self.playback.alsa_device());
        }
        audio.hardware_echo_cancel |= self.hardware_echo_cancel;
    }
}

fn describe_all(cards: &[AlsaCard]) -> String {
    if cards.is_empty() {
        return "none".to_string();
    }
    let v: Vec<String> = cards
        .iter()
        .map(|c| {
            let id = c.usb_id.map(|i| format!(" usb:{i}")).unwrap_or_default();
            format!("{} {:?}{id}", c.id, c.name)
        })
        .collect();
    v.join(", ")
}

/// Chooses capture and playback devices.
///
/// In order: the card named in config (an error if absent); a known USB
/// speakerphone with microphone and speaker; any USB card with both; else
/// the microphone of a USB device (a webcam) or any card, and playback on
/// HDMI, else on any card that plays.
pub fn pick_audio(cards: &[AlsaCard], pin: Option<&AudioPin>) -> Result<AudioChoice, AudioError> {
    let first = |c: &AlsaCard, dev: &[u32]| dev.first().map(|d| c.pcm(*d));
    let mut reasons = Vec::new();

    if let Some(pin) = pin {
        let card =
            cards
                .iter()
                .find(|c| pin.matches(c))
                .ok_or_else(|| AudioError::PinnedNotFound {
                    pin: pin.to_string(),
                    present: describe_all(cards),
                })?;
        reasons.push(format!("{} {:?} named in config", card.id, card.name));
        if card.is_duplex() {
            return Ok(duplex(card, reasons));
        }
        if card.playback.is_empty() {
            reasons.push(format!("{} has no speaker; playback elsewhere", card.id));
            let capture = first(card, &card.capture);
            return split(cards, capture, reasons);
        }
        reasons.push(format!("{} has no microphone", card.id));
        return Ok(AudioChoice {
            capture: None,
            playback: card.pcm(card.playback[0]),
            same_card: false,
            hardware_echo_cancel: false,
            reasons,
        });
    }

    if let Some(card) = cards.iter().find(|c| c.is_speakerphone() && c.is_duplex()) {
        reasons.push(format!("USB speakerphone {:?}", card.name));
        return Ok(duplex(card, reasons));
    }
    if let Some(card) = cards.iter().find(|c| c.is_usb() && c.is_duplex()) {
        reasons.push(format!(
            "USB audio device {:?} with microphone and speaker (not a known speakerphone)",
            card.name
        ));
        return Ok(duplex(card, reasons));
    }
    let capture = cards
        .iter()
        .filter(|c| !c.capture.is_empty())
        .min_by_key(|c| !c.is_usb())
        .and_then(|c| {
            reasons.push(format!(
                "no speakerphone; microphone of {:?} (echo cancellation across two cards is weaker)",
                c.name
            ));
            first(c, &c.capture)
        });
    if capture.is_none() {
        reasons.push("no microphone found: the room can listen but not speak".to_string());
    }
    split(cards, capture, reasons)
}

fn duplex(card: &AlsaCard, reasons: Vec<String>) -> AudioChoice {
    AudioChoice {
        capture: Some(card.pcm(card.capture[0])),
        playback: card.pcm(card.playback[0]),
        same_card: true,
        hardware_echo_cancel: card.is_speakerphone(),
        reasons,
    }
}

/// Playback on HDMI if any, else on the first card that plays.
fn split(
    cards: &[AlsaCard],
    capture: Option<AlsaPcm>,
    mut reasons: Vec<String>,
) -> Result<AudioChoice, AudioError> {
    let out = cards
        .iter()
        .filter(|c| !c.playback.is_empty())
        .min_by_key(|c| !c.is_hdmi())
        .ok_or_else(|| AudioError::NoPlayback {
            present: describe_all(cards),
        })?;
    let playback = out.pcm(out.playback[0]);
    reasons.push(if out.is_hdmi() {
        format!("playback on HDMI {}", out.id)
    } else {
        format!("no HDMI audio; playback on {:?}", out.name)
    });
    let same_card = capture
        .as_ref()
        .is_some_and(|c| c.card_index == playback.card_index);
    Ok(AudioChoice {
        capture,
        playback,
        same_card,
        hardware_echo_cancel: false,
        reasons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::fixture_root;

    fn cards(name: &str) -> Vec<AlsaCard> {
        read_cards(&fixture_root(&format!("asound/{name}"))).unwrap()
    }

    #[test]
    fn proc_asound_is_read() {
        let c = cards("pi4-jabra410");
        assert_eq!(c.len(), 4);
        let jabra = &c[3];
        assert_eq!(jabra.index, 3);
        assert_eq!(jabra.id, "USB");
        assert_eq!(jabra.driver, "USB-Audio");
        assert_eq!(jabra.name, "Jabra SPEAK 410 USB");
        assert!(jabra.long_name.starts_with("Jabra SPEAK 410 USB at usb-"));
        assert_eq!(jabra.usb_id, Some("0b0e:0412".parse().unwrap()));
        assert_eq!(
            (jabra.playback.as_slice(), jabra.capture.as_slice()),
            (&[0][..], &[0][..])
        );
        assert!(jabra.is_speakerphone() && jabra.is_duplex() && !jabra.is_hdmi());
        let choice = pick_audio(&c, None).unwrap();
        assert!(choice.same_card && choice.hardware_echo_cancel);
        let mut profile = crate::profile::builtin("rpi4").unwrap().audio;
        assert!(!profile.hardware_echo_cancel);
        choice.apply(&mut profile);
        assert!(profile.hardware_echo_cancel);
        // A webcam's microphone and the HDMI speaker: nothing cancels the
        // echo but software.
        let choice = pick_audio(&cards("pi5-c920-mic"), None).unwrap();
        assert!(!choice.same_card && !choice.hardware_echo_cancel);
        assert!(c[1].is_hdmi() && !c[1].is_speakerphone());
    }

    #[test]
    fn pi4_with_jabra_uses_it_both_ways() {
        let a = pick_audio(&cards("pi4-jabra410"), None).unwrap();
        assert!(a.same_card);
        assert_eq!(
            a.capture.as_ref().unwrap().plughw(),
            "plughw:CARD=USB,DEV=0"
        );
        assert_eq!(a.playback.hw(), "hw:CARD=USB,DEV=0");
        assert!(a.reasons[0].contains("speakerphone"), "{:?}", a.reasons);
        let mut profile = crate::profile::builtin("rpi4").unwrap().audio;
        a.apply(&mut profile);
        assert_eq!(profile.source.properties["device"], "plughw:CARD=USB,DEV=0");
        assert_eq!(profile.sink.properties["device"], "plughw:CARD=USB,DEV=0");
    }

    #[test]
    fn pi4_with_hdmi_only_plays_on_hdmi_and_has_no_microphone() {
        let a = pick_audio(&cards("pi4-hdmi-only"), None).unwrap();
        assert!(a.capture.is_none());
        assert_eq!(a.playback.card_id, "vc4hdmi0");
        // vc4-hdmi takes IEC958 only: the hdmi: plugin, not plughw.
        assert_eq!(a.playback.alsa_device(), "hdmi:CARD=vc4hdmi0,DEV=0");
        assert!(a.reasons.iter().any(|r| r.contains("no microphone")));
        let mut profile = crate::profile::builtin("rpi4").unwrap().audio;
        a.apply(&mut profile);
        assert!(!profile.source.properties.contains_key("device"));
    }

    #[test]
    fn webcam_microphone_with_hdmi_playback_when_no_speakerphone() {
        let a = pick_audio(&cards("pi5-c920-mic"), None).unwrap();
        assert_eq!(a.capture.as_ref().unwrap().card_id, "C920");
        assert_eq!(a.playback.card_id, "vc4hdmi0");
        assert!(!a.same_card);
        assert!(
            a.reasons[0].contains("HD Pro Webcam C920"),
            "{:?}",
            a.reasons
        );
    }

    #[test]
    fn speakerphone_beats_webcam_mic_and_pc_analog() {
        let a = pick_audio(&cards("x86-anker-c920"), None).unwrap();
        assert_eq!(a.playback.card_id, "PowerConf");
        assert!(a.same_card);
    }

    #[test]
    fn config_pins_a_card_by_usb_id_or_name() {
        let c = cards("x86-anker-c920");
        let pin = |s: &str| s.parse::<AudioPin>().unwrap();
        let a = pick_audio(&c, Some(&pin("usb:046d:082d"))).unwrap();
        assert_eq!(a.capture.unwrap().card_id, "C920");
        assert_eq!(a.playback.card_id, "HDMI");
        let a = pick_audio(&c, Some(&pin("pch"))).unwrap();
        assert_eq!(a.playback.card_id, "PCH");
        let err = pick_audio(&c, Some(&pin("Jabra"))).unwrap_err().to_string();
        assert!(err.contains("\"Jabra\" named in config not found"), "{err}");
        assert!(
            err.contains("PowerConf \"Anker PowerConf\" usb:291a:3301"),
            "{err}"
        );
        assert!("".parse::<AudioPin>().is_err());
    }

    #[test]
    fn no_sound_support_and_malformed_files_are_errors_or_skipped_not_panics() {
        let err = read_cards(&fixture_root("boards/empty")).unwrap_err();
        assert!(err.to_string().contains("proc/asound/cards"), "{err}");
        let c = cards("malformed");
        // The one well-formed card line survives; its bad usbid is ignored.
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].usb_id, None);
        assert_eq!(c[0].playback, [0]);
        let err = pick_audio(&[], None).unwrap_err();
        assert!(matches!(err, AudioError::NoPlayback { .. }));
        for junk in [
            "",
            "--- no soundcards ---",
            " x [a]: b",
            " 0 [",
            " 0 [x]",
            "\u{0}",
        ] {
            assert!(parse_cards(junk).is_empty(), "{junk:?}");
        }
    }
}
