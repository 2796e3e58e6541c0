//! The `_diemcau-ops._tcp` service: its names and what its TXT record says
//! (RFC 6763 §6).
//!
//! ```text
//! txtvers=1        this TXT layout
//! api=/api/v1      where the device API lives on this host and port
//! apiver=1         the API version (diemcau_ops_api::API_VERSION)
//! tls=0            1: devices must use https (a TLS proxy in front of ops)
//! ```

use crate::wire::{Name, NameError};

/// The DNS-SD service type of the district server.
pub const SERVICE_TYPE: &str = "_diemcau-ops._tcp.local.";

/// The DNS-SD meta-query name for service type enumeration (RFC 6763 §9).
pub const SERVICES_META: &str = "_services._dns-sd._udp.local.";

/// `_diemcau-ops._tcp.local.` as a name.
pub fn service_type() -> Name {
    Name::from_dotted(SERVICE_TYPE).unwrap_or_default()
}

/// `<instance>._diemcau-ops._tcp.local.`
pub fn instance_name(instance: &str) -> Result<Name, NameError> {
    service_type().child(instance)
}

/// `<host>.local.`
pub fn host_name(host: &str) -> Result<Name, NameError> {
    Name::from_labels(["local"])?.child(host)
}

/// What the TXT record of a diemcau-ops instance says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Path of the device API on the advertised host and port (`/api/v1`).
    pub api_path: String,
    /// The API version the server speaks.
    pub api_version: u32,
    /// Devices must use https.
    pub tls: bool,
}

/// A TXT record that is not a usable diemcau-ops description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxtError {
    #[error("TXT layout txtvers={0} is not known (this device knows 1)")]
    Layout(String),
    #[error("TXT has no apiver")]
    NoVersion,
    #[error("TXT key `{key}`: expected {expected}, got `{got}`")]
    Invalid {
        key: &'static str,
        expected: &'static str,
        got: String,
    },
}

impl ServiceInfo {
    /// The description for API version `api_version` at `/api/v<N>`.
    pub fn new(api_version: u32, tls: bool) -> ServiceInfo {
        ServiceInfo {
            api_path: format!("/api/v{api_version}"),
            api_version,
            tls,
        }
    }

    /// The TXT strings.
    pub fn to_txt(&self) -> Vec<Vec<u8>> {
        [
            "txtvers=1".to_owned(),
            format!("api={}", self.api_path),
            format!("apiver={}", self.api_version),
            format!("tls={}", u8::from(self.tls)),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect()
    }

    /// Reads TXT strings: keys ignore case, the first occurrence of a key
    /// wins, unknown keys are ignored, a key without `=` is a true flag
    /// (RFC 6763 §6.4, §6.5).
    pub fn from_txt(strings: &[Vec<u8>]) -> Result<ServiceInfo, TxtError> {
        let mut seen: Vec<String> = Vec::new();
        let mut txtvers = None;
        let mut api = None;
        let mut apiver = None;
        let mut tls = None;
        for s in strings {
            let (key, value) = match s.iter().position(|&b| b == b'=') {
                Some(i) => (&s[..i], Some(&s[i + 1..])),
                None => (&s[..], None),
            };
            let Ok(key) = std::str::from_utf8(key) else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if key.is_empty() || seen.contains(&key) {
                continue;
            }
            seen.push(key.clone());
            let value = value.map(|v| String::from_utf8_lossy(v).into_owned());
            match key.as_str() {
                "txtvers" => txtvers = Some(value.unwrap_or_default()),
                "api" => api = Some(value.unwrap_or_default()),
                "apiver" => apiver = Some(value.unwrap_or_default()),
                "tls" => tls = Some(value),
                _ => {}
            }
        }
        if let Some(v) = txtvers
            && v != "1"
        {
            return Err(TxtError::Layout(v));
        }
        let apiver = apiver.ok_or(TxtError::NoVersion)?;
        let api_version = apiver
            .parse::<u32>()
            .ok()
            .filter(|v| (1..=999).contains(v))
            .ok_or_else(|| TxtError::Invalid {
                key: "apiver",
                expected: "a version number",
                got: apiver.clone(),
            })?;
        let api_path = api.unwrap_or_else(|| format!("/api/v{api_version}"));
        let path_ok = api_path.starts_with('/')
            && api_path.len() <= 200
            && api_path
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%' | b'\\'));
        if !path_ok {
            return Err(TxtError::Invalid {
                key: "api",
                expected: "a path like /api/v1",
                got: api_path,
            });
        }
        let tls = match tls {
            None => false,
            Some(None) => true,
            Some(Some(v)) => match v.as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                _ => {
                    return Err(TxtError::Invalid {
                        key: "tls",
                        expected: "0 or 1",
                        got: v,
                    });
                }
            },
        };
        Ok(ServiceInfo {
            api_path,
            api_version,
            tls,
        })
    }

    /// The URL prefix before `/api/v<N>` (empty when the API is at the
    /// root), or `None` when the path does not end in `/api/v<N>`.
    pub fn base_path(&self) -> Option<&str> {
        let suffix = format!("/api/v{}", self.api_version);
        self.api_path
            .trim_end_matches('/')
            .strip_suffix(suffix.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn round_trip() {
        for tls in [false, true] {
            let i = ServiceInfo::new(1, tls);
            assert_eq!(ServiceInfo::from_txt(&i.to_txt()).unwrap(), i);
            assert_eq!(i.base_path(), Some(""));
        }
        assert_eq!(
            ServiceInfo::new(1, false).to_txt(),
            txt(&["txtvers=1", "api=/api/v1", "apiver=1", "tls=0"])
        );
    }

    #[test]
    fn rfc6763_rules() {
        // Case-insensitive keys, first wins, unknown ignored, flag form.
        let i = ServiceInfo::from_txt(&txt(&[
            "APIVER=1",
            "apiver=7",
            "colour=red",
            "TLS",
            "tls=0",
        ]))
        .unwrap();
        assert_eq!(i.api_version, 1);
        assert!(i.tls);
        assert_eq!(i.api_path, "/api/v1");
        let i = ServiceInfo::from_txt(&txt(&["apiver=1", "api=/ops/api/v1/"])).unwrap();
        assert_eq!(i.base_path(), Some("/ops"));
        let i = ServiceInfo::from_txt(&txt(&["apiver=2", "api=/x"])).unwrap();
        assert_eq!(i.base_path(), None);
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        assert_eq!(
            ServiceInfo::from_txt(&txt(&["txtvers=1"])),
            Err(TxtError::NoVersion)
        );
        assert!(matches!(
            ServiceInfo::from_txt(&txt(&["txtvers=2", "apiver=1"])),
            Err(TxtError::Layout(_))
        ));
        for bad in [
            &["apiver=one"][..],
            &["apiver=0"],
            &["apiver=1", "api=relative"],
            &["apiver=1", "api=/a b"],
            &["apiver=1", "api=/a?x"],
            &["apiver=1", "tls=maybe"],
        ] {
            assert!(
                matches!(
                    ServiceInfo::from_txt(&txt(bad)),
                    Err(TxtError::Invalid { .. })
                ),
                "{bad:?}"
            );
        }
        // Bytes that are not UTF-8 never panic.
        let _ = ServiceInfo::from_txt(&[vec![0xFF, b'=', 0xFE], vec![b'='], vec![]]);
    }

    #[test]
    fn names() {
        assert_eq!(
            instance_name("diemcau-ops (2)").unwrap().to_string(),
            "diemcau-ops (2)._diemcau-ops._tcp.local."
        );
        assert_eq!(host_name("hop").unwrap().to_string(), "hop.local.");
    }
}
