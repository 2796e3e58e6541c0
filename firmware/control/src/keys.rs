//! Remote-control keys: what the room understands, and how Linux key codes map onto it.
//!
//! Every input path (evdev remotes, IR receivers, the TV remote through HDMI-CEC, GPIO
//! buttons) ends in a [`KeyEvent`] carrying a [`RemoteKey`]. The mapping from Linux
//! `KEY_*` codes is a [`KeyMap`]: it has sensible defaults for the cheap RF and IR remotes
//! sold in Vietnam, and can be changed per site from configuration ([`KeyMapConfig`]),
//! where keys are named as in `linux/input-event-codes.h` (`"KEY_ENTER"`) or by number.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A key the room reacts to, independent of where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RemoteKey {
    /// Confirm / select (join the call from the idle screen).
    Ok,
    /// Go back one screen.
    Back,
    /// Go to the home screen.
    Home,
    /// Open the menu.
    Menu,
    /// Toggle the room microphone.
    Mute,
    /// Speaker volume up.
    VolumeUp,
    /// Speaker volume down.
    VolumeDown,
    /// Navigation up.
    Up,
    /// Navigation down.
    Down,
    /// Navigation left.
    Left,
    /// Navigation right.
    Right,
    /// Power / standby toggle.
    Power,
    /// Pick up: join the due meeting.
    Call,
    /// Hang up: leave the call.
    HangUp,
    /// Show information (room name, network).
    Info,
    /// Coloured key (red).
    Red,
    /// Coloured key (green).
    Green,
    /// Coloured key (yellow).
    Yellow,
    /// Coloured key (blue).
    Blue,
    /// Run the pre-meeting self-test now (no default key: bind one in
    /// `[control.keys]`, e.g. `KEY_BLUE = "selftest"`).
    SelfTest,
    /// A number key, 0 to 9.
    Digit(u8),
}

impl RemoteKey {
    /// Every key with a fixed name, in a stable order (digits last).
    pub const NAMED: [RemoteKey; 20] = [
        RemoteKey::Ok,
        RemoteKey::Back,
        RemoteKey::Home,
        RemoteKey::Menu,
        RemoteKey::Mute,
        RemoteKey::VolumeUp,
        RemoteKey::VolumeDown,
        RemoteKey::Up,
        RemoteKey::Down,
        RemoteKey::Left,
        RemoteKey::Right,
        RemoteKey::Power,
        RemoteKey::Call,
        RemoteKey::HangUp,
        RemoteKey::Info,
        RemoteKey::Red,
        RemoteKey::Green,
        RemoteKey::Yellow,
        RemoteKey::Blue,
        RemoteKey::SelfTest,
    ];

    /// The configuration name of this key (`"volume_up"`, `"digit_3"`).
    pub fn name(self) -> String {
        match self {
            RemoteKey::Digit(d) => format!("digit_{d}"),
            other => other.fixed_name().to_owned(),
        }
    }

    fn fixed_name(self) -> &'static str {
        match self {
            RemoteKey::Ok => "ok",
            RemoteKey::Back => "back",
            RemoteKey::Home => "home",
            RemoteKey::Menu => "menu",
            RemoteKey::Mute => "mute",
            RemoteKey::VolumeUp => "volume_up",
            RemoteKey::VolumeDown => "volume_down",
            RemoteKey::Up => "up",
            RemoteKey::Down => "down",
            RemoteKey::Left => "left",
            RemoteKey::Right => "right",
            RemoteKey::Power => "power",
            RemoteKey::Call => "call",
            RemoteKey::HangUp => "hang_up",
            RemoteKey::Info => "info",
            RemoteKey::Red => "red",
            RemoteKey::Green => "green",
            RemoteKey::Yellow => "yellow",
            RemoteKey::Blue => "blue",
            RemoteKey::SelfTest => "selftest",
            RemoteKey::Digit(_) => "digit",
        }
    }
}

