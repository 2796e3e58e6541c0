//! The root file system. The Debian base (packages from the spec, kernel,
//! initramfs) is made by `mmdebstrap --architectures=arm64` under
//! qemu-user emulation and cached as a tarball named by [`base_key`], a hash
//! of everything that decides its content (suite, mirrors, components,
//! sorted package list, initramfs module list, recipe version): a rebuild
//! with a new daemon skips it. The initramfs is built once, small, with
//! `MODULES=list` and the spec's modules (the default `most` took most of
//! the 23 minutes a first build took here). The product layer
//! ([`product_layer`]) installs the daemon .deb in a chroot, lays the
//! [`crate::overlay`] files, enables units, audits accounts (no password
//! anywhere) and scrubs what differs between builds.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::spec::{Board, ImageSpec};
use crate::tools::{self, ToolError};

/// Bumped whenever the mmdebstrap recipe below changes what it produces.
pub const RECIPE_VERSION: u32 = 2;

/// Why the root file system could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("building the base root file system with mmdebstrap failed (full log: {log})")]
    Mmdebstrap {
        log: PathBuf,
        #[source]
        source: ToolError,
    },
    #[error(
        "the build needs root (mmdebstrap --mode=root, chroot, device nodes); run it with sudo"
    )]
    NotRoot,
    #[error(
        "arm64 binaries cannot run on this host: install qemu-user-static and binfmt-support, then `update-binfmts --enable qemu-aarch64` (check with `arch-test arm64`)"
    )]
    NoEmulation,
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{step}")]
    Tool {
        step: &'static str,
        #[source]
        source: ToolError,
    },
    #[error("security audit of the root file system failed: {0}")]
    Audit(String),
    #[error("the root file system has no {0}: is linux-image-arm64 in the package list?")]
    NoKernel(&'static str),
    #[error(
        "the daemon needs libraries the image lacks: {0} (add the packages that ship them to packages.include)"
    )]
    MissingLibs(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn tool(step: &'static str) -> impl FnOnce(ToolError) -> RootfsError {
    move |source| RootfsError::Tool { step, source }
}

/// mmdebstrap hooks that make /etc/ssl/certs once, natively, instead of
/// twice under emulation (`files/ca-divert.sh`, `files/ca-update.sh`).
pub const CA_DIVERT: &str = include_str!("../files/ca-divert.sh");
pub const CA_UPDATE: &str = include_str!("../files/ca-update.sh");

/// The initramfs hook that adds the spec's modules (with `MODULES=list`).
pub fn initramfs_hook(spec: &ImageSpec) -> String {
    format!(
        "#!/bin/sh\n\
         # diemcau: the modules the initramfs needs to find the root disk.\n\
         PREREQ=\"\"\n\
         prereqs() {{ echo \"$PREREQ\"; }}\n\
         case \"$1\" in prereqs) prereqs; exit 0;; esac\n\
         . /usr/share/initramfs-tools/hook-functions\n\
         for m in {}; do manual_add_modules \"$m\"; done\n",
        spec.initramfs_modules.join(" ")
    )
}

/// The cache key of the base root file system: the SHA-256 of every input
/// that decides its content, one per line.
pub fn base_key(spec: &ImageSpec) -> String {
    let mut s = format!(
        "recipe {RECIPE_VERSION}\nsuite {}\narch {}\nvariant minbase\n",
        spec.suite, spec.architecture
    );
    for src in spec.apt_sources() {
        s.push_str(&format!("source {src}\n"));
    }
    for p in &spec.packages {
        s.push_str(&format!("package {p}\n"));
    }
    for g in &spec.path_exclude {
        s.push_str(&format!("exclude {g}\n"));
    }
    s.push_str(&initramfs_hook(spec));
    if spec.has_package("ca-certificates") {
        s.push_str(CA_DIVERT);
        s.push_str(CA_UPDATE);
    }
    crate::sha256_hex(s.as_bytes())
}

/// The files [`mmdebstrap_args`] expects in its work folder.
pub fn hook_files(spec: &ImageSpec) -> Vec<(&'static str, String)> {
    let mut v = vec![("diemcau-modules", initramfs_hook(spec))];
    if spec.has_package("ca-certificates") {
        v.push(("ca-divert.sh", CA_DIVERT.to_owned()));
        v.push(("ca-update.sh", CA_UPDATE.to_owned()));
    }
    v
}

/// Arguments for mmdebstrap (without the program name). `work` holds the
/// [`hook_files`] and receives dpkg's log of the build (`dpkg.log`: when
/// each package was unpacked and configured, where the time went).
pub fn mmdebstrap_args(spec: &ImageSpec, work: &Path, out: &Path) -> Vec<String> {
    let mut a = vec![
        "--mode=root".to_owned(),
        "--variant=minbase".into(),
        format!("--architectures={}", spec.architecture),
        format!("--components={}", spec.components.join(",")),
        "--aptopt=Acquire::Retries \"3\"".into(),
        // merged /usr set up by mmdebstrap itself (the same symlinks)
        // instead of the usrmerge package, which pulls in perl and runs a
        // conversion under emulation.
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr".into(),
        // No fsync per unpacked file: a failed build is thrown away anyway.
        "--dpkgopt=force-unsafe-io".into(),
        "--dpkgopt=path-exclude=/usr/share/man/*".into(),
        "--dpkgopt=path-exclude=/usr/share/locale/*".into(),
        "--dpkgopt=path-exclude=/usr/share/info/*".into(),
        "--dpkgopt=path-exclude=/usr/share/doc/*".into(),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright".into(),
    ];
    a.extend(
        spec.path_exclude
            .iter()
            .map(|g| format!("--dpkgopt=path-exclude={g}")),
    );
    a.extend([
        format!("--include={}", spec.packages.join(",")),
        "--setup-hook=mkdir -p \"$1/etc/initramfs-tools/conf.d\" \"$1/etc/initramfs-tools/hooks\" \"$1/boot/firmware\"".into(),
        "--setup-hook=echo MODULES=list > \"$1/etc/initramfs-tools/conf.d/diemcau.conf\"".into(),
        format!(
            "--setup-hook=copy-in {} /etc/initramfs-tools/hooks/",
            work.join("diemcau-modules").display()
        ),
    ]);
    if spec.has_package("ca-certificates") {
        a.push(format!(
            "--essential-hook={}",
            work.join("ca-divert.sh").display()
        ));
        a.push(format!(
            "--customize-hook={}",
            work.join("ca-update.sh").display()
        ));
    }
    a.extend([
        format!(
            "--customize-hook=copy-out /var/log/dpkg.log {}",
            work.display()
        ),
        spec.suite.clone(),
        out.display().to_string(),
    ]);
    a.extend(spec.apt_sources());
    a
}

/// Whether this process is root.
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Whether arm64 programs run here (binfmt + qemu-user).
pub fn can_run_arm64() -> bool {
    Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists()
        && std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64")
            .is_ok_and(|s| s.starts_with("enabled"))
}

/// Returns the cached base tarball, building it first if it is missing.
/// `log` receives mmdebstrap's output.
pub fn ensure_base(
    spec: &ImageSpec,
    cache: &Path,
    log: &Path,
    epoch: i64,
) -> Result<(PathBuf, bool), RootfsError> {
    let key = base_key(spec);
    let tar = cache.join(format!("base-{}-{}.tar", spec.board, &key[..16]));
    if tar.is_file() {
        return Ok((tar, true));
    }
    if !is_root() {
        return Err(RootfsError::NotRoot);
    }
    if !can_run_arm64() {
        return Err(RootfsError::NoEmulation);
    }
    std::fs::create_dir_all(cache).map_err(io("cannot create cache folder", cache))?;
    let work = tempfile::tempdir_in(cache).map_err(io("cannot make a folder in", cache))?;
    for (name, text) in hook_files(spec) {
        let f = work.path().join(name);
        std::fs::write(&f, text).map_err(io("cannot write", &f))?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755))
            .map_err(io("cannot chmod", &f))?;
    }
    let partial = work.path().join("base.tar");
    let mut c = tools::cmd("mmdebstrap").map_err(|source| RootfsError::Mmdebstrap {
        log: log.to_owned(),
        source,
    })?;
    c.env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(mmdebstrap_args(spec, work.path(), &partial));
    let ran = tools::run_logged(c, Some(log));
    let _ = std::fs::copy(work.path().join("dpkg.log"), log.with_extension("dpkg.log"));
    ran.map_err(|source| RootfsError::Mmdebstrap {
        log: log.to_owned(),
        source,
    })?;
    std::fs::rename(&partial, &tar).map_err(io("cannot move into the cache", &tar))?;
    let info = tar.with_extension("key.txt");
    let _ = std::fs::write(&info, format!("{key}\n{}\n", spec.packages.join("\n")));
    Ok((tar, false))
}

