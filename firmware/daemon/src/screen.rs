//! The room screen as the daemon drives it: which screen to show, from the
//! room's state, the district schedule and the call, and where it goes (the
//! board's display through `diemcau-media`'s [`Screen`] pipeline, or, on a
//! machine without one, a PNG file rewritten atomically every few seconds).
//!
//! [`screen_state`] is a pure function of a [`View`], unit-tested here; the
//! [`RoomScreen`] only applies it once a second and on every state change.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use diemcau_core::State;
use diemcau_media::MediaError;
use diemcau_media::screen::{
    LinkQuality, Scene, Screen, ScreenSink, ScreenSpec, ScreenState, StatusRow,
};

use crate::ctl::{DistrictStatus, PeerStatus};

/// How long the incoming-meeting screen stays up after "convene now" (the
/// room joins at once, in parallel; the screen tells the staff why the TV
/// came on, then gives way to the call).
pub const INCOMING_SECS: i64 = 3;

/// From this attempt on, a room that keeps failing to join shows why
/// instead of "joining" (one failed attempt is often a blip: a dropped call
/// coming back).
pub const REASON_FROM_ATTEMPT: u32 = 3;

/// Everything the screen depends on, gathered by the run loop.
#[derive(Debug, Clone)]
pub struct View<'a> {
    pub state: &'a State,
    /// The room's most recent failure (kept while it tries again).
    pub last_error: Option<&'a str>,
    pub commune: &'a str,
    /// Wall clock, Unix seconds.
    pub now_unix_s: i64,
    /// The local time zone's offset (Vietnam: +7 h, no daylight saving).
    pub utc_offset_min: i32,
    /// Title of the district meeting being joined or held.
    pub meeting_title: Option<String>,
    /// An urgent meeting convened `.1` seconds ago, titled `.0`.
    pub convened: Option<(String, i64)>,
    /// The next scheduled meeting: title and start (Unix seconds).
    pub next_meeting: Option<(String, i64)>,
    /// `None` for a room without a district server.
    pub district: Option<&'a DistrictStatus>,
    pub peers: &'a [PeerStatus],
    pub link: LinkQuality,
    pub muted: bool,
    /// A camera or microphone that is missing or unusable, as staff should
    /// read it: shown instead of the idle screen (in a call the far end
    /// gets the slate, and `ctl status` says the same).
    pub device_problem: Option<String>,
    /// The status screen is asked for (the remote's Home key).
    pub status_screen: bool,
    /// The speaker volume, percent.
    pub volume_percent: u8,
    /// The TV over HDMI-CEC, when the room has one.
    pub tv: Option<&'a crate::ctl::TvStatus>,
}

