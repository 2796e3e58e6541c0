//! Writing an image to an SD card and checking it. Before a single byte is
//! written the target is checked against the running system: it must be a
//! whole disk (not a partition), hold no mounted file system or swap, not
//! carry the running system (`/`, `/boot`, ...) or a device-mapper volume,
//! not be write-protected, be large enough, and be removable (this last one
//! alone can be overridden with `--force`, for built-in card readers that
//! report otherwise). `/proc` and `/sys` are read through [`SystemView`], so
//! tests run the checks on fake trees. Writing shows a progress bar, syncs,
//! drops the page cache for the device and reads everything back.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::progress::{Bar, human_bytes};

const CHUNK: usize = 4 * 1024 * 1024;

/// Mount points whose disk is the running system's: never written.
const SYSTEM_MOUNTS: &[&str] = &[
    "/",
    "/boot",
    "/boot/efi",
    "/boot/firmware",
    "/usr",
    "/var",
    "/home",
    "/etc",
];

/// Where the system's state is read from (real: `/proc`, `/sys/block`).
#[derive(Debug, Clone)]
pub struct SystemView {
    pub proc_mounts: PathBuf,
    pub proc_swaps: PathBuf,
    pub sys_block: PathBuf,
}

impl Default for SystemView {
    fn default() -> Self {
        Self {
            proc_mounts: "/proc/mounts".into(),
            proc_swaps: "/proc/swaps".into(),
            sys_block: "/sys/block".into(),
        }
    }
}