/// Unpacks the base tarball into `root` (which must be empty or absent).
pub fn unpack(tar: &Path, root: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(root).map_err(io("cannot create", root))?;
    let mut c = tools::cmd("tar").map_err(tool("unpacking the base root file system"))?;
    c.arg("-xf").arg(tar).arg("-C").arg(root).args([
        "--numeric-owner",
        "--same-permissions",
        "--xattrs",
    ]);
    tools::run(c).map_err(tool("unpacking the base root file system"))?;
    Ok(())
}

/// Runs a shell command chrooted into `root`, with /proc mounted in a
/// private mount namespace (so nothing stays mounted if we die).
pub fn chroot_sh(root: &Path, script: &str) -> Result<Vec<u8>, ToolError> {
    let mut c = tools::cmd("unshare")?;
    c.args(["--mount", "--propagation", "private", "--fork", "sh", "-c"])
        .arg(format!(
            "mount -t proc proc \"$0/proc\" && exec chroot \"$0\" /bin/sh -c '{}'",
            script.replace('\'', "'\\''")
        ))
        .arg(root);
    tools::run(c)
}

/// Lists `name:` accounts whose password field would let someone log in.
pub fn audit_accounts(root: &Path) -> Result<(), RootfsError> {
    let shadow = std::fs::read_to_string(root.join("etc/shadow"))
        .map_err(io("cannot read", &root.join("etc/shadow")))?;
    let mut bad = Vec::new();
    for l in shadow.lines() {
        let mut f = l.split(':');
        let (Some(user), Some(pw)) = (f.next(), f.next()) else {
            continue;
        };
        if !(pw.starts_with('*') || pw.starts_with('!')) {
            bad.push(format!(
                "{user} has {}",
                if pw.is_empty() {
                    "an empty password"
                } else {
                    "a password"
                }
            ));
        }
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd"))
        .map_err(io("cannot read", &root.join("etc/passwd")))?;
    for l in passwd.lines() {
        let mut f = l.split(':');
        if let (Some(user), Some(pw)) = (f.next(), f.next())
            && pw != "x"
        {
            bad.push(format!("{user} has a password in /etc/passwd"));
        }
    }
    for dir in ["root/.ssh", "home"] {
        let d = root.join(dir);
        if d.is_dir() {
            for p in crate::tree::list(&d).map_err(io("cannot list", &d))? {
                if p.file_name().is_some_and(|n| n == "authorized_keys") {
                    bad.push(format!("/{dir}/{} is a default credential", p.display()));
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(root.join("etc/ssh")) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                bad.push(format!(
                    "/etc/ssh/{} would be the same on every device",
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(RootfsError::Audit(bad.join("; ")))
    }
}

/// Checks that every library the daemon links is in the root file system.
pub fn check_daemon_libs(root: &Path, daemon: &Path) -> Result<(), RootfsError> {
    let Ok(mut c) = tools::cmd("readelf") else {
        tracing::warn!("readelf not found (binutils): skipping the daemon library check");
        return Ok(());
    };
    c.arg("-d").arg(daemon);
    let out = tools::run(c).map_err(tool("reading the daemon's dynamic section"))?;
    let text = String::from_utf8_lossy(&out);
    let mut missing = Vec::new();
    for l in text.lines().filter(|l| l.contains("(NEEDED)")) {
        let Some(lib) = l.split('[').nth(1).and_then(|s| s.split(']').next()) else {
            continue;
        };
        let found = [
            "usr/lib/aarch64-linux-gnu",
            "lib/aarch64-linux-gnu",
            "usr/lib",
            "lib",
        ]
        .iter()
        .any(|d| root.join(d).join(lib).exists());
        if !found {
            missing.push(lib.to_owned());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RootfsError::MissingLibs(missing.join(", ")))
    }
}

/// Installs the daemon and the overlay, enables units, audits and scrubs.
pub fn product_layer(
    spec: &ImageSpec,
    layout: &crate::layout::Layout,
    root: &Path,
    deb: Option<&Path>,
    epoch: i64,
) -> Result<(), RootfsError> {
    crate::overlay::apply(root, &crate::overlay::files(spec, layout))
        .map_err(io("cannot write the product files into", root))?;
    if let Some(deb) = deb {
        let name = deb
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let inside = root.join("tmp").join(&name);
        std::fs::copy(deb, &inside).map_err(io("cannot copy the daemon package to", &inside))?;
        chroot_sh(root, &format!("dpkg -i /tmp/{name} && rm -f /tmp/{name}"))
            .map_err(tool("installing the daemon package in the image"))?;
    }
    // The technician account (key-only SSH) and any other sysusers entries.
    if spec.has_package("openssh-server") {
        chroot_sh(root, "systemd-sysusers").map_err(tool("creating accounts"))?;
    }
    let mut c = tools::cmd("systemctl").map_err(tool("enabling services"))?;
    c.arg(format!("--root={}", root.display()))
        .arg("enable")
        .args(crate::overlay::units_to_enable(spec));
    tools::run(c).map_err(tool("enabling services"))?;
    let mut c = tools::cmd("systemctl").map_err(tool("masking services"))?;
    c.arg(format!("--root={}", root.display())).args([
        "mask",
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "e2scrub_all.timer",
        "e2scrub_reap.service",
        "systemd-firstboot.service",
    ]);
    // Seen in the emulated boot of the trimmed qemu-virt set: logind fails
    // and restarts in a loop there; no one logs in on that image anyway.
    if !spec.has_package("dbus") {
        c.arg("systemd-logind.service");
    }
    tools::run(c).map_err(tool("masking services"))?;
    crate::tree::scrub(root).map_err(io("cannot clean", root))?;
    audit_accounts(root)?;
    crate::tree::clamp_mtimes(root, epoch).map_err(io("cannot set time stamps in", root))?;
    Ok(())
}

fn newest(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                && !p.is_symlink()
        })
        .collect();
    v.sort();
    v.pop()
}

/// Fills `boot` with what the board's firmware or QEMU needs.
pub fn boot_files(
    spec: &ImageSpec,
    layout: &crate::layout::Layout,
    root: &Path,
    boot: &Path,
) -> Result<(), RootfsError> {
    std::fs::create_dir_all(boot).map_err(io("cannot create", boot))?;
    let kernel =
        newest(&root.join("boot"), "vmlinuz-").ok_or(RootfsError::NoKernel("/boot/vmlinuz-*"))?;
    let initrd = newest(&root.join("boot"), "initrd.img-")
        .ok_or(RootfsError::NoKernel("/boot/initrd.img-*"))?;
    let copy = |from: &Path, to: &str| -> Result<(), RootfsError> {
        let dest = boot.join(to);
        std::fs::copy(from, &dest).map_err(io("cannot copy into the boot partition:", &dest))?;
        Ok(())
    };
    copy(&kernel, "vmlinuz")?;
    copy(&initrd, "initrd.img")?;
    let cmdline = crate::overlay::cmdline(spec, layout);
    std::fs::write(boot.join("cmdline.txt"), format!("{cmdline}\n"))
        .map_err(io("cannot write", &boot.join("cmdline.txt")))?;
    if matches!(spec.board, Board::Rpi4 | Board::Rpi5) {
        let fw = root.join("usr/lib/raspi-firmware");
        let rd = std::fs::read_dir(&fw)
            .map_err(io("raspi-firmware is not installed (no folder)", &fw))?;
        for e in rd.flatten() {
            if e.path().is_file() {
                copy(&e.path(), &e.file_name().to_string_lossy())?;
            }
        }
        let version = kernel
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .trim_start_matches("vmlinuz-")
            .to_owned();
        let dtbs = root.join(format!("usr/lib/linux-image-{version}/broadcom"));
        let rd = std::fs::read_dir(&dtbs).map_err(io("no device trees in", &dtbs))?;
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("bcm2711-") || n.starts_with("bcm2837-") || n.starts_with("bcm2710-") {
                copy(&e.path(), &n)?;
            }
        }
        std::fs::write(boot.join("config.txt"), crate::overlay::config_txt(spec))
            .map_err(io("cannot write", &boot.join("config.txt")))?;
    }
    crate::tree::clamp_mtimes(boot, crate::source_date_epoch())
        .map_err(io("cannot set time stamps in", boot))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_key_depends_on_packages_not_order() {
        let a = ImageSpec::for_board(Board::QemuVirt).unwrap();
        let mut b = a.clone();
        b.packages.reverse();
        b.packages.sort();
        assert_eq!(base_key(&a), base_key(&b));
        b.packages.push("vim-tiny".into());
        b.packages.sort();
        assert_ne!(base_key(&a), base_key(&b));
        let mut c = a.clone();
        c.initramfs_modules.push("nvme".into());
        assert_ne!(base_key(&a), base_key(&c));
        let mut d = a.clone();
        d.path_exclude.push("/usr/share/icons/*".into());
        assert_ne!(base_key(&a), base_key(&d));
    }

    #[test]
    fn mmdebstrap_args_have_the_recipe() {
        let s = ImageSpec::for_board(Board::Rpi4).unwrap();
        let a = mmdebstrap_args(&s, Path::new("/w"), Path::new("/o.tar"));
        assert!(a.contains(&"--architectures=arm64".to_owned()));
        assert!(a.contains(&"--components=main,non-free-firmware".to_owned()));
        assert!(
            a.iter()
                .any(|x| x.starts_with("--include=") && x.contains("raspi-firmware"))
        );
        assert!(a.iter().any(|x| x.contains("MODULES=list")));
        assert!(a.iter().any(|x| x.contains("bookworm-security")));
        assert!(a.contains(&"--dpkgopt=force-unsafe-io".to_owned()));
        assert!(a.contains(&"--essential-hook=/w/ca-divert.sh".to_owned()));
        assert!(a.contains(&"--customize-hook=/w/ca-update.sh".to_owned()));
        // The Pi keeps its GPU drivers; the virt machine has no GPU.
        assert!(!a.iter().any(|x| x.contains("/dri/")));
        let q = ImageSpec::for_board(Board::QemuVirt).unwrap();
        let a = mmdebstrap_args(&q, Path::new("/w"), Path::new("/o.tar"));
        assert!(
            a.iter()
                .any(|x| x.starts_with("--dpkgopt=path-exclude=") && x.contains("/dri/"))
        );
    }

    #[test]
    fn audit_finds_passwords_and_keys() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc/ssh")).unwrap();
        std::fs::write(r.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(r.join("etc/shadow"), "root:*:1::::::\ndiemcau:!*:1::::::\n").unwrap();
        audit_accounts(r).unwrap();
        std::fs::write(r.join("etc/shadow"), "root:$6$abc:1::::::\npi::1::::::\n").unwrap();
        let e = audit_accounts(r).unwrap_err().to_string();
        assert!(
            e.contains("root has a password") && e.contains("pi has an empty password"),
            "{e}"
        );
        std::fs::write(r.join("etc/shadow"), "root:*:1::::::\n").unwrap();
        std::fs::write(r.join("etc/ssh/ssh_host_ed25519_key"), "k").unwrap();
        assert!(
            audit_accounts(r)
                .unwrap_err()
                .to_string()
                .contains("same on every device")
        );
    }

    #[test]
    fn hook_lists_modules() {
        let s = ImageSpec::for_board(Board::QemuVirt).unwrap();
        let h = initramfs_hook(&s);
        assert!(h.contains("virtio_blk") && h.contains("manual_add_modules"));
    }
}
