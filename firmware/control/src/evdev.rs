//! Remote controls as Linux input devices (evdev): USB RF remotes and IR receivers.
//!
//! Three layers, from pure to I/O. [`InputEvent`] / [`EventDecoder`] / [`KeyDecoder`]
//! turn the byte stream read from `/dev/input/eventN` into [`KeyEvent`]s; they never
//! panic on short or garbage input and handle both `struct input_event` layouts (24 bytes
//! on 64-bit userspace, 16 bytes on 32-bit ARM). [`KeyBitmap`], [`DeviceInfo`] and
//! [`DeviceFilter`] read a device's sysfs description and decide whether it is a remote
//! (has OK/arrow/volume keys, lacks most letter keys) rather than a keyboard. Finally
//! [`EvdevRemote`] scans the device directory, opens every remote non-blocking, grabs it
//! (so `KEY_POWER` does not reach systemd-logind), reads it through tokio's `AsyncFd`,
//! drops it on unplug (`ENODEV`) and picks it up again on replug by rescanning.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::keys::{KeyEvent, KeyMap, RemoteSource, code};

/// Event type `EV_SYN`.
pub const EV_SYN: u16 = 0x00;
/// Event type `EV_KEY`.
pub const EV_KEY: u16 = 0x01;
/// Event type `EV_MSC`.
pub const EV_MSC: u16 = 0x04;
/// `EV_SYN` code: end of a packet of events.
pub const SYN_REPORT: u16 = 0;
/// `EV_SYN` code: the kernel's buffer overflowed; events until the next `SYN_REPORT` are
/// incomplete and must be dropped.
pub const SYN_DROPPED: u16 = 3;
/// `EV_MSC` code carrying the raw scan code.
pub const MSC_SCAN: u16 = 4;

/// Which `struct input_event` layout the kernel uses for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventLayout {
    /// 64-bit userspace: `time` is two 64-bit longs, 24-byte records; sysfs bitmaps use
    /// 64-bit words.
    Abi64,
    /// 32-bit userspace (armhf): two 32-bit longs, 16-byte records; 32-bit bitmap words.
    Abi32,
}

impl EventLayout {
    /// The layout of the running process.
    pub const fn native() -> Self {
        if size_of::<libc::c_long>() == 8 {
            EventLayout::Abi64
        } else {
            EventLayout::Abi32
        }
    }

    /// Size of one `struct input_event`.
    pub const fn record_size(self) -> usize {
        match self {
            EventLayout::Abi64 => 24,
            EventLayout::Abi32 => 16,
        }
    }

    /// Width of one word in sysfs capability bitmaps (`sizeof(long)` in bits).
    pub const fn word_bits(self) -> u32 {
        match self {
            EventLayout::Abi64 => 64,
            EventLayout::Abi32 => 32,
        }
    }

    const fn long_size(self) -> usize {
        self.record_size() / 2 - 4
    }
}

/// Errors from reading evdev devices and their sysfs descriptions.
#[derive(Debug, thiserror::Error)]
pub enum EvdevError {
    /// A record of the wrong size was handed to [`InputEvent::parse`].
    #[error("input_event record is {got} bytes, expected {expected}")]
    BadRecordSize {
        /// Bytes given.
        got: usize,
        /// Bytes expected for the layout.
        expected: usize,
    },
    /// A capability bitmap that is not space-separated hex words.
    #[error("malformed capability bitmap {text:?}")]
    BadBitmap {
        /// The offending text (truncated).
        text: String,
    },
    /// A sysfs attribute that is not what the kernel writes.
    #[error("malformed sysfs attribute {path}: {text:?}")]
    BadAttribute {
        /// The file.
        path: PathBuf,
        /// Its content (truncated).
        text: String,
    },
    /// A file could not be read or opened.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

/// One `struct input_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InputEvent {
    /// Timestamp seconds.
    pub sec: i64,
    /// Timestamp microseconds.
    pub usec: i64,
    /// Event type (`EV_KEY`, ...).
    pub kind: u16,
    /// Event code (`KEY_ENTER`, ...).
    pub code: u16,
    /// Value (for keys: 0 release, 1 press, 2 autorepeat).
    pub value: i32,
}

