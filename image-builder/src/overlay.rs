//! The product layer laid over the Debian root file system, as data: every
//! file the builder adds (fstab for the read-only root and the data
//! partition, nftables rules, journald size cap, networking, SSH that stays
//! off without a provisioned key, the technician account without a
//! password) is an [`OverlayFile`] computed from the spec and the layout,
//! so tests can read exactly what goes into the image without building it.
//! The templates live in `image-builder/files/`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::layout::Layout;
use crate::spec::{Board, ImageSpec, Role};

/// One file (or symlink) to place in the root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayFile {
    /// Absolute path inside the image, e.g. `/etc/fstab`.
    pub path: String,
    pub mode: u32,
    pub content: Content,
}

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Text(String),
    Symlink(String),
    Dir,
}

fn text(path: &str, mode: u32, s: impl Into<String>) -> OverlayFile {
    OverlayFile {
        path: path.to_owned(),
        mode,
        content: Content::Text(s.into()),
    }
}

fn dir(path: &str) -> OverlayFile {
    OverlayFile {
        path: path.to_owned(),
        mode: 0o755,
        content: Content::Dir,
    }
}

/// Where the data partition is mounted, and what is bound from it.
pub const DATA_MOUNT: &str = "/data";
/// `(directory on the data partition, mount point in the root)`.
pub const DATA_BINDS: &[(&str, &str)] = &[
    ("/data/lib/diemcau", "/var/lib/diemcau"),
    ("/data/lib/diemcau-ssh", "/var/lib/diemcau-ssh"),
    ("/data/lib/timesync", "/var/lib/systemd/timesync"),
    ("/data/log", "/var/log"),
];

/// The kernel command line.
pub fn cmdline(spec: &ImageSpec, layout: &Layout) -> String {
    let root = layout.partuuid(Role::RootA).unwrap_or_default();
    let mut s = format!(
        "console={} root=PARTUUID={root} rootfstype=ext4 ro rootwait fsck.repair=yes",
        spec.board.console()
    );
    if !spec.cmdline_extra.is_empty() {
        s.push(' ');
        s.push_str(&spec.cmdline_extra);
    }
    s
}

/// `/etc/fstab`: read-only root, boot read-only, data writable, tmpfs for scratch.
pub fn fstab(layout: &Layout) -> String {
    let p = |r| layout.partuuid(r).unwrap_or_default();
    let mut s = String::from("# diemcau: read-only root (slot A), writable data partition.\n");
    s.push_str(&format!(
        "PARTUUID={}\t/\text4\tro,noatime,errors=remount-ro\t0\t1\n",
        p(Role::RootA)
    ));
    s.push_str(&format!(
        "PARTUUID={}\t/boot/firmware\tvfat\tro,nofail,umask=0022,x-systemd.device-timeout=90s\t0\t2\n",
        p(Role::Boot)
    ));
    s.push_str(&format!(
        "PARTUUID={}\t{DATA_MOUNT}\text4\trw,noatime,nosuid,nodev\t0\t2\n",
        p(Role::Data)
    ));
    for (from, to) in DATA_BINDS {
        s.push_str(&format!(
            "{from}\t{to}\tnone\tbind,x-systemd.requires-mounts-for={DATA_MOUNT}\t0\t0\n"
        ));
    }
    s.push_str("tmpfs\t/tmp\ttmpfs\tnosuid,nodev,size=128M,mode=1777\t0\t0\n");
    s.push_str("tmpfs\t/var/tmp\ttmpfs\tnosuid,nodev,size=32M,mode=1777\t0\t0\n");
    s
}

/// nftables rules with the spec's extra ports.
pub fn nftables(spec: &ImageSpec) -> String {
    let mut extra = String::new();
    for p in &spec.firewall_allow_tcp {
        extra.push_str(&format!("\t\ttcp dport {p} accept\n"));
    }
    for p in &spec.firewall_allow_udp {
        extra.push_str(&format!("\t\tudp dport {p} accept\n"));
    }
    include_str!("../files/nftables.conf").replace("@EXTRA@", &extra)
}

