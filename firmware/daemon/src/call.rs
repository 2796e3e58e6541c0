//! One call: the adapter that turns the room's `StartCall` into signalling
//! with the conference server and GStreamer pipelines, and reports back
//! what happened as [`ConferenceEvent`]s tagged with the call's id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use diemcau_conference::janus::JanusClient;
use diemcau_conference::{Feed, HandleId, RoomSettings, SignalError, SignalEvent, Signalling};
use diemcau_core::{CallId, ConferenceEvent};
use diemcau_media::{
    AudioOut, DeviceStatus, MediaError, MediaEvent, MediaSettings, Publisher, RtpStats, Speaker,
    Subscriber,
};

use diemcau_media::adapt::{self, Controller, LinkMeter, Target};

use crate::ctl::{AdaptStatus, PeerStatus};

/// What a call needs to know, fixed for the daemon's life.
#[derive(Debug, Clone)]
pub struct CallConfig {
    pub media: MediaSettings,
    pub janus_url: String,
    pub room: RoomSettings,
}

/// Live numbers of the current call, read by `ctl status`.
#[derive(Debug, Default, Clone)]
pub struct CallStatus {
    pub peers: Vec<PeerStatus>,
    pub send: RtpStats,
    pub send_bitrate_kbps: f64,
    /// What the sender adaptation does with our video, and why.
    pub adapt: Option<AdaptStatus>,
    /// What our camera and microphone are doing (the publisher's feeds).
    pub camera: Option<DeviceStatus>,
    pub microphone: Option<DeviceStatus>,
}

/// A running call task.
pub struct CallHandle {
    pub call: CallId,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl CallHandle {
    /// Asks the call to leave; it reports `Left` when done.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    pub fn abort(&self) {
        self.task.abort();
    }
}

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error(transparent)]
    Media(#[from] MediaError),
}

impl CallError {
    fn retryable(&self) -> bool {
        match self {
            CallError::Signal(e) => e.is_retryable(),
            CallError::Media(MediaError::NoEncoder(_)) => false,
            CallError::Media(_) => true,
        }
    }
}

enum Ended {
    Stopped,
    Lost(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Publisher,
    Subscriber(u64),
}

struct Sub {
    handle: HandleId,
    name: String,
    pipeline: Subscriber,
    last_bytes: u64,
    last_at: Instant,
    bitrate_kbps: f64,
    rtp: RtpStats,
}

type Events = mpsc::UnboundedSender<(CallId, ConferenceEvent)>;

/// Starts call `call`; events go to `events`, live numbers to `status`.
pub fn spawn(
    cfg: Arc<CallConfig>,
    target: Option<(String, RoomSettings)>,
    call: CallId,
    events: Events,
    status: Arc<Mutex<CallStatus>>,
    mute: watch::Receiver<bool>,
    volume: watch::Receiver<u8>,
) -> CallHandle {
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        let (url, room) = target.unwrap_or_else(|| (cfg.janus_url.clone(), cfg.room.clone()));
        let control = Control {
            stop: stop_rx,
            mute,
            volume,
        };
        let result = session(&cfg, &url, &room, call, &events, &status, control).await;
        *status.lock().unwrap_or_else(|e| e.into_inner()) = CallStatus::default();
        let event = match result {
            Ok(Ended::Stopped) => ConferenceEvent::Left,
            Ok(Ended::Lost(reason)) => {
                tracing::warn!(%call, %reason, "call lost");
                ConferenceEvent::Lost { reason }
            }
            Err(e) => {
                tracing::warn!(%call, error = %e, "call failed");
                ConferenceEvent::Failed {
                    reason: e.to_string(),
                    retryable: e.retryable(),
                }
            }
        };
        let _ = events.send((call, event));
    });
    CallHandle {
        call,
        stop: Some(stop_tx),
        task,
    }
}

fn tagged(
    out: mpsc::UnboundedSender<(Tag, MediaEvent)>,
    tag: Tag,
) -> mpsc::UnboundedSender<MediaEvent> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if out.send((tag, e)).is_err() {
                break;
            }
        }
    });
    tx
}

