//! Input validation shared by both sides. Every body that comes off the wire
//! is validated before use; errors name the field and what was expected.

use crate::types::*;

/// A field of a request failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field `{field}`: expected {expected}")]
pub struct ValidationError {
    /// Dotted path of the field, e.g. `link.quality_pct`.
    pub field: String,
    /// What was expected, in words.
    pub expected: String,
}

impl ValidationError {
    fn new(field: impl Into<String>, expected: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            expected: expected.into(),
        }
    }
}

/// Implemented by every request body.
pub trait Validate {
    /// Checks every field; the first problem found is returned.
    fn validate(&self) -> Result<(), ValidationError>;
}

/// Largest accepted unix time (year 2100); smaller than any overflow.
pub const MAX_UNIX_TIME: i64 = 4_102_444_800;
/// Longest meeting accepted (24 h).
pub const MAX_MEETING_S: i64 = 24 * 3600;

fn printable(field: &str, s: &str, max: usize) -> Result<(), ValidationError> {
    if s.trim().is_empty() || s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            format!("1 to {max} printable characters"),
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9._-]`, 1..=max characters.
pub fn check_token_chars(field: &str, s: &str, max: usize) -> Result<(), ValidationError> {
    if s.is_empty()
        || s.len() > max
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(ValidationError::new(
            field,
            format!("1 to {max} characters from A-Z a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}

/// Commune ids: `[a-z0-9-]{1,64}`.
pub fn check_commune_id(field: &str, s: &str) -> Result<(), ValidationError> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ValidationError::new(
            field,
            "a commune id: 1 to 64 characters from a-z 0-9 -",
        ));
    }
    Ok(())
}

fn check_time(field: &str, t: i64) -> Result<(), ValidationError> {
    if !(0..=MAX_UNIX_TIME).contains(&t) {
        return Err(ValidationError::new(
            field,
            "unix seconds between 1970 and 2100",
        ));
    }
    Ok(())
}

fn check_versions(versions: &Versions) -> Result<(), ValidationError> {
    if versions.len() > 32 {
        return Err(ValidationError::new("versions", "at most 32 entries"));
    }
    for (k, v) in versions {
        check_token_chars("versions.<key>", k, 64)?;
        printable(&format!("versions.{k}"), v, 128)?;
    }
    Ok(())
}

fn check_communes(communes: &[String]) -> Result<(), ValidationError> {
    if communes.is_empty() || communes.len() > 1000 {
        return Err(ValidationError::new("communes", "1 to 1000 commune ids"));
    }
    for c in communes {
        check_commune_id("communes[]", c)?;
    }
    Ok(())
}

impl Validate for EnrolRequest {
    fn validate(&self) -> Result<(), ValidationError> {
        if self.api_version != crate::API_VERSION {
            return Err(ValidationError::new(
                "api_version",
                format!("{}", crate::API_VERSION),
            ));
        }
        check_token_chars("claim_token", &self.claim_token, 128)?;
        check_token_chars("serial", &self.serial, 64)?;
        check_token_chars("board", &self.board, 64)?;
        check_versions(&self.versions)?;
        crate::auth::decode_public_key(&self.public_key)
            .map_err(|_| ValidationError::new("public_key", "32 bytes, standard base64"))?;
        if let Some(c) = &self.commune {
            check_commune_id("commune", c)?;
        }
        Ok(())
    }
}

impl Validate for Commune {
    fn validate(&self) -> Result<(), ValidationError> {
        check_commune_id("id", &self.id)?;
        printable("name", &self.name, 128)
    }
}

impl Validate for Heartbeat {
    fn validate(&self) -> Result<(), ValidationError> {
        check_versions(&self.versions)?;
        if let Some(t) = &self.self_test {
            if t.checks.len() > 8 {
                return Err(ValidationError::new("self_test.checks", "at most 8 checks"));
            }
            check_token_chars("self_test.trigger", &t.trigger, 32)?;
            for c in &t.checks {
                check_token_chars("self_test.checks.name", &c.name, 32)?;
                if c.detail.chars().count() > 500 || c.detail.chars().any(char::is_control) {
                    return Err(ValidationError::new(
                        "self_test.checks.detail",
                        "at most 500 printable characters",
                    ));
                }
            }
        }
        if self.uptime_s > 100 * 365 * 86400 {
            return Err(ValidationError::new("uptime_s", "at most 100 years"));
        }
        if let Some(t) = self.temperature_c
            && !(t.is_finite() && (-60.0..=150.0).contains(&t))
        {
            return Err(ValidationError::new(
                "temperature_c",
                "a number between -60 and 150",
            ));
        }
        if let Some(k) = &self.link.kind {
            check_token_chars("link.kind", k, 32)?;
        }
        if let Some(s) = self.link.signal_dbm
            && !(-200..=50).contains(&s)
        {
            return Err(ValidationError::new("link.signal_dbm", "-200 to 50"));
        }
        if let Some(q) = self.link.quality_pct
            && q > 100
        {
            return Err(ValidationError::new("link.quality_pct", "0 to 100"));
        }
        if let Some(c) = &self.call {
            if let Some(m) = &c.meeting_id {
                check_token_chars("call.meeting_id", m, 64)?;
            }
            if !(c.fps.is_finite() && (0.0..=240.0).contains(&c.fps)) {
                return Err(ValidationError::new("call.fps", "0 to 240"));
            }
        }
        Ok(())
    }
}

impl Validate for DeviceEvent {
    fn validate(&self) -> Result<(), ValidationError> {
        check_token_chars("events[].id", &self.id, 64)?;
        check_time("events[].at", self.at)?;
        if let Some(m) = &self.meeting_id {
            check_token_chars("events[].meeting_id", m, 64)?;
        }
        if let Some(m) = &self.message
            && (m.chars().count() > 1000 || m.chars().any(|c| c.is_control() && c != '\n'))
        {
            return Err(ValidationError::new(
                "events[].message",
                "at most 1000 printable characters",
            ));
        }
        Ok(())
    }
}

impl Validate for EventBatch {
    fn validate(&self) -> Result<(), ValidationError> {
        if self.events.len() > 500 {
            return Err(ValidationError::new("events", "at most 500 events"));
        }
        self.events.iter().try_for_each(Validate::validate)
    }
}

impl Validate for CreateMeeting {
    fn validate(&self) -> Result<(), ValidationError> {
        printable("title", &self.title, 200)?;
        check_time("starts_at", self.starts_at)?;
        check_time("ends_at", self.ends_at)?;
        if self.ends_at <= self.starts_at || self.ends_at - self.starts_at > MAX_MEETING_S {
            return Err(ValidationError::new(
                "ends_at",
                "after starts_at, at most 24 h later",
            ));
        }
        check_communes(&self.communes)
    }
}

impl Validate for ConveneRequest {
    fn validate(&self) -> Result<(), ValidationError> {
        printable("title", &self.title, 200)?;
        if let Some(d) = self.duration_min
            && !(1..=24 * 60).contains(&d)
        {
            return Err(ValidationError::new("duration_min", "1 to 1440"));
        }
        check_communes(&self.communes)
    }
}

impl Validate for CreateToken {
    fn validate(&self) -> Result<(), ValidationError> {
        if !(1..=10_000).contains(&self.uses) {
            return Err(ValidationError::new("uses", "1 to 10000"));
        }
        if !(60..=90 * 86400).contains(&self.expires_in_s) {
            return Err(ValidationError::new("expires_in_s", "60 s to 90 days"));
        }
        if let Some(c) = &self.commune {
            check_commune_id("commune", c)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_field() {
        let m = CreateMeeting {
            title: "Họp giao ban".into(),
            starts_at: 100,
            ends_at: 50,
            communes: vec!["xa-a".into()],
        };
        let e = m.validate().unwrap_err();
        assert_eq!(e.field, "ends_at");
        assert!(e.to_string().contains("after starts_at"));
    }

    #[test]
    fn vietnamese_titles_are_fine() {
        let m = CreateMeeting {
            title: "Hội nghị trực tuyến Huyện".into(),
            starts_at: 1_800_000_000,
            ends_at: 1_800_003_600,
            communes: vec!["xa-tan-lap".into()],
        };
        m.validate().unwrap();
    }
}
