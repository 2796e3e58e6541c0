//! The provisioning file written on the image's boot partition by
//! `diemcau-image customise` (or by hand): raw TOML first, then validated.
//!
//! ```toml
//! district_url = "https://ops.huyen-a.example"   # optional: else DNS discovery
//! claim_token = "dc1_..."                         # required
//! commune = "xa-tan-lap"                          # optional
//! [wifi]                                          # optional
//! ssid = "UBND-XA"
//! psk = "secret"
//! ssh_authorized_keys = ["ssh-ed25519 AAAA... tech@huyen"]  # optional
//! ```

use std::path::{Path, PathBuf};

use diemcau_ops_api::validate_helpers;
use serde::Deserialize;

/// What the file says (no validation yet).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvisioning {
    district_url: Option<String>,
    claim_token: Option<String>,
    commune: Option<String>,
    wifi: Option<RawWifi>,
    #[serde(default)]
    ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWifi {
    ssid: Option<String>,
    psk: Option<String>,
}

/// Wi-Fi credentials (the daemon hands them to the network manager).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wifi {
    pub ssid: String,
    pub psk: Option<String>,
}

/// A validated provisioning file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioning {
    /// `http(s)://host[:port]` without trailing slash; `None` means "discover".
    pub district_url: Option<String>,
    pub claim_token: String,
    pub commune: Option<String>,
    pub wifi: Option<Wifi>,
    pub ssh_authorized_keys: Vec<String>,
}

/// Why a provisioning file was refused. Messages name the file, the key and
/// what was expected, so an installer can fix it from the screen.
#[derive(Debug, thiserror::Error)]
pub enum ProvisioningError {
    #[error("cannot read provisioning file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("provisioning file {path} is not valid TOML")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("provisioning file {path}: key `{key}`: expected {expected}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        expected: String,
    },
}

impl Provisioning {
    /// Reads and validates a provisioning file.
    pub fn load(path: &Path) -> Result<Self, ProvisioningError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProvisioningError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates provisioning text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ProvisioningError> {
        let raw: RawProvisioning =
            toml::from_str(text).map_err(|source| ProvisioningError::Parse {
                path: path.to_owned(),
                source,
            })?;
        let invalid = |key: &'static str, expected: &str| ProvisioningError::Invalid {
            path: path.to_owned(),
            key,
            expected: expected.to_owned(),
        };
        let district_url = match raw.district_url {
            None => None,
            Some(u) => Some(normalise_url(&u).ok_or_else(|| {
                invalid("district_url", "an http:// or https:// URL with a host")
            })?),
        };
        let claim_token = raw
            .claim_token
            .filter(|t| validate_helpers::check_token_chars("claim_token", t, 128).is_ok())
            .ok_or_else(|| {
                invalid(
                    "claim_token",
                    "a claim token (from `diemcau-ops token create`)",
                )
            })?;
        if let Some(c) = &raw.commune {
            validate_helpers::check_commune_id("commune", c)
                .map_err(|_| invalid("commune", "a commune id: a-z 0-9 - (1 to 64)"))?;
        }
        let wifi = match raw.wifi {
            None => None,
            Some(w) => {
                let ssid = w
                    .ssid
                    .filter(|s| !s.is_empty() && s.len() <= 32)
                    .ok_or_else(|| invalid("wifi.ssid", "1 to 32 bytes"))?;
                if let Some(p) = &w.psk
                    && !(8..=63).contains(&p.len())
                {
                    return Err(invalid("wifi.psk", "8 to 63 characters (WPA2 passphrase)"));
                }
                Some(Wifi { ssid, psk: w.psk })
            }
        };
        for k in &raw.ssh_authorized_keys {
            let ok = k.starts_with("ssh-ed25519 ")
                || k.starts_with("ssh-rsa ")
                || k.starts_with("ecdsa-sha2-");
            if !ok || k.contains('\n') {
                return Err(invalid(
                    "ssh_authorized_keys",
                    "one OpenSSH public key per string (ssh-ed25519 ...)",
                ));
            }
        }
        Ok(Self {
            district_url,
            claim_token,
            commune: raw.commune,
            wifi,
            ssh_authorized_keys: raw.ssh_authorized_keys,
        })
    }
}

/// `http(s)://host[:port][/prefix]` without trailing slash, or `None`.
pub fn normalise_url(u: &str) -> Option<String> {
    let u = u.trim().trim_end_matches('/');
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))?;
    let host = rest.split('/').next()?;
    if host.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    Some(u.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_file() {
        let p = Provisioning::parse(
            Path::new("/boot/diemcau.toml"),
            r#"district_url = "http://127.0.0.1:8080/"
claim_token = "dc1_abc"
commune = "xa-a"
ssh_authorized_keys = ["ssh-ed25519 AAAA tech"]
[wifi]
ssid = "UBND"
psk = "12345678"
"#,
        )
        .unwrap();
        assert_eq!(p.district_url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(p.wifi.unwrap().ssid, "UBND");
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        let e = Provisioning::parse(
            Path::new("/boot/diemcau.toml"),
            "district_url = \"ftp://x\"\nclaim_token=\"a\"",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/boot/diemcau.toml") && e.contains("district_url") && e.contains("http"),
            "{e}"
        );
        let e = Provisioning::parse(Path::new("p.toml"), "commune = \"xa-a\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("claim_token"), "{e}");
        let e = Provisioning::parse(
            Path::new("p.toml"),
            "claim_token = \"a\"\n[wifi]\nssid=\"x\"\npsk=\"short\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("wifi.psk"), "{e}");
        let e = Provisioning::parse(Path::new("p.toml"), "claim_tokn = \"a\"").unwrap_err();
        assert!(matches!(e, ProvisioningError::Parse { .. }));
    }
}
