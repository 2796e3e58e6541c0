//! The real [`CecDevice`]: the Linux CEC API on `/dev/cecN`.
//!
//! [`LinuxCec::open`] checks the adapter's capabilities (`CEC_ADAP_G_CAPS`) and makes us
//! initiator and follower (`CEC_S_MODE`); [`CecDevice::claim_playback`] configures one
//! Playback logical address with our OSD name (`CEC_ADAP_S_LOG_ADDRS`); messages go
//! through `CEC_TRANSMIT` and `CEC_RECEIVE` on a blocking descriptor. The raw ioctls and
//! the `struct cec_msg` layout live in the crate's `sys` module; this file converts
//! between those raw structures and [`CecMessage`] without trusting any kernel field
//! (a bad `len` is an error, not a panic).
//!
//! The kernel answers Give Physical Address, Get CEC Version and Give Device Vendor ID
//! itself; everything else addressed to us reaches [`CecDevice::receive`] and should be
//! handed to [`crate::cec::TvControl`].

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cec::{
    CEC_MAX_MSG_SIZE, CecDecodeError, CecDevice, CecError, CecMessage, LogicalAddress,
    PhysicalAddress, sanitize_osd_name,
};
use crate::sys::{self, CecCapsRaw, CecLogAddrsRaw, CecMsgRaw};

/// `CEC_CAP_PHYS_ADDR`: userspace must set the physical address.
pub const CEC_CAP_PHYS_ADDR: u32 = 1 << 0;
/// `CEC_CAP_LOG_ADDRS`: userspace configures logical addresses.
pub const CEC_CAP_LOG_ADDRS: u32 = 1 << 1;
/// `CEC_CAP_TRANSMIT`: the adapter can transmit.
pub const CEC_CAP_TRANSMIT: u32 = 1 << 2;
/// `CEC_CAP_RC`: remote-control keys are passed to an rc input device as well.
pub const CEC_CAP_RC: u32 = 1 << 4;

const CEC_MODE_INITIATOR: u32 = 0x1;
const CEC_MODE_FOLLOWER: u32 = 0x10;

const CEC_TX_STATUS_OK: u8 = 1 << 0;
const CEC_TX_STATUS_NACK: u8 = 1 << 2;
const CEC_RX_STATUS_OK: u8 = 1 << 0;

const CEC_LOG_ADDR_INVALID: u8 = 0xff;
const CEC_LOG_ADDR_TYPE_PLAYBACK: u8 = 3;
const CEC_OP_PRIM_DEVTYPE_PLAYBACK: u8 = 4;
const CEC_OP_ALL_DEVTYPE_PLAYBACK: u8 = 0x10;
const CEC_OP_CEC_VERSION_1_4: u8 = 5;
const CEC_VENDOR_ID_NONE: u32 = 0xffff_ffff;
const CEC_LOG_ADDRS_FL_ALLOW_UNREG_FALLBACK: u32 = 1 << 0;

/// What the adapter says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CecCaps {
    /// Driver name (`"vc4_hdmi"`, `"dw_hdmi"`).
    pub driver: String,
    /// Adapter name.
    pub name: String,
    /// How many logical addresses it can hold.
    pub available_log_addrs: u32,
    /// `CEC_CAP_*` bits.
    pub capabilities: u32,
    /// Kernel CEC API version.
    pub version: u32,
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl CecCaps {
    fn from_raw(raw: &CecCapsRaw) -> Self {
        CecCaps {
            driver: c_string(&raw.driver),
            name: c_string(&raw.name),
            available_log_addrs: raw.available_log_addrs,
            capabilities: raw.capabilities,
            version: raw.version,
        }
    }
}

/// Fills a raw `cec_msg` for `CEC_TRANSMIT` (no reply awaited).
fn msg_to_raw(msg: &CecMessage) -> CecMsgRaw {
    let bytes = msg.to_bytes();
    let mut raw = CecMsgRaw::default();
    let n = bytes.len().min(CEC_MAX_MSG_SIZE);
    raw.msg[..n].copy_from_slice(&bytes[..n]);
    raw.len = n as u32;
    raw
}

/// Reads a received raw `cec_msg`, refusing impossible lengths.
fn msg_from_raw(raw: &CecMsgRaw) -> Result<CecMessage, CecDecodeError> {
    let len = raw.len as usize;
    if len > CEC_MAX_MSG_SIZE {
        return Err(CecDecodeError::TooLong(len));
    }
    CecMessage::from_bytes(&raw.msg[..len])
}

