//! Renders every room screen through the real pipeline (no display: an
//! `appsink`), writes them to `docs/screens/room-*.png` and checks what is
//! where: texts are bright on a dark background, video slots show their
//! producers' pictures, a slot without a producer is black and does not stall
//! the screen, the mute indicator changes.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use diemcau_media::screen::{
    Frame, LinkQuality, Rect, SELF_CHANNEL, Scene, Screen, ScreenSink, ScreenSpec, ScreenState,
    peer_channel,
};
use gst::prelude::*;

const W: u32 = 1280;
const H: u32 = 720;

/// The screens run one at a time: the build machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn start() -> Screen {
    gst::init().expect("GStreamer");
    Screen::start(ScreenSpec::hd(ScreenSink::AppSink)).expect("screen starts")
}

fn save(frame: &Frame, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screens");
    std::fs::create_dir_all(&dir).expect("docs/screens");
    let png = frame.to_png().expect("PNG");
    std::fs::write(dir.join(format!("room-{name}.png")), png).expect("write PNG");
}

fn luma([r, g, b]: [u8; 3]) -> u32 {
    (u32::from(r) * 299 + u32::from(g) * 587 + u32::from(b) * 114) / 1000
}

/// Pixels of `r` (every second one) matching `pred`, as a fraction.
fn fraction(frame: &Frame, r: Rect, pred: impl Fn([u8; 3]) -> bool) -> f64 {
    let (mut n, mut hit) = (0u32, 0u32);
    for y in (r.y..r.y + r.h).step_by(2) {
        for x in (r.x..r.x + r.w).step_by(2) {
            if let Some(p) = frame.pixel(x as u32, y as u32) {
                n += 1;
                hit += u32::from(pred(p));
            }
        }
    }
    f64::from(hit) / f64::from(n.max(1))
}

fn bright(frame: &Frame, r: Rect) -> f64 {
    fraction(frame, r, |p| luma(p) > 200)
}

fn dark(frame: &Frame, r: Rect) -> f64 {
    fraction(frame, r, |p| luma(p) < 50)
}

/// The average colour of a small square around (`x`, `y`).
fn colour_at(frame: &Frame, x: i32, y: i32) -> [u8; 3] {
    let mut sum = [0u32; 3];
    let mut n = 0;
    for dy in -3..=3 {
        for dx in -3..=3 {
            if let Some(p) = frame.pixel((x + dx) as u32, (y + dy) as u32) {
                for c in 0..3 {
                    sum[c] += u32::from(p[c]);
                }
                n += 1;
            }
        }
    }
    sum.map(|s| (s / n.max(1)) as u8)
}

fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 40)
}

fn rect(x: i32, y: i32, w: i32, h: i32) -> Rect {
    Rect { x, y, w, h }
}

fn idle() -> ScreenState {
    ScreenState::Idle {
        commune: "Điểm cầu xã Tiền Phong".into(),
        clock: "14:05".into(),
        next_meeting: Some(("Họp giao ban tháng 6".into(), 4500)),
        network_ok: true,
        provisioned: true,
    }
}

#[test]
fn idle_screen() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut screen = start();
    screen.show(&idle()).expect("show");
    let f = screen.snapshot().expect("frame");
    save(&f, "idle");
    assert_eq!((f.width(), f.height()), (W, H));
    // The blue bar with the commune's name on the left and the clock on the
    // right.
    assert!(near(colour_at(&f, 640, 8), [0x14, 0x3d, 0x6b]));
    assert!(bright(&f, rect(20, 10, 500, 76)) > 0.05, "commune name");
    assert!(bright(&f, rect(1100, 10, 170, 76)) > 0.05, "clock");
    // Next meeting in the middle, "press OK" below, status at the bottom.
    assert!(bright(&f, rect(300, 170, 680, 200)) > 0.03, "next meeting");
    assert!(
        fraction(&f, rect(300, 470, 680, 80), |[r, g, b]| g > 100
            && r < 80
            && b < 80)
            > 0.2,
        "green OK button"
    );
    assert!(
        fraction(&f, rect(20, 670, 700, 40), |[r, g, b]| g > 150
            && r < 150
            && b < 150)
            > 0.01,
        "green status"
    );
    // Dark elsewhere: under the bar, and down the sides.
    assert!(dark(&f, rect(0, 100, W as i32, 60)) > 0.99, "below the bar");
    assert!(dark(&f, rect(0, 160, 200, 480)) > 0.99, "left side");
    assert!(dark(&f, rect(1080, 160, 200, 480)) > 0.99, "right side");
    screen.health().expect("healthy");
}

