//! The room's outgoing media: camera and microphone to one PeerConnection.
//!
//! The pipeline is built so that the sender adaptation ([`crate::adapt`])
//! can change what is sent while it runs, through [`Publisher::apply`]:
//!
//! ```text
//! camera ! (fixed camera format) ! videorate ! videoscale ! capsfilter name=ladder
//!   ! textoverlay ! stamp ! valve name=videovalve ! queue ! encoder name=venc ! ... ! webrtcbin
//! microphone ! ... ! opusenc name=aenc ! ... ! webrtcbin
//! ```
//!
//! The camera keeps its one format; the rung of the ladder (size and frame
//! rate) is the `ladder` capsfilter's caps, and the encoder renegotiates
//! when they change. The valve pauses video while audio carries on.

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use diemcau_board::encoder::Codec;
use gst::prelude::*;
use gst_video::prelude::*;
use gst_webrtc::WebRTCSDPType;
use tokio::sync::mpsc;

use diemcau_board::{BoardProfile, ElementSpec};

use crate::adapt::{Step, Target};
use crate::stats::SendStats;
use crate::webrtc::{self, MediaEvent};
use crate::{MediaError, MediaSettings, escape, stamp};

/// Encoded caps the encoder must produce: H.264 constrained baseline, which
/// every browser, Janus and the boards' hardware decoders accept.
pub const H264_CAPS: &str = "video/x-h264,profile=constrained-baseline,stream-format=byte-stream";

/// Names of the elements [`Publisher::apply`] drives.
const LADDER: &str = "ladder";
const VALVE: &str = "videovalve";
const VIDEO_ENCODER: &str = "venc";
const AUDIO_ENCODER: &str = "aenc";

/// Opus settings at the start of a call (before any receiver report).
const OPUS_START_LOSS_PERCENT: u8 = 10;

/// Milliseconds of sound in one Opus packet. 40 rather than the usual 20:
/// every packet pays about 60 bytes of IP, UDP, RTP and SRTP, which at
/// 20 ms is 24 kbit/s on top of 32 kbit/s of Opus, at 40 ms 12 kbit/s, on
/// each stream up and down a commune's link; half the packets also halve
/// the per-packet work (ICE, SRTP, RTP session) in the room and in Janus.
/// The cost is 20 ms more delay, inside the glass-to-glass budget; a lost
/// packet is still mostly recovered from the next one's in-band FEC.
pub const OPUS_FRAME_MS: u32 = 40;

/// A running publishing pipeline. Dropping it stops the pipeline.
pub struct Publisher {
    pipeline: gst::Pipeline,
    webrtc: gst::Element,
    /// Camera and microphone, feeding the `camera` and `microphone` appsrcs.
    feeds: crate::feed::Feeds,
    /// The board's encoder spec, as configured (its bitrate property is
    /// rewritten in the element's own units by `diemcau_board::encoder`).
    encoder: ElementSpec,
    /// The best rung this board sends.
    top: Step,
    /// The camera's format (width, height, frame rate).
    camera: (u32, u32, u32),
    /// What is in force in the pipeline now.
    applied: Applied,
}

