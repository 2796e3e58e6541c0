//! A simulated HDMI-CEC bus in a folder, for the sim board and end-to-end tests that run
//! the daemon as a separate process (where [`crate::cec::FakeCec`]'s shared memory cannot
//! reach).
//!
//! The folder stands for the adapter: it is present while `DIR/rx` exists. The TV (a test)
//! appends the frames it sends to `DIR/rx`, one per line in `cec-ctl` hex notation
//! (`04:44:00`: User Control Pressed "Select" from the TV to Playback 1); [`SimCec`]
//! appends every frame it transmits to `DIR/tx` the same way (`40:04`: Image View On).
//! `DIR/physical_address` (optional, default `1.0.0.0`) is our physical address, as if
//! read from the TV's EDID. Removing `DIR/rx` unplugs the adapter: every call then fails
//! with [`CecError::Io`], as the Linux driver does when its device goes away.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cec::{
    CecDecodeError, CecDevice, CecError, CecMessage, LogicalAddress, PhysicalAddress,
    sanitize_osd_name,
};

/// The simulated adapter. See the module documentation.
#[derive(Debug)]
pub struct SimCec {
    dir: PathBuf,
    /// How far `rx` has been read.
    offset: u64,
    /// Bytes of an incomplete last line.
    partial: Vec<u8>,
    /// Which `rx` file: a new one (replugged) is read from its start.
    inode: u64,
    logical: Option<LogicalAddress>,
}

impl SimCec {
    /// Opens the bus in `dir`; fails like a missing `/dev/cec0` if `dir/rx` is absent.
    /// Frames already in `rx` are skipped: they were sent before we were on the bus.
    pub fn open(dir: impl AsRef<Path>) -> Result<SimCec, CecError> {
        let dir = dir.as_ref().to_owned();
        let rx = dir.join("rx");
        let meta = std::fs::metadata(&rx).map_err(|source| io_err("open", &rx, source))?;
        Ok(SimCec {
            dir,
            offset: meta.len(),
            partial: Vec::new(),
            inode: meta.ino(),
            logical: None,
        })
    }

    fn rx(&self) -> PathBuf {
        self.dir.join("rx")
    }

    fn present(&self) -> Result<(), CecError> {
        let rx = self.rx();
        std::fs::metadata(&rx)
            .map(|_| ())
            .map_err(|source| io_err("CEC_RECEIVE", &rx, source))
    }

    /// The next complete line of `rx`, if one has arrived.
    fn next_line(&mut self) -> Result<Option<String>, CecError> {
        let rx = self.rx();
        let mut f =
            std::fs::File::open(&rx).map_err(|source| io_err("CEC_RECEIVE", &rx, source))?;
        let meta = f
            .metadata()
            .map_err(|source| io_err("CEC_RECEIVE", &rx, source))?;
        let len = meta.len();
        if len < self.offset || meta.ino() != self.inode {
            self.inode = meta.ino();
            // The TV's file was made anew (the adapter was replugged).
            self.offset = 0;
            self.partial.clear();
        }
        if len > self.offset {
            f.seek(SeekFrom::Start(self.offset))
                .map_err(|source| io_err("CEC_RECEIVE", &rx, source))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)
                .map_err(|source| io_err("CEC_RECEIVE", &rx, source))?;
            self.offset += buf.len() as u64;
            self.partial.extend(buf);
        }
        match self.partial.iter().position(|b| *b == b'\n') {
            Some(i) => {
                let line: Vec<u8> = self.partial.drain(..=i).collect();
                Ok(Some(String::from_utf8_lossy(&line).trim().to_owned()))
            }
            None => Ok(None),
        }
    }
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> CecError {
    CecError::Io {
        op,
        device: path.display().to_string(),
        source,
    }
}

impl CecDevice for SimCec {
    fn claim_playback(&mut self, osd_name: &str) -> Result<LogicalAddress, CecError> {
        self.present()?;
        let name = self.dir.join("osd_name");
        std::fs::write(&name, sanitize_osd_name(osd_name))
            .map_err(|source| io_err("CEC_ADAP_S_LOG_ADDRS", &name, source))?;
        self.logical = Some(LogicalAddress::PLAYBACK_1);
        Ok(LogicalAddress::PLAYBACK_1)
    }

