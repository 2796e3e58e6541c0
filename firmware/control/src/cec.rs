//! HDMI-CEC: message encoding, the device trait and its fake, and the TV policy.
//!
//! [`CecMessage`] is a raw frame (`initiator<<4 | destination`, opcode, parameters) that
//! converts to and from bytes and the `cec-ctl` hex notation (`"4f:82:10:00"`);
//! [`CecCommand`] is the typed view of the opcodes the room uses. [`CecDevice`] is the
//! hardware boundary, implemented by [`crate::cec_linux::LinuxCec`] (`/dev/cec0`) and
//! [`FakeCec`]. [`TvControl`] is the sans-IO policy: it wakes the TV and takes the input
//! when a call starts or a meeting is due, puts the TV to standby after an idle time,
//! answers the TV's questions (power status, OSD name, menu state) and turns the TV
//! remote's User Control Pressed messages into [`KeyEvent`]s. Time is an input.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::keys::{KeyEvent, RemoteKey};

/// A CEC logical address (0..=15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogicalAddress(u8);

impl LogicalAddress {
    /// The TV.
    pub const TV: LogicalAddress = LogicalAddress(0);
    /// Playback device 1.
    pub const PLAYBACK_1: LogicalAddress = LogicalAddress(4);
    /// Audio system.
    pub const AUDIO_SYSTEM: LogicalAddress = LogicalAddress(5);
    /// Playback device 2.
    pub const PLAYBACK_2: LogicalAddress = LogicalAddress(8);
    /// Playback device 3.
    pub const PLAYBACK_3: LogicalAddress = LogicalAddress(11);
    /// Unregistered as initiator, broadcast as destination.
    pub const BROADCAST: LogicalAddress = LogicalAddress(15);

    /// The address `n`, if it is 0..=15.
    pub const fn new(n: u8) -> Option<Self> {
        if n <= 15 {
            Some(LogicalAddress(n))
        } else {
            None
        }
    }

    /// The address as a number.
    pub const fn get(self) -> u8 {
        self.0
    }

    const fn nibble(n: u8) -> Self {
        LogicalAddress(n & 0x0f)
    }
}

impl fmt::Display for LogicalAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A CEC physical address such as `1.0.0.0` (HDMI input 1 of the TV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PhysicalAddress(pub u16);

impl PhysicalAddress {
    /// `f.f.f.f`: no address (no hotplug detect, cable unplugged).
    pub const INVALID: PhysicalAddress = PhysicalAddress(0xffff);

    /// Whether this is a usable address.
    pub fn is_valid(self) -> bool {
        self != Self::INVALID
    }

    /// Big-endian bytes, as carried in messages.
    pub fn to_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for PhysicalAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:x}.{:x}.{:x}.{:x}",
            v >> 12,
            (v >> 8) & 0xf,
            (v >> 4) & 0xf,
            v & 0xf
        )
    }
}

impl FromStr for PhysicalAddress {
    type Err = CecDecodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CecDecodeError::BadText(s.chars().take(40).collect());
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 4 {
            return Err(bad());
        }
        let mut v: u16 = 0;
        for p in parts {
            if p.len() != 1 {
                return Err(bad());
            }
            let d = u16::from_str_radix(p, 16).map_err(|_| bad())?;
            v = (v << 4) | d;
        }
        Ok(PhysicalAddress(v))
    }
}

macro_rules! opcodes {
    ($($name:ident = $val:expr),* $(,)?) => {
        /// A CEC opcode. Opcodes the room does not use are kept as [`Opcode::Other`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(missing_docs)]
        pub enum Opcode {
            $($name,)*
            Other(u8),
        }

        impl From<u8> for Opcode {
            fn from(b: u8) -> Self {
                match b {
                    $($val => Opcode::$name,)*
                    other => Opcode::Other(other),
                }
            }
        }

        impl From<Opcode> for u8 {
            fn from(op: Opcode) -> u8 {
                match op {
                    $(Opcode::$name => $val,)*
                    Opcode::Other(b) => b,
                }
            }
        }
    };
}

opcodes! {
    FeatureAbort = 0x00,
    ImageViewOn = 0x04,
    TextViewOn = 0x0d,
    Standby = 0x36,
    UserControlPressed = 0x44,
    UserControlReleased = 0x45,
    GiveOsdName = 0x46,
    SetOsdName = 0x47,
    RoutingChange = 0x80,
    ActiveSource = 0x82,
    GivePhysicalAddress = 0x83,
    ReportPhysicalAddress = 0x84,
    RequestActiveSource = 0x85,
    SetStreamPath = 0x86,
    DeviceVendorId = 0x87,
    GiveDeviceVendorId = 0x8c,
    MenuRequest = 0x8d,
    MenuStatus = 0x8e,
    GiveDevicePowerStatus = 0x8f,
    ReportPowerStatus = 0x90,
    InactiveSource = 0x9d,
    CecVersion = 0x9e,
    GetCecVersion = 0x9f,
    Abort = 0xff,
}

/// A User Control code (the key on the TV remote), from CEC table 27.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UiCommand(pub u8);

#[allow(missing_docs)]
impl UiCommand {
    pub const SELECT: UiCommand = UiCommand(0x00);
    pub const UP: UiCommand = UiCommand(0x01);
    pub const DOWN: UiCommand = UiCommand(0x02);
    pub const LEFT: UiCommand = UiCommand(0x03);
    pub const RIGHT: UiCommand = UiCommand(0x04);
    pub const ROOT_MENU: UiCommand = UiCommand(0x09);
    pub const SETUP_MENU: UiCommand = UiCommand(0x0a);
    pub const CONTENTS_MENU: UiCommand = UiCommand(0x0b);
    pub const EXIT: UiCommand = UiCommand(0x0d);
    pub const NUMBER_0: UiCommand = UiCommand(0x20);
    pub const NUMBER_9: UiCommand = UiCommand(0x29);
    pub const DISPLAY_INFORMATION: UiCommand = UiCommand(0x35);
    pub const POWER: UiCommand = UiCommand(0x40);
    pub const VOLUME_UP: UiCommand = UiCommand(0x41);
    pub const VOLUME_DOWN: UiCommand = UiCommand(0x42);
    pub const MUTE: UiCommand = UiCommand(0x43);
    pub const MUTE_FUNCTION: UiCommand = UiCommand(0x65);
    pub const POWER_TOGGLE: UiCommand = UiCommand(0x6b);
    pub const F1_BLUE: UiCommand = UiCommand(0x71);
    pub const F2_RED: UiCommand = UiCommand(0x72);
    pub const F3_GREEN: UiCommand = UiCommand(0x73);
    pub const F4_YELLOW: UiCommand = UiCommand(0x74);
}

