//! The diemcau room daemon's wiring: configuration, the control socket, the
//! call adapter and the run loop that feeds the room state machine
//! ([`diemcau_core::Room`]) and carries out what it asks for. The binary
//! (`main.rs`) only parses arguments and calls into here.

pub mod call;
pub mod config;
pub mod ctl;
pub mod devices;
pub mod district;
pub mod hw;
pub mod remote;
pub mod run;
pub mod screen;
pub mod selftest;
pub mod tv;
pub mod volume;

/// An error and all its causes on one line, for logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
