//! Partition placement: turns the validated partition list of a spec into
//! byte offsets on the disk (1 MiB aligned, MBR with four primary
//! partitions), the `sfdisk` script that writes that table, and the
//! `PARTUUID`s the kernel command line and fstab name. It also reads an MBR
//! back from an image file, which `customise` and the boot test use to find
//! the boot partition without mounting anything.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::Serialize;

use crate::spec::{Fs, ImageSpec, Role};

/// Bytes per sector in the partition table.
pub const SECTOR: u64 = 512;
/// Alignment of every partition (and the gap before the first).
pub const ALIGN: u64 = 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// One partition placed on the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placed {
    /// 1-based partition number.
    pub number: u32,
    pub role: Role,
    pub label: String,
    pub fs: Fs,
    pub start: u64,
    pub size: u64,
}

impl Placed {
    /// First byte after the partition.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// The whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub disk_size: u64,
    pub disk_id: u32,
    pub partitions: Vec<Placed>,
}

/// Why a layout could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("partitions need {needed} MiB but the disk is {disk} MiB")]
    TooSmall { needed: u64, disk: u64 },
    #[error("the disk would be {0} MiB; an MBR addresses at most 2 TiB")]
    TooLarge(u64),
    #[error("{0}")]
    Table(String),
}

impl Layout {
    /// Places the spec's partitions in order, each on a 1 MiB boundary.
    pub fn plan(spec: &ImageSpec) -> Result<Self, LayoutError> {
        let mut offset = ALIGN;
        let mut partitions = Vec::new();
        let fixed: u64 = spec.partitions.iter().filter_map(|p| p.size_mib).sum();
        let needed_mib = ALIGN / MIB + fixed;
        let disk_mib = match spec.disk_size_mib {
            Some(d) => d,
            None => needed_mib,
        };
        if disk_mib < needed_mib {
            return Err(LayoutError::TooSmall {
                needed: needed_mib,
                disk: disk_mib,
            });
        }
        if disk_mib * MIB / SECTOR > u64::from(u32::MAX) {
            return Err(LayoutError::TooLarge(disk_mib));
        }
        let disk_size = disk_mib * MIB;
        for (i, p) in spec.partitions.iter().enumerate() {
            let size = match p.size_mib {
                Some(s) => s * MIB,
                None => disk_size - offset,
            };
            if size < MIB || offset + size > disk_size {
                return Err(LayoutError::TooSmall {
                    needed: (offset + size.max(MIB)) / MIB,
                    disk: disk_mib,
                });
            }
            partitions.push(Placed {
                number: i as u32 + 1,
                role: p.role,
                label: p.label.clone(),
                fs: p.fs,
                start: offset,
                size,
            });
            offset = (offset + size).div_ceil(ALIGN) * ALIGN;
        }
        Ok(Layout {
            disk_size,
            disk_id: spec.disk_id,
            partitions,
        })
    }

    /// The partition with a role.
    pub fn get(&self, role: Role) -> Option<&Placed> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// `PARTUUID` of a partition on an MBR disk: `<disk id>-<number>`.
    pub fn partuuid(&self, role: Role) -> Option<String> {
        self.get(role)
            .map(|p| format!("{:08x}-{:02x}", self.disk_id, p.number))
    }

    /// The input for `sfdisk` that writes this table.
    pub fn sfdisk_script(&self) -> String {
        let mut s = format!(
            "label: dos\nlabel-id: 0x{:08x}\nunit: sectors\n\n",
            self.disk_id
        );
        for p in &self.partitions {
            let ty = match p.fs {
                Fs::Vfat => "c",
                Fs::Ext4 => "83",
            };
            let boot = if p.role == Role::Boot {
                ", bootable"
            } else {
                ""
            };
            s.push_str(&format!(
                "start={}, size={}, type={ty}{boot}\n",
                p.start / SECTOR,
                p.size / SECTOR
            ));
        }
        s
    }
}

/// One entry of an MBR partition table read from a disk image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrEntry {
    pub number: u32,
    pub kind: u8,
    pub start: u64,
    pub size: u64,
}

impl MbrEntry {
    /// Whether the type byte is one of the FAT types.
    pub fn is_fat(&self) -> bool {
        matches!(self.kind, 0x01 | 0x04 | 0x06 | 0x0b | 0x0c | 0x0e | 0xef)
    }
}

