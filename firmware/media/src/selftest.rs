//! Self-tests. [`run`]: a short offline check that the board's camera and
//! encoder work (encode a few frames to nothing). The pre-meeting checks
//! ([`camera_check`], [`audio_check`]): the camera delivers frames that are
//! not black, and the microphone hears a test tone played on the speaker
//! (on the sim board through its room loop, `media.sim_speaker_loop`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diemcau_board::ElementSpec;
use diemcau_board::device::{DeviceSource, Probe};
use gst::prelude::*;
use serde::Serialize;

use crate::{MediaError, MediaSettings, escape};

/// What a self-test found.
#[derive(Debug, Clone, Serialize)]
pub struct SelfTestReport {
    pub gstreamer: String,
    pub board: String,
    pub encoder: String,
    pub frames_encoded: u64,
    pub encoded_bytes: u64,
    pub elapsed_ms: u64,
}

/// Encodes `frames` frames from the board's camera with its chosen encoder.
pub fn run(settings: &MediaSettings, frames: u32) -> Result<SelfTestReport, MediaError> {
    let v = &settings.profile.video;
    let mut src = v.source.clone();
    if src.element == "videotestsrc" {
        src.properties
            .insert("num-buffers".into(), frames.to_string());
        src.properties.insert("is-live".into(), "false".into());
    }
    let desc = format!(
        "{src} ! videoconvert ! videoscale ! video/x-raw,width={w},height={h} \
         ! textoverlay text=\"{name}\" ! videoconvert ! {enc} ! {caps} ! h264parse \
         ! identity name=count ! fakesink sync=false",
        src = src.launch_fragment(),
        w = v.width,
        h = v.height,
        name = escape(&settings.room_name),
        enc = settings.encoder.launch_fragment(),
        caps = crate::publisher::H264_CAPS,
    );
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| MediaError::Pipeline(format!("self-test: {e}")))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| MediaError::Pipeline("self-test is not a pipeline".into()))?;
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    if let Some(pad) = pipeline.by_name("count").and_then(|e| e.static_pad("src")) {
        let (c, b) = (counter.clone(), bytes.clone());
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buf) = info.buffer() {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                b.fetch_add(buf.size() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            gst::PadProbeReturn::Ok
        });
    }
    let start = Instant::now();
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| MediaError::Pipeline(format!("self-test does not start: {e}")))?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| MediaError::Pipeline("no bus".into()))?;
    let deadline = Duration::from_secs(60);
    let mut result = Ok(());
    loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) else {
            if start.elapsed() > deadline {
                result = Err(MediaError::Pipeline("self-test timed out".into()));
                break;
            }
            if counter.load(std::sync::atomic::Ordering::Relaxed) >= u64::from(frames) {
                break;
            }
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                result = Err(MediaError::Pipeline(format!("self-test: {}", e.error())));
                break;
            }
            _ => {}
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    let frames_encoded = counter.load(std::sync::atomic::Ordering::Relaxed);
    if frames_encoded == 0 {
        return Err(MediaError::Pipeline(
            "the encoder produced no frames".into(),
        ));
    }
    Ok(SelfTestReport {
        gstreamer: gst::version_string().to_string(),
        board: settings.profile.name.clone(),
        encoder: settings.encoder.element.clone(),
        frames_encoded,
        encoded_bytes: bytes.load(std::sync::atomic::Ordering::Relaxed),
        elapsed_ms: start.elapsed().as_millis() as u64,
    })
}

/// The outcome of one pre-meeting check: what was measured when it passed,
/// why it failed otherwise (for the room screen and the district).
pub type CheckResult = Result<String, String>;

/// The frequency of the self-test's tone, away from the sim board's own
/// tone (440 Hz) and from mains hum.
pub const TEST_TONE_HZ: f64 = 1500.0;

/// A camera passes with at least this many frames a second of capture.
const MIN_FPS: u64 = 5;
/// ... and a picture whose brightest pixel is at least this (0-255): a
/// covered lens or a dead sensor gives black.
const MIN_PEAK_LUMA: u8 = 24;

/// What a short capture of the camera gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Frames {
    pub count: u64,
    /// Mean and peak luma of the last frame, 0-255.
    pub mean_luma: u8,
    pub peak_luma: u8,
}

