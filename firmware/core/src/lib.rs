//! The room's behaviour as a sans-IO state machine.
//!
//! [`Room`] owns what a commune room does: idle, joining, in call, leaving,
//! retrying with backoff after a failure, or showing an error. It never reads
//! a clock, opens a socket or touches GStreamer. The caller feeds it inputs
//! with [`Room::handle_input`] (a key press, a conference event, the passing of
//! time) and drains what it wants done with [`Room::poll_output`] until it
//! returns `None`; [`Room::poll_timeout`] says when the room next wants to be
//! woken with [`Input::Tick`]. Time is always an input (milliseconds on a
//! monotonic clock chosen by the caller), so tests run faster than real time
//! and are deterministic.
//!
//! Every call attempt gets a [`CallId`]. Conference events carry the id of
//! the call they belong to, and events of a call the room has already given
//! up on are ignored: a late "failed" from an old attempt cannot tear down
//! the new one.

use std::collections::BTreeMap;
use std::fmt;

/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;

/// Identifies one attempt at joining the conference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call#{}", self.0)
    }
}

/// Where the room is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not in a call, waiting for someone to press join.
    Idle,
    /// Connecting to the conference.
    Joining { call: CallId, attempt: u32 },
    /// Publishing and receiving media.
    InCall { call: CallId },
    /// Hanging up; waits for the conference to confirm (or a short timeout).
    Leaving { call: CallId },
    /// The last attempt failed or the call dropped; the room tries again at `at`.
    Retrying {
        attempt: u32,
        at: Millis,
        reason: String,
    },
    /// A failure that retrying cannot fix (wrong PIN, no such room). The room
    /// stays here until someone presses join again or leaves.
    Error { reason: String },
}

impl State {
    /// A short lowercase name, as shown by `diemcau ctl status`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Joining { .. } => "joining",
            State::InCall { .. } => "in_call",
            State::Leaving { .. } => "leaving",
            State::Retrying { .. } => "retrying",
            State::Error { .. } => "error",
        }
    }

    /// The call currently owned by the room, if any.
    pub fn call(&self) -> Option<CallId> {
        match self {
            State::Joining { call, .. } | State::InCall { call } | State::Leaving { call } => {
                Some(*call)
            }
            _ => None,
        }
    }
}

/// What happened in the conference, as reported by the connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConferenceEvent {
    /// Media is flowing: the room is in the call.
    Joined,
    /// The attempt failed. `retryable` is false when trying again cannot
    /// help (wrong PIN, unknown room).
    Failed { reason: String, retryable: bool },
    /// An established call dropped (server gone, ICE failed, hung up).
    Lost { reason: String },
    /// The call was torn down after the room asked to leave.
    Left,
    /// Another bridge point started publishing.
    PeerJoined { id: u64, name: String },
    /// Another bridge point left.
    PeerLeft { id: u64 },
}

/// Everything that can happen to a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Join the conference (remote OK key when idle, `ctl join`, a due meeting).
    Join,
    /// Leave the conference (`ctl leave`, remote Back after confirmation).
    Leave,
    /// The one-button action: join when not in a call, leave when in one.
    Toggle,
    /// A district meeting starts (its scheduled start, or "convene now"): the
    /// room joins it, leaving any other call first.
    JoinMeeting { meeting: String },
    /// A meeting ended: a room in it leaves.
    MeetingEnded { meeting: String },
    /// An event from the conference connector for `call`.
    Conference {
        call: CallId,
        event: ConferenceEvent,
    },
    /// Time passed; the room checks its deadlines.
    Tick,
    /// The remote's Mute key: mute or unmute the microphone. Only a call
    /// (joining or in it) can be muted; every new call starts unmuted.
    ToggleMute,
}

/// What the room wants its adapters to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Start connecting to the conference, tagging every event with `call`.
    /// `meeting` names the district meeting to join; `None` is the room's
    /// configured conference.
    StartCall {
        call: CallId,
        meeting: Option<String>,
    },
    /// Tear down `call` (leave the conference, stop the pipelines).
    EndCall { call: CallId },
    /// The state changed; update the screen, LED and status report.
    StateChanged(State),
    /// Mute (`true`) or unmute the microphone of the current call: nothing
    /// audible may leave the room while muted.
    Mute(bool),
}

/// Timing of the room's retries and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// First retry delay after a failure.
    pub backoff_initial: Millis,
    /// Longest retry delay.
    pub backoff_max: Millis,
    /// A join that has not succeeded after this long is abandoned and retried.
    pub join_timeout: Millis,
    /// Leaving that the conference does not confirm within this is assumed done.
    pub leave_timeout: Millis,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            backoff_initial: 500,
            backoff_max: 4_000,
            join_timeout: 20_000,
            leave_timeout: 3_000,
        }
    }
}

