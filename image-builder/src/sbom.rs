//! What is written beside the image: the SBOM (SPDX 2.3 JSON listing every
//! Debian package in the root file system, read from its dpkg database with
//! the host's `dpkg-query --admindir`), the checksum file (`sha256sum`
//! format) and the manifest (board, spec, layout, package-list hash, daemon
//! hash, root tree digest, image hash). All three are deterministic: they
//! carry `SOURCE_DATE_EPOCH`, never the wall clock.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::layout::Layout;
use crate::spec::ImageSpec;
use crate::tools::{self, ToolError};

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub source: String,
}

/// Why the SBOM or manifest could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("cannot read the package database of {root}")]
    Query {
        root: PathBuf,
        #[source]
        source: ToolError,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the installed packages of the root file system at `root`.
pub fn packages(root: &Path) -> Result<Vec<Package>, SbomError> {
    let err = |source| SbomError::Query {
        root: root.to_owned(),
        source,
    };
    let mut c = tools::cmd("dpkg-query").map_err(err)?;
    c.arg(format!(
        "--admindir={}",
        root.join("var/lib/dpkg").display()
    ))
    .args([
        "-W",
        "-f",
        "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\n",
    ]);
    let out = tools::run(c).map_err(err)?;
    Ok(parse_query(&String::from_utf8_lossy(&out)))
}

/// Parses `dpkg-query` output (installed packages only), sorted by name.
pub fn parse_query(text: &str) -> Vec<Package> {
    let mut v: Vec<_> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<_> = l.split('\t').collect();
            if f.len() < 5 || !f[0].starts_with("ii") {
                return None;
            }
            Some(Package {
                name: f[1].to_owned(),
                version: f[2].to_owned(),
                architecture: f[3].to_owned(),
                source: if f[4].is_empty() { f[1] } else { f[4] }.to_owned(),
            })
        })
        .collect();
    v.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then(a.architecture.cmp(&b.architecture))
    });
    v
}

fn rfc3339(epoch: i64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn spdx_id(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-Package-deb-{clean}")
}

/// The SPDX 2.3 document for an image.
pub fn spdx(image_name: &str, pkgs: &[Package], epoch: i64) -> serde_json::Value {
    let list_hash = crate::sha256_hex(
        pkgs.iter()
            .map(|p| format!("{} {} {}\n", p.name, p.version, p.architecture))
            .collect::<String>()
            .as_bytes(),
    );
    let packages: Vec<_> = pkgs
        .iter()
        .map(|p| {
            serde_json::json!({
                "SPDXID": spdx_id(&format!("{}-{}", p.name, p.architecture)),
                "name": p.name,
                "versionInfo": p.version,
                "supplier": "Organization: Debian",
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "sourceInfo": format!("built from Debian source package {}", p.source),
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": format!("pkg:deb/debian/{}@{}?arch={}", p.name, p.version, p.architecture),
                }],
            })
        })
        .collect();
    let relationships: Vec<_> = pkgs
        .iter()
        .map(|p| {
            serde_json::json!({
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": spdx_id(&format!("{}-{}", p.name, p.architecture)),
            })
        })
        .collect();
    serde_json::json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image_name,
        "documentNamespace": format!("https://example.invalid/diemcau/spdx/{image_name}-{}", &list_hash[..16]),
        "creationInfo": {
            "created": rfc3339(epoch),
            "creators": [format!("Tool: diemcau-image-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    })
}

/// Everything the manifest records.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest<'a> {
    pub image: String,
    pub builder: &'static str,
    pub source_date_epoch: i64,
    pub spec: &'a ImageSpec,
    pub layout: &'a Layout,
    pub kernel_cmdline: String,
    pub base_rootfs_key: String,
    pub daemon_sha256: Option<String>,
    pub daemon_deb: Option<String>,
    pub root_tree_sha256: String,
    pub image_sha256: String,
    pub image_bytes: u64,
    pub packages: usize,
}

/// Writes `text` to `path` atomically (temp file + fsync + rename).
pub fn write_atomic(path: &Path, text: &[u8]) -> Result<(), SbomError> {
    use std::io::Write;
    let err = |source| SbomError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(text).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// `sha256sum` line for a file.
pub fn checksum_line(sha: &str, file: &Path) -> String {
    format!(
        "{sha}  {}\n",
        file.file_name().unwrap_or_default().to_string_lossy()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(crate::DEFAULT_EPOCH), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn query_parsing_keeps_installed_only_sorted() {
        let t = "ii \tzlib1g\t1:1.2.13\tarm64\tzlib\nrc \told\t1\tarm64\t\nii \tbash\t5.2.15-2\tarm64\t\n";
        let p = parse_query(t);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "bash");
        assert_eq!(p[0].source, "bash");
        assert_eq!(p[1].source, "zlib");
    }

    #[test]
    fn spdx_is_deterministic_and_has_purls() {
        let p = parse_query("ii \tbash\t5.2.15-2\tarm64\t\n");
        let a = spdx("img", &p, 0);
        assert_eq!(a, spdx("img", &p, 0));
        let s = a.to_string();
        assert!(s.contains("pkg:deb/debian/bash@5.2.15-2?arch=arm64"));
        assert!(s.contains("\"SPDX-2.3\""));
    }
}