/// What the run loop tells a running call: leave, the microphone switch
/// and the speaker volume (percent).
struct Control {
    stop: oneshot::Receiver<()>,
    mute: watch::Receiver<bool>,
    volume: watch::Receiver<u8>,
}

async fn session(
    cfg: &CallConfig,
    url: &str,
    room: &RoomSettings,
    call: CallId,
    events: &Events,
    status: &Mutex<CallStatus>,
    control: Control,
) -> Result<Ended, CallError> {
    let Control {
        mut stop,
        mut mute,
        mut volume,
    } = control;
    tracing::info!(%call, %url, room = room.room_id, "joining");
    // Start the camera and encoder first: they warm up while we talk to
    // the server (four round trips, long ones on a poor link).
    let (mtx, mut mrx) = mpsc::unbounded_channel();
    // The speaker first: the microphone's echo canceller looks for its
    // probe when the publisher starts.
    let speaker = start_speaker(&cfg.media)?;
    let mut publisher = Publisher::start(
        &cfg.media,
        speaker.as_deref(),
        tagged(mtx.clone(), Tag::Publisher),
    )?;
    publisher.set_muted(*mute.borrow_and_update());
    // The sender adaptation, fed once a second from the far end's reports.
    let mut adaptation = Adaptation::new(&cfg.media, publisher.top_step());
    let (client, mut sig) = tokio::select! {
        r = JanusClient::connect(url, room.clone()) => r?,
        _ = &mut stop => return Ok(Ended::Stopped),
    };
    let joined = tokio::select! {
        r = client.join() => r?,
        _ = &mut stop => { client.leave().await; return Ok(Ended::Stopped) }
    };
    tracing::info!(%call, feed = joined.feed_id, publishers = joined.publishers.len(), "joined the room");

    let offer = publisher.offer().await?;
    tracing::debug!(%call, sdp = %offer, "publisher offer");
    let answer = client.publish(&offer).await?;
    tracing::debug!(%call, sdp = %answer, "publisher answer");
    publisher.apply_answer(&answer).await?;

    let mut subs: HashMap<u64, Sub> = HashMap::new();
    for feed in joined.publishers {
        subscribe(
            cfg,
            speaker.as_ref(),
            &client,
            &mtx,
            &mut subs,
            feed,
            call,
            events,
        )
        .await;
    }
    for s in subs.values() {
        s.pipeline.set_volume(*volume.borrow_and_update());
    }
    let mut joined_sent = false;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last_sent: (u64, Instant) = (0, Instant::now());

    let ended = loop {
        tokio::select! {
            _ = &mut stop => {
                client.leave().await;
                break Ended::Stopped;
            }
            Ok(()) = mute.changed() => {
                let muted = *mute.borrow_and_update();
                tracing::info!(%call, muted, "microphone");
                publisher.set_muted(muted);
            }
            Ok(()) = volume.changed() => {
                let percent = *volume.borrow_and_update();
                tracing::info!(%call, percent, "speaker volume");
                for s in subs.values() {
                    s.pipeline.set_volume(percent);
                }
            }
            ev = sig.recv() => {
                let Some(ev) = ev else { break Ended::Lost("signalling ended".into()) };
                match ev {
                    SignalEvent::PublisherJoined(feed) => {
                        if !subs.contains_key(&feed.id) {
                            let id = feed.id;
                            subscribe(cfg, speaker.as_ref(), &client, &mtx, &mut subs, feed, call, events).await;
                            if let Some(s) = subs.get(&id) {
                                s.pipeline.set_volume(*volume.borrow());
                            }
                        }
                    }
                    SignalEvent::PublisherLeft { id } => {
                        if let Some(s) = subs.remove(&id) {
                            tracing::info!(%call, peer = %s.name, "peer left");
                            client.unsubscribe(s.handle).await;
                            let _ = events.send((call, ConferenceEvent::PeerLeft { id }));
                        }
                    }
                    SignalEvent::RemoteCandidate { handle, mline, candidate } => {
                        if handle == joined.handle {
                            publisher.add_remote_candidate(mline, candidate.as_deref());
                        } else if let Some(s) = subs.values().find(|s| s.handle == handle) {
                            s.pipeline.add_remote_candidate(mline, candidate.as_deref());
                        }
                    }
                    SignalEvent::WebRtcUp { handle } => {
                        if handle == joined.handle && !joined_sent {
                            joined_sent = true;
                            tracing::info!(%call, "in call");
                            let _ = events.send((call, ConferenceEvent::Joined));
                        }
                    }
                    SignalEvent::HangUp { handle, reason } => {
                        if handle == joined.handle {
                            break Ended::Lost(format!("the server hung up: {reason}"));
                        }
                        if let Some((&id, _)) = subs.iter().find(|(_, s)| s.handle == handle) {
                            subs.remove(&id);
                            let _ = events.send((call, ConferenceEvent::PeerLeft { id }));
                        }
                    }
                    SignalEvent::Closed { reason } => break Ended::Lost(reason),
                }
            }
            m = mrx.recv() => {
                let Some((tag, ev)) = m else { continue };
                match (tag, ev) {
                    (Tag::Publisher, MediaEvent::LocalCandidate { mline, candidate }) => {
                        client.trickle(joined.handle, mline, Some(&candidate));
                    }
                    (Tag::Publisher, MediaEvent::IceConnected) => {}
                    (Tag::Publisher, MediaEvent::Failed(reason)) => break Ended::Lost(reason),
                    (Tag::Subscriber(id), MediaEvent::LocalCandidate { mline, candidate }) => {
                        if let Some(s) = subs.get(&id) {
                            client.trickle(s.handle, mline, Some(&candidate));
                        }
                    }
                    (Tag::Subscriber(_), MediaEvent::IceConnected) => {}
                    (Tag::Subscriber(id), MediaEvent::Failed(reason)) => {
                        if let Some(s) = subs.remove(&id) {
                            tracing::warn!(%call, peer = %s.name, %reason, "receiving from a peer failed");
                            client.unsubscribe(s.handle).await;
                            let _ = events.send((call, ConferenceEvent::PeerLeft { id }));
                        }
                    }
                }
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                let send = match publisher.stats().await {
                    Ok(stats) => {
                        adaptation.tick(&mut publisher, &stats, call);
                        stats.rtp
                    }
                    Err(e) => {
                        tracing::debug!(%call, error = %e, "no publisher statistics");
                        RtpStats::default()
                    }
                };
                let dt = now.duration_since(last_sent.1).as_secs_f64().max(0.001);
                let send_kbps = send.bytes_sent.saturating_sub(last_sent.0) as f64 * 8.0 / dt / 1000.0;
                last_sent = (send.bytes_sent, now);
                let mut peers = Vec::with_capacity(subs.len());
                for (id, s) in subs.iter_mut() {
                    if let Ok(rtp) = s.pipeline.stats().await {
                        let dt = now.duration_since(s.last_at).as_secs_f64().max(0.001);
                        s.bitrate_kbps = rtp.bytes_received.saturating_sub(s.last_bytes) as f64 * 8.0 / dt / 1000.0;
                        s.last_bytes = rtp.bytes_received;
                        s.last_at = now;
                        s.rtp = rtp;
                    }
                    peers.push(PeerStatus {
                        id: *id,
                        name: s.name.clone(),
                        media: s.pipeline.counters().snapshot(now),
                        rtp: s.rtp.clone(),
                        bitrate_kbps: s.bitrate_kbps,
                        picture: s.pipeline.picture(),
                        speaker_level_db: s.pipeline.speaker_level_db(),
                    });
                }
                peers.sort_by_key(|p| p.id);
                let (camera, microphone) = publisher.devices();
                *status.lock().unwrap_or_else(|e| e.into_inner()) = CallStatus {
                    peers,
                    send,
                    send_bitrate_kbps: send_kbps,
                    adapt: Some(adaptation.status()),
                    camera: Some(camera),
                    microphone: Some(microphone),
                };
            }
        }
    };
    drop(subs);
    drop(publisher);
    Ok(ended)
}

