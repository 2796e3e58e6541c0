//! Assembling the disk image from directories, without root and without
//! mounting: a fresh sparse file with the MBR written by `sfdisk`; the boot
//! partition made with `mkfs.vfat` on a file of its own and filled with
//! `mcopy -s`; ext4 partitions made with `mkfs.ext4 -d DIR` (fixed UUIDs and
//! hash seed, time stamps from `SOURCE_DATE_EPOCH`); every file system
//! checked (`fsck.fat -n`, `e2fsck -fn`) before it is copied into place.
//! Each partition is copied into a newly created image file, never an old
//! one: stale blocks in a reused file gave ext4 checksum errors here.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::layout::{Layout, Placed};
use crate::spec::{Fs, Role};
use crate::tools::{self, ToolError};

/// What goes in each partition: a directory, or nothing (empty file system).
#[derive(Debug, Clone, Default)]
pub struct Contents {
    pub boot: Option<PathBuf>,
    pub root_a: Option<PathBuf>,
    pub root_b: Option<PathBuf>,
    pub data: Option<PathBuf>,
}

impl Contents {
    fn for_role(&self, r: Role) -> Option<&Path> {
        match r {
            Role::Boot => self.boot.as_deref(),
            Role::RootA => self.root_a.as_deref(),
            Role::RootB => self.root_b.as_deref(),
            Role::Data => self.data.as_deref(),
        }
    }
}

/// Why assembly failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("partition {number} ({role}, {label})")]
    Tool {
        number: u32,
        role: &'static str,
        label: String,
        #[source]
        source: ToolError,
    },
    #[error("cannot write the partition table")]
    Table(#[source] ToolError),
    #[error("the contents of {dir} do not fit in partition {label} ({size} bytes)")]
    TooBig {
        dir: PathBuf,
        label: String,
        size: u64,
    },
}

/// Deterministic UUID (as text) from a seed string.
pub fn uuid_from(seed: &str) -> String {
    let h = crate::sha256_hex(seed.as_bytes());
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn tool_err(p: &Placed) -> impl FnOnce(ToolError) -> DiskError + '_ {
    move |source| DiskError::Tool {
        number: p.number,
        role: p.role.name(),
        label: p.label.clone(),
        source,
    }
}

/// Makes the file system image for one partition in `scratch` and checks it.
pub fn make_fs(
    p: &Placed,
    dir: Option<&Path>,
    scratch: &Path,
    disk_id: u32,
    epoch: i64,
) -> Result<PathBuf, DiskError> {
    let file = scratch.join(format!("part{}.{}", p.number, p.role.name()));
    let _ = std::fs::remove_file(&file);
    let f = File::create(&file).map_err(|source| DiskError::Io {
        what: "cannot create",
        path: file.clone(),
        source,
    })?;
    f.set_len(p.size).map_err(|source| DiskError::Io {
        what: "cannot size",
        path: file.clone(),
        source,
    })?;
    drop(f);
    let err = tool_err(p);
    match p.fs {
        Fs::Vfat => {
            let mut c = tools::cmd("mkfs.vfat").map_err(tool_err(p))?;
            c.env("SOURCE_DATE_EPOCH", epoch.to_string())
                .args(["-F", "32", "-n", &p.label, "-i", &format!("{disk_id:08x}")])
                .arg(&file);
            tools::run(c).map_err(tool_err(p))?;
            if let Some(dir) = dir {
                let mut entries: Vec<_> = std::fs::read_dir(dir)
                    .map_err(|source| DiskError::Io {
                        what: "cannot list",
                        path: dir.to_owned(),
                        source,
                    })?
                    .flatten()
                    .map(|e| e.path())
                    .collect();
                entries.sort();
                if !entries.is_empty() {
                    let mut c = tools::cmd("mcopy").map_err(tool_err(p))?;
                    c.env("MTOOLS_SKIP_CHECK", "1")
                        .args(["-s", "-p", "-m", "-i"])
                        .arg(&file)
                        .args(&entries)
                        .arg("::");
                    tools::run(c).map_err(|e| match &e {
                        ToolError::Failed { output, .. } if output.contains("Disk full") => {
                            DiskError::TooBig {
                                dir: dir.to_owned(),
                                label: p.label.clone(),
                                size: p.size,
                            }
                        }
                        _ => tool_err(p)(e),
                    })?;
                }
            }
            let mut c = tools::cmd("fsck.fat").map_err(tool_err(p))?;
            c.arg("-n").arg(&file);
            tools::run(c).map_err(tool_err(p))?;
        }
        Fs::Ext4 => {
            let uuid = uuid_from(&format!("{disk_id:08x}-{}", p.number));
            let seed = uuid_from(&format!("{disk_id:08x}-{}-hash", p.number));
            let mut c = tools::cmd("mkfs.ext4").map_err(tool_err(p))?;
            c.env("E2FSPROGS_FAKE_TIME", epoch.to_string())
                .env("SOURCE_DATE_EPOCH", epoch.to_string())
                .args(["-q", "-F", "-t", "ext4", "-L", &p.label, "-U", &uuid])
                .args(["-E", &format!("hash_seed={seed},root_owner=0:0")])
                .args(["-m", "1", "-I", "256"]);
            if let Some(dir) = dir {
                c.arg("-d").arg(dir);
            }
            c.arg(&file);
            tools::run(c).map_err(|e| match &e {
                ToolError::Failed { output, .. }
                    if output.contains("Could not allocate") || output.contains("No space") =>
                {
                    DiskError::TooBig {
                        dir: dir.map(Path::to_owned).unwrap_or_default(),
                        label: p.label.clone(),
                        size: p.size,
                    }
                }
                _ => err(e),
            })?;
            let mut c = tools::cmd("e2fsck").map_err(tool_err(p))?;
            c.args(["-f", "-n"]).arg(&file);
            tools::run(c).map_err(tool_err(p))?;
        }
    }
    Ok(file)
}