/// Judges a camera capture of `secs` seconds.
pub fn judge_camera(f: Frames, secs: f64) -> CheckResult {
    let fps = f.count as f64 / secs.max(0.1);
    if f.count == 0 {
        return Err("the camera delivered no frame".into());
    }
    if (fps as u64) < MIN_FPS {
        return Err(format!(
            "the camera delivered only {} frames in {secs:.1} s",
            f.count
        ));
    }
    if f.peak_luma < MIN_PEAK_LUMA {
        return Err(format!(
            "the picture is black (brightness {}/255): lens covered or camera faulty",
            f.mean_luma
        ));
    }
    Ok(format!(
        "{} frames in {secs:.1} s, brightness {}/255",
        f.count, f.mean_luma
    ))
}

/// Judges the test tone as the microphone heard it: `tone_db` while the
/// speaker played it, `quiet_db` at the same frequency before.
pub fn judge_tone(tone_db: f64, quiet_db: f64) -> CheckResult {
    let above = tone_db - quiet_db;
    if tone_db < -50.0 || above < 15.0 {
        return Err(format!(
            "the microphone did not hear the speaker's test tone ({tone_db:.0} dBFS at {TEST_TONE_HZ} Hz, \
             {above:.0} dB above silence): speaker off, unplugged or too quiet, or microphone muted"
        ));
    }
    Ok(format!(
        "test tone heard at {tone_db:.0} dBFS ({above:.0} dB above silence)"
    ))
}