impl InputEvent {
    /// Parses exactly one record in native byte order.
    pub fn parse(bytes: &[u8], layout: EventLayout) -> Result<Self, EvdevError> {
        let expected = layout.record_size();
        if bytes.len() != expected {
            return Err(EvdevError::BadRecordSize {
                got: bytes.len(),
                expected,
            });
        }
        let l = layout.long_size();
        let long = |b: &[u8]| -> i64 {
            match l {
                8 => i64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
                _ => i64::from(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            }
        };
        let t = 2 * l;
        Ok(InputEvent {
            sec: long(&bytes[0..l]),
            usec: long(&bytes[l..t]),
            kind: u16::from_ne_bytes([bytes[t], bytes[t + 1]]),
            code: u16::from_ne_bytes([bytes[t + 2], bytes[t + 3]]),
            value: i32::from_ne_bytes([bytes[t + 4], bytes[t + 5], bytes[t + 6], bytes[t + 7]]),
        })
    }

    /// Encodes the record as the kernel would (used to write fixtures and fakes).
    /// On [`EventLayout::Abi32`] the time fields are truncated to 32 bits.
    pub fn to_bytes(&self, layout: EventLayout) -> Vec<u8> {
        let mut out = Vec::with_capacity(layout.record_size());
        match layout {
            EventLayout::Abi64 => {
                out.extend_from_slice(&self.sec.to_ne_bytes());
                out.extend_from_slice(&self.usec.to_ne_bytes());
            }
            EventLayout::Abi32 => {
                out.extend_from_slice(&(self.sec as i32).to_ne_bytes());
                out.extend_from_slice(&(self.usec as i32).to_ne_bytes());
            }
        }
        out.extend_from_slice(&self.kind.to_ne_bytes());
        out.extend_from_slice(&self.code.to_ne_bytes());
        out.extend_from_slice(&self.value.to_ne_bytes());
        out
    }
}

/// Reassembles `input_event` records from reads of any size.
#[derive(Debug, Clone)]
pub struct EventDecoder {
    layout: EventLayout,
    pending: Vec<u8>,
}

impl EventDecoder {
    /// A decoder for `layout`.
    pub fn new(layout: EventLayout) -> Self {
        EventDecoder {
            layout,
            pending: Vec::new(),
        }
    }

    /// Feeds bytes; returns every complete record. A trailing partial record is kept for
    /// the next call.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<InputEvent> {
        self.pending.extend_from_slice(bytes);
        let size = self.layout.record_size();
        let whole = self.pending.len() / size * size;
        let events = self.pending[..whole]
            .chunks_exact(size)
            .filter_map(|rec| InputEvent::parse(rec, self.layout).ok())
            .collect();
        self.pending.drain(..whole);
        events
    }

    /// Bytes of an incomplete record waiting for more input.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }
}

/// Turns an evdev byte stream into room [`KeyEvent`]s through a [`KeyMap`].
///
/// Key presses (value 1) and autorepeats (value 2) of mapped codes become events;
/// releases, unmapped codes, `EV_SYN`, `EV_MSC` and everything else are ignored. After
/// `SYN_DROPPED` all events up to the next `SYN_REPORT` are discarded, as the evdev
/// protocol requires.
#[derive(Debug, Clone)]
pub struct KeyDecoder {
    events: EventDecoder,
    keymap: KeyMap,
    dropping: bool,
}

impl KeyDecoder {
    /// A decoder for `layout` using `keymap`.
    pub fn new(layout: EventLayout, keymap: KeyMap) -> Self {
        KeyDecoder {
            events: EventDecoder::new(layout),
            keymap,
            dropping: false,
        }
    }

