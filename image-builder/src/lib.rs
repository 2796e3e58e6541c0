//! `diemcau-image`: everything about the room's SD-card image. The image is
//! described as data ([`spec`], `images/*.toml`) and validated before
//! anything runs; [`layout`] places the partitions (boot FAT, root A, root
//! B, data); [`rootfs`] makes the Debian root file system with mmdebstrap
//! (cached by its package list) and lays the product and its hardening on
//! top ([`overlay`], [`deb`]); [`disk`] assembles the image file without
//! mounting anything; [`sbom`] writes the SBOM, checksum and manifest beside
//! it. After the build, [`customise`] writes a site's provisioning file onto
//! the boot partition, [`flash`] writes a card safely and checks it, and
//! [`boottest`] boots the qemu-virt image under emulation. The binary
//! (`src/main.rs`) is only argument parsing and wiring.

pub mod boottest;
pub mod build;
pub mod customise;
pub mod deb;
pub mod disk;
pub mod flash;
pub mod layout;
pub mod overlay;
pub mod progress;
pub mod rootfs;
pub mod sbom;
pub mod spec;
pub mod tools;
pub mod tree;

use sha2::{Digest, Sha256};

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of a file. Files over 1 MiB go through coreutils'
/// `sha256sum` when it is there (much faster than this crate's code in a
/// debug build, which CI runs: the root tree digest took a minute with the
/// old 64 MiB threshold); otherwise they are streamed through `sha2`.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    let len = std::fs::metadata(path)?.len();
    if len > 1 << 20
        && let Some(tool) = tools::which("sha256sum")
        && let Ok(out) = std::process::Command::new(tool).arg(path).output()
        && out.status.success()
        && let Some(h) = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
        && h.len() == 64
    {
        return Ok(h.to_owned());
    }
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex(&h.finalize()))
}

/// The fixed time stamp of everything the builder writes, unless
/// `SOURCE_DATE_EPOCH` says otherwise: 2026-01-01 00:00:00 UTC.
pub const DEFAULT_EPOCH: i64 = 1_767_225_600;

/// `SOURCE_DATE_EPOCH` from the environment, or [`DEFAULT_EPOCH`].
pub fn source_date_epoch() -> i64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_EPOCH)
}
