//! Counters that the pipelines' pad probes update and status reports read.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

const LATENCY_WINDOW: usize = 600;
const FPS_WINDOW: Duration = Duration::from_secs(2);

/// What one received feed has delivered so far. Shared between the
/// streaming threads (writers) and the status reporter (reader).
#[derive(Debug, Default)]
pub struct ReceiveCounters {
    video_frames: AtomicU64,
    audio_buffers: AtomicU64,
    /// Audio samples decoded (per channel), for "frames played / expected".
    audio_samples: AtomicU64,
    /// Audio samples (per channel, 48 kHz) of packets that never arrived
    /// (gaps the jitter buffer declared lost), which the decoder filled
    /// from Opus in-band FEC or concealed.
    audio_concealed: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    latencies: VecDeque<u64>,
    frame_times: VecDeque<Instant>,
    size: (u32, u32),
    first_frame: Option<Instant>,
    first_frame_unix_ms: Option<u64>,
    audio_peak_db: f64,
    audio_level_db: Option<f64>,
    last_audio_level_at: Option<Instant>,
}

/// A snapshot of [`ReceiveCounters`], as reported in status.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, Default)]
pub struct ReceiveStats {
    pub video_frames: u64,
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    pub audio_buffers: u64,
    pub audio_samples: u64,
    /// Of those, samples for packets that never arrived, filled by Opus's
    /// in-band FEC or its packet-loss concealment (48 kHz, per channel).
    #[serde(default)]
    pub audio_concealed_samples: u64,
    /// Loudness of the received audio over the last second, dBFS (RMS).
    pub audio_level_db: Option<f64>,
    /// Glass-to-glass latency of stamped frames: median and 95th percentile.
    pub latency_p50_ms: Option<u64>,
    pub latency_p95_ms: Option<u64>,
    pub latency_samples: usize,
    /// Wall-clock time of the first decoded frame (Unix milliseconds).
    pub first_frame_unix_ms: Option<u64>,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // A poisoned lock only means a probe panicked mid-update; the counters
    // are still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ReceiveCounters {
    pub fn video_frame(&self, now: Instant, width: u32, height: u32, latency_ms: Option<u64>) {
        self.video_frames.fetch_add(1, Ordering::Relaxed);
        let mut i = lock(&self.inner);
        if i.first_frame.is_none() {
            i.first_frame = Some(now);
            i.first_frame_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_millis() as u64);
        }
        i.size = (width, height);
        i.frame_times.push_back(now);
        while i
            .frame_times
            .front()
            .is_some_and(|t| now.duration_since(*t) > FPS_WINDOW)
        {
            i.frame_times.pop_front();
        }
        if let Some(l) = latency_ms {
            if i.latencies.len() == LATENCY_WINDOW {
                i.latencies.pop_front();
            }
            i.latencies.push_back(l);
        }
    }

    pub fn audio_buffer(&self, now: Instant, samples: u64, rms_db: f64) {
        self.audio_buffers.fetch_add(1, Ordering::Relaxed);
        self.audio_samples.fetch_add(samples, Ordering::Relaxed);
        let mut i = lock(&self.inner);
        let fresh = i
            .last_audio_level_at
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1));
        i.audio_peak_db = if fresh {
            i.audio_peak_db.max(rms_db)
        } else {
            rms_db
        };
        if !fresh {
            i.audio_level_db = Some(i.audio_peak_db);
            i.last_audio_level_at = Some(now);
        } else {
            i.audio_level_db = Some(i.audio_level_db.unwrap_or(rms_db).max(rms_db));
        }
    }

    /// A gap of `samples` (per channel, 48 kHz) in the received audio:
    /// packets lost, to be filled by the decoder.
    pub fn audio_gap(&self, samples: u64) {
        self.audio_concealed.fetch_add(samples, Ordering::Relaxed);
    }

    /// When the first decoded frame arrived.
    pub fn first_frame(&self) -> Option<Instant> {
        lock(&self.inner).first_frame
    }

    pub fn snapshot(&self, now: Instant) -> ReceiveStats {
        let i = lock(&self.inner);
        let recent = i
            .frame_times
            .iter()
            .filter(|t| now.duration_since(**t) <= FPS_WINDOW)
            .count();
        let mut sorted: Vec<u64> = i.latencies.iter().copied().collect();
        sorted.sort_unstable();
        ReceiveStats {
            video_frames: self.video_frames.load(Ordering::Relaxed),
            fps: recent as f64 / FPS_WINDOW.as_secs_f64(),
            width: i.size.0,
            height: i.size.1,
            audio_buffers: self.audio_buffers.load(Ordering::Relaxed),
            audio_samples: self.audio_samples.load(Ordering::Relaxed),
            audio_concealed_samples: self.audio_concealed.load(Ordering::Relaxed),
            audio_level_db: i.audio_level_db,
            latency_p50_ms: percentile(&sorted, 50),
            latency_p95_ms: percentile(&sorted, 95),
            latency_samples: sorted.len(),
            first_frame_unix_ms: i.first_frame_unix_ms,
        }
    }
}