/// "HH:MM" of `unix_s` in the zone `offset_min` minutes east of UTC.
pub fn clock_text(unix_s: i64, offset_min: i32) -> String {
    let local = unix_s + i64::from(offset_min) * 60;
    let minutes = local.rem_euclid(86_400) / 60;
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// What staff should do about a room error, bilingual.
fn advice(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("pin")
        || r.contains("secret")
        || r.contains("no such room")
        || r.contains("name or service not known")
    {
        "Báo cán bộ CNTT huyện / Tell the district IT office"
    } else if r.contains("camera") || r.contains("microphone") {
        "Kiểm tra dây camera và loa / Check the camera and speaker cables"
    } else {
        "Kiểm tra cáp mạng, rồi bấm OK / Check the network cable, then press OK"
    }
}

/// The rows of the status screen: network, provisioning, link, TV,
/// speaker, version.
pub fn status_rows(v: &View<'_>) -> Vec<StatusRow> {
    let row = |label: &str, value: String, ok| StatusRow {
        label: label.into(),
        value,
        ok,
    };
    let mut rows = Vec::new();
    match v.district {
        None => {
            rows.push(row(
                "Mạng / Network",
                "Không dùng máy chủ huyện / No district server configured".into(),
                true,
            ));
        }
        Some(d) => {
            let net = match (&d.problem, d.reachable) {
                (_, true) => (
                    "Kết nối với máy chủ huyện / Connected to the district server".to_string(),
                    true,
                ),
                (Some(p), false) => (
                    format!("Mất kết nối với huyện / District server unreachable: {p}"),
                    false,
                ),
                (None, false) => (
                    "Đang kết nối với huyện… / Reaching the district server…".to_string(),
                    false,
                ),
            };
            rows.push(row("Mạng / Network", net.0, net.1));
            let prov = match (&d.device_id, d.enrolled) {
                (Some(id), true) => (format!("Đã đăng ký / Enrolled as {id}"), true),
                (_, true) => ("Đã đăng ký / Enrolled".into(), true),
                (_, false) => (
                    "Chưa đăng ký: gọi huyện / Not enrolled: call the district".into(),
                    false,
                ),
            };
            rows.push(row("Cài đặt / Provisioning", prov.0, prov.1));
            let next = match (&d.next_meeting, d.next_meeting_starts_at) {
                (Some(t), Some(at)) => format!("{t}, {}", clock_text(at, v.utc_offset_min)),
                _ => "Chưa có / None scheduled".into(),
            };
            rows.push(row(
                "Lịch họp / Schedule",
                format!("{} cuộc họp / {} meetings; {next}", d.meetings, d.meetings),
                true,
            ));
        }
    }
    let in_call = matches!(v.state, State::InCall { .. });
    let link = match (in_call, v.link) {
        (false, _) => ("Không trong cuộc họp / Not in a call".into(), true),
        (true, LinkQuality::Good) => ("Tốt / Good".into(), true),
        (true, LinkQuality::Fair) => ("Trung bình / Fair".into(), true),
        (true, LinkQuality::Poor) => ("Kém / Poor".into(), false),
        (true, LinkQuality::Unknown) => ("Đang đo… / Measuring…".into(), true),
    };
    rows.push(row("Đường truyền / Link", link.0, link.1));
    if let Some(tv) = v.tv {
        let value = if tv.connected {
            format!(
                "HDMI-CEC {} ({}) / HDMI-CEC {} ({})",
                tv.physical_address.as_deref().unwrap_or("-"),
                if tv.active_source {
                    "đang hiển thị"
                } else {
                    "chờ"
                },
                tv.physical_address.as_deref().unwrap_or("-"),
                if tv.active_source {
                    "showing the room"
                } else {
                    "standing by"
                },
            )
        } else {
            format!(
                "Không điều khiển được tivi / TV not reachable: {}",
                tv.problem.as_deref().unwrap_or(&tv.device)
            )
        };
        rows.push(row("Tivi / TV", value, tv.connected));
    }
    rows.push(row(
        "Loa / Speaker",
        format!("{} %", v.volume_percent),
        v.volume_percent > 0,
    ));
    rows.push(row(
        "Phiên bản / Version",
        format!("diemcau {}", env!("CARGO_PKG_VERSION")),
        true,
    ));
    rows
}

/// The volume message shown for a few seconds after Volume ±.
pub fn volume_toast(percent: u8) -> String {
    if percent == 0 {
        "Đã tắt loa / Speaker off".into()
    } else {
        format!("Âm lượng {percent} % / Volume {percent} %")
    }
}

/// The screen for `v`.
pub fn screen_state(v: &View<'_>) -> ScreenState {
    if v.status_screen {
        return ScreenState::Status {
            commune: v.commune.to_string(),
            rows: status_rows(v),
        };
    }
    if let Some((title, ago)) = &v.convened
        && *ago < INCOMING_SECS
        && !matches!(v.state, State::Error { .. })
    {
        return ScreenState::Incoming {
            title: title.clone(),
            seconds_to_join: INCOMING_SECS - ago,
        };
    }
    let meeting = || {
        v.meeting_title
            .clone()
            .unwrap_or_else(|| "Hội nghị trực tuyến / Online meeting".into())
    };
    let retrying = |attempt: u32, reason: &str| ScreenState::Error {
        reason: format!("Đang thử lại (lần {attempt}) / Retrying (attempt {attempt}): {reason}"),
        advice: advice(reason).into(),
    };
    match v.state {
        State::Retrying {
            attempt, reason, ..
        } if *attempt >= REASON_FROM_ATTEMPT => retrying(*attempt, reason),
        // Between two failed attempts the screen keeps saying why.
        State::Joining { attempt, .. } if *attempt >= REASON_FROM_ATTEMPT => match v.last_error {
            Some(reason) => retrying(*attempt, reason),
            None => ScreenState::Joining {
                commune: v.commune.to_string(),
                meeting: meeting(),
            },
        },
        State::Joining { .. } | State::Retrying { .. } => ScreenState::Joining {
            commune: v.commune.to_string(),
            meeting: meeting(),
        },
        State::InCall { .. } => {
            // The district opens the meeting, so its room is the first
            // publisher: the lowest feed id goes large.
            let mut peers: Vec<(u64, String)> =
                v.peers.iter().map(|p| (p.id, p.name.clone())).collect();
            peers.sort();
            let mut it = peers.into_iter();
            ScreenState::InCall {
                large: it.next(),
                strip: it.collect(),
                muted: v.muted,
                link_quality: v.link,
            }
        }
        State::Error { reason } => ScreenState::Error {
            reason: format!("Không vào được hội nghị / Could not join: {reason}"),
            advice: advice(reason).into(),
        },
        State::Idle | State::Leaving { .. } if v.device_problem.is_some() => ScreenState::Error {
            reason: v.device_problem.clone().unwrap_or_default(),
            advice: "Kiểm tra dây camera và loa; vẫn họp được bằng tiếng / Check the camera and speaker cables; calls still work with sound".into(),
        },
        State::Idle | State::Leaving { .. } => ScreenState::Idle {
            commune: v.commune.to_string(),
            clock: clock_text(v.now_unix_s, v.utc_offset_min),
            next_meeting: v
                .next_meeting
                .as_ref()
                .map(|(t, start)| (t.clone(), start - v.now_unix_s)),
            network_ok: v
                .district
                .is_none_or(|d| d.reachable || d.problem.is_none()),
            provisioned: v.district.is_none_or(|d| d.enrolled),
        },
    }
}

/// A short name of a screen, for `ctl status`.
pub fn kind(state: &ScreenState) -> &'static str {
    match state {
        ScreenState::Idle { .. } => "idle",
        ScreenState::Joining { .. } => "joining",
        ScreenState::Incoming { .. } => "incoming",
        ScreenState::InCall { .. } => "in_call",
        ScreenState::Error { .. } => "error",
        ScreenState::Status { .. } => "status",
    }
}