    fn physical_address(&mut self) -> Result<PhysicalAddress, CecError> {
        self.present()?;
        match std::fs::read_to_string(self.dir.join("physical_address")) {
            Ok(text) => Ok(text.trim().parse().unwrap_or(PhysicalAddress::INVALID)),
            Err(_) => Ok(PhysicalAddress(0x1000)),
        }
    }

    fn transmit(&mut self, msg: &CecMessage) -> Result<(), CecError> {
        self.present()?;
        if self.logical.is_none() {
            return Err(CecError::NotReady("no logical address claimed"));
        }
        let tx = self.dir.join("tx");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&tx)
            .map_err(|source| io_err("CEC_TRANSMIT", &tx, source))?;
        writeln!(f, "{}", msg.to_hex()).map_err(|source| io_err("CEC_TRANSMIT", &tx, source))
    }

    fn receive(&mut self, timeout: Duration) -> Result<Option<CecMessage>, CecError> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(line) = self.next_line()? {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                return match CecMessage::from_hex(&line) {
                    Ok(m) => Ok(Some(m)),
                    Err(e) => Err(CecError::Decode(e)),
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
        }
    }
}

/// Parses a line of a `tx` or `rx` file (for tests reading what was sent).
pub fn parse_line(line: &str) -> Result<CecMessage, CecDecodeError> {
    CecMessage::from_hex(line.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cec::{CecCommand, UiCommand};

    fn append(path: &Path, text: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn frames_in_both_directions_and_unplug() {
        let dir = tempfile::tempdir().unwrap();
        let rx = dir.path().join("rx");
        assert!(matches!(SimCec::open(dir.path()), Err(CecError::Io { .. })));
        append(&rx, "04:36\n");
        let mut cec = SimCec::open(dir.path()).unwrap();
        assert_eq!(
            cec.receive(Duration::ZERO).unwrap(),
            None,
            "old frames skipped"
        );
        let image_view_on = CecMessage::from_hex("40:04").unwrap();
        assert!(matches!(
            cec.transmit(&image_view_on),
            Err(CecError::NotReady(_))
        ));
        assert_eq!(
            cec.claim_playback("Điểm cầu").unwrap(),
            LogicalAddress::PLAYBACK_1
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("osd_name")).unwrap(),
            "Diem cau"
        );
        assert_eq!(cec.physical_address().unwrap(), PhysicalAddress(0x1000));
        std::fs::write(dir.path().join("physical_address"), "2.0.0.0\n").unwrap();
        assert_eq!(cec.physical_address().unwrap(), PhysicalAddress(0x2000));
        cec.transmit(&image_view_on).unwrap();
        cec.transmit(&CecMessage::from_hex("4f:82:10:00").unwrap())
            .unwrap();
        let sent = std::fs::read_to_string(dir.path().join("tx")).unwrap();
        assert_eq!(sent, "40:04\n4f:82:10:00\n");
        assert_eq!(
            parse_line("40:04").unwrap().command(),
            Ok(CecCommand::ImageViewOn)
        );

        // A line written in two pieces arrives whole.
        append(&rx, "04:4");
        assert_eq!(cec.receive(Duration::from_millis(30)).unwrap(), None);
        append(&rx, "4:00\n# a comment\n\n04:45\nzz\n");
        let m = cec.receive(Duration::ZERO).unwrap().unwrap();
        assert_eq!(
            m.command(),
            Ok(CecCommand::UserControlPressed(UiCommand::SELECT))
        );
        let m = cec.receive(Duration::ZERO).unwrap().unwrap();
        assert_eq!(m.command(), Ok(CecCommand::UserControlReleased));
        assert!(matches!(
            cec.receive(Duration::ZERO),
            Err(CecError::Decode(_))
        ));

        // Unplugged: every call fails as with a vanished /dev/cec0.
        std::fs::remove_file(&rx).unwrap();
        assert!(matches!(
            cec.receive(Duration::ZERO),
            Err(CecError::Io { .. })
        ));
        assert!(matches!(
            cec.transmit(&image_view_on),
            Err(CecError::Io { .. })
        ));
        // Plugged in again, with a new file: read from its start.
        append(&rx, "04:44:00\n");
        let m = cec.receive(Duration::ZERO).unwrap().unwrap();
        assert_eq!(
            m.command(),
            Ok(CecCommand::UserControlPressed(UiCommand::SELECT))
        );
    }
}