/// Why a device was refused or a write or check failed.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("{0}: no such file or device")]
    NoDevice(PathBuf),
    #[error("{path} is a partition of /dev/{disk}; give the whole card: /dev/{disk}")]
    Partition { path: PathBuf, disk: String },
    #[error(
        "{path} holds the running system ({what} is on it); refusing to write, even with --force"
    )]
    SystemDisk { path: PathBuf, what: String },
    #[error(
        "{path} is mounted ({what}); unmount it first (e.g. `udisksctl unmount -b DEVICE` or `umount`), then run again"
    )]
    Mounted { path: PathBuf, what: String },
    #[error("{path} is in use by device-mapper ({holders}): LVM or encryption; refusing to write")]
    Held { path: PathBuf, holders: String },
    #[error(
        "{path} is not a removable disk (/sys/block/{name}/removable is 0); if it really is the card reader, run again with --force"
    )]
    NotRemovable { path: PathBuf, name: String },
    #[error("{path} is write-protected; slide the SD card's lock switch away from LOCK")]
    ReadOnly { path: PathBuf },
    #[error("{path} has no medium (size 0): is the card inserted?")]
    NoMedium { path: PathBuf },
    #[error("{path} holds {} but the image needs {}", human_bytes(*device), human_bytes(*image))]
    TooSmall {
        path: PathBuf,
        device: u64,
        image: u64,
    },
    #[error("{path} is neither a block device nor a regular file")]
    NotADisk { path: PathBuf },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{device} differs from {image} at byte {offset} ({}): the card may be failing or fake; try another card", human_bytes(*offset))]
    Mismatch {
        image: PathBuf,
        device: PathBuf,
        offset: u64,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FlashError + 'a {
    move |source| FlashError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// What was found at the given path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A whole block device, by kernel name (`sdb`, `mmcblk0`).
    Disk { path: PathBuf, name: String },
    /// A regular file (for tests, or to copy an image).
    File { path: PathBuf },
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

/// Decodes the octal escapes (`\040`) of /proc/mounts fields.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kernel names of a disk and its partitions (from sysfs).
fn disk_and_partitions(view: &SystemView, name: &str) -> Vec<String> {
    let mut v = vec![name.to_owned()];
    if let Ok(rd) = std::fs::read_dir(view.sys_block.join(name)) {
        for e in rd.flatten() {
            if e.path().join("partition").exists() {
                v.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    v
}

/// Finds the disk a partition name belongs to, if it is one.
fn parent_disk(view: &SystemView, name: &str) -> Option<String> {
    let rd = std::fs::read_dir(&view.sys_block).ok()?;
    for e in rd.flatten() {
        if e.path().join(name).join("partition").exists() {
            return Some(e.file_name().to_string_lossy().into_owned());
        }
    }
    None
}

/// Runs every safety check on a whole-disk block device named `name`
/// (the kernel name under `view.sys_block`), shown to the user as `path`.
pub fn check_disk(
    view: &SystemView,
    path: &Path,
    name: &str,
    image_len: u64,
    force: bool,
) -> Result<(), FlashError> {
    let sys = view.sys_block.join(name);
    if !sys.exists() {
        if let Some(disk) = parent_disk(view, name) {
            return Err(FlashError::Partition {
                path: path.to_owned(),
                disk,
            });
        }
        return Err(FlashError::NotADisk {
            path: path.to_owned(),
        });
    }
    let names = disk_and_partitions(view, name);
    let is_ours = |src: &str| {
        src.strip_prefix("/dev/")
            .is_some_and(|n| names.iter().any(|x| x == n))
    };

    // Mounted file systems: the system's disk is refused outright, others
    // must be unmounted first.
    let mounts =
        std::fs::read_to_string(&view.proc_mounts).map_err(io("cannot read", &view.proc_mounts))?;
    let mut mounted = Vec::new();
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(src), Some(dst)) = (f.next(), f.next()) else {
            continue;
        };
        if is_ours(src) {
            let dst = unescape_mount(dst);
            if SYSTEM_MOUNTS.contains(&dst.as_str()) {
                return Err(FlashError::SystemDisk {
                    path: path.to_owned(),
                    what: format!("{dst} from {src}"),
                });
            }
            mounted.push(format!("{src} on {dst}"));
        }
    }
    if let Ok(swaps) = std::fs::read_to_string(&view.proc_swaps) {
        for line in swaps.lines().skip(1) {
            if let Some(src) = line.split_whitespace().next()
                && is_ours(src)
            {
                return Err(FlashError::SystemDisk {
                    path: path.to_owned(),
                    what: format!("swap on {src}"),
                });
            }
        }
    }
    if !mounted.is_empty() {
        return Err(FlashError::Mounted {
            path: path.to_owned(),
            what: mounted.join(", "),
        });
    }
    let mut holders = Vec::new();
    for n in &names {
        let dir = if n == name {
            sys.join("holders")
        } else {
            sys.join(n).join("holders")
        };
        if let Ok(rd) = std::fs::read_dir(dir) {
            holders.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    if !holders.is_empty() {
        holders.sort();
        return Err(FlashError::Held {
            path: path.to_owned(),
            holders: holders.join(", "),
        });
    }
    if read_trim(&sys.join("ro")).as_deref() == Some("1") {
        return Err(FlashError::ReadOnly {
            path: path.to_owned(),
        });
    }
    let sectors: u64 = read_trim(&sys.join("size"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if sectors == 0 {
        return Err(FlashError::NoMedium {
            path: path.to_owned(),
        });
    }
    if sectors * 512 < image_len {
        return Err(FlashError::TooSmall {
            path: path.to_owned(),
            device: sectors * 512,
            image: image_len,
        });
    }
    let removable = read_trim(&sys.join("removable")).as_deref() == Some("1");
    let sd_slot = name.starts_with("mmcblk")
        && matches!(read_trim(&sys.join("device/type")).as_deref(), Some("SD"));
    if !removable && !sd_slot && !force {
        return Err(FlashError::NotRemovable {
            path: path.to_owned(),
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Classifies `device` and, for a block device, runs [`check_disk`].
pub fn check_target(
    view: &SystemView,
    device: &Path,
    image_len: u64,
    force: bool,
) -> Result<Target, FlashError> {
    let md = std::fs::metadata(device).map_err(|_| FlashError::NoDevice(device.to_owned()))?;
    if md.file_type().is_block_device() {
        let canon = std::fs::canonicalize(device).map_err(io("cannot resolve", device))?;
        let name = canon
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        check_disk(view, device, &name, image_len, force)?;
        Ok(Target::Disk {
            path: device.to_owned(),
            name,
        })
    } else if md.is_file() {
        Ok(Target::File {
            path: device.to_owned(),
        })
    } else {
        Err(FlashError::NotADisk {
            path: device.to_owned(),
        })
    }
}

/// How a flash went.
#[derive(Debug, Clone)]
pub struct FlashReport {
    pub bytes: u64,
    pub write_secs: f64,
    pub verify_secs: f64,
}

fn drop_cache(f: &File) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    // Best effort: makes the read-back come from the card, not from memory.
    let _ = posix_fadvise(f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

/// Writes `image` to `device` (after [`check_target`]) and reads it back.
pub fn flash(
    view: &SystemView,
    image: &Path,
    device: &Path,
    force: bool,
    quiet: bool,
) -> Result<FlashReport, FlashError> {
    let mut src = File::open(image).map_err(io("cannot open image", image))?;
    let len = src
        .metadata()
        .map_err(io("cannot read image", image))?
        .len();
    let target = check_target(view, device, len, force)?;
    let mut opts = OpenOptions::new();
    opts.write(true);
    if matches!(target, Target::Disk { .. }) {
        // O_EXCL on a block device: the kernel refuses if anything has it open
        // exclusively (a mount, a RAID or LVM member), a last guard.
        opts.custom_flags(nix::fcntl::OFlag::O_EXCL.bits());
    }
    let mut dst = opts
        .open(device)
        .map_err(io("cannot open for writing", device))?;
    let mut buf = vec![0u8; CHUNK];
    let mut bar = if quiet {
        Bar::quiet("Writing  ", len)
    } else {
        Bar::new("Writing  ", len)
    };
    loop {
        let n = read_full(&mut src, &mut buf).map_err(io("cannot read image", image))?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n])
            .map_err(io("cannot write to", device))?;
        bar.inc(n as u64);
    }
    dst.sync_all().map_err(io("cannot flush", device))?;
    drop_cache(&dst);
    drop(dst);
    let write_secs = bar.finish().as_secs_f64();
    let verify_secs = verify(image, device, quiet)?;
    Ok(FlashReport {
        bytes: len,
        write_secs,
        verify_secs,
    })
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Compares the device's first bytes with the whole image; returns the seconds taken.
pub fn verify(image: &Path, device: &Path, quiet: bool) -> Result<f64, FlashError> {
    let mut a = File::open(image).map_err(io("cannot open image", image))?;
    let len = a.metadata().map_err(io("cannot read image", image))?.len();
    let mut b = File::open(device).map_err(|_| FlashError::NoDevice(device.to_owned()))?;
    drop_cache(&b);
    let dev_len = b
        .seek(SeekFrom::End(0))
        .map_err(io("cannot size", device))?;
    b.seek(SeekFrom::Start(0))
        .map_err(io("cannot seek", device))?;
    if dev_len < len {
        return Err(FlashError::TooSmall {
            path: device.to_owned(),
            device: dev_len,
            image: len,
        });
    }
    let mut bar = if quiet {
        Bar::quiet("Verifying", len)
    } else {
        Bar::new("Verifying", len)
    };
    let mut ba = vec![0u8; CHUNK];
    let mut bb = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < len {
        let n = read_full(&mut a, &mut ba).map_err(io("cannot read image", image))?;
        if n == 0 {
            break;
        }
        let m = read_full(&mut b, &mut bb[..n]).map_err(io("cannot read", device))?;
        if m < n || ba[..n] != bb[..n] {
            let first = ba[..n]
                .iter()
                .zip(&bb[..m])
                .position(|(x, y)| x != y)
                .unwrap_or(m);
            return Err(FlashError::Mismatch {
                image: image.to_owned(),
                device: device.to_owned(),
                offset: offset + first as u64,
            });
        }
        offset += n as u64;
        bar.inc(n as u64);
    }
    Ok(bar.finish().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /proc and /sys/block with one SD card reader (`sdb`, two
    /// partitions) and the system disk (`nvme0n1`).
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new(mounts: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            std::fs::write(d.join("mounts"), mounts).unwrap();
            std::fs::write(
                d.join("swaps"),
                "Filename Type Size Used Priority\n/dev/nvme0n1p3 partition 1 0 -2\n",
            )
            .unwrap();
            let disk = |name: &str, removable: &str, size: &str, parts: &[&str]| {
                let s = d.join("block").join(name);
                std::fs::create_dir_all(s.join("holders")).unwrap();
                std::fs::write(s.join("removable"), removable).unwrap();
                std::fs::write(s.join("size"), size).unwrap();
                std::fs::write(s.join("ro"), "0\n").unwrap();
                for p in parts {
                    std::fs::create_dir_all(s.join(p).join("holders")).unwrap();
                    std::fs::write(s.join(p).join("partition"), "1").unwrap();
                }
            };
            disk("sdb", "1\n", "15523840\n", &["sdb1", "sdb2"]);
            disk(
                "nvme0n1",
                "0\n",
                "1000215216\n",
                &["nvme0n1p1", "nvme0n1p2", "nvme0n1p3"],
            );
            disk("sdc", "0\n", "15523840\n", &["sdc1"]);
            disk("mmcblk0", "0\n", "15523840\n", &["mmcblk0p1"]);
            std::fs::create_dir_all(d.join("block/mmcblk0/device")).unwrap();
            std::fs::write(d.join("block/mmcblk0/device/type"), "SD\n").unwrap();
            Fake { dir }
        }
        fn view(&self) -> SystemView {
            SystemView {
                proc_mounts: self.dir.path().join("mounts"),
                proc_swaps: self.dir.path().join("swaps"),
                sys_block: self.dir.path().join("block"),
            }
        }
        fn check(&self, name: &str, force: bool) -> Result<(), FlashError> {
            check_disk(
                &self.view(),
                &PathBuf::from(format!("/dev/{name}")),
                name,
                4 << 30,
                force,
            )
        }
    }

    const SYSTEM: &str = "/dev/nvme0n1p2 / ext4 rw 0 0\n/dev/nvme0n1p1 /boot/efi vfat rw 0 0\nproc /proc proc rw 0 0\n";

    #[test]
    fn removable_unmounted_card_is_accepted() {
        let f = Fake::new(SYSTEM);
        f.check("sdb", false).unwrap();
        f.check("mmcblk0", false).unwrap();
    }

    #[test]
    fn system_disk_is_refused_even_with_force() {
        let f = Fake::new(SYSTEM);
        let e = f.check("nvme0n1", true).unwrap_err();
        assert!(matches!(e, FlashError::SystemDisk { .. }), "{e}");
        assert!(e.to_string().contains("/ from /dev/nvme0n1p2"), "{e}");
    }

    #[test]
    fn swap_disk_is_refused() {
        let f = Fake::new("/dev/sda1 / ext4 rw 0 0\n");
        let e = f.check("nvme0n1", true).unwrap_err();
        assert!(e.to_string().contains("swap on /dev/nvme0n1p3"), "{e}");
    }

    #[test]
    fn mounted_card_is_refused() {
        let f = Fake::new(&format!(
            "{SYSTEM}/dev/sdb1 /media/tech/BOOT\\040CARD vfat rw 0 0\n"
        ));
        let e = f.check("sdb", true).unwrap_err();
        assert!(matches!(e, FlashError::Mounted { .. }), "{e}");
        assert!(e.to_string().contains("/media/tech/BOOT CARD"), "{e}");
    }

    #[test]
    fn card_holding_boot_is_system() {
        let f = Fake::new("/dev/sdb1 /boot vfat rw 0 0\n");
        assert!(matches!(
            f.check("sdb", true).unwrap_err(),
            FlashError::SystemDisk { .. }
        ));
    }

    #[test]
    fn non_removable_needs_force() {
        let f = Fake::new(SYSTEM);
        let e = f.check("sdc", false).unwrap_err();
        assert!(matches!(e, FlashError::NotRemovable { .. }), "{e}");
        assert!(e.to_string().contains("--force"));
        f.check("sdc", true).unwrap();
    }

    #[test]
    fn partition_is_refused_with_the_disk_named() {
        let f = Fake::new(SYSTEM);
        let e = f.check("sdb1", true).unwrap_err();
        assert!(e.to_string().contains("/dev/sdb"), "{e}");
        assert!(matches!(e, FlashError::Partition { .. }));
    }

    #[test]
    fn held_small_readonly_and_empty_are_refused() {
        let f = Fake::new(SYSTEM);
        let b = f.view().sys_block;
        std::fs::write(b.join("sdb/sdb2/holders/dm-0"), "").unwrap();
        assert!(matches!(
            f.check("sdb", false),
            Err(FlashError::Held { .. })
        ));
        std::fs::remove_file(b.join("sdb/sdb2/holders/dm-0")).unwrap();
        std::fs::write(b.join("sdb/size"), "1024\n").unwrap();
        assert!(matches!(
            f.check("sdb", false),
            Err(FlashError::TooSmall { .. })
        ));
        std::fs::write(b.join("sdb/size"), "0\n").unwrap();
        assert!(matches!(
            f.check("sdb", false),
            Err(FlashError::NoMedium { .. })
        ));
        std::fs::write(b.join("sdb/ro"), "1\n").unwrap();
        assert!(matches!(
            f.check("sdb", false),
            Err(FlashError::ReadOnly { .. })
        ));
    }

    #[test]
    fn flash_to_a_file_and_verify() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("a.img");
        let data: Vec<u8> = (0..(9 * 1024 * 1024 + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&img, &data).unwrap();
        let dev = d.path().join("card");
        std::fs::write(&dev, vec![0xffu8; 16 * 1024 * 1024]).unwrap();
        let r = flash(&SystemView::default(), &img, &dev, false, true).unwrap();
        assert_eq!(r.bytes, data.len() as u64);
        verify(&img, &dev, true).unwrap();
        // A corrupted byte is found, at its offset.
        let mut card = std::fs::read(&dev).unwrap();
        card[5 * 1024 * 1024 + 7] ^= 1;
        std::fs::write(&dev, &card).unwrap();
        match verify(&img, &dev, true) {
            Err(FlashError::Mismatch { offset, .. }) => assert_eq!(offset, 5 * 1024 * 1024 + 7),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_device_is_named() {
        let e = check_target(
            &SystemView::default(),
            Path::new("/dev/nonexistent-x"),
            1,
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/dev/nonexistent-x"));
    }

    #[test]
    fn mount_escapes() {
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
    }
}
