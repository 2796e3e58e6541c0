//! Incoming media of one remote bridge point: PeerConnection to decoders,
//! display and speaker, with probes that count frames, read the time stamps
//! and measure the audio level.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gst::prelude::*;
use gst_video::prelude::*;
use gst_webrtc::WebRTCSDPType;
use tokio::sync::mpsc;

use crate::echo::Speaker;
use crate::picture::{PictureMeter, PictureStats};
use crate::stats::{ReceiveCounters, rms_dbfs};
use crate::webrtc::{self, MediaEvent};
use crate::{AudioOut, MediaError, MediaSettings, VideoOut, stamp};

/// A running receiving pipeline. Dropping it stops the pipeline.
pub struct Subscriber {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    counters: Arc<ReceiveCounters>,
    picture: Arc<PictureMeter>,
    /// Speaker volume, percent (see [`speaker_gain`]).
    volume: Arc<AtomicU8>,
    speaker: Arc<SpeakerMeter>,
}

/// The gain of the speaker at `percent` volume: 100 % plays the far end as
/// received, 0 % is silent; in between the square of the fraction, so that
/// each step sounds about as large (50 %: -12 dB, 30 %: -21 dB).
pub fn speaker_gain(percent: u8) -> f64 {
    let p = f64::from(percent.min(100)) / 100.0;
    p * p
}

/// Loudness of what goes to the speaker (after the volume), dBFS (RMS):
/// the loudest buffer since the current one-second window began.
#[derive(Debug, Default)]
pub struct SpeakerMeter {
    inner: Mutex<(Option<Instant>, Option<f64>)>,
}

impl SpeakerMeter {
    /// One buffer of level `rms_db` played at `now`.
    pub fn push(&self, now: Instant, rms_db: f64) {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let fresh =
            i.0.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1));
        if fresh {
            i.1 = Some(i.1.unwrap_or(rms_db).max(rms_db));
        } else {
            *i = (Some(now), Some(rms_db));
        }
    }

    /// The level, `None` before the first buffer.
    pub fn level_db(&self) -> Option<f64> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '-' })
        .collect();
    if s.is_empty() { "peer".into() } else { s }
}

impl Subscriber {
    /// Starts a receiving pipeline for the feed called `peer_name`. Its
    /// sound is played on `out_speaker` (mixed with the other far rooms' and
    /// recorded by the echo probe: see [`crate::echo`]); without one, as
    /// `settings.audio_out` says.
    pub fn start(
        settings: &MediaSettings,
        out_speaker: Option<&Arc<Speaker>>,
        peer_id: u64,
        peer_name: &str,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> Result<Self, MediaError> {
        let pipeline = gst::Pipeline::with_name(&format!("sub-{}", sanitize(peer_name)));
        let webrtc = gst::ElementFactory::make("webrtcbin")
            .name("webrtc")
            .build()
            .map_err(|e| MediaError::Pipeline(format!("webrtcbin: {e}")))?;
        pipeline
            .add(&webrtc)
            .map_err(|e| MediaError::Pipeline(e.to_string()))?;
        webrtc::configure(&webrtc, settings.jitter_ms, events.clone());
        webrtc::watch_bus(&pipeline, "subscriber", events.clone());

        let counters = Arc::new(ReceiveCounters::default());
        let picture = Arc::new(PictureMeter::default());
        let pic = picture.clone();
        let volume = Arc::new(AtomicU8::new(100));
        let speaker = Arc::new(SpeakerMeter::default());
        let (vol, spk) = (volume.clone(), speaker.clone());
        let video_chain = video_chain(settings, peer_id, peer_name);
        let audio_chain = match out_speaker {
            Some(_) => format!(
                "audioconvert ! audioresample ! {} ! appsink name=spkout sync=false \
                 max-buffers=10 drop=true enable-last-sample=false",
                crate::echo::AUDIO_CAPS
            ),
            None => audio_chain(&settings.audio_out),
        };
        let out_speaker = out_speaker.cloned();
        let decoder = settings.decoder.launch_fragment();
        let pl = pipeline.downgrade();
        let c = counters.clone();
        webrtc.connect_pad_added(move |_, pad| {
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let Some(pipeline) = pl.upgrade() else { return };
            let media = pad
                .current_caps()
                .and_then(|caps| {
                    caps.structure(0)
                        .and_then(|s| s.get::<String>("encoding-name").ok())
                })
                .unwrap_or_default();
            tracing::debug!(encoding = %media, "incoming stream");
            let desc = match media.to_ascii_uppercase().as_str() {
                "H264" => format!(
                    "rtph264depay ! h264parse ! {decoder} ! videoconvert ! video/x-raw,format=I420 \
                     ! identity name=vprobe sync=true ! {video_chain}"
                ),
                "VP8" => format!(
                    "rtpvp8depay ! vp8dec ! videoconvert ! video/x-raw,format=I420 \
                     ! identity name=vprobe sync=true ! {video_chain}"
                ),
                "OPUS" => format!(
                    "rtpopusdepay ! opusdec name=adec plc=true use-inband-fec=true ! audioconvert ! audioresample \
                     ! audio/x-raw,format=S16LE,rate=48000 ! identity name=aprobe \
                     ! volume name=speaker volume={gain} ! identity name=spkprobe ! {audio_chain}",
                    gain = speaker_gain(vol.load(Ordering::Relaxed)),
                ),
                other => {
                    tracing::warn!(encoding = other, "unsupported incoming media; discarded");
                    "fakesink sync=false async=false".to_string()
                }
            };
            let out = (&vol, &spk, out_speaker.as_ref());
            if let Err(e) = link_chain(&pipeline, pad, &desc, &c, &pic, out) {
                let _ = events.send(MediaEvent::Failed(format!("receiving {media}: {e}")));
            }
        });
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| MediaError::Pipeline(format!("subscriber does not start: {e}")))?;
        Ok(Subscriber {
            pipeline,
            webrtc,
            counters,
            picture,
            volume,
            speaker,
        })
    }