/// Where the screen goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The board's display sink (`kmssink`, `autovideosink`...).
    Display(String),
    /// No display: the screen is written to this PNG file every `every`.
    Png { path: PathBuf, every: Duration },
}

/// The running room screen.
pub struct RoomScreen {
    screen: Screen,
    png: Option<(PathBuf, Duration)>,
    last_png: Option<Instant>,
    shown: Option<ScreenState>,
    toast: Option<String>,
}

impl RoomScreen {
    pub fn start(output: Output) -> Result<Self, MediaError> {
        let (sink, png) = match output {
            Output::Display(fragment) => (ScreenSink::Element(fragment), None),
            Output::Png { path, every } => (ScreenSink::AppSink, Some((path, every))),
        };
        let screen = Screen::start(ScreenSpec::hd(sink))?;
        Ok(RoomScreen {
            screen,
            png,
            last_png: None,
            shown: None,
            toast: None,
        })
    }

    /// Shows `state` (with `toast` over it) if either changed, and writes
    /// the PNG when one is due.
    pub fn update(&mut self, state: ScreenState, toast: Option<String>) {
        if self.shown.as_ref() != Some(&state) || self.toast != toast {
            let spec = self.screen.spec();
            let mut scene = Scene::layout(&state, spec.width, spec.height);
            if let Some(t) = &toast {
                scene = scene.with_toast(t, spec.height);
            }
            self.toast = toast;
            if let Err(e) = self.screen.apply(&scene) {
                tracing::warn!(error = %e, "screen not updated");
            }
            if self.shown.as_ref().map(kind) != Some(kind(&state)) {
                tracing::info!(screen = kind(&state), "screen");
            }
            self.shown = Some(state);
        }
        if let Err(e) = self.screen.health() {
            tracing::warn!(error = %e, "screen pipeline");
        }
        let Some((path, every)) = &self.png else {
            return;
        };
        if self.last_png.is_some_and(|t| t.elapsed() < *every) {
            return;
        }
        self.last_png = Some(Instant::now());
        let written = self
            .screen
            .snapshot()
            .and_then(|f| f.to_png())
            .map_err(|e| e.to_string())
            .and_then(|png| write_atomically(path, &png).map_err(|e| e.to_string()));
        if let Err(e) = written {
            tracing::debug!(error = %e, path = %path.display(), "screen PNG not written");
        }
    }

