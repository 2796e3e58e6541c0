//! Per-site customisation of a finished image: writes the provisioning file
//! (`diemcau-provision.toml`) at the root of the boot partition, the file the
//! device agent (`firmware/agent/src/provisioning.rs`) reads on first boot.
//! Nothing is rebuilt and nothing is mounted: the boot partition is found
//! from the image's MBR and written with mtools (`mcopy -i IMAGE@@OFFSET`),
//! so a technician needs no root. Inputs are checked with the same rules as
//! the agent, so a file this writes is one the device accepts.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::layout;
use crate::tools::{self, ToolError};

/// Name of the provisioning file at the root of the boot partition.
pub const PROVISION_FILE: &str = "diemcau-provision.toml";

/// What the technician gave on the command line.
#[derive(Debug, Clone, Default)]
pub struct SiteInput {
    pub district_url: String,
    pub claim_token: String,
    pub commune: Option<String>,
    /// `SSID:PSK`, or `SSID` for an open network.
    pub wifi: Option<String>,
    /// OpenSSH public keys, one per line (comments and blank lines skipped).
    pub ssh_keys_text: Option<String>,
}

/// The provisioning file as written (keys as the agent expects them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provision {
    pub district_url: String,
    pub claim_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commune: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wifi: Option<Wifi>,
}

/// Wi-Fi credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wifi {
    pub ssid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psk: Option<String>,
}

/// Why customisation failed.
#[derive(Debug, thiserror::Error)]
pub enum CustomiseError {
    #[error("{option}: {expected}")]
    BadInput {
        option: &'static str,
        expected: String,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find the boot partition")]
    Layout(#[from] layout::LayoutError),
    #[error("{image}: partition {number} at byte {offset} does not hold a FAT file system")]
    NotFat {
        image: PathBuf,
        number: u32,
        offset: u64,
    },
    #[error("cannot write {PROVISION_FILE} into the boot partition of {image}")]
    Write {
        image: PathBuf,
        #[source]
        source: ToolError,
    },
    #[error("cannot write a temporary file")]
    Temp(#[source] std::io::Error),
}

fn bad(option: &'static str, expected: impl Into<String>) -> CustomiseError {
    CustomiseError::BadInput {
        option,
        expected: expected.into(),
    }
}

impl Provision {
    /// Checks the technician's input, with the agent's rules.
    pub fn from_input(input: &SiteInput) -> Result<Self, CustomiseError> {
        use diemcau_ops_api::validate_helpers as v;
        let url = input.district_url.trim().trim_end_matches('/');
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        let host_ok = rest
            .and_then(|r| r.split('/').next())
            .is_some_and(|h| !h.is_empty());
        if !host_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                "--district-url",
                format!(
                    "an http:// or https:// URL with a host, such as https://ops.huyen.example, found {:?}",
                    input.district_url
                ),
            ));
        }
        v::check_token_chars("claim_token", &input.claim_token, 128).map_err(|_| {
            bad(
                "--claim-token",
                "1 to 128 characters from A-Z a-z 0-9 . _ - (from `diemcau-ops token create`)",
            )
        })?;
        if let Some(c) = &input.commune {
            v::check_commune_id("commune", c).map_err(|_| {
                bad(
                    "--commune",
                    format!("a commune id: 1 to 64 characters from a-z 0-9 - (e.g. xa-tan-lap), found {c:?}"),
                )
            })?;
        }
        let wifi = match &input.wifi {
            None => None,
            Some(w) => {
                let (ssid, psk) = match w.split_once(':') {
                    Some((s, p)) => (s, Some(p)),
                    None => (w.as_str(), None),
                };
                if ssid.is_empty() || ssid.len() > 32 {
                    return Err(bad(
                        "--wifi",
                        "SSID:PSK with an SSID of 1 to 32 bytes (or SSID alone for an open network)",
                    ));
                }
                if let Some(p) = psk
                    && !(8..=63).contains(&p.len())
                {
                    return Err(bad(
                        "--wifi",
                        "a WPA2 passphrase of 8 to 63 characters after the colon",
                    ));
                }
                Some(Wifi {
                    ssid: ssid.to_owned(),
                    psk: psk.map(str::to_owned),
                })
            }
        };
        let mut keys = Vec::new();
        if let Some(text) = &input.ssh_keys_text {
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let ok = line.starts_with("ssh-ed25519 ")
                    || line.starts_with("ssh-rsa ")
                    || line.starts_with("ecdsa-sha2-");
                if !ok {
                    return Err(bad(
                        "--ssh-key",
                        format!(
                            "OpenSSH public keys (ssh-ed25519 AAAA... name), one per line; found a line starting {:?}. Did you give the private key?",
                            line.chars().take(20).collect::<String>()
                        ),
                    ));
                }
                keys.push(line.to_owned());
            }
            if keys.is_empty() {
                return Err(bad("--ssh-key", "the file holds no public key"));
            }
        }
        Ok(Provision {
            district_url: url.to_owned(),
            claim_token: input.claim_token.clone(),
            commune: input.commune.clone(),
            ssh_authorized_keys: keys,
            wifi,
        })
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# diemcau provisioning, written by `diemcau-image customise`.\n\
             # Read by the room daemon on first boot; holds a claim token: keep the card safe.\n{body}"
        )
    }
}