    /// Takes the server's offer and returns our answer.
    pub async fn answer(&self, offer_sdp: &str) -> Result<String, MediaError> {
        webrtc::set_remote(&self.webrtc, WebRTCSDPType::Offer, offer_sdp).await?;
        webrtc::create_answer(&self.webrtc).await
    }

    pub fn add_remote_candidate(&self, mline: u32, candidate: Option<&str>) {
        webrtc::add_candidate(&self.webrtc, mline, candidate);
    }

    pub fn counters(&self) -> &Arc<ReceiveCounters> {
        &self.counters
    }

    /// Sets the speaker volume of this feed, percent (0 to 100), from now
    /// on and for audio that starts later.
    pub fn set_volume(&self, percent: u8) {
        let percent = percent.min(100);
        self.volume.store(percent, Ordering::Relaxed);
        if let Some(v) = self.pipeline.by_name("speaker") {
            v.set_property("volume", speaker_gain(percent));
        }
    }

    /// Loudness of what this feed plays on the speaker (after the volume),
    /// dBFS over the last second.
    pub fn speaker_level_db(&self) -> Option<f64> {
        self.speaker.level_db()
    }

    /// Brightness of the received picture and when it last cut.
    pub fn picture(&self) -> PictureStats {
        self.picture.snapshot()
    }

    pub async fn stats(&self) -> Result<crate::stats::RtpStats, MediaError> {
        webrtc::rtp_stats(&self.webrtc).await
    }
}

fn video_chain(settings: &MediaSettings, peer_id: u64, peer: &str) -> String {
    let q = "queue max-size-buffers=3 max-size-time=0 max-size-bytes=0 leaky=downstream";
    match &settings.video_out {
        // Discarded frames are still taken at their display time, as a
        // screen would, so that the probe before it measures what a screen
        // shows (and the sink's latency query configures the pipeline). No
        // queue: the probe has waited already, and the sink takes the frame
        // at once (a thread hand-off per frame for nothing).
        VideoOut::Discard => "fakesink sync=true async=false".to_string(),
        // The screen composes at its own rate; the probe before it has
        // already waited for the display time.
        VideoOut::Screen => format!(
            "{q} ! intervideosink channel={}",
            crate::screen::peer_channel(peer_id)
        ),
        // The probe before the sink waits for the frame's display time
        // (identity sync=true), so what it measures is what the screen shows.
        VideoOut::Sink(spec) => format!("{q} ! videoconvert ! {}", spec.launch_fragment()),
        VideoOut::Png { dir, every_secs } => format!(
            "{q} ! videorate drop-only=true ! video/x-raw,framerate=1/{every} ! videoconvert \
             ! pngenc ! multifilesink max-files=20 location=\"{loc}\"",
            every = every_secs.max(&1),
            loc = crate::escape(
                &dir.join(format!("{}-%05d.png", sanitize(peer)))
                    .to_string_lossy()
            ),
        ),
    }
}

fn audio_chain(out: &AudioOut) -> String {
    let q = "queue max-size-time=200000000 max-size-buffers=0 max-size-bytes=0 leaky=downstream";
    match out {
        // Nothing to decouple from: no queue (and its thread).
        AudioOut::Discard => "fakesink sync=false async=false".to_string(),
        AudioOut::Sink(spec) => format!("{q} ! audioconvert ! {}", spec.launch_fragment()),
    }
}

