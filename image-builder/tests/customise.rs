//! `customise` on a small disk image made here with truncate + sfdisk +
//! mkfs.vfat (no root, no loop device): the provisioning file lands at the
//! root of the FAT partition, is replaced on a second run, and is accepted
//! by the device agent's own parser (`diemcau_agent::Provisioning`).

use std::path::{Path, PathBuf};
use std::process::Command;

use diemcau_image::customise::{self, PROVISION_FILE, SiteInput};

fn have(tool: &str) -> bool {
    diemcau_image::tools::which(tool).is_some()
}

/// 80 MiB image: partition 1 FAT32 (68 MiB at 1 MiB), partition 2 Linux.
fn small_image(dir: &Path) -> PathBuf {
    let img = dir.join("small.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(80 << 20).unwrap();
    drop(f);
    let mut c = Command::new(diemcau_image::tools::which("sfdisk").unwrap());
    c.args(["-q", "--no-reread", "--no-tell-kernel"]).arg(&img);
    c.stdin(std::process::Stdio::piped());
    let mut ch = c.spawn().unwrap();
    use std::io::Write;
    ch.stdin
        .take()
        .unwrap()
        .write_all(
            b"label: dos\nstart=2048, size=139264, type=c, bootable\nstart=141312, type=83\n",
        )
        .unwrap();
    assert!(ch.wait().unwrap().success());
    // 139264 sectors = 69632 KiB blocks, written at sector 2048.
    let st = Command::new(diemcau_image::tools::which("mkfs.vfat").unwrap())
        .args(["-F", "32", "-n", "BOOT", "--offset", "2048"])
        .arg(&img)
        .arg("69632")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    img
}

fn input() -> SiteInput {
    SiteInput {
        district_url: "http://10.0.2.2:8080".into(),
        claim_token: "dc1_test-token".into(),
        commune: Some("xa-tan-lap".into()),
        wifi: Some("UBND-XA:matkhau123".into()),
        ssh_keys_text: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB tech@huyen\n".into()),
    }
}

#[test]
fn writes_provisioning_file_the_agent_accepts() {
    if !(have("sfdisk") && have("mkfs.vfat") && have("mcopy")) {
        eprintln!("skipped: needs fdisk, dosfstools, mtools");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = small_image(d.path());
    let before = std::fs::metadata(&img).unwrap().len();
    let p = customise::customise(&img, &input()).unwrap();
    assert_eq!(
        std::fs::metadata(&img).unwrap().len(),
        before,
        "image size unchanged"
    );
    let text = customise::read_boot_file(&img, PROVISION_FILE)
        .unwrap()
        .expect("file written");
    let text = String::from_utf8(text).unwrap();
    let parsed = diemcau_agent::Provisioning::parse(Path::new(PROVISION_FILE), &text)
        .unwrap_or_else(|e| panic!("agent refused what customise wrote: {e}\n{text}"));
    assert_eq!(parsed.district_url.as_deref(), Some("http://10.0.2.2:8080"));
    assert_eq!(parsed.claim_token, "dc1_test-token");
    assert_eq!(parsed.commune.as_deref(), Some("xa-tan-lap"));
    assert_eq!(parsed.wifi.unwrap().ssid, "UBND-XA");
    assert_eq!(parsed.ssh_authorized_keys, p.ssh_authorized_keys);

    // A second run replaces the file (no "file exists" prompt from mtools).
    let mut second = input();
    second.commune = None;
    second.wifi = None;
    second.ssh_keys_text = None;
    customise::customise(&img, &second).unwrap();
    let text = String::from_utf8(
        customise::read_boot_file(&img, PROVISION_FILE)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let parsed = diemcau_agent::Provisioning::parse(Path::new(PROVISION_FILE), &text).unwrap();
    assert_eq!(parsed.commune, None);
    assert!(parsed.ssh_authorized_keys.is_empty());

    // The FAT is still clean.
    if have("fsck.fat") {
        let part = d.path().join("p1");
        diemcau_image::disk::extract_partition(&img, 2048 * 512, 139264 * 512, &part).unwrap();
        let out = Command::new(diemcau_image::tools::which("fsck.fat").unwrap())
            .arg("-n")
            .arg(&part)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn bad_input_leaves_the_image_untouched() {
    if !(have("sfdisk") && have("mkfs.vfat") && have("mcopy")) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = small_image(d.path());
    let sha = diemcau_image::sha256_file(&img).unwrap();
    let mut i = input();
    i.claim_token = "spaces are not allowed".into();
    let e = customise::customise(&img, &i).unwrap_err();
    assert!(e.to_string().contains("--claim-token"), "{e}");
    assert_eq!(diemcau_image::sha256_file(&img).unwrap(), sha);
}

#[test]
fn image_without_fat_or_table_is_refused_plainly() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("zero.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let e = customise::customise(&img, &input()).unwrap_err();
    let chain = format!(
        "{e}: {}",
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(chain.contains("no MBR partition table"), "{chain}");
    let e = customise::customise(&d.path().join("missing.img"), &input()).unwrap_err();
    assert!(e.to_string().contains("missing.img"), "{e}");
}
