//! The speaker volume: what Volume ± on a remote does, bounded to 0–100 %,
//! kept across restarts in a small file written atomically (temp file,
//! fsync, rename), so a power cut never leaves half a number.
//!
//! The volume is applied by the call's subscriber pipelines (a `volume`
//! element before the speaker sink, see
//! [`diemcau_media::subscriber::speaker_gain`]), so it works the same on
//! every board and sound card; `ctl status` and the screen show it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// One press of Volume + or Volume −, in percent.
pub const STEP: u8 = 10;

/// The speaker volume of a room that has never been told otherwise.
pub const DEFAULT_PERCENT: u8 = 80;

/// The room's speaker volume and where it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    percent: u8,
    file: Option<PathBuf>,
}

impl Volume {
    /// The volume saved in `file`, else `initial`. A missing or unreadable
    /// file is not an error: the room plays at `initial`.
    pub fn load(file: Option<PathBuf>, initial: u8) -> Volume {
        let saved = file.as_deref().and_then(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            match text.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Some(p),
                _ => {
                    tracing::warn!(file = %f.display(), "saved speaker volume is not 0 to 100; ignored");
                    None
                }
            }
        });
        Volume {
            percent: saved.unwrap_or(initial.min(100)),
            file,
        }
    }

    pub fn percent(&self) -> u8 {
        self.percent
    }

    /// One step up (`up`) or down, within 0–100 %; saves and returns the
    /// new volume.
    pub fn step(&mut self, up: bool) -> u8 {
        let p = if up {
            self.percent.saturating_add(STEP).min(100)
        } else {
            self.percent.saturating_sub(STEP)
        };
        self.set(p)
    }

    /// Sets the volume (clamped to 100 %), saves it and returns it.
    pub fn set(&mut self, percent: u8) -> u8 {
        let p = percent.min(100);
        if p != self.percent {
            self.percent = p;
            if let Some(f) = &self.file
                && let Err(e) = write_atomically(f, format!("{p}\n").as_bytes())
            {
                tracing::warn!(file = %f.display(), error = %crate::chain(&e), "cannot save the speaker volume");
            }
        }
        self.percent
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_bounded() {
        let mut v = Volume::load(None, 80);
        assert_eq!(v.percent(), 80);
        assert_eq!(v.step(true), 90);
        assert_eq!(v.step(true), 100);
        assert_eq!(v.step(true), 100, "never above 100 %");
        for _ in 0..12 {
            v.step(false);
        }
        assert_eq!(v.percent(), 0, "never below 0 %");
        assert_eq!(v.step(true), 10);
        assert_eq!(v.set(255), 100);
        assert_eq!(Volume::load(None, 200).percent(), 100);
    }

    #[test]
    fn kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/volume");
        let mut v = Volume::load(Some(file.clone()), 80);
        assert_eq!(v.percent(), 80, "no file yet: the initial volume");
        v.step(false);
        v.step(false);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "60\n");
        assert!(!file.with_extension("tmp").exists());
        assert_eq!(Volume::load(Some(file.clone()), 80).percent(), 60);
        std::fs::write(&file, "loud\n").unwrap();
        assert_eq!(Volume::load(Some(file.clone()), 70).percent(), 70);
        std::fs::write(&file, "101").unwrap();
        assert_eq!(Volume::load(Some(file), 70).percent(), 70);
    }
}
