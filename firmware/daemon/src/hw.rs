//! The room's own hardware around the run loop: systemd supervision
//! (`READY=1`, `WATCHDOG=1`, `STATUS=`), the hardware watchdog
//! (`/dev/watchdog`), the status LED and the join button on GPIO lines.
//!
//! The watchdogs are petted from the run loop's one-second tick, so a hung
//! loop stops the pets and the board is restarted; the GPIO lines are served
//! by a task of their own (buttons want 10 ms polling, the LED blinks), which
//! takes LED patterns from the loop and hands button presses back to it as
//! room inputs. The drivers are `diemcau-control`'s: the Linux GPIO character
//! device through embedded-hal, the watchdog device, the notify socket.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use diemcau_control::gpio::{
    self, Button, ButtonEvent, DebounceConfig, GpioError, LedPattern, LineMode, Polarity, StatusLed,
};
use diemcau_control::notify::{self, Notifier, NotifyError};
use diemcau_control::watchdog::{Watchdog, WatchdogError};
use diemcau_core::{Input, State};
use embedded_hal::digital::{InputPin, OutputPin};
use tokio::sync::{mpsc, watch};

/// A GPIO line as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineConfig {
    pub line: u32,
    pub active_low: bool,
}

/// The `[hardware]` section, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HardwareConfig {
    /// The hardware watchdog device to keep petting (`/dev/watchdog`).
    pub watchdog: Option<PathBuf>,
    /// Its timeout, when the board's default does not suit.
    pub watchdog_timeout: Option<Duration>,
    /// The GPIO chip of the LED and buttons (`/dev/gpiochip0`).
    pub gpio_chip: PathBuf,
    pub status_led: Option<LineConfig>,
    /// Joins when idle, leaves when in a call (the same as the remote's OK).
    pub join_button: Option<LineConfig>,
}

/// Why the room's hardware could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HardwareError {
    #[error("systemd notification")]
    Notify(#[from] NotifyError),
    #[error("hardware watchdog")]
    Watchdog(#[from] WatchdogError),
    #[error("GPIO {what}")]
    Gpio {
        what: &'static str,
        #[source]
        source: GpioError,
    },
}

/// What the status LED shows for a room state.
pub fn led_pattern(state: &State) -> LedPattern {
    match state {
        State::Idle | State::Joining { .. } | State::Leaving { .. } => LedPattern::Idle,
        State::InCall { .. } => LedPattern::InCall,
        State::Retrying { .. } | State::Error { .. } => LedPattern::Error,
    }
}

/// [`led_pattern`], with the call's microphone muted or not.
pub fn led_pattern_muted(state: &State, muted: bool) -> LedPattern {
    match led_pattern(state) {
        LedPattern::InCall if muted => LedPattern::Muted,
        p => p,
    }
}

/// One line for `systemctl status diemcau`.
pub fn status_line(state: &State) -> String {
    match state {
        State::Error { reason } => format!("error: {reason}"),
        State::Retrying {
            reason, attempt, ..
        } => format!("retrying (attempt {attempt}): {reason}"),
        other => other.name().replace('_', " "),
    }
}

/// systemd's notify socket and the hardware watchdog, petted from the loop.
pub struct Supervision {
    notifier: Option<Notifier>,
    /// Half of `WATCHDOG_USEC`, when systemd watches us.
    sd_every: Option<Duration>,
    sd_last: Instant,
    watchdog: Option<Watchdog>,
    hw_every: Duration,
    hw_last: Instant,
    status: String,
}

impl Supervision {
    /// Connects to `$NOTIFY_SOCKET` (when run by systemd) and opens the
    /// hardware watchdog (when configured). Opening arms it.
    pub fn start(cfg: &HardwareConfig) -> Result<Self, HardwareError> {
        let notifier = Notifier::from_env()?;
        let sd_every = notify::watchdog_timeout_from_env()?.map(|t| t / 2);
        let watchdog = match &cfg.watchdog {
            Some(path) => {
                let dog = Watchdog::open(path, cfg.watchdog_timeout)?;
                tracing::info!(device = %path.display(), timeout = ?dog.timeout(), "hardware watchdog armed");
                Some(dog)
            }
            None => None,
        };
        let hw_every = watchdog
            .as_ref()
            .and_then(|d| d.pet_interval())
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(200), Duration::from_secs(5));
        let now = Instant::now();
        Ok(Supervision {
            notifier,
            sd_every,
            sd_last: now,
            watchdog,
            hw_every,
            hw_last: now,
            status: String::new(),
        })
    }

    /// Tells systemd the daemon is up (after the control socket is bound).
    pub fn ready(&mut self, state: &State) {
        self.status = status_line(state);
        if let Some(n) = &self.notifier {
            let r = n.notify(&[
                notify::NotifyState::Ready,
                notify::NotifyState::Status(&self.status),
            ]);
            if let Err(e) = r {
                tracing::warn!(error = %crate::chain(&e), "cannot notify systemd");
            }
        }
        self.pet(Instant::now());
    }

    /// Called from the run loop at least once a second: proof that it runs.
    pub fn pet(&mut self, now: Instant) {
        if let (Some(n), Some(every)) = (&self.notifier, self.sd_every)
            && now.duration_since(self.sd_last) >= every.min(Duration::from_secs(1))
        {
            self.sd_last = now;
            if let Err(e) = n.watchdog() {
                tracing::warn!(error = %crate::chain(&e), "cannot ping systemd's watchdog");
            }
        }
        if let Some(dog) = self.watchdog.as_mut()
            && now.duration_since(self.hw_last) >= self.hw_every
        {
            self.hw_last = now;
            if let Err(e) = dog.pet() {
                tracing::error!(error = %crate::chain(&e), "cannot pet the hardware watchdog");
            }
        }
    }

    /// Shows the room's state in `systemctl status` when it changes.
    pub fn state_changed(&mut self, state: &State) {
        let line = status_line(state);
        if line == self.status {
            return;
        }
        self.status = line;
        if let Some(n) = &self.notifier
            && let Err(e) = n.status(&self.status)
        {
            tracing::debug!(error = %crate::chain(&e), "cannot send status to systemd");
        }
    }

    /// A deliberate shutdown: tells systemd and disarms the watchdog.
    pub fn stopping(mut self) {
        if let Some(n) = &self.notifier {
            let _ = n.stopping();
        }
        if let Some(dog) = self.watchdog.take()
            && let Err(e) = dog.close_cleanly()
        {
            tracing::warn!(error = %crate::chain(&e), "watchdog not disarmed");
        }
    }
}

