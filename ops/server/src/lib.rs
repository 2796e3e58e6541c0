//! `diemcau-ops`, the district control plane, as a library (the binary in
//! `main.rs` is the CLI glue).
//!
//! This crate owns: the store of devices, communes, claim tokens, admins,
//! meetings and device events ([`store`], SQLite or PostgreSQL); enrolment
//! and the verification of signed device requests; the Janus VideoRoom
//! rooms behind each meeting ([`janus`]); server push to devices ([`push`],
//! Server-Sent Events) for "convene now", schedule changes and revocation;
//! admin authentication and the bilingual fleet page ([`page`]); the
//! HTTP routes tying them together ([`http`]); and, on the interfaces it
//! listens on, the DNS-SD advertisement `_diemcau-ops._tcp.local.` that
//! lets boards without a URL find it (`diemcau-mdns`). The wire types come
//! from `diemcau-ops-api`.

pub mod admin;
pub mod guard;
pub mod http;
pub mod janus;
pub mod page;
pub mod push;
pub mod store;
pub mod util;

pub use http::{MdnsSettings, RunningServer, ServerConfig, ServerError, start};
pub use store::Store;
