//! `diemcau-image`: command-line wiring for the image builder library.
//! Arguments are parsed here and handed to the library; errors are printed
//! with their whole chain of causes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use diemcau_image::spec::{Board, ImageSpec};
use diemcau_image::{boottest, build, customise, flash, progress};

#[derive(Parser)]
#[command(
    name = "diemcau-image",
    version,
    about = "Build, customise, flash and verify diemcau SD-card images"
)]
struct Cli {
    /// More log output (also RUST_LOG=debug).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build an image (needs root, mmdebstrap, qemu-user-static on x86).
    Build {
        /// rpi4, rpi5 or qemu-virt (uses image-builder/images/BOARD.toml).
        #[arg(long, conflicts_with = "spec")]
        board: Option<String>,
        /// An image spec file instead of a built-in board spec.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// The aarch64 daemon binary (scripts/cross/build-aarch64.sh).
        #[arg(long, required_unless_present = "no_daemon")]
        daemon: Option<PathBuf>,
        /// Build without the daemon (base system tests).
        #[arg(long)]
        no_daemon: bool,
        /// Where the image, checksum, SBOM and manifest go.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Base root file system cache.
        #[arg(long, default_value = "/var/cache/diemcau-image")]
        cache: PathBuf,
        /// Keep the unpacked root file system for inspection.
        #[arg(long)]
        keep_rootfs: bool,
    },
    /// Check an image spec without building anything.
    Validate {
        #[arg(long, conflicts_with = "spec")]
        board: Option<String>,
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// Write a site's provisioning file onto an image's boot partition (no root needed).
    Customise {
        image: PathBuf,
        /// The district server, e.g. https://ops.huyen.example
        #[arg(long)]
        district_url: String,
        /// Claim token from `diemcau-ops token create`.
        #[arg(long)]
        claim_token: String,
        /// Commune id, e.g. xa-tan-lap.
        #[arg(long)]
        commune: Option<String>,
        /// Wi-Fi as SSID:PSK (or SSID alone for an open network).
        #[arg(long)]
        wifi: Option<String>,
        /// A file of OpenSSH public keys for the technician account.
        #[arg(long)]
        ssh_key: Option<PathBuf>,
    },
    /// Write an image to an SD card, then read it back and compare.
    Flash {
        image: PathBuf,
        device: PathBuf,
        /// Allow a disk that does not report itself removable.
        #[arg(long)]
        force: bool,
    },
    /// Compare a card (or file) with an image.
    Verify { image: PathBuf, device: PathBuf },
    /// Boot a qemu-virt image under emulation and time it (CI).
    BootTest {
        image: PathBuf,
        /// Success when a console line contains this.
        #[arg(long, default_value = boottest::READY_LINE)]
        ready: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        #[arg(long, default_value_t = 2)]
        smp: u32,
        /// Save the console here.
        #[arg(long)]
        console_log: Option<PathBuf>,
        /// Do not echo the console.
        #[arg(long)]
        quiet: bool,
        /// Keep the guest running after it is ready (until Ctrl-C or the
        /// timeout), e.g. to watch it enrol and join its meetings.
        #[arg(long)]
        stay: bool,
        /// No network beyond QEMU: the guest cannot reach the host or
        /// anything else (a boot check without a district server).
        #[arg(long)]
        restrict: bool,
    },
}

fn load_spec(board: Option<String>, spec: Option<PathBuf>) -> Result<ImageSpec> {
    match (board, spec) {
        (_, Some(path)) => Ok(ImageSpec::load(&path)?),
        (Some(b), None) => {
            let board = Board::from_name(&b).with_context(|| {
                format!("unknown board {b:?}: expected rpi4, rpi5 or qemu-virt")
            })?;
            Ok(ImageSpec::for_board(board)?)
        }
        (None, None) => bail!("give --board rpi4|rpi5|qemu-virt or --spec FILE"),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Build {
            board,
            spec,
            daemon,
            no_daemon: _,
            out,
            cache,
            keep_rootfs,
        } => {
            let spec = load_spec(board, spec)?;
            let out = build::build(&build::BuildOptions {
                spec,
                daemon,
                out_dir: out,
                cache_dir: cache,
                epoch: diemcau_image::source_date_epoch(),
                keep_rootfs,
            })?;
            println!("{}", out.image.display());
        }
        Cmd::Validate { board, spec } => {
            let spec = load_spec(board, spec)?;
            let layout = diemcau_image::layout::Layout::plan(&spec)?;
            println!(
                "{}: {} image, {} packages, {} partitions, {} MiB, base key {}",
                spec.name,
                spec.board,
                spec.packages.len(),
                layout.partitions.len(),
                layout.disk_size >> 20,
                &diemcau_image::rootfs::base_key(&spec)[..16]
            );
        }
        Cmd::Customise {
            image,
            district_url,
            claim_token,
            commune,
            wifi,
            ssh_key,
        } => {
            let ssh_keys_text = match ssh_key {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read --ssh-key {}", p.display()))?,
                ),
                None => None,
            };
            let p = customise::customise(
                &image,
                &customise::SiteInput {
                    district_url,
                    claim_token,
                    commune,
                    wifi,
                    ssh_keys_text,
                },
            )?;
            eprintln!(
                "Wrote {} to the boot partition of {}: district {}{}{}{}",
                customise::PROVISION_FILE,
                image.display(),
                p.district_url,
                p.commune
                    .map(|c| format!(", commune {c}"))
                    .unwrap_or_default(),
                p.wifi
                    .map(|w| format!(", Wi-Fi {}", w.ssid))
                    .unwrap_or_default(),
                if p.ssh_authorized_keys.is_empty() {
                    String::new()
                } else {
                    format!(", {} SSH key(s)", p.ssh_authorized_keys.len())
                }
            );
            eprintln!(
                "The image's .sha256 no longer matches; flash verifies against the image itself."
            );
        }
        Cmd::Flash {
            image,
            device,
            force,
        } => {
            let r = flash::flash(&flash::SystemView::default(), &image, &device, force, false)?;
            eprintln!(
                "Wrote and verified {} on {} (write {:.0} s, verify {:.0} s). You can remove the card.",
                progress::human_bytes(r.bytes),
                device.display(),
                r.write_secs,
                r.verify_secs
            );
        }
        Cmd::Verify { image, device } => {
            let secs = flash::verify(&image, &device, false)?;
            eprintln!(
                "{} matches {} ({secs:.0} s)",
                device.display(),
                image.display()
            );
        }
        Cmd::BootTest {
            image,
            ready,
            timeout,
            memory,
            smp,
            console_log,
            quiet,
            stay,
            restrict,
        } => {
            let opts = boottest::BootOptions {
                image,
                ready,
                timeout: Duration::from_secs(timeout),
                memory_mib: memory,
                smp,
                console_log,
                echo: !quiet,
                restrict,
            };
            let mut guest = boottest::Guest::start(&opts)?;
            let t = guest.wait_for(&opts.ready, opts.timeout)?;
            guest.times.ready = Some(t);
            println!("{}", boottest::summary(&guest.times));
            if stay {
                eprintln!("the guest keeps running (Ctrl-C stops it)");
                let left = opts.timeout.saturating_sub(Duration::from_secs_f64(t));
                guest.pump(left)?;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = if cli.verbose { "debug" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
