//! The run loop: inputs from the control socket, the call and the clock go
//! into the room state machine; its outputs start and stop calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use std::path::Path;

use diemcau_board::BoardProfile;
use diemcau_board::detect::{DetectError, detect};
use diemcau_board::select::{GstRegistry, RootedDevices, SelectError, Selection};
use diemcau_conference::RoomSettings;
use diemcau_core::{CallId, ConferenceEvent, Input, Output, Room, State, Timing};
use diemcau_media::{AudioOut, MediaError, MediaSettings, VideoOut};

use crate::call::{self, CallConfig, CallHandle, CallStatus};
use crate::config::{Config, VideoOutConfig};
use crate::ctl::{self, Command, CtlRequest, Status};
use crate::district::Meetings;
use crate::hw;
use diemcau_agent::api::SelfTestReport;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("board detection")]
    Detect(#[from] DetectError),
    #[error("no usable media elements on this board")]
    Select(#[from] SelectError),
    #[error("media")]
    Media(#[from] diemcau_media::MediaError),
    #[error("media.encoder = {pinned:?} is not an encoder of board {board} (it has: {known})")]
    Encoder {
        pinned: String,
        board: String,
        known: String,
    },
    #[error("room hardware")]
    Hardware(#[from] crate::hw::HardwareError),
    #[error("cannot open the control socket {path}")]
    Socket {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The board this daemon runs on and the elements chosen for it.
pub struct Board {
    pub profile: BoardProfile,
    pub selection: Selection,
}

/// Detects the board (or takes the one named in config) and chooses the
/// encoder, decoder and display sink that are really present, logging why
/// each fallback was taken.
pub fn board(cfg: &Config) -> Result<Board, StartError> {
    let override_name = (cfg.board != "auto").then_some(cfg.board.as_str());
    let mut detection = detect(Path::new("/"), override_name)?;
    if let Some(pinned) = &cfg.encoder {
        let encoders = &mut detection.profile.video.encoders;
        let known: Vec<String> = encoders.iter().map(|e| e.element.clone()).collect();
        encoders.retain(|e| &e.element == pinned);
        if encoders.is_empty() {
            return Err(StartError::Encoder {
                pinned: pinned.clone(),
                board: detection.profile.name.clone(),
                known: known.join(", "),
            });
        }
        tracing::info!(encoder = %pinned, "encoder pinned by media.encoder");
    }
    tracing::info!(board = %detection.profile.name, "{}", detection.summary());
    for w in &detection.warnings {
        tracing::warn!("{w}");
    }
    let registry =
        GstRegistry::new().map_err(|e| StartError::Media(MediaError::Init(e.to_string())))?;
    let selection = detection.select(&registry, &RootedDevices::system())?;
    for r in selection.reasons() {
        tracing::info!("{r}");
    }
    Ok(Board {
        profile: detection.profile,
        selection,
    })
}

/// Builds the call settings from the config and the board.
pub fn call_config(cfg: &Config, board: Board) -> CallConfig {
    let Board {
        mut profile,
        selection,
    } = board;
    let (camera, microphone) = crate::devices::sources(&cfg.devices, &mut profile);
    let video_out = match &cfg.video_out {
        VideoOutConfig::Window => VideoOut::Sink(selection.sink.chosen.clone()),
        VideoOutConfig::Png { dir, every_secs } => VideoOut::Png {
            dir: dir.clone(),
            every_secs: *every_secs,
        },
        VideoOutConfig::None => VideoOut::Discard,
        VideoOutConfig::Screen { .. } => VideoOut::Screen,
    };
    let audio_out = if cfg.audio_out_device {
        AudioOut::Sink(profile.audio.sink.clone())
    } else {
        AudioOut::Discard
    };
    let audio_dsp = diemcau_media::AudioDsp {
        echo_cancel: cfg.echo_cancel.resolve(profile.audio.hardware_echo_cancel),
        noise_suppression: cfg.noise_suppression,
    };
    tracing::info!(
        echo_cancel = audio_dsp.echo_cancel,
        hardware_cancels = profile.audio.hardware_echo_cancel,
        noise_suppression = ?audio_dsp.noise_suppression.map(|n| n.as_str()),
        "microphone processing"
    );
    CallConfig {
        media: MediaSettings {
            encoder: selection.encoder.chosen,
            decoder: selection.decoder.chosen,
            profile,
            room_name: cfg.room_name.clone(),
            jitter_ms: cfg.jitter_ms,
            stamp_frames: cfg.stamp_frames,
            video_out,
            audio_out,
            camera,
            microphone,
            audio_dsp,
        },
        janus_url: cfg.janus_url.clone(),
        room: RoomSettings {
            room_id: cfg.room_id,
            display_name: cfg.display_name.clone(),
            pin: cfg.pin.clone(),
        },
    }
}

/// Runs the offline media self-test for `board` ("auto": detected).
pub fn self_test(
    board_name: &str,
    frames: u32,
) -> Result<diemcau_media::selftest::SelfTestReport, StartError> {
    diemcau_media::init()?;
    let cfg = Config {
        room_name: "diemcau self-test".into(),
        board: board_name.into(),
        janus_url: String::new(),
        room_id: 1,
        display_name: "self-test".into(),
        pin: None,
        jitter_ms: 50,
        video_out: VideoOutConfig::None,
        audio_out_device: false,
        stamp_frames: false,
        utc_offset_min: 420,
        encoder: None,
        devices: Default::default(),
        district: None,
        socket: Default::default(),
        remote: None,
        keymap: Default::default(),
        speaker_volume: crate::volume::DEFAULT_PERCENT,
        echo_cancel: Default::default(),
        noise_suppression: None,
        tv: None,
        hardware: Default::default(),
    };
    let b = board(&cfg)?;
    let call = call_config(&cfg, b);
    Ok(diemcau_media::selftest::run(&call.media, frames)?)
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> Result<(), StartError> {
    diemcau_media::init()?;
    let board = board(&cfg)?;
    let encoder = board.selection.encoder.chosen.element.clone();
    let screen_out = match &cfg.video_out {
        VideoOutConfig::Screen { png: None } => Some(crate::screen::Output::Display(
            board.selection.sink.chosen.launch_fragment(),
        )),
        VideoOutConfig::Screen {
            png: Some((path, every)),
        } => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            Some(crate::screen::Output::Png {
                path: path.clone(),
                every: Duration::from_secs(u64::from(*every)),
            })
        }
        _ => None,
    };
    let call_cfg = call_config(&cfg, board);
    let board = call_cfg.media.profile.name.clone();
    if let VideoOut::Png { dir, .. } = &call_cfg.media.video_out {
        let _ = std::fs::create_dir_all(dir);
        tracing::info!(dir = %dir.display(), "received frames are written as PNG");
    }
    let call_cfg = Arc::new(call_cfg);

    let (ctl_tx, mut ctl_rx) = mpsc::channel::<CtlRequest>(16);
    let socket = cfg.socket.clone();
    // Bind first so that a bad socket path fails the start, not later.
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let r = ctl::serve(&socket, ctl_tx).await;
        let _ = bound_tx.send(r);
    });
    if let Ok(Ok(Err(source))) = tokio::time::timeout(Duration::from_millis(200), bound_rx).await {
        return Err(StartError::Socket {
            path: cfg.socket.display().to_string(),
            source,
        });
    }
    let mut supervision = hw::Supervision::start(&cfg.hardware)?;
    let mut gpio = hw::start_gpio(&cfg.hardware)?;
    tracing::info!(socket = %cfg.socket.display(), room = %cfg.room_name, "diemcau ready");

    let (mut district, mut agent_rx) = match &cfg.district {
        Some(d) => start_agent(d, &board).await,
        None => (None, None),
    };

    let started = Instant::now();
    let seed = std::process::id() as u64 ^ started.elapsed().as_nanos() as u64;
    let mut room = Room::new(Timing::default(), seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    supervision.ready(room.state());
    // A screen that cannot start (no display attached) must not keep the
    // room out of its meetings: log it and go on without.
    let mut screen = screen_out.and_then(|o| match crate::screen::RoomScreen::start(o) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "the room screen does not start; continuing without it");
            None
        }
    });
    let mut convened: Option<(String, Instant)> = None;
    // The TV over HDMI-CEC, and the meeting it was last woken for.
    let mut tv = cfg
        .tv
        .as_ref()
        .and_then(|t| crate::tv::start(t, &cfg.room_name));
    let mut tv_woken_for: Option<String> = None;
    let mut keys = cfg.remote.as_ref().map(crate::remote::spawn);
    let mut key_policy = crate::remote::KeyPolicy::default();
    // The speaker volume, kept beside the district state when there is one.
    let mut volume = crate::volume::Volume::load(
        cfg.district
            .as_ref()
            .map(|d| d.state_dir.join("speaker-volume")),
        cfg.speaker_volume,
    );
    tracing::info!(percent = volume.percent(), "speaker volume");
    let (volume_tx, volume_rx) = tokio::sync::watch::channel(volume.percent());
    // What Volume ± last set, shown over the screen for a few seconds.
    let mut volume_toast: Option<(u8, Instant)> = None;
    // The microphone switch of whichever call runs; every call starts unmuted.
    let (mute_tx, mute_rx) = tokio::sync::watch::channel(false);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<(CallId, ConferenceEvent)>();
    // The self-test: the one running (when it started), who waits for it,
    // the last result (shown over the screen for a while) and the meeting
    // it last ran before.
    let (st_tx, mut st_rx) = mpsc::unbounded_channel::<SelfTestReport>();
    let mut self_test_running: Option<Instant> = None;
    let mut self_test_waiters: Vec<tokio::sync::oneshot::Sender<Status>> = Vec::new();
    let mut last_self_test: Option<(SelfTestReport, Instant)> = None;
    let mut self_tested_for: Option<String> = None;
    let mut want_self_test: Option<(crate::selftest::Trigger, Option<String>)> = None;
    let status = Arc::new(Mutex::new(CallStatus::default()));
    let mut calls: Vec<CallHandle> = Vec::new();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| StartError::Socket {
            path: "SIGTERM".into(),
            source,
        })?;

    let now_ms = |started: Instant| started.elapsed().as_millis() as u64;
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut last_state = room.state().name();
    loop {
        let sleep = match room.poll_timeout() {
            Some(at) => Duration::from_millis(at.saturating_sub(now_ms(started))),
            None => Duration::from_secs(3600),
        };
        let mut status_reply = None;
        let mut pending_key = None;
        tokio::select! {
            req = ctl_rx.recv() => {
                let Some((cmd, reply)) = req else { break };
                use diemcau_control::keys::{KeyEvent, RemoteKey};
                let input = match cmd {
                    Command::Join => Some(Input::Join),
                    Command::Leave => Some(Input::Leave),
                    Command::Toggle => Some(Input::Toggle),
                    Command::Mute => Some(Input::ToggleMute),
                    Command::VolumeUp | Command::VolumeDown | Command::Home | Command::Status => None,
                    Command::SelfTest => None,
                };
                if let Some(i) = input {
                    tracing::info!(?cmd, "control");
                    room.handle_input(now_ms(started), i);
                }
                // The remote's keys, as if pressed.
                let key = match cmd {
                    Command::VolumeUp => Some(RemoteKey::VolumeUp),
                    Command::VolumeDown => Some(RemoteKey::VolumeDown),
                    Command::Home => Some(RemoteKey::Home),
                    _ => None,
                };
                if let Some(k) = key {
                    tracing::info!(?cmd, "control");
                    pending_key = Some((KeyEvent::pressed(k), false));
                }
                if cmd == Command::SelfTest {
                    tracing::info!(?cmd, "control");
                    want_self_test = Some((crate::selftest::Trigger::Ctl, None));
                    self_test_waiters.push(reply);
                } else {
                    status_reply = Some(reply);
                }
            }
            ev = ev_rx.recv() => {
                if let Some((call, event)) = ev {
                    tracing::debug!(%call, ?event, "conference event");
                    room.handle_input(now_ms(started), Input::Conference { call, event });
                }
            }
            _ = tokio::time::sleep(sleep) => room.handle_input(now_ms(started), Input::Tick),
            key = recv_key(&mut keys) => match key {
                Some(key) => pending_key = Some((key, false)),
                None => keys = None,
            },
            key = recv_tv_key(&mut tv) => match key {
                Some(key) => pending_key = Some((key, true)),
                None => tv = None,
            },
            input = recv_gpio(&mut gpio) => match input {
                Some(input) => room.handle_input(now_ms(started), input),
                None => gpio = None,
            },
            ev = recv_agent(&mut agent_rx) => {
                match (ev, district.as_mut()) {
                    (Some(ev), Some(d)) => {
                        for input in d.on_agent_event(ev) {
                            if let Input::JoinMeeting { meeting } = &input
                                && let Some(m) = d.meetings.get(meeting).filter(|m| m.urgent)
                            {
                                convened = Some((m.title.clone(), Instant::now()));
                            }
                            room.handle_input(now_ms(started), input);
                        }
                    }
                    _ => agent_rx = None,
                }
            }
            _ = second.tick() => {
                supervision.pet(Instant::now());
                if let Some(d) = district.as_mut() {
                    let now_s = d.now_s();
                    if let (Some(t), Some(m)) = (tv.as_ref(), d.meetings.next(now_s))
                        && m.starts_at - now_s <= TV_WAKE_BEFORE_S
                        && tv_woken_for.as_deref() != Some(m.id.as_str())
                    {
                        tracing::info!(meeting = %m.title, "meeting due: TV on");
                        tv_woken_for = Some(m.id.clone());
                        t.send(crate::tv::TvEvent::MeetingDue);
                    }
                    let next = d.meetings.next(now_s).map(|m| (m.id.as_str(), m.starts_at));
                    if let Some(id) = crate::selftest::due(next, now_s, self_tested_for.as_deref()) {
                        tracing::info!(meeting = %id, "meeting soon: self-test");
                        self_tested_for = Some(id.to_string());
                        want_self_test = Some((crate::selftest::Trigger::Schedule, Some(id.to_string())));
                    }
                    for input in d.meetings.tick(d.now_s()) {
                        tracing::info!(?input, "schedule");
                        room.handle_input(now_ms(started), input);
                    }
                    let s = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    d.heartbeat(&room, &s, started);
                }
            }
            Some(report) = st_rx.recv() => {
                self_test_running = None;
                if report.passed {
                    tracing::info!(trigger = %report.trigger, ms = report.elapsed_ms, "self-test passed");
                } else {
                    tracing::warn!(trigger = %report.trigger, result = %crate::selftest::screen_text(&report), "self-test failed");
                }
                if let Some(d) = district.as_mut() {
                    d.self_test = Some(report.clone());
                    d.last_heartbeat = None;
                }
                last_self_test = Some((report, Instant::now()));
                // Answered below, with the status.
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
        if let Some((key, from_tv)) = pending_key {
            use crate::remote::KeyAction;
            if !from_tv && let Some(t) = tv.as_ref() {
                t.send(crate::tv::TvEvent::Activity);
            }
            match key_policy.on_key(now_ms(started), room.state(), key) {
                KeyAction::Input(input) => {
                    tracing::info!(key = %key.key, ?input, "remote");
                    room.handle_input(now_ms(started), input);
                }
                KeyAction::ConfirmLeave => {
                    tracing::info!(key = %key.key, "remote: press again to leave");
                }
                KeyAction::Volume(up) => {
                    let percent = volume.step(up);
                    tracing::info!(key = %key.key, percent, "remote: speaker volume");
                    let _ = volume_tx.send(percent);
                    volume_toast = Some((percent, Instant::now()));
                }
                KeyAction::StatusScreen(shown) => {
                    tracing::info!(key = %key.key, shown, "remote: status screen");
                }
                KeyAction::SelfTest => {
                    tracing::info!(key = %key.key, "remote: self-test");
                    want_self_test = Some((crate::selftest::Trigger::Remote, None));
                }
                KeyAction::Ignored => tracing::debug!(key = %key.key, "remote key ignored"),
            }
        }
        while let Some(out) = room.poll_output() {
            match out {
                Output::StartCall { call, meeting } => {
                    calls.retain(|c| !c.is_finished());
                    let target = meeting.as_deref().and_then(|id| {
                        let m = district.as_ref()?.meetings.get(id)?;
                        tracing::info!(meeting = %m.title, room = m.janus.room_id, "joining district meeting");
                        Some((
                            m.janus.ws_url.clone(),
                            RoomSettings {
                                room_id: m.janus.room_id,
                                display_name: cfg.display_name.clone(),
                                pin: m.janus.pin.clone(),
                            },
                        ))
                    });
                    let _ = mute_tx.send(false);
                    if let Some(t) = tv.as_ref() {
                        t.send(crate::tv::TvEvent::CallStarted);
                    }
                    calls.push(call::spawn(
                        call_cfg.clone(),
                        target,
                        call,
                        ev_tx.clone(),
                        status.clone(),
                        mute_rx.clone(),
                        volume_rx.clone(),
                    ));
                }
                Output::Mute(muted) => {
                    tracing::info!(muted, "microphone");
                    let _ = mute_tx.send(muted);
                    if let Some(g) = gpio.as_ref() {
                        let _ = g.led.send(hw::led_pattern_muted(room.state(), muted));
                    }
                }
                Output::EndCall { call } => {
                    for c in calls.iter_mut().filter(|c| c.call == call) {
                        c.stop();
                    }
                }
                Output::StateChanged(state) => {
                    log_state(&state);
                    supervision.state_changed(&state);
                    if let Some(t) = tv.as_ref()
                        && matches!(state, State::Idle | State::Error { .. })
                    {
                        t.send(crate::tv::TvEvent::CallEnded);
                    }
                    if let Some(g) = gpio.as_ref() {
                        let _ = g.led.send(hw::led_pattern_muted(&state, room.muted()));
                    }
                    if let Some(d) = district.as_ref() {
                        d.report_transition(last_state, &state, room.meeting());
                    }
                    last_state = state.name();
                }
            }
        }
        if let Some((trigger, meeting)) = want_self_test.take() {
            let now_s = district.as_ref().map(|d| d.now_s()).unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0)
            });
            if !matches!(room.state(), State::Idle) {
                let why = format!(
                    "the room is {}: the self-test runs only while idle",
                    room.state().name()
                );
                tracing::info!(%why, "self-test refused");
                last_self_test = Some((
                    crate::selftest::refused(trigger, now_s, &why),
                    Instant::now(),
                ));
            } else if self_test_running.is_none() {
                self_test_running = Some(Instant::now());
                // The Janus of the next district meeting, else our own.
                let janus_url = district
                    .as_ref()
                    .and_then(|d| d.meetings.next(now_s).map(|m| m.janus.ws_url.clone()))
                    .unwrap_or_else(|| cfg.janus_url.clone());
                let media = call_cfg.media.clone();
                let agent = district.as_ref().map(|d| d.agent.clone());
                let tx = st_tx.clone();
                tokio::spawn(async move {
                    let r = crate::selftest::run(media, janus_url, agent, trigger, meeting, now_s)
                        .await;
                    let _ = tx.send(r);
                });
            }
        }
        if self_test_running.is_none() && last_self_test.is_some() && !self_test_waiters.is_empty()
        {
            // Every waiter gets the status with the result.
            status_reply = self_test_waiters.pop();
        }
        if let Some(sc) = screen.as_mut() {
            let s = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let devices =
                crate::devices::status(&call_cfg.media, (s.camera.clone(), s.microphone.clone()));
            let tv_status = tv.as_ref().map(crate::tv::Tv::status);
            let extras = ScreenExtras {
                status_screen: key_policy.status_screen(now_ms(started)),
                volume_percent: volume.percent(),
                tv: tv_status.as_ref(),
            };
            let state = screen_view(
                &room,
                &cfg,
                district.as_ref(),
                &s,
                convened.as_ref(),
                devices,
                &extras,
            );
            volume_toast = volume_toast.filter(|(_, at)| at.elapsed() < TOAST_TIME);
            let self_test_toast = match (&self_test_running, &last_self_test) {
                (Some(_), _) => Some("Đang tự kiểm tra… / Self-test running…".to_string()),
                (None, Some((r, at))) if at.elapsed() < SELF_TEST_SHOWN => {
                    Some(crate::selftest::screen_text(r))
                }
                _ => None,
            };
            let toast = volume_toast
                .map(|(p, _)| crate::screen::volume_toast(p))
                .or(self_test_toast);
            sc.update(state, toast);
        }
        if let Some(reply) = status_reply {
            let s = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let devices = (s.camera.clone(), s.microphone.clone());
            let mut st = build_status(&room, &cfg, &board, &encoder, s, started);
            (st.camera, st.microphone) = crate::devices::status(&call_cfg.media, devices);
            st.district = district.as_ref().map(|d| d.status());
            st.screen = screen.as_ref().and_then(|s| s.kind()).map(String::from);
            st.muted = room.muted();
            st.volume_percent = volume.percent();
            st.tv = tv.as_ref().map(crate::tv::Tv::status);
            st.self_test = last_self_test.as_ref().map(|(r, _)| r.clone());
            if self_test_running.is_none() {
                for w in self_test_waiters.drain(..) {
                    let _ = w.send(st.clone());
                }
            }
            let _ = reply.send(st);
        }
    }
    tracing::info!("shutting down");
    if let Some(d) = district.as_ref() {
        d.agent.shutdown();
    }
    for c in calls.iter_mut() {
        c.stop();
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while calls.iter().any(|c| !c.is_finished()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in &calls {
        c.abort();
    }
    let _ = std::fs::remove_file(&cfg.socket);
    supervision.stopping();
    Ok(())
}

fn log_state(state: &State) {
    match state {
        State::Error { reason } => tracing::error!(state = state.name(), %reason, "room state"),
        State::Retrying {
            reason, attempt, ..
        } => {
            tracing::warn!(state = state.name(), %reason, attempt, "room state")
        }
        _ => tracing::info!(state = state.name(), "room state"),
    }
}

/// The TV is woken this long before a scheduled meeting starts (the room
/// joins it [`crate::district::EARLY_JOIN_S`] early).
const TV_WAKE_BEFORE_S: i64 = 120;
/// How long a self-test's result stays over the screen.
const SELF_TEST_SHOWN: Duration = Duration::from_secs(30);

/// How long the volume stays on the screen after Volume ±.
const TOAST_TIME: Duration = Duration::from_secs(3);

/// What the screen shows besides the room's state.
struct ScreenExtras<'a> {
    /// Home was pressed: the status screen.
    status_screen: bool,
    volume_percent: u8,
    tv: Option<&'a ctl::TvStatus>,
}

