//! What the received picture looks like, in two numbers: its mean
//! brightness, and when it last changed at a stroke (a cut: the far room's
//! camera replaced by its "camera unavailable" slate, and back).
//!
//! The subscriber feeds every decoded frame's luma plane to a
//! [`PictureMeter`]; status reports read a [`PictureStats`]. Only a sparse
//! grid of pixels is read, below the time-stamp row (see [`crate::stamp`]).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Distance between the pixels read, in both directions.
const GRID: usize = 16;
/// A change of mean luma by more than this between a frame and the one
/// [`CUT_SPAN`] frames before it is a cut.
pub const CUT_LEVELS: f64 = 16.0;
/// Frames over which a cut may spread (encoders may take a few frames to
/// settle on a new picture).
const CUT_SPAN: usize = 5;

/// A snapshot of a [`PictureMeter`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PictureStats {
    /// Mean luma (0-255) of the latest frame.
    pub mean_luma: Option<f64>,
    /// Wall-clock time of the latest cut (Unix milliseconds).
    pub last_cut_unix_ms: Option<u64>,
    /// Cuts seen so far.
    pub cuts: u64,
}

#[derive(Debug, Default)]
struct Inner {
    recent: VecDeque<f64>,
    /// Frames left in which the picture is settling after a cut.
    settling: usize,
    stats: PictureStats,
}

/// Reads frames; shared between a streaming thread and the reporter.
#[derive(Debug, Default)]
pub struct PictureMeter {
    inner: Mutex<Inner>,
}

/// Mean of a sparse grid of a luma plane, skipping the stamp rows; `None`
/// when the plane is too small or shorter than its size says.
pub fn mean_luma(luma: &[u8], width: usize, height: usize, stride: usize) -> Option<f64> {
    let top = crate::stamp::ROW_HEIGHT + GRID / 2;
    if width < GRID || height <= top || stride < width || luma.len() < stride * (height - 1) + width
    {
        return None;
    }
    let (mut sum, mut n) = (0u64, 0u64);
    for y in (top..height).step_by(GRID) {
        let row = &luma[y * stride..y * stride + width];
        for x in (GRID / 2..width).step_by(GRID) {
            sum += u64::from(row[x]);
            n += 1;
        }
    }
    (n > 0).then(|| sum as f64 / n as f64)
}

impl PictureMeter {
    /// Takes one decoded frame's luma plane.
    pub fn frame(&self, luma: &[u8], width: usize, height: usize, stride: usize) {
        let Some(mean) = mean_luma(luma, width, height, stride) else {
            return;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.mean(mean, now);
    }

    fn mean(&self, mean: f64, now_unix_ms: u64) {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if i.settling > 0 {
            // One cut per change: the frames after it only settle.
            i.settling -= 1;
            i.recent.clear();
        } else if i.recent.iter().any(|m| (mean - m).abs() > CUT_LEVELS) {
            i.stats.last_cut_unix_ms = Some(now_unix_ms);
            i.stats.cuts += 1;
            i.settling = CUT_SPAN;
            i.recent.clear();
        }
        if i.recent.len() == CUT_SPAN {
            i.recent.pop_front();
        }
        i.recent.push_back(mean);
        i.stats.mean_luma = Some(mean);
    }

    pub fn snapshot(&self) -> PictureStats {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_skips_the_stamp_and_reads_a_grid() {
        let (w, h) = (64, 48);
        let mut y = vec![100u8; w * h];
        y[..w * crate::stamp::ROW_HEIGHT].fill(255);
        assert_eq!(mean_luma(&y, w, h, w), Some(100.0));
        assert_eq!(
            mean_luma(&y, w, h, w + 8),
            None,
            "plane too short for stride"
        );
        assert_eq!(mean_luma(&y[..10], w, h, w), None);
        assert_eq!(mean_luma(&y, 8, 8, 8), None);
    }

    #[test]
    fn a_change_spread_over_frames_is_one_cut() {
        let m = PictureMeter::default();
        for _ in 0..10 {
            m.mean(20.0, 1);
        }
        assert_eq!(m.snapshot().cuts, 0);
        // The ball moving: small changes, no cut.
        for i in 0..10 {
            m.mean(20.0 + f64::from(i % 3), 2);
        }
        assert_eq!(m.snapshot().cuts, 0);
        // Slate in over three frames.
        m.mean(40.0, 100);
        m.mean(70.0, 133);
        m.mean(90.0, 166);
        for _ in 0..10 {
            m.mean(90.0, 200);
        }
        let s = m.snapshot();
        assert_eq!((s.cuts, s.last_cut_unix_ms), (1, Some(100)), "{s:?}");
        assert_eq!(s.mean_luma, Some(90.0));
        // Back to the camera at once.
        m.mean(21.0, 5000);
        let s = m.snapshot();
        assert_eq!((s.cuts, s.last_cut_unix_ms), (2, Some(5000)));
    }
}
