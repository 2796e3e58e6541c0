//! GPIO status LED and buttons through embedded-hal 1.0.
//!
//! The drivers are generic over `embedded_hal::digital::{OutputPin, InputPin}`, so the
//! same code runs on a Raspberry Pi, a Rockchip board (real pins from the kernel's GPIO
//! character device via `linux-embedded-hal`'s `CdevPin`, opened by [`open_line`]) and in
//! tests ([`FakePin`]). Timing is an input: [`level_at`] says whether a [`LedPattern`] is
//! lit `t` milliseconds after it started, [`StatusLed::update`] applies it, and
//! [`Debouncer::sample`] turns raw button levels into [`ButtonEvent`]s. Nothing here reads
//! a clock or sleeps.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin, StatefulOutputPin};
use linux_embedded_hal::CdevPin;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};

/// What the room's status LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedPattern {
    /// Dark.
    Off,
    /// Ready, no call: a short flash every 3 s (alive, but not distracting).
    Idle,
    /// In a call: solid on.
    InCall,
    /// In a call with the room muted: double blink every 1.5 s.
    Muted,
    /// Something needs attention (no network, device missing): fast 4 Hz blink.
    Error,
}

/// (duration in ms, lit) segments making up one period of each blinking pattern.
const IDLE: &[(u64, bool)] = &[(200, true), (2800, false)];
const MUTED: &[(u64, bool)] = &[(150, true), (150, false), (150, true), (1050, false)];
const ERROR: &[(u64, bool)] = &[(125, true), (125, false)];

fn segments(pattern: LedPattern) -> Option<&'static [(u64, bool)]> {
    match pattern {
        LedPattern::Off | LedPattern::InCall => None,
        LedPattern::Idle => Some(IDLE),
        LedPattern::Muted => Some(MUTED),
        LedPattern::Error => Some(ERROR),
    }
}

/// Whether the LED is lit `t_ms` after `pattern` started.
pub fn level_at(pattern: LedPattern, t_ms: u64) -> bool {
    match segments(pattern) {
        None => pattern == LedPattern::InCall,
        Some(segs) => {
            let period: u64 = segs.iter().map(|s| s.0).sum();
            let mut t = t_ms % period;
            for &(len, lit) in segs {
                if t < len {
                    return lit;
                }
                t -= len;
            }
            false
        }
    }
}

/// The first time after `t_ms` (pattern time) at which the level changes, if it ever
/// does; lets a driver loop sleep until the next edge instead of polling.
pub fn next_edge(pattern: LedPattern, t_ms: u64) -> Option<u64> {
    let segs = segments(pattern)?;
    let period: u64 = segs.iter().map(|s| s.0).sum();
    let base = t_ms - t_ms % period;
    let mut edge = base;
    // Two periods always contain the next edge.
    for &(len, _) in segs.iter().chain(segs.iter()) {
        edge += len;
        if edge > t_ms && level_at(pattern, edge) != level_at(pattern, t_ms) {
            return Some(edge);
        }
    }
    None
}

/// Whether a pin's high level means "on"/"pressed".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Polarity {
    /// High is on / pressed.
    ActiveHigh,
    /// Low is on / pressed (LED to 3V3, button to ground with a pull-up).
    ActiveLow,
}

impl Polarity {
    fn is_active(self, high: bool) -> bool {
        high == (self == Polarity::ActiveHigh)
    }
}

/// Drives a status LED with a [`LedPattern`].
#[derive(Debug)]
pub struct StatusLed<P> {
    pin: P,
    polarity: Polarity,
    pattern: LedPattern,
    started_ms: u64,
    written: Option<bool>,
}

impl<P: OutputPin> StatusLed<P> {
    /// An LED on `pin`, initially [`LedPattern::Off`] (applied on the first update).
    pub fn new(pin: P, polarity: Polarity) -> Self {
        StatusLed {
            pin,
            polarity,
            pattern: LedPattern::Off,
            started_ms: 0,
            written: None,
        }
    }