/// The GPIO side: patterns go in, button presses come out.
pub struct Gpio {
    pub led: watch::Sender<LedPattern>,
    pub inputs: mpsc::Receiver<Input>,
}

/// Opens the configured lines and starts serving them; `None` when the
/// board has neither an LED nor a button configured.
pub fn start_gpio(cfg: &HardwareConfig) -> Result<Option<Gpio>, HardwareError> {
    if cfg.status_led.is_none() && cfg.join_button.is_none() {
        return Ok(None);
    }
    let led = match &cfg.status_led {
        Some(l) => Some(StatusLed::new(
            gpio::open_line(
                &cfg.gpio_chip,
                l.line,
                "diemcau-status",
                LineMode::Output {
                    initial_high: l.active_low,
                },
            )
            .map_err(|source| HardwareError::Gpio {
                what: "status LED",
                source,
            })?,
            polarity(l),
        )),
        None => None,
    };
    let button = match &cfg.join_button {
        Some(l) => Some(Button::new(
            gpio::open_line(
                &cfg.gpio_chip,
                l.line,
                "diemcau-join",
                LineMode::Input {
                    pull_up: l.active_low,
                },
            )
            .map_err(|source| HardwareError::Gpio {
                what: "join button",
                source,
            })?,
            polarity(l),
            DebounceConfig::default(),
        )),
        None => None,
    };
    Ok(Some(serve(led, button)))
}

fn polarity(l: &LineConfig) -> Polarity {
    if l.active_low {
        Polarity::ActiveLow
    } else {
        Polarity::ActiveHigh
    }
}

/// Serves an LED and a join button (real lines or fakes) on a task.
pub fn serve<L, B>(led: Option<StatusLed<L>>, button: Option<Button<B>>) -> Gpio
where
    L: OutputPin + Send + 'static,
    B: InputPin + Send + 'static,
{
    let (led_tx, mut led_rx) = watch::channel(LedPattern::Idle);
    let (in_tx, in_rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let (mut led, mut button) = (led, button);
        let t0 = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut led_failed, mut button_failed) = (false, false);
        loop {
            tick.tick().await;
            let now = t0.elapsed().as_millis() as u64;
            if led_rx.has_changed().unwrap_or(false) {
                let p = *led_rx.borrow_and_update();
                if let Some(l) = led.as_mut() {
                    l.set_pattern(p, now);
                }
            }
            if let Some(l) = led.as_mut() {
                match l.update(now) {
                    Ok(()) => led_failed = false,
                    Err(e) if !led_failed => {
                        led_failed = true;
                        tracing::warn!(error = ?e, "status LED write failed");
                    }
                    Err(_) => {}
                }
            }
            if let Some(b) = button.as_mut() {
                let polled = b.poll(now);
                match polled {
                    Ok(Some(ButtonEvent::Pressed)) => {
                        tracing::info!("join button pressed");
                        if in_tx.try_send(Input::Toggle).is_err() && in_tx.is_closed() {
                            return;
                        }
                    }
                    Ok(_) => button_failed = false,
                    Err(e) if !button_failed => {
                        button_failed = true;
                        tracing::warn!(error = ?e, "join button read failed");
                    }
                    Err(_) => {}
                }
            }
            if in_tx.is_closed() {
                return;
            }
        }
    });
    Gpio {
        led: led_tx,
        inputs: in_rx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diemcau_control::gpio::FakePin;

    #[test]
    fn led_follows_the_room() {
        assert_eq!(led_pattern(&State::Idle), LedPattern::Idle);
        assert_eq!(
            led_pattern(&State::Error {
                reason: "wrong PIN".into()
            }),
            LedPattern::Error
        );
        assert_eq!(
            status_line(&State::Error {
                reason: "wrong PIN".into()
            }),
            "error: wrong PIN"
        );
    }

    #[tokio::test]
    async fn button_press_becomes_toggle_and_led_shows_the_pattern() {
        let led_pin = FakePin::new();
        let button_pin = FakePin::new();
        let mut gpio = serve(
            Some(StatusLed::new(led_pin.clone(), Polarity::ActiveHigh)),
            Some(Button::new(
                button_pin.clone(),
                Polarity::ActiveLow,
                DebounceConfig::default(),
            )),
        );
        // Released (active low: high), then pressed.
        button_pin.set_level(true);
        tokio::time::sleep(Duration::from_millis(60)).await;
        button_pin.set_level(false);
        let got = tokio::time::timeout(Duration::from_secs(2), gpio.inputs.recv()).await;
        assert_eq!(got.ok().flatten(), Some(Input::Toggle));
        gpio.led.send(LedPattern::InCall).expect("task runs");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(led_pin.level(), "in a call the LED is solid on");
        gpio.led.send(LedPattern::Off).expect("task runs");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!led_pin.level());
    }
}