    /// Feeds bytes; returns the key events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<KeyEvent> {
        let mut keys = Vec::new();
        for ev in self.events.push(bytes) {
            if let Some(k) = self.handle(&ev) {
                keys.push(k);
            }
        }
        keys
    }

    /// Handles one already-parsed event.
    pub fn handle(&mut self, ev: &InputEvent) -> Option<KeyEvent> {
        match (ev.kind, ev.code) {
            (EV_SYN, SYN_DROPPED) => {
                self.dropping = true;
                None
            }
            (EV_SYN, SYN_REPORT) => {
                self.dropping = false;
                None
            }
            (EV_KEY, c) if !self.dropping => {
                let key = self.keymap.lookup(c);
                if key.is_none() && ev.value == 1 {
                    tracing::debug!(code = c, "unmapped remote key");
                }
                match ev.value {
                    1 => key.map(KeyEvent::pressed),
                    2 => key.map(KeyEvent::repeat),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// A key capability bitmap (`capabilities/key` in sysfs): bit `n` set means the device
/// can send key code `n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyBitmap {
    /// 64-bit chunks, least significant first, whatever the source word size.
    bits: Vec<u64>,
}

/// Upper bound on the words accepted from sysfs: `KEY_CNT` bits in 32-bit words is 24.
const MAX_BITMAP_WORDS: usize = 64;

impl KeyBitmap {
    /// Parses the kernel's format: hex words of `word_bits` (the kernel's `long`), most
    /// significant first, separated by spaces, leading zero words omitted.
    pub fn parse(text: &str, word_bits: u32) -> Result<Self, EvdevError> {
        let bad = || EvdevError::BadBitmap {
            text: truncated(text),
        };
        if word_bits != 32 && word_bits != 64 {
            return Err(bad());
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() || words.len() > MAX_BITMAP_WORDS {
            return Err(bad());
        }
        let mut map = KeyBitmap::default();
        for (i, w) in words.iter().rev().enumerate() {
            let v = u64::from_str_radix(w, 16).map_err(|_| bad())?;
            if word_bits == 32 && v > u64::from(u32::MAX) {
                return Err(bad());
            }
            for bit in 0..word_bits {
                if v & (1u64 << bit) != 0 {
                    map.insert_bit(i * word_bits as usize + bit as usize);
                }
            }
        }
        Ok(map)
    }

    /// A bitmap with exactly these codes.
    pub fn from_codes(codes: impl IntoIterator<Item = u16>) -> Self {
        let mut map = KeyBitmap::default();
        for c in codes {
            map.insert_bit(usize::from(c));
        }
        map
    }

    fn insert_bit(&mut self, bit: usize) {
        let word = bit / 64;
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1 << (bit % 64);
    }

    /// Whether the device can send `code`.
    pub fn contains(&self, code: u16) -> bool {
        let bit = usize::from(code);
        self.bits
            .get(bit / 64)
            .is_some_and(|w| w & (1 << (bit % 64)) != 0)
    }

    /// How many of `codes` the device can send.
    pub fn count_of(&self, codes: &[u16]) -> usize {
        codes.iter().filter(|c| self.contains(**c)).count()
    }

    /// Formats the bitmap as the kernel does for `word_bits`-bit longs (for fixtures).
    pub fn to_sysfs(&self, word_bits: u32) -> String {
        let word_bits = if word_bits == 32 { 32 } else { 64 };
        let mask = if word_bits == 32 {
            u64::from(u32::MAX)
        } else {
            u64::MAX
        };
        let mut words: Vec<u64> = Vec::new();
        for chunk in &self.bits {
            words.push(chunk & mask);
            if word_bits == 32 {
                words.push(chunk >> 32);
            }
        }
        while words.len() > 1 && words.last() == Some(&0) {
            words.pop();
        }
        if words.is_empty() {
            words.push(0);
        }
        let parts: Vec<String> = words.iter().rev().map(|w| format!("{w:x}")).collect();
        parts.join(" ")
    }
}

/// The 26 letter keys, used to tell a keyboard from a remote.
pub const LETTER_KEYS: [u16; 26] = [
    30, 48, 46, 32, 18, 33, 34, 35, 23, 36, 37, 38, 50, 49, 24, 25, 16, 19, 31, 20, 22, 47, 17, 45,
    21, 44,
];

/// Keys that mark a device as able to drive the room: OK/enter, arrows, volume, mute.
pub const REMOTE_KEYS: [u16; 10] = [
    code::KEY_OK,
    code::KEY_ENTER,
    code::KEY_SELECT,
    code::KEY_UP,
    code::KEY_DOWN,
    code::KEY_LEFT,
    code::KEY_RIGHT,
    code::KEY_VOLUMEUP,
    code::KEY_VOLUMEDOWN,
    code::KEY_MUTE,
];

/// What sysfs says about an input device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `device/name`, e.g. `"gpio_ir_recv"`.
    pub name: String,
    /// `device/id/bustype` (3 = USB, 0x19 = host).
    pub bustype: u16,
    /// `device/id/vendor`.
    pub vendor: u16,
    /// `device/id/product`.
    pub product: u16,
    /// `device/capabilities/key`.
    pub keys: KeyBitmap,
}

fn read_attr(path: &Path) -> Result<String, EvdevError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| EvdevError::Io {
            path: path.to_owned(),
            source,
        })
}

fn read_hex_attr(path: &Path) -> Result<u16, EvdevError> {
    let text = read_attr(path)?;
    u16::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|_| EvdevError::BadAttribute {
        path: path.to_owned(),
        text: truncated(&text),
    })
}

