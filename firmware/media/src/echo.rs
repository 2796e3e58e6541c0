//! The speakerphone path: one speaker for every far room, echo
//! cancellation and noise suppression on the microphone.
//!
//! ```text
//! far room 1: ... ! volume name=speaker ! appsink ─┐  (its own subscriber pipeline)
//! far room 2: ... ! volume name=speaker ! appsink ─┤
//!                                                  ▼
//! speaker:    appsrc (one per far room) ─┐
//!             audiotestsrc wave=silence ─┴ audiomixer ! S16LE 48 kHz mono
//!               ! webrtcechoprobe name=P ! audioconvert ! <the board's sink>
//! publisher:  microphone appsrc ! S16LE 48 kHz mono ! webrtcdsp probe=P ! volume name=mic ! opusenc
//! ```
//!
//! `webrtcdsp` cancels the echo of one signal: what the speaker plays, as
//! its `webrtcechoprobe` records it. With several far rooms that is their
//! mix, so every subscriber hands its decoded audio to one [`Speaker`]
//! pipeline, where the mixer, the probe and the sink live. The DSP finds
//! its probe by element name, process-wide, when it goes to PAUSED: the
//! speaker must start before the publisher, and each speaker's probe has a
//! name of its own ([`Speaker::probe_name`]). The two run in different
//! pipelines (clocks and base times differ), so the DSP runs in its
//! delay-agnostic mode, which estimates the echo's delay from the signals.
//!
//! Both elements take S16LE at 8, 16, 32 or 48 kHz and work in 10 ms
//! frames (the DSP buffers what it gets into those); the call's audio is
//! 48 kHz mono throughout, so nothing is resampled for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use diemcau_board::ElementSpec;
use gst::prelude::*;

use crate::MediaError;

/// The one format of the speaker path (and of the microphone branch).
pub const AUDIO_CAPS: &str = "audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=1";

/// How hard noise suppression works (`webrtcdsp noise-suppression-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseSuppression {
    Low,
    Moderate,
    High,
    VeryHigh,
}

impl NoiseSuppression {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Moderate => "moderate",
            Self::High => "high",
            Self::VeryHigh => "very-high",
        }
    }
}

impl std::str::FromStr for NoiseSuppression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "low" => Ok(Self::Low),
            "moderate" => Ok(Self::Moderate),
            "high" => Ok(Self::High),
            "very-high" => Ok(Self::VeryHigh),
            other => Err(format!("{other:?}")),
        }
    }
}

/// What the microphone branch does to the sound before it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AudioDsp {
    /// Cancel the speaker's echo in software (needs a [`Speaker`] with a
    /// probe: without a speaker there is no echo to cancel).
    pub echo_cancel: bool,
    /// `None`: off.
    pub noise_suppression: Option<NoiseSuppression>,
}

impl AudioDsp {
    /// The `webrtcdsp` for the microphone branch, cancelling the echo
    /// recorded by the probe called `probe`; `None` when there is nothing
    /// to do (no element, no CPU).
    pub fn fragment(&self, probe: Option<&str>) -> Option<String> {
        let aec = self.echo_cancel && probe.is_some();
        if !aec && self.noise_suppression.is_none() {
            return None;
        }
        // Automatic gain stays off: it would pump the level of what is
        // left of the echo, and USB speakerphones set their own gain.
        Some(format!(
            "webrtcdsp name=dsp probe={probe} echo-cancel={aec} delay-agnostic=true extended-filter=true \
             echo-suppression-level=moderate noise-suppression={ns} noise-suppression-level={level} \
             gain-control=false high-pass-filter=true",
            probe = probe.unwrap_or("none"),
            ns = self.noise_suppression.is_some(),
            level = self
                .noise_suppression
                .unwrap_or(NoiseSuppression::Moderate)
                .as_str(),
        ))
    }
}

/// Probe names handed out in this process.
static SPEAKERS: AtomicU32 = AtomicU32::new(0);

/// The room's speaker: every far room's audio mixed, recorded by the echo
/// probe, played on the board's sink. Dropping it stops the pipeline.
pub struct Speaker {
    pipeline: gst::Pipeline,
    mixer: gst::Element,
    probe: Option<String>,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker")
            .field("pipeline", &self.pipeline.name())
            .field("probe", &self.probe)
            .finish()
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Speaker {
    /// Starts the speaker on `sink`, with an echo probe when `echo_probe`.
    pub fn start(sink: &ElementSpec, echo_probe: bool) -> Result<Arc<Self>, MediaError> {
        let n = SPEAKERS.fetch_add(1, Ordering::Relaxed);
        let probe = echo_probe.then(|| format!("diemcau-echo-{}-{n}", std::process::id()));
        let probe_part = probe
            .as_ref()
            .map(|p| format!("webrtcechoprobe name={p} ! "))
            .unwrap_or_default();
        // The silent source keeps the mixer (and the probe, and the sink)
        // running with no far room, and clocks the mix; the mixer waits
        // 40 ms for each far room's buffer, which arrive as the network
        // delivers them.
        let desc = format!(
            "audiotestsrc wave=silence is-live=true samplesperbuffer=480 ! {AUDIO_CAPS} ! mix. \
             audiomixer name=mix latency=40000000 ! {AUDIO_CAPS} ! {probe_part}\
             audioconvert ! audioresample ! {sink}",
            sink = sink.launch_fragment(),
        );
        tracing::debug!(pipeline = %desc, "speaker");
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| MediaError::Pipeline(format!("speaker: {e}")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| MediaError::Pipeline("the speaker is not a pipeline".into()))?;
        pipeline.set_property("name", format!("speaker-{n}"));
        let mixer = pipeline
            .by_name("mix")
            .ok_or_else(|| MediaError::Pipeline("the speaker has no mixer".into()))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| MediaError::Pipeline(format!("the speaker does not start: {e}")))?;
        Ok(Arc::new(Speaker {
            pipeline,
            mixer,
            probe,
        }))
    }