#[test]
fn joining_incoming_and_error_screens() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut screen = start();

    screen
        .show(&ScreenState::Joining {
            commune: "Điểm cầu xã Tiền Phong".into(),
            meeting: "Họp giao ban tháng 6".into(),
        })
        .expect("show");
    let f = screen.snapshot().expect("frame");
    save(&f, "joining");
    assert!(bright(&f, rect(340, 240, 600, 100)) > 0.05, "Đang kết nối…");
    assert!(dark(&f, rect(0, 110, W as i32, 100)) > 0.99);

    // The same pipeline goes on to the next screens.
    screen
        .show(&ScreenState::Incoming {
            title: "Phòng chống lụt bão".into(),
            seconds_to_join: 10,
        })
        .expect("show");
    let f = screen.snapshot().expect("frame");
    save(&f, "incoming");
    assert!(near(colour_at(&f, 640, 8), [0xb7, 0x1c, 0x1c]), "red bar");
    assert!(
        bright(&f, rect(20, 10, 600, 76)) > 0.05,
        "urgent banner text"
    );
    assert!(bright(&f, rect(300, 180, 680, 80)) > 0.05, "title");
    assert!(
        fraction(&f, rect(300, 250, 680, 100), |[r, g, b]| r > 200
            && g > 160
            && b < 120)
            > 0.02,
        "yellow countdown"
    );
    assert!(dark(&f, rect(0, 100, 250, 400)) > 0.99, "dark left side");

    screen
        .show(&ScreenState::Error {
            reason: "Mất kết nối mạng / Network connection lost".into(),
            advice: "Kiểm tra cáp mạng / Check the network cable".into(),
        })
        .expect("show");
    let f = screen.snapshot().expect("frame");
    save(&f, "error");
    assert!(bright(&f, rect(300, 180, 680, 100)) > 0.04, "reason");
    assert!(
        fraction(&f, rect(420, 545, 440, 40), |[r, g, b]| r > 200
            && g > 160
            && b < 120)
            > 0.2,
        "yellow advice box"
    );
    assert!(dark(&f, rect(0, 100, 250, 400)) > 0.99, "dark left side");
    screen.health().expect("healthy");
}

/// A `videotestsrc` feeding `channel`, standing in for a subscriber or the
/// camera.
struct Producer(gst::Pipeline);

