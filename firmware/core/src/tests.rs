use super::*;

fn room() -> Room {
    Room::new(Timing::default(), 42)
}

fn drain(r: &mut Room) -> Vec<Output> {
    std::iter::from_fn(|| r.poll_output()).collect()
}

fn conf(r: &mut Room, now: Millis, call: CallId, event: ConferenceEvent) -> Vec<Output> {
    r.handle_input(now, Input::Conference { call, event });
    drain(r)
}

fn joined_room() -> (Room, CallId) {
    let mut r = room();
    r.handle_input(0, Input::Join);
    drain(&mut r);
    let call = r.state().call().expect("joining has a call");
    conf(&mut r, 100, call, ConferenceEvent::Joined);
    assert_eq!(r.state(), &State::InCall { call });
    (r, call)
}

#[test]
fn idle_join_starts_a_call() {
    let mut r = room();
    r.handle_input(0, Input::Join);
    let out = drain(&mut r);
    let call = CallId(1);
    assert_eq!(
        out,
        vec![
            Output::StartCall {
                call,
                meeting: None
            },
            Output::StateChanged(State::Joining { call, attempt: 1 })
        ]
    );
    assert_eq!(r.poll_timeout(), Some(Timing::default().join_timeout));
}

#[test]
fn joined_goes_in_call_and_clears_deadline() {
    let (r, _) = joined_room();
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(r.state().name(), "in_call");
}

#[test]
fn key_press_while_joining_is_ignored() {
    let mut r = room();
    r.handle_input(0, Input::Join);
    drain(&mut r);
    r.handle_input(10, Input::Join);
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.state().name(), "joining");
}

#[test]
fn toggle_while_joining_leaves() {
    let mut r = room();
    r.handle_input(0, Input::Toggle);
    drain(&mut r);
    r.handle_input(10, Input::Toggle);
    let call = CallId(1);
    assert_eq!(
        drain(&mut r),
        vec![
            Output::EndCall { call },
            Output::StateChanged(State::Leaving { call })
        ]
    );
}

#[test]
fn leave_while_joining_then_left_goes_idle() {
    let mut r = room();
    r.handle_input(0, Input::Join);
    drain(&mut r);
    r.handle_input(5, Input::Leave);
    assert_eq!(r.state().name(), "leaving");
    drain(&mut r);
    let out = conf(&mut r, 50, CallId(1), ConferenceEvent::Left);
    assert_eq!(out, vec![Output::StateChanged(State::Idle)]);
}

#[test]
fn joined_arriving_after_leave_is_ignored() {
    let mut r = room();
    r.handle_input(0, Input::Join);
    drain(&mut r);
    r.handle_input(5, Input::Leave);
    drain(&mut r);
    assert!(conf(&mut r, 6, CallId(1), ConferenceEvent::Joined).is_empty());
    assert_eq!(r.state().name(), "leaving");
}

#[test]
fn leave_times_out_without_confirmation() {
    let (mut r, _) = joined_room();
    r.handle_input(1_000, Input::Leave);
    drain(&mut r);
    r.handle_input(1_000 + Timing::default().leave_timeout - 1, Input::Tick);
    assert_eq!(r.state().name(), "leaving");
    r.handle_input(1_000 + Timing::default().leave_timeout, Input::Tick);
    assert_eq!(r.state(), &State::Idle);
}

#[test]
fn join_while_leaving_rejoins_after_left() {
    let (mut r, call) = joined_room();
    r.handle_input(1_000, Input::Leave);
    drain(&mut r);
    r.handle_input(1_010, Input::Join);
    assert!(drain(&mut r).is_empty());
    let out = conf(&mut r, 1_020, call, ConferenceEvent::Left);
    let next = CallId(call.0 + 1);
    assert_eq!(
        out[0],
        Output::StartCall {
            call: next,
            meeting: None
        }
    );
}

#[test]
fn in_call_leave_ends_call() {
    let (mut r, call) = joined_room();
    r.handle_input(500, Input::Leave);
    assert_eq!(
        drain(&mut r),
        vec![
            Output::EndCall { call },
            Output::StateChanged(State::Leaving { call })
        ]
    );
}

