//! The room's side of the district's schedule: which meeting to join when.
//!
//! [`Meetings`] is pure: it holds the schedule the agent delivered (from the
//! server, or from the cache when the server is unreachable) and, fed the
//! time, says when a meeting starts or ends. Each meeting is started once:
//! staff who leave a meeting early are not pulled back in by the next tick.

use std::collections::{BTreeMap, BTreeSet};

use diemcau_agent::api::Meeting;
use diemcau_core::Input;

/// A meeting starts this many seconds early, so the room is in when the
/// district opens.
pub const EARLY_JOIN_S: i64 = diemcau_agent::EARLY_JOIN_S;

#[derive(Debug, Default)]
pub struct Meetings {
    by_id: BTreeMap<String, Meeting>,
    started: BTreeSet<String>,
    ended: BTreeSet<String>,
}

impl Meetings {
    /// Replaces the schedule (urgent meetings already convened are kept).
    pub fn set_schedule(&mut self, meetings: Vec<Meeting>) {
        let urgent: Vec<Meeting> = self
            .by_id
            .values()
            .filter(|m| m.urgent && !meetings.iter().any(|n| n.id == m.id))
            .cloned()
            .collect();
        self.by_id = meetings
            .into_iter()
            .chain(urgent)
            .map(|m| (m.id.clone(), m))
            .collect();
    }

    /// An urgent meeting convened now: join at once.
    pub fn convene(&mut self, meeting: Meeting) -> Input {
        let id = meeting.id.clone();
        self.started.insert(id.clone());
        self.by_id.insert(id.clone(), meeting);
        Input::JoinMeeting { meeting: id }
    }

    pub fn get(&self, id: &str) -> Option<&Meeting> {
        self.by_id.get(id)
    }

    /// The next meeting that has not started, for the idle screen.
    pub fn next(&self, now_s: i64) -> Option<&Meeting> {
        self.by_id
            .values()
            .filter(|m| m.ends_at > now_s && !self.started.contains(&m.id))
            .min_by_key(|m| m.starts_at)
    }

    /// Inputs for the room at `now_s` (Unix seconds): meetings that just
    /// became due, meetings that just ended.
    pub fn tick(&mut self, now_s: i64) -> Vec<Input> {
        let mut out = Vec::new();
        for m in self.by_id.values() {
            let due = m.starts_at - EARLY_JOIN_S <= now_s && now_s < m.ends_at;
            if due && !self.started.contains(&m.id) {
                self.started.insert(m.id.clone());
                out.push(Input::JoinMeeting {
                    meeting: m.id.clone(),
                });
            }
            if now_s >= m.ends_at && self.started.contains(&m.id) && !self.ended.contains(&m.id) {
                self.ended.insert(m.id.clone());
                out.push(Input::MeetingEnded {
                    meeting: m.id.clone(),
                });
            }
        }
        // Forget meetings long over.
        let old: Vec<String> = self
            .by_id
            .values()
            .filter(|m| m.ends_at + 3600 < now_s)
            .map(|m| m.id.clone())
            .collect();
        for id in old {
            self.by_id.remove(&id);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diemcau_agent::api::JanusRoom;

    fn m(id: &str, start: i64, end: i64) -> Meeting {
        Meeting {
            id: id.into(),
            title: format!("Họp {id}"),
            starts_at: start,
            ends_at: end,
            janus: JanusRoom {
                ws_url: "ws://127.0.0.2:8188/".into(),
                room_id: 7,
                pin: None,
            },
            communes: vec![],
            urgent: false,
        }
    }

    #[test]
    fn a_meeting_is_started_once_and_ended_once() {
        let mut s = Meetings::default();
        s.set_schedule(vec![m("a", 1000, 2000)]);
        assert!(s.tick(900).is_empty());
        assert_eq!(
            s.tick(1000 - EARLY_JOIN_S),
            vec![Input::JoinMeeting {
                meeting: "a".into()
            }]
        );
        assert!(s.tick(1500).is_empty(), "not pulled back in after leaving");
        assert_eq!(
            s.tick(2000),
            vec![Input::MeetingEnded {
                meeting: "a".into()
            }]
        );
        assert!(s.tick(2001).is_empty());
    }

    #[test]
    fn a_device_started_mid_meeting_joins() {
        let mut s = Meetings::default();
        s.set_schedule(vec![m("a", 1000, 2000)]);
        assert_eq!(s.tick(1700).len(), 1);
    }

    #[test]
    fn a_meeting_over_before_we_saw_it_is_not_joined() {
        let mut s = Meetings::default();
        s.set_schedule(vec![m("a", 1000, 2000)]);
        assert!(s.tick(2500).is_empty());
    }

    #[test]
    fn convened_meetings_survive_a_schedule_refresh_and_are_not_rejoined() {
        let mut s = Meetings::default();
        let mut u = m("u", 0, 5000);
        u.urgent = true;
        assert_eq!(
            s.convene(u),
            Input::JoinMeeting {
                meeting: "u".into()
            }
        );
        s.set_schedule(vec![m("a", 3000, 4000)]);
        assert!(s.get("u").is_some());
        assert!(s.tick(100).is_empty());
        assert_eq!(s.next(100).map(|m| m.id.as_str()), Some("a"));
    }
}
