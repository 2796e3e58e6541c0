//! Thin async helpers around `webrtcbin`'s action signals and promises.

use gst::glib;
use gst::prelude::*;
use gst_webrtc::{WebRTCSDPType, WebRTCSessionDescription};
use tokio::sync::{mpsc, oneshot};

use crate::MediaError;
use crate::stats::{RemoteReport, RtpStats, SendStats, StreamSend};

/// Things a `webrtcbin` reports on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A local ICE candidate to send to the server.
    LocalCandidate { mline: u32, candidate: String },
    /// ICE connected (or completed).
    IceConnected,
    /// ICE failed or the pipeline hit an error: the PeerConnection is gone.
    Failed(String),
}

/// Sets up a `webrtcbin` the way every diemcau PeerConnection wants it:
/// one bundle, no STUN server (nothing leaves the district network unless
/// configured), the given jitter buffer, and events on `events`.
pub(crate) fn configure(
    webrtc: &gst::Element,
    jitter_ms: u32,
    events: mpsc::UnboundedSender<MediaEvent>,
) {
    webrtc.set_property_from_str("bundle-policy", "max-bundle");
    webrtc.set_property("stun-server", None::<String>);
    webrtc.set_property("latency", jitter_ms);

    let tx = events.clone();
    webrtc.connect("on-ice-candidate", false, move |values| {
        let mline = values.get(1).and_then(|v| v.get::<u32>().ok());
        let cand = values.get(2).and_then(|v| v.get::<String>().ok());
        if let (Some(mline), Some(candidate)) = (mline, cand) {
            let _ = tx.send(MediaEvent::LocalCandidate { mline, candidate });
        }
        None
    });
    let tx = events;
    webrtc.connect_notify(Some("ice-connection-state"), move |w, _| {
        use gst_webrtc::WebRTCICEConnectionState as S;
        match w.property::<S>("ice-connection-state") {
            S::Connected | S::Completed => {
                let _ = tx.send(MediaEvent::IceConnected);
            }
            S::Failed => {
                let _ = tx.send(MediaEvent::Failed("ICE failed".into()));
            }
            _ => {}
        }
    });
}

/// Sends bus errors of `pipeline` to `events`.
pub(crate) fn watch_bus(
    pipeline: &gst::Pipeline,
    what: &'static str,
    events: mpsc::UnboundedSender<MediaEvent>,
) {
    let Some(bus) = pipeline.bus() else { return };
    let weak = pipeline.downgrade();
    bus.set_sync_handler(move |_, msg| {
        if let gst::MessageView::Latency(_) = msg.view() {
            // An element's latency changed (the jitter buffer learns its
            // latency once the stream runs): distribute the new latency, or
            // sinks would show every frame too early or drop it as late.
            if let Some(p) = weak.upgrade() {
                recalculate_latency(&p);
            }
        }
        if let gst::MessageView::Error(e) = msg.view() {
            let src = msg
                .src()
                .map(|s| s.path_string().to_string())
                .unwrap_or_default();
            tracing::warn!(pipeline = what, %src, error = %e.error(), debug = ?e.debug(), "pipeline error");
            let _ = events.send(MediaEvent::Failed(format!("{what}: {src}: {}", e.error())));
        }
        gst::BusSyncReply::Drop
    });
}

