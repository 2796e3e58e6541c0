//! The image described as data: which board, which Debian suite and
//! components, the partition layout and the package list. A spec file is
//! read in two stages, as the rest of the project does: [`RawSpec`] is what
//! the TOML says, [`ImageSpec`] is what the builder uses, and nothing is
//! built until [`ImageSpec::parse`] has accepted the whole file. Every
//! problem found is reported at once, each naming the key and what was
//! expected, so a spec can be fixed in one pass.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The boards this builder knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Board {
    /// Raspberry Pi 4 Model B / 400 / CM4: raspi-firmware + Debian's arm64 kernel.
    Rpi4,
    /// Raspberry Pi 5: not buildable from Debian bookworm (see [`ImageSpec::parse`]).
    Rpi5,
    /// QEMU's `virt` machine: Debian's arm64 kernel booted with `-kernel`.
    QemuVirt,
}

impl Board {
    /// The name used on the command line and in spec files.
    pub fn name(self) -> &'static str {
        match self {
            Board::Rpi4 => "rpi4",
            Board::Rpi5 => "rpi5",
            Board::QemuVirt => "qemu-virt",
        }
    }

    /// Parses a board name as given on the command line.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "rpi4" => Some(Board::Rpi4),
            "rpi5" => Some(Board::Rpi5),
            "qemu-virt" => Some(Board::QemuVirt),
            _ => None,
        }
    }

    /// The board profile name the daemon uses (`[room] board` in room.toml).
    pub fn daemon_profile(self) -> &'static str {
        match self {
            Board::Rpi4 => "rpi4",
            Board::Rpi5 => "rpi5",
            Board::QemuVirt => "sim",
        }
    }

    /// The Linux console the kernel command line names.
    pub fn console(self) -> &'static str {
        match self {
            Board::QemuVirt => "ttyAMA0",
            Board::Rpi4 | Board::Rpi5 => "serial0,115200 console=tty1",
        }
    }

    /// Packages without which an image for this board cannot boot or run
    /// the product.
    pub fn required_packages(self) -> &'static [&'static str] {
        const COMMON: &[&str] = &[
            "systemd",
            "systemd-sysv",
            "udev",
            "systemd-timesyncd",
            "systemd-resolved",
            "nftables",
            "initramfs-tools",
            "linux-image-arm64",
            "kmod",
            "ca-certificates",
            "gstreamer1.0-plugins-base",
            "gstreamer1.0-plugins-good",
            "gstreamer1.0-plugins-bad",
            "gstreamer1.0-nice",
            // textoverlay (the pango plugin) is packaged with the X sinks
            "gstreamer1.0-x",
        ];
        const PI: &[&str] = &[
            "systemd",
            "systemd-sysv",
            "udev",
            "systemd-timesyncd",
            "systemd-resolved",
            "nftables",
            "initramfs-tools",
            "linux-image-arm64",
            "kmod",
            "ca-certificates",
            "gstreamer1.0-plugins-base",
            "gstreamer1.0-plugins-good",
            "gstreamer1.0-plugins-bad",
            "gstreamer1.0-nice",
            // textoverlay (the pango plugin) is packaged with the X sinks
            "gstreamer1.0-x",
            "raspi-firmware",
        ];
        match self {
            Board::QemuVirt => COMMON,
            Board::Rpi4 | Board::Rpi5 => PI,
        }
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Packages that must never be in a product image: they listen for logins
/// that do not need a key, or announce the device on the network.
pub const FORBIDDEN_PACKAGES: &[&str] = &[
    "telnetd",
    "inetutils-telnetd",
    "rsh-server",
    "xinetd",
    "avahi-daemon",
    "sudo",
    "vsftpd",
];

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// FAT partition read by the firmware (Pi) and holding the provisioning file.
    Boot,
    /// Root file system, slot A (the one the image boots first).
    RootA,
    /// Root file system, slot B (empty until the first update).
    RootB,
    /// Writable data: daemon state, logs, SSH keys.
    Data,
}