/// Reads the four primary entries of an MBR (empty slots left out).
pub fn read_mbr(path: &Path) -> Result<(u32, Vec<MbrEntry>), LayoutError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| LayoutError::Table(format!("cannot open {}: {e}", path.display())))?;
    let mut sector = [0u8; 512];
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_exact(&mut sector))
        .map_err(|e| {
            LayoutError::Table(format!(
                "{}: cannot read the first sector: {e}",
                path.display()
            ))
        })?;
    parse_mbr(&sector).map_err(|m| LayoutError::Table(format!("{}: {m}", path.display())))
}

/// Parses a 512-byte MBR.
pub fn parse_mbr(sector: &[u8; 512]) -> Result<(u32, Vec<MbrEntry>), String> {
    if sector[510] != 0x55 || sector[511] != 0xaa {
        return Err(
            "no MBR partition table (missing 55 AA signature): not a diemcau image?".into(),
        );
    }
    let disk_id = u32::from_le_bytes([sector[440], sector[441], sector[442], sector[443]]);
    let mut out = Vec::new();
    for i in 0..4 {
        let e = &sector[446 + 16 * i..446 + 16 * (i + 1)];
        let kind = e[4];
        let lba = u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as u64;
        let n = u32::from_le_bytes([e[12], e[13], e[14], e[15]]) as u64;
        if kind == 0xee {
            return Err("the disk has a GPT (protective MBR); diemcau images use MBR".into());
        }
        if kind != 0 && n != 0 {
            out.push(MbrEntry {
                number: i as u32 + 1,
                kind,
                start: lba * SECTOR,
                size: n * SECTOR,
            });
        }
    }
    Ok((disk_id, out))
}

/// The boot (first FAT) partition of an image.
pub fn find_boot(path: &Path) -> Result<MbrEntry, LayoutError> {
    let (_, entries) = read_mbr(path)?;
    entries.into_iter().find(MbrEntry::is_fat).ok_or_else(|| {
        LayoutError::Table(format!(
            "{}: no FAT partition in the partition table",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Board;

    #[test]
    fn qemu_virt_layout() {
        let spec = ImageSpec::for_board(Board::QemuVirt).unwrap();
        let l = Layout::plan(&spec).unwrap();
        assert_eq!(l.disk_size, 4096 * MIB);
        let starts: Vec<_> = l.partitions.iter().map(|p| p.start / MIB).collect();
        assert_eq!(starts, [1, 257, 1793, 3329]);
        let data = l.get(Role::Data).unwrap();
        assert_eq!(data.end(), l.disk_size);
        for w in l.partitions.windows(2) {
            assert!(w[0].end() <= w[1].start, "overlap {w:?}");
        }
        for p in &l.partitions {
            assert_eq!(p.start % ALIGN, 0);
        }
        assert_eq!(
            l.partuuid(Role::RootA).unwrap(),
            format!("{:08x}-02", spec.disk_id)
        );
    }

    #[test]
    fn sfdisk_script_is_sector_based() {
        let spec = ImageSpec::for_board(Board::QemuVirt).unwrap();
        let s = Layout::plan(&spec).unwrap().sfdisk_script();
        assert!(s.starts_with("label: dos\n"));
        assert!(
            s.contains("start=2048, size=524288, type=c, bootable\n"),
            "{s}"
        );
        assert_eq!(s.matches("type=83").count(), 3);
    }

    #[test]
    fn without_disk_size_the_disk_is_the_sum() {
        let mut spec = ImageSpec::for_board(Board::QemuVirt).unwrap();
        spec.disk_size_mib = None;
        spec.partitions.last_mut().unwrap().size_mib = Some(100);
        let l = Layout::plan(&spec).unwrap();
        assert_eq!(l.disk_size, (1 + 256 + 1536 * 2 + 100) * MIB);
    }

    #[test]
    fn too_small_disk_is_refused() {
        let mut spec = ImageSpec::for_board(Board::QemuVirt).unwrap();
        spec.disk_size_mib = Some(1000);
        assert!(matches!(
            Layout::plan(&spec),
            Err(LayoutError::TooSmall { .. })
        ));
    }

    #[test]
    fn mbr_round_trip() {
        let mut s = [0u8; 512];
        s[440..444].copy_from_slice(&0xdeadbeefu32.to_le_bytes());
        s[446 + 4] = 0x0c;
        s[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        s[446 + 12..446 + 16].copy_from_slice(&4096u32.to_le_bytes());
        s[510] = 0x55;
        s[511] = 0xaa;
        let (id, e) = parse_mbr(&s).unwrap();
        assert_eq!(id, 0xdeadbeef);
        assert_eq!(e.len(), 1);
        assert!(e[0].is_fat());
        assert_eq!(e[0].start, 1024 * 1024);
        s[511] = 0;
        assert!(parse_mbr(&s).unwrap_err().contains("55 AA"));
    }
}