    /// Switches pattern; a new pattern starts its period at `now_ms` so a double blink is
    /// seen at once. Setting the current pattern again does not restart it.
    pub fn set_pattern(&mut self, pattern: LedPattern, now_ms: u64) {
        if pattern != self.pattern {
            self.pattern = pattern;
            self.started_ms = now_ms;
        }
    }

    /// The current pattern.
    pub fn pattern(&self) -> LedPattern {
        self.pattern
    }

    /// Sets the pin for time `now_ms`; writes only when the level changes.
    pub fn update(&mut self, now_ms: u64) -> Result<(), P::Error> {
        let lit = level_at(self.pattern, now_ms.saturating_sub(self.started_ms));
        if self.written == Some(lit) {
            return Ok(());
        }
        let high = self.polarity.is_active(true) == lit;
        if high {
            self.pin.set_high()?;
        } else {
            self.pin.set_low()?;
        }
        self.written = Some(lit);
        Ok(())
    }

    /// When the next update would change the pin (absolute ms), if ever.
    pub fn next_change_ms(&self, now_ms: u64) -> Option<u64> {
        let t = now_ms.saturating_sub(self.started_ms);
        next_edge(self.pattern, t).map(|e| self.started_ms + e)
    }

    /// Gives the pin back.
    pub fn into_inner(self) -> P {
        self.pin
    }
}

/// A debounced button transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ButtonEvent {
    /// Went down and stayed down for the debounce time.
    Pressed,
    /// Held for the long-press time (sent once per press).
    LongPress,
    /// Came back up.
    Released,
}

/// Debounce timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebounceConfig {
    /// A level must hold this long to count.
    pub stable_ms: u64,
    /// Held this long: [`ButtonEvent::LongPress`]; `None` disables it.
    pub long_press_ms: Option<u64>,
}

impl Default for DebounceConfig {
    fn default() -> Self {
        DebounceConfig {
            stable_ms: 30,
            long_press_ms: Some(2000),
        }
    }
}

/// Sans-IO debouncer: feed it `(time, pressed)` samples, get transitions.
#[derive(Debug, Clone)]
pub struct Debouncer {
    config: DebounceConfig,
    stable: bool,
    candidate: bool,
    candidate_since: u64,
    pressed_at: u64,
    long_sent: bool,
}

impl Debouncer {
    /// A debouncer for a button that starts released.
    pub fn new(config: DebounceConfig) -> Self {
        Debouncer {
            config,
            stable: false,
            candidate: false,
            candidate_since: 0,
            pressed_at: 0,
            long_sent: false,
        }
    }

    /// Whether the button is (debounced) down.
    pub fn is_pressed(&self) -> bool {
        self.stable
    }

    /// One sample: `pressed` is the raw (polarity-corrected) level at `t_ms`.
    pub fn sample(&mut self, t_ms: u64, pressed: bool) -> Option<ButtonEvent> {
        if pressed != self.candidate {
            self.candidate = pressed;
            self.candidate_since = t_ms;
        }
        let held = t_ms.saturating_sub(self.candidate_since);
        if self.candidate != self.stable && held >= self.config.stable_ms {
            self.stable = self.candidate;
            return Some(if self.stable {
                self.pressed_at = self.candidate_since;
                self.long_sent = false;
                ButtonEvent::Pressed
            } else {
                ButtonEvent::Released
            });
        }
        if self.stable
            && self.candidate
            && !self.long_sent
            && let Some(long) = self.config.long_press_ms
            && t_ms.saturating_sub(self.pressed_at) >= long
        {
            self.long_sent = true;
            return Some(ButtonEvent::LongPress);
        }
        None
    }
}

/// A debounced button on an input pin (join, mute).
#[derive(Debug)]
pub struct Button<P> {
    pin: P,
    polarity: Polarity,
    debouncer: Debouncer,
}