impl DeviceInfo {
    /// Reads `class_dir/device/...`, where `class_dir` is `/sys/class/input/eventN`.
    pub fn read(class_dir: &Path, layout: EventLayout) -> Result<Self, EvdevError> {
        let dev = class_dir.join("device");
        let caps_path = dev.join("capabilities/key");
        let caps = read_attr(&caps_path)?;
        let keys =
            KeyBitmap::parse(&caps, layout.word_bits()).map_err(|_| EvdevError::BadAttribute {
                path: caps_path.clone(),
                text: truncated(&caps),
            })?;
        Ok(DeviceInfo {
            name: read_attr(&dev.join("name"))?,
            bustype: read_hex_attr(&dev.join("id/bustype"))?,
            vendor: read_hex_attr(&dev.join("id/vendor"))?,
            product: read_hex_attr(&dev.join("id/product"))?,
            keys,
        })
    }
}

/// Matches devices by USB id and/or name. Empty fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceMatch {
    /// Vendor id.
    pub vendor: Option<u16>,
    /// Product id.
    pub product: Option<u16>,
    /// Substring of the device name (case-insensitive).
    pub name_contains: Option<String>,
}

impl DeviceMatch {
    /// Whether `info` matches.
    pub fn matches(&self, info: &DeviceInfo) -> bool {
        self.vendor.is_none_or(|v| v == info.vendor)
            && self.product.is_none_or(|p| p == info.product)
            && self.name_contains.as_ref().is_none_or(|n| {
                info.name
                    .to_ascii_lowercase()
                    .contains(&n.to_ascii_lowercase())
            })
    }
}

/// Which input devices to treat as remotes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceFilter {
    /// A device with more letter keys than this is a keyboard.
    pub max_letter_keys: usize,
    /// Always accept these (RF remotes whose dongle claims a full keyboard).
    pub allow: Vec<DeviceMatch>,
    /// Never accept these.
    pub deny: Vec<DeviceMatch>,
}

impl Default for DeviceFilter {
    fn default() -> Self {
        DeviceFilter {
            max_letter_keys: 8,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

/// Why a device is not used as a remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Matched a `deny` entry.
    Denied,
    /// Has this many letter keys: a keyboard.
    FullKeyboard {
        /// Letter keys present.
        letters: usize,
    },
    /// Has none of [`REMOTE_KEYS`] (power buttons, lid switches, mice).
    NoRemoteKeys,
}

/// The filter's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Use it.
    Remote,
    /// Leave it alone.
    Rejected(RejectReason),
}

impl DeviceFilter {
    /// Decides whether `info` is a remote.
    pub fn classify(&self, info: &DeviceInfo) -> Verdict {
        if self.deny.iter().any(|m| m.matches(info)) {
            return Verdict::Rejected(RejectReason::Denied);
        }
        if self.allow.iter().any(|m| m.matches(info)) {
            return Verdict::Remote;
        }
        let letters = info.keys.count_of(&LETTER_KEYS);
        if letters > self.max_letter_keys {
            return Verdict::Rejected(RejectReason::FullKeyboard { letters });
        }
        if info.keys.count_of(&REMOTE_KEYS) == 0 {
            return Verdict::Rejected(RejectReason::NoRemoteKeys);
        }
        Verdict::Remote
    }
}

/// One `eventN` node found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedDevice {
    /// `/dev/input/eventN`.
    pub node: PathBuf,
    /// Its sysfs description.
    pub info: DeviceInfo,
    /// The filter's decision.
    pub verdict: Verdict,
}

fn event_number(name: &str) -> Option<u32> {
    name.strip_prefix("event")?.parse().ok()
}

