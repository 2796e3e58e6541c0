//! Signed device requests.
//!
//! Choice: each device makes an Ed25519 key pair at enrolment and keeps the
//! private key; the server stores only the public key. Every later request
//! carries `Authorization: Diemcau-Ed25519 device=..,ts=..,nonce=..,sig=..`
//! where `sig` signs [`canonical_message`] (method, path with query,
//! timestamp in milliseconds, nonce, SHA-256 of the body). The server
//! rejects timestamps more than [`MAX_SKEW_MS`] away from its clock and any
//! signature it has already seen inside that window (replay), and checks the
//! device's revocation flag on every request.
//!
//! Why this rather than a bearer secret: nothing the server stores or logs
//! lets anyone act as a device (a database leak does not leak credentials),
//! a captured request cannot be replayed or altered, revocation is one flag
//! read per request, and it needs no certificate authority or TLS client
//! certificates on the reverse proxy (which would make revocation depend on
//! CRL distribution). The cost is one Ed25519 verification (~50 µs) per
//! request.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Authorization scheme name.
pub const SCHEME: &str = "Diemcau-Ed25519";
/// Largest accepted distance between device and server clocks.
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// The bytes a device signs for one request.
pub fn canonical_message(
    method: &str,
    path_and_query: &str,
    ts_ms: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let body_hash = hex(&Sha256::digest(body));
    format!(
        "diemcau-v1\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path_and_query,
        ts_ms,
        nonce,
        body_hash
    )
    .into_bytes()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A public or signature field could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthHeaderError {
    #[error("missing or not a `{SCHEME}` authorization header")]
    Scheme,
    #[error("authorization header field `{0}` missing or malformed")]
    Field(&'static str),
}

/// Decodes a 32-byte Ed25519 public key from standard base64.
pub fn decode_public_key(s: &str) -> Result<[u8; 32], AuthHeaderError> {
    let v = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| AuthHeaderError::Field("public_key"))?;
    v.try_into()
        .map_err(|_| AuthHeaderError::Field("public_key"))
}

/// The parsed `Authorization` header of a signed device request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeader {
    pub device_id: String,
    pub ts_ms: i64,
    pub nonce: String,
    pub signature: [u8; 64],
}

impl SignedHeader {
    /// Formats the header value.
    pub fn to_header_value(&self) -> String {
        format!(
            "{SCHEME} device={},ts={},nonce={},sig={}",
            self.device_id,
            self.ts_ms,
            self.nonce,
            base64::engine::general_purpose::STANDARD.encode(self.signature)
        )
    }

    /// Parses a header value; never panics on hostile input.
    pub fn parse(value: &str) -> Result<Self, AuthHeaderError> {
        let rest = value
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or(AuthHeaderError::Scheme)?;
        let (mut device, mut ts, mut nonce, mut sig) = (None, None, None, None);
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=').ok_or(AuthHeaderError::Scheme)?;
            match k {
                "device" => device = Some(v),
                "ts" => ts = Some(v),
                "nonce" => nonce = Some(v),
                "sig" => sig = Some(v),
                _ => {}
            }
        }
        let device_id = device
            .filter(|d| crate::validate::check_token_chars("device", d, 64).is_ok())
            .ok_or(AuthHeaderError::Field("device"))?
            .to_owned();
        let ts_ms = ts
            .and_then(|t| t.parse::<i64>().ok())
            .ok_or(AuthHeaderError::Field("ts"))?;
        let nonce = nonce
            .filter(|n| crate::validate::check_token_chars("nonce", n, 64).is_ok())
            .ok_or(AuthHeaderError::Field("nonce"))?
            .to_owned();
        let signature: [u8; 64] = sig
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .and_then(|v| v.try_into().ok())
            .ok_or(AuthHeaderError::Field("sig"))?;
        Ok(Self {
            device_id,
            ts_ms,
            nonce,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let h = SignedHeader {
            device_id: "dev_abc".into(),
            ts_ms: 1_700_000_000_123,
            nonce: "n1".into(),
            signature: [7; 64],
        };
        assert_eq!(SignedHeader::parse(&h.to_header_value()).unwrap(), h);
        assert!(SignedHeader::parse("Bearer x").is_err());
        assert!(SignedHeader::parse("Diemcau-Ed25519 device=a,ts=x,nonce=n,sig=AA==").is_err());
    }

    #[test]
    fn message_binds_body() {
        let a = canonical_message("post", "/x", 1, "n", b"a");
        let b = canonical_message("POST", "/x", 1, "n", b"b");
        assert_ne!(a, b);
        assert!(
            String::from_utf8(a)
                .unwrap()
                .starts_with("diemcau-v1\nPOST\n/x\n1\nn\n")
        );
    }
}