impl fmt::Display for RemoteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A name that is not a [`RemoteKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown remote key {0:?} (expected e.g. \"ok\", \"volume_up\", \"digit_0\"..\"digit_9\")")]
pub struct UnknownRemoteKey(pub String);

impl FromStr for RemoteKey {
    type Err = UnknownRemoteKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        if let Some(d) = lower.strip_prefix("digit_") {
            return match d.parse::<u8>() {
                Ok(d) if d <= 9 => Ok(RemoteKey::Digit(d)),
                _ => Err(UnknownRemoteKey(s.to_owned())),
            };
        }
        RemoteKey::NAMED
            .into_iter()
            .find(|k| k.fixed_name() == lower)
            .ok_or_else(|| UnknownRemoteKey(s.to_owned()))
    }
}

impl TryFrom<String> for RemoteKey {
    type Error = UnknownRemoteKey;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RemoteKey> for String {
    fn from(k: RemoteKey) -> String {
        k.name()
    }
}

/// Whether a key went down or is being held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPhase {
    /// The first event of a press.
    Pressed,
    /// Autorepeat while the key is held (evdev value 2, or a repeated CEC press).
    Repeat,
}

/// One key event from any source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyEvent {
    /// The key.
    pub key: RemoteKey,
    /// First press or autorepeat.
    pub phase: KeyPhase,
}

impl KeyEvent {
    /// A first press of `key`.
    pub fn pressed(key: RemoteKey) -> Self {
        KeyEvent {
            key,
            phase: KeyPhase::Pressed,
        }
    }

    /// An autorepeat of `key`.
    pub fn repeat(key: RemoteKey) -> Self {
        KeyEvent {
            key,
            phase: KeyPhase::Repeat,
        }
    }
}

/// Linux key codes from `linux/input-event-codes.h` that matter to the room.
#[allow(missing_docs)]
pub mod code {
    pub const KEY_ESC: u16 = 1;
    pub const KEY_1: u16 = 2;
    pub const KEY_2: u16 = 3;
    pub const KEY_3: u16 = 4;
    pub const KEY_4: u16 = 5;
    pub const KEY_5: u16 = 6;
    pub const KEY_6: u16 = 7;
    pub const KEY_7: u16 = 8;
    pub const KEY_8: u16 = 9;
    pub const KEY_9: u16 = 10;
    pub const KEY_0: u16 = 11;
    pub const KEY_BACKSPACE: u16 = 14;
    pub const KEY_Q: u16 = 16;
    pub const KEY_P: u16 = 25;
    pub const KEY_ENTER: u16 = 28;
    pub const KEY_A: u16 = 30;
    pub const KEY_L: u16 = 38;
    pub const KEY_Z: u16 = 44;
    pub const KEY_M: u16 = 50;
    pub const KEY_SPACE: u16 = 57;
    pub const KEY_KP7: u16 = 71;
    pub const KEY_KP8: u16 = 72;
    pub const KEY_KP9: u16 = 73;
    pub const KEY_KP4: u16 = 75;
    pub const KEY_KP5: u16 = 76;
    pub const KEY_KP6: u16 = 77;
    pub const KEY_KP1: u16 = 79;
    pub const KEY_KP2: u16 = 80;
    pub const KEY_KP3: u16 = 81;
    pub const KEY_KP0: u16 = 82;
    pub const KEY_KPENTER: u16 = 96;
    pub const KEY_HOME: u16 = 102;
    pub const KEY_UP: u16 = 103;
    pub const KEY_LEFT: u16 = 105;
    pub const KEY_RIGHT: u16 = 106;
    pub const KEY_DOWN: u16 = 108;
    pub const KEY_MUTE: u16 = 113;
    pub const KEY_VOLUMEDOWN: u16 = 114;
    pub const KEY_VOLUMEUP: u16 = 115;
    pub const KEY_POWER: u16 = 116;
    pub const KEY_MENU: u16 = 139;
    pub const KEY_SLEEP: u16 = 142;
    pub const KEY_BACK: u16 = 158;
    pub const KEY_PLAYPAUSE: u16 = 164;
    pub const KEY_PHONE: u16 = 169;
    pub const KEY_HOMEPAGE: u16 = 172;
    pub const KEY_EXIT: u16 = 174;
    pub const KEY_MICMUTE: u16 = 248;
    pub const BTN_LEFT: u16 = 0x110;
    pub const KEY_OK: u16 = 0x160;
    pub const KEY_SELECT: u16 = 0x161;
    pub const KEY_POWER2: u16 = 0x164;
    pub const KEY_INFO: u16 = 0x166;
    pub const KEY_RED: u16 = 0x18e;
    pub const KEY_GREEN: u16 = 0x18f;
    pub const KEY_YELLOW: u16 = 0x190;
    pub const KEY_BLUE: u16 = 0x191;
    pub const KEY_PICKUP_PHONE: u16 = 0x1bd;
    pub const KEY_HANGUP_PHONE: u16 = 0x1be;
    pub const KEY_NUMERIC_0: u16 = 0x200;
    pub const KEY_NUMERIC_9: u16 = 0x209;
    /// Highest key code (`KEY_MAX`).
    pub const KEY_MAX: u16 = 0x2ff;
}

/// Names accepted in configuration, with their codes. Digits are handled separately
/// (`KEY_0`..`KEY_9`, `KEY_KP0`..`KEY_KP9`, `KEY_NUMERIC_0`..`KEY_NUMERIC_9`).
const KEY_NAMES: &[(&str, u16)] = &[
    ("KEY_ESC", code::KEY_ESC),
    ("KEY_BACKSPACE", code::KEY_BACKSPACE),
    ("KEY_ENTER", code::KEY_ENTER),
    ("KEY_SPACE", code::KEY_SPACE),
    ("KEY_KPENTER", code::KEY_KPENTER),
    ("KEY_HOME", code::KEY_HOME),
    ("KEY_UP", code::KEY_UP),
    ("KEY_LEFT", code::KEY_LEFT),
    ("KEY_RIGHT", code::KEY_RIGHT),
    ("KEY_DOWN", code::KEY_DOWN),
    ("KEY_MUTE", code::KEY_MUTE),
    ("KEY_VOLUMEDOWN", code::KEY_VOLUMEDOWN),
    ("KEY_VOLUMEUP", code::KEY_VOLUMEUP),
    ("KEY_POWER", code::KEY_POWER),
    ("KEY_MENU", code::KEY_MENU),
    ("KEY_SLEEP", code::KEY_SLEEP),
    ("KEY_BACK", code::KEY_BACK),
    ("KEY_PLAYPAUSE", code::KEY_PLAYPAUSE),
    ("KEY_PHONE", code::KEY_PHONE),
    ("KEY_HOMEPAGE", code::KEY_HOMEPAGE),
    ("KEY_EXIT", code::KEY_EXIT),
    ("KEY_MICMUTE", code::KEY_MICMUTE),
    ("BTN_LEFT", code::BTN_LEFT),
    ("KEY_OK", code::KEY_OK),
    ("KEY_SELECT", code::KEY_SELECT),
    ("KEY_POWER2", code::KEY_POWER2),
    ("KEY_INFO", code::KEY_INFO),
    ("KEY_RED", code::KEY_RED),
    ("KEY_GREEN", code::KEY_GREEN),
    ("KEY_YELLOW", code::KEY_YELLOW),
    ("KEY_BLUE", code::KEY_BLUE),
    ("KEY_PICKUP_PHONE", code::KEY_PICKUP_PHONE),
    ("KEY_HANGUP_PHONE", code::KEY_HANGUP_PHONE),
];

const KP_DIGITS: [u16; 10] = [
    code::KEY_KP0,
    code::KEY_KP1,
    code::KEY_KP2,
    code::KEY_KP3,
    code::KEY_KP4,
    code::KEY_KP5,
    code::KEY_KP6,
    code::KEY_KP7,
    code::KEY_KP8,
    code::KEY_KP9,
];

/// The code of a top-row digit key (`KEY_0`..`KEY_9`).
fn top_row_digit(d: u8) -> u16 {
    if d == 0 {
        code::KEY_0
    } else {
        code::KEY_1 + u16::from(d) - 1
    }
}

/// Looks up a Linux key code by its `input-event-codes.h` name, or parses a number
/// (`"352"`, `"0x160"`).
pub fn key_code_from_name(name: &str) -> Option<u16> {
    let name = name.trim();
    if let Some(hex) = name.strip_prefix("0x").or_else(|| name.strip_prefix("0X")) {
        return u16::from_str_radix(hex, 16)
            .ok()
            .filter(|c| *c <= code::KEY_MAX);
    }
    if let Ok(n) = name.parse::<u16>() {
        return (n <= code::KEY_MAX).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    if let Some(&(_, c)) = KEY_NAMES.iter().find(|(n, _)| *n == upper) {
        return Some(c);
    }
    let digit = |rest: &str| rest.parse::<u8>().ok().filter(|d| *d <= 9);
    // Function keys: many RF remotes send them for their extra buttons.
    if let Some(n) = upper
        .strip_prefix("KEY_F")
        .and_then(|r| r.parse::<u16>().ok())
        .filter(|n| (1..=12).contains(n))
    {
        return Some(function_key(n));
    }
    if let Some(d) = upper.strip_prefix("KEY_NUMERIC_").and_then(digit) {
        return Some(code::KEY_NUMERIC_0 + u16::from(d));
    }
    if let Some(d) = upper.strip_prefix("KEY_KP").and_then(digit) {
        return Some(KP_DIGITS[usize::from(d)]);
    }
    if let Some(d) = upper.strip_prefix("KEY_").and_then(digit) {
        return Some(top_row_digit(d));
    }
    None
}

/// The code of `KEY_F<n>`, `n` from 1 to 12.
fn function_key(n: u16) -> u16 {
    match n {
        1..=10 => 58 + n,
        _ => 87 + (n - 11),
    }
}

/// The `input-event-codes.h` name of a code, when it is one this crate knows.
pub fn key_name(c: u16) -> Option<String> {
    if let Some(n) = (1..=12).find(|n| function_key(*n) == c) {
        return Some(format!("KEY_F{n}"));
    }
    if let Some((n, _)) = KEY_NAMES.iter().find(|(_, k)| *k == c) {
        return Some((*n).to_owned());
    }
    for d in 0..=9u8 {
        if c == top_row_digit(d) {
            return Some(format!("KEY_{d}"));
        }
        if c == KP_DIGITS[usize::from(d)] {
            return Some(format!("KEY_KP{d}"));
        }
        if c == code::KEY_NUMERIC_0 + u16::from(d) {
            return Some(format!("KEY_NUMERIC_{d}"));
        }
    }
    None
}

/// Per-site key mapping as written in the room's configuration file.
///
/// ```toml
/// use_defaults = true
/// unbind = ["KEY_POWER"]          # this remote's power key is too easy to hit
/// [bind]
/// "59" = "call"                   # KEY_F1, by number
/// KEY_OK = "menu"                 # names from input-event-codes.h; unknown names are rejected
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyMapConfig {
    /// Start from [`KeyMap::default`] (true) or from an empty map.
    pub use_defaults: bool,
    /// Linux key name (or number) → room key.
    pub bind: BTreeMap<String, RemoteKey>,
    /// Linux key names (or numbers) to ignore.
    pub unbind: Vec<String>,
}

impl Default for KeyMapConfig {
    fn default() -> Self {
        KeyMapConfig {
            use_defaults: true,
            bind: BTreeMap::new(),
            unbind: Vec::new(),
        }
    }
}

/// A [`KeyMapConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyMapError {
    /// A key name that is neither a known `KEY_*` name nor a number up to `KEY_MAX`.
    #[error("unknown Linux key name {0:?}")]
    UnknownKeyName(String),
}