/// Recomputes the pipeline's latency and hands it to its sinks. It runs on a
/// thread of its own: the latency query walks the whole pipeline and must
/// not run on the streaming thread that posted the message.
pub(crate) fn recalculate_latency(pipeline: &gst::Pipeline) {
    let weak = pipeline.downgrade();
    let spawned = std::thread::Builder::new()
        .name("latency".into())
        .spawn(move || {
            if let Some(p) = weak.upgrade()
                && p.recalculate_latency().is_err()
            {
                tracing::debug!(pipeline = %p.name(), "latency not recalculated (not live yet)");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the latency thread");
    }
}

async fn promise_reply(
    webrtc: &gst::Element,
    signal: &str,
    args: impl FnOnce(&gst::Promise) -> Vec<glib::Value>,
) -> Result<Option<gst::Structure>, MediaError> {
    let (tx, rx) = oneshot::channel();
    let promise = gst::Promise::with_change_func(move |reply| {
        let reply = match reply {
            Ok(Some(s)) => Ok(Some(s.to_owned())),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("{e:?}")),
        };
        let _ = tx.send(reply);
    });
    {
        // glib::Value is not Send: keep it out of the future's state.
        let values = args(&promise);
        webrtc.emit_by_name_with_values(signal, &values);
    }
    match tokio::time::timeout(std::time::Duration::from_secs(10), rx).await {
        Ok(Ok(Ok(s))) => Ok(s),
        Ok(Ok(Err(e))) => Err(MediaError::Negotiation(format!("{signal}: {e}"))),
        Ok(Err(_)) | Err(_) => Err(MediaError::Negotiation(format!("{signal}: no reply"))),
    }
}

fn description_from_reply(
    reply: Option<gst::Structure>,
    field: &str,
) -> Result<WebRTCSessionDescription, MediaError> {
    let s = reply.ok_or_else(|| MediaError::Negotiation(format!("no {field} in reply")))?;
    if let Ok(err) = s.get::<glib::Error>("error") {
        return Err(MediaError::Negotiation(format!("{field}: {err}")));
    }
    s.get::<WebRTCSessionDescription>(field)
        .map_err(|e| MediaError::Negotiation(format!("{field}: {e}")))
}

/// Creates an offer, sets it as local description, returns its SDP text.
pub(crate) async fn create_offer(webrtc: &gst::Element) -> Result<String, MediaError> {
    let reply = promise_reply(webrtc, "create-offer", |p| {
        vec![None::<gst::Structure>.to_value(), p.to_value()]
    })
    .await?;
    let offer = description_from_reply(reply, "offer")?;
    webrtc.emit_by_name::<()>("set-local-description", &[&offer, &None::<gst::Promise>]);
    sdp_text(&offer)
}

/// Creates an answer to the remote offer already set, sets it locally.
pub(crate) async fn create_answer(webrtc: &gst::Element) -> Result<String, MediaError> {
    let reply = promise_reply(webrtc, "create-answer", |p| {
        vec![None::<gst::Structure>.to_value(), p.to_value()]
    })
    .await?;
    let answer = description_from_reply(reply, "answer")?;
    webrtc.emit_by_name::<()>("set-local-description", &[&answer, &None::<gst::Promise>]);
    sdp_text(&answer)
}

fn sdp_text(d: &WebRTCSessionDescription) -> Result<String, MediaError> {
    d.sdp()
        .as_text()
        .map_err(|e| MediaError::Negotiation(format!("cannot serialise SDP: {e}")))
}

/// Parses `sdp` and sets it as the remote description.
pub(crate) async fn set_remote(
    webrtc: &gst::Element,
    kind: WebRTCSDPType,
    sdp: &str,
) -> Result<(), MediaError> {
    let msg = gst_sdp::SDPMessage::parse_buffer(sdp.as_bytes())
        .map_err(|_| MediaError::Negotiation("the server's SDP does not parse".into()))?;
    let desc = WebRTCSessionDescription::new(kind, msg);
    promise_reply(webrtc, "set-remote-description", |p| {
        vec![desc.to_value(), p.to_value()]
    })
    .await?;
    Ok(())
}

/// Adds a remote candidate (an empty string ends the remote candidates).
pub(crate) fn add_candidate(webrtc: &gst::Element, mline: u32, candidate: Option<&str>) {
    webrtc.emit_by_name::<()>("add-ice-candidate", &[&mline, &candidate.unwrap_or("")]);
}

fn num(s: &gst::StructureRef, field: &str) -> Option<f64> {
    let v = s.value(field).ok()?;
    v.get::<u64>()
        .map(|x| x as f64)
        .or_else(|_| v.get::<i64>().map(|x| x as f64))
        .or_else(|_| v.get::<u32>().map(f64::from))
        .or_else(|_| v.get::<i32>().map(f64::from))
        .or_else(|_| v.get::<f64>())
        .ok()
}

/// Asks webrtcbin for its statistics (one structure per stats object).
async fn get_stats(webrtc: &gst::Element) -> Result<gst::Structure, MediaError> {
    promise_reply(webrtc, "get-stats", |p| {
        vec![None::<gst::Pad>.to_value(), p.to_value()]
    })
    .await?
    .ok_or_else(|| MediaError::Negotiation("empty stats".into()))
}

/// The stats objects of `reply`, with their type.
fn stats_objects(
    reply: &gst::Structure,
) -> impl Iterator<Item = (gst_webrtc::WebRTCStatsType, gst::Structure)> + '_ {
    reply.iter().filter_map(|(_, value)| {
        let s = value.get::<gst::Structure>().ok()?;
        let kind = s.get::<gst_webrtc::WebRTCStatsType>("type").ok()?;
        Some((kind, s))
    })
}