/// `config.txt` for Raspberry Pi boards.
pub fn config_txt(spec: &ImageSpec) -> String {
    let mut s = String::from("# diemcau: written by diemcau-image from the image spec.\n");
    for l in &spec.config_txt {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Every file the product layer adds to the root file system.
pub fn files(spec: &ImageSpec, layout: &Layout) -> Vec<OverlayFile> {
    let mut v = vec![
        text("/etc/hostname", 0o644, format!("{}\n", spec.hostname)),
        text(
            "/etc/hosts",
            0o644,
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                spec.hostname
            ),
        ),
        text("/etc/fstab", 0o644, fstab(layout)),
        // Empty: systemd makes a transient id on the read-only root.
        text("/etc/machine-id", 0o444, ""),
        text("/etc/nftables.conf", 0o755, nftables(spec)),
        text(
            "/etc/systemd/journald.conf.d/diemcau.conf",
            0o644,
            include_str!("../files/journald.conf")
                .replace("@MAX@", &spec.journal_max_mib.to_string()),
        ),
        text(
            "/etc/systemd/network/20-wired.network",
            0o644,
            include_str!("../files/wired.network"),
        ),
        OverlayFile {
            path: "/etc/resolv.conf".into(),
            mode: 0o777,
            content: Content::Symlink("../run/systemd/resolve/stub-resolv.conf".into()),
        },
        text(
            "/usr/lib/sysusers.d/diemcau-technician.conf",
            0o644,
            "# diemcau: the technician's SSH account (key only, no password).\n\
             u technician - \"diemcau technician\" /var/lib/diemcau-ssh /bin/sh\n\
             m technician systemd-journal\n",
        ),
        // A firewall that fails to load must be seen on the console.
        text(
            "/etc/systemd/system/nftables.service.d/diemcau.conf",
            0o644,
            "[Service]\nStandardOutput=journal+console\nStandardError=journal+console\n",
        ),
        dir("/boot/firmware"),
        dir(DATA_MOUNT),
    ];
    for (_, to) in DATA_BINDS {
        v.push(dir(to));
    }
    if spec.has_package("openssh-server") {
        v.push(text(
            "/etc/ssh/sshd_config.d/diemcau.conf",
            0o644,
            include_str!("../files/sshd.conf"),
        ));
        v.push(text(
            "/etc/systemd/system/ssh.service.d/diemcau.conf",
            0o644,
            include_str!("../files/ssh-dropin.conf"),
        ));
        v.push(text(
            "/etc/systemd/system/diemcau-ssh-keys.service",
            0o644,
            include_str!("../files/ssh-keys.service"),
        ));
        v.push(text(
            "/usr/lib/diemcau/install-ssh-keys",
            0o755,
            include_str!("../files/install-ssh-keys"),
        ));
    }
    if spec.board == Board::QemuVirt {
        v.push(text(
            "/etc/systemd/system/diemcau-ready.service",
            0o644,
            include_str!("../files/ready.service"),
        ));
        // The emulated boot test reads the daemon's log (enrolment, the
        // join) from the serial console; a real board keeps it in the
        // journal only.
        v.push(text(
            "/etc/systemd/system/diemcau.service.d/console.conf",
            0o644,
            "# diemcau (qemu-virt): the daemon's log on the serial console too.\n\
             [Service]\nStandardOutput=journal+console\nStandardError=journal+console\n",
        ));
    }
    v
}

/// Units enabled (or disabled) in the image, with `systemctl --root`.
pub fn units_to_enable(spec: &ImageSpec) -> Vec<&'static str> {
    let mut v = vec![
        "nftables.service",
        "systemd-networkd.service",
        "systemd-resolved.service",
        "systemd-timesyncd.service",
    ];
    if spec.has_package("openssh-server") {
        v.push("diemcau-ssh-keys.service");
    }
    if spec.board == Board::QemuVirt {
        v.push("diemcau-ready.service");
    }
    v
}

/// The skeleton of the data partition: directories the binds need.
pub fn data_skeleton(root: &Path) -> std::io::Result<()> {
    for (from, _) in DATA_BINDS {
        let rel = from.trim_start_matches(DATA_MOUNT).trim_start_matches('/');
        std::fs::create_dir_all(root.join(rel))?;
    }
    std::fs::create_dir_all(root.join("log/journal"))?;
    std::fs::set_permissions(
        root.join("lib/diemcau"),
        std::fs::Permissions::from_mode(0o700),
    )?;
    Ok(())
}