/// What the screen should show now.
fn screen_view(
    room: &Room,
    cfg: &Config,
    district: Option<&District>,
    s: &CallStatus,
    convened: Option<&(String, Instant)>,
    (camera, microphone): (
        Option<diemcau_media::DeviceStatus>,
        Option<diemcau_media::DeviceStatus>,
    ),
    extras: &ScreenExtras<'_>,
) -> diemcau_media::screen::ScreenState {
    use diemcau_media::DeviceState;
    let device_problem = [
        (camera, "Camera không dùng được / Camera not usable"),
        (microphone, "Micrô không dùng được / Microphone not usable"),
    ]
    .into_iter()
    .find_map(|(d, what)| {
        let d = d?;
        matches!(d.state, DeviceState::Absent | DeviceState::Error).then(|| {
            let why = d.error.unwrap_or_else(|| "not plugged in".into());
            format!("{what}: {why}")
        })
    });
    use diemcau_media::screen::LinkQuality;
    // The clock meetings start by (the district server's, once heard): the
    // countdown agrees with the join even if the board's clock is wrong.
    let now_unix_s = district.map(District::now_s).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let meeting_title = room
        .meeting()
        .and_then(|id| district?.meetings.get(id))
        .map(|m| m.title.clone());
    let next_meeting = district
        .and_then(|d| d.meetings.next(now_unix_s))
        .map(|m| (m.title.clone(), m.starts_at));
    let district_status = district.map(|d| d.status());
    let sent = s.send.packets_sent;
    let link = if sent == 0 {
        LinkQuality::Unknown
    } else {
        let lost = s.send.packets_lost.max(0) as f64;
        LinkQuality::assess(lost * 100.0 / (sent as f64 + lost), s.send.rtt_ms)
    };
    crate::screen::screen_state(&crate::screen::View {
        state: room.state(),
        last_error: room.last_error(),
        commune: &cfg.room_name,
        now_unix_s,
        utc_offset_min: cfg.utc_offset_min,
        meeting_title,
        convened: convened.map(|(t, at)| (t.clone(), at.elapsed().as_secs() as i64)),
        next_meeting,
        district: district_status.as_ref(),
        peers: &s.peers,
        link,
        muted: room.muted(),
        device_problem,
        status_screen: extras.status_screen,
        volume_percent: extras.volume_percent,
        tv: extras.tv,
    })
}