fn launch_pipeline(desc: &str) -> Result<gst::Pipeline, String> {
    gst::parse::launch(desc)
        .map_err(|e| format!("{desc}: {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())
}

/// Stops `p` on drop.
struct Running(gst::Pipeline);

impl Running {
    fn start(p: gst::Pipeline) -> Result<Self, String> {
        p.set_state(gst::State::Playing)
            .map_err(|e| bus_error(&p).unwrap_or_else(|| e.to_string()))?;
        Ok(Running(p))
    }
    fn error(&self) -> Option<String> {
        bus_error(&self.0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

fn bus_error(p: &gst::Pipeline) -> Option<String> {
    let bus = p.bus()?;
    while let Some(m) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(e) = m.view() {
            return Some(e.error().to_string());
        }
    }
    None
}

fn appsink(p: &gst::Pipeline) -> Result<gst_app::AppSink, String> {
    p.by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| "no appsink".to_string())
}

/// Captures `secs` of the camera: frames counted, brightness of the last.
pub fn camera_check(camera: &dyn DeviceSource, secs: f64) -> CheckResult {
    let found = match camera.probe() {
        Probe::Present(f) => f,
        Probe::Absent { why } => return Err(format!("no camera: {why}")),
        Probe::Unusable { device, error } => return Err(format!("camera {device}: {error}")),
    };
    let p = launch_pipeline(&format!(
        "{} ! videoconvert ! videoscale ! video/x-raw,format=GRAY8,width=160,height=90 \
         ! appsink name=sink sync=false max-buffers=2 drop=true",
        found.launch
    ))?;
    let frames = Arc::new(Mutex::new(Frames::default()));
    let f = frames.clone();
    appsink(&p)?.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(m) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                    let d = m.as_slice();
                    let sum: u64 = d.iter().map(|v| u64::from(*v)).sum();
                    let mut fr = f.lock().unwrap_or_else(|e| e.into_inner());
                    fr.count += 1;
                    fr.mean_luma = (sum / d.len().max(1) as u64) as u8;
                    fr.peak_luma = d.iter().copied().max().unwrap_or(0);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let running = Running::start(p).map_err(|e| format!("camera {}: {e}", found.device))?;
    let t = Instant::now();
    let end = t + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        if let Some(e) = running.error() {
            return Err(format!("camera {}: {e}", found.device));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(running);
    let got = *frames.lock().unwrap_or_else(|e| e.into_inner());
    judge_camera(got, t.elapsed().as_secs_f64())
}

/// Plays the test tone on `speaker` and measures it in what `microphone`
/// captures, against the same frequency before the tone.
pub fn audio_check(speaker: Option<&ElementSpec>, microphone: &dyn DeviceSource) -> CheckResult {
    let Some(speaker) = speaker else {
        return Err(
            "no speaker (media.audio_out = \"none\"): the test tone cannot be played".into(),
        );
    };
    let found = match microphone.probe() {
        Probe::Present(f) => f,
        Probe::Absent { why } => return Err(format!("no microphone: {why}")),
        Probe::Unusable { device, error } => {
            return Err(format!("microphone {device}: {error}"));
        }
    };
    let p = launch_pipeline(&format!(
        "{} ! audioconvert ! audioresample ! {} ! appsink name=sink sync=false",
        found.launch,
        crate::echo::AUDIO_CAPS
    ))?;
    // 0: settling, 1: before the tone, 2: the tone starting, 3: the tone.
    let phase = Arc::new(AtomicU8::new(0));
    let heard: Arc<Mutex<[Vec<i16>; 4]>> = Arc::default();
    let (ph, h) = (phase.clone(), heard.clone());
    appsink(&p)?.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(m) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                    let i = usize::from(ph.load(Ordering::Relaxed).min(3));
                    h.lock().unwrap_or_else(|e| e.into_inner())[i].extend(
                        m.as_slice()
                            .chunks_exact(2)
                            .map(|b| i16::from_le_bytes([b[0], b[1]])),
                    );
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let mic = Running::start(p).map_err(|e| format!("microphone {}: {e}", found.device))?;
    let wait = |ms: u64, next: u8| -> Result<(), String> {
        std::thread::sleep(Duration::from_millis(ms));
        if let Some(e) = mic.error() {
            return Err(format!("microphone {}: {e}", found.device));
        }
        phase.store(next, Ordering::Relaxed);
        Ok(())
    };
    wait(300, 1)?;
    wait(500, 2)?;
    let tone = launch_pipeline(&format!(
        "audiotestsrc is-live=true wave=sine freq={TEST_TONE_HZ} volume=0.5 ! audioconvert \
         ! audioresample ! {}",
        speaker.launch_fragment()
    ))?;
    let tone = Running::start(tone).map_err(|e| format!("speaker {}: {e}", speaker.element))?;
    wait(400, 3)?;
    wait(800, 3)?;
    if let Some(e) = tone.error() {
        return Err(format!("speaker {}: {e}", speaker.element));
    }
    drop(tone);
    drop(mic);
    let h = heard.lock().unwrap_or_else(|e| e.into_inner());
    if h[3].is_empty() {
        return Err(format!("the microphone {} delivered nothing", found.device));
    }
    let quiet = crate::echo::tone_dbfs(&h[1], 48_000, TEST_TONE_HZ);
    let loud = crate::echo::tone_dbfs(&h[3], 48_000, TEST_TONE_HZ);
    judge_tone(loud, quiet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diemcau_board::device::{FakeCamera, FakeMicrophone};

    #[test]
    fn camera_judgement_names_the_reason() {
        let ok = Frames {
            count: 30,
            mean_luma: 40,
            peak_luma: 255,
        };
        assert!(judge_camera(ok, 1.0).unwrap().contains("30 frames"));
        let e = judge_camera(Frames::default(), 1.0).unwrap_err();
        assert!(e.contains("no frame"), "{e}");
        let e = judge_camera(Frames { count: 3, ..ok }, 1.0).unwrap_err();
        assert!(e.contains("only 3 frames"), "{e}");
        let black = Frames {
            count: 30,
            mean_luma: 2,
            peak_luma: 10,
        };
        assert!(judge_camera(black, 1.0).unwrap_err().contains("black"));
    }

    #[test]
    fn tone_judgement_wants_it_loud_and_above_the_room() {
        assert!(judge_tone(-20.0, -80.0).is_ok());
        assert!(
            judge_tone(-60.0, -100.0)
                .unwrap_err()
                .contains("did not hear")
        );
        // Loud, but no louder than before the tone (a noise, not our tone).
        assert!(judge_tone(-20.0, -25.0).is_err());
    }

    #[test]
    fn sim_camera_and_loop_pass_and_absent_devices_fail_with_why() {
        crate::init().unwrap();
        let p = diemcau_board::builtin("sim").unwrap();
        let cam = FakeCamera::new(&p.video.source, None, Default::default());
        let r = camera_check(&cam, 1.0);
        assert!(r.is_ok(), "{r:?}");
        let dir = std::env::temp_dir().join(format!("diemcau-selftest-{}", std::process::id()));
        let gone = FakeCamera::new(
            &p.video.source,
            Some(dir.join("camera")),
            Default::default(),
        );
        assert!(
            camera_check(&gone, 1.0)
                .unwrap_err()
                .starts_with("no camera")
        );

        let channel = "selftest-unit-loop";
        let mic = FakeMicrophone::new(&p.audio.source, None).with_room_loop(channel);
        let sink = FakeMicrophone::room_loop_sink(channel);
        let r = audio_check(Some(&sink), &mic);
        assert!(r.is_ok(), "{r:?}");
        // The same microphone with the speaker elsewhere hears no tone.
        let deaf = FakeMicrophone::new(&p.audio.source, None).with_room_loop("nobody-plays-here");
        let e = audio_check(Some(&sink), &deaf).unwrap_err();
        assert!(e.contains("did not hear"), "{e}");
        assert!(audio_check(None, &mic).unwrap_err().contains("no speaker"));
    }
}