impl UiCommand {
    /// The room key for this TV remote key, if the room uses it.
    pub fn to_remote_key(self) -> Option<RemoteKey> {
        Some(match self {
            UiCommand::SELECT => RemoteKey::Ok,
            UiCommand::UP => RemoteKey::Up,
            UiCommand::DOWN => RemoteKey::Down,
            UiCommand::LEFT => RemoteKey::Left,
            UiCommand::RIGHT => RemoteKey::Right,
            UiCommand::ROOT_MENU => RemoteKey::Home,
            UiCommand::SETUP_MENU | UiCommand::CONTENTS_MENU => RemoteKey::Menu,
            UiCommand::EXIT => RemoteKey::Back,
            UiCommand(c @ 0x20..=0x29) => RemoteKey::Digit(c - 0x20),
            UiCommand::DISPLAY_INFORMATION => RemoteKey::Info,
            UiCommand::POWER | UiCommand::POWER_TOGGLE => RemoteKey::Power,
            UiCommand::VOLUME_UP => RemoteKey::VolumeUp,
            UiCommand::VOLUME_DOWN => RemoteKey::VolumeDown,
            UiCommand::MUTE | UiCommand::MUTE_FUNCTION => RemoteKey::Mute,
            UiCommand::F1_BLUE => RemoteKey::Blue,
            UiCommand::F2_RED => RemoteKey::Red,
            UiCommand::F3_GREEN => RemoteKey::Green,
            UiCommand::F4_YELLOW => RemoteKey::Yellow,
            _ => return None,
        })
    }
}

/// Bytes that are not a valid CEC frame or command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CecDecodeError {
    /// No bytes at all.
    #[error("empty CEC frame")]
    Empty,
    /// A one-byte frame is a poll, not a message.
    #[error("CEC poll frame (no opcode)")]
    Poll,
    /// More than 16 bytes.
    #[error("CEC frame of {0} bytes exceeds 16")]
    TooLong(usize),
    /// A command with too few parameter bytes.
    #[error("{opcode:?} needs {needed} parameter bytes, got {got}")]
    MissingParams {
        /// The opcode.
        opcode: Opcode,
        /// Bytes it needs.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// Text that is not `cec-ctl` style hex (`"4f:82:10:00"`) or a physical address.
    #[error("malformed CEC text {0:?}")]
    BadText(String),
}

/// Maximum CEC frame length, header included.
pub const CEC_MAX_MSG_SIZE: usize = 16;

/// A CEC frame with at least an opcode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CecMessage {
    /// Who sends it.
    pub initiator: LogicalAddress,
    /// Who it is for ([`LogicalAddress::BROADCAST`] for everyone).
    pub destination: LogicalAddress,
    /// What it is.
    pub opcode: Opcode,
    /// Operands (at most 14 bytes).
    pub params: Vec<u8>,
}

impl CecMessage {
    /// A message; fails if `params` exceed the 14 bytes a frame can hold.
    pub fn new(
        initiator: LogicalAddress,
        destination: LogicalAddress,
        opcode: Opcode,
        params: &[u8],
    ) -> Result<Self, CecDecodeError> {
        if params.len() + 2 > CEC_MAX_MSG_SIZE {
            return Err(CecDecodeError::TooLong(params.len() + 2));
        }
        Ok(CecMessage {
            initiator,
            destination,
            opcode,
            params: params.to_vec(),
        })
    }

    /// Whether the message goes to every device.
    pub fn is_broadcast(&self) -> bool {
        self.destination == LogicalAddress::BROADCAST
    }

    /// The frame as sent on the wire (parameters beyond 14 bytes are cut).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.params.len());
        out.push((self.initiator.get() << 4) | self.destination.get());
        out.push(self.opcode.into());
        let room = CEC_MAX_MSG_SIZE - 2;
        out.extend_from_slice(&self.params[..self.params.len().min(room)]);
        out
    }

    /// Parses a frame.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CecDecodeError> {
        match bytes.len() {
            0 => Err(CecDecodeError::Empty),
            1 => Err(CecDecodeError::Poll),
            n if n > CEC_MAX_MSG_SIZE => Err(CecDecodeError::TooLong(n)),
            _ => Ok(CecMessage {
                initiator: LogicalAddress::nibble(bytes[0] >> 4),
                destination: LogicalAddress::nibble(bytes[0]),
                opcode: Opcode::from(bytes[1]),
                params: bytes[2..].to_vec(),
            }),
        }
    }

    /// Parses `cec-ctl` notation: hex bytes separated by `:` (`"04:44:00"`).
    pub fn from_hex(text: &str) -> Result<Self, CecDecodeError> {
        let bad = || CecDecodeError::BadText(text.chars().take(60).collect());
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(CecDecodeError::Empty);
        }
        let bytes = trimmed
            .split(':')
            .map(|b| {
                if b.is_empty() || b.len() > 2 {
                    return Err(bad());
                }
                u8::from_str_radix(b, 16).map_err(|_| bad())
            })
            .collect::<Result<Vec<u8>, _>>()?;
        Self::from_bytes(&bytes)
    }

    /// The frame in `cec-ctl` notation.
    pub fn to_hex(&self) -> String {
        let parts: Vec<String> = self.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        parts.join(":")
    }

    /// The typed view of this message.
    pub fn command(&self) -> Result<CecCommand, CecDecodeError> {
        CecCommand::decode(self)
    }
}

impl fmt::Display for CecMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.to_hex(), self.opcode)
    }
}

/// Power status operand of Report Power Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerStatus {
    /// 0x00.
    On,
    /// 0x01.
    Standby,
    /// 0x02.
    TransitionToOn,
    /// 0x03.
    TransitionToStandby,
    /// Anything else.
    Other(u8),
}

