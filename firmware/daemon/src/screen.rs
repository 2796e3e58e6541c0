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
use diemcau_media::screen::{LinkQuality, Screen, ScreenSink, ScreenSpec, ScreenState};

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

/// The screen for `v`.
pub fn screen_state(v: &View<'_>) -> ScreenState {
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
        })
    }

    /// Shows `state` if it changed, and writes the PNG when one is due.
    pub fn update(&mut self, state: ScreenState) {
        if self.shown.as_ref() != Some(&state) {
            if let Err(e) = self.screen.show(&state) {
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
        }
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
