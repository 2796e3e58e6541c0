//! Echo cancellation, measured: the far room's tone is played on the
//! room's speaker, which on the sim board plays into the fake microphone
//! (the room loop, half the level, some tens of milliseconds later); the
//! near end "speaks" a tone of another frequency. What the microphone
//! branch would send is measured at both frequencies with the echo
//! canceller on and off.
//!
//! The pipelines are the room's own: the [`Speaker`] with its echo probe,
//! the sim microphone as [`FakeMicrophone`] describes it, captured into an
//! appsink and handed to a second pipeline through a re-stamping appsrc (as
//! the publisher's microphone feed does), then the [`AudioDsp`] fragment the
//! publisher uses.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diemcau_board::ElementSpec;
use diemcau_board::device::{DeviceKind, DeviceSource, FakeMicrophone, Probe};
use diemcau_media::echo::{AUDIO_CAPS, AudioDsp, NoiseSuppression, Speaker, tone_dbfs};
use gst::prelude::*;

const FAR_HZ: f64 = 440.0;
const NEAR_HZ: f64 = 1100.0;

fn launch(desc: &str) -> gst::Pipeline {
    gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap()
}

fn appsink(p: &gst::Pipeline, name: &str) -> gst_app::AppSink {
    p.by_name(name)
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap()
}

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    // Clock ticks, 100 a second on Linux.
    Duration::from_millis((f[0] + f[1]) * 10)
}

struct Measured {
    far_db: f64,
    near_db: f64,
    cpu: Duration,
}