impl Producer {
    fn start(channel: &str, pattern: &str) -> Producer {
        let p = gst::parse::launch(&format!(
            "videotestsrc is-live=true {pattern} \
             ! video/x-raw,width=640,height=360,framerate=15/1 \
             ! intervideosink channel={channel}"
        ))
        .expect("producer")
        .downcast::<gst::Pipeline>()
        .expect("pipeline");
        p.set_state(gst::State::Playing).expect("producer plays");
        Producer(p)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

const ORANGE: [u8; 3] = [0xff, 0x80, 0x00];
const PURPLE: [u8; 3] = [0x8e, 0x24, 0xaa];

fn in_call(muted: bool) -> ScreenState {
    ScreenState::InCall {
        large: Some((1, "UBND huyện Tiền Hải".into())),
        strip: vec![(2, "Xã Đông Trà".into()), (3, "Xã Nam Hà".into())],
        muted,
        link_quality: LinkQuality::Good,
    }
}

#[test]
fn in_call_screen() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut screen = start();
    // Idle first: the video slots start while the pipeline is running.
    screen.show(&idle()).expect("show");
    screen.snapshot().expect("idle frame");

    let _district = Producer::start(&peer_channel(1), "pattern=smpte");
    let _room = Producer::start(
        &peer_channel(2),
        "pattern=solid-color foreground-color=0xff8e24aa",
    );
    let _camera = Producer::start(
        SELF_CHANNEL,
        "pattern=solid-color foreground-color=0xffff8000",
    );
    // Peer 3 has no producer: its tile stays black, the screen goes on.
    std::thread::sleep(Duration::from_millis(300));

    let state = in_call(false);
    screen.show(&state).expect("show");
    // Let the producers' first frames arrive.
    std::thread::sleep(Duration::from_millis(500));
    let unmuted = screen.snapshot().expect("frame");
    save(&unmuted, "incall");
    let scene = Scene::layout(&state, W, H);

    // The large picture shows the district's SMPTE bars, 16:9 kept: yellow
    // second, blue last.
    let large = scene.video(&peer_channel(1)).expect("large");
    let vw = large.h * 16 / 9;
    let vx = large.x + (large.w - vw) / 2;
    let bar_x = |k: i32| vx + vw * (2 * k + 1) / 14;
    let y = large.y + large.h / 4;
    let yellow = colour_at(&unmuted, bar_x(1), y);
    let blue = colour_at(&unmuted, bar_x(6), y);
    let [r, g, b] = yellow;
    assert!(r > 150 && g > 150 && b < 80, "yellow bar: {yellow:?}");
    let [r, g, b] = blue;
    assert!(b > 150 && r < 80 && g < 80, "blue bar: {blue:?}");

    // The self-view in the corner of the large picture.
    let pip = scene.video(SELF_CHANNEL).expect("pip");
    let c = colour_at(&unmuted, pip.x + pip.w / 2, pip.y + pip.h / 2);
    assert!(near(c, ORANGE), "self-view: {c:?}");
    assert!(large.contains(pip.x, pip.y));

    // The strip: one room with a picture, one without a producer (black).
    let a = scene.video(&peer_channel(2)).expect("strip tile");
    let c = colour_at(&unmuted, a.x + a.w / 2, a.y + a.h / 4);
    assert!(near(c, PURPLE), "strip room: {c:?}");
    let b = scene.video(&peer_channel(3)).expect("second strip tile");
    let c = colour_at(&unmuted, b.x + b.w / 2, b.y + b.h / 4);
    assert!(luma(c) < 30, "room without video is black: {c:?}");

    // The large room's name, bright, over the bottom left of its picture.
    assert!(
        bright(&unmuted, rect(20, large.h - 80, 400, 60)) > 0.03,
        "name"
    );

    // The mute indicator (top right) changes when muted.
    let mute_region = rect(W as i32 - 260, 20, 240, 36);
    screen.show(&in_call(true)).expect("show");
    let muted = screen.snapshot().expect("frame");
    save(&muted, "incall");
    let red = |f: &Frame| fraction(f, mute_region, |[r, g, b]| r > 160 && g < 80 && b < 80);
    assert!(red(&muted) > 0.15, "red mute box: {}", red(&muted));
    assert!(
        red(&unmuted) < 0.01,
        "no red box when unmuted: {}",
        red(&unmuted)
    );

    // The peer moving from the strip to the large picture keeps its slot:
    // its picture is there on the next frame.
    let swapped = ScreenState::InCall {
        large: Some((2, "Xã Đông Trà".into())),
        strip: vec![(1, "UBND huyện Tiền Hải".into())],
        muted: true,
        link_quality: LinkQuality::Poor,
    };
    screen.show(&swapped).expect("show");
    let f = screen.snapshot().expect("frame");
    let large = Scene::layout(&swapped, W, H)
        .video(&peer_channel(2))
        .expect("large");
    let c = colour_at(&f, large.x + large.w / 2, large.y + large.h / 3);
    assert!(near(c, PURPLE), "moved room: {c:?}");
    screen.health().expect("healthy");
}

#[test]
fn a_missing_producer_does_not_stall_the_screen() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut screen = start();
    let state = ScreenState::InCall {
        large: Some((4242, "Xã vắng".into())),
        strip: Vec::new(),
        muted: false,
        link_quality: LinkQuality::Unknown,
    };
    screen.show(&state).expect("show");
    let first = screen.snapshot().expect("a frame without any producer");
    let large = Scene::layout(&state, W, H)
        .video(&peer_channel(4242))
        .expect("large");
    assert!(
        dark(
            &first,
            rect(large.w / 4, large.h / 4, large.w / 2, large.h / 3)
        ) > 0.99
    );
    // And frames keep coming.
    for _ in 0..3 {
        screen.show(&state).expect("show");
        screen.snapshot().expect("later frame");
    }
}

