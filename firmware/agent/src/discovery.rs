//! Finding the district server without a `district_url` in the provisioning
//! file: the DNS name `diemcau-ops.<domain>` for each `search`/`domain` entry
//! of `/etc/resolv.conf` (the district DHCP server hands out the domain).
//! mDNS (`_diemcau-ops._tcp.local`) is not implemented yet.

use std::path::Path;

/// The host name looked up in each search domain.
pub const DISCOVERY_HOST: &str = "diemcau-ops";

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

/// Resolves the candidates and returns the first whose name resolves.
pub async fn discover(resolv_conf_path: &Path) -> Option<String> {
    let text = tokio::fs::read_to_string(resolv_conf_path).await.ok()?;
    for url in candidate_urls(&text) {
        let host = url.trim_start_matches("https://").to_owned();
        if let Ok(Ok(mut addrs)) = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            tokio::net::lookup_host((host.as_str(), 443)),
        )
        .await
            && addrs.next().is_some()
        {
            return Some(url);
        }
    }
    None
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
}