/// The `p`th percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// RMS level of interleaved S16 samples in dBFS (-100 for silence).
pub fn rms_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return -100.0;
    }
    let sum: f64 = samples
        .iter()
        .map(|s| {
            let x = f64::from(*s) / 32768.0;
            x * x
        })
        .sum();
    let rms = (sum / samples.len() as f64).sqrt();
    if rms <= 1e-5 {
        -100.0
    } else {
        20.0 * rms.log10()
    }
}

/// Network-side statistics of one PeerConnection, from webrtcbin's stats.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, Default)]
pub struct RtpStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Packets lost as reported by the far end (sending) or seen here (receiving).
    pub packets_lost: i64,
    pub rtt_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
}

/// One of our outgoing media streams (the payloader's SSRC), as webrtcbin
/// reports it. Retransmissions travel on streams of their own and count only
/// in [`SendStats::rtp`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StreamSend {
    pub ssrc: u32,
    pub bytes_sent: u64,
    pub packets_sent: u64,
    /// The latest RTCP report block about this stream from the far end.
    pub remote: Option<RemoteReport>,
}

/// One RTCP report block about a stream we send, as the far end (Janus)
/// last sent it. The counters are cumulative: a new report shows as a
/// higher `ext_highest_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RemoteReport {
    /// Extended highest sequence number the far end has received.
    pub ext_highest_seq: u32,
    /// Packets lost since the stream began (may go down with duplicates).
    pub packets_lost: i64,
    /// Fraction lost over the interval before this report, 0.0..=1.0.
    pub fraction_lost: f64,
    /// Round-trip time computed from this report, milliseconds.
    pub rtt_ms: Option<f64>,
}

/// A publisher's statistics: the totals shown in status, and the audio and
/// video streams on their own for the sender adaptation
/// ([`crate::adapt::LinkMeter`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SendStats {
    pub rtp: RtpStats,
    pub video: Option<StreamSend>,
    pub audio: Option<StreamSend>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 95), Some(95));
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 95), Some(7));
    }

    #[test]
    fn rms_of_full_scale_square_is_zero_db() {
        let s = [32767i16, -32767, 32767, -32767];
        assert!(rms_dbfs(&s).abs() < 0.01);
        assert_eq!(rms_dbfs(&[0, 0, 0]), -100.0);
    }

    #[test]
    fn fps_and_latency_snapshot() {
        let c = ReceiveCounters::default();
        let t0 = Instant::now();
        for i in 0..60 {
            c.video_frame(
                t0 + Duration::from_millis(i * 33),
                1280,
                720,
                Some(80 + i % 5),
            );
        }
        let s = c.snapshot(t0 + Duration::from_millis(60 * 33));
        assert_eq!(s.video_frames, 60);
        assert!((s.fps - 30.0).abs() < 1.5, "{}", s.fps);
        assert_eq!(s.latency_p50_ms, Some(82));
        assert_eq!((s.width, s.height), (1280, 720));
    }
}