impl From<u8> for PowerStatus {
    fn from(b: u8) -> Self {
        match b {
            0 => PowerStatus::On,
            1 => PowerStatus::Standby,
            2 => PowerStatus::TransitionToOn,
            3 => PowerStatus::TransitionToStandby,
            o => PowerStatus::Other(o),
        }
    }
}

impl From<PowerStatus> for u8 {
    fn from(p: PowerStatus) -> u8 {
        match p {
            PowerStatus::On => 0,
            PowerStatus::Standby => 1,
            PowerStatus::TransitionToOn => 2,
            PowerStatus::TransitionToStandby => 3,
            PowerStatus::Other(o) => o,
        }
    }
}

/// Device type operand (Report Physical Address).
pub const DEVICE_TYPE_PLAYBACK: u8 = 4;
/// Feature Abort reason: unrecognized opcode.
pub const ABORT_UNRECOGNIZED_OPCODE: u8 = 0;
/// Feature Abort reason: refused.
pub const ABORT_REFUSED: u8 = 4;
/// Menu Status operand: activated.
pub const MENU_ACTIVATED: u8 = 0;
/// Longest OSD name CEC carries.
pub const OSD_NAME_MAX: usize = 14;

/// The typed view of the messages the room sends or reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CecCommand {
    /// Feature Abort (0x00): `opcode` is not supported for `reason`.
    FeatureAbort {
        /// The refused opcode.
        opcode: Opcode,
        /// Why.
        reason: u8,
    },
    /// Image View On (0x04): TV, wake up and show the HDMI input.
    ImageViewOn,
    /// Text View On (0x0D).
    TextViewOn,
    /// Standby (0x36).
    Standby,
    /// User Control Pressed (0x44).
    UserControlPressed(UiCommand),
    /// User Control Released (0x45).
    UserControlReleased,
    /// Give OSD Name (0x46).
    GiveOsdName,
    /// Set OSD Name (0x47); ASCII, at most 14 characters.
    SetOsdName(String),
    /// Active Source (0x82): the source at this address is now shown.
    ActiveSource(PhysicalAddress),
    /// Give Physical Address (0x83).
    GivePhysicalAddress,
    /// Report Physical Address (0x84).
    ReportPhysicalAddress {
        /// The address.
        address: PhysicalAddress,
        /// Primary device type.
        device_type: u8,
    },
    /// Request Active Source (0x85).
    RequestActiveSource,
    /// Set Stream Path (0x86): the TV selects the source at this address.
    SetStreamPath(PhysicalAddress),
    /// Menu Request (0x8D).
    MenuRequest(u8),
    /// Menu Status (0x8E).
    MenuStatus(u8),
    /// Give Device Power Status (0x8F).
    GiveDevicePowerStatus,
    /// Report Power Status (0x90).
    ReportPowerStatus(PowerStatus),
    /// Any other opcode, with its operands.
    Other(Opcode, Vec<u8>),
}

fn need(msg: &CecMessage, n: usize) -> Result<&[u8], CecDecodeError> {
    if msg.params.len() < n {
        Err(CecDecodeError::MissingParams {
            opcode: msg.opcode,
            needed: n,
            got: msg.params.len(),
        })
    } else {
        Ok(&msg.params[..n])
    }
}

/// Vietnamese letters with diacritics, grouped by their ASCII base letter.
const VIETNAMESE_FOLD: [(char, &str); 7] = [
    ('a', "àáảãạăằắẳẵặâầấẩẫậ"),
    ('e', "èéẻẽẹêềếểễệ"),
    ('i', "ìíỉĩị"),
    ('o', "òóỏõọôồốổỗộơờớởỡợ"),
    ('u', "ùúủũụưừứửữự"),
    ('y', "ỳýỷỹỵ"),
    ('d', "đ"),
];

/// `c` without Vietnamese diacritics (`'ầ'` → `'a'`, `'Đ'` → `'D'`), if it has any.
fn fold_vietnamese(c: char) -> Option<char> {
    let lower = c.to_lowercase().next()?;
    let base = VIETNAMESE_FOLD
        .iter()
        .find(|(_, set)| set.contains(lower))
        .map(|(b, _)| *b)?;
    Some(if c.is_uppercase() {
        base.to_ascii_uppercase()
    } else {
        base
    })
}

/// Makes a string safe to send as an OSD name: printable ASCII (Vietnamese diacritics
/// removed, anything else non-ASCII becomes `?`), at most 14 bytes.
pub fn sanitize_osd_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                fold_vietnamese(c).unwrap_or('?')
            }
        })
        .take(OSD_NAME_MAX)
        .collect()
}

impl CecCommand {
    /// Reads the typed command out of a message. Extra operand bytes are ignored, as
    /// the CEC specification requires for forward compatibility.
    pub fn decode(msg: &CecMessage) -> Result<Self, CecDecodeError> {
        let pa = |p: &[u8]| PhysicalAddress(u16::from_be_bytes([p[0], p[1]]));
        Ok(match msg.opcode {
            Opcode::FeatureAbort => {
                let p = need(msg, 2)?;
                CecCommand::FeatureAbort {
                    opcode: Opcode::from(p[0]),
                    reason: p[1],
                }
            }
            Opcode::ImageViewOn => CecCommand::ImageViewOn,
            Opcode::TextViewOn => CecCommand::TextViewOn,
            Opcode::Standby => CecCommand::Standby,
            Opcode::UserControlPressed => {
                CecCommand::UserControlPressed(UiCommand(need(msg, 1)?[0]))
            }
            Opcode::UserControlReleased => CecCommand::UserControlReleased,
            Opcode::GiveOsdName => CecCommand::GiveOsdName,
            Opcode::SetOsdName => CecCommand::SetOsdName(
                msg.params
                    .iter()
                    .map(|&b| if b.is_ascii() { char::from(b) } else { '?' })
                    .collect(),
            ),
            Opcode::ActiveSource => CecCommand::ActiveSource(pa(need(msg, 2)?)),
            Opcode::GivePhysicalAddress => CecCommand::GivePhysicalAddress,
            Opcode::ReportPhysicalAddress => {
                let p = need(msg, 3)?;
                CecCommand::ReportPhysicalAddress {
                    address: pa(p),
                    device_type: p[2],
                }
            }
            Opcode::RequestActiveSource => CecCommand::RequestActiveSource,
            Opcode::SetStreamPath => CecCommand::SetStreamPath(pa(need(msg, 2)?)),
            Opcode::MenuRequest => CecCommand::MenuRequest(need(msg, 1)?[0]),
            Opcode::MenuStatus => CecCommand::MenuStatus(need(msg, 1)?[0]),
            Opcode::GiveDevicePowerStatus => CecCommand::GiveDevicePowerStatus,
            Opcode::ReportPowerStatus => {
                CecCommand::ReportPowerStatus(PowerStatus::from(need(msg, 1)?[0]))
            }
            other => CecCommand::Other(other, msg.params.clone()),
        })
    }

