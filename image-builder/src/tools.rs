//! Running the external tools the builder relies on (mmdebstrap, sfdisk,
//! mkfs.*, mtools, e2fsck, dpkg-deb, qemu). Every failure names the command,
//! its exit status, the tail of what it printed, and for a missing tool the
//! Debian package that provides it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tool failed or is missing.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("`{tool}` is not installed (apt-get install {package})")]
    Missing { tool: String, package: &'static str },
    #[error("cannot start `{tool}`")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}){}", if output.is_empty() { String::new() } else { format!(":\n{output}") })]
    Failed {
        command: String,
        status: String,
        output: String,
    },
}

/// The Debian package that ships a tool, for error messages and the docs.
pub fn package_of(tool: &str) -> &'static str {
    match tool {
        "mmdebstrap" => "mmdebstrap",
        "sfdisk" => "fdisk",
        "mkfs.vfat" | "fsck.fat" | "fsck.vfat" => "dosfstools",
        "mcopy" | "mdir" | "mtype" | "mmd" | "mdel" => "mtools",
        "mkfs.ext4" | "e2fsck" | "debugfs" => "e2fsprogs",
        "dpkg-deb" | "dpkg-query" => "dpkg",
        "qemu-system-aarch64" => "qemu-system-arm",
        "qemu-aarch64-static" => "qemu-user-static",
        "systemd-analyze" => "systemd",
        "readelf" => "binutils",
        "chroot" | "tar" | "find" | "touch" => "coreutils",
        _ => "?",
    }
}

/// Finds a tool on PATH (and in /usr/sbin, /sbin, which a non-root PATH may lack).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Fails with [`ToolError::Missing`] unless every tool is found.
pub fn require(tools: &[&str]) -> Result<(), ToolError> {
    for t in tools {
        if which(t).is_none() {
            return Err(ToolError::Missing {
                tool: (*t).to_owned(),
                package: package_of(t),
            });
        }
    }
    Ok(())
}

fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
        if s.len() > 400 {
            s.push_str(" ...");
            break;
        }
    }
    s
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let v: Vec<_> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// A command builder that resolves the tool first.
pub fn cmd(tool: &str) -> Result<Command, ToolError> {
    let path = which(tool).ok_or_else(|| ToolError::Missing {
        tool: tool.to_owned(),
        package: package_of(tool),
    })?;
    let mut c = Command::new(path);
    c.env("LC_ALL", "C.UTF-8");
    Ok(c)
}

/// Runs a command to completion, capturing its output; returns stdout.
pub fn run(mut c: Command) -> Result<Vec<u8>, ToolError> {
    let rendered = render(&c);
    tracing::debug!(command = %rendered, "running");
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ToolError::Spawn {
            tool: rendered.clone(),
            source,
        })?;
    if !out.status.success() {
        let mut both = out.stderr.clone();
        both.extend_from_slice(&out.stdout);
        return Err(ToolError::Failed {
            command: rendered,
            status: out.status.to_string(),
            output: tail(&both, 25),
        });
    }
    Ok(out.stdout)
}

/// Runs a command with its output going to the terminal (long steps such as
/// mmdebstrap, whose own progress is the best there is), or to `log` if given.
pub fn run_logged(mut c: Command, log: Option<&Path>) -> Result<(), ToolError> {
    let rendered = render(&c);
    tracing::debug!(command = %rendered, "running");
    if let Some(log) = log {
        let f = std::fs::File::create(log).map_err(|source| ToolError::Spawn {
            tool: rendered.clone(),
            source,
        })?;
        let f2 = f.try_clone().map_err(|source| ToolError::Spawn {
            tool: rendered.clone(),
            source,
        })?;
        c.stdout(f).stderr(f2);
    }
    let status = c
        .stdin(Stdio::null())
        .status()
        .map_err(|source| ToolError::Spawn {
            tool: rendered.clone(),
            source,
        })?;
    if !status.success() {
        let output = log
            .and_then(|l| std::fs::read(l).ok())
            .map(|b| tail(&b, 30))
            .unwrap_or_default();
        return Err(ToolError::Failed {
            command: rendered,
            status: status.to_string(),
            output,
        });
    }
    Ok(())
}

/// `mtools` image argument: `IMAGE@@OFFSET` addresses a FAT inside a disk image.
pub fn mtools_target(image: &Path, offset: u64) -> std::ffi::OsString {
    let mut s = image.as_os_str().to_owned();
    if offset > 0 {
        s.push(OsStr::new(&format!("@@{offset}")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_its_package() {
        let e = cmd("mcopy-that-does-not-exist").unwrap_err();
        assert!(e.to_string().contains("not installed"), "{e}");
        assert_eq!(package_of("mcopy"), "mtools");
    }

    #[test]
    fn failure_shows_output_tail() {
        let mut c = cmd("sh").unwrap();
        c.args(["-c", "echo boom >&2; exit 3"]);
        let e = run(c).unwrap_err().to_string();
        assert!(e.contains("boom") && e.contains("exit status: 3"), "{e}");
    }

    #[test]
    fn mtools_offset_syntax() {
        assert_eq!(
            mtools_target(Path::new("/x/a.img"), 1048576),
            std::ffi::OsString::from("/x/a.img@@1048576")
        );
    }
}
