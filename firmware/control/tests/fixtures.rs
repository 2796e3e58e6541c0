//! Recorded-style fixtures: evdev event dumps and sysfs capability trees for an RF remote,
//! a GPIO IR receiver (rc-core `gpio_ir_recv`) and a full USB keyboard.
//!
//! The binary dumps and sysfs files under `tests/fixtures/` are checked in. The
//! `fixtures_are_up_to_date` test regenerates them in memory and compares; run it with
//! `DIEMCAU_REGEN_FIXTURES=1` to rewrite them after a deliberate change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diemcau_control::evdev::{
    DeviceFilter, EV_KEY, EV_MSC, EV_SYN, EvdevConfig, EvdevRemote, EventLayout, InputEvent,
    KeyBitmap, KeyDecoder, MSC_SCAN, RejectReason, SYN_REPORT, Verdict, scan,
};
use diemcau_control::keys::{KeyEvent, KeyMap, RemoteKey, RemoteSource, code};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn ev(t_ms: i64, kind: u16, code: u16, value: i32) -> InputEvent {
    InputEvent {
        sec: 1_717_000_000 + t_ms / 1000,
        usec: (t_ms % 1000) * 1000,
        kind,
        code,
        value,
    }
}

/// A key tap as a USB HID remote reports it: scan code, key, sync; release, sync.
fn hid_tap(t: i64, scan: i32, key: u16, repeats: i32) -> Vec<InputEvent> {
    let mut v = vec![
        ev(t, EV_MSC, MSC_SCAN, scan),
        ev(t, EV_KEY, key, 1),
        ev(t, EV_SYN, SYN_REPORT, 0),
    ];
    for r in 0..repeats {
        let tr = t + 500 + i64::from(r) * 33;
        v.push(ev(tr, EV_KEY, key, 2));
        v.push(ev(tr, EV_SYN, SYN_REPORT, 0));
    }
    let tu = t + 600 + i64::from(repeats) * 33;
    v.push(ev(tu, EV_MSC, MSC_SCAN, scan));
    v.push(ev(tu, EV_KEY, key, 0));
    v.push(ev(tu, EV_SYN, SYN_REPORT, 0));
    v
}

/// RF remote: Enter, Volume Up held (two repeats), Esc. 64-bit layout.
fn rf_remote_events() -> Vec<InputEvent> {
    let mut v = hid_tap(0, 0x70028, code::KEY_ENTER, 0);
    v.extend(hid_tap(2000, 0xc00e9, code::KEY_VOLUMEUP, 2));
    v.extend(hid_tap(4000, 0x70029, code::KEY_ESC, 0));
    v
}

const RF_EXPECTED: [KeyEvent; 5] = [
    KeyEvent {
        key: RemoteKey::Ok,
        phase: diemcau_control::keys::KeyPhase::Pressed,
    },
    KeyEvent {
        key: RemoteKey::VolumeUp,
        phase: diemcau_control::keys::KeyPhase::Pressed,
    },
    KeyEvent {
        key: RemoteKey::VolumeUp,
        phase: diemcau_control::keys::KeyPhase::Repeat,
    },
    KeyEvent {
        key: RemoteKey::VolumeUp,
        phase: diemcau_control::keys::KeyPhase::Repeat,
    },
    KeyEvent {
        key: RemoteKey::Back,
        phase: diemcau_control::keys::KeyPhase::Pressed,
    },
];

/// IR receiver (rc-core, NEC protocol scancodes): OK, 5, Mute. 32-bit (armhf) layout.
fn ir_events() -> Vec<InputEvent> {
    let mut v = hid_tap(0, 0x0440, code::KEY_OK, 0);
    v.extend(hid_tap(1500, 0x0405, code::KEY_NUMERIC_0 + 5, 0));
    v.extend(hid_tap(3000, 0x0410, code::KEY_MUTE, 0));
    v
}

fn dump(events: &[InputEvent], layout: EventLayout) -> Vec<u8> {
    events.iter().flat_map(|e| e.to_bytes(layout)).collect()
}

struct SysDevice {
    event: &'static str,
    name: &'static str,
    bustype: &'static str,
    vendor: &'static str,
    product: &'static str,
    caps: String,
}