/// Checks the transmit result the kernel wrote back.
fn tx_result(raw: &CecMsgRaw, destination: LogicalAddress) -> Result<(), CecError> {
    if raw.tx_status & CEC_TX_STATUS_OK != 0 {
        Ok(())
    } else if raw.tx_status & CEC_TX_STATUS_NACK != 0 {
        Err(CecError::Nack { destination })
    } else {
        Err(CecError::TransmitFailed {
            status: raw.tx_status,
        })
    }
}

/// The log-address request for one Playback device named `osd_name`.
fn playback_log_addrs(osd_name: &str) -> CecLogAddrsRaw {
    let mut la = CecLogAddrsRaw {
        cec_version: CEC_OP_CEC_VERSION_1_4,
        num_log_addrs: 1,
        vendor_id: CEC_VENDOR_ID_NONE,
        flags: CEC_LOG_ADDRS_FL_ALLOW_UNREG_FALLBACK,
        ..CecLogAddrsRaw::default()
    };
    let name = sanitize_osd_name(osd_name);
    // osd_name is 15 bytes: up to 14 characters and a NUL.
    la.osd_name[..name.len()].copy_from_slice(name.as_bytes());
    la.primary_device_type[0] = CEC_OP_PRIM_DEVTYPE_PLAYBACK;
    la.log_addr_type[0] = CEC_LOG_ADDR_TYPE_PLAYBACK;
    la.all_device_types[0] = CEC_OP_ALL_DEVTYPE_PLAYBACK;
    la
}

/// A Linux CEC adapter (`/dev/cec0`).
#[derive(Debug)]
pub struct LinuxCec {
    file: File,
    path: PathBuf,
    caps: CecCaps,
}

impl LinuxCec {
    /// Opens the adapter, checks it can transmit, and becomes initiator and follower.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CecError> {
        let path = path.as_ref().to_owned();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| io_err("open", &path, source))?;
        let caps = sys::cec_adap_g_caps(&file)
            .map(|raw| CecCaps::from_raw(&raw))
            .map_err(|source| io_err("CEC_ADAP_G_CAPS", &path, source))?;
        if caps.capabilities & CEC_CAP_TRANSMIT == 0 {
            return Err(CecError::NotCapable {
                device: path.display().to_string(),
                missing: "CEC_CAP_TRANSMIT",
            });
        }
        let dev = LinuxCec { file, path, caps };
        dev.retry("CEC_S_MODE", |f| {
            sys::cec_s_mode(f, CEC_MODE_INITIATOR | CEC_MODE_FOLLOWER)
        })?;
        tracing::info!(device = %dev.path.display(), driver = %dev.caps.driver, "CEC adapter opened");
        Ok(dev)
    }

    /// The adapter's capabilities.
    pub fn caps(&self) -> &CecCaps {
        &self.caps
    }

    fn retry<T>(
        &self,
        op: &'static str,
        mut f: impl FnMut(&File) -> io::Result<T>,
    ) -> Result<T, CecError> {
        loop {
            match f(&self.file) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map_err(|source| io_err(op, &self.path, source)),
            }
        }
    }
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> CecError {
    CecError::Io {
        op,
        device: path.display().to_string(),
        source,
    }
}

impl CecDevice for LinuxCec {
    fn claim_playback(&mut self, osd_name: &str) -> Result<LogicalAddress, CecError> {
        let current = self.retry("CEC_ADAP_G_LOG_ADDRS", sys::cec_adap_g_log_addrs)?;
        if self.caps.capabilities & CEC_CAP_LOG_ADDRS == 0 {
            // The driver or another tool configures addresses; use what is there.
            return LogicalAddress::new(current.log_addr[0]).ok_or(CecError::NoLogicalAddress);
        }
        if current.num_log_addrs > 0 {
            // Reconfiguring a configured adapter fails with EBUSY: clear it first.
            let mut clear = CecLogAddrsRaw::default();
            self.retry("CEC_ADAP_S_LOG_ADDRS", |f| {
                sys::cec_adap_s_log_addrs(f, &mut clear)
            })?;
        }
        let mut la = playback_log_addrs(osd_name);
        // Blocking descriptor: returns once claiming is done, when a TV is connected.
        self.retry("CEC_ADAP_S_LOG_ADDRS", |f| {
            sys::cec_adap_s_log_addrs(f, &mut la)
        })?;
        match la.log_addr[0] {
            CEC_LOG_ADDR_INVALID => {
                if self.physical_address()?.is_valid() {
                    Err(CecError::NoLogicalAddress)
                } else {
                    Err(CecError::NotReady(
                        "no physical address; the kernel claims one when a TV is connected",
                    ))
                }
            }
            n => LogicalAddress::new(n).ok_or(CecError::NoLogicalAddress),
        }
    }

    fn physical_address(&mut self) -> Result<PhysicalAddress, CecError> {
        self.retry("CEC_ADAP_G_PHYS_ADDR", sys::cec_adap_g_phys_addr)
            .map(PhysicalAddress)
    }

