//! Device state on disk, written atomically: temp file in the same folder,
//! fsync, rename over the old file, fsync the folder. Each file carries a
//! generation number that grows by one on every write, so a reader (or a
//! person debugging a board) can tell which write it sees, and a power cut
//! leaves either the old or the new file, never half of one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write state file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read state file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The envelope written to disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generational<T> {
    pub generation: u64,
    pub data: T,
}

/// Writes `bytes` to `path` atomically with the given Unix mode.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// One JSON state file with a generation number.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    mode: u32,
}

impl StateFile {
    /// A file readable by everyone (`0644`).
    pub fn public(path: PathBuf) -> Self {
        Self { path, mode: 0o644 }
    }

    /// A file readable only by its owner (`0600`), for keys.
    pub fn private(path: PathBuf) -> Self {
        Self { path, mode: 0o600 }
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file; `Ok(None)` when it does not exist.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<Generational<T>>, StateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateError::Corrupt {
                path: self.path.clone(),
                source,
            })
    }

    /// Writes `data` with the next generation number; returns it.
    pub fn store<T: Serialize + DeserializeOwned>(&self, data: &T) -> Result<u64, StateError> {
        let generation = match self.load::<serde_json::Value>() {
            Ok(Some(g)) => g.generation + 1,
            _ => 1,
        };
        let bytes = serde_json::to_vec_pretty(&Generational { generation, data }).map_err(|e| {
            StateError::Write {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            }
        })?;
        write_atomic(&self.path, &bytes, self.mode)?;
        Ok(generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_grow_and_no_temp_left() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::private(dir.path().join("identity.json"));
        assert!(f.load::<String>().unwrap().is_none());
        assert_eq!(f.store(&"a".to_string()).unwrap(), 1);
        assert_eq!(f.store(&"b".to_string()).unwrap(), 2);
        let g = f.load::<String>().unwrap().unwrap();
        assert_eq!((g.generation, g.data.as_str()), (2, "b"));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(f.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        std::fs::write(&p, b"{half").unwrap();
        assert!(matches!(
            StateFile::public(p).load::<String>(),
            Err(StateError::Corrupt { .. })
        ));
    }
}