fn sys_devices() -> Vec<SysDevice> {
    let rf_keys = [
        code::KEY_ESC,
        code::KEY_ENTER,
        code::KEY_UP,
        code::KEY_DOWN,
        code::KEY_LEFT,
        code::KEY_RIGHT,
        code::KEY_MUTE,
        code::KEY_VOLUMEUP,
        code::KEY_VOLUMEDOWN,
        code::KEY_POWER,
        code::KEY_MENU,
        code::KEY_BACK,
        code::KEY_HOMEPAGE,
        code::KEY_PLAYPAUSE,
    ]
    .into_iter()
    .chain(code::KEY_1..=code::KEY_0);
    let ir_keys = [
        code::KEY_OK,
        code::KEY_UP,
        code::KEY_DOWN,
        code::KEY_LEFT,
        code::KEY_RIGHT,
        code::KEY_BACK,
        code::KEY_HOME,
        code::KEY_MUTE,
        code::KEY_VOLUMEUP,
        code::KEY_VOLUMEDOWN,
        code::KEY_POWER2,
        code::KEY_MENU,
        code::KEY_RED,
        code::KEY_GREEN,
        code::KEY_YELLOW,
        code::KEY_BLUE,
    ]
    .into_iter()
    .chain(code::KEY_NUMERIC_0..=code::KEY_NUMERIC_9);
    vec![
        SysDevice {
            event: "event0",
            name: "HAOBO Technology USB Composite Device Consumer Control",
            bustype: "0003",
            vendor: "1d57",
            product: "ad02",
            caps: KeyBitmap::from_codes(rf_keys).to_sysfs(64),
        },
        SysDevice {
            event: "event1",
            name: "gpio_ir_recv",
            bustype: "0019",
            vendor: "0001",
            product: "0001",
            caps: KeyBitmap::from_codes(ir_keys).to_sysfs(64),
        },
        SysDevice {
            event: "event2",
            name: "Logitech USB Keyboard",
            bustype: "0003",
            vendor: "046d",
            product: "c31c",
            // As read from a real keyboard on arm64.
            caps: "1000000000007 ff9f207ac14057ff febeffdfffefffff fffffffffffffffe".into(),
        },
    ]
}

fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = vec![
        (
            PathBuf::from("events/rf-remote-abi64.bin"),
            dump(&rf_remote_events(), EventLayout::Abi64),
        ),
        (
            PathBuf::from("events/ir-gpio-abi32.bin"),
            dump(&ir_events(), EventLayout::Abi32),
        ),
    ];
    for d in sys_devices() {
        let base = PathBuf::from("sysfs/class/input")
            .join(d.event)
            .join("device");
        let line = |s: &str| format!("{s}\n").into_bytes();
        files.push((base.join("name"), line(d.name)));
        files.push((base.join("id/bustype"), line(d.bustype)));
        files.push((base.join("id/vendor"), line(d.vendor)));
        files.push((base.join("id/product"), line(d.product)));
        files.push((base.join("capabilities/key"), line(&d.caps)));
    }
    files
}

#[test]
fn fixtures_are_up_to_date() {
    let regen = std::env::var_os("DIEMCAU_REGEN_FIXTURES").is_some();
    for (rel, bytes) in generated() {
        let path = fixtures().join(&rel);
        if regen {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (run with DIEMCAU_REGEN_FIXTURES=1)", rel.display())
        });
        assert_eq!(on_disk, bytes, "{} is stale", rel.display());
    }
}

#[cfg(target_endian = "little")]
#[test]
fn rf_remote_dump_decodes() {
    let bytes = std::fs::read(fixtures().join("events/rf-remote-abi64.bin")).unwrap();
    assert_eq!(bytes.len() % 24, 0);
    let mut d = KeyDecoder::new(EventLayout::Abi64, KeyMap::default());
    assert_eq!(d.push(&bytes), RF_EXPECTED);
    // The same bytes read as the 32-bit layout are garbage for the room, not a panic.
    let mut wrong = KeyDecoder::new(EventLayout::Abi32, KeyMap::default());
    let _ = wrong.push(&bytes);
}