    fn transmit(&mut self, msg: &CecMessage) -> Result<(), CecError> {
        let mut raw = msg_to_raw(msg);
        match self.retry("CEC_TRANSMIT", |f| sys::cec_transmit(f, &mut raw)) {
            Err(CecError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENONET) => {
                return Err(CecError::NotReady("no logical address claimed"));
            }
            other => other?,
        }
        tx_result(&raw, msg.destination)
    }

    fn receive(&mut self, timeout: Duration) -> Result<Option<CecMessage>, CecError> {
        let mut raw = CecMsgRaw {
            // 0 would mean "wait forever".
            timeout: timeout.as_millis().clamp(1, u128::from(u32::MAX)) as u32,
            ..CecMsgRaw::default()
        };
        match self.retry("CEC_RECEIVE", |f| sys::cec_receive(f, &mut raw)) {
            Err(CecError::Io { source, .. }) if source.raw_os_error() == Some(libc::ETIMEDOUT) => {
                return Ok(None);
            }
            other => other?,
        }
        if raw.rx_status & CEC_RX_STATUS_OK == 0 && raw.rx_status != 0 {
            tracing::debug!(rx_status = raw.rx_status, "CEC receive with error status");
        }
        msg_from_raw(&raw).map(Some).map_err(CecError::Decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_messages_round_trip() {
        let m = CecMessage::from_hex("4f:82:10:00").unwrap();
        let raw = msg_to_raw(&m);
        assert_eq!(raw.len, 4);
        assert_eq!(&raw.msg[..4], &[0x4f, 0x82, 0x10, 0x00]);
        assert_eq!(raw.timeout, 0);
        assert_eq!(msg_from_raw(&raw), Ok(m));
    }

    #[test]
    fn raw_messages_with_bad_lengths_are_errors() {
        let mut raw = CecMsgRaw::default();
        assert_eq!(msg_from_raw(&raw), Err(CecDecodeError::Empty));
        raw.len = 1;
        assert_eq!(msg_from_raw(&raw), Err(CecDecodeError::Poll));
        raw.len = 17;
        assert_eq!(msg_from_raw(&raw), Err(CecDecodeError::TooLong(17)));
        raw.len = u32::MAX;
        assert!(msg_from_raw(&raw).is_err());
    }

    #[test]
    fn tx_status_is_interpreted() {
        let mut raw = CecMsgRaw {
            tx_status: CEC_TX_STATUS_OK,
            ..CecMsgRaw::default()
        };
        assert!(tx_result(&raw, LogicalAddress::TV).is_ok());
        raw.tx_status = CEC_TX_STATUS_NACK | 0x20; // NACK | MAX_RETRIES
        assert!(matches!(
            tx_result(&raw, LogicalAddress::TV),
            Err(CecError::Nack { destination }) if destination == LogicalAddress::TV
        ));
        raw.tx_status = 0x10 | 0x20; // ERROR | MAX_RETRIES
        assert!(matches!(
            tx_result(&raw, LogicalAddress::TV),
            Err(CecError::TransmitFailed { status: 0x30 })
        ));
    }

    #[test]
    fn playback_request_matches_cec_ctl_playback() {
        let la = playback_log_addrs("Diem cau");
        assert_eq!(la.num_log_addrs, 1);
        assert_eq!(&la.osd_name[..9], b"Diem cau\0");
        assert_eq!(la.log_addr_type[0], 3);
        assert_eq!(la.primary_device_type[0], 4);
        assert_eq!(la.all_device_types[0], 0x10);
        assert_eq!(la.vendor_id, 0xffff_ffff);
        let long = playback_log_addrs("Điểm cầu xã Tân Phú, huyện X");
        assert_eq!(long.osd_name[14], 0, "always NUL-terminated");
    }

    #[test]
    fn caps_strings_need_no_nul() {
        let raw = CecCapsRaw {
            driver: [b'x'; 32],
            ..CecCapsRaw::default()
        };
        let caps = CecCaps::from_raw(&raw);
        assert_eq!(caps.driver.len(), 32);
        assert_eq!(caps.name, "");
    }

    #[test]
    fn open_reports_missing_device_and_non_cec_files() {
        let err = LinuxCec::open("/nonexistent/cec0").unwrap_err();
        assert!(matches!(err, CecError::Io { op: "open", .. }));
        let f = tempfile::NamedTempFile::new().unwrap();
        let err = LinuxCec::open(f.path()).unwrap_err();
        match err {
            CecError::Io { op, source, .. } => {
                assert_eq!(op, "CEC_ADAP_G_CAPS");
                assert_eq!(source.raw_os_error(), Some(libc::ENOTTY));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
