//! Room controls: remote keys (evdev), HDMI-CEC, GPIO buttons and LEDs, the hardware
//! watchdog and systemd notification.
//!
//! Every hardware boundary is a trait or a generic with a real Linux driver and a fake
//! beside it ([`keys::RemoteSource`] with [`evdev::EvdevRemote`] and [`keys::FakeRemote`];
//! [`cec::CecDevice`] with [`cec_linux::LinuxCec`], [`cec::FakeCec`] and the
//! folder-backed [`cec_sim::SimCec`] for tests across processes; embedded-hal pins
//! with [`gpio::open_line`] and [`gpio::FakePin`]). Policy that needs time takes it
//! as an input ([`cec::TvControl`], [`gpio::StatusLed`], [`gpio::Debouncer`]), so tests are
//! deterministic. All `unsafe` (ioctls) lives in the private `sys` module.

pub mod cec;
pub mod cec_linux;
pub mod cec_sim;
pub mod evdev;
pub mod gpio;
pub mod keys;
pub mod notify;
mod sys;
pub mod watchdog;
