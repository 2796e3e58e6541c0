//! Wire types shared by the room daemon (`firmware/agent`) and the district
//! server (`ops/server`), and the description of the HTTP API between them.
//!
//! This crate owns: every JSON body that crosses the wire (enrolment,
//! schedule, heartbeats, device events, server push events, the admin API),
//! the validation rules applied to them (the same code runs on the device
//! before sending and on the server on receipt), the canonical form of a
//! signed device request ([`auth`]), and the OpenAPI document ([`openapi`])
//! checked in as `ops/api/openapi.json`. It does no I/O.
//!
//! Versioning: all paths live under `/api/v1`; [`API_VERSION`] is sent by
//! the device at enrolment. Fields may be added (with `#[serde(default)]`)
//! without a version bump; removing or changing the meaning of a field needs
//! `/api/v2`.

pub mod auth;
pub mod openapi;
mod types;
mod validate;

/// Field checkers shared by the device-side file parsers.
pub mod validate_helpers {
    pub use crate::validate::{check_commune_id, check_token_chars};
}

pub use types::*;
pub use validate::{Validate, ValidationError};

/// The wire protocol version spoken by this crate.
pub const API_VERSION: u32 = 1;
