//! The diemcau room daemon's wiring: configuration, the control socket, the
//! call adapter and the run loop that feeds the room state machine
//! ([`diemcau_core::Room`]) and carries out what it asks for. The binary
//! (`main.rs`) only parses arguments and calls into here.

pub mod call;
pub mod config;
pub mod ctl;
pub mod district;
pub mod run;