/// Maps Linux key codes to [`RemoteKey`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMap {
    map: BTreeMap<u16, RemoteKey>,
}

impl Default for KeyMap {
    /// Covers USB RF remotes (which send keyboard codes such as `KEY_ENTER`, `KEY_ESC`,
    /// `KEY_HOMEPAGE`), rc-core IR keymaps (`KEY_OK`, `KEY_BACK`, `KEY_NUMERIC_*`) and
    /// air-mouse remotes.
    fn default() -> Self {
        use RemoteKey as K;
        use code::*;
        let mut map = BTreeMap::new();
        let pairs = [
            (KEY_ENTER, K::Ok),
            (KEY_KPENTER, K::Ok),
            (KEY_OK, K::Ok),
            (KEY_SELECT, K::Ok),
            (BTN_LEFT, K::Ok),
            (KEY_BACK, K::Back),
            (KEY_ESC, K::Back),
            (KEY_EXIT, K::Back),
            (KEY_BACKSPACE, K::Back),
            (KEY_HOMEPAGE, K::Home),
            (KEY_HOME, K::Home),
            (KEY_MENU, K::Menu),
            (KEY_MUTE, K::Mute),
            (KEY_MICMUTE, K::Mute),
            (KEY_VOLUMEUP, K::VolumeUp),
            (KEY_VOLUMEDOWN, K::VolumeDown),
            (KEY_UP, K::Up),
            (KEY_DOWN, K::Down),
            (KEY_LEFT, K::Left),
            (KEY_RIGHT, K::Right),
            (KEY_POWER, K::Power),
            (KEY_POWER2, K::Power),
            (KEY_SLEEP, K::Power),
            (KEY_PHONE, K::Call),
            (KEY_PICKUP_PHONE, K::Call),
            (KEY_HANGUP_PHONE, K::HangUp),
            (KEY_INFO, K::Info),
            (KEY_RED, K::Red),
            (KEY_GREEN, K::Green),
            (KEY_YELLOW, K::Yellow),
            (KEY_BLUE, K::Blue),
        ];
        map.extend(pairs);
        for d in 0..=9u8 {
            map.insert(top_row_digit(d), K::Digit(d));
            map.insert(KP_DIGITS[usize::from(d)], K::Digit(d));
            map.insert(KEY_NUMERIC_0 + u16::from(d), K::Digit(d));
        }
        KeyMap { map }
    }
}