/// Copies `src` into `dst` at `offset`, skipping all-zero blocks so the
/// image stays sparse (`dd conv=notrunc,sparse` into a fresh file).
fn copy_into(src: &Path, dst: &mut File, offset: u64) -> std::io::Result<()> {
    let mut s = File::open(src)?;
    let mut buf = vec![0u8; 1 << 20];
    let zeros = vec![0u8; 1 << 20];
    let mut pos = offset;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match s.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        // Slice equality is a memcmp: fast even in a debug build.
        if buf[..n] != zeros[..n] {
            dst.seek(SeekFrom::Start(pos))?;
            dst.write_all(&buf[..n])?;
        }
        pos += n as u64;
    }
    Ok(())
}

/// Builds the image at `out` (replacing any old file) from `contents`.
/// `note` receives one line per partition for progress output.
pub fn assemble(
    layout: &Layout,
    contents: &Contents,
    out: &Path,
    epoch: i64,
    mut note: impl FnMut(&str),
) -> Result<(), DiskError> {
    let scratch_parent = out.parent().unwrap_or(Path::new("."));
    let scratch = tempfile::Builder::new()
        .prefix(".diemcau-parts-")
        .tempdir_in(scratch_parent)
        .map_err(|source| DiskError::Io {
            what: "cannot make a scratch folder beside",
            path: out.to_owned(),
            source,
        })?;
    // A fresh file: never reuse an old image.
    let tmp_out = out.with_extension("img.partial");
    let _ = std::fs::remove_file(&tmp_out);
    let mut img = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&tmp_out)
        .map_err(|source| DiskError::Io {
            what: "cannot create",
            path: tmp_out.clone(),
            source,
        })?;
    img.set_len(layout.disk_size)
        .map_err(|source| DiskError::Io {
            what: "cannot size",
            path: tmp_out.clone(),
            source,
        })?;
    let mut c = tools::cmd("sfdisk").map_err(DiskError::Table)?;
    c.args(["--no-reread", "--no-tell-kernel", "-q"])
        .arg(&tmp_out);
    c.stdin(std::process::Stdio::piped());
    let script = layout.sfdisk_script();
    run_with_stdin(c, script.as_bytes()).map_err(DiskError::Table)?;
    for p in &layout.partitions {
        let dir = contents.for_role(p.role);
        note(&format!(
            "partition {} {:<7} {:<5} {:>5} MiB at {} MiB{}",
            p.number,
            p.role.name(),
            match p.fs {
                Fs::Vfat => "vfat",
                Fs::Ext4 => "ext4",
            },
            p.size >> 20,
            p.start >> 20,
            dir.map(|d| format!(" from {}", d.display()))
                .unwrap_or_else(|| " (empty)".into())
        ));
        let fs = make_fs(p, dir, scratch.path(), layout.disk_id, epoch)?;
        copy_into(&fs, &mut img, p.start).map_err(|source| DiskError::Io {
            what: "cannot copy a partition into",
            path: tmp_out.clone(),
            source,
        })?;
        let _ = std::fs::remove_file(&fs);
    }
    img.sync_all().map_err(|source| DiskError::Io {
        what: "cannot flush",
        path: tmp_out.clone(),
        source,
    })?;
    drop(img);
    std::fs::rename(&tmp_out, out).map_err(|source| DiskError::Io {
        what: "cannot rename into place",
        path: out.to_owned(),
        source,
    })?;
    Ok(())
}

fn run_with_stdin(mut c: std::process::Command, input: &[u8]) -> Result<(), ToolError> {
    let name = format!("{:?}", c.get_program());
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| ToolError::Spawn {
            tool: name.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(|source| ToolError::Spawn {
            tool: name.clone(),
            source,
        })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| ToolError::Spawn {
            tool: name.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            command: format!("{name} < script"),
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Extracts one partition of an image into its own (sparse) file, for checks.
pub fn extract_partition(image: &Path, start: u64, size: u64, out: &Path) -> std::io::Result<()> {
    let mut s = File::open(image)?;
    s.seek(SeekFrom::Start(start))?;
    let mut d = File::create(out)?;
    d.set_len(size)?;
    let mut buf = vec![0u8; 1 << 20];
    let zeros = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < size {
        let want = ((size - done) as usize).min(buf.len());
        s.read_exact(&mut buf[..want])?;
        if buf[..want] != zeros[..want] {
            d.seek(SeekFrom::Start(done))?;
            d.write_all(&buf[..want])?;
        }
        done += want as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let a = uuid_from("x");
        assert_eq!(a, uuid_from("x"));
        assert_ne!(a, uuid_from("y"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn copy_keeps_zero_blocks_sparse() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("s");
        let mut data = vec![0u8; 3 << 20];
        data[(2 << 20) + 5] = 7;
        std::fs::write(&src, &data).unwrap();
        let dst = d.path().join("d");
        let mut f = File::create(&dst).unwrap();
        f.set_len(8 << 20).unwrap();
        copy_into(&src, &mut f, 1 << 20).unwrap();
        drop(f);
        let out = std::fs::read(&dst).unwrap();
        assert_eq!(out[(3 << 20) + 5], 7);
        assert_eq!(out.iter().filter(|b| **b != 0).count(), 1);
    }
}