/// The sender adaptation of one call: the controller
/// ([`diemcau_media::adapt`]), the meter that turns the publisher's
/// statistics into its reports, and what was last applied.
struct Adaptation {
    meter: LinkMeter,
    controller: Controller,
    /// Monotonic time origin of the reports.
    started: Instant,
    target: Target,
    loss: Option<f64>,
}

impl Adaptation {
    fn new(media: &MediaSettings, top: adapt::Step) -> Adaptation {
        let controller = Controller::new(adapt::Config {
            start_kbps: media.profile.video.bitrate_kbps,
            top,
            ..adapt::Config::default()
        });
        Adaptation {
            meter: LinkMeter::new(),
            target: controller.target(),
            controller,
            started: Instant::now(),
            loss: None,
        }
    }

    /// One report: what the far end said since the last one goes into the
    /// controller; its target goes into the pipeline (only what changed).
    fn tick(&mut self, publisher: &mut Publisher, stats: &diemcau_media::SendStats, call: CallId) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let report = self.meter.report(now_ms, stats);
        if report.fraction_lost.is_some() {
            self.loss = report.fraction_lost;
        }
        let target = self.controller.update(&report);
        tracing::trace!(%call, ?report, ?target, "adaptation");
        if target.step != self.target.step {
            tracing::info!(
                %call,
                from = %self.target.step,
                to = %target.step,
                kbps = target.video_kbps,
                reason = %target.reason,
                "video rung"
            );
        } else if target.video_kbps != self.target.video_kbps {
            tracing::debug!(%call, kbps = target.video_kbps, reason = %target.reason, "video rate");
        }
        match publisher.apply(&target) {
            Ok(_) => self.target = target,
            Err(e) => {
                // Keep the old target: the next tick tries again.
                tracing::warn!(%call, error = %e, "cannot apply the adaptation target");
            }
        }
    }

    fn status(&self) -> AdaptStatus {
        let t = &self.target;
        let (width, height, framerate) = t.step.format().unwrap_or((0, 0, 0));
        AdaptStatus {
            rung: t.step.label().to_string(),
            width,
            height,
            framerate,
            video_kbps: t.video_kbps,
            loss_percent: self.loss.map(|l| (l * 1000.0).round() / 10.0),
            random_loss_percent: t.random_loss_percent,
            opus_loss_percent: t.opus_loss_percent,
            opus_dtx: t.opus_dtx,
            reason: t.reason.clone(),
        }
    }
}

