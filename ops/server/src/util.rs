//! Small helpers: ids, secrets, clock.

use base64::Engine as _;
use rand::TryRngCore as _;
use sha2::{Digest as _, Sha256};

/// Fills `b` from the OS RNG (falls back to the thread RNG, itself seeded
/// from the OS, if the syscall fails).
pub fn fill_random(b: &mut [u8]) {
    if rand::rngs::OsRng.try_fill_bytes(b).is_err() {
        rand::fill(b);
    }
}

/// `prefix_` + lowercase base32 of `n` random bytes.
pub fn random_id(prefix: &str, n: usize) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut b = vec![0u8; n];
    fill_random(&mut b);
    let body: String = b
        .iter()
        .map(|x| ALPHABET[(x & 31) as usize] as char)
        .collect();
    format!("{prefix}_{body}")
}

/// A URL-safe secret with `n` random bytes.
pub fn random_secret(n: usize) -> String {
    let mut b = vec![0u8; n];
    fill_random(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// SHA-256 hex of a high-entropy secret (tokens, session ids).
pub fn sha256_hex(s: &str) -> String {
    diemcau_ops_api::auth::hex(&Sha256::digest(s.as_bytes()))
}

/// Unix seconds now.
pub fn now() -> i64 {
    now_ms() / 1000
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses `90s`, `15m`, `24h`, `7d` into seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("24h"), Some(86400));
        assert_eq!(super::parse_duration("90s"), Some(90));
        assert_eq!(super::parse_duration("7d"), Some(604800));
        assert_eq!(super::parse_duration("7"), None);
        assert_eq!(super::parse_duration("h"), None);
        assert_eq!(super::parse_duration("99999999999999999999d"), None);
    }
}