#[test]
fn snapshot_needs_an_appsink() {
    gst::init().expect("GStreamer");
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let screen = Screen::start(ScreenSpec {
        sink: ScreenSink::Element("fakesink sync=true".into()),
        ..ScreenSpec::hd(ScreenSink::AppSink)
    })
    .expect("screen with a display sink");
    assert!(screen.snapshot().is_err());
    assert!(Screen::start(ScreenSpec::hd(ScreenSink::Element("no-such-sink".into()))).is_err());
    assert!(
        Screen::start(ScreenSpec {
            width: 0,
            ..ScreenSpec::hd(ScreenSink::AppSink)
        })
        .is_err()
    );
}

/// The screens name DejaVu Sans; fontconfig must resolve it, with
/// Vietnamese coverage (fonts-dejavu-core), or Pango falls back to a font
/// that may draw boxes for "Điểm cầu".
#[test]
fn the_font_covers_vietnamese() {
    let Ok(out) = std::process::Command::new("fc-match")
        .args(["-f", "%{family}|%{lang}", "DejaVu Sans:lang=vi"])
        .output()
    else {
        eprintln!("fc-match not installed; skipping");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let (family, langs) = text.split_once('|').unwrap_or((&text, ""));
    assert!(family.contains("DejaVu Sans"), "font: {text}");
    assert!(langs.split('|').any(|l| l == "vi"), "languages: {langs}");
}

#[test]
fn status_screen_and_volume_toast() {
    use diemcau_media::screen::StatusRow;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut screen = start();
    let row = |label: &str, value: &str, ok| StatusRow {
        label: label.into(),
        value: value.into(),
        ok,
    };
    screen
        .show(&ScreenState::Status {
            commune: "Điểm cầu xã Tiền Phong".into(),
            rows: vec![
                row(
                    "Mạng / Network",
                    "Kết nối với huyện / Connected to the district",
                    true,
                ),
                row("Cài đặt / Provisioning", "Đã đăng ký / Enrolled", true),
                row("Đường truyền / Link", "Tốt / Good", true),
                row("Tivi / TV", "Không có HDMI-CEC / No HDMI-CEC", false),
                row("Loa / Speaker", "60 %", true),
                row("Phiên bản / Version", "diemcau 0.1.0", true),
            ],
        })
        .expect("show");
    let f = screen.snapshot().expect("frame");
    save(&f, "status");
    assert!(near(colour_at(&f, 640, 8), [0x14, 0x3d, 0x6b]), "blue bar");
    assert!(bright(&f, rect(20, 10, 400, 76)) > 0.05, "title");
    // Rows from y = 140 down, labels and values left-aligned.
    assert!(bright(&f, rect(64, 140, 900, 300)) > 0.02, "rows");
    let green = |[r, g, b]: [u8; 3]| g > 150 && r < 150 && b < 150;
    let red = |[r, g, b]: [u8; 3]| r > 200 && g < 140 && b < 140;
    assert!(
        fraction(&f, rect(60, 140, 40, 300), green) > 0.01,
        "green dots"
    );
    assert!(
        fraction(&f, rect(60, 140, 40, 300), red) > 0.002,
        "a red dot"
    );
    assert!(
        fraction(&f, rect(200, 610, 880, 80), |p| luma(p) > 150) > 0.01,
        "how to close"
    );

    // The volume toast over the idle screen.
    let scene = Scene::layout(&idle(), W, H).with_toast("Âm lượng 60 % / Volume 60 %", H);
    screen.apply(&scene).expect("apply");
    let f = screen.snapshot().expect("frame");
    save(&f, "volume");
    assert!(bright(&f, rect(440, 380, 400, 50)) > 0.05, "toast");
    assert!(dark(&f, rect(0, 160, 200, 480)) > 0.99, "left side");
    screen.health().expect("healthy");
}