/// The settings last applied to the pipeline, so that only changes are.
#[derive(Debug, Clone, PartialEq)]
struct Applied {
    /// The rung whose caps the ladder capsfilter has (while paused: the
    /// rung the pipeline stays at, which is the lowest).
    caps_step: Step,
    paused: bool,
    video_kbps: u32,
    opus_loss_percent: u8,
    opus_dtx: bool,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The best rung of the ladder for a board's camera format: the first
/// whose size and frame rate the camera can fill.
pub fn top_step(profile: &BoardProfile) -> Step {
    let v = &profile.video;
    Step::LADDER
        .into_iter()
        .find(|s| {
            s.format()
                .is_some_and(|(w, h, f)| w <= v.width && h <= v.height && f <= v.framerate)
        })
        .unwrap_or(Step::P180x10)
}

/// The caps of the ladder capsfilter for `step` with a camera sending
/// `camera` (width, height, frame rate) and the best rung `top`: the top
/// rung is the camera's own format.
fn ladder_caps(camera: (u32, u32, u32), top: Step, step: Step) -> String {
    let (w, h, f) = match step.format() {
        Some(fmt) if step > top => fmt,
        _ => camera,
    };
    format!("video/x-raw,width={w},height={h},framerate={f}/1,pixel-aspect-ratio=1/1")
}

fn camera(profile: &BoardProfile) -> (u32, u32, u32) {
    let v = &profile.video;
    (v.width, v.height, v.framerate)
}

/// The encoder spec with its start bitrate, named for [`Publisher::apply`].
fn start_encoder(settings: &MediaSettings) -> ElementSpec {
    let (spec, _) = diemcau_board::encoder::with_bitrate(
        &settings.encoder,
        settings.profile.video.bitrate_kbps,
    );
    spec.with_property("name", VIDEO_ENCODER)
}

/// Size of the self-view handed to the room screen: about the size it is
/// shown at (22 % of a 1280 wide screen), so that the screen's compositor
/// scales a small picture, not a 720p one, at its own frame rate.
const SELF_VIEW: (u32, u32) = (320, 180);

/// With the room screen: a tee before the valve (the self-view goes on
/// while video is paused) to the screen's self-view channel, its own
/// leaky queue so that a slow screen never holds the encoder back.
fn self_view(settings: &MediaSettings) -> String {
    if settings.video_out != crate::VideoOut::Screen {
        return String::new();
    }
    format!(
        "! tee name=selfview selfview. \
         ! queue max-size-buffers=1 max-size-time=0 max-size-bytes=0 leaky=downstream \
         ! videoscale ! video/x-raw,width={w},height={h},pixel-aspect-ratio=1/1 \
         ! intervideosink channel={channel} sync=false selfview. ",
        w = SELF_VIEW.0,
        h = SELF_VIEW.1,
        channel = crate::screen::SELF_CHANNEL,
    )
}

/// The `gst-launch` description of the publishing pipeline for `settings`;
/// the microphone's echo is cancelled against the `webrtcechoprobe` called
/// `echo_probe` (see [`crate::echo`]).
pub fn description(settings: &MediaSettings, echo_probe: Option<&str>) -> String {
    let v = &settings.profile.video;
    let codec = diemcau_board::encoder::codec(&settings.encoder.element);
    let top = top_step(&settings.profile);
    format!(
        "webrtcbin name=webrtc \
         {vsrc} ! videoconvert ! videoscale ! videorate \
         ! video/x-raw,width={w},height={h},framerate={fps}/1 \
         ! videorate name=ladderrate drop-only=true ! videoscale name=ladderscale \
         ! capsfilter name={LADDER} caps=\"{ladder}\" \
         ! textoverlay text=\"{name}\" valignment=bottom halignment=left font-desc=\"Sans 24\" shaded-background=true \
         ! videoconvert ! video/x-raw,format=I420 ! identity name=stamp {selfview}\
         ! valve name={VALVE} drop=false \
         ! queue max-size-buffers=2 max-size-time=0 max-size-bytes=0 leaky=downstream \
         ! {enc} ! {payloader} \
         ! application/x-rtp,media=video,encoding-name={codec},payload=96,clock-rate=90000 ! webrtc. \
         {asrc} ! audioconvert ! audioresample ! {acaps} {dsp}\
         ! volume name=mic \
         ! opusenc name={AUDIO_ENCODER} inband-fec=true packet-loss-percentage={OPUS_START_LOSS_PERCENT} dtx=false bitrate=32000 frame-size={OPUS_FRAME_MS} \
         ! rtpopuspay pt=111 \
         ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000 ! webrtc.",
        vsrc = crate::feed::video_appsrc(settings),
        w = v.width,
        h = v.height,
        fps = v.framerate,
        ladder = ladder_caps(camera(&settings.profile), top, top),
        name = escape(&settings.room_name),
        enc = start_encoder(settings).launch_fragment(),
        payloader = video_payloader(codec),
        codec = codec.encoding_name(),
        selfview = self_view(settings),
        asrc = crate::feed::audio_appsrc(),
        acaps = crate::echo::AUDIO_CAPS,
        dsp = settings
            .audio_dsp
            .fragment(echo_probe)
            .map(|d| format!("! {d} "))
            .unwrap_or_default(),
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

/// Sets property `name` of `element` from its text form, as `gst-launch`
/// would, without panicking on an unknown property or a bad value.
fn set_from_str(element: &gst::Element, name: &str, value: &str) -> Result<(), MediaError> {
    let what = || format!("{} {name}={value}", element.name());
    let pspec = element
        .find_property(name)
        .ok_or_else(|| MediaError::Pipeline(format!("{}: no such property", what())))?;
    let v = gst::glib::Value::deserialize(value, pspec.value_type())
        .map_err(|_| MediaError::Pipeline(format!("{}: not a valid value", what())))?;
    element.set_property_from_value(name, &v);
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Publisher {
    /// Builds the pipeline and starts it; events (ICE candidates, failures)
    /// arrive on `events`. The microphone's echo is cancelled against what
    /// `speaker` plays (start it first: see [`crate::echo`]).
    pub fn start(
        settings: &MediaSettings,
        speaker: Option<&crate::echo::Speaker>,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> Result<Self, MediaError> {
        let desc = description(settings, speaker.and_then(|s| s.probe_name()));
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
        let top = top_step(&settings.profile);
        let feeds = crate::feed::Feeds::start(&pipeline, settings).inspect_err(|_| {
            let _ = pipeline.set_state(gst::State::Null);
        })?;
        Ok(Publisher {
            pipeline,
            webrtc,
            feeds,
            encoder: settings.encoder.clone(),
            top,
            camera: camera(&settings.profile),
            applied: Applied {
                caps_step: top,
                paused: false,
                video_kbps: settings.profile.video.bitrate_kbps,
                opus_loss_percent: OPUS_START_LOSS_PERCENT,
                opus_dtx: false,
            },
        })
    }

    /// The best rung this board sends (the ladder's top for the camera's
    /// format).
    pub fn top_step(&self) -> Step {
        self.top
    }

    fn element(&self, name: &str) -> Result<gst::Element, MediaError> {
        self.pipeline
            .by_name(name)
            .ok_or_else(|| MediaError::Pipeline(format!("the publisher has no element {name}")))
    }

    /// Applies a target of the sender adaptation to the running pipeline;
    /// only what differs from the last target is touched. Returns whether
    /// anything changed.
    ///
    /// * the rung → the caps of the `ladder` capsfilter (videorate and
    ///   videoscale convert, the encoder renegotiates and starts with a key
    ///   frame); rungs above the board's best are taken as the best;
    /// * paused → the valve before the encoder drops frames; on resume it
    ///   opens at the rung asked for, and a key frame is requested;
    /// * the bitrate → the encoder's own property and unit
    ///   (`diemcau_board::encoder::with_bitrate`); an encoder without a known
    ///   bitrate property keeps its rate;
    /// * Opus → `packet-loss-percentage` (in-band FEC stays on) and `dtx`.
    ///
    /// Video FEC (`video_fec_percent`) is not applied: Janus does not
    /// negotiate red/ulpfec for video, so there is no FEC stream to size.
    pub fn apply(&mut self, target: &Target) -> Result<bool, MediaError> {
        let mut want = self.applied.clone();
        want.paused = target.step == Step::Paused;
        if !want.paused {
            want.caps_step = target.step.max(self.top);
            want.video_kbps = target.video_kbps.max(1);
        }
        want.opus_loss_percent = target.opus_loss_percent.min(100);
        want.opus_dtx = target.opus_dtx;
        if want == self.applied {
            return Ok(false);
        }
        let mut key_frame = false;
        if want.caps_step != self.applied.caps_step {
            let text = ladder_caps(self.camera, self.top, want.caps_step);
            let caps = gst::Caps::from_str(&text)
                .map_err(|_| MediaError::Pipeline(format!("bad ladder caps {text}")))?;
            self.element(LADDER)?.set_property("caps", &caps);
            key_frame = true;
        }
        if want.video_kbps != self.applied.video_kbps {
            use diemcau_board::encoder::with_bitrate;
            let (old, _) = with_bitrate(&self.encoder, self.applied.video_kbps);
            let (new, known) = with_bitrate(&self.encoder, want.video_kbps);
            if known {
                let enc = self.element(VIDEO_ENCODER)?;
                for (k, v) in &new.properties {
                    if old.properties.get(k) != Some(v) {
                        set_from_str(&enc, k, v)?;
                    }
                }
            }
        }
        if want.paused != self.applied.paused {
            self.element(VALVE)?.set_property("drop", want.paused);
            key_frame |= !want.paused;
        }
        if want.opus_loss_percent != self.applied.opus_loss_percent {
            set_from_str(
                &self.element(AUDIO_ENCODER)?,
                "packet-loss-percentage",
                &want.opus_loss_percent.to_string(),
            )?;
        }
        if want.opus_dtx != self.applied.opus_dtx {
            set_from_str(
                &self.element(AUDIO_ENCODER)?,
                "dtx",
                if want.opus_dtx { "true" } else { "false" },
            )?;
        }
        if key_frame {
            self.request_key_frame();
        }
        self.applied = want;
        Ok(true)
    }

    /// Asks the video encoder for a key frame (with SPS/PPS).
    fn request_key_frame(&self) {
        let Some(pad) = self
            .pipeline
            .by_name(VIDEO_ENCODER)
            .and_then(|e| e.static_pad("src"))
        else {
            return;
        };
        let ev = gst_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        if !pad.send_event(ev) {
            tracing::debug!("the encoder did not take the key frame request");
        }
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

    /// The PeerConnection's statistics, with our audio and video streams
    /// and the far end's reports on them.
    /// What the camera and the microphone are doing.
    pub fn devices(&self) -> (crate::DeviceStatus, crate::DeviceStatus) {
        (self.feeds.camera.status(), self.feeds.microphone.status())
    }

    pub async fn stats(&self) -> Result<SendStats, MediaError> {
        let (mut video, mut audio) = (None, None);
        for pad in self.webrtc.sink_pads() {
            let Some(caps) = pad.current_caps() else {
                continue;
            };
            let Some(s) = caps.structure(0) else { continue };
            let ssrc = s.get::<u32>("ssrc").ok();
            match s.get::<&str>("media") {
                Ok("video") => video = video.or(ssrc),
                Ok("audio") => audio = audio.or(ssrc),
                _ => {}
            }
        }
        webrtc::send_stats(&self.webrtc, video, audio).await
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