/// The room's speaker for a call, when sound is played at all: every far
/// room mixed, with the echo probe when the microphone cancels echo.
fn start_speaker(media: &MediaSettings) -> Result<Option<Arc<Speaker>>, MediaError> {
    match &media.audio_out {
        AudioOut::Sink(sink) => Ok(Some(Speaker::start(sink, media.audio_dsp.echo_cancel)?)),
        AudioOut::Discard => Ok(None),
    }
}

#[allow(clippy::too_many_arguments)]
async fn subscribe(
    cfg: &CallConfig,
    speaker: Option<&Arc<Speaker>>,
    client: &JanusClient,
    mtx: &mpsc::UnboundedSender<(Tag, MediaEvent)>,
    subs: &mut HashMap<u64, Sub>,
    feed: Feed,
    call: CallId,
    events: &Events,
) {
    let result: Result<Sub, CallError> = async {
        let (handle, offer) = client.subscribe(feed.id).await?;
        tracing::debug!(%call, sdp = %offer, "subscriber offer");
        let pipeline = Subscriber::start(
            &cfg.media,
            speaker,
            feed.id,
            &feed.display,
            tagged(mtx.clone(), Tag::Subscriber(feed.id)),
        )?;
        let answer = pipeline.answer(&offer).await?;
        client.start(handle, &answer).await?;
        Ok(Sub {
            handle,
            name: feed.display.clone(),
            pipeline,
            last_bytes: 0,
            last_at: Instant::now(),
            bitrate_kbps: 0.0,
            rtp: RtpStats::default(),
        })
    }
    .await;
    match result {
        Ok(sub) => {
            tracing::info!(%call, peer = %feed.display, id = feed.id, "receiving from peer");
            subs.insert(feed.id, sub);
            let _ = events.send((
                call,
                ConferenceEvent::PeerJoined {
                    id: feed.id,
                    name: feed.display,
                },
            ));
        }
        Err(e) => {
            tracing::warn!(%call, peer = %feed.display, error = %e, "cannot receive from peer");
        }
    }
}