impl<P: InputPin> Button<P> {
    /// A button on `pin`.
    pub fn new(pin: P, polarity: Polarity, config: DebounceConfig) -> Self {
        Button {
            pin,
            polarity,
            debouncer: Debouncer::new(config),
        }
    }

    /// Reads the pin at `now_ms` (call every 5-10 ms).
    pub fn poll(&mut self, now_ms: u64) -> Result<Option<ButtonEvent>, P::Error> {
        let high = self.pin.is_high()?;
        Ok(self.debouncer.sample(now_ms, self.polarity.is_active(high)))
    }
}

/// Errors opening a GPIO line.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    /// The chip device could not be opened.
    #[error("cannot open GPIO chip {chip}")]
    Chip {
        /// `/dev/gpiochipN`.
        chip: PathBuf,
        /// Why.
        #[source]
        source: linux_embedded_hal::gpio_cdev::Error,
    },
    /// The line could not be requested (wrong number, or in use by another consumer).
    #[error("cannot request line {line} of {chip}")]
    Line {
        /// `/dev/gpiochipN`.
        chip: PathBuf,
        /// Line offset.
        line: u32,
        /// Why.
        #[source]
        source: linux_embedded_hal::gpio_cdev::Error,
    },
}

/// How to request a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineMode {
    /// An output, initially high or low.
    Output {
        /// Initial level.
        initial_high: bool,
    },
    /// An input; `pull_up` asks the kernel (5.5+) for the internal pull-up.
    Input {
        /// Enable the internal pull-up (`GPIOHANDLE_REQUEST_BIAS_PULL_UP`).
        pull_up: bool,
    },
}

/// `GPIOHANDLE_REQUEST_BIAS_PULL_UP` from `linux/gpio.h` (not named by gpio-cdev 0.6).
const GPIOHANDLE_REQUEST_BIAS_PULL_UP: u32 = 1 << 5;

/// Requests `line` on `chip_path` (`/dev/gpiochip0`) as an embedded-hal pin labelled
/// `consumer` (shown by `gpioinfo`).
pub fn open_line(
    chip_path: impl AsRef<Path>,
    line: u32,
    consumer: &str,
    mode: LineMode,
) -> Result<CdevPin, GpioError> {
    let chip_path = chip_path.as_ref();
    let mut chip = Chip::new(chip_path).map_err(|source| GpioError::Chip {
        chip: chip_path.to_owned(),
        source,
    })?;
    let line_err = |source| GpioError::Line {
        chip: chip_path.to_owned(),
        line,
        source,
    };
    let l = chip.get_line(line).map_err(line_err)?;
    let (flags, default) = match mode {
        LineMode::Output { initial_high } => (LineRequestFlags::OUTPUT, u8::from(initial_high)),
        LineMode::Input { pull_up } => {
            let mut f = LineRequestFlags::INPUT;
            if pull_up {
                f |= LineRequestFlags::from_bits_retain(GPIOHANDLE_REQUEST_BIAS_PULL_UP);
            }
            (f, 0)
        }
    };
    let handle = l.request(flags, default, consumer).map_err(line_err)?;
    CdevPin::new(handle).map_err(line_err)
}

/// Error of a [`FakePin`] told to fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fake pin failure")]
pub struct FakePinError;

impl embedded_hal::digital::Error for FakePinError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

#[derive(Debug, Default)]
struct FakePinState {
    high: bool,
    writes: Vec<bool>,
    failing: bool,
}

/// An in-memory pin: an output records writes, an input returns what the test set.
/// Clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakePin {
    state: Arc<Mutex<FakePinState>>,
}