/// Lists `dev_root/eventN` nodes in order, with their sysfs description from
/// `sys_root/eventN` (normally `/dev/input` and `/sys/class/input`). Nodes whose sysfs
/// entry is missing or malformed are skipped with a log line: they may be mid-unplug.
pub fn scan(
    dev_root: &Path,
    sys_root: &Path,
    layout: EventLayout,
    filter: &DeviceFilter,
) -> Result<Vec<ScannedDevice>, EvdevError> {
    let entries = std::fs::read_dir(dev_root).map_err(|source| EvdevError::Io {
        path: dev_root.to_owned(),
        source,
    })?;
    let mut found: Vec<(u32, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((event_number(&name)?, name))
        })
        .collect();
    found.sort();
    let mut out = Vec::new();
    for (_, name) in found {
        match DeviceInfo::read(&sys_root.join(&name), layout) {
            Ok(info) => out.push(ScannedDevice {
                node: dev_root.join(&name),
                verdict: filter.classify(&info),
                info,
            }),
            Err(e) => tracing::debug!(device = %name, error = %e, "skipping input device"),
        }
    }
    Ok(out)
}

/// Settings for [`EvdevRemote`].
#[derive(Debug, Clone)]
pub struct EvdevConfig {
    /// Where the device nodes are (`/dev/input`).
    pub dev_root: PathBuf,
    /// Where their sysfs entries are (`/sys/class/input`).
    pub sys_root: PathBuf,
    /// The `input_event` layout; [`EventLayout::native`] on real boards.
    pub layout: EventLayout,
    /// How often to look for new devices.
    pub rescan_every: Duration,
    /// Which devices are remotes.
    pub filter: DeviceFilter,
    /// Key codes to room keys.
    pub keymap: KeyMap,
    /// Take the device exclusively (`EVIOCGRAB`).
    pub grab: bool,
}

impl Default for EvdevConfig {
    fn default() -> Self {
        EvdevConfig {
            dev_root: PathBuf::from("/dev/input"),
            sys_root: PathBuf::from("/sys/class/input"),
            layout: EventLayout::native(),
            rescan_every: Duration::from_secs(2),
            filter: DeviceFilter::default(),
            keymap: KeyMap::default(),
            grab: true,
        }
    }
}

/// Keys from every remote-like evdev device, surviving unplug and replug.
///
/// Runs a background task on the current tokio runtime; dropping the `EvdevRemote`
/// stops it and closes the devices.
#[derive(Debug)]
pub struct EvdevRemote {
    rx: mpsc::Receiver<KeyEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl EvdevRemote {
    /// Starts scanning and reading. Must be called within a tokio runtime.
    pub fn spawn(config: EvdevConfig) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(manage(config, tx));
        EvdevRemote { rx, task }
    }
}

impl Drop for EvdevRemote {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RemoteSource for EvdevRemote {
    fn next_key(&mut self) -> impl std::future::Future<Output = Option<KeyEvent>> + Send {
        self.rx.recv()
    }
}

fn open_device(node: &Path, grab: bool) -> io::Result<AsyncFd<File>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(node)?;
    if grab && let Err(e) = crate::sys::eviocgrab(&file, true) {
        tracing::warn!(device = %node.display(), error = %e, "cannot grab remote; keys also reach the console");
    }
    crate::sys::async_fd(file)
}

/// The scanning side of [`EvdevRemote`]: which nodes are open, which were reported.
struct Manager {
    config: EvdevConfig,
    tx: mpsc::Sender<KeyEvent>,
    // Readers live in the JoinSet: dropping the manager (task abort) aborts them.
    readers: JoinSet<()>,
    open: HashMap<tokio::task::Id, PathBuf>,
    /// Nodes already logged as rejected or unopenable, so a 2 s rescan does not flood
    /// the journal.
    reported: HashSet<PathBuf>,
    /// The last scan error logged (a board without `/dev/input` logs it once).
    scan_error: Option<String>,
}

