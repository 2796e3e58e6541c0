//! Packaging the cross-compiled daemon as a Debian package: the aarch64
//! binary (checked to be one), its sandboxed systemd unit
//! (`files/diemcau.service`, exposure 1.5 by `systemd-analyze security`),
//! the sysusers entry that creates the `diemcau` account without a
//! password, udev rules for the device groups and the default room.toml.
//! Built with `dpkg-deb --root-owner-group -Zzstd` (xz took 20 to 40 s on a
//! debug daemon here) and `SOURCE_DATE_EPOCH`, so the
//! same binary gives the same .deb.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::spec::Board;
use crate::tools::{self, ToolError};

/// The systemd unit shipped in the package.
pub const UNIT: &str = include_str!("../files/diemcau.service");

/// Why packaging failed.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("cannot read the daemon binary {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not an aarch64 Linux executable ({found}); build it with scripts/cross/build-aarch64.sh and pass target/aarch64-unknown-linux-gnu/release/diemcau"
    )]
    WrongArch { path: PathBuf, found: String },
    #[error("cannot lay out the package tree")]
    Io(#[source] std::io::Error),
    #[error("dpkg-deb failed")]
    Tool(#[source] ToolError),
}

/// Checks the ELF header: 64-bit little-endian, machine AArch64 (183).
pub fn check_aarch64(path: &Path) -> Result<(), DebError> {
    use std::io::Read;
    let mut h = [0u8; 20];
    let mut f = std::fs::File::open(path).map_err(|source| DebError::Read {
        path: path.to_owned(),
        source,
    })?;
    let n = f.read(&mut h).map_err(|source| DebError::Read {
        path: path.to_owned(),
        source,
    })?;
    let wrong = |found: &str| DebError::WrongArch {
        path: path.to_owned(),
        found: found.to_owned(),
    };
    if n < 20 || &h[..4] != b"\x7fELF" {
        return Err(wrong("not an ELF file"));
    }
    let machine = u16::from_le_bytes([h[18], h[19]]);
    match (h[4], h[5], machine) {
        (2, 1, 183) => Ok(()),
        (_, _, 62) => Err(wrong("x86-64")),
        (_, _, 40) => Err(wrong("32-bit ARM")),
        (_, _, m) => Err(wrong(&format!("ELF machine {m}"))),
    }
}

/// Package version: the workspace version plus the binary's hash, so a new
/// daemon build is a new package version.
pub fn version_for(binary_sha256: &str) -> String {
    format!("{}+g{}", env!("CARGO_PKG_VERSION"), &binary_sha256[..12])
}

/// The room.toml the package ships for `board`: the board's profile
/// (`auto`: detected from the devicetree on real boards; `sim` on QEMU's
/// virt machine, which has no camera, sound card or display) and the
/// `[district]` section, so the room enrols with the provisioning file.
pub fn room_toml(board: Board) -> String {
    let (profile, media) = match board {
        Board::Rpi4 | Board::Rpi5 => (
            "auto",
            "# The room screen (idle with the next meeting, joining, incoming urgent\n\
             # meeting, the call, errors) on the board's HDMI display.\n\
             video_out = \"screen\"\naudio_out = \"device\"\n",
        ),
        Board::QemuVirt => (
            board.daemon_profile(),
            "# QEMU's virt machine: test pattern and tone out, nothing to show or\n\
             # play the far end on.\n\
             video_out = \"none\"\naudio_out = \"none\"\n",
        ),
    };
    include_str!("../files/room.toml")
        .replace("@BOARD@", profile)
        .replace("@MEDIA@", media)
}

/// Builds `diemcau_<version>_arm64.deb` in `out_dir` for `board`; returns
/// its path.
pub fn build_deb(
    daemon: &Path,
    board: Board,
    out_dir: &Path,
    epoch: i64,
) -> Result<PathBuf, DebError> {
    check_aarch64(daemon)?;
    let sha = crate::sha256_file(daemon).map_err(|source| DebError::Read {
        path: daemon.to_owned(),
        source,
    })?;
    let version = version_for(&sha);
    let work = tempfile::tempdir().map_err(DebError::Io)?;
    let root = work.path().join("pkg");
    let put = |rel: &str, mode: u32, data: &[u8]| -> std::io::Result<()> {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent"))?;
        std::fs::write(&p, data)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
    };
    let bin = std::fs::read(daemon).map_err(|source| DebError::Read {
        path: daemon.to_owned(),
        source,
    })?;
    let installed_size = bin.len() / 1024 + 16;
    let control = format!(
        "Package: diemcau\n\
         Version: {version}\n\
         Architecture: arm64\n\
         Maintainer: diemcau <diemcau@example.invalid>\n\
         Installed-Size: {installed_size}\n\
         Depends: libgstreamer1.0-0, gstreamer1.0-plugins-base, gstreamer1.0-plugins-good, gstreamer1.0-plugins-bad, gstreamer1.0-nice, systemd\n\
         Section: video\n\
         Priority: optional\n\
         Description: diemcau room daemon\n \
         Joins the commune meeting room to the district conference (Janus).\n"
    );
    (|| -> std::io::Result<()> {
        put("usr/bin/diemcau", 0o755, &bin)?;
        put("lib/systemd/system/diemcau.service", 0o644, UNIT.as_bytes())?;
        put(
            "usr/lib/sysusers.d/diemcau.conf",
            0o644,
            include_bytes!("../files/sysusers.conf"),
        )?;
        put(
            "usr/lib/udev/rules.d/60-diemcau.rules",
            0o644,
            include_bytes!("../files/udev.rules"),
        )?;
        put("etc/diemcau/room.toml", 0o644, room_toml(board).as_bytes())?;
        put(
            "usr/share/doc/diemcau/README",
            0o644,
            b"diemcau room daemon. See docs/technicians-guide.md in the source.\n",
        )?;
        put("DEBIAN/control", 0o644, control.as_bytes())?;
        put("DEBIAN/conffiles", 0o644, b"/etc/diemcau/room.toml\n")?;
        put(
            "DEBIAN/postinst",
            0o755,
            include_bytes!("../files/postinst"),
        )?;
        for d in ["", "usr", "usr/bin", "etc", "lib"] {
            std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::create_dir_all(out_dir)
    })()
    .map_err(DebError::Io)?;
    let out = out_dir.join(format!("diemcau_{version}_arm64.deb"));
    let mut c = tools::cmd("dpkg-deb").map_err(DebError::Tool)?;
    c.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["--root-owner-group", "-Zzstd", "-z3", "--build"])
        .arg(&root)
        .arg(&out);
    tools::run(c).map_err(DebError::Tool)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn host_binary_is_refused_with_a_hint() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("diemcau");
        std::fs::write(&p, elf(62)).unwrap();
        let e = check_aarch64(&p).unwrap_err().to_string();
        assert!(
            e.contains("x86-64") && e.contains("build-aarch64.sh"),
            "{e}"
        );
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        assert!(check_aarch64(&p).is_err());
    }

    #[test]
    fn builds_a_deb_with_the_unit() {
        if tools::which("dpkg-deb").is_none() {
            eprintln!("skipped: no dpkg-deb");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("diemcau");
        std::fs::write(&p, elf(183)).unwrap();
        let deb = build_deb(&p, Board::QemuVirt, d.path(), crate::DEFAULT_EPOCH).unwrap();
        let again = build_deb(
            &p,
            Board::QemuVirt,
            &d.path().join("b"),
            crate::DEFAULT_EPOCH,
        )
        .unwrap();
        assert_eq!(
            std::fs::read(&deb).unwrap(),
            std::fs::read(&again).unwrap(),
            "same inputs, same .deb"
        );
        let mut c = tools::cmd("dpkg-deb").unwrap();
        c.arg("--contents").arg(&deb);
        let list = String::from_utf8(tools::run(c).unwrap()).unwrap();
        for f in [
            "./usr/bin/diemcau",
            "./lib/systemd/system/diemcau.service",
            "./usr/lib/sysusers.d/diemcau.conf",
            "root/root",
        ] {
            assert!(list.contains(f), "{f} not in\n{list}");
        }
    }

    #[test]
    fn room_config_enrols_and_fits_the_board() {
        for b in [Board::Rpi4, Board::Rpi5, Board::QemuVirt] {
            let t = room_toml(b);
            let v: toml::Table = toml::from_str(&t).unwrap_or_else(|e| panic!("{b}: {e}\n{t}"));
            assert!(v.contains_key("district"), "{b}: no [district]\n{t}");
            assert!(!t.contains('@'), "{b}: placeholder left\n{t}");
        }
        let q: toml::Table = toml::from_str(&room_toml(Board::QemuVirt)).unwrap();
        assert_eq!(q["room"]["board"].as_str(), Some("sim"));
        assert_eq!(q["media"]["video_out"].as_str(), Some("none"));
        let p: toml::Table = toml::from_str(&room_toml(Board::Rpi4)).unwrap();
        assert_eq!(p["room"]["board"].as_str(), Some("auto"));
        assert_eq!(p["media"]["video_out"].as_str(), Some("screen"));
    }

    #[test]
    fn unit_has_the_required_directives() {
        for d in [
            "Type=notify",
            "WatchdogSec=",
            "User=diemcau",
            "SupplementaryGroups=video audio input gpio",
            "ProtectSystem=strict",
            "StateDirectory=diemcau",
            "RuntimeDirectory=diemcau",
            "ExecStart=/usr/bin/diemcau run --config /etc/diemcau/room.toml",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=\n",
            // The provisioning file is read once at start: after the FAT is
            // mounted (an emulated boot started the daemon before it).
            "boot-firmware.mount",
        ] {
            assert!(UNIT.contains(d), "{d}");
        }
    }

    /// `systemd-analyze security --offline=yes` on the unit file, where the
    /// host's systemd has it (252+): exposure must be at most 2.0.
    #[test]
    fn unit_exposure_is_at_most_2() {
        let Some(sa) = tools::which("systemd-analyze") else {
            eprintln!("skipped: no systemd-analyze");
            return;
        };
        let d = tempfile::tempdir().unwrap();
        let unit = d.path().join("diemcau.service");
        std::fs::write(&unit, UNIT).unwrap();
        let out = std::process::Command::new(sa)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&unit)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().find(|l| l.contains("Overall exposure level")) else {
            eprintln!(
                "skipped: this systemd-analyze has no --offline: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        };
        let level: f64 = line
            .split(':')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert!(level <= 2.0, "{line}");
    }
}
