//! The pre-meeting self-test: camera, speaker and microphone, the district
//! server and Janus, each with a clear pass or fail reason.
//!
//! It runs by itself [`BEFORE_MEETING_S`] before each scheduled meeting
//! ([`due`]), on the remote's `selftest` key and on `diemcau ctl selftest`,
//! only while the room is idle (a call holds the devices). The result is
//! shown on the room screen ([`screen_text`]), kept for `ctl status` and
//! sent to the district in the next heartbeat (`Heartbeat::self_test`).

use std::time::{Duration, Instant};

pub use diemcau_agent::api::{SelfTestCheck, SelfTestReport};
use diemcau_media::{AudioOut, MediaSettings};

/// How long before a scheduled meeting the room tests itself.
pub const BEFORE_MEETING_S: i64 = 600;
/// Length of the camera capture.
const CAMERA_SECS: f64 = 1.0;
/// How long the district server and Janus get to answer.
const LINK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the self-test was started by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Remote,
    Ctl,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Remote => "remote",
            Trigger::Ctl => "ctl",
        }
    }
}

/// The meeting to test for now, if any: the next one starts within
/// [`BEFORE_MEETING_S`] and was not tested for yet.
pub fn due<'a>(
    next: Option<(&'a str, i64)>,
    now_s: i64,
    tested_for: Option<&str>,
) -> Option<&'a str> {
    let (id, starts_at) = next?;
    let soon = starts_at - now_s <= BEFORE_MEETING_S;
    (soon && tested_for != Some(id)).then_some(id)
}

fn check(name: &str, started: Instant, r: Result<String, String>) -> SelfTestCheck {
    let passed = r.is_ok();
    let detail = r.unwrap_or_else(|e| e);
    SelfTestCheck {
        name: name.into(),
        passed,
        detail: detail
            .chars()
            .filter(|c| !c.is_control())
            .take(500)
            .collect(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

/// The report from the checks.
pub fn report(
    trigger: Trigger,
    meeting_id: Option<String>,
    at: i64,
    checks: Vec<SelfTestCheck>,
    elapsed: Duration,
) -> SelfTestReport {
    SelfTestReport {
        at,
        passed: checks.iter().all(|c| c.passed),
        trigger: trigger.as_str().into(),
        meeting_id,
        checks,
        elapsed_ms: elapsed.as_millis() as u64,
    }
}

/// A report for a self-test that could not run, e.g. during a call.
pub fn refused(trigger: Trigger, at: i64, why: &str) -> SelfTestReport {
    let c = check("state", Instant::now(), Err(why.to_string()));
    report(trigger, None, at, vec![c], Duration::ZERO)
}

/// Runs every check: the devices one after the other (on a blocking
/// thread), the links meanwhile. `agent`: the district server, when the
/// room is provisioned for one.
pub async fn run(
    media: MediaSettings,
    janus_url: String,
    agent: Option<diemcau_agent::Agent>,
    trigger: Trigger,
    meeting_id: Option<String>,
    at: i64,
) -> SelfTestReport {
    let t = Instant::now();
    let devices = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let camera = check(
            "camera",
            t,
            diemcau_media::selftest::camera_check(media.camera.as_ref(), CAMERA_SECS),
        );
        let t = Instant::now();
        let speaker = match &media.audio_out {
            AudioOut::Sink(s) => Some(s),
            AudioOut::Discard => None,
        };
        let audio = check(
            "audio",
            t,
            diemcau_media::selftest::audio_check(speaker, media.microphone.as_ref()),
        );
        vec![camera, audio]
    });
    let ops = async {
        let agent = agent?;
        let t = Instant::now();
        let r = match agent.check_link().await {
            Ok((url, rtt)) => Ok(format!(
                "district server {url} answered in {} ms",
                rtt.as_millis()
            )),
            Err(e) => Err(format!("the district server is unreachable: {e}")),
        };
        Some(check("ops", t, r))
    };
    let janus = async {
        let t = Instant::now();
        let r = match diemcau_conference::janus::server_info(&janus_url, LINK_TIMEOUT).await {
            Ok(info) => Ok(format!(
                "{info} at {janus_url} answered in {} ms",
                t.elapsed().as_millis()
            )),
            Err(e) => Err(format!("Janus is unreachable: {}", crate::chain(&e))),
        };
        check("janus", t, r)
    };
    let (devices, ops, janus) = tokio::join!(devices, ops, janus);
    let mut checks = devices.unwrap_or_else(|e| {
        vec![check(
            "devices",
            Instant::now(),
            Err(format!("the device checks crashed: {e}")),
        )]
    });
    checks.extend(ops);
    checks.push(janus);
    report(trigger, meeting_id, at, checks, t.elapsed())
}

/// What the room screen shows of a report (one line: Vietnamese / English).
pub fn screen_text(r: &SelfTestReport) -> String {
    if r.passed {
        return "Tự kiểm tra: đạt / Self-test passed".into();
    }
    let failed: Vec<String> = r
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    format!("Tự kiểm tra: lỗi / Self-test failed: {}", failed.join("; "))
}

/// The report for `ctl`: a line a check.
pub fn render(r: &SelfTestReport) -> String {
    let mut out = format!(
        "self-test {} ({}, {} ms)\n",
        if r.passed { "passed" } else { "FAILED" },
        r.trigger,
        r.elapsed_ms
    );
    for c in &r.checks {
        out.push_str(&format!(
            "  {:<7} {} {} ({} ms)\n",
            c.name,
            if c.passed { "ok  " } else { "FAIL" },
            c.detail,
            c.elapsed_ms
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_once_per_meeting_within_ten_minutes() {
        let next = Some(("m1", 10_000));
        assert_eq!(due(next, 10_000 - 601, None), None);
        assert_eq!(due(next, 10_000 - 600, None), Some("m1"));
        assert_eq!(due(next, 10_000 - 10, None), Some("m1"));
        assert_eq!(due(next, 10_000 - 10, Some("m1")), None);
        assert_eq!(due(Some(("m2", 10_100)), 10_000, Some("m1")), Some("m2"));
        assert_eq!(due(None, 0, None), None);
    }

    #[test]
    fn report_fails_when_any_check_does_and_says_which() {
        let t = Instant::now();
        let checks = vec![
            check("camera", t, Ok("30 frames".into())),
            check("janus", t, Err("Janus is unreachable: refused".into())),
        ];
        let r = report(Trigger::Ctl, None, 5, checks, Duration::from_millis(1200));
        assert!(!r.passed);
        assert_eq!(r.trigger, "ctl");
        let text = screen_text(&r);
        assert!(text.contains("janus: Janus is unreachable"), "{text}");
        assert!(!text.contains("camera"), "{text}");
        assert!(render(&r).contains("janus   FAIL"), "{}", render(&r));
        let ok = report(
            Trigger::Remote,
            None,
            5,
            vec![check("camera", t, Ok("fine".into()))],
            Duration::ZERO,
        );
        assert!(ok.passed && screen_text(&ok).contains("passed"));
        let r = refused(Trigger::Remote, 5, "the room is in a call");
        assert!(!r.passed && r.checks[0].detail.contains("in a call"));
        // Control characters never reach the wire.
        let c = check("x", t, Err("a\nb".into()));
        assert_eq!(c.detail, "ab");
    }
}