impl Manager {
    fn rescan(&mut self) {
        let cfg = &self.config;
        let devices = match scan(&cfg.dev_root, &cfg.sys_root, cfg.layout, &cfg.filter) {
            Ok(d) => d,
            Err(e) => {
                let text = e.to_string();
                if self.scan_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "cannot scan input devices; trying again every {:?}", cfg.rescan_every);
                    self.scan_error = Some(text);
                }
                return;
            }
        };
        self.scan_error = None;
        for dev in devices {
            if self.open.values().any(|p| *p == dev.node) {
                continue;
            }
            if let Verdict::Rejected(reason) = dev.verdict {
                if self.reported.insert(dev.node.clone()) {
                    tracing::debug!(device = %dev.node.display(), name = %dev.info.name, ?reason, "not a remote");
                }
                continue;
            }
            match open_device(&dev.node, cfg.grab) {
                Ok(fd) => {
                    tracing::info!(device = %dev.node.display(), name = %dev.info.name, "remote connected");
                    self.reported.remove(&dev.node);
                    let decoder = KeyDecoder::new(cfg.layout, cfg.keymap.clone());
                    let reader = read_device(dev.node.clone(), fd, decoder, self.tx.clone());
                    let handle = self.readers.spawn(reader);
                    self.open.insert(handle.id(), dev.node);
                }
                Err(e) if self.reported.insert(dev.node.clone()) => {
                    tracing::warn!(device = %dev.node.display(), error = %e, "cannot open remote");
                }
                Err(_) => {}
            }
        }
    }

    fn reader_done(&mut self, id: tokio::task::Id) {
        if let Some(node) = self.open.remove(&id) {
            tracing::info!(device = %node.display(), "remote disconnected");
        }
    }
}

async fn manage(config: EvdevConfig, tx: mpsc::Sender<KeyEvent>) {
    let every = config.rescan_every.max(Duration::from_millis(10));
    let mut m = Manager {
        config,
        tx,
        readers: JoinSet::new(),
        open: HashMap::new(),
        reported: HashSet::new(),
        scan_error: None,
    };
    let mut next_scan = tokio::time::Instant::now();
    loop {
        // A device that fails at once is retried on the next scan, never in a hot loop.
        tokio::select! {
            _ = m.tx.closed() => return,
            _ = tokio::time::sleep_until(next_scan) => {
                m.rescan();
                next_scan = tokio::time::Instant::now() + every;
            }
            Some(done) = m.readers.join_next_with_id() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                m.reader_done(id);
            }
        }
    }
}