/// Runs the loop for `secs` with `dsp`; measures the last `secs - 3` s.
fn run(channel: &str, dsp: AudioDsp, with_far: bool, secs: u64) -> Measured {
    let speaker = Speaker::start(&FakeMicrophone::room_loop_sink(channel), true).unwrap();
    // The far room, as a subscriber hands it to the speaker.
    let far = launch(&format!(
        "audiotestsrc is-live=true wave=sine freq={FAR_HZ} volume={} samplesperbuffer=960 \
         ! {AUDIO_CAPS} ! appsink name=out sync=false",
        if with_far { 0.3 } else { 0.0 }
    ));
    let input = speaker.input().unwrap();
    appsink(&far, "out").set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                if let Some(b) = s.pull_sample().ok().and_then(|s| s.buffer_owned()) {
                    input.push(b);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    // The microphone branch: DSP, then what would be encoded.
    let dsp_part = dsp
        .fragment(speaker.probe_name())
        .map(|d| format!("{d} ! "))
        .unwrap_or_default();
    let branch = launch(&format!(
        "appsrc name=mic is-live=true do-timestamp=true format=time caps=\"{AUDIO_CAPS}\" \
         ! {dsp_part}appsink name=sent sync=false"
    ));
    let samples = Arc::new(Mutex::new(Vec::<i16>::new()));
    let s2 = samples.clone();
    let start = Instant::now();
    let settle = Duration::from_secs(3);
    appsink(&branch, "sent").set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if start.elapsed() > settle
                    && let Some(m) = sample.buffer().and_then(|b| b.map_readable().ok())
                {
                    s2.lock().unwrap().extend(
                        m.as_slice()
                            .chunks_exact(2)
                            .map(|b| i16::from_le_bytes([b[0], b[1]])),
                    );
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    // The sim microphone hearing the room, captured as the feed does.
    let near = ElementSpec::new("audiotestsrc")
        .with_property("is-live", "true")
        .with_property("wave", "sine")
        .with_property("freq", NEAR_HZ.to_string())
        .with_property("volume", "0.05");
    let mic = FakeMicrophone::new(&near, None).with_room_loop(channel);
    assert_eq!(mic.kind(), DeviceKind::Microphone);
    let Probe::Present(found) = mic.probe() else {
        panic!("the sim microphone is there")
    };
    let capture = launch(&format!(
        "{} ! audioconvert ! audioresample ! {AUDIO_CAPS} ! appsink name=cap sync=false",
        found.launch
    ));
    let mic_src = branch
        .by_name("mic")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    appsink(&capture, "cap").set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                if let Some(mut b) = s.pull_sample().ok().and_then(|s| s.buffer_owned()) {
                    let m = b.make_mut();
                    m.set_pts(gst::ClockTime::NONE);
                    m.set_dts(gst::ClockTime::NONE);
                    let _ = mic_src.push_buffer(b);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let cpu0 = cpu_time();
    branch.set_state(gst::State::Playing).unwrap();
    capture.set_state(gst::State::Playing).unwrap();
    far.set_state(gst::State::Playing).unwrap();
    std::thread::sleep(Duration::from_secs(secs));
    let cpu = cpu_time() - cpu0;
    for p in [&far, &capture, &branch] {
        p.set_state(gst::State::Null).unwrap();
    }
    drop(speaker);
    let s = samples.lock().unwrap();
    assert!(
        s.len() > 48_000 * (secs as usize - 4),
        "too little audio came through: {} samples",
        s.len()
    );
    Measured {
        far_db: tone_dbfs(&s, 48_000, FAR_HZ),
        near_db: tone_dbfs(&s, 48_000, NEAR_HZ),
        cpu,
    }
}

#[test]
fn echo_of_the_far_room_is_cancelled_and_the_near_end_gets_through() {
    diemcau_media::init().unwrap();
    let secs = 9;
    let off = AudioDsp::default();
    let aec = AudioDsp {
        echo_cancel: true,
        noise_suppression: None,
    };
    let full = AudioDsp {
        echo_cancel: true,
        noise_suppression: Some(NoiseSuppression::Moderate),
    };
    let m_off = run("echo-test-off", off, true, secs);
    let m_aec = run("echo-test-aec", aec, true, secs);
    let m_full = run("echo-test-full", full, true, secs);
    let reduction = m_off.far_db - m_aec.far_db;
    let near_loss = m_off.near_db - m_aec.near_db;
    let per_sec = |d: Duration| d.as_secs_f64() / secs as f64 * 100.0;
    println!(
        "echo (far room's {FAR_HZ} Hz) in what is sent: {:.1} dBFS without AEC, {:.1} dBFS with: \
         {reduction:.1} dB less; with noise suppression too: {:.1} dBFS",
        m_off.far_db, m_aec.far_db, m_full.far_db
    );
    println!(
        "near end ({NEAR_HZ} Hz): {:.1} dBFS without AEC, {:.1} dBFS with ({near_loss:.1} dB lost), \
         {:.1} dBFS with noise suppression too",
        m_off.near_db, m_aec.near_db, m_full.near_db
    );
    println!(
        "CPU of the whole loop (speaker, far tone, capture, branch): {:.1} % of a core without a DSP, \
         {:.1} % with AEC, {:.1} % with AEC and noise suppression: the DSP costs {:.1} % \
         (AEC + NS {:.1} %) of a core per room",
        per_sec(m_off.cpu),
        per_sec(m_aec.cpu),
        per_sec(m_full.cpu),
        per_sec(m_aec.cpu) - per_sec(m_off.cpu),
        per_sec(m_full.cpu) - per_sec(m_off.cpu),
    );
    assert!(
        m_off.far_db > -40.0,
        "without AEC the echo is loud: {:.1}",
        m_off.far_db
    );
    assert!(
        reduction >= 20.0,
        "the echo dropped by {reduction:.1} dB only"
    );
    assert!(
        m_full.far_db < m_off.far_db - 20.0,
        "with NS: {:.1}",
        m_full.far_db
    );
    assert!(
        near_loss < 12.0 && m_aec.near_db > -45.0,
        "the near end is lost: {:.1} dBFS ({near_loss:.1} dB lost)",
        m_aec.near_db
    );
}