impl KeyMap {
    /// A map with no bindings.
    pub fn empty() -> Self {
        KeyMap {
            map: BTreeMap::new(),
        }
    }

    /// Builds the map a configuration describes.
    pub fn from_config(config: &KeyMapConfig) -> Result<Self, KeyMapError> {
        let mut km = if config.use_defaults {
            KeyMap::default()
        } else {
            KeyMap::empty()
        };
        let resolve = |n: &str| {
            key_code_from_name(n).ok_or_else(|| KeyMapError::UnknownKeyName(n.to_owned()))
        };
        for name in &config.unbind {
            km.map.remove(&resolve(name)?);
        }
        for (name, key) in &config.bind {
            km.map.insert(resolve(name)?, *key);
        }
        Ok(km)
    }

    /// Binds a Linux key code, replacing any earlier binding.
    pub fn bind(&mut self, code: u16, key: RemoteKey) {
        self.map.insert(code, key);
    }

    /// Forgets the binding of a Linux key code: the key is ignored.
    pub fn unbind(&mut self, code: u16) {
        self.map.remove(&code);
    }

    /// The room key for a Linux key code, if bound.
    pub fn lookup(&self, code: u16) -> Option<RemoteKey> {
        self.map.get(&code).copied()
    }

    /// All bound codes, in ascending order.
    pub fn codes(&self) -> impl Iterator<Item = u16> + '_ {
        self.map.keys().copied()
    }
}

