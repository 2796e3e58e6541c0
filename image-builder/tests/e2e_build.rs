//! The real build: mmdebstrap under qemu-user, the product layer, the disk,
//! then a second build from the cache that must give the same root tree,
//! then the emulated boot. Needs root, network access to the Debian mirror,
//! mmdebstrap, qemu-user-static with binfmt, qemu-system-arm and the disk
//! tools. Run it with:
//!
//! ```sh
//! DIEMCAU_IMAGE_E2E=1 [DIEMCAU_DAEMON=target/aarch64-unknown-linux-gnu/release/diemcau] \
//!   cargo test -p diemcau-image --release --test e2e_build -- --ignored --nocapture
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use diemcau_image::build::{BuildOptions, build};
use diemcau_image::spec::{Board, ImageSpec};

#[test]
#[ignore = "real mmdebstrap build and emulated boot: DIEMCAU_IMAGE_E2E=1 cargo test --test e2e_build -- --ignored"]
fn build_twice_same_tree_then_boot() {
    if std::env::var("DIEMCAU_IMAGE_E2E").as_deref() != Ok("1") {
        eprintln!("skipped: set DIEMCAU_IMAGE_E2E=1");
        return;
    }
    let cache = PathBuf::from(
        std::env::var("DIEMCAU_IMAGE_CACHE").unwrap_or_else(|_| "/var/cache/diemcau-image".into()),
    );
    let daemon = std::env::var("DIEMCAU_DAEMON").ok().map(PathBuf::from);
    let out = tempfile::tempdir_in(&cache).unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let opts = |dir: &str| BuildOptions {
        spec: ImageSpec::for_board(Board::QemuVirt).unwrap(),
        daemon: daemon.clone(),
        out_dir: out.path().join(dir),
        cache_dir: cache.clone(),
        epoch: diemcau_image::DEFAULT_EPOCH,
        keep_rootfs: false,
    };
    let t = Instant::now();
    let first = build(&opts("a")).unwrap_or_else(|e| panic!("{:?}", anyhow_chain(&e)));
    eprintln!(
        "first build: {:.0} s (base cached: {})",
        t.elapsed().as_secs_f64(),
        first.base_cached
    );
    let t = Instant::now();
    let second = build(&opts("b")).unwrap_or_else(|e| panic!("{:?}", anyhow_chain(&e)));
    eprintln!("rebuild from cache: {:.0} s", t.elapsed().as_secs_f64());
    assert!(second.base_cached);
    assert_eq!(
        first.root_tree_sha256, second.root_tree_sha256,
        "same inputs, same root tree"
    );

    let ready = if daemon.is_some() {
        diemcau_image::boottest::READY_LINE.to_owned()
    } else {
        "Multi-User System".to_owned()
    };
    let times = diemcau_image::boottest::run(&diemcau_image::boottest::BootOptions {
        image: second.image.clone(),
        ready,
        timeout: Duration::from_secs(900),
        memory_mib: 1024,
        smp: 2,
        console_log: Some(out.path().join("console.log")),
        echo: true,
        // No district server here: nothing the guest sends leaves QEMU.
        restrict: true,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", diemcau_image::boottest::summary(&times));
}

fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!("\n  caused by: {c}"));
        cur = c.source();
    }
    s
}