/// Sums webrtcbin's statistics over its RTP streams.
fn sum_rtp_stats(reply: &gst::Structure) -> RtpStats {
    let mut out = RtpStats::default();
    for (kind, s) in stats_objects(reply) {
        use gst_webrtc::WebRTCStatsType as T;
        match kind {
            T::OutboundRtp => {
                out.bytes_sent += num(&s, "bytes-sent").unwrap_or(0.0) as u64;
                out.packets_sent += num(&s, "packets-sent").unwrap_or(0.0) as u64;
            }
            T::InboundRtp => {
                out.bytes_received += num(&s, "bytes-received").unwrap_or(0.0) as u64;
                out.packets_received += num(&s, "packets-received").unwrap_or(0.0) as u64;
                out.packets_lost += num(&s, "packets-lost").unwrap_or(0.0) as i64;
                if let Some(j) = num(&s, "jitter") {
                    out.jitter_ms = Some(out.jitter_ms.unwrap_or(0.0).max(j * 1000.0));
                }
            }
            T::RemoteInboundRtp => {
                out.packets_lost += num(&s, "packets-lost").unwrap_or(0.0) as i64;
                if let Some(rtt) = num(&s, "round-trip-time").filter(|r| *r > 0.0) {
                    out.rtt_ms = Some(out.rtt_ms.unwrap_or(0.0).max(rtt * 1000.0));
                }
            }
            _ => {}
        }
    }
    out
}

/// Reads webrtcbin's statistics and sums them over its RTP streams.
pub(crate) async fn rtp_stats(webrtc: &gst::Element) -> Result<RtpStats, MediaError> {
    Ok(sum_rtp_stats(&get_stats(webrtc).await?))
}

/// Reads webrtcbin's statistics: the sums, and the streams with SSRCs
/// `video` and `audio` on their own with the far end's latest report on
/// each. (GStreamer 1.22 labels every stream's `kind` "audio", so streams
/// are told apart by SSRC, taken from the payloaders' caps.)
pub(crate) async fn send_stats(
    webrtc: &gst::Element,
    video: Option<u32>,
    audio: Option<u32>,
) -> Result<SendStats, MediaError> {
    let reply = get_stats(webrtc).await?;
    let mut out = SendStats {
        rtp: sum_rtp_stats(&reply),
        ..SendStats::default()
    };
    let mut streams: Vec<StreamSend> = Vec::new();
    let mut remotes: Vec<(u32, RemoteReport)> = Vec::new();
    for (kind, s) in stats_objects(&reply) {
        use gst_webrtc::WebRTCStatsType as T;
        let Ok(ssrc) = s.get::<u32>("ssrc") else {
            continue;
        };
        match kind {
            T::OutboundRtp => streams.push(StreamSend {
                ssrc,
                bytes_sent: num(&s, "bytes-sent").unwrap_or(0.0) as u64,
                packets_sent: num(&s, "packets-sent").unwrap_or(0.0) as u64,
                remote: None,
            }),
            T::RemoteInboundRtp => {
                // The report block itself is in the rtpsource statistics.
                let Ok(src) = s.get::<gst::Structure>("gst-rtpsource-stats") else {
                    continue;
                };
                if src.get::<bool>("have-rb") != Ok(true) {
                    continue;
                }
                let Some(hs) = num(&src, "rb-exthighestseq") else {
                    continue;
                };
                remotes.push((
                    ssrc,
                    RemoteReport {
                        ext_highest_seq: hs as u32,
                        packets_lost: num(&src, "rb-packetslost").unwrap_or(0.0) as i64,
                        fraction_lost: num(&s, "fraction-lost").unwrap_or(0.0).clamp(0.0, 1.0),
                        rtt_ms: num(&s, "round-trip-time")
                            .filter(|r| r.is_finite() && *r > 0.0)
                            .map(|r| r * 1000.0),
                    },
                ));
            }
            _ => {}
        }
    }
    let pick = |want: Option<u32>| {
        let want = want?;
        let mut st = streams.iter().find(|st| st.ssrc == want).copied()?;
        st.remote = remotes.iter().find(|(s, _)| *s == want).map(|(_, r)| *r);
        Some(st)
    };
    out.video = pick(video);
    out.audio = pick(audio);
    Ok(out)
}
