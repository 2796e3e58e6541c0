//! The room's outgoing media: camera and microphone to one PeerConnection.

use std::time::{SystemTime, UNIX_EPOCH};

use diemcau_board::encoder::Codec;
use gst::prelude::*;
use gst_video::prelude::*;
use gst_webrtc::WebRTCSDPType;
use tokio::sync::mpsc;

use crate::webrtc::{self, MediaEvent};
use crate::{MediaError, MediaSettings, escape, stamp};

/// Encoded caps the encoder must produce: H.264 constrained baseline, which
/// every browser, Janus and the boards' hardware decoders accept.
pub const H264_CAPS: &str = "video/x-h264,profile=constrained-baseline,stream-format=byte-stream";

/// A running publishing pipeline. Dropping it stops the pipeline.
pub struct Publisher {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    /// Camera and microphone, feeding the `camera` and `microphone` appsrcs.
    feeds: crate::feed::Feeds,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The `gst-launch` description of the publishing pipeline for `settings`.
pub fn description(settings: &MediaSettings) -> String {
    let v = &settings.profile.video;
    let codec = diemcau_board::encoder::codec(&settings.encoder.element);
    format!(
        "webrtcbin name=webrtc \
         {vsrc} ! videoconvert ! videoscale ! videorate \
         ! video/x-raw,width={w},height={h},framerate={fps}/1 \
         ! textoverlay text=\"{name}\" valignment=bottom halignment=left font-desc=\"Sans 24\" shaded-background=true \
         ! videoconvert ! video/x-raw,format=I420 ! identity name=stamp \
         ! queue max-size-buffers=2 max-size-time=0 max-size-bytes=0 leaky=downstream \
         ! {enc} ! {payloader} \
         ! application/x-rtp,media=video,encoding-name={codec},payload=96,clock-rate=90000 ! webrtc. \
         {asrc} ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1 \
         ! volume name=mic \
         ! opusenc inband-fec=true packet-loss-percentage=10 bitrate=32000 frame-size=20 \
         ! rtpopuspay pt=111 \
         ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! webrtc.",
        vsrc = crate::feed::video_appsrc(settings),
        w = v.width,
        h = v.height,
        fps = v.framerate,
        name = escape(&settings.room_name),
        enc = settings.encoder.launch_fragment(),
        payloader = video_payloader(codec),
        codec = codec.encoding_name(),
        asrc = crate::feed::audio_appsrc(),
    )
}

/// From the encoder's output to RTP packets of `codec`.
fn video_payloader(codec: Codec) -> String {
    match codec {
        Codec::H264 => format!(
            "{H264_CAPS} ! h264parse \
             ! rtph264pay config-interval=-1 aggregate-mode=zero-latency mtu=1200 pt=96"
        ),
        Codec::Vp8 => "rtpvp8pay mtu=1200 picture-id-mode=15-bit pt=96".to_string(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Publisher {
    /// Builds the pipeline and starts it; events (ICE candidates, failures)
    /// arrive on `events`.
    pub fn start(
        settings: &MediaSettings,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> Result<Self, MediaError> {
        let desc = description(settings);
        tracing::debug!(pipeline = %desc, "publisher");
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| MediaError::Pipeline(format!("publisher: {e}")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| MediaError::Pipeline("publisher is not a pipeline".into()))?;
        let webrtc = pipeline
            .by_name("webrtc")
            .ok_or_else(|| MediaError::Pipeline("no webrtcbin".into()))?;
        webrtc::configure(&webrtc, settings.jitter_ms, events.clone());
        webrtc::watch_bus(&pipeline, "publisher", events);

        // Send only, with retransmission for video.
        for idx in 0.. {
            let Some(t) = webrtc.emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>(
                "get-transceiver",
                &[&idx],
            ) else {
                break;
            };
            t.set_property(
                "direction",
                gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
            );
            t.set_property("do-nack", true);
        }

        if settings.stamp_frames
            && let Some(pad) = pipeline.by_name("stamp").and_then(|e| e.static_pad("src"))
        {
            pad.add_probe(gst::PadProbeType::BUFFER, |pad, info| {
                stamp_buffer(pad, info);
                gst::PadProbeReturn::Ok
            });
        }
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| MediaError::Pipeline(format!("publisher does not start: {e}")))?;
        let feeds = crate::feed::Feeds::start(&pipeline, settings).inspect_err(|_| {
            let _ = pipeline.set_state(gst::State::Null);
        })?;
        Ok(Publisher {
            pipeline,
            webrtc,
            feeds,
        })
    }

    /// Creates the SDP offer for the server, once the encoders have
    /// produced their first output so that the offer carries the real H.264
    /// profile, level and parameter sets.
    pub async fn offer(&self) -> Result<String, MediaError> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let ready = self.webrtc.sink_pads().iter().all(|p| {
                p.current_caps().is_some_and(|c| {
                    c.structure(0).is_some_and(|s| {
                        s.get::<&str>("encoding-name") != Ok("H264")
                            || s.has_field("profile-level-id")
                    })
                })
            });
            if ready {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(MediaError::Pipeline(
                    "the camera or encoder produced nothing within 5 s".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        webrtc::create_offer(&self.webrtc).await
    }

    /// Applies the server's SDP answer.
    pub async fn apply_answer(&self, sdp: &str) -> Result<(), MediaError> {
        webrtc::set_remote(&self.webrtc, WebRTCSDPType::Answer, sdp).await
    }

    pub fn add_remote_candidate(&self, mline: u32, candidate: Option<&str>) {
        webrtc::add_candidate(&self.webrtc, mline, candidate);
    }

    /// Mutes or unmutes the microphone: muted, the encoder is fed silence.
    pub fn set_muted(&self, muted: bool) {
        if let Some(v) = self.pipeline.by_name("mic") {
            v.set_property("mute", muted);
        }
    }

    /// What the camera and the microphone are doing.
    pub fn devices(&self) -> (crate::DeviceStatus, crate::DeviceStatus) {
        (self.feeds.camera.status(), self.feeds.microphone.status())
    }

    pub async fn stats(&self) -> Result<crate::stats::RtpStats, MediaError> {
        webrtc::rtp_stats(&self.webrtc).await
    }
}

fn stamp_buffer(pad: &gst::Pad, info: &mut gst::PadProbeInfo) {
    let Some(caps) = pad.current_caps() else {
        return;
    };
    let Ok(vinfo) = gst_video::VideoInfo::from_caps(&caps) else {
        return;
    };
    let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() else {
        return;
    };
    let buffer = buffer.make_mut();
    let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &vinfo) else {
        return;
    };
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let stride = frame.plane_stride()[0].max(0) as usize;
    if let Ok(y) = frame.plane_data_mut(0) {
        stamp::write(y, w, h, stride, now_ms());
    }
}
