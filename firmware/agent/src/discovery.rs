//! Finding the district server without a `district_url` in the provisioning
//! file, in this order:
//!
//! 1. mDNS / DNS-SD: browse for `_diemcau-ops._tcp.local.` on every up,
//!    multicast-capable interface for a bounded time (3 s by default) and
//!    take the first server that speaks this device's API version
//!    (`diemcau-ops serve` advertises itself on the interfaces it listens
//!    on; see `diemcau-mdns`). The URL uses the server's address, so no
//!    `.local` name resolution is needed on the board.
//! 2. DNS: the name `diemcau-ops.<domain>` for each `search`/`domain` entry
//!    of `/etc/resolv.conf` (the district DHCP server hands out the
//!    domain), as `https://diemcau-ops.<domain>`.
//!
//! When both fail the error says what each one tried.

use std::path::Path;
use std::time::{Duration, Instant};

/// The host name looked up in each search domain.
pub const DISCOVERY_HOST: &str = "diemcau-ops";

/// How long one DNS lookup may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(3);

/// Search domains from resolv.conf text, in order, without duplicates.
pub fn search_domains(resolv_conf: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if let Some("search" | "domain") = words.next() {
            for d in words {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                let ok = !d.is_empty()
                    && d.len() <= 253
                    && d.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if ok && !out.contains(&d) {
                    out.push(d);
                }
            }
        }
    }
    out
}

/// Candidate base URLs, most likely first.
pub fn candidate_urls(resolv_conf: &str) -> Vec<String> {
    search_domains(resolv_conf)
        .into_iter()
        .map(|d| format!("https://{DISCOVERY_HOST}.{d}"))
        .collect()
}

/// How the server was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// By mDNS: the instance that answered.
    Mdns { instance: String },
    /// By the DNS name in a search domain.
    Dns,
}

/// A district server found on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// Base URL (`http://10.0.0.5:8080`, `https://diemcau-ops.huyen.lan`).
    pub url: String,
    pub method: Method,
    /// How long finding it took.
    pub took: Duration,
}

/// Where to look.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig<'a> {
    pub resolv_conf: &'a Path,
    /// How long to browse by mDNS; `None` skips mDNS.
    pub mdns_timeout: Option<Duration>,
    /// The API version this device speaks.
    pub api_version: u32,
}

/// Neither mDNS nor DNS found a district server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no district server found on the network (mDNS: {mdns}; DNS: {dns}); \
     check the board's network cable, or put district_url in the provisioning file"
)]
pub struct DiscoveryError {
    /// What the mDNS browse saw.
    pub mdns: String,
    /// What the DNS lookups saw.
    pub dns: String,
}

/// Looks for the server: mDNS first, then DNS. Bounded: at most the mDNS
/// timeout plus 3 s per search domain.
pub async fn discover(cfg: &DiscoveryConfig<'_>) -> Result<Discovered, DiscoveryError> {
    let t0 = Instant::now();
    let mdns = match cfg.mdns_timeout {
        None => "turned off".to_owned(),
        Some(timeout) => {
            let opts = diemcau_mdns::BrowseOptions {
                timeout,
                api_version: cfg.api_version,
                interfaces: None,
            };
            match diemcau_mdns::browse(&opts).await {
                Ok(f) => {
                    tracing::info!(
                        url = %f.url,
                        instance = %f.instance,
                        host = %f.host,
                        ms = f.took.as_millis() as u64,
                        "district server found by mDNS"
                    );
                    return Ok(Discovered {
                        url: f.url,
                        method: Method::Mdns {
                            instance: f.instance,
                        },
                        took: t0.elapsed(),
                    });
                }
                Err(e) => error_chain(&e),
            }
        }
    };
    let dns = match dns_lookup(cfg.resolv_conf).await {
        Ok(url) => {
            tracing::info!(%url, "district server found by DNS");
            return Ok(Discovered {
                url,
                method: Method::Dns,
                took: t0.elapsed(),
            });
        }
        Err(why) => why,
    };
    Err(DiscoveryError { mdns, dns })
}

/// Resolves the DNS candidates; the first whose name resolves, or what
/// went wrong.
async fn dns_lookup(resolv_conf_path: &Path) -> Result<String, String> {
    let text = tokio::fs::read_to_string(resolv_conf_path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", resolv_conf_path.display()))?;
    let urls = candidate_urls(&text);
    if urls.is_empty() {
        return Err(format!(
            "no search domain in {}",
            resolv_conf_path.display()
        ));
    }
    let mut tried = Vec::new();
    for url in urls {
        let host = url.trim_start_matches("https://").to_owned();
        match tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host.as_str(), 443))).await
        {
            Ok(Ok(mut addrs)) => match addrs.next() {
                Some(_) => return Ok(url),
                None => tried.push(format!("{host}: no address")),
            },
            Ok(Err(e)) => tried.push(format!("{host}: {e}")),
            Err(_) => tried.push(format!("{host}: no answer in 3 s")),
        }
    }
    Err(tried.join(", "))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_search_and_domain() {
        let t = "nameserver 10.0.0.1\nsearch huyen-a.lan. Example.org\ndomain huyen-a.lan\n# c\n";
        assert_eq!(
            candidate_urls(t),
            vec![
                "https://diemcau-ops.huyen-a.lan",
                "https://diemcau-ops.example.org"
            ]
        );
        assert!(search_domains("search bad_domain!").is_empty());
    }

    /// With mDNS off (no packet leaves this machine) and a resolv.conf
    /// without a search domain, the error names both ways it looked.
    #[tokio::test]
    async fn error_says_what_was_tried() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
        let e = discover(&DiscoveryConfig {
            resolv_conf: &resolv,
            mdns_timeout: None,
            api_version: 1,
        })
        .await
        .unwrap_err();
        assert_eq!(e.mdns, "turned off");
        assert!(e.dns.contains("no search domain"), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("mDNS: turned off") && msg.contains("district_url"),
            "{msg}"
        );
        let e = discover(&DiscoveryConfig {
            resolv_conf: &dir.path().join("missing"),
            mdns_timeout: None,
            api_version: 1,
        })
        .await
        .unwrap_err();
        assert!(e.dns.contains("cannot read"), "{e}");
    }
}