fn build_status(
    room: &Room,
    cfg: &Config,
    board: &str,
    encoder: &str,
    call: CallStatus,
    started: Instant,
) -> Status {
    let state = room.state();
    let reason = match state {
        State::Error { reason } | State::Retrying { reason, .. } => Some(reason.clone()),
        _ => None,
    };
    // Peers known to the room, with media numbers where the call has them.
    let peers = room
        .peers()
        .map(|p| {
            call.peers
                .iter()
                .find(|c| c.id == p.id)
                .cloned()
                .unwrap_or(ctl::PeerStatus {
                    id: p.id,
                    name: p.name.clone(),
                    media: Default::default(),
                    rtp: Default::default(),
                    bitrate_kbps: 0.0,
                    picture: Default::default(),
                    speaker_level_db: None,
                })
        })
        .collect();
    Status {
        state: state.name().to_string(),
        reason,
        last_error: room.last_error().map(str::to_string),
        room_name: cfg.room_name.clone(),
        conference_room: cfg.room_id,
        board: board.to_string(),
        encoder: encoder.to_string(),
        call: state.call().map(|c| c.0),
        meeting: room.meeting().map(str::to_string),
        district: None,
        peers,
        send: call.send,
        send_bitrate_kbps: call.send_bitrate_kbps,
        uptime_s: started.elapsed().as_secs(),
        adapt: call.adapt,
        camera: None,
        microphone: None,
        screen: None,
        muted: false,
        volume_percent: 0,
        tv: None,
        self_test: None,
    }
}