#[test]
fn conference_failure_retries_with_growing_backoff_then_succeeds() {
    let mut r = room();
    r.handle_input(0, Input::Join);
    drain(&mut r);
    let mut now = 0;
    let mut delays = vec![];
    for attempt in 1..=6u32 {
        let call = r.state().call().expect("call");
        assert_eq!(
            r.state(),
            &State::Joining { call, attempt },
            "attempt {attempt}"
        );
        let out = conf(
            &mut r,
            now,
            call,
            ConferenceEvent::Failed {
                reason: "connection refused".into(),
                retryable: true,
            },
        );
        assert_eq!(out[0], Output::EndCall { call });
        let State::Retrying { at, .. } = r.state().clone() else {
            panic!("not retrying: {:?}", r.state());
        };
        delays.push(at - now);
        // Nothing happens before the deadline.
        r.handle_input(at - 1, Input::Tick);
        assert_eq!(r.state().name(), "retrying");
        now = at;
        r.handle_input(now, Input::Tick);
        let out = drain(&mut r);
        assert!(matches!(out[0], Output::StartCall { .. }), "{out:?}");
    }
    let t = Timing::default();
    for (i, d) in delays.iter().enumerate() {
        assert!(*d >= t.backoff_initial, "delay {i} = {d}");
        assert!(*d <= t.backoff_max + t.backoff_max / 4, "delay {i} = {d}");
    }
    assert!(delays[3] > delays[0], "{delays:?}");
    let call = r.state().call().expect("call");
    conf(&mut r, now + 10, call, ConferenceEvent::Joined);
    assert_eq!(r.state().name(), "in_call");
    assert_eq!(r.last_error(), Some("connection refused"));
}

#[test]
fn wrong_pin_is_an_error_not_a_retry_and_join_works_again() {
    let mut r = room();
    r.handle_input(0, Input::Join);
    drain(&mut r);
    let out = conf(
        &mut r,
        10,
        CallId(1),
        ConferenceEvent::Failed {
            reason: "wrong PIN".into(),
            retryable: false,
        },
    );
    assert_eq!(
        out,
        vec![
            Output::EndCall { call: CallId(1) },
            Output::StateChanged(State::Error {
                reason: "wrong PIN".into()
            })
        ]
    );
    assert_eq!(r.poll_timeout(), None);
    r.handle_input(20, Input::Join);
    assert_eq!(
        drain(&mut r)[0],
        Output::StartCall {
            call: CallId(2),
            meeting: None
        },
        "a new join is accepted after an error"
    );
}

#[test]
fn lost_call_rejoins_by_itself() {
    let (mut r, call) = joined_room();
    conf(
        &mut r,
        1_000,
        call,
        ConferenceEvent::PeerJoined {
            id: 7,
            name: "Xã Tiền Phong".into(),
        },
    );
    assert_eq!(r.peers().count(), 1);
    let out = conf(
        &mut r,
        2_000,
        call,
        ConferenceEvent::Lost {
            reason: "janus went away".into(),
        },
    );
    assert_eq!(out[0], Output::EndCall { call });
    assert_eq!(r.peers().count(), 0);
    let at = r.poll_timeout().expect("retry deadline");
    assert!(at - 2_000 <= 1_000, "first retry is quick: {}", at - 2_000);
    r.handle_input(at, Input::Tick);
    let out = drain(&mut r);
    let next = CallId(call.0 + 1);
    assert_eq!(
        out[0],
        Output::StartCall {
            call: next,
            meeting: None
        }
    );
    conf(&mut r, at + 50, next, ConferenceEvent::Joined);
    assert_eq!(r.state(), &State::InCall { call: next });
}

#[test]
fn join_timeout_retries() {
    let mut r = room();
    r.handle_input(0, Input::Join);
    drain(&mut r);
    r.handle_input(Timing::default().join_timeout, Input::Tick);
    let out = drain(&mut r);
    assert_eq!(out[0], Output::EndCall { call: CallId(1) });
    assert_eq!(r.state().name(), "retrying");
}

#[test]
fn leave_while_retrying_goes_idle_and_stops_retrying() {
    let (mut r, call) = joined_room();
    conf(
        &mut r,
        1_000,
        call,
        ConferenceEvent::Lost { reason: "x".into() },
    );
    r.handle_input(1_001, Input::Leave);
    assert_eq!(r.state(), &State::Idle);
    assert_eq!(r.poll_timeout(), None);
    r.handle_input(100_000, Input::Tick);
    assert!(
        drain(&mut r)
            .iter()
            .all(|o| !matches!(o, Output::StartCall { .. }))
    );
}

#[test]
fn join_while_retrying_skips_the_wait() {
    let (mut r, call) = joined_room();
    conf(
        &mut r,
        1_000,
        call,
        ConferenceEvent::Lost { reason: "x".into() },
    );
    r.handle_input(1_001, Input::Join);
    assert!(matches!(
        drain(&mut r)[0],
        Output::StartCall {
            call: CallId(2),
            ..
        }
    ));
}

#[test]
fn stale_events_of_old_calls_are_ignored() {
    let (mut r, call) = joined_room();
    conf(
        &mut r,
        1_000,
        call,
        ConferenceEvent::Lost { reason: "x".into() },
    );
    let at = r.poll_timeout().expect("deadline");
    r.handle_input(at, Input::Tick);
    drain(&mut r);
    // The old call reports again: nothing changes.
    assert!(
        conf(
            &mut r,
            at + 1,
            call,
            ConferenceEvent::Failed {
                reason: "late".into(),
                retryable: false
            }
        )
        .is_empty()
    );
    assert_eq!(r.state().name(), "joining");
}