impl FakePin {
    /// A low pin.
    pub fn new() -> Self {
        FakePin::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakePinState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the level an input read returns.
    pub fn set_level(&self, high: bool) {
        self.lock().high = high;
    }

    /// The current level.
    pub fn level(&self) -> bool {
        self.lock().high
    }

    /// Every level written, in order.
    pub fn writes(&self) -> Vec<bool> {
        self.lock().writes.clone()
    }

    /// Makes every operation fail (a line taken away, a chip gone).
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    fn write(&self, high: bool) -> Result<(), FakePinError> {
        let mut s = self.lock();
        if s.failing {
            return Err(FakePinError);
        }
        s.high = high;
        s.writes.push(high);
        Ok(())
    }

    fn read(&self) -> Result<bool, FakePinError> {
        let s = self.lock();
        if s.failing {
            Err(FakePinError)
        } else {
            Ok(s.high)
        }
    }
}

impl ErrorType for FakePin {
    type Error = FakePinError;
}

impl OutputPin for FakePin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.write(false)
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.write(true)
    }
}

impl StatefulOutputPin for FakePin {
    fn is_set_high(&mut self) -> Result<bool, Self::Error> {
        self.read()
    }
    fn is_set_low(&mut self) -> Result<bool, Self::Error> {
        self.read().map(|h| !h)
    }
}

