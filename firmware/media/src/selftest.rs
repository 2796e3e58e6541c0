//! A short offline check that the board's camera and encoder work: encode a
//! few frames and a little audio to nothing, and report what happened.

use std::time::{Duration, Instant};

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