fn link_chain(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    desc: &str,
    counters: &Arc<ReceiveCounters>,
    picture: &Arc<PictureMeter>,
    (volume, speaker, out): (&Arc<AtomicU8>, &Arc<SpeakerMeter>, Option<&Arc<Speaker>>),
) -> Result<(), MediaError> {
    let bin = gst::parse::bin_from_description(desc, true)
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    pipeline
        .add(&bin)
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    if let Some(p) = bin.by_name("vprobe").and_then(|e| e.static_pad("src")) {
        let c = counters.clone();
        let pic = picture.clone();
        p.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            read_video(pad, info, &c, &pic);
            gst::PadProbeReturn::Ok
        });
    }
    if let Some(p) = bin.by_name("aprobe").and_then(|e| e.static_pad("src")) {
        let c = counters.clone();
        p.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            read_audio(pad, info, &c);
            gst::PadProbeReturn::Ok
        });
    }
    if let Some(p) = bin.by_name("adec").and_then(|e| e.static_pad("sink")) {
        // The jitter buffer turns packets that never came into gap events
        // (webrtcbin's do-lost), which the decoder fills: that share of
        // the audio played is the concealment ratio.
        let c = counters.clone();
        p.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::EventView::Gap(gap)) = info.event().map(|e| e.view()) {
                let (_, duration) = gap.get();
                let ns = duration.map_or(20_000_000, |d| d.nseconds());
                c.audio_gap(ns.saturating_mul(48) / 1_000_000);
            }
            gst::PadProbeReturn::Ok
        });
    }
    if let Some(p) = bin.by_name("spkprobe").and_then(|e| e.static_pad("src")) {
        let m = speaker.clone();
        p.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(db) = info.buffer().and_then(|b| buffer_dbfs(b)) {
                m.push(Instant::now(), db);
            }
            gst::PadProbeReturn::Ok
        });
    }
    if let (Some(sink), Some(out)) = (
        bin.by_name("spkout")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok()),
        out,
    ) {
        // Into the room's one speaker; out of its mix when this pipeline
        // (and with it the callback) goes.
        let input = out.input()?;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    if let Ok(sample) = s.pull_sample()
                        && let Some(b) = sample.buffer_owned()
                    {
                        input.push(b);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
    if let Some(v) = bin.by_name("speaker") {
        // The volume may have changed while the chain was being made.
        v.set_property("volume", speaker_gain(volume.load(Ordering::Relaxed)));
    }
    bin.sync_state_with_parent()
        .map_err(|e| MediaError::Pipeline(e.to_string()))?;
    let sink = bin
        .static_pad("sink")
        .ok_or_else(|| MediaError::Pipeline("chain has no sink pad".into()))?;
    pad.link(&sink)
        .map_err(|e| MediaError::Pipeline(format!("link: {e:?}")))?;
    // A new sink joined a playing pipeline: it needs the pipeline's latency.
    webrtc::recalculate_latency(pipeline);
    Ok(())
}

fn read_video(
    pad: &gst::Pad,
    info: &gst::PadProbeInfo,
    counters: &ReceiveCounters,
    picture: &PictureMeter,
) {
    let now = Instant::now();
    let Some(buffer) = info.buffer() else { return };
    let Some(caps) = pad.current_caps() else {
        return;
    };
    let Ok(vinfo) = gst_video::VideoInfo::from_caps(&caps) else {
        return;
    };
    let (w, h) = (vinfo.width(), vinfo.height());
    let latency = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &vinfo)
        .ok()
        .and_then(|frame| {
            let stride = frame.plane_stride()[0].max(0) as usize;
            let y = frame.plane_data(0).ok()?;
            picture.frame(y, w as usize, h as usize, stride);
            stamp::read(y, w as usize, h as usize, stride)
        })
        .map(|s| {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            stamp::age_ms(now_ms, s)
        })
        .filter(|l| *l < 60_000);
    counters.video_frame(now, w, h, latency);
}

fn read_audio(pad: &gst::Pad, info: &gst::PadProbeInfo, counters: &ReceiveCounters) {
    let Some(buffer) = info.buffer() else { return };
    let channels = pad
        .current_caps()
        .and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("channels").ok()))
        .unwrap_or(1)
        .max(1) as u64;
    let Ok(map) = buffer.map_readable() else {
        return;
    };
    let samples: Vec<i16> = map
        .as_slice()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    counters.audio_buffer(
        Instant::now(),
        samples.len() as u64 / channels,
        rms_dbfs(&samples),
    );
}

/// RMS level of an S16 buffer, dBFS.
fn buffer_dbfs(buffer: &gst::BufferRef) -> Option<f64> {
    let map = buffer.map_readable().ok()?;
    let samples: Vec<i16> = map
        .as_slice()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    Some(rms_dbfs(&samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaker_gain_is_bounded_and_monotonic() {
        assert_eq!(speaker_gain(0), 0.0);
        assert_eq!(speaker_gain(100), 1.0);
        assert_eq!(speaker_gain(250), 1.0);
        let db = |p| 20.0 * speaker_gain(p).log10();
        assert!((db(50) + 12.04).abs() < 0.01, "{}", db(50));
        for p in 1..=100u8 {
            assert!(speaker_gain(p) > speaker_gain(p - 1));
        }
    }

    #[test]
    fn speaker_meter_keeps_the_loudest_of_the_last_second() {
        let m = SpeakerMeter::default();
        assert_eq!(m.level_db(), None);
        let t = Instant::now();
        m.push(t, -20.0);
        m.push(t + Duration::from_millis(100), -10.0);
        m.push(t + Duration::from_millis(200), -30.0);
        assert_eq!(m.level_db(), Some(-10.0));
        // A new window: quieter sound shows within a second.
        m.push(t + Duration::from_millis(1_100), -40.0);
        assert_eq!(m.level_db(), Some(-40.0));
    }
}