/// A source of room keys: an evdev remote, the TV remote through CEC, or a fake.
///
/// The daemon holds one of these per input path and `select!`s over them; the sim
/// board and the tests use [`FakeRemote`].
pub trait RemoteSource: Send {
    /// The next key event; `None` once the source has shut down for good.
    fn next_key(&mut self) -> impl std::future::Future<Output = Option<KeyEvent>> + Send;
}

/// A [`RemoteSource`] fed by hand through a [`FakeRemoteHandle`].
#[derive(Debug)]
pub struct FakeRemote {
    rx: tokio::sync::mpsc::UnboundedReceiver<KeyEvent>,
}

/// Pushes keys into its [`FakeRemote`]; dropping every handle ends the source.
#[derive(Debug, Clone)]
pub struct FakeRemoteHandle {
    tx: tokio::sync::mpsc::UnboundedSender<KeyEvent>,
}

impl FakeRemote {
    /// A fake remote and the handle that drives it.
    pub fn new() -> (FakeRemote, FakeRemoteHandle) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (FakeRemote { rx }, FakeRemoteHandle { tx })
    }
}

impl FakeRemoteHandle {
    /// Sends a first press of `key`. Returns false if the remote was dropped.
    pub fn press(&self, key: RemoteKey) -> bool {
        self.send(KeyEvent::pressed(key))
    }