impl Role {
    /// The name used in spec files.
    pub fn name(self) -> &'static str {
        match self {
            Role::Boot => "boot",
            Role::RootA => "root-a",
            Role::RootB => "root-b",
            Role::Data => "data",
        }
    }
}

/// File system of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fs {
    Vfat,
    Ext4,
}

/// What the spec file says, before any check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    pub image: RawImage,
    #[serde(default, rename = "partition")]
    pub partitions: Vec<RawPartition>,
    pub packages: RawPackages,
    #[serde(default)]
    pub kernel: RawKernel,
    #[serde(default)]
    pub system: RawSystem,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    pub name: Option<String>,
    pub board: Option<String>,
    pub suite: Option<String>,
    pub architecture: Option<String>,
    pub mirror: Option<String>,
    pub security_mirror: Option<String>,
    pub components: Option<Vec<String>>,
    pub hostname: Option<String>,
    pub disk_size_mib: Option<u64>,
    pub disk_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPartition {
    pub role: Option<String>,
    pub label: Option<String>,
    pub fs: Option<String>,
    /// Absent for the last partition: it fills the disk.
    pub size_mib: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPackages {
    #[serde(default)]
    pub include: Vec<String>,
    /// dpkg `path-exclude` globs: files of the listed packages that are not
    /// unpacked (e.g. GPU drivers on a machine without a GPU).
    #[serde(default)]
    pub path_exclude: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKernel {
    #[serde(default)]
    pub initramfs_modules: Vec<String>,
    pub cmdline_extra: Option<String>,
    #[serde(default)]
    pub config_txt: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystem {
    pub journal_max_mib: Option<u64>,
    #[serde(default)]
    pub firewall_allow_tcp: Vec<u16>,
    #[serde(default)]
    pub firewall_allow_udp: Vec<u16>,
}

/// One validated partition (sizes in MiB; placement is [`crate::layout`]'s job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionSpec {
    pub role: Role,
    pub label: String,
    pub fs: Fs,
    /// `None`: fills the rest of the disk (only the last partition).
    pub size_mib: Option<u64>,
}

/// A validated image description: what the builder uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSpec {
    pub name: String,
    pub board: Board,
    pub suite: String,
    pub architecture: String,
    pub mirror: String,
    pub security_mirror: String,
    pub components: Vec<String>,
    pub hostname: String,
    pub disk_size_mib: Option<u64>,
    pub disk_id: u32,
    pub partitions: Vec<PartitionSpec>,
    /// Sorted and without duplicates.
    pub packages: Vec<String>,
    /// dpkg `path-exclude` globs beyond the builder's own (docs, man pages,
    /// locales), sorted and without duplicates.
    pub path_exclude: Vec<String>,
    pub initramfs_modules: Vec<String>,
    pub cmdline_extra: String,
    pub config_txt: Vec<String>,
    pub journal_max_mib: u64,
    pub firewall_allow_tcp: Vec<u16>,
    pub firewall_allow_udp: Vec<u16>,
}

/// One thing wrong with a spec: the key and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

/// Why a spec was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read image spec {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image spec {path} is not valid TOML for an image description")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("image spec {path} has {} problem(s):\n  - {}", problems.len(), problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl SpecError {
    /// The problems found, if the file parsed.
    pub fn problems(&self) -> &[Problem] {
        match self {
            SpecError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// The specs shipped with the builder, one per board (`images/*.toml`).
pub fn builtin(board: Board) -> (&'static str, &'static str) {
    match board {
        Board::Rpi4 => ("images/rpi4.toml", include_str!("../images/rpi4.toml")),
        Board::Rpi5 => ("images/rpi5.toml", include_str!("../images/rpi5.toml")),
        Board::QemuVirt => (
            "images/qemu-virt.toml",
            include_str!("../images/qemu-virt.toml"),
        ),
    }
}

fn is_debian_package_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(c))
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

fn is_module_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

impl ImageSpec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// The built-in spec for a board, validated.
    pub fn for_board(board: Board) -> Result<Self, SpecError> {
        let (name, text) = builtin(board);
        Self::parse(Path::new(name), text)
    }

    /// Validates spec text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|source| SpecError::Parse {
            path: path.to_owned(),
            source,
        })?;
        Self::validate(raw).map_err(|problems| SpecError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Checks everything and returns either the spec or every problem found.
    pub fn validate(raw: RawSpec) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| {
            problems.push(Problem {
                key: key.to_owned(),
                message,
            })
        };
        let img = &raw.image;

        let name = match &img.name {
            Some(n) if is_hostname(n) => n.clone(),
            Some(n) => {
                bad(
                    "image.name",
                    format!("1 to 63 characters from a-z 0-9 -, found {n:?}"),
                );
                String::new()
            }
            None => {
                bad(
                    "image.name",
                    "missing: a name such as \"diemcau-rpi4\"".into(),
                );
                String::new()
            }
        };

        let board = match img.board.as_deref() {
            Some(b) => match Board::from_name(b) {
                Some(board) => Some(board),
                None => {
                    bad(
                        "image.board",
                        format!("one of rpi4, rpi5, qemu-virt, found {b:?}"),
                    );
                    None
                }
            },
            None => {
                bad(
                    "image.board",
                    "missing: one of rpi4, rpi5, qemu-virt".into(),
                );
                None
            }
        };

        let suite = img.suite.clone().unwrap_or_else(|| "bookworm".into());
        if suite != "bookworm" {
            bad(
                "image.suite",
                format!(
                    "\"bookworm\" (the only suite this builder is tested with), found {suite:?}"
                ),
            );
        }
        if board == Some(Board::Rpi5) {
            bad(
                "image.board",
                "rpi5 cannot be built from Debian bookworm: its kernel (6.1) and raspi-firmware have no \
                 Raspberry Pi 5 (BCM2712) support. Build an rpi4 image, or wait for a trixie-based spec"
                    .into(),
            );
        }

        let architecture = img.architecture.clone().unwrap_or_else(|| "arm64".into());
        if architecture != "arm64" {
            bad(
                "image.architecture",
                format!("\"arm64\" (every supported board is arm64), found {architecture:?}"),
            );
        }

        let mirror = img
            .mirror
            .clone()
            .unwrap_or_else(|| "http://deb.debian.org/debian".into());
        let security_mirror = img
            .security_mirror
            .clone()
            .unwrap_or_else(|| "http://deb.debian.org/debian-security".into());
        for (key, m) in [
            ("image.mirror", &mirror),
            ("image.security_mirror", &security_mirror),
        ] {
            let ok =
                (m.starts_with("http://") || m.starts_with("https://") || m.starts_with("file:/"))
                    && !m.chars().any(char::is_whitespace);
            if !ok {
                bad(
                    key,
                    format!("an http://, https:// or file:/ URL without spaces, found {m:?}"),
                );
            }
        }

        let components = img
            .components
            .clone()
            .unwrap_or_else(|| vec!["main".into(), "non-free-firmware".into()]);
        for c in &components {
            if !["main", "contrib", "non-free", "non-free-firmware"].contains(&c.as_str()) {
                bad(
                    "image.components",
                    format!(
                        "Debian components (main, contrib, non-free, non-free-firmware), found {c:?}"
                    ),
                );
            }
        }
        if !components.iter().any(|c| c == "main") {
            bad("image.components", "must include \"main\"".into());
        }

        let hostname = img.hostname.clone().unwrap_or_else(|| "diemcau".into());
        if !is_hostname(&hostname) {
            bad(
                "image.hostname",
                format!("a host name: 1 to 63 characters from a-z 0-9 -, found {hostname:?}"),
            );
        }

        let disk_id = match &img.disk_id {
            None => {
                // Deterministic from the name, so the same spec gives the same PARTUUIDs.
                let h = crate::sha256_hex(name.as_bytes());
                u32::from_str_radix(&h[..8], 16).unwrap_or(0x6469_656d)
            }
            Some(s) => match u32::from_str_radix(s.trim_start_matches("0x"), 16) {
                Ok(v) if v != 0 => v,
                _ => {
                    bad(
                        "image.disk_id",
                        format!("8 hex digits such as \"0x6469656d\", not zero, found {s:?}"),
                    );
                    0
                }
            },
        };

        // Partitions.
        let mut partitions = Vec::new();
        let mut roles_seen = BTreeSet::new();
        let n = raw.partitions.len();
        if n == 0 {
            bad(
                "partition",
                "no [[partition]] tables: expected boot, root-a, root-b, data".into(),
            );
        }
        if n > 4 {
            bad(
                "partition",
                format!("at most 4 partitions (MBR primary partitions), found {n}"),
            );
        }
        for (i, p) in raw.partitions.iter().enumerate() {
            let key = |k: &str| format!("partition[{i}].{k}");
            let role = match p.role.as_deref() {
                Some("boot") => Some(Role::Boot),
                Some("root-a") => Some(Role::RootA),
                Some("root-b") => Some(Role::RootB),
                Some("data") => Some(Role::Data),
                other => {
                    bad(
                        &key("role"),
                        format!("one of boot, root-a, root-b, data, found {other:?}"),
                    );
                    None
                }
            };
            if let Some(r) = role
                && !roles_seen.insert(r)
            {
                bad(&key("role"), format!("{} appears twice", r.name()));
            }
            let fs = match p.fs.as_deref() {
                Some("vfat") => Some(Fs::Vfat),
                Some("ext4") => Some(Fs::Ext4),
                other => {
                    bad(&key("fs"), format!("vfat or ext4, found {other:?}"));
                    None
                }
            };
            match (role, fs) {
                (Some(Role::Boot), Some(Fs::Ext4)) => bad(
                    &key("fs"),
                    "the boot partition must be vfat: the Pi firmware reads only FAT".into(),
                ),
                (Some(r), Some(Fs::Vfat)) if r != Role::Boot => bad(
                    &key("fs"),
                    format!("{} must be ext4 (it holds Unix permissions)", r.name()),
                ),
                _ => {}
            }
            let label = p.label.clone().unwrap_or_default();
            let max_label = if fs == Some(Fs::Vfat) { 11 } else { 16 };
            if label.is_empty()
                || label.len() > max_label
                || !label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            {
                bad(
                    &key("label"),
                    format!("1 to {max_label} characters from A-Z a-z 0-9 - _, found {label:?}"),
                );
            }
            let min = match role {
                Some(Role::Boot) => 64,
                Some(Role::RootA) | Some(Role::RootB) => 512,
                _ => 64,
            };
            match p.size_mib {
                Some(s) if s < min => bad(
                    &key("size_mib"),
                    format!("at least {min} MiB for this role, found {s}"),
                ),
                None if i + 1 != n => bad(
                    &key("size_mib"),
                    "missing: only the last partition may leave out size_mib to fill the disk"
                        .into(),
                ),
                None if img.disk_size_mib.is_none() => bad(
                    &key("size_mib"),
                    "missing, and image.disk_size_mib is not set either: one of them must say how big the disk is"
                        .into(),
                ),
                _ => {}
            }
            if let (Some(role), Some(fs)) = (role, fs) {
                partitions.push(PartitionSpec {
                    role,
                    label,
                    fs,
                    size_mib: p.size_mib,
                });
            }
        }
        for r in [Role::Boot, Role::RootA, Role::RootB, Role::Data] {
            if n > 0 && !roles_seen.contains(&r) {
                bad("partition", format!("no partition with role {}", r.name()));
            }
        }
        if let Some(first) = raw.partitions.first()
            && first.role.as_deref().is_some_and(|r| r != "boot")
        {
            bad(
                "partition[0].role",
                "the first partition must be boot: the Pi firmware reads partition 1".into(),
            );
        }
        let size_of = |r: Role| {
            partitions
                .iter()
                .find(|p| p.role == r)
                .and_then(|p| p.size_mib)
        };
        if let (Some(a), Some(b)) = (size_of(Role::RootA), size_of(Role::RootB))
            && a != b
        {
            bad(
                "partition",
                format!(
                    "root-a ({a} MiB) and root-b ({b} MiB) must be the same size so either slot can take an update"
                ),
            );
        }
        if let Some(total) = img.disk_size_mib {
            let fixed: u64 = partitions.iter().filter_map(|p| p.size_mib).sum::<u64>() + 1;
            if fixed > total {
                bad(
                    "image.disk_size_mib",
                    format!(
                        "{total} MiB is smaller than the partitions need ({fixed} MiB including the 1 MiB before the first)"
                    ),
                );
            } else if partitions.last().is_some_and(|p| p.size_mib.is_none()) && total - fixed < 64
            {
                bad(
                    "image.disk_size_mib",
                    format!(
                        "leaves {} MiB for the last partition, at least 64 needed",
                        total - fixed
                    ),
                );
            }
        }

        // Packages.
        let mut packages = BTreeSet::new();
        for p in &raw.packages.include {
            if !is_debian_package_name(p) {
                bad(
                    "packages.include",
                    format!("Debian package names (a-z 0-9 + - .), found {p:?}"),
                );
            } else if !packages.insert(p.clone()) {
                bad("packages.include", format!("{p:?} is listed twice"));
            }
            if FORBIDDEN_PACKAGES.contains(&p.as_str()) {
                bad(
                    "packages.include",
                    format!(
                        "{p:?} is not allowed in a product image (remote login without a key, or needless network service)"
                    ),
                );
            }
        }
        if let Some(board) = board {
            let missing: Vec<_> = board
                .required_packages()
                .iter()
                .filter(|r| !packages.contains(**r))
                .copied()
                .collect();
            if !missing.is_empty() {
                bad(
                    "packages.include",
                    format!("a {board} image needs {}", missing.join(", ")),
                );
            }
            if matches!(board, Board::Rpi4 | Board::Rpi5)
                && !components.iter().any(|c| c == "non-free-firmware")
            {
                bad(
                    "image.components",
                    "must include \"non-free-firmware\": raspi-firmware comes from there".into(),
                );
            }
            if board == Board::QemuVirt && !raw.kernel.config_txt.is_empty() {
                bad(
                    "kernel.config_txt",
                    "only Raspberry Pi boards read config.txt; leave it out for qemu-virt".into(),
                );
            }
        }

        for g in &raw.packages.path_exclude {
            let essential = ["/", "/*", "/usr/*", "/etc/*", "/usr/bin/*", "/usr/lib/*"];
            if !g.starts_with('/')
                || g.chars()
                    .any(|c| c.is_whitespace() || c == ',' || c.is_control())
            {
                bad(
                    "packages.path_exclude",
                    format!("absolute path globs without spaces or commas, found {g:?}"),
                );
            } else if essential.contains(&g.as_str()) || g.starts_with("/boot") {
                bad(
                    "packages.path_exclude",
                    format!("{g:?} would leave the image without a system or a kernel"),
                );
            }
        }
        for m in &raw.kernel.initramfs_modules {
            if !is_module_name(m) {
                bad(
                    "kernel.initramfs_modules",
                    format!("kernel module names (A-Z a-z 0-9 _ -), found {m:?}"),
                );
            }
        }
        if raw.kernel.initramfs_modules.is_empty() {
            bad(
                "kernel.initramfs_modules",
                "empty: the initramfs is built with MODULES=list, so it must list the modules that find the root disk (e.g. virtio_blk, mmc_block, ext4)".into(),
            );
        }
        let cmdline_extra = raw.kernel.cmdline_extra.clone().unwrap_or_default();
        for word in cmdline_extra.split_whitespace() {
            if word.starts_with("root=") || word == "rw" || word.starts_with("init=") {
                bad(
                    "kernel.cmdline_extra",
                    format!(
                        "{word:?} is set by the builder (read-only root on the A slot); remove it"
                    ),
                );
            }
        }
        for line in &raw.kernel.config_txt {
            let ok = !line.contains('\n')
                && (line.contains('=') || line.starts_with('[') || line.starts_with("initramfs "));
            if !ok {
                bad(
                    "kernel.config_txt",
                    format!(
                        "one `key=value`, `initramfs FILE ...` or `[section]` per string, found {line:?}"
                    ),
                );
            }
        }

        let journal_max_mib = raw.system.journal_max_mib.unwrap_or(64);
        if !(8..=1024).contains(&journal_max_mib) {
            bad(
                "system.journal_max_mib",
                format!("8 to 1024, found {journal_max_mib}"),
            );
        }
        for p in raw
            .system
            .firewall_allow_tcp
            .iter()
            .chain(&raw.system.firewall_allow_udp)
        {
            if *p == 0 {
                bad(
                    "system.firewall_allow_*",
                    "ports 1 to 65535, found 0".into(),
                );
            }
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        let board = board.expect("checked above");
        let mut path_exclude = raw.packages.path_exclude;
        path_exclude.sort();
        path_exclude.dedup();
        let mut initramfs_modules = raw.kernel.initramfs_modules;
        initramfs_modules.sort();
        initramfs_modules.dedup();
        let mut tcp = raw.system.firewall_allow_tcp;
        tcp.sort_unstable();
        tcp.dedup();
        let mut udp = raw.system.firewall_allow_udp;
        udp.sort_unstable();
        udp.dedup();
        Ok(ImageSpec {
            name,
            board,
            suite,
            architecture,
            mirror,
            security_mirror,
            components,
            hostname,
            disk_size_mib: img.disk_size_mib,
            disk_id,
            partitions,
            packages: packages.into_iter().collect(),
            path_exclude,
            initramfs_modules,
            cmdline_extra,
            config_txt: raw.kernel.config_txt,
            journal_max_mib,
            firewall_allow_tcp: tcp,
            firewall_allow_udp: udp,
        })
    }

    /// Whether a package is in the image.
    pub fn has_package(&self, name: &str) -> bool {
        self.packages
            .binary_search_by(|p| p.as_str().cmp(name))
            .is_ok()
    }

    /// The apt sources the rootfs is built from.
    pub fn apt_sources(&self) -> Vec<String> {
        let comps = self.components.join(" ");
        vec![
            format!("deb {} {} {comps}", self.mirror, self.suite),
            format!("deb {} {}-updates {comps}", self.mirror, self.suite),
            format!(
                "deb {} {}-security {comps}",
                self.security_mirror, self.suite
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_specs_validate() {
        for b in [Board::Rpi4, Board::QemuVirt] {
            let s = ImageSpec::for_board(b).unwrap_or_else(|e| panic!("{b}: {e}"));
            assert_eq!(s.board, b);
            assert!(s.has_package("linux-image-arm64"));
            let mut sorted = s.packages.clone();
            sorted.sort();
            assert_eq!(sorted, s.packages);
        }
    }

    #[test]
    fn rpi5_is_refused_plainly() {
        let e = ImageSpec::for_board(Board::Rpi5).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("Raspberry Pi 5"), "{msg}");
        assert!(msg.contains("bookworm"), "{msg}");
    }

    #[test]
    fn problems_are_collected_not_first_only() {
        let text = r#"
[image]
name = "Bad Name"
board = "rpi9"
[[partition]]
role = "root-a"
fs = "vfat"
label = "x"
size_mib = 10
[packages]
include = ["systemd", "systemd", "Bad_Pkg"]
"#;
        let e = ImageSpec::parse(Path::new("t.toml"), text).unwrap_err();
        let keys: Vec<_> = e.problems().iter().map(|p| p.key.as_str()).collect();
        for k in [
            "image.name",
            "image.board",
            "partition[0].fs",
            "partition[0].size_mib",
            "partition[0].role",
            "packages.include",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}\n{e}");
        }
        assert!(e.to_string().contains("t.toml"));
    }

    #[test]
    fn disk_id_is_deterministic() {
        let a = ImageSpec::for_board(Board::QemuVirt).unwrap();
        let b = ImageSpec::for_board(Board::QemuVirt).unwrap();
        assert_eq!(a.disk_id, b.disk_id);
        assert_ne!(a.disk_id, 0);
    }
}
