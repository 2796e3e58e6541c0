//! In-memory guards: the replay cache for signed device requests, per-IP
//! rate limiting (enrolment, login), and admin sessions.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remembers signatures seen in the last `2 × MAX_SKEW` so a captured
/// request cannot be replayed. Kept in memory: after a restart, a request
/// captured in the previous 5 minutes could be replayed once; heartbeats
/// and idempotent event batches make that harmless.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: Mutex<(HashMap<u128, i64>, i64)>,
}

impl ReplayCache {
    /// Records a signature seen at `now_ms`; `false` if already seen.
    pub fn check_and_insert(&self, signature: &[u8; 64], now_ms: i64) -> bool {
        let key = u128::from_le_bytes(signature[..16].try_into().unwrap_or([0; 16]));
        let horizon = 2 * diemcau_ops_api::auth::MAX_SKEW_MS;
        let mut g = lock(&self.seen);
        let (map, last_prune) = &mut *g;
        if now_ms - *last_prune > 30_000 {
            map.retain(|_, t| now_ms - *t < horizon);
            *last_prune = now_ms;
        }
        map.insert(key, now_ms).is_none()
    }
}

/// Token bucket per client address.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// Allows `per_minute` requests per minute per address, in bursts of
    /// as many.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`; `false` when the bucket is empty.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let cap = f64::from(self.per_minute);
        let now = Instant::now();
        let mut b = lock(&self.buckets);
        if b.len() > 100_000 {
            b.retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(120));
        }
        let (tokens, last) = b.entry(ip).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * cap / 60.0).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Admin sessions, by SHA-256 of the cookie value.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, (String, i64)>>,
}

/// How long an admin session lasts.
pub const SESSION_S: i64 = 12 * 3600;

impl Sessions {
    /// Starts a session; returns the cookie value.
    pub fn create(&self, user: &str, now: i64) -> String {
        let token = crate::util::random_secret(32);
        let mut m = lock(&self.map);
        m.retain(|_, (_, exp)| *exp > now);
        m.insert(
            crate::util::sha256_hex(&token),
            (user.to_owned(), now + SESSION_S),
        );
        token
    }

    /// The user of a live session.
    pub fn user(&self, token: &str, now: i64) -> Option<String> {
        let m = lock(&self.map);
        m.get(&crate::util::sha256_hex(token))
            .filter(|(_, exp)| *exp > now)
            .map(|(u, _)| u.clone())
    }

    /// Remembers `key` for `user` until `expires_at` (verified HTTP Basic
    /// credentials; `key` is already a salted hash).
    pub fn insert_for(&self, key: &str, user: &str, expires_at: i64) {
        let mut m = lock(&self.map);
        m.insert(crate::util::sha256_hex(key), (user.to_owned(), expires_at));
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        lock(&self.map).remove(&crate::util::sha256_hex(token));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_detected() {
        let c = ReplayCache::default();
        assert!(c.check_and_insert(&[1; 64], 1000));
        assert!(!c.check_and_insert(&[1; 64], 2000));
        assert!(c.check_and_insert(&[2; 64], 2000));
    }

    #[test]
    fn rate_limit() {
        let r = RateLimiter::new(3);
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!(r.allow(ip) && r.allow(ip) && r.allow(ip));
        assert!(!r.allow(ip));
        assert!(r.allow([127, 0, 0, 2].into()));
    }

    #[test]
    fn sessions() {
        let s = Sessions::default();
        let t = s.create("an", 100);
        assert_eq!(s.user(&t, 101).as_deref(), Some("an"));
        assert_eq!(s.user(&t, 100 + SESSION_S), None);
        s.remove(&t);
        assert_eq!(s.user(&t, 101), None);
    }
}