/// A remote bridge point seen in the current call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub name: String,
}

/// The room state machine. See the crate documentation.
#[derive(Debug)]
pub struct Room {
    state: State,
    timing: Timing,
    next_call: u64,
    deadline: Option<Millis>,
    /// A join was asked for while leaving; start it (with this target)
    /// once the leave is done.
    join_after_leave: Option<Option<String>>,
    /// The meeting the current (or next) call is for; `None`: the room's
    /// configured conference.
    target: Option<String>,
    peers: BTreeMap<u64, Peer>,
    last_error: Option<String>,
    muted: bool,
    rng: u64,
    outputs: std::collections::VecDeque<Output>,
}

impl Room {
    /// A new idle room. `seed` drives the jitter added to retry delays, so
    /// that a hundred rooms do not all reconnect in the same millisecond.
    pub fn new(timing: Timing, seed: u64) -> Self {
        Room {
            state: State::Idle,
            timing,
            next_call: 1,
            deadline: None,
            join_after_leave: None,
            target: None,
            peers: BTreeMap::new(),
            last_error: None,
            muted: false,
            rng: seed | 1,
            outputs: Default::default(),
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Remote bridge points in the current call, by id.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// The meeting the room is in or joining (`None`: its own conference).
    pub fn meeting(&self) -> Option<&str> {
        match self.state {
            State::Idle | State::Error { .. } => None,
            _ => self.target.as_deref(),
        }
    }

    /// Whether the microphone of the current call is muted.
    pub fn muted(&self) -> bool {
        self.muted
    }

    /// The reason of the most recent failure, kept after recovery for status.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// When the room next needs an [`Input::Tick`], if ever.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.deadline
    }

    /// The next thing to do, or `None` when there is nothing left.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Feeds one input at time `now`.
    pub fn handle_input(&mut self, now: Millis, input: Input) {
        match input {
            Input::Join => self.on_join(now),
            Input::Leave => self.on_leave(now),
            Input::Toggle => match self.state {
                State::Idle | State::Error { .. } => self.on_join(now),
                State::Leaving { .. } => self.on_join(now),
                State::Joining { .. } | State::InCall { .. } | State::Retrying { .. } => {
                    self.on_leave(now)
                }
            },
            Input::JoinMeeting { meeting } => self.on_meeting(now, meeting),
            Input::MeetingEnded { meeting } => {
                if self.target.as_deref() == Some(meeting.as_str())
                    && !matches!(self.state, State::Idle | State::Error { .. })
                {
                    self.on_leave(now);
                }
            }
            Input::Conference { call, event } => self.on_conference(now, call, event),
            Input::Tick => self.on_tick(now),
            Input::ToggleMute => {
                if matches!(self.state, State::Joining { .. } | State::InCall { .. }) {
                    self.set_muted(!self.muted);
                }
            }
        }
    }

    fn set_muted(&mut self, muted: bool) {
        if self.muted != muted {
            self.muted = muted;
            self.outputs.push_back(Output::Mute(muted));
        }
    }

    fn on_meeting(&mut self, now: Millis, meeting: String) {
        let same = self.target.as_deref() == Some(meeting.as_str());
        match self.state.clone() {
            State::Idle | State::Error { .. } => {
                self.target = Some(meeting);
                self.start_call(now, 1);
            }
            State::Retrying { attempt, .. } => {
                let attempt = if same { attempt } else { 1 };
                self.target = Some(meeting);
                self.start_call(now, attempt);
            }
            State::Joining { .. } | State::InCall { .. } if same => {}
            State::Joining { .. } | State::InCall { .. } => {
                // Another call: leave it, then join the meeting.
                self.on_leave(now);
                self.join_after_leave = Some(Some(meeting));
            }
            State::Leaving { .. } => self.join_after_leave = Some(Some(meeting)),
        }
    }

    fn on_join(&mut self, now: Millis) {
        match &self.state {
            State::Idle | State::Error { .. } => {
                self.target = None;
                self.start_call(now, 1)
            }
            // Pressing join again while retrying skips the wait.
            State::Retrying { attempt, .. } => {
                let attempt = *attempt;
                self.start_call(now, attempt)
            }
            State::Leaving { .. } => self.join_after_leave = Some(None),
            State::Joining { .. } | State::InCall { .. } => {}
        }
    }

    fn on_leave(&mut self, now: Millis) {
        self.join_after_leave = None;
        match self.state.clone() {
            State::Joining { call, .. } | State::InCall { call } => {
                self.outputs.push_back(Output::EndCall { call });
                self.deadline = Some(now + self.timing.leave_timeout);
                self.set_state(State::Leaving { call });
            }
            State::Retrying { .. } | State::Error { .. } => {
                self.deadline = None;
                self.set_state(State::Idle);
            }
            State::Idle | State::Leaving { .. } => {}
        }
    }

    fn on_conference(&mut self, now: Millis, call: CallId, event: ConferenceEvent) {
        if self.state.call() != Some(call) {
            // An event of a call the room already gave up on.
            return;
        }
        match event {
            ConferenceEvent::PeerJoined { id, name } => {
                self.peers.insert(id, Peer { id, name });
            }
            ConferenceEvent::PeerLeft { id } => {
                self.peers.remove(&id);
            }
            ConferenceEvent::Joined => {
                if let State::Joining { call, .. } = self.state {
                    self.deadline = None;
                    self.set_state(State::InCall { call });
                }
            }
            ConferenceEvent::Failed { reason, retryable } => match self.state.clone() {
                State::Joining { call, attempt } => {
                    self.outputs.push_back(Output::EndCall { call });
                    self.last_error = Some(reason.clone());
                    if retryable {
                        self.retry(now, attempt + 1, reason);
                    } else {
                        self.deadline = None;
                        self.set_state(State::Error { reason });
                    }
                }
                State::InCall { call } => {
                    self.outputs.push_back(Output::EndCall { call });
                    self.last_error = Some(reason.clone());
                    if retryable {
                        self.retry(now, 1, reason);
                    } else {
                        self.deadline = None;
                        self.set_state(State::Error { reason });
                    }
                }
                State::Leaving { .. } => self.finish_leave(now),
                _ => {}
            },
            ConferenceEvent::Lost { reason } => match self.state.clone() {
                State::Joining { call, attempt } => {
                    self.outputs.push_back(Output::EndCall { call });
                    self.last_error = Some(reason.clone());
                    self.retry(now, attempt + 1, reason);
                }
                State::InCall { call } => {
                    self.outputs.push_back(Output::EndCall { call });
                    self.last_error = Some(reason.clone());
                    self.retry(now, 1, reason);
                }
                State::Leaving { .. } => self.finish_leave(now),
                _ => {}
            },
            ConferenceEvent::Left => {
                if let State::Leaving { .. } = self.state {
                    self.finish_leave(now);
                }
            }
        }
    }

    fn on_tick(&mut self, now: Millis) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        self.deadline = None;
        match self.state.clone() {
            State::Retrying { attempt, .. } => self.start_call(now, attempt),
            State::Joining { call, attempt } => {
                let reason = format!(
                    "no answer from the conference within {} s",
                    self.timing.join_timeout / 1000
                );
                self.outputs.push_back(Output::EndCall { call });
                self.last_error = Some(reason.clone());
                self.retry(now, attempt + 1, reason);
            }
            State::Leaving { .. } => self.finish_leave(now),
            _ => {}
        }
    }

