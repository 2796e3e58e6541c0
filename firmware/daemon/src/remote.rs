//! What the room does with the remote's keys: a small sans-IO policy (time
//! is an input) between [`diemcau_control::keys::KeyEvent`]s from any remote
//! (evdev RF remotes and IR receivers, later the TV remote through CEC) and
//! the room's inputs.
//!
//! * OK (and the green Call key) joins when idle, leaves when in a call.
//! * Mute mutes or unmutes the microphone of the call.
//! * Back (and the red Hang-up key) leaves, but only when pressed twice
//!   within [`CONFIRM_MS`]: a remote picked up by a child must not drop the
//!   district meeting. While the status screen is up, Back closes it.
//! * Volume ± sets the speaker, one step a press; holding the key repeats.
//! * Home shows the status screen for [`STATUS_SCREEN_MS`], or until Home
//!   (or Back) is pressed again.
//!
//! Autorepeats never toggle anything.

use std::path::PathBuf;

use diemcau_control::evdev::{EvdevConfig, EvdevRemote};
use diemcau_control::keys::{KeyEvent, KeyMap, KeyPhase, RemoteKey, RemoteSource};
use diemcau_core::{Input, State};
use tokio::sync::mpsc;

/// Back must be pressed again within this to leave.
pub const CONFIRM_MS: u64 = 3_000;

/// How long Home shows the status screen.
pub const STATUS_SCREEN_MS: u64 = 15_000;

/// The key policy's memory: a pending leave confirmation, the status screen.
#[derive(Debug, Default)]
pub struct KeyPolicy {
    confirm_until: Option<u64>,
    status_until: Option<u64>,
}

/// What a key did, for logs and `ctl status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAction {
    Input(Input),
    /// Back pressed once in a call: press again to leave.
    ConfirmLeave,
    /// The speaker one step louder (`true`) or quieter.
    Volume(bool),
    /// The status screen was shown (`true`) or closed.
    StatusScreen(bool),
    /// Run the self-test (the `selftest` key, while idle).
    SelfTest,
    Ignored,
}

impl KeyPolicy {
    /// The room input for `key` at `now_ms` in `state`.
    pub fn on_key(&mut self, now_ms: u64, state: &State, key: KeyEvent) -> KeyAction {
        // Holding Volume ± keeps stepping; nothing else repeats.
        match key.key {
            RemoteKey::VolumeUp => return KeyAction::Volume(true),
            RemoteKey::VolumeDown => return KeyAction::Volume(false),
            _ => {}
        }
        if key.phase == KeyPhase::Repeat {
            return KeyAction::Ignored;
        }
        let status_shown = self.status_screen(now_ms);
        match key.key {
            RemoteKey::Home if status_shown => {
                self.status_until = None;
                return KeyAction::StatusScreen(false);
            }
            RemoteKey::Home => {
                self.status_until = Some(now_ms + STATUS_SCREEN_MS);
                return KeyAction::StatusScreen(true);
            }
            RemoteKey::Back if status_shown => {
                self.status_until = None;
                return KeyAction::StatusScreen(false);
            }
            // Any other key closes the status screen and does its own job.
            _ => self.status_until = None,
        }
        let in_call = matches!(
            state,
            State::Joining { .. } | State::InCall { .. } | State::Retrying { .. }
        );
        match key.key {
            RemoteKey::Ok | RemoteKey::Call => {
                self.confirm_until = None;
                KeyAction::Input(Input::Toggle)
            }
            RemoteKey::Mute => KeyAction::Input(Input::ToggleMute),
            RemoteKey::SelfTest if matches!(state, State::Idle) => KeyAction::SelfTest,
            RemoteKey::Back | RemoteKey::HangUp if in_call => match self.confirm_until {
                Some(until) if now_ms <= until => {
                    self.confirm_until = None;
                    KeyAction::Input(Input::Leave)
                }
                _ => {
                    self.confirm_until = Some(now_ms + CONFIRM_MS);
                    KeyAction::ConfirmLeave
                }
            },
            _ => KeyAction::Ignored,
        }
    }

    /// The status screen is up at `now_ms`.
    pub fn status_screen(&self, now_ms: u64) -> bool {
        self.status_until.is_some_and(|u| now_ms < u)
    }

    /// A leave confirmation is pending at `now_ms`.
    pub fn confirming(&self, now_ms: u64) -> bool {
        self.confirm_until.is_some_and(|u| now_ms <= u)
    }
}

/// Where the remotes are: the kernel's input device folders, or a test's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteConfig {
    pub dev_root: PathBuf,
    pub sys_root: PathBuf,
    /// Linux key codes to room keys (`[control.keys]`).
    pub keymap: KeyMap,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            dev_root: PathBuf::from("/dev/input"),
            sys_root: PathBuf::from("/sys/class/input"),
            keymap: KeyMap::default(),
        }
    }
}