    /// The message carrying this command from `from` to `to`.
    pub fn to_message(&self, from: LogicalAddress, to: LogicalAddress) -> CecMessage {
        let (opcode, params): (Opcode, Vec<u8>) = match self {
            CecCommand::FeatureAbort { opcode, reason } => {
                (Opcode::FeatureAbort, vec![u8::from(*opcode), *reason])
            }
            CecCommand::ImageViewOn => (Opcode::ImageViewOn, vec![]),
            CecCommand::TextViewOn => (Opcode::TextViewOn, vec![]),
            CecCommand::Standby => (Opcode::Standby, vec![]),
            CecCommand::UserControlPressed(ui) => (Opcode::UserControlPressed, vec![ui.0]),
            CecCommand::UserControlReleased => (Opcode::UserControlReleased, vec![]),
            CecCommand::GiveOsdName => (Opcode::GiveOsdName, vec![]),
            CecCommand::SetOsdName(name) => {
                (Opcode::SetOsdName, sanitize_osd_name(name).into_bytes())
            }
            CecCommand::ActiveSource(pa) => (Opcode::ActiveSource, pa.to_bytes().to_vec()),
            CecCommand::GivePhysicalAddress => (Opcode::GivePhysicalAddress, vec![]),
            CecCommand::ReportPhysicalAddress {
                address,
                device_type,
            } => {
                let [a, b] = address.to_bytes();
                (Opcode::ReportPhysicalAddress, vec![a, b, *device_type])
            }
            CecCommand::RequestActiveSource => (Opcode::RequestActiveSource, vec![]),
            CecCommand::SetStreamPath(pa) => (Opcode::SetStreamPath, pa.to_bytes().to_vec()),
            CecCommand::MenuRequest(r) => (Opcode::MenuRequest, vec![*r]),
            CecCommand::MenuStatus(s) => (Opcode::MenuStatus, vec![*s]),
            CecCommand::GiveDevicePowerStatus => (Opcode::GiveDevicePowerStatus, vec![]),
            CecCommand::ReportPowerStatus(p) => (Opcode::ReportPowerStatus, vec![u8::from(*p)]),
            CecCommand::Other(op, params) => (*op, params.clone()),
        };
        let mut params = params;
        params.truncate(CEC_MAX_MSG_SIZE - 2);
        CecMessage {
            initiator: from,
            destination: to,
            opcode,
            params,
        }
    }
}