    /// The screen shown now.
    pub fn kind(&self) -> Option<&'static str> {
        self.shown.as_ref().map(kind)
    }
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("png.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diemcau_core::CallId;

    fn view(state: &State) -> View<'_> {
        View {
            state,
            last_error: None,
            commune: "Điểm cầu xã Tiền Phong",
            now_unix_s: 1_796_000_000,
            utc_offset_min: 420,
            meeting_title: None,
            convened: None,
            next_meeting: None,
            district: None,
            peers: &[],
            link: LinkQuality::Unknown,
            muted: false,
            device_problem: None,
            status_screen: false,
            volume_percent: 80,
            tv: None,
        }
    }

    #[test]
    fn home_shows_the_status_screen_over_any_state() {
        let district = DistrictStatus {
            enrolled: true,
            device_id: Some("dev-42".into()),
            reachable: false,
            problem: Some("connection refused".into()),
            meetings: 2,
            next_meeting: Some("Họp giao ban".into()),
            next_meeting_starts_at: Some(1_796_083_200),
            pending_events: 0,
        };
        let tv = crate::ctl::TvStatus {
            device: "/dev/cec0".into(),
            connected: true,
            logical_address: Some(4),
            physical_address: Some("1.0.0.0".into()),
            active_source: true,
            problem: None,
        };
        let in_call = State::InCall { call: CallId(1) };
        for state in [State::Idle, in_call] {
            let mut v = view(&state);
            v.status_screen = true;
            v.district = Some(&district);
            v.tv = Some(&tv);
            v.volume_percent = 60;
            v.link = LinkQuality::Poor;
            let ScreenState::Status { commune, rows } = screen_state(&v) else {
                panic!("status screen");
            };
            assert_eq!(commune, "Điểm cầu xã Tiền Phong");
            let find = |label: &str| {
                rows.iter()
                    .find(|r| r.label.contains(label))
                    .unwrap_or_else(|| panic!("{label} row in {rows:?}"))
            };
            let net = find("Network");
            assert!(
                !net.ok && net.value.contains("connection refused"),
                "{net:?}"
            );
            let prov = find("Provisioning");
            assert!(prov.ok && prov.value.contains("dev-42"), "{prov:?}");
            assert!(find("Schedule").value.contains("07:00"));
            let link = find("Link");
            assert_eq!(link.ok, !matches!(state, State::InCall { .. }), "{link:?}");
            assert!(find("TV").value.contains("1.0.0.0"));
            assert_eq!(find("Speaker").value, "60 %");
            assert!(find("Version").value.contains(env!("CARGO_PKG_VERSION")));
        }
        let mut v = view(&State::Idle);
        v.status_screen = true;
        assert_eq!(kind(&screen_state(&v)), "status");
        assert!(status_rows(&v)[0].value.contains("No district server"));
        assert_eq!(volume_toast(60), "Âm lượng 60 % / Volume 60 %");
        assert!(volume_toast(0).contains("Speaker off"));
    }

    #[test]
    fn a_device_problem_replaces_the_idle_screen() {
        let mut v = view(&State::Idle);
        v.device_problem = Some("Camera không dùng được / Camera not usable: no format".into());
        let ScreenState::Error { reason, advice } = screen_state(&v) else {
            panic!("error screen");
        };
        assert!(reason.contains("no format"), "{reason}");
        assert!(advice.contains("camera"), "{advice}");
        let in_call = State::InCall { call: CallId(1) };
        let mut v = view(&in_call);
        v.device_problem = Some("x".into());
        assert_eq!(kind(&screen_state(&v)), "in_call");
    }

    #[test]
    fn clock_is_local_time() {
        // 2026-12-01T00:00:00Z is 07:00 in Hà Nội.
        assert_eq!(clock_text(1_796_083_200, 420), "07:00");
        assert_eq!(clock_text(1_796_083_200 + 17 * 3600 + 5 * 60, 420), "00:05");
        assert_eq!(clock_text(59, 0), "00:00");
        assert_eq!(clock_text(-60, 0), "23:59");
    }

    #[test]
    fn idle_shows_the_next_meeting_countdown_and_district_status() {
        let d = DistrictStatus {
            enrolled: false,
            reachable: false,
            problem: Some("no route".into()),
            ..Default::default()
        };
        let mut v = view(&State::Idle);
        v.next_meeting = Some(("Họp phòng chống lũ".into(), v.now_unix_s + 600));
        v.district = Some(&d);
        let ScreenState::Idle {
            next_meeting,
            network_ok,
            provisioned,
            ..
        } = screen_state(&v)
        else {
            panic!("idle");
        };
        assert_eq!(next_meeting, Some(("Họp phòng chống lũ".into(), 600)));
        assert!(!network_ok && !provisioned);
    }

    #[test]
    fn convene_shows_incoming_until_in_call() {
        let joining = State::Joining {
            call: CallId(1),
            attempt: 1,
        };
        let mut v = view(&joining);
        v.convened = Some(("Họp khẩn: lũ quét".into(), 1));
        assert_eq!(
            screen_state(&v),
            ScreenState::Incoming {
                title: "Họp khẩn: lũ quét".into(),
                seconds_to_join: 2
            }
        );
        v.convened = Some(("Họp khẩn: lũ quét".into(), 5));
        assert_eq!(kind(&screen_state(&v)), "joining");
        // Joined within the first seconds: the alert stays up its 3 s.
        let in_call = State::InCall { call: CallId(1) };
        let mut v = view(&in_call);
        v.convened = Some(("x".into(), 0));
        assert_eq!(kind(&screen_state(&v)), "incoming");
        v.convened = Some(("x".into(), 3));
        assert_eq!(kind(&screen_state(&v)), "in_call");
    }

    #[test]
    fn in_call_puts_the_first_publisher_large() {
        let in_call = State::InCall { call: CallId(1) };
        let peers = [
            PeerStatus {
                id: 9,
                name: "Xã B".into(),
                ..Default::default()
            },
            PeerStatus {
                id: 3,
                name: "Huyện".into(),
                ..Default::default()
            },
        ];
        let mut v = view(&in_call);
        v.peers = &peers;
        v.muted = true;
        let ScreenState::InCall {
            large,
            strip,
            muted,
            ..
        } = screen_state(&v)
        else {
            panic!("in call");
        };
        assert_eq!(large, Some((3, "Huyện".into())));
        assert_eq!(strip, vec![(9, "Xã B".into())]);
        assert!(muted);
    }

    #[test]
    fn a_room_that_keeps_failing_says_why() {
        const WHY: &str = "cannot connect to the conference server at ws://janus.huyen.example:8188/: IO error: failed to lookup address information: Name or service not known";
        let first = State::Retrying {
            attempt: 2,
            at: 0,
            reason: WHY.into(),
        };
        assert_eq!(kind(&screen_state(&view(&first))), "joining", "one blip");
        let again = State::Retrying {
            attempt: REASON_FROM_ATTEMPT,
            at: 0,
            reason: WHY.into(),
        };
        let ScreenState::Error { reason, advice } = screen_state(&view(&again)) else {
            panic!("error screen");
        };
        assert!(reason.contains("Retrying (attempt 3)"), "{reason}");
        assert!(reason.contains("lookup address information"), "{reason}");
        assert!(
            advice.contains("district IT"),
            "a name is the district's: {advice}"
        );
        // The short joining attempt in between keeps the reason up.
        let joining = State::Joining {
            call: CallId(4),
            attempt: REASON_FROM_ATTEMPT,
        };
        let mut v = view(&joining);
        v.last_error = Some(WHY);
        assert_eq!(screen_state(&v), screen_state(&view(&again)));
        v.last_error = None;
        assert_eq!(kind(&screen_state(&v)), "joining");
        let early = State::Joining {
            call: CallId(2),
            attempt: 2,
        };
        let mut v = view(&early);
        v.last_error = Some(WHY);
        assert_eq!(kind(&screen_state(&v)), "joining");
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = State::Error {
            reason: "wrong PIN".into(),
        };
        let ScreenState::Error { reason, advice } = screen_state(&view(&e)) else {
            panic!("error");
        };
        assert!(reason.contains("wrong PIN"));
        assert!(advice.contains("district IT"));
    }
}
