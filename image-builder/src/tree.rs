//! Reproducibility of the root file tree: [`clamp_mtimes`] sets every time
//! stamp newer than `SOURCE_DATE_EPOCH` back to it, [`scrub`] removes files
//! that differ from one build to the next (caches, logs, host keys), and
//! [`digest`] lists the tree in sorted order (path, type, mode, owner, size,
//! content hash, link target, mtime) and hashes that list, so two builds
//! from the same inputs can be compared with one line of the manifest.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Files that record when or where a build ran, removed before the digest.
pub const VOLATILE: &[&str] = &[
    "var/cache/ldconfig/aux-cache",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "etc/shadow-",
    "etc/gshadow-",
    "etc/passwd-",
    "etc/group-",
    "etc/subuid-",
    "etc/subgid-",
];

/// Removes volatile files, logs, apt lists and SSH host keys under `root`.
pub fn scrub(root: &Path) -> std::io::Result<()> {
    for rel in VOLATILE {
        let p = root.join(rel);
        if p.symlink_metadata().is_ok() {
            std::fs::remove_file(p)?;
        }
    }
    for dir in [
        "var/log",
        "var/lib/apt/lists",
        "var/cache/apt",
        "tmp",
        "var/tmp",
    ] {
        let d = root.join(dir);
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.file_name().is_some_and(|n| n == "partial" || n == "lock") {
                    continue;
                }
                if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir(root.join("etc/ssh")) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    Ok(())
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for n in names {
        let r = rel.join(&n);
        let md = std::fs::symlink_metadata(root.join(&r))?;
        out.push(r.clone());
        if md.is_dir() {
            walk(root, &r, out)?;
        }
    }
    Ok(())
}

/// Every path under `root`, relative, in sorted (depth-first) order.
pub fn list(root: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut v = Vec::new();
    walk(root, Path::new(""), &mut v)?;
    Ok(v)
}

/// Sets access and modification times newer than `epoch` to `epoch`.
pub fn clamp_mtimes(root: &Path, epoch: i64) -> std::io::Result<u64> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let ts = TimeSpec::new(epoch, 0);
    let mut n = 0;
    let mut paths = list(root)?;
    paths.push(std::path::PathBuf::new());
    for rel in paths {
        let p = root.join(&rel);
        let md = std::fs::symlink_metadata(&p)?;
        if md.mtime() > epoch || md.atime() > epoch {
            utimensat(
                nix::fcntl::AT_FDCWD,
                &p,
                &ts,
                &ts,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(std::io::Error::from)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Writes the sorted listing of `root` to `listing` (if given) and returns
/// the SHA-256 of that listing: the tree digest.
pub fn digest(root: &Path, listing: Option<&Path>) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut file = match listing {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    // Hard links (Mesa's drivers are one file under 40 names) are read once.
    let mut seen: std::collections::HashMap<(u64, u64), String> = Default::default();
    for rel in list(root)? {
        let p = root.join(&rel);
        let md = std::fs::symlink_metadata(&p)?;
        let ft = md.file_type();
        let (kind, extra) = if ft.is_symlink() {
            ("l", std::fs::read_link(&p)?.to_string_lossy().into_owned())
        } else if ft.is_dir() {
            ("d", String::new())
        } else if ft.is_file() {
            let sum = match seen.get(&(md.dev(), md.ino())) {
                Some(s) => s.clone(),
                None => {
                    let s = crate::sha256_file(&p)?;
                    if md.nlink() > 1 {
                        seen.insert((md.dev(), md.ino()), s.clone());
                    }
                    s
                }
            };
            ("f", sum)
        } else {
            ("s", format!("rdev={}", md.rdev()))
        };
        let line = format!(
            "{kind} {:o} {}:{} {} {} /{} {}\n",
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            if ft.is_file() { md.size() } else { 0 },
            if ft.is_symlink() { 0 } else { md.mtime() },
            rel.display(),
            extra
        );
        h.update(line.as_bytes());
        if let Some(f) = file.as_mut() {
            f.write_all(line.as_bytes())?;
        }
    }
    if let Some(mut f) = file {
        f.flush()?;
    }
    Ok(crate::hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(d: &Path) {
        std::fs::create_dir_all(d.join("etc/ssh")).unwrap();
        std::fs::create_dir_all(d.join("var/log/apt")).unwrap();
        std::fs::write(d.join("etc/hostname"), "diemcau\n").unwrap();
        std::fs::write(d.join("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        std::fs::write(d.join("var/log/apt/history.log"), "x").unwrap();
        std::os::unix::fs::symlink("hostname", d.join("etc/name")).unwrap();
    }

    #[test]
    fn same_content_same_digest_after_clamp() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        tree(a.path());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        tree(b.path());
        for d in [a.path(), b.path()] {
            scrub(d).unwrap();
            clamp_mtimes(d, crate::DEFAULT_EPOCH).unwrap();
        }
        assert!(!a.path().join("etc/ssh/ssh_host_ed25519_key").exists());
        assert!(!a.path().join("var/log/apt").exists());
        assert!(a.path().join("var/log").is_dir());
        let da = digest(a.path(), None).unwrap();
        assert_eq!(da, digest(b.path(), None).unwrap());
        std::fs::write(b.path().join("etc/hostname"), "other\n").unwrap();
        clamp_mtimes(b.path(), crate::DEFAULT_EPOCH).unwrap();
        assert_ne!(da, digest(b.path(), None).unwrap());
    }

    #[test]
    fn listing_is_sorted() {
        let a = tempfile::tempdir().unwrap();
        tree(a.path());
        let l = list(a.path()).unwrap();
        let s: Vec<_> = l.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(s[0], "etc");
        assert!(s.iter().position(|x| x == "etc/hostname") < s.iter().position(|x| x == "etc/ssh"));
    }
}
