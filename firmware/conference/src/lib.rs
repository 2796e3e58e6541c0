//! Conference connectors: how a room talks to the district's conference server.
//!
//! [`Signalling`] is what the call driver needs from any conference system:
//! join a room as a publisher, publish an SDP offer, subscribe to another
//! bridge point's feed, exchange ICE candidates, leave. Media never passes
//! through here: SDP and candidates go to GStreamer's `webrtcbin`, which owns
//! ICE, DTLS and SRTP. [`janus::JanusClient`] implements it for the Janus
//! VideoRoom plugin over Janus's WebSocket API.

pub mod janus;

use std::future::Future;

/// A Janus plugin handle (or the equivalent in another system).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandleId(pub u64);

/// Which room to join, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSettings {
    pub room_id: u64,
    pub display_name: String,
    pub pin: Option<String>,
}

/// Another bridge point publishing in the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    pub id: u64,
    pub display: String,
}

/// The answer to a successful join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedRoom {
    pub handle: HandleId,
    /// Our own feed id in the room.
    pub feed_id: u64,
    /// Feeds already publishing when we joined.
    pub publishers: Vec<Feed>,
}

/// Things the conference tells us without being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalEvent {
    PublisherJoined(Feed),
    PublisherLeft {
        id: u64,
    },
    /// A remote ICE candidate for `handle`; `None` means gathering completed.
    RemoteCandidate {
        handle: HandleId,
        mline: u32,
        candidate: Option<String>,
    },
    /// The server's PeerConnection for `handle` is up.
    WebRtcUp {
        handle: HandleId,
    },
    /// The server hung up the PeerConnection of `handle`.
    HangUp {
        handle: HandleId,
        reason: String,
    },
    /// The signalling session is over.
    Closed {
        reason: String,
    },
}

/// Why a signalling request failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot connect to the conference server at {0}: {1}")]
    Connect(String, String),
    #[error("the conference server did not answer {0} in time")]
    Timeout(String),
    #[error("the signalling connection closed")]
    Closed,
    #[error("the conference server refused: {reason} (code {code})")]
    Server {
        code: i64,
        reason: String,
        /// True when trying again cannot help (wrong PIN, no such room).
        fatal: bool,
    },
    #[error("unexpected answer from the conference server: {0}")]
    Protocol(String),
}

impl SignalError {
    /// Whether a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SignalError::Server { fatal: true, .. })
    }
}

/// What a conference system must offer the call driver.
pub trait Signalling: Send + Sync {
    /// Joins the room as a publisher.
    fn join(&self) -> impl Future<Output = Result<JoinedRoom, SignalError>> + Send;
    /// Sends our SDP offer; returns the server's SDP answer.
    fn publish(&self, offer_sdp: &str) -> impl Future<Output = Result<String, SignalError>> + Send;
    /// Subscribes to `feed`; returns the new handle and the server's SDP offer.
    fn subscribe(
        &self,
        feed: u64,
    ) -> impl Future<Output = Result<(HandleId, String), SignalError>> + Send;
    /// Completes a subscription with our SDP answer.
    fn start(
        &self,
        handle: HandleId,
        answer_sdp: &str,
    ) -> impl Future<Output = Result<(), SignalError>> + Send;
    /// Drops a subscription.
    fn unsubscribe(&self, handle: HandleId) -> impl Future<Output = ()> + Send;
    /// Sends a local ICE candidate (`None`: gathering complete).
    fn trickle(&self, handle: HandleId, mline: u32, candidate: Option<&str>);
    /// Leaves the room and ends the session, best effort.
    fn leave(&self) -> impl Future<Output = ()> + Send;
}