/// The room's link to the district server: the agent and the schedule.
struct District {
    /// The last self-test, sent with the heartbeats.
    self_test: Option<diemcau_agent::api::SelfTestReport>,
    agent: diemcau_agent::Agent,
    meetings: Meetings,
    problem: Option<String>,
    last_heartbeat: Option<Instant>,
    heartbeat_every: Duration,
}

async fn recv_key(
    keys: &mut Option<mpsc::Receiver<diemcau_control::keys::KeyEvent>>,
) -> Option<diemcau_control::keys::KeyEvent> {
    match keys {
        Some(k) => k.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_tv_key(tv: &mut Option<crate::tv::Tv>) -> Option<diemcau_control::keys::KeyEvent> {
    match tv {
        Some(t) => t.next_key().await,
        None => std::future::pending().await,
    }
}

async fn recv_gpio(gpio: &mut Option<hw::Gpio>) -> Option<Input> {
    match gpio {
        Some(g) => g.inputs.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_agent(
    rx: &mut Option<mpsc::Receiver<diemcau_agent::AgentEvent>>,
) -> Option<diemcau_agent::AgentEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The board's serial number: the devicetree's, else the machine id.
fn board_serial() -> String {
    for path in [
        "/proc/device-tree/serial-number",
        "/sys/class/dmi/id/product_serial",
        "/etc/machine-id",
    ] {
        if let Ok(s) = std::fs::read_to_string(path) {
            let s: String = s
                .trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(64)
                .collect();
            if !s.is_empty() {
                return s;
            }
        }
    }
    "unknown".into()
}

async fn start_agent(
    d: &crate::config::DistrictConfig,
    board: &str,
) -> (
    Option<District>,
    Option<mpsc::Receiver<diemcau_agent::AgentEvent>>,
) {
    let serial = d.serial.clone().unwrap_or_else(board_serial);
    let mut ac =
        diemcau_agent::AgentConfig::new(&d.state_dir, &d.provisioning_file, &serial, board);
    ac.versions
        .insert("diemcau".into(), env!("CARGO_PKG_VERSION").into());
    ac.heartbeat_interval = d.heartbeat_secs.map(Duration::from_secs);
    match diemcau_agent::Agent::start(ac).await {
        Ok((agent, rx)) => {
            tracing::info!(%serial, "district agent started");
            (
                Some(District {
                    self_test: None,
                    agent,
                    meetings: Meetings::default(),
                    problem: None,
                    last_heartbeat: None,
                    heartbeat_every: Duration::from_secs(d.heartbeat_secs.unwrap_or(5).min(5)),
                }),
                Some(rx),
            )
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            tracing::error!(error = %msg, "the district agent cannot start; the room works without the district server");
            (None, None)
        }
    }
}

impl District {
    fn now_s(&self) -> i64 {
        self.agent.server_now()
    }

    fn on_agent_event(&mut self, ev: diemcau_agent::AgentEvent) -> Vec<Input> {
        use diemcau_agent::AgentEvent as E;
        match ev {
            E::Schedule(ms) => {
                tracing::info!(meetings = ms.len(), "schedule");
                self.meetings.set_schedule(ms);
                vec![]
            }
            E::Convene(m) => {
                tracing::warn!(meeting = %m.title, "urgent meeting convened by the district");
                vec![self.meetings.convene(m)]
            }
            E::Revoked => {
                self.problem = Some("this device was revoked by the district".into());
                tracing::error!("device revoked by the district");
                vec![Input::Leave]
            }
            E::OpsReachable(ok) => {
                tracing::info!(reachable = ok, "district server");
                vec![]
            }
            E::EnrolmentRejected(reason) => {
                tracing::error!(%reason, "enrolment rejected");
                self.problem = Some(format!("enrolment rejected: {reason}"));
                vec![]
            }
        }
    }

    fn report_transition(&self, from: &str, to: &State, meeting: Option<&str>) {
        use diemcau_agent::api::DeviceEventKind as K;
        let (kind, msg) = match to {
            State::InCall { .. } => (K::Joined, None),
            State::Error { reason } => (K::JoinFailed, Some(reason.as_str())),
            State::Retrying { reason, .. } if from == "joining" => {
                (K::JoinFailed, Some(reason.as_str()))
            }
            State::Idle if from == "leaving" || from == "in_call" => (K::Left, None),
            _ => return,
        };
        self.agent.report_event(kind, meeting, msg);
    }

    fn heartbeat(&mut self, room: &Room, call: &CallStatus, started: Instant) {
        use diemcau_agent::api::{CallStats, DeviceState, Heartbeat};
        if self
            .last_heartbeat
            .is_some_and(|t| t.elapsed() < self.heartbeat_every)
        {
            return;
        }
        self.last_heartbeat = Some(Instant::now());
        let state = match room.state() {
            State::Idle => DeviceState::Idle,
            State::Joining { .. } | State::Retrying { .. } => DeviceState::Joining,
            State::InCall { .. } => DeviceState::InCall,
            State::Leaving { .. } => DeviceState::Leaving,
            State::Error { .. } => DeviceState::Error,
        };
        let fps = call
            .peers
            .iter()
            .map(|p| p.media.fps)
            .fold(0.0f64, f64::max);
        let call_stats = matches!(room.state(), State::InCall { .. }).then(|| CallStats {
            meeting_id: room.meeting().map(str::to_string),
            bitrate_kbps: call.send_bitrate_kbps.max(0.0) as u32,
            fps: fps as f32,
            packets_lost: call
                .peers
                .iter()
                .map(|p| p.rtp.packets_lost.max(0) as u64)
                .sum(),
            rtt_ms: call.send.rtt_ms.unwrap_or(0.0).max(0.0) as u32,
        });
        self.agent.report_heartbeat(Heartbeat {
            state,
            versions: Default::default(),
            uptime_s: started.elapsed().as_secs(),
            temperature_c: read_temperature(),
            link: Default::default(),
            call: call_stats,
            self_test: self.self_test.clone(),
        });
    }

    fn status(&self) -> crate::ctl::DistrictStatus {
        let now = self.now_s();
        let next = self.meetings.next(now);
        crate::ctl::DistrictStatus {
            enrolled: self.agent.device_id().is_some(),
            device_id: self.agent.device_id(),
            reachable: self.agent.is_reachable(),
            // Revoked or refused first; else why ops cannot be reached.
            problem: self
                .problem
                .clone()
                .or_else(|| self.agent.unreachable_reason()),
            meetings: self.agent.schedule().len(),
            next_meeting: next.map(|m| m.title.clone()),
            next_meeting_starts_at: next.map(|m| m.starts_at),
            pending_events: self.agent.pending_events(),
        }
    }
}

/// The SoC temperature, where the kernel reports one.
fn read_temperature() -> Option<f32> {
    let t = std::fs::read_to_string("/sys/class/thermal/thermal_zone0/temp").ok()?;
    t.trim().parse::<f32>().ok().map(|m| m / 1000.0)
}
