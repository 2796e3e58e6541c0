//! The `build` pipeline, step by step with progress: validate the spec and
//! the layout, check the tools, package the daemon, get the base root file
//! system (from the cache or mmdebstrap), lay the product on it, gather the
//! boot files, then [`finish`]: digest the root tree, write the SBOM,
//! assemble the disk, write the checksum and the manifest. [`finish`] is
//! separate so tests can run it on a fake root without mmdebstrap or root.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::disk::{self, Contents};
use crate::layout::Layout;
use crate::progress::{Steps, human_bytes, human_duration};
use crate::sbom;
use crate::spec::{Board, ImageSpec};

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub spec: ImageSpec,
    /// The aarch64 daemon binary; `None` builds an image without it.
    pub daemon: Option<PathBuf>,
    pub out_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub epoch: i64,
    pub keep_rootfs: bool,
}

/// Files written by a build.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub image: PathBuf,
    pub checksum: PathBuf,
    pub sbom: PathBuf,
    pub manifest: PathBuf,
    pub tree_listing: PathBuf,
    pub root_tree_sha256: String,
    pub image_sha256: String,
    pub base_cached: bool,
    pub seconds: f64,
}

/// Why a build failed (each variant says which stage).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("layout")]
    Layout(#[from] crate::layout::LayoutError),
    #[error("missing tool")]
    Tool(#[from] crate::tools::ToolError),
    #[error("packaging the daemon")]
    Deb(#[from] crate::deb::DebError),
    #[error("root file system")]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error("disk image")]
    Disk(#[from] disk::DiskError),
    #[error("SBOM, checksum or manifest")]
    Sbom(#[from] sbom::SbomError),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Tools every build needs (mmdebstrap only when the cache misses).
pub const TOOLS: &[&str] = &[
    "sfdisk",
    "mkfs.vfat",
    "fsck.fat",
    "mcopy",
    "mkfs.ext4",
    "e2fsck",
    "dpkg-deb",
    "dpkg-query",
    "tar",
    "unshare",
    "chroot",
    "systemctl",
];

/// The whole build.
pub fn build(opts: &BuildOptions) -> Result<BuildOutput, BuildError> {
    let started = Instant::now();
    let spec = &opts.spec;
    let mut steps = Steps::new(8);
    steps.step(&format!(
        "Checking the {} image spec, layout and tools",
        spec.board
    ));
    let layout = Layout::plan(spec)?;
    crate::tools::require(TOOLS)?;
    if !crate::rootfs::is_root() {
        return Err(crate::rootfs::RootfsError::NotRoot.into());
    }
    for p in &layout.partitions {
        steps.note(&format!(
            "{} {:<7} {:>5} MiB",
            p.number,
            p.role.name(),
            p.size >> 20
        ));
    }
    steps.note(&format!("{} packages requested", spec.packages.len()));
    std::fs::create_dir_all(&opts.out_dir).map_err(io("cannot create", &opts.out_dir))?;
    std::fs::create_dir_all(&opts.cache_dir).map_err(io("cannot create", &opts.cache_dir))?;

    steps.step("Packaging the daemon");
    let work = tempfile::Builder::new()
        .prefix("diemcau-build-")
        .tempdir_in(&opts.cache_dir)
        .map_err(io("cannot make a work folder in", &opts.cache_dir))?;
    let deb = match &opts.daemon {
        Some(d) => {
            let deb = crate::deb::build_deb(d, spec.board, &opts.out_dir, opts.epoch)?;
            steps.note(&format!("{}", deb.display()));
            Some(deb)
        }
        None => {
            steps.note("no --daemon given: the image will not contain the room daemon");
            None
        }
    };

    let key = crate::rootfs::base_key(spec);
    steps.step(&format!("Base root file system (cache key {})", &key[..16]));
    let log = opts
        .cache_dir
        .join(format!("mmdebstrap-{}.log", spec.board));
    if crate::tools::which("mmdebstrap").is_none() {
        steps.note("mmdebstrap not installed; only a cached base can be used");
    }
    let t = Instant::now();
    let (tar, cached) = crate::rootfs::ensure_base(spec, &opts.cache_dir, &log, opts.epoch)?;
    steps.note(&if cached {
        format!("from cache: {}", tar.display())
    } else {
        format!(
            "built with mmdebstrap in {} (log {})",
            human_duration(t.elapsed()),
            log.display()
        )
    });

    steps.step("Unpacking and adding the product layer (daemon, hardening)");
    let root = work.path().join("root");
    crate::rootfs::unpack(&tar, &root)?;
    if let Some(d) = &opts.daemon {
        crate::rootfs::check_daemon_libs(&root, d)?;
    }
    crate::rootfs::product_layer(spec, &layout, &root, deb.as_deref(), opts.epoch)?;

    steps.step("Gathering boot files");
    let boot = work.path().join("boot");
    crate::rootfs::boot_files(spec, &layout, &root, &boot)?;
    let out = finish(spec, &layout, &root, &boot, opts, &key, &mut steps)?;
    let total = steps.finish();
    if opts.keep_rootfs {
        let kept = work.keep();
        eprintln!("root file system kept in {}", kept.display());
    }
    eprintln!(
        "Built {} in {}{}",
        out.image.display(),
        human_duration(total),
        if cached { " (base from cache)" } else { "" }
    );
    Ok(BuildOutput {
        base_cached: cached,
        seconds: started.elapsed().as_secs_f64(),
        ..out
    })
}

/// Digest, SBOM, disk assembly, checksum and manifest (3 steps).
pub fn finish(
    spec: &ImageSpec,
    layout: &Layout,
    root: &Path,
    boot: &Path,
    opts: &BuildOptions,
    base_key: &str,
    steps: &mut Steps,
) -> Result<BuildOutput, BuildError> {
    let base = opts.out_dir.join(&spec.name);
    let with = |ext: &str| PathBuf::from(format!("{}{ext}", base.display()));
    let image = with(".img");
    let tree_listing = with(".rootfs.txt");
    let sbom_path = with(".spdx.json");
    let manifest_path = with(".manifest.json");
    let checksum = with(".img.sha256");

    steps.step("Recording the root tree and the SBOM");
    let tree = crate::tree::digest(root, Some(&tree_listing))
        .map_err(io("cannot read the root tree", root))?;
    steps.note(&format!("root tree sha256 {tree}"));
    let pkgs = sbom::packages(root)?;
    let doc = sbom::spdx(&spec.name, &pkgs, opts.epoch);
    sbom::write_atomic(
        &sbom_path,
        serde_json::to_string_pretty(&doc)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    steps.note(&format!(
        "{} packages in {}",
        pkgs.len(),
        sbom_path.display()
    ));

    steps.step("Assembling the disk image");
    let data = tempfile::tempdir_in(opts.out_dir.as_path())
        .map_err(io("cannot make a folder in", &opts.out_dir))?;
    crate::overlay::data_skeleton(data.path()).map_err(io("cannot lay out", data.path()))?;
    crate::tree::clamp_mtimes(data.path(), opts.epoch)
        .map_err(io("cannot set time stamps in", data.path()))?;
    let contents = Contents {
        boot: Some(boot.to_owned()),
        root_a: Some(root.to_owned()),
        root_b: None,
        data: Some(data.path().to_owned()),
    };
    disk::assemble(layout, &contents, &image, opts.epoch, |l| steps.note(l))?;

    steps.step("Checksum and manifest");
    let image_sha = crate::sha256_file(&image).map_err(io("cannot read", &image))?;
    sbom::write_atomic(
        &checksum,
        sbom::checksum_line(&image_sha, &image).as_bytes(),
    )?;
    let image_bytes = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
    let daemon_sha = opts
        .daemon
        .as_ref()
        .and_then(|d| crate::sha256_file(d).ok());
    let manifest = sbom::Manifest {
        image: image
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        builder: env!("CARGO_PKG_VERSION"),
        source_date_epoch: opts.epoch,
        spec,
        layout,
        kernel_cmdline: crate::overlay::cmdline(spec, layout),
        base_rootfs_key: base_key.to_owned(),
        daemon_sha256: daemon_sha,
        daemon_deb: None,
        root_tree_sha256: tree.clone(),
        image_sha256: image_sha.clone(),
        image_bytes,
        packages: pkgs.len(),
    };
    sbom::write_atomic(
        &manifest_path,
        serde_json::to_string_pretty(&manifest)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    steps.note(&format!(
        "{} ({}), sha256 {}",
        image.display(),
        human_bytes(image_bytes),
        image_sha
    ));
    if spec.board == Board::QemuVirt {
        steps.note(&format!(
            "boot it: diemcau-image boot-test {}",
            image.display()
        ));
    }
    Ok(BuildOutput {
        image,
        checksum,
        sbom: sbom_path,
        manifest: manifest_path,
        tree_listing,
        root_tree_sha256: tree,
        image_sha256: image_sha,
        base_cached: true,
        seconds: 0.0,
    })
}
