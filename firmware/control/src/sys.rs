//! The only place with `unsafe`: raw ioctls for CEC, the watchdog and evdev.
//!
//! Each wrapper takes a borrowed file descriptor and a properly sized, `#[repr(C)]`
//! structure that mirrors the kernel UAPI header it comes from (`linux/cec.h`,
//! `linux/watchdog.h`, `linux/input.h`). Sizes and request numbers are checked at compile
//! time against the values the kernel headers produce, so a layout mistake fails the
//! build instead of corrupting memory on a board. Request numbers use the generic
//! `_IOC` encoding shared by ARM, AArch64, x86 and RISC-V.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

#[cfg(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
compile_error!("sys.rs encodes ioctl numbers with the generic _IOC layout only");

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)` from `asm-generic/ioctl.h`.
const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    assert!(size < (1 << 14));
    (dir << 30) | ((size as u32) << 16) | ((ty as u32) << 8) | nr as u32
}
const fn ior(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_READ, ty, nr, size)
}
const fn iow(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_WRITE, ty, nr, size)
}
const fn iowr(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size)
}

/// `struct cec_msg` from `linux/cec.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CecMsgRaw {
    pub tx_ts: u64,
    pub rx_ts: u64,
    pub len: u32,
    pub timeout: u32,
    pub sequence: u32,
    pub flags: u32,
    pub msg: [u8; 16],
    pub reply: u8,
    pub rx_status: u8,
    pub tx_status: u8,
    pub tx_arb_lost_cnt: u8,
    pub tx_nack_cnt: u8,
    pub tx_low_drive_cnt: u8,
    pub tx_error_cnt: u8,
}

/// `struct cec_caps` from `linux/cec.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CecCapsRaw {
    pub driver: [u8; 32],
    pub name: [u8; 32],
    pub available_log_addrs: u32,
    pub capabilities: u32,
    pub version: u32,
}

/// `CEC_MAX_LOG_ADDRS`.
pub const CEC_MAX_LOG_ADDRS: usize = 4;

/// `struct cec_log_addrs` from `linux/cec.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CecLogAddrsRaw {
    pub log_addr: [u8; CEC_MAX_LOG_ADDRS],
    pub log_addr_mask: u16,
    pub cec_version: u8,
    pub num_log_addrs: u8,
    pub vendor_id: u32,
    pub flags: u32,
    pub osd_name: [u8; 15],
    pub primary_device_type: [u8; CEC_MAX_LOG_ADDRS],
    pub log_addr_type: [u8; CEC_MAX_LOG_ADDRS],
    pub all_device_types: [u8; CEC_MAX_LOG_ADDRS],
    pub features: [[u8; 12]; CEC_MAX_LOG_ADDRS],
}

const _: () = assert!(size_of::<CecMsgRaw>() == 56);
const _: () = assert!(align_of::<CecMsgRaw>() == 8);
const _: () = assert!(std::mem::offset_of!(CecMsgRaw, msg) == 32);
const _: () = assert!(std::mem::offset_of!(CecMsgRaw, tx_error_cnt) == 54);
const _: () = assert!(size_of::<CecCapsRaw>() == 76);
const _: () = assert!(size_of::<CecLogAddrsRaw>() == 92);
const _: () = assert!(std::mem::offset_of!(CecLogAddrsRaw, osd_name) == 16);
const _: () = assert!(std::mem::offset_of!(CecLogAddrsRaw, features) == 43);

pub const CEC_ADAP_G_CAPS: u32 = iowr(b'a', 0, size_of::<CecCapsRaw>());
pub const CEC_ADAP_G_PHYS_ADDR: u32 = ior(b'a', 1, size_of::<u16>());
pub const CEC_ADAP_G_LOG_ADDRS: u32 = ior(b'a', 3, size_of::<CecLogAddrsRaw>());
pub const CEC_ADAP_S_LOG_ADDRS: u32 = iowr(b'a', 4, size_of::<CecLogAddrsRaw>());
pub const CEC_TRANSMIT: u32 = iowr(b'a', 5, size_of::<CecMsgRaw>());
pub const CEC_RECEIVE: u32 = iowr(b'a', 6, size_of::<CecMsgRaw>());
pub const CEC_S_MODE: u32 = iow(b'a', 9, size_of::<u32>());

// Values produced by the C headers (checked with a C compiler on x86-64 and arm64).
const _: () = assert!(CEC_ADAP_G_CAPS == 0xc04c_6100);
const _: () = assert!(CEC_ADAP_G_PHYS_ADDR == 0x8002_6101);
const _: () = assert!(CEC_ADAP_G_LOG_ADDRS == 0x805c_6103);
const _: () = assert!(CEC_ADAP_S_LOG_ADDRS == 0xc05c_6104);
const _: () = assert!(CEC_TRANSMIT == 0xc038_6105);
const _: () = assert!(CEC_RECEIVE == 0xc038_6106);
const _: () = assert!(CEC_S_MODE == 0x4004_6109);

pub const WDIOC_KEEPALIVE: u32 = ior(b'W', 5, size_of::<libc::c_int>());
pub const WDIOC_SETTIMEOUT: u32 = iowr(b'W', 6, size_of::<libc::c_int>());
pub const WDIOC_GETTIMEOUT: u32 = ior(b'W', 7, size_of::<libc::c_int>());
const _: () = assert!(WDIOC_KEEPALIVE == 0x8004_5705);
const _: () = assert!(WDIOC_SETTIMEOUT == 0xc004_5706);
const _: () = assert!(WDIOC_GETTIMEOUT == 0x8004_5707);