impl InputPin for FakePin {
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        self.read()
    }
    fn is_low(&mut self) -> Result<bool, Self::Error> {
        self.read().map(|h| !h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit_ms(pattern: LedPattern, from: u64, to: u64) -> Vec<u64> {
        (from..to).filter(|t| level_at(pattern, *t)).collect()
    }

    #[test]
    fn patterns_have_the_documented_timing() {
        assert!((0..10_000).all(|t| level_at(LedPattern::InCall, t)));
        assert!((0..10_000).all(|t| !level_at(LedPattern::Off, t)));
        // Idle: 200 ms on every 3 s.
        assert_eq!(lit_ms(LedPattern::Idle, 0, 3000).len(), 200);
        assert!(level_at(LedPattern::Idle, 0) && level_at(LedPattern::Idle, 199));
        assert!(!level_at(LedPattern::Idle, 200) && level_at(LedPattern::Idle, 3000));
        // Muted: two 150 ms flashes per 1.5 s.
        let m = lit_ms(LedPattern::Muted, 0, 1500);
        assert_eq!(m.len(), 300);
        assert!(level_at(LedPattern::Muted, 0));
        assert!(!level_at(LedPattern::Muted, 150));
        assert!(level_at(LedPattern::Muted, 300));
        assert!(!level_at(LedPattern::Muted, 450));
        assert!(!level_at(LedPattern::Muted, 1499));
        // Error: 4 Hz.
        let e = lit_ms(LedPattern::Error, 0, 1000);
        assert_eq!(e.len(), 500);
        assert!(level_at(LedPattern::Error, 0) && !level_at(LedPattern::Error, 125));
        // Far in the future (weeks of uptime) still well defined.
        let _ = level_at(LedPattern::Muted, u64::MAX);
    }

    #[test]
    fn next_edge_finds_every_change() {
        for p in [LedPattern::Idle, LedPattern::Muted, LedPattern::Error] {
            for t in 0..4000u64 {
                let edge = next_edge(p, t).unwrap();
                assert!(edge > t);
                assert_ne!(level_at(p, edge), level_at(p, t), "{p:?} t={t}");
                assert!((t + 1..edge).all(|u| level_at(p, u) == level_at(p, t)));
            }
        }
        assert_eq!(next_edge(LedPattern::InCall, 5), None);
        assert_eq!(next_edge(LedPattern::Off, 5), None);
    }

    #[test]
    fn status_led_writes_only_changes() {
        let pin = FakePin::new();
        let mut led = StatusLed::new(pin.clone(), Polarity::ActiveHigh);
        led.update(0).unwrap();
        assert_eq!(pin.writes(), [false]);
        led.set_pattern(LedPattern::InCall, 10);
        for t in 10..100 {
            led.update(t).unwrap();
        }
        assert_eq!(pin.writes(), [false, true]);
        led.set_pattern(LedPattern::Muted, 1000);
        for t in 1000..2500 {
            led.update(t).unwrap();
        }
        // Already on at the start of the double blink, so: off, on, off.
        assert_eq!(pin.writes(), [false, true, false, true, false]);
        assert_eq!(led.next_change_ms(2499), Some(2500));
        assert_eq!(led.next_change_ms(2501), Some(2650));
        led.set_pattern(LedPattern::Muted, 9999); // same pattern: no restart
        assert_eq!(led.next_change_ms(2501), Some(2650));
    }

    #[test]
    fn status_led_honours_active_low_and_reports_errors() {
        let pin = FakePin::new();
        let mut led = StatusLed::new(pin.clone(), Polarity::ActiveLow);
        led.set_pattern(LedPattern::InCall, 0);
        led.update(0).unwrap();
        assert_eq!(pin.writes(), [false]);
        led.set_pattern(LedPattern::Off, 1);
        pin.set_failing(true);
        assert_eq!(led.update(1), Err(FakePinError));
        pin.set_failing(false);
        led.update(2).unwrap(); // retried after the failure
        assert_eq!(pin.writes(), [false, true]);
    }

    #[test]
    fn debouncer_ignores_bounce_and_reports_long_press() {
        let mut d = Debouncer::new(DebounceConfig {
            stable_ms: 20,
            long_press_ms: Some(1000),
        });
        let mut events = Vec::new();
        // Contact bounce: 5 ms toggles for 15 ms, then held.
        let samples = [
            (0, true),
            (5, false),
            (10, true),
            (15, false),
            (20, true),
            (30, true),
            (39, true),
            (40, true),
            (500, true),
            (1019, true),
            (1020, true),
            (1500, true),
            (1600, false),
            (1605, true),
            (1610, false),
            (1625, false),
            (1630, false),
        ];
        for (t, level) in samples {
            if let Some(e) = d.sample(t, level) {
                events.push((t, e));
            }
        }
        assert_eq!(
            events,
            [
                (40, ButtonEvent::Pressed),
                (1020, ButtonEvent::LongPress),
                (1630, ButtonEvent::Released)
            ]
        );
        assert!(!d.is_pressed());
    }

    #[test]
    fn debouncer_survives_time_going_backwards() {
        let mut d = Debouncer::new(DebounceConfig::default());
        assert_eq!(d.sample(1000, true), None);
        assert_eq!(d.sample(10, true), None);
        assert_eq!(d.sample(5000, true), Some(ButtonEvent::Pressed));
    }

    #[test]
    fn button_reads_active_low_pin() {
        let pin = FakePin::new();
        pin.set_level(true); // pulled up: released
        let mut b = Button::new(
            pin.clone(),
            Polarity::ActiveLow,
            DebounceConfig {
                stable_ms: 10,
                long_press_ms: None,
            },
        );
        assert_eq!(b.poll(0).unwrap(), None);
        pin.set_level(false);
        assert_eq!(b.poll(5).unwrap(), None);
        assert_eq!(b.poll(15).unwrap(), Some(ButtonEvent::Pressed));
        assert_eq!(b.poll(5000).unwrap(), None);
        pin.set_level(true);
        assert_eq!(b.poll(5001).unwrap(), None);
        assert_eq!(b.poll(5011).unwrap(), Some(ButtonEvent::Released));
        pin.set_failing(true);
        assert!(b.poll(5020).is_err());
    }

    #[test]
    fn open_line_reports_missing_chip() {
        let Err(err) = open_line(
            "/nonexistent/gpiochip9",
            17,
            "diemcau-led",
            LineMode::Output {
                initial_high: false,
            },
        ) else {
            panic!("opened a line on a missing chip");
        };
        assert!(matches!(err, GpioError::Chip { .. }));
        assert!(std::error::Error::source(&err).is_some());
    }
}