    /// Sends any event. Returns false if the remote was dropped.
    pub fn send(&self, event: KeyEvent) -> bool {
        self.tx.send(event).is_ok()
    }
}

impl RemoteSource for FakeRemote {
    fn next_key(&mut self) -> impl std::future::Future<Output = Option<KeyEvent>> + Send {
        self.rx.recv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_map_covers_rf_and_ir_remotes() {
        let km = KeyMap::default();
        assert_eq!(km.lookup(28), Some(RemoteKey::Ok)); // KEY_ENTER
        assert_eq!(km.lookup(0x160), Some(RemoteKey::Ok)); // KEY_OK
        assert_eq!(km.lookup(0x161), Some(RemoteKey::Ok)); // KEY_SELECT
        assert_eq!(km.lookup(113), Some(RemoteKey::Mute));
        assert_eq!(km.lookup(115), Some(RemoteKey::VolumeUp));
        assert_eq!(km.lookup(114), Some(RemoteKey::VolumeDown));
        assert_eq!(km.lookup(158), Some(RemoteKey::Back));
        assert_eq!(km.lookup(1), Some(RemoteKey::Back)); // KEY_ESC
        assert_eq!(km.lookup(172), Some(RemoteKey::Home));
        assert_eq!(km.lookup(102), Some(RemoteKey::Home));
        assert_eq!(km.lookup(11), Some(RemoteKey::Digit(0)));
        assert_eq!(km.lookup(2), Some(RemoteKey::Digit(1)));
        assert_eq!(km.lookup(0x205), Some(RemoteKey::Digit(5)));
        assert_eq!(km.lookup(code::KEY_KP7), Some(RemoteKey::Digit(7)));
        assert_eq!(km.lookup(code::KEY_A), None);
    }

    #[test]
    fn key_names_resolve_both_ways() {
        assert_eq!(key_code_from_name("KEY_ENTER"), Some(28));
        assert_eq!(key_code_from_name("key_ok"), Some(0x160));
        assert_eq!(key_code_from_name("0x161"), Some(0x161));
        assert_eq!(key_code_from_name("59"), Some(59));
        assert_eq!(key_code_from_name("KEY_7"), Some(8));
        assert_eq!(key_code_from_name("KEY_NUMERIC_3"), Some(0x203));
        assert_eq!(key_code_from_name("KEY_KP0"), Some(82));
        assert_eq!(key_code_from_name("KEY_F1"), Some(59));
        assert_eq!(key_code_from_name("key_f10"), Some(68));
        assert_eq!(key_code_from_name("KEY_F11"), Some(87));
        assert_eq!(key_code_from_name("KEY_F12"), Some(88));
        assert_eq!(key_code_from_name("KEY_F0"), None);
        assert_eq!(key_code_from_name("KEY_F13"), None);
        assert_eq!(key_name(59).as_deref(), Some("KEY_F1"));
        assert_eq!(key_name(88).as_deref(), Some("KEY_F12"));
        assert_eq!(key_code_from_name("KEY_NOPE"), None);
        assert_eq!(key_code_from_name("KEY_10"), None);
        assert_eq!(key_code_from_name("0x300"), None);
        assert_eq!(key_code_from_name("99999"), None);
        assert_eq!(key_code_from_name(""), None);
        for c in KeyMap::default().codes() {
            let name = key_name(c).expect("every default code has a name");
            assert_eq!(key_code_from_name(&name), Some(c), "{name}");
        }
    }

    #[test]
    fn remote_key_names_round_trip() {
        for k in RemoteKey::NAMED
            .into_iter()
            .chain((0..=9).map(RemoteKey::Digit))
        {
            assert_eq!(k.name().parse::<RemoteKey>(), Ok(k));
        }
        assert!("digit_10".parse::<RemoteKey>().is_err());
        assert!("digit_".parse::<RemoteKey>().is_err());
        assert!("launch".parse::<RemoteKey>().is_err());
    }

    #[test]
    fn config_binds_and_unbinds() {
        let cfg: KeyMapConfig = toml::from_str(
            r#"
            unbind = ["KEY_POWER", "KEY_ESC"]
            [bind]
            "59" = "call"
            "0x160" = "menu"
            KEY_RED = "hang_up"
            "#,
        )
        .unwrap();
        let km = KeyMap::from_config(&cfg).unwrap();
        assert_eq!(km.lookup(code::KEY_POWER), None);
        assert_eq!(km.lookup(code::KEY_ESC), None);
        assert_eq!(km.lookup(59), Some(RemoteKey::Call));
        assert_eq!(km.lookup(code::KEY_OK), Some(RemoteKey::Menu));
        assert_eq!(km.lookup(code::KEY_RED), Some(RemoteKey::HangUp));
        assert_eq!(km.lookup(code::KEY_ENTER), Some(RemoteKey::Ok));
    }

    #[test]
    fn config_rejects_unknown_names() {
        let mut cfg = KeyMapConfig::default();
        cfg.bind.insert("KEY_F13".into(), RemoteKey::Call);
        assert_eq!(
            KeyMap::from_config(&cfg),
            Err(KeyMapError::UnknownKeyName("KEY_F13".into()))
        );
        let bad: Result<KeyMapConfig, _> = toml::from_str("[bind]\nKEY_OK = \"launch\"\n");
        assert!(bad.is_err());
        let bad: Result<KeyMapConfig, _> = toml::from_str("colour = 1\n");
        assert!(bad.is_err());
    }

    #[test]
    fn config_without_defaults_is_only_what_is_bound() {
        let cfg: KeyMapConfig =
            toml::from_str("use_defaults = false\n[bind]\nKEY_ENTER = \"ok\"\n").unwrap();
        let km = KeyMap::from_config(&cfg).unwrap();
        assert_eq!(km.codes().collect::<Vec<_>>(), vec![code::KEY_ENTER]);
    }

    #[tokio::test]
    async fn fake_remote_delivers_in_order_and_ends() {
        let (mut remote, handle) = FakeRemote::new();
        assert!(handle.press(RemoteKey::Ok));
        assert!(handle.send(KeyEvent::repeat(RemoteKey::VolumeUp)));
        drop(handle);
        assert_eq!(
            remote.next_key().await,
            Some(KeyEvent::pressed(RemoteKey::Ok))
        );
        assert_eq!(
            remote.next_key().await,
            Some(KeyEvent::repeat(RemoteKey::VolumeUp))
        );
        assert_eq!(remote.next_key().await, None);
    }
}