/// Writes the overlay files under `root`.
pub fn apply(root: &Path, files: &[OverlayFile]) -> std::io::Result<()> {
    for f in files {
        let dest: PathBuf = root.join(f.path.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match &f.content {
            Content::Dir => {
                std::fs::create_dir_all(&dest)?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(f.mode))?;
            }
            Content::Text(t) => {
                if dest.is_symlink() {
                    std::fs::remove_file(&dest)?;
                }
                std::fs::write(&dest, t)?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(f.mode))?;
            }
            Content::Symlink(target) => {
                if dest.symlink_metadata().is_ok() {
                    std::fs::remove_file(&dest)?;
                }
                std::os::unix::fs::symlink(target, &dest)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu() -> (ImageSpec, Layout) {
        let s = ImageSpec::for_board(Board::QemuVirt).unwrap();
        let l = Layout::plan(&s).unwrap();
        (s, l)
    }

    #[test]
    fn fstab_root_is_read_only_and_data_writable() {
        let (_, l) = qemu();
        let f = fstab(&l);
        let root = f.lines().find(|l| l.contains("\t/\t")).unwrap();
        assert!(root.contains("\tro,"), "{root}");
        assert!(root.contains(&l.partuuid(Role::RootA).unwrap()));
        assert!(f.contains(&format!(
            "PARTUUID={}\t/data\text4\trw",
            l.partuuid(Role::Data).unwrap()
        )));
        assert!(f.contains("/data/log\t/var/log\tnone\tbind"));
        // 20 s ran out under emulation while udev was busy: no provisioning.
        let boot = f.lines().find(|l| l.contains("/boot/firmware")).unwrap();
        assert!(boot.contains("x-systemd.device-timeout=90s"), "{boot}");
    }

    #[test]
    fn firewall_drops_by_default_and_opens_only_listed_ports() {
        let (s, _) = qemu();
        let n = nftables(&s);
        assert!(n.contains("hook input priority filter; policy drop;"));
        assert!(!n.contains("dport 22"));
        let rpi = ImageSpec::for_board(Board::Rpi4).unwrap();
        assert!(nftables(&rpi).contains("tcp dport 22 accept"));
    }

    #[test]
    fn cmdline_has_read_only_root_by_partuuid() {
        let (s, l) = qemu();
        let c = cmdline(&s, &l);
        assert!(c.contains(" ro "), "{c}");
        assert!(c.contains(&format!(
            "root=PARTUUID={}",
            l.partuuid(Role::RootA).unwrap()
        )));
        assert!(c.starts_with("console=ttyAMA0"));
    }

    #[test]
    fn ssh_files_only_with_openssh() {
        let (s, l) = qemu();
        assert!(
            !files(&s, &l)
                .iter()
                .any(|f| f.path.contains("sshd") || f.path.contains("ssh.service"))
        );
        let rpi = ImageSpec::for_board(Board::Rpi4).unwrap();
        let rl = Layout::plan(&rpi).unwrap();
        let fs = files(&rpi, &rl);
        let sshd = fs
            .iter()
            .find(|f| f.path == "/etc/ssh/sshd_config.d/diemcau.conf")
            .unwrap();
        let Content::Text(t) = &sshd.content else {
            panic!()
        };
        assert!(t.contains("PasswordAuthentication no"));
        assert!(t.contains("PermitRootLogin no"));
        let drop_in = fs
            .iter()
            .find(|f| f.path.ends_with("ssh.service.d/diemcau.conf"))
            .unwrap();
        assert!(
            matches!(&drop_in.content, Content::Text(t) if t.contains("ConditionFileNotEmpty"))
        );
    }

    #[test]
    fn apply_writes_files_and_symlinks() {
        let (s, l) = qemu();
        let d = tempfile::tempdir().unwrap();
        apply(d.path(), &files(&s, &l)).unwrap();
        assert!(d.path().join("etc/fstab").is_file());
        assert_eq!(
            std::fs::read_link(d.path().join("etc/resolv.conf")).unwrap(),
            PathBuf::from("../run/systemd/resolve/stub-resolv.conf")
        );
        assert!(d.path().join("var/lib/diemcau").is_dir());
        let data = tempfile::tempdir().unwrap();
        data_skeleton(data.path()).unwrap();
        assert!(data.path().join("lib/diemcau-ssh").is_dir());
    }
}
