//! DNS-SD over multicast DNS (RFC 6762, RFC 6763) for one job: a commune
//! board with no district URL finds `diemcau-ops` on the district network.
//!
//! This crate owns the `_diemcau-ops._tcp.local.` service: its names and
//! TXT keys ([`service`]), a DNS message codec that takes hostile bytes
//! without panicking ([`wire`]), the responder that `diemcau-ops serve`
//! runs ([`responder`]) and the browser a device runs ([`browser`]), both
//! sans-IO state machines with time as an input, and the thin tokio/UDP
//! shells around them ([`net`]: [`Advertiser`], [`browse`]). IPv4 only (A
//! records); pure Rust, no avahi needed on either side.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use diemcau_mdns::{AdvertiseConfig, Advertiser, BrowseOptions, ServiceInfo, browse};
//! // Server: advertise on the interfaces it listens on.
//! let adv = Advertiser::start(AdvertiseConfig {
//!     instance: "diemcau-ops".into(),
//!     port: 8080,
//!     info: ServiceInfo::new(1, false),
//!     interfaces: diemcau_mdns::interfaces_for_listen("0.0.0.0".parse()?)?,
//! })?;
//! // Device: ask, for at most 3 s.
//! let found = browse(&BrowseOptions {
//!     timeout: std::time::Duration::from_secs(3),
//!     api_version: 1,
//!     interfaces: None,
//! })
//! .await?;
//! println!("district server at {}", found.url);
//! adv.stop().await;
//! # Ok(()) }
//! ```

pub mod browser;
pub mod net;
pub mod responder;
pub mod service;
pub mod wire;

pub use net::{
    AdvertiseConfig, Advertiser, BrowseError, BrowseOptions, Found, MdnsError, Names, browse,
    describe, interfaces_for_listen, multicast_interfaces,
};
pub use responder::Interface;
pub use service::{SERVICE_TYPE, ServiceInfo};