async fn read_device(
    node: PathBuf,
    fd: AsyncFd<File>,
    mut decoder: KeyDecoder,
    tx: mpsc::Sender<KeyEvent>,
) {
    let mut buf = vec![0u8; 64 * EventLayout::Abi64.record_size()];
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(device = %node.display(), error = %e, "poll failed");
                return;
            }
        };
        let read = guard.try_io(|inner| {
            let mut f: &File = inner.get_ref();
            f.read(&mut buf)
        });
        match read {
            Err(_would_block) => continue,
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => {
                for key in decoder.push(&buf[..n]) {
                    if tx.send(key).await.is_err() {
                        return;
                    }
                }
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => {
                if e.raw_os_error() != Some(libc::ENODEV) {
                    tracing::warn!(device = %node.display(), error = %e, "read failed");
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyEvent, RemoteKey};

    fn ev(kind: u16, code: u16, value: i32) -> InputEvent {
        InputEvent {
            sec: 1_700_000_000,
            usec: 123_456,
            kind,
            code,
            value,
        }
    }

    fn stream(layout: EventLayout, events: &[InputEvent]) -> Vec<u8> {
        events.iter().flat_map(|e| e.to_bytes(layout)).collect()
    }

    #[test]
    fn records_round_trip_in_both_layouts() {
        for layout in [EventLayout::Abi64, EventLayout::Abi32] {
            let e = ev(EV_KEY, code::KEY_ENTER, 1);
            let bytes = e.to_bytes(layout);
            assert_eq!(bytes.len(), layout.record_size());
            assert_eq!(InputEvent::parse(&bytes, layout).unwrap(), e);
        }
    }

    #[test]
    fn parse_rejects_wrong_sizes() {
        for n in [0, 1, 15, 17, 23, 25, 48] {
            let bytes = vec![0xffu8; n];
            assert!(InputEvent::parse(&bytes, EventLayout::Abi64).is_err() || n == 24);
        }
        assert!(matches!(
            InputEvent::parse(&[0; 24], EventLayout::Abi32),
            Err(EvdevError::BadRecordSize {
                got: 24,
                expected: 16
            })
        ));
    }

    #[test]
    fn key_decoder_maps_press_and_repeat_only() {
        let layout = EventLayout::Abi64;
        let bytes = stream(
            layout,
            &[
                ev(EV_MSC, MSC_SCAN, 0x70028),
                ev(EV_KEY, code::KEY_ENTER, 1),
                ev(EV_SYN, SYN_REPORT, 0),
                ev(EV_KEY, code::KEY_ENTER, 0),
                ev(EV_SYN, SYN_REPORT, 0),
                ev(EV_KEY, code::KEY_VOLUMEUP, 1),
                ev(EV_KEY, code::KEY_VOLUMEUP, 2),
                ev(EV_KEY, code::KEY_A, 1),
                ev(EV_KEY, code::KEY_VOLUMEUP, 0),
            ],
        );
        let mut d = KeyDecoder::new(layout, KeyMap::default());
        assert_eq!(
            d.push(&bytes),
            vec![
                KeyEvent::pressed(RemoteKey::Ok),
                KeyEvent::pressed(RemoteKey::VolumeUp),
                KeyEvent::repeat(RemoteKey::VolumeUp),
            ]
        );
    }

    #[test]
    fn key_decoder_reassembles_split_reads() {
        let layout = EventLayout::Abi32;
        let bytes = stream(
            layout,
            &[ev(EV_KEY, code::KEY_OK, 1), ev(EV_KEY, code::KEY_MUTE, 1)],
        );
        let mut d = KeyDecoder::new(layout, KeyMap::default());
        let mut got = Vec::new();
        for b in &bytes {
            got.extend(d.push(std::slice::from_ref(b)));
        }
        assert_eq!(
            got,
            vec![
                KeyEvent::pressed(RemoteKey::Ok),
                KeyEvent::pressed(RemoteKey::Mute)
            ]
        );
        assert_eq!(d.events.pending_bytes(), 0);
        d.push(&bytes[..5]);
        assert_eq!(d.events.pending_bytes(), 5);
    }

    #[test]
    fn syn_dropped_discards_until_report() {
        let layout = EventLayout::Abi64;
        let bytes = stream(
            layout,
            &[
                ev(EV_SYN, SYN_DROPPED, 0),
                ev(EV_KEY, code::KEY_POWER, 1),
                ev(EV_SYN, SYN_REPORT, 0),
                ev(EV_KEY, code::KEY_BACK, 1),
            ],
        );
        let mut d = KeyDecoder::new(layout, KeyMap::default());
        assert_eq!(d.push(&bytes), vec![KeyEvent::pressed(RemoteKey::Back)]);
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random bytes (xorshift), fed in odd-sized chunks.
        let mut x: u32 = 0x9e37_79b9;
        let mut bytes = Vec::new();
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bytes.push(x as u8);
        }
        for layout in [EventLayout::Abi64, EventLayout::Abi32] {
            let mut d = KeyDecoder::new(layout, KeyMap::default());
            for chunk in bytes.chunks(7) {
                let _ = d.push(chunk);
            }
            assert!(d.events.pending_bytes() < layout.record_size());
            for n in 0..64 {
                let _ = InputEvent::parse(&bytes[..n], layout);
            }
            for text in ["", " ", "zz", "1 2 x", "fffffffffffffffff", "-1"] {
                assert!(
                    KeyBitmap::parse(text, layout.word_bits()).is_err(),
                    "{text}"
                );
            }
        }
        let long = "1 ".repeat(MAX_BITMAP_WORDS + 1);
        assert!(KeyBitmap::parse(&long, 64).is_err());
        assert!(KeyBitmap::parse("100000000", 32).is_err());
        assert!(KeyBitmap::parse("1", 16).is_err());
    }

    #[test]
    fn bitmap_reads_a_real_keyboard() {
        // capabilities/key of a common USB keyboard on arm64.
        let kb = KeyBitmap::parse(
            "1000000000007 ff9f207ac14057ff febeffdfffefffff fffffffffffffffe",
            64,
        )
        .unwrap();
        assert!(kb.contains(code::KEY_ESC));
        assert!(kb.contains(code::KEY_A));
        assert!(kb.contains(code::KEY_ENTER));
        assert!(kb.contains(code::KEY_UP));
        assert!(!kb.contains(0));
        assert!(!kb.contains(code::KEY_OK));
        assert_eq!(kb.count_of(&LETTER_KEYS), 26);
    }

    #[test]
    fn bitmap_formats_like_the_kernel() {
        let codes = [code::KEY_ENTER, code::KEY_VOLUMEUP, code::KEY_OK, 0x209];
        let map = KeyBitmap::from_codes(codes);
        for bits in [32, 64] {
            let text = map.to_sysfs(bits);
            assert!(!text.starts_with("0 "), "{text}");
            let back = KeyBitmap::parse(&text, bits).unwrap();
            for c in codes {
                assert!(back.contains(c));
            }
            assert_eq!(back.count_of(&LETTER_KEYS), 0);
        }
        assert_eq!(KeyBitmap::from_codes([1]).to_sysfs(64), "2");
        assert_eq!(KeyBitmap::from_codes([64]).to_sysfs(64), "1 0");
        assert_eq!(KeyBitmap::from_codes([32]).to_sysfs(32), "1 0");
        assert_eq!(KeyBitmap::default().to_sysfs(64), "0");
    }

    fn info(name: &str, codes: &[u16]) -> DeviceInfo {
        DeviceInfo {
            name: name.into(),
            bustype: 3,
            vendor: 0x1d57,
            product: 0xad02,
            keys: KeyBitmap::from_codes(codes.iter().copied()),
        }
    }

    #[test]
    fn filter_tells_remotes_from_keyboards() {
        let f = DeviceFilter::default();
        let remote = info("RF remote", &[code::KEY_ENTER, code::KEY_UP, code::KEY_ESC]);
        assert_eq!(f.classify(&remote), Verdict::Remote);
        let mut kb_codes = LETTER_KEYS.to_vec();
        kb_codes.push(code::KEY_ENTER);
        let kb = info("USB Keyboard", &kb_codes);
        assert_eq!(
            f.classify(&kb),
            Verdict::Rejected(RejectReason::FullKeyboard { letters: 26 })
        );
        let power = info("Power Button", &[code::KEY_POWER]);
        assert_eq!(
            f.classify(&power),
            Verdict::Rejected(RejectReason::NoRemoteKeys)
        );

        let allow = DeviceFilter {
            allow: vec![DeviceMatch {
                vendor: Some(0x1d57),
                product: Some(0xad02),
                name_contains: None,
            }],
            ..DeviceFilter::default()
        };
        assert_eq!(allow.classify(&kb), Verdict::Remote);
        let deny = DeviceFilter {
            deny: vec![DeviceMatch {
                name_contains: Some("rf REMOTE".into()),
                ..DeviceMatch::default()
            }],
            ..DeviceFilter::default()
        };
        assert_eq!(
            deny.classify(&remote),
            Verdict::Rejected(RejectReason::Denied)
        );
    }

    /// Copies the recorded sysfs entry of an RF remote under `sys` and
    /// makes its node in `dev` a FIFO, held open for writing.
    fn plug(dev: &Path, sys: &Path) -> File {
        let from =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/class/input/event0");
        fn copy_tree(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    copy_tree(&e.path(), &to.join(e.file_name()));
                } else {
                    std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
                }
            }
        }
        copy_tree(&from, &sys.join("event0"));
        let node = dev.join("event0");
        let made = std::process::Command::new("mkfifo")
            .arg(&node)
            .status()
            .unwrap();
        assert!(made.success());
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&node)
            .unwrap()
    }

    fn press(w: &mut File, code: u16) {
        use std::io::Write as _;
        let bytes = stream(
            EventLayout::native(),
            &[
                ev(EV_KEY, code, 1),
                ev(EV_SYN, SYN_REPORT, 0),
                ev(EV_KEY, code, 0),
                ev(EV_SYN, SYN_REPORT, 0),
            ],
        );
        w.write_all(&bytes).unwrap();
    }

    #[tokio::test]
    async fn a_remote_unplugged_and_plugged_back_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (dev, sys) = (dir.path().join("dev"), dir.path().join("sys"));
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(&sys).unwrap();
        let mut w = plug(&dev, &sys);
        let mut remote = EvdevRemote::spawn(EvdevConfig {
            dev_root: dev.clone(),
            sys_root: sys.clone(),
            rescan_every: Duration::from_millis(50),
            ..EvdevConfig::default()
        });
        press(&mut w, code::KEY_ENTER);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), remote.next_key()).await,
            Ok(Some(KeyEvent::pressed(RemoteKey::Ok)))
        );
        // Unplugged: the node and its sysfs entry go, the reader sees the
        // end of the device.
        drop(w);
        std::fs::remove_file(dev.join("event0")).unwrap();
        std::fs::remove_dir_all(sys.join("event0")).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Plugged back: found at a rescan and read again.
        let mut w = plug(&dev, &sys);
        tokio::time::sleep(Duration::from_millis(300)).await;
        press(&mut w, code::KEY_MUTE);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), remote.next_key()).await,
            Ok(Some(KeyEvent::pressed(RemoteKey::Mute)))
        );
    }
}