/// Checks the FAT boot sector at `offset` (jump instruction and 55 AA).
fn looks_like_fat(image: &Path, offset: u64) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut b = [0u8; 512];
    let ok = std::fs::File::open(image).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut b)
    });
    ok.is_ok() && matches!(b[0], 0xeb | 0xe9) && b[510] == 0x55 && b[511] == 0xaa
}

/// Writes `name` with `contents` into the boot partition of `image`.
pub fn write_boot_file(image: &Path, name: &str, contents: &[u8]) -> Result<(), CustomiseError> {
    let boot = layout::find_boot(image)?;
    if !looks_like_fat(image, boot.start) {
        return Err(CustomiseError::NotFat {
            image: image.to_owned(),
            number: boot.number,
            offset: boot.start,
        });
    }
    let dir = tempfile::tempdir().map_err(CustomiseError::Temp)?;
    let tmp = dir.path().join(name);
    std::fs::write(&tmp, contents).map_err(CustomiseError::Temp)?;
    let write = |source| CustomiseError::Write {
        image: image.to_owned(),
        source,
    };
    let mut c = tools::cmd("mcopy").map_err(write)?;
    c.env("MTOOLS_SKIP_CHECK", "1")
        .arg("-o")
        .arg("-i")
        .arg(tools::mtools_target(image, boot.start))
        .arg(&tmp)
        .arg(format!("::{name}"));
    tools::run(c).map_err(write)?;
    Ok(())
}

/// Reads a file from the boot partition of `image` (None if absent).
pub fn read_boot_file(image: &Path, name: &str) -> Result<Option<Vec<u8>>, CustomiseError> {
    let boot = layout::find_boot(image)?;
    let read = |source| CustomiseError::Write {
        image: image.to_owned(),
        source,
    };
    let mut c = tools::cmd("mtype").map_err(read)?;
    c.env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(tools::mtools_target(image, boot.start))
        .arg(format!("::{name}"));
    match tools::run(c) {
        Ok(b) => Ok(Some(b)),
        Err(ToolError::Failed { output, .. }) if output.contains("not found") => Ok(None),
        Err(e) => Err(read(e)),
    }
}

/// Validates the input and writes the provisioning file into `image`.
pub fn customise(image: &Path, input: &SiteInput) -> Result<Provision, CustomiseError> {
    let p = Provision::from_input(input)?;
    if !image.is_file() {
        return Err(CustomiseError::Read {
            path: image.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such image file"),
        });
    }
    write_boot_file(image, PROVISION_FILE, p.to_toml().as_bytes())?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SiteInput {
        SiteInput {
            district_url: "https://ops.huyen-a.example/".into(),
            claim_token: "dc1_abc-DEF.123".into(),
            commune: Some("xa-tan-lap".into()),
            wifi: Some("UBND-XA:matkhau123".into()),
            ssh_keys_text: Some("# tech\nssh-ed25519 AAAAC3Nza tech@huyen\n\n".into()),
        }
    }

    #[test]
    fn good_input_gives_agent_keys() {
        let p = Provision::from_input(&input()).unwrap();
        assert_eq!(p.district_url, "https://ops.huyen-a.example");
        let t = p.to_toml();
        for k in [
            "district_url = ",
            "claim_token = ",
            "commune = ",
            "ssh_authorized_keys = [",
            "[wifi]",
            "ssid = \"UBND-XA\"",
            "psk = \"matkhau123\"",
        ] {
            assert!(t.contains(k), "{k} not in\n{t}");
        }
    }

    #[test]
    fn bad_inputs_name_the_option() {
        type Edit = Box<dyn Fn(&mut SiteInput)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "--district-url",
                Box::new(|i| i.district_url = "ops.example".into()),
            ),
            (
                "--district-url",
                Box::new(|i| i.district_url = "https://".into()),
            ),
            (
                "--claim-token",
                Box::new(|i| i.claim_token = "has space".into()),
            ),
            ("--claim-token", Box::new(|i| i.claim_token = String::new())),
            (
                "--commune",
                Box::new(|i| i.commune = Some("Xã Tân Lập".into())),
            ),
            ("--wifi", Box::new(|i| i.wifi = Some("net:short".into()))),
            ("--wifi", Box::new(|i| i.wifi = Some(":password123".into()))),
            (
                "--ssh-key",
                Box::new(|i| {
                    i.ssh_keys_text = Some("-----BEGIN OPENSSH PRIVATE KEY-----\n".into())
                }),
            ),
            (
                "--ssh-key",
                Box::new(|i| i.ssh_keys_text = Some("\n# only\n".into())),
            ),
        ];
        for (opt, f) in cases {
            let mut i = input();
            f(&mut i);
            let e = Provision::from_input(&i).unwrap_err().to_string();
            assert!(e.starts_with(opt), "expected {opt}: {e}");
        }
    }

    #[test]
    fn open_wifi_has_no_psk() {
        let mut i = input();
        i.wifi = Some("Cafe".into());
        let p = Provision::from_input(&i).unwrap();
        assert_eq!(p.wifi.unwrap().psk, None);
    }
}