#[cfg(target_endian = "little")]
#[test]
fn ir_dump_decodes_with_32_bit_layout() {
    let bytes = std::fs::read(fixtures().join("events/ir-gpio-abi32.bin")).unwrap();
    assert_eq!(bytes.len() % 16, 0);
    let mut d = KeyDecoder::new(EventLayout::Abi32, KeyMap::default());
    assert_eq!(
        d.push(&bytes),
        [
            KeyEvent::pressed(RemoteKey::Ok),
            KeyEvent::pressed(RemoteKey::Digit(5)),
            KeyEvent::pressed(RemoteKey::Mute)
        ]
    );
}

#[test]
fn truncated_dumps_decode_a_prefix() {
    let bytes = std::fs::read(fixtures().join("events/rf-remote-abi64.bin")).unwrap();
    for cut in [0, 1, 23, 24, 25, 47, bytes.len() - 1] {
        let mut d = KeyDecoder::new(EventLayout::Abi64, KeyMap::default());
        let keys = d.push(&bytes[..cut]);
        assert!(keys.len() <= RF_EXPECTED.len());
        assert_eq!(keys[..], RF_EXPECTED[..keys.len()]);
    }
}

fn fake_dev_dir(nodes: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for n in nodes {
        std::fs::write(dir.path().join(n), b"").unwrap();
    }
    dir
}

#[test]
fn scan_accepts_remotes_and_rejects_the_keyboard() {
    let dev = fake_dev_dir(&["event0", "event1", "event2", "mice", "event9"]);
    let sys = fixtures().join("sysfs/class/input");
    let found = scan(
        dev.path(),
        &sys,
        EventLayout::Abi64,
        &DeviceFilter::default(),
    )
    .unwrap();
    // event9 has no sysfs entry (mid-unplug) and "mice" is not an event node.
    let summary: Vec<(String, String, Verdict)> = found
        .iter()
        .map(|d| {
            (
                d.node.file_name().unwrap().to_string_lossy().into_owned(),
                d.info.name.clone(),
                d.verdict,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "event0".into(),
                "HAOBO Technology USB Composite Device Consumer Control".into(),
                Verdict::Remote
            ),
            ("event1".into(), "gpio_ir_recv".into(), Verdict::Remote),
            (
                "event2".into(),
                "Logitech USB Keyboard".into(),
                Verdict::Rejected(RejectReason::FullKeyboard { letters: 26 })
            ),
        ]
    );
    assert_eq!(found[0].info.vendor, 0x1d57);
    assert_eq!(found[1].info.bustype, 0x19);
    assert!(found[1].info.keys.contains(code::KEY_OK));
}

#[test]
fn scan_of_missing_dev_dir_is_an_error() {
    let sys = fixtures().join("sysfs/class/input");
    assert!(
        scan(
            Path::new("/nonexistent/input"),
            &sys,
            EventLayout::Abi64,
            &DeviceFilter::default()
        )
        .is_err()
    );
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs")
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

/// Plays `bytes` into the FIFO as a device would, then "unplugs" (closes the writer).
fn play(fifo: PathBuf, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::Write;
        // Blocks until the remote opens the FIFO for reading.
        let mut w = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
        w.write_all(&bytes).unwrap();
    })
}

async fn next(remote: &mut EvdevRemote) -> KeyEvent {
    tokio::time::timeout(Duration::from_secs(10), remote.next_key())
        .await
        .expect("key within 10 s")
        .expect("remote still running")
}

#[cfg(target_endian = "little")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evdev_remote_reads_survives_unplug_and_replug() {
    let dev = fake_dev_dir(&["event2"]); // the keyboard: a plain file, never opened
    let fifo = dev.path().join("event0");
    mkfifo(&fifo);
    let bytes = std::fs::read(fixtures().join("events/rf-remote-abi64.bin")).unwrap();
    let mut remote = EvdevRemote::spawn(EvdevConfig {
        dev_root: dev.path().to_owned(),
        sys_root: fixtures().join("sysfs/class/input"),
        layout: EventLayout::Abi64,
        rescan_every: Duration::from_millis(50),
        ..EvdevConfig::default()
    });

    let writer = play(fifo.clone(), bytes.clone());
    for want in RF_EXPECTED {
        assert_eq!(next(&mut remote).await, want);
    }
    writer.join().unwrap();

    // Replug: the next scan reopens the node and keys flow again.
    let writer = play(fifo.clone(), bytes[..24 * 3].to_vec());
    assert_eq!(next(&mut remote).await, KeyEvent::pressed(RemoteKey::Ok));
    writer.join().unwrap();
    drop(remote);
}