/// Starts reading every remote-like input device (plugged in now or
/// later) and hands their keys over on a channel.
pub fn spawn(cfg: &RemoteConfig) -> mpsc::Receiver<KeyEvent> {
    let (tx, rx) = mpsc::channel(32);
    let mut remote = EvdevRemote::spawn(EvdevConfig {
        dev_root: cfg.dev_root.clone(),
        sys_root: cfg.sys_root.clone(),
        keymap: cfg.keymap.clone(),
        ..EvdevConfig::default()
    });
    tokio::spawn(async move {
        while let Some(k) = remote.next_key().await {
            if tx.send(k).await.is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use diemcau_core::CallId;

    #[test]
    fn ok_toggles_mute_mutes_and_repeats_do_nothing() {
        let mut p = KeyPolicy::default();
        let idle = State::Idle;
        assert_eq!(
            p.on_key(0, &idle, KeyEvent::pressed(RemoteKey::Ok)),
            KeyAction::Input(Input::Toggle)
        );
        assert_eq!(
            p.on_key(0, &idle, KeyEvent::repeat(RemoteKey::Ok)),
            KeyAction::Ignored
        );
        assert_eq!(
            p.on_key(0, &idle, KeyEvent::pressed(RemoteKey::Mute)),
            KeyAction::Input(Input::ToggleMute)
        );
        assert_eq!(
            p.on_key(0, &idle, KeyEvent::pressed(RemoteKey::Back)),
            KeyAction::Ignored,
            "Back means nothing when idle"
        );
    }

    #[test]
    fn back_leaves_only_when_confirmed_in_time() {
        let mut p = KeyPolicy::default();
        let call = State::InCall { call: CallId(1) };
        let back = KeyEvent::pressed(RemoteKey::Back);
        assert_eq!(p.on_key(1_000, &call, back), KeyAction::ConfirmLeave);
        assert!(p.confirming(2_000));
        // Too late: this press asks again.
        assert_eq!(p.on_key(5_000, &call, back), KeyAction::ConfirmLeave);
        assert_eq!(p.on_key(6_000, &call, back), KeyAction::Input(Input::Leave));
        assert!(!p.confirming(6_001));
        // OK in between cancels a pending confirmation.
        assert_eq!(p.on_key(7_000, &call, back), KeyAction::ConfirmLeave);
        p.on_key(7_100, &call, KeyEvent::pressed(RemoteKey::Ok));
        assert_eq!(p.on_key(7_200, &call, back), KeyAction::ConfirmLeave);
    }

    #[test]
    fn volume_keys_step_and_repeat() {
        let mut p = KeyPolicy::default();
        let call = State::InCall { call: CallId(1) };
        for state in [State::Idle, call] {
            assert_eq!(
                p.on_key(0, &state, KeyEvent::pressed(RemoteKey::VolumeUp)),
                KeyAction::Volume(true)
            );
            assert_eq!(
                p.on_key(0, &state, KeyEvent::repeat(RemoteKey::VolumeDown)),
                KeyAction::Volume(false),
                "holding Volume - keeps stepping"
            );
        }
    }

    #[test]
    fn home_shows_the_status_screen_until_timeout_home_or_back() {
        let mut p = KeyPolicy::default();
        let call = State::InCall { call: CallId(1) };
        let home = KeyEvent::pressed(RemoteKey::Home);
        let back = KeyEvent::pressed(RemoteKey::Back);
        assert_eq!(p.on_key(1_000, &call, home), KeyAction::StatusScreen(true));
        assert!(p.status_screen(1_000 + STATUS_SCREEN_MS - 1));
        assert!(!p.status_screen(1_000 + STATUS_SCREEN_MS), "times out");
        // Home again closes it.
        assert_eq!(p.on_key(2_000, &call, home), KeyAction::StatusScreen(false));
        assert!(!p.status_screen(2_001));
        // Back closes it without starting a leave confirmation.
        assert_eq!(p.on_key(3_000, &call, home), KeyAction::StatusScreen(true));
        assert_eq!(p.on_key(3_100, &call, back), KeyAction::StatusScreen(false));
        assert!(!p.confirming(3_200));
        assert_eq!(p.on_key(3_300, &call, back), KeyAction::ConfirmLeave);
        // After the timeout Home opens it again; Mute closes it and mutes.
        assert_eq!(p.on_key(30_000, &call, home), KeyAction::StatusScreen(true));
        assert_eq!(
            p.on_key(30_100, &call, KeyEvent::pressed(RemoteKey::Mute)),
            KeyAction::Input(Input::ToggleMute)
        );
        assert!(!p.status_screen(30_200));
        assert_eq!(
            p.on_key(30_300, &call, KeyEvent::repeat(RemoteKey::Home)),
            KeyAction::Ignored
        );
    }
}