    fn start_call(&mut self, now: Millis, attempt: u32) {
        let call = CallId(self.next_call);
        self.next_call += 1;
        self.peers.clear();
        // A new call starts unmuted (its publisher starts so).
        self.muted = false;
        self.outputs.push_back(Output::StartCall {
            call,
            meeting: self.target.clone(),
        });
        self.deadline = Some(now + self.timing.join_timeout);
        self.set_state(State::Joining { call, attempt });
    }

    fn finish_leave(&mut self, now: Millis) {
        self.peers.clear();
        self.deadline = None;
        if let Some(target) = self.join_after_leave.take() {
            self.target = target;
            self.start_call(now, 1);
        } else {
            self.set_state(State::Idle);
        }
    }

    /// Schedules attempt number `attempt` after an exponential backoff with
    /// up to 25 % jitter.
    fn retry(&mut self, now: Millis, attempt: u32, reason: String) {
        self.peers.clear();
        let exp = attempt.saturating_sub(2).min(16);
        let base = self
            .timing
            .backoff_initial
            .saturating_mul(1 << exp)
            .min(self.timing.backoff_max);
        let jitter = if base >= 4 {
            self.next_random() % (base / 4)
        } else {
            0
        };
        let at = now + base + jitter;
        self.deadline = Some(at);
        self.set_state(State::Retrying {
            attempt,
            at,
            reason,
        });
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: deterministic for a given seed, good enough for jitter.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn set_state(&mut self, state: State) {
        if self.state != state {
            self.state = state.clone();
            self.outputs.push_back(Output::StateChanged(state));
        }
    }
}

#[cfg(test)]
mod tests;
