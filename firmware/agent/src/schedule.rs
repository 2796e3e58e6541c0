//! Which meeting a room should be in, as a pure function of the schedule and
//! the time (so the room's state machine and its tests own the clock).

use diemcau_ops_api::Meeting;

/// How early a room may join before a meeting's start, seconds.
pub const EARLY_JOIN_S: i64 = 0;

/// The meeting the room should be in at `now` (unix seconds): one whose
/// `[starts_at - EARLY_JOIN_S, ends_at)` contains `now`. When several do, an
/// urgent one wins, then the one that started last.
pub fn due_meeting(schedule: &[Meeting], now: i64) -> Option<&Meeting> {
    schedule
        .iter()
        .filter(|m| m.starts_at - EARLY_JOIN_S <= now && now < m.ends_at)
        .max_by_key(|m| (m.urgent, m.starts_at, m.id.as_str()))
}

/// The next meeting that starts after `now`, if any (for the idle screen).
pub fn next_meeting(schedule: &[Meeting], now: i64) -> Option<&Meeting> {
    schedule
        .iter()
        .filter(|m| m.starts_at > now)
        .min_by_key(|m| (m.starts_at, m.id.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use diemcau_ops_api::JanusRoom;

    fn m(id: &str, s: i64, e: i64, urgent: bool) -> Meeting {
        Meeting {
            id: id.into(),
            title: id.into(),
            starts_at: s,
            ends_at: e,
            janus: JanusRoom {
                ws_url: "ws://x".into(),
                room_id: 1,
                pin: None,
            },
            communes: vec![],
            urgent,
        }
    }

    #[test]
    fn picks_by_time_then_urgency() {
        let s = vec![
            m("a", 100, 200, false),
            m("b", 150, 300, false),
            m("u", 160, 170, true),
        ];
        assert_eq!(due_meeting(&s, 99), None);
        assert_eq!(due_meeting(&s, 100).unwrap().id, "a");
        assert_eq!(due_meeting(&s, 155).unwrap().id, "b");
        assert_eq!(due_meeting(&s, 165).unwrap().id, "u");
        assert_eq!(due_meeting(&s, 200).unwrap().id, "b");
        assert_eq!(due_meeting(&s, 300), None);
        assert_eq!(next_meeting(&s, 120).unwrap().id, "b");
    }
}