/// Errors from a CEC adapter.
#[derive(Debug, thiserror::Error)]
pub enum CecError {
    /// A system call on the adapter failed.
    #[error("CEC {op} failed on {device}")]
    Io {
        /// What we were doing (`"CEC_TRANSMIT"`, `"open"`).
        op: &'static str,
        /// The device node.
        device: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Nobody acknowledged a directed message (TV off the bus, cable unplugged).
    #[error("CEC message to {destination} not acknowledged")]
    Nack {
        /// The destination.
        destination: LogicalAddress,
    },
    /// The adapter reported a transmit failure other than a NACK.
    #[error("CEC transmit failed (tx_status {status:#04x})")]
    TransmitFailed {
        /// `tx_status` bits from `linux/cec.h`.
        status: u8,
    },
    /// The adapter could not claim a logical address of the requested type.
    #[error("no free CEC logical address for a playback device")]
    NoLogicalAddress,
    /// The adapter cannot do what the room needs (e.g. no `CEC_CAP_TRANSMIT`).
    #[error("CEC adapter {device} lacks capability: {missing}")]
    NotCapable {
        /// The device node.
        device: String,
        /// What is missing.
        missing: &'static str,
    },
    /// A message from the adapter could not be decoded.
    #[error("malformed CEC message from the adapter")]
    Decode(#[source] CecDecodeError),
    /// The device is in a state that does not allow this (e.g. transmit before claiming).
    #[error("CEC adapter not ready: {0}")]
    NotReady(&'static str),
}

/// An HDMI-CEC adapter.
pub trait CecDevice {
    /// Claims a Playback logical address announcing `osd_name`; returns the address.
    fn claim_playback(&mut self, osd_name: &str) -> Result<LogicalAddress, CecError>;
    /// Our physical address ([`PhysicalAddress::INVALID`] when no TV is connected).
    fn physical_address(&mut self) -> Result<PhysicalAddress, CecError>;
    /// Sends a message and waits for it to be acknowledged (or not).
    fn transmit(&mut self, msg: &CecMessage) -> Result<(), CecError>;
    /// Waits up to `timeout` for a message for us.
    fn receive(&mut self, timeout: Duration) -> Result<Option<CecMessage>, CecError>;
}

#[derive(Debug)]
struct FakeCecState {
    logical: Option<LogicalAddress>,
    physical: PhysicalAddress,
    osd_name: Option<String>,
    sent: Vec<CecMessage>,
    inbox: VecDeque<CecMessage>,
    absent: Vec<LogicalAddress>,
}

/// A CEC adapter in memory: records what was sent and delivers injected messages.
/// Clones share state, so a test can keep one clone while the code under test owns
/// another.
#[derive(Debug, Clone)]
pub struct FakeCec {
    state: Arc<Mutex<FakeCecState>>,
}

impl FakeCec {
    /// An adapter at `physical`, with a TV present at address 0.
    pub fn new(physical: PhysicalAddress) -> Self {
        FakeCec {
            state: Arc::new(Mutex::new(FakeCecState {
                logical: None,
                physical,
                osd_name: None,
                sent: Vec::new(),
                inbox: VecDeque::new(),
                absent: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeCecState> {
        // A panic in another test thread must not hide this test's result.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message as if received from the bus.
    pub fn inject(&self, msg: CecMessage) {
        self.lock().inbox.push_back(msg);
    }

    /// Makes directed messages to `addr` fail with a NACK (device off the bus).
    pub fn set_absent(&self, addr: LogicalAddress) {
        self.lock().absent.push(addr);
    }

    /// Changes the physical address (as on HDMI replug).
    pub fn set_physical_address(&self, pa: PhysicalAddress) {
        self.lock().physical = pa;
    }

    /// Everything transmitted so far.
    pub fn sent(&self) -> Vec<CecMessage> {
        self.lock().sent.clone()
    }

    /// Everything transmitted so far, clearing the record.
    pub fn take_sent(&self) -> Vec<CecMessage> {
        std::mem::take(&mut self.lock().sent)
    }

    /// The OSD name given to [`CecDevice::claim_playback`].
    pub fn osd_name(&self) -> Option<String> {
        self.lock().osd_name.clone()
    }
}

impl CecDevice for FakeCec {
    fn claim_playback(&mut self, osd_name: &str) -> Result<LogicalAddress, CecError> {
        let mut s = self.lock();
        s.logical = Some(LogicalAddress::PLAYBACK_1);
        s.osd_name = Some(sanitize_osd_name(osd_name));
        Ok(LogicalAddress::PLAYBACK_1)
    }

    fn physical_address(&mut self) -> Result<PhysicalAddress, CecError> {
        Ok(self.lock().physical)
    }

    fn transmit(&mut self, msg: &CecMessage) -> Result<(), CecError> {
        let mut s = self.lock();
        if s.logical.is_none() {
            return Err(CecError::NotReady("no logical address claimed"));
        }
        s.sent.push(msg.clone());
        if !msg.is_broadcast() && s.absent.contains(&msg.destination) {
            return Err(CecError::Nack {
                destination: msg.destination,
            });
        }
        Ok(())
    }

    fn receive(&mut self, timeout: Duration) -> Result<Option<CecMessage>, CecError> {
        let msg = self.lock().inbox.pop_front();
        if msg.is_none() {
            // Like a real adapter, do not let a polling loop spin.
            std::thread::sleep(timeout.min(Duration::from_millis(5)));
        }
        Ok(msg)
    }
}

/// Settings for [`TvControl`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TvControlConfig {
    /// Put the TV to standby after this long without a call or key press; `None` never.
    #[serde(with = "opt_secs")]
    pub standby_after: Option<Duration>,
    /// Wake the TV when a meeting is about to start, not only when the call starts.
    pub wake_on_meeting: bool,
    /// Name shown in the TV's source list (ASCII, cut to 14 characters).
    pub osd_name: String,
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

impl Default for TvControlConfig {
    fn default() -> Self {
        TvControlConfig {
            standby_after: Some(Duration::from_secs(30 * 60)),
            wake_on_meeting: true,
            osd_name: "Diem cau".to_owned(),
        }
    }
}

/// What [`TvControl`] wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TvOutput {
    /// Send this message.
    Transmit(CecMessage),
    /// The TV remote produced a key.
    Key(KeyEvent),
}

/// The TV policy, sans-IO. Feed it inputs, then drain [`TvControl::poll_output`].
#[derive(Debug)]
pub struct TvControl {
    config: TvControlConfig,
    own: LogicalAddress,
    physical: PhysicalAddress,
    in_call: bool,
    last_activity: Instant,
    standby_sent: bool,
    active_source: bool,
    held: Option<UiCommand>,
    out: VecDeque<TvOutput>,
}

/// Opcodes the kernel's CEC core answers itself; the follower must not feature-abort them.
const CORE_HANDLED: [Opcode; 4] = [
    Opcode::GivePhysicalAddress,
    Opcode::GiveDeviceVendorId,
    Opcode::GetCecVersion,
    Opcode::Abort,
];

impl TvControl {
    /// A policy for a device that claimed `own` at `physical`; `now` starts the idle clock.
    pub fn new(
        config: TvControlConfig,
        own: LogicalAddress,
        physical: PhysicalAddress,
        now: Instant,
    ) -> Self {
        TvControl {
            config,
            own,
            physical,
            in_call: false,
            last_activity: now,
            standby_sent: false,
            active_source: false,
            held: None,
            out: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<TvOutput> {
        self.out.pop_front()
    }

    /// Whether the room believes it is the TV's active source.
    pub fn is_active_source(&self) -> bool {
        self.active_source
    }

    /// The physical address changed (HDMI replug, TV switched).
    pub fn set_physical_address(&mut self, physical: PhysicalAddress) {
        self.physical = physical;
    }

    /// A call started: wake the TV and switch it to us.
    pub fn call_started(&mut self, now: Instant) {
        self.in_call = true;
        self.last_activity = now;
        self.wake_tv();
    }

    /// The call ended: the idle clock starts now.
    pub fn call_ended(&mut self, now: Instant) {
        self.in_call = false;
        self.last_activity = now;
    }

    /// A meeting is about to start.
    pub fn meeting_due(&mut self, now: Instant) {
        self.last_activity = now;
        if self.config.wake_on_meeting {
            self.wake_tv();
        }
    }

    /// Someone pressed a key on a room remote (not the TV's): wake the TV if we put it
    /// to sleep, and restart the idle clock.
    pub fn user_activity(&mut self, now: Instant) {
        self.last_activity = now;
        if self.standby_sent {
            self.wake_tv();
        }
    }

    /// Periodic tick: standby when idle long enough.
    pub fn idle_tick(&mut self, now: Instant) {
        let Some(after) = self.config.standby_after else {
            return;
        };
        if self.in_call || self.standby_sent {
            return;
        }
        if now.saturating_duration_since(self.last_activity) >= after {
            self.standby_sent = true;
            self.active_source = false;
            self.send(LogicalAddress::TV, CecCommand::Standby);
        }
    }

    /// A message arrived from the bus.
    pub fn message_received(&mut self, now: Instant, msg: &CecMessage) {
        if msg.initiator == self.own {
            return;
        }
        let for_us = msg.destination == self.own;
        if !for_us && !msg.is_broadcast() {
            return;
        }
        let cmd = match msg.command() {
            Ok(cmd) => cmd,
            Err(e) => {
                tracing::debug!(%msg, error = %e, "ignoring malformed CEC message");
                return;
            }
        };
        let from = msg.initiator;
        match cmd {
            CecCommand::UserControlPressed(ui) if for_us => {
                self.last_activity = now;
                let repeat = self.held == Some(ui);
                self.held = Some(ui);
                if let Some(key) = ui.to_remote_key() {
                    let ev = if repeat {
                        KeyEvent::repeat(key)
                    } else {
                        KeyEvent::pressed(key)
                    };
                    self.out.push_back(TvOutput::Key(ev));
                }
            }
            CecCommand::UserControlReleased => self.held = None,
            CecCommand::GiveDevicePowerStatus if for_us => {
                self.send(from, CecCommand::ReportPowerStatus(PowerStatus::On))
            }
            CecCommand::GiveOsdName if for_us => {
                let name = self.config.osd_name.clone();
                self.send(from, CecCommand::SetOsdName(name));
            }
            CecCommand::MenuRequest(_) if for_us => {
                // Many TVs forward remote keys only to a source whose menu is "active".
                self.send(from, CecCommand::MenuStatus(MENU_ACTIVATED));
            }
            CecCommand::RequestActiveSource if self.active_source => self.announce_active(),
            CecCommand::SetStreamPath(pa) => {
                if pa == self.physical && pa.is_valid() {
                    self.active_source = true;
                    self.standby_sent = false;
                    self.announce_active();
                } else {
                    self.active_source = false;
                }
            }
            CecCommand::ActiveSource(pa) if pa != self.physical => self.active_source = false,
            CecCommand::Standby => {
                // The TV went off (its own remote, or another device): do not send another.
                self.standby_sent = true;
                self.active_source = false;
                self.held = None;
            }
            CecCommand::FeatureAbort { .. } | CecCommand::Other(Opcode::Abort, _) => {}
            CecCommand::Other(op, _) if for_us && !CORE_HANDLED.contains(&op) => self.send(
                from,
                CecCommand::FeatureAbort {
                    opcode: op,
                    reason: ABORT_UNRECOGNIZED_OPCODE,
                },
            ),
            _ => {}
        }
    }

    /// Transmits every pending message through `dev` and returns the keys produced.
    /// Transmit failures are logged, not returned: a TV that is off or unplugged must not
    /// stop the room.
    pub fn flush<D: CecDevice>(&mut self, dev: &mut D) -> Vec<KeyEvent> {
        let mut keys = Vec::new();
        while let Some(out) = self.poll_output() {
            match out {
                TvOutput::Transmit(msg) => {
                    if let Err(e) = dev.transmit(&msg) {
                        tracing::warn!(%msg, error = %e, "CEC transmit failed");
                    }
                }
                TvOutput::Key(k) => keys.push(k),
            }
        }
        keys
    }

    fn wake_tv(&mut self) {
        self.standby_sent = false;
        self.send(LogicalAddress::TV, CecCommand::ImageViewOn);
        if self.physical.is_valid() {
            self.active_source = true;
            self.announce_active();
        } else {
            tracing::warn!("no CEC physical address (is the TV connected?); cannot switch input");
        }
    }

    fn announce_active(&mut self) {
        self.send(
            LogicalAddress::BROADCAST,
            CecCommand::ActiveSource(self.physical),
        );
    }

    fn send(&mut self, to: LogicalAddress, cmd: CecCommand) {
        self.out
            .push_back(TvOutput::Transmit(cmd.to_message(self.own, to)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(hex: &str) -> CecMessage {
        CecMessage::from_hex(hex).unwrap()
    }

    #[test]
    fn recorded_frames_decode() {
        let m = msg("4f:82:10:00");
        assert_eq!(m.initiator, LogicalAddress::PLAYBACK_1);
        assert!(m.is_broadcast());
        assert_eq!(
            m.command(),
            Ok(CecCommand::ActiveSource(PhysicalAddress(0x1000)))
        );
        assert_eq!(PhysicalAddress(0x1000).to_string(), "1.0.0.0");

        // The header is initiator<<4 | destination: "04:04" goes from the TV (0) to
        // playback 1 (4). Image View On from us to the TV is "40:04".
        let m = msg("04:04");
        assert_eq!(m.initiator, LogicalAddress::TV);
        assert_eq!(m.destination, LogicalAddress::PLAYBACK_1);
        assert_eq!(m.command(), Ok(CecCommand::ImageViewOn));
        let m = msg("40:04");
        assert_eq!(m.destination, LogicalAddress::TV);
        assert_eq!(m.command(), Ok(CecCommand::ImageViewOn));

        let m = msg("04:44:00");
        assert_eq!(
            m.command(),
            Ok(CecCommand::UserControlPressed(UiCommand::SELECT))
        );
        assert_eq!(msg("04:45").command(), Ok(CecCommand::UserControlReleased));
        assert_eq!(
            msg("40:8f").command(),
            Ok(CecCommand::GiveDevicePowerStatus)
        );
        assert_eq!(
            msg("04:90:00").command(),
            Ok(CecCommand::ReportPowerStatus(PowerStatus::On))
        );
        assert_eq!(
            msg("4f:84:10:00:04").command(),
            Ok(CecCommand::ReportPhysicalAddress {
                address: PhysicalAddress(0x1000),
                device_type: DEVICE_TYPE_PLAYBACK
            })
        );
        assert_eq!(
            msg("40:47:44:69:65:6d:20:63:61:75").command(),
            Ok(CecCommand::SetOsdName("Diem cau".into()))
        );
        assert_eq!(
            msg("04:00:44:04").command(),
            Ok(CecCommand::FeatureAbort {
                opcode: Opcode::UserControlPressed,
                reason: ABORT_REFUSED
            })
        );
        assert_eq!(msg("0f:36").command(), Ok(CecCommand::Standby));
        assert_eq!(msg("40:0d").command(), Ok(CecCommand::TextViewOn));
    }

    #[test]
    fn commands_encode_to_recorded_frames() {
        let p1 = LogicalAddress::PLAYBACK_1;
        let cases = [
            (
                CecCommand::ActiveSource(PhysicalAddress(0x1000)),
                LogicalAddress::BROADCAST,
                "4f:82:10:00",
            ),
            (CecCommand::ImageViewOn, LogicalAddress::TV, "40:04"),
            (CecCommand::TextViewOn, LogicalAddress::TV, "40:0d"),
            (CecCommand::Standby, LogicalAddress::TV, "40:36"),
            (
                CecCommand::ReportPowerStatus(PowerStatus::On),
                LogicalAddress::TV,
                "40:90:00",
            ),
            (
                CecCommand::SetOsdName("Diem cau".into()),
                LogicalAddress::TV,
                "40:47:44:69:65:6d:20:63:61:75",
            ),
            (
                CecCommand::FeatureAbort {
                    opcode: Opcode::Other(0xa0),
                    reason: ABORT_UNRECOGNIZED_OPCODE,
                },
                LogicalAddress::TV,
                "40:00:a0:00",
            ),
            (
                CecCommand::ReportPhysicalAddress {
                    address: PhysicalAddress(0x2100),
                    device_type: DEVICE_TYPE_PLAYBACK,
                },
                LogicalAddress::BROADCAST,
                "4f:84:21:00:04",
            ),
        ];
        for (cmd, to, hex) in cases {
            let m = cmd.to_message(p1, to);
            assert_eq!(m.to_hex(), hex);
            assert_eq!(CecMessage::from_hex(hex).unwrap(), m);
            assert_eq!(m.command().unwrap(), cmd);
        }
    }

    #[test]
    fn ui_commands_map_to_keys() {
        assert_eq!(UiCommand::SELECT.to_remote_key(), Some(RemoteKey::Ok));
        assert_eq!(UiCommand::UP.to_remote_key(), Some(RemoteKey::Up));
        assert_eq!(UiCommand::DOWN.to_remote_key(), Some(RemoteKey::Down));
        assert_eq!(UiCommand::LEFT.to_remote_key(), Some(RemoteKey::Left));
        assert_eq!(UiCommand::RIGHT.to_remote_key(), Some(RemoteKey::Right));
        assert_eq!(UiCommand::EXIT.to_remote_key(), Some(RemoteKey::Back));
        assert_eq!(
            UiCommand::VOLUME_UP.to_remote_key(),
            Some(RemoteKey::VolumeUp)
        );
        assert_eq!(
            UiCommand::VOLUME_DOWN.to_remote_key(),
            Some(RemoteKey::VolumeDown)
        );
        assert_eq!(UiCommand::MUTE.to_remote_key(), Some(RemoteKey::Mute));
        assert_eq!(
            UiCommand::NUMBER_0.to_remote_key(),
            Some(RemoteKey::Digit(0))
        );
        assert_eq!(
            UiCommand::NUMBER_9.to_remote_key(),
            Some(RemoteKey::Digit(9))
        );
        assert_eq!(UiCommand(0x2a).to_remote_key(), None);
        assert_eq!(UiCommand(0x44).to_remote_key(), None); // Play
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert_eq!(CecMessage::from_bytes(&[]), Err(CecDecodeError::Empty));
        assert_eq!(CecMessage::from_bytes(&[0x40]), Err(CecDecodeError::Poll));
        assert_eq!(
            CecMessage::from_bytes(&[0; 17]),
            Err(CecDecodeError::TooLong(17))
        );
        for bad in ["", "4", "zz:04", "4f:82:", "4f::82", "123:04", "4f 82", ":"] {
            assert!(CecMessage::from_hex(bad).is_err(), "{bad:?}");
        }
        // Truncated operands.
        for hex in [
            "4f:82:10",
            "04:44",
            "04:00:44",
            "4f:84:10:00",
            "40:90",
            "0f:86",
        ] {
            assert!(
                matches!(
                    msg(hex).command(),
                    Err(CecDecodeError::MissingParams { .. })
                ),
                "{hex}"
            );
        }
        assert!(
            CecMessage::new(
                LogicalAddress::TV,
                LogicalAddress::TV,
                Opcode::SetOsdName,
                &[0; 15]
            )
            .is_err()
        );
        for bad in ["1.0.0", "1.0.0.0.0", "10.0.0.0", "g.0.0.0", "", "1..0.0"] {
            assert!(bad.parse::<PhysicalAddress>().is_err(), "{bad:?}");
        }
        assert_eq!("2.1.0.0".parse(), Ok(PhysicalAddress(0x2100)));
        // Every 1- to 4-byte frame decodes or errors without panicking.
        for a in 0..=255u8 {
            for b in [0u8, 0x44, 0x82, 0x84, 0xff] {
                for len in 0..4 {
                    let frame = [a, b, 0x10][..len.min(3)].to_vec();
                    if let Ok(m) = CecMessage::from_bytes(&frame) {
                        let _ = m.command();
                        assert_eq!(CecMessage::from_bytes(&m.to_bytes()), Ok(m));
                    }
                }
            }
        }
    }

    #[test]
    fn osd_names_are_sanitized() {
        assert_eq!(sanitize_osd_name("Điểm cầu Tân Phú"), "Diem cau Tan P");
        assert_eq!(sanitize_osd_name("ỦY BAN xã"), "UY BAN xa");
        assert_eq!(sanitize_osd_name("会议\n"), "???");
        assert_eq!(sanitize_osd_name("Diem cau"), "Diem cau");
        let m = CecCommand::SetOsdName("a very long room name".into())
            .to_message(LogicalAddress::PLAYBACK_1, LogicalAddress::TV);
        assert_eq!(m.params.len(), OSD_NAME_MAX);
    }

    fn tv(config: TvControlConfig, t0: Instant) -> TvControl {
        TvControl::new(
            config,
            LogicalAddress::PLAYBACK_1,
            PhysicalAddress(0x1000),
            t0,
        )
    }

    fn drain(tv: &mut TvControl) -> Vec<String> {
        std::iter::from_fn(|| tv.poll_output())
            .map(|o| match o {
                TvOutput::Transmit(m) => m.to_hex(),
                TvOutput::Key(k) => format!("key {} {:?}", k.key, k.phase),
            })
            .collect()
    }

    #[test]
    fn call_start_wakes_tv_and_takes_input() {
        let t0 = Instant::now();
        let mut c = tv(TvControlConfig::default(), t0);
        c.call_started(t0);
        assert_eq!(drain(&mut c), ["40:04", "4f:82:10:00"]);
        assert!(c.is_active_source());
    }

    #[test]
    fn meeting_due_wakes_only_when_configured() {
        let t0 = Instant::now();
        let mut c = tv(TvControlConfig::default(), t0);
        c.meeting_due(t0);
        assert_eq!(drain(&mut c), ["40:04", "4f:82:10:00"]);
        let mut c = tv(
            TvControlConfig {
                wake_on_meeting: false,
                ..TvControlConfig::default()
            },
            t0,
        );
        c.meeting_due(t0);
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn no_physical_address_still_wakes_tv() {
        let t0 = Instant::now();
        let mut c = TvControl::new(
            TvControlConfig::default(),
            LogicalAddress::PLAYBACK_1,
            PhysicalAddress::INVALID,
            t0,
        );
        c.call_started(t0);
        assert_eq!(drain(&mut c), ["40:04"]);
    }

    #[test]
    fn standby_after_idle_once_and_never_in_call() {
        let t0 = Instant::now();
        let cfg = TvControlConfig {
            standby_after: Some(Duration::from_secs(600)),
            ..TvControlConfig::default()
        };
        let mut c = tv(cfg, t0);
        c.call_started(t0);
        drain(&mut c);
        c.idle_tick(t0 + Duration::from_secs(3600));
        assert!(drain(&mut c).is_empty(), "never standby during a call");
        let end = t0 + Duration::from_secs(3600);
        c.call_ended(end);
        c.idle_tick(end + Duration::from_secs(599));
        assert!(drain(&mut c).is_empty());
        c.idle_tick(end + Duration::from_secs(600));
        assert_eq!(drain(&mut c), ["40:36"]);
        c.idle_tick(end + Duration::from_secs(1200));
        assert!(drain(&mut c).is_empty(), "standby is sent once");
        // A key on the room remote wakes the TV again.
        c.user_activity(end + Duration::from_secs(1300));
        assert_eq!(drain(&mut c), ["40:04", "4f:82:10:00"]);
        // Time going backwards (clock adjusted) does not panic or trigger.
        c.idle_tick(t0);
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn standby_disabled() {
        let t0 = Instant::now();
        let mut c = tv(
            TvControlConfig {
                standby_after: None,
                ..TvControlConfig::default()
            },
            t0,
        );
        c.idle_tick(t0 + Duration::from_secs(86_400));
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn tv_remote_keys_become_events_with_repeat() {
        let t0 = Instant::now();
        let mut c = tv(TvControlConfig::default(), t0);
        for hex in [
            "04:44:00", "04:44:00", "04:45", "04:44:41", "04:44:44", "04:45",
        ] {
            c.message_received(t0, &msg(hex));
        }
        assert_eq!(
            drain(&mut c),
            ["key ok Pressed", "key ok Repeat", "key volume_up Pressed"]
        );
        // Keys addressed to another device are not ours.
        c.message_received(t0, &msg("08:44:00"));
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn answers_tv_queries() {
        let t0 = Instant::now();
        let mut c = tv(TvControlConfig::default(), t0);
        c.message_received(t0, &msg("04:8f"));
        c.message_received(t0, &msg("04:46"));
        c.message_received(t0, &msg("04:8d:02"));
        c.message_received(t0, &msg("04:a0:00:00:f0")); // vendor command: unknown to us
        c.message_received(t0, &msg("04:83")); // kernel answers this one
        c.message_received(t0, &msg("04:00:44:00")); // never feature-abort a feature abort
        c.message_received(t0, &msg("44:46")); // our own echo
        assert_eq!(
            drain(&mut c),
            [
                "40:90:00",
                "40:47:44:69:65:6d:20:63:61:75",
                "40:8e:00",
                "40:00:a0:00"
            ]
        );
    }

    #[test]
    fn follows_routing() {
        let t0 = Instant::now();
        let mut c = tv(TvControlConfig::default(), t0);
        c.message_received(t0, &msg("0f:85"));
        assert!(drain(&mut c).is_empty(), "not active: stay quiet");
        c.message_received(t0, &msg("0f:86:10:00"));
        assert_eq!(drain(&mut c), ["4f:82:10:00"]);
        assert!(c.is_active_source());
        c.message_received(t0, &msg("0f:85"));
        assert_eq!(drain(&mut c), ["4f:82:10:00"]);
        c.message_received(t0, &msg("8f:82:20:00"));
        assert!(!c.is_active_source());
        c.message_received(t0, &msg("0f:85"));
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn tv_standby_suppresses_our_standby() {
        let t0 = Instant::now();
        let mut c = tv(TvControlConfig::default(), t0);
        c.message_received(t0, &msg("0f:36"));
        c.idle_tick(t0 + Duration::from_secs(86_400));
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn flush_transmits_and_survives_nacks() {
        let t0 = Instant::now();
        let mut dev = FakeCec::new(PhysicalAddress(0x1000));
        let probe = dev.clone();
        let la = dev.claim_playback("Diem cau").unwrap();
        assert_eq!(probe.osd_name().as_deref(), Some("Diem cau"));
        let pa = dev.physical_address().unwrap();
        let mut c = TvControl::new(TvControlConfig::default(), la, pa, t0);
        probe.set_absent(LogicalAddress::TV);
        c.call_started(t0);
        probe.inject(msg("04:44:01"));
        while let Some(m) = dev.receive(Duration::ZERO).unwrap() {
            c.message_received(t0, &m);
        }
        let keys = c.flush(&mut dev);
        assert_eq!(keys, [KeyEvent::pressed(RemoteKey::Up)]);
        let sent: Vec<String> = probe.take_sent().iter().map(CecMessage::to_hex).collect();
        assert_eq!(sent, ["40:04", "4f:82:10:00"]);
        assert!(probe.sent().is_empty());
    }

    #[test]
    fn fake_refuses_transmit_before_claim() {
        let mut dev = FakeCec::new(PhysicalAddress(0x1000));
        assert!(matches!(
            dev.transmit(&msg("40:04")),
            Err(CecError::NotReady(_))
        ));
    }

    #[test]
    fn config_reads_from_toml() {
        let cfg: TvControlConfig =
            toml::from_str("standby_after = 900\nosd_name = \"Xa Tan Phu\"\n").unwrap();
        assert_eq!(cfg.standby_after, Some(Duration::from_secs(900)));
        assert!(cfg.wake_on_meeting);
        assert!(toml::from_str::<TvControlConfig>("standby = 1\n").is_err());
    }
}