    /// The name of this speaker's `webrtcechoprobe`, for the microphone's
    /// `webrtcdsp` (`None`: no echo cancellation).
    pub fn probe_name(&self) -> Option<&str> {
        self.probe.as_deref()
    }

    /// A new input of the mix (one far room), in [`AUDIO_CAPS`].
    pub fn input(self: &Arc<Self>) -> Result<SpeakerInput, MediaError> {
        let err = |e: &dyn std::fmt::Display| MediaError::Pipeline(format!("speaker input: {e}"));
        let caps: gst::Caps = AUDIO_CAPS.parse().map_err(|e| err(&e))?;
        let appsrc = gst::ElementFactory::make("appsrc")
            .property("caps", &caps)
            .property("is-live", true)
            .property("do-timestamp", true)
            .property("format", gst::Format::Time)
            .property("min-latency", 20_000_000i64)
            .property("max-bytes", 0u64)
            .property_from_str("max-buffers", "25")
            .property_from_str("leaky-type", "downstream")
            .build()
            .map_err(|e| err(&e))?
            .downcast::<gst_app::AppSrc>()
            .map_err(|_| err(&"not an appsrc"))?;
        self.pipeline.add(&appsrc).map_err(|e| err(&e))?;
        let pad = self
            .mixer
            .request_pad_simple("sink_%u")
            .ok_or_else(|| err(&"the mixer gives no pad"))?;
        let src = appsrc
            .static_pad("src")
            .ok_or_else(|| err(&"appsrc without a pad"))?;
        src.link(&pad).map_err(|e| err(&format!("{e:?}")))?;
        appsrc.sync_state_with_parent().map_err(|e| err(&e))?;
        // A new live source: the pipeline's latency changes.
        let _ = self.pipeline.recalculate_latency();
        Ok(SpeakerInput {
            speaker: self.clone(),
            appsrc,
            pad,
        })
    }
}

/// One far room's way into the [`Speaker`]. Dropping it takes it out of
/// the mix.
pub struct SpeakerInput {
    speaker: Arc<Speaker>,
    appsrc: gst_app::AppSrc,
    pad: gst::Pad,
}

impl SpeakerInput {
    /// Plays `buffer` (in [`AUDIO_CAPS`]); it is stamped on arrival.
    pub fn push(&self, mut buffer: gst::Buffer) {
        {
            let b = buffer.make_mut();
            b.set_pts(gst::ClockTime::NONE);
            b.set_dts(gst::ClockTime::NONE);
        }
        let _ = self.appsrc.push_buffer(buffer);
    }
}

impl Drop for SpeakerInput {
    fn drop(&mut self) {
        let _ = self.appsrc.set_state(gst::State::Null);
        if let Some(src) = self.appsrc.static_pad("src") {
            let _ = src.unlink(&self.pad);
        }
        self.speaker.mixer.release_request_pad(&self.pad);
        let _ = self.speaker.pipeline.remove(&self.appsrc);
    }
}

/// Level of the `freq` Hz component of `samples` (mono, `rate` Hz), dBFS:
/// a full-scale sine at `freq` is 0 dB (Goertzel over the whole block).
pub fn tone_dbfs(samples: &[i16], rate: u32, freq: f64) -> f64 {
    if samples.is_empty() || rate == 0 {
        return -120.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0);
    let amplitude = 2.0 * power.sqrt() / samples.len() as f64;
    20.0 * amplitude.max(1e-6).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, amp: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = i as f64 / 48_000.0;
                (amp * 32767.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn tone_level_picks_its_frequency_out_of_a_mix() {
        let a = sine(440.0, 0.5, 48_000);
        let b = sine(1100.0, 0.05, 48_000);
        let mix: Vec<i16> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let at440 = tone_dbfs(&mix, 48_000, 440.0);
        let at1100 = tone_dbfs(&mix, 48_000, 1100.0);
        assert!((at440 + 6.02).abs() < 0.2, "{at440}");
        assert!((at1100 + 26.02).abs() < 0.2, "{at1100}");
        assert!(tone_dbfs(&a, 48_000, 1500.0) < -60.0);
        assert_eq!(tone_dbfs(&[], 48_000, 440.0), -120.0);
    }

    #[test]
    fn dsp_only_when_it_has_work_and_echo_only_with_a_probe() {
        let off = AudioDsp::default();
        assert_eq!(off.fragment(Some("p")), None);
        let aec = AudioDsp {
            echo_cancel: true,
            noise_suppression: None,
        };
        assert_eq!(aec.fragment(None), None, "no speaker: no echo to cancel");
        let f = aec.fragment(Some("p")).unwrap();
        assert!(f.contains("probe=p echo-cancel=true"), "{f}");
        assert!(f.contains("noise-suppression=false"), "{f}");
        let ns = AudioDsp {
            echo_cancel: true,
            noise_suppression: Some(NoiseSuppression::High),
        };
        let f = ns.fragment(None).unwrap();
        assert!(f.contains("echo-cancel=false"), "{f}");
        assert!(
            f.contains("noise-suppression=true noise-suppression-level=high"),
            "{f}"
        );
        assert_eq!("very-high".parse(), Ok(NoiseSuppression::VeryHigh));
        assert!("loud".parse::<NoiseSuppression>().is_err());
    }
}