pub const EVIOCGRAB: u32 = iow(b'E', 0x90, size_of::<libc::c_int>());
const _: () = assert!(EVIOCGRAB == 0x4004_4590);

/// Runs `ioctl(fd, request, arg)` and maps `-1` to the thread's `errno`.
///
/// # Safety
/// `arg` must be what the kernel expects for `request`: a pointer to a live, writable
/// object of exactly the size encoded in `request`, or an integer for by-value requests.
unsafe fn ioctl_raw<F: AsFd>(fd: &F, request: u32, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: forwarded from the caller's contract; the fd is borrowed, so it stays open
    // for the duration of the call. The request type differs between libcs (`c_ulong` in
    // glibc, `c_int` in musl), hence the inferred cast.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), request as _, arg) };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An ioctl whose argument is a pointer to `T`, which the kernel may read and write.
fn ioctl_ptr<F: AsFd, T: Copy>(fd: &F, request: u32, arg: &mut T) -> io::Result<()> {
    debug_assert_eq!(((request >> 16) & 0x3fff) as usize, size_of::<T>());
    // SAFETY: `arg` is a unique reference to a `T` whose size matches the one encoded in
    // `request` (checked by the const asserts above for every request used with this
    // function, and by the debug assert), and every `T` used here is a plain `repr(C)`
    // struct or integer for which any bit pattern the kernel writes is valid.
    unsafe { ioctl_raw(fd, request, arg as *mut T as libc::c_ulong) }.map(|_| ())
}

pub fn cec_adap_g_caps<F: AsFd>(fd: &F) -> io::Result<CecCapsRaw> {
    let mut caps = CecCapsRaw::default();
    ioctl_ptr(fd, CEC_ADAP_G_CAPS, &mut caps)?;
    Ok(caps)
}

pub fn cec_adap_g_phys_addr<F: AsFd>(fd: &F) -> io::Result<u16> {
    let mut pa: u16 = 0;
    ioctl_ptr(fd, CEC_ADAP_G_PHYS_ADDR, &mut pa)?;
    Ok(pa)
}

pub fn cec_adap_g_log_addrs<F: AsFd>(fd: &F) -> io::Result<CecLogAddrsRaw> {
    let mut la = CecLogAddrsRaw::default();
    ioctl_ptr(fd, CEC_ADAP_G_LOG_ADDRS, &mut la)?;
    Ok(la)
}

pub fn cec_adap_s_log_addrs<F: AsFd>(fd: &F, la: &mut CecLogAddrsRaw) -> io::Result<()> {
    ioctl_ptr(fd, CEC_ADAP_S_LOG_ADDRS, la)
}

pub fn cec_transmit<F: AsFd>(fd: &F, msg: &mut CecMsgRaw) -> io::Result<()> {
    ioctl_ptr(fd, CEC_TRANSMIT, msg)
}

pub fn cec_receive<F: AsFd>(fd: &F, msg: &mut CecMsgRaw) -> io::Result<()> {
    ioctl_ptr(fd, CEC_RECEIVE, msg)
}

pub fn cec_s_mode<F: AsFd>(fd: &F, mode: u32) -> io::Result<()> {
    let mut mode = mode;
    ioctl_ptr(fd, CEC_S_MODE, &mut mode)
}

/// Sets the watchdog timeout; returns the timeout the driver actually applied.
pub fn wdioc_settimeout<F: AsFd>(fd: &F, seconds: libc::c_int) -> io::Result<libc::c_int> {
    let mut t = seconds;
    ioctl_ptr(fd, WDIOC_SETTIMEOUT, &mut t)?;
    Ok(t)
}

pub fn wdioc_gettimeout<F: AsFd>(fd: &F) -> io::Result<libc::c_int> {
    let mut t: libc::c_int = 0;
    ioctl_ptr(fd, WDIOC_GETTIMEOUT, &mut t)?;
    Ok(t)
}

/// Registers an owned file with tokio's reactor (must run inside a runtime).
pub fn async_fd(file: std::fs::File) -> io::Result<tokio::io::unix::AsyncFd<std::fs::File>> {
    // SAFETY: `File` owns its descriptor and returns the same one from every `as_raw_fd`
    // call; the `AsyncFd` takes ownership of the `File`, so the descriptor stays open and
    // refers to the same file description until the `AsyncFd` is dropped.
    unsafe { tokio::io::unix::AsyncFd::register(file) }.map_err(io::Error::from)
}

/// Grabs (or releases) an evdev device so its keys reach only us: not the console, not
/// systemd-logind (which would power the board off on `KEY_POWER`).
pub fn eviocgrab<F: AsFd>(fd: &F, grab: bool) -> io::Result<()> {
    // SAFETY: EVIOCGRAB takes its argument by value (an int flag), not a pointer.
    unsafe { ioctl_raw(fd, EVIOCGRAB, libc::c_ulong::from(grab)) }.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctls_on_a_regular_file_fail_cleanly() {
        let f = tempfile::tempfile().unwrap();
        let err = cec_adap_g_caps(&f).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
        assert!(wdioc_settimeout(&f, 30).is_err());
        assert!(eviocgrab(&f, true).is_err());
    }
}