#[test]
fn peers_come_and_go() {
    let (mut r, call) = joined_room();
    for (id, name) in [(1, "A"), (2, "B")] {
        conf(
            &mut r,
            200,
            call,
            ConferenceEvent::PeerJoined {
                id,
                name: name.into(),
            },
        );
    }
    conf(&mut r, 300, call, ConferenceEvent::PeerLeft { id: 1 });
    let names: Vec<_> = r.peers().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["B"]);
}

#[test]
fn idle_leave_and_tick_do_nothing() {
    let mut r = room();
    r.handle_input(0, Input::Leave);
    r.handle_input(10, Input::Tick);
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.state(), &State::Idle);
}

#[test]
fn jitter_differs_between_rooms() {
    let mut ats = std::collections::BTreeSet::new();
    for seed in 0..20 {
        let mut r = Room::new(Timing::default(), seed * 7919);
        r.handle_input(0, Input::Join);
        drain(&mut r);
        conf(
            &mut r,
            0,
            CallId(1),
            ConferenceEvent::Lost { reason: "x".into() },
        );
        ats.insert(r.poll_timeout());
    }
    assert!(ats.len() > 5, "{ats:?}");
}

fn meeting(id: &str) -> Input {
    Input::JoinMeeting { meeting: id.into() }
}

#[test]
fn a_due_meeting_is_joined_from_idle_with_its_id() {
    let mut r = room();
    r.handle_input(0, meeting("m1"));
    assert_eq!(
        drain(&mut r)[0],
        Output::StartCall {
            call: CallId(1),
            meeting: Some("m1".into())
        }
    );
    assert_eq!(r.meeting(), Some("m1"));
    // Being told again while joining changes nothing.
    r.handle_input(10, meeting("m1"));
    assert!(drain(&mut r).is_empty());
}

#[test]
fn an_urgent_meeting_takes_the_room_out_of_another_call() {
    let (mut r, call) = joined_room();
    r.handle_input(1_000, meeting("urgent"));
    let out = drain(&mut r);
    assert_eq!(out[0], Output::EndCall { call });
    conf(&mut r, 1_100, call, ConferenceEvent::Left);
    assert_eq!(r.meeting(), Some("urgent"));
    assert_eq!(r.state().name(), "joining");
}

#[test]
fn a_retry_keeps_the_meeting() {
    let mut r = room();
    r.handle_input(0, meeting("m1"));
    drain(&mut r);
    conf(
        &mut r,
        10,
        CallId(1),
        ConferenceEvent::Failed {
            reason: "x".into(),
            retryable: true,
        },
    );
    let at = r.poll_timeout().expect("retry");
    r.handle_input(at, Input::Tick);
    assert_eq!(
        drain(&mut r)[0],
        Output::StartCall {
            call: CallId(2),
            meeting: Some("m1".into())
        }
    );
}

#[test]
fn meeting_end_leaves_only_that_meeting() {
    let mut r = room();
    r.handle_input(0, meeting("m1"));
    drain(&mut r);
    r.handle_input(
        5,
        Input::MeetingEnded {
            meeting: "other".into(),
        },
    );
    assert_eq!(r.state().name(), "joining");
    r.handle_input(
        6,
        Input::MeetingEnded {
            meeting: "m1".into(),
        },
    );
    assert_eq!(r.state().name(), "leaving");
}

#[test]
fn a_manual_join_after_a_meeting_goes_to_the_rooms_own_conference() {
    let mut r = room();
    r.handle_input(0, meeting("m1"));
    drain(&mut r);
    r.handle_input(1, Input::Leave);
    conf(&mut r, 2, CallId(1), ConferenceEvent::Left);
    r.handle_input(3, Input::Join);
    assert_eq!(
        drain(&mut r)[0],
        Output::StartCall {
            call: CallId(2),
            meeting: None
        }
    );
}

#[test]
fn mute_toggles_only_in_a_call_and_each_call_starts_unmuted() {
    let mut r = room();
    r.handle_input(0, Input::ToggleMute);
    assert!(drain(&mut r).is_empty(), "nothing to mute while idle");
    assert!(!r.muted());
    r.handle_input(1, Input::Join);
    drain(&mut r);
    conf(&mut r, 2, CallId(1), ConferenceEvent::Joined);
    drain(&mut r);
    r.handle_input(3, Input::ToggleMute);
    assert_eq!(drain(&mut r), vec![Output::Mute(true)]);
    assert!(r.muted());
    r.handle_input(4, Input::ToggleMute);
    assert_eq!(drain(&mut r), vec![Output::Mute(false)]);
    r.handle_input(5, Input::ToggleMute);
    drain(&mut r);
    // The call drops while muted; the retry's call starts unmuted.
    conf(
        &mut r,
        6,
        CallId(1),
        ConferenceEvent::Lost {
            reason: "gone".into(),
        },
    );
    drain(&mut r);
    r.handle_input(10_000, Input::Tick);
    let out = drain(&mut r);
    assert!(
        matches!(
            out[0],
            Output::StartCall {
                call: CallId(2),
                ..
            }
        ),
        "{out:?}"
    );
    assert!(!r.muted());
}
