//! The room screen: what commune staff see on the HDMI display.
//!
//! One long-lived pipeline draws every screen of the room (idle, joining,
//! incoming urgent meeting, in call, error). A dark background and a colour
//! bar (`videotestsrc`) and up to six video slots (`intervideosrc`) meet in a
//! `compositor`; a chain of `textoverlay`s writes the texts with Pango markup;
//! the result goes to the board's display sink (or an `appsink` in tests).
//! [`Screen::show`] changes pad geometry, colours and texts of the running
//! pipeline: nothing is rebuilt or restarted, so switching screens costs one
//! frame.
//!
//! Video comes from other pipelines through GStreamer's `inter` elements: a
//! call's subscriber pipelines end in `intervideosink channel=`[`peer_channel`]
//! and the camera's self-view in `intervideosink channel=`[`SELF_CHANNEL`].
//! A slot whose producer has not started or has gone away shows black after
//! `intervideosrc`'s timeout ([`PRODUCER_TIMEOUT`]) and never stalls the
//! screen. Slots keep their peer while it stays on screen, so when the active
//! speaker changes the feeds only move.
//!
//! What goes where is decided by a pure function of the [`ScreenState`] and
//! the screen size ([`Scene`]), which the unit tests check without GStreamer;
//! the [`Screen`] only applies it. Texts are bilingual: a caller's text of the
//! form `"Tiếng Việt / English"` is drawn as a large Vietnamese line with a
//! smaller English line under it. Fonts come from fontconfig with Vietnamese
//! coverage requested (DejaVu Sans on Debian).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;

use crate::MediaError;
use crate::stats::RtpStats;

/// Channel of the self-view: the camera pipeline's preview ends in
/// `intervideosink channel=diemcau-self`.
pub const SELF_CHANNEL: &str = "diemcau-self";

/// After this long without a frame from its producer a video slot shows
/// black instead of the last frame.
pub const PRODUCER_TIMEOUT: Duration = Duration::from_secs(1);

/// Channel of a remote room's decoded video: its subscriber pipeline ends in
/// `intervideosink channel=<peer_channel(id)>`.
pub fn peer_channel(id: u64) -> String {
    format!("diemcau-peer-{id}")
}

/// Remote rooms shown in the strip at most (besides the large one).
pub const MAX_STRIP: usize = 4;

/// Where the screen goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScreenSink {
    /// A `gst-launch` fragment for the display, e.g. the board profile's
    /// `ElementSpec::launch_fragment()` (`kmssink ...`) or `autovideosink`.
    Element(String),
    /// Frames are kept for [`Screen::snapshot`] (tests, screenshots).
    AppSink,
}

/// Size, rate and destination of the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenSpec {
    pub width: u32,
    pub height: u32,
    /// Frames per second of the composed picture. 15 is enough for the idle
    /// screens and keeps a small board cool; use 25 or 30 if the display
    /// also carries the call.
    pub fps: u32,
    pub sink: ScreenSink,
}

impl ScreenSpec {
    /// 1280×720 at 15 frames per second: what the boards drive by default.
    pub fn hd(sink: ScreenSink) -> Self {
        ScreenSpec {
            width: 1280,
            height: 720,
            fps: 15,
            sink,
        }
    }
}

/// How well the call's network link is doing, from the call statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkQuality {
    Good,
    Fair,
    Poor,
    /// No statistics yet.
    Unknown,
}

impl LinkQuality {
    /// Rates a link from the packet loss (percent) and round-trip time over
    /// the last few seconds. Poor: over 5 % loss or 400 ms; fair: over 1 %
    /// or 200 ms.
    pub fn assess(loss_percent: f64, rtt_ms: Option<f64>) -> Self {
        let rtt = rtt_ms.filter(|r| r.is_finite()).unwrap_or(0.0);
        if !loss_percent.is_finite() {
            return LinkQuality::Unknown;
        }
        if loss_percent > 5.0 || rtt > 400.0 {
            LinkQuality::Poor
        } else if loss_percent > 1.0 || rtt > 200.0 {
            LinkQuality::Fair
        } else {
            LinkQuality::Good
        }
    }

    /// Rates a receiving link from two snapshots of its statistics taken a
    /// few seconds apart. Unknown if nothing arrived in between.
    pub fn between(earlier: &RtpStats, later: &RtpStats) -> Self {
        let received = later
            .packets_received
            .saturating_sub(earlier.packets_received);
        let lost = later
            .packets_lost
            .saturating_sub(earlier.packets_lost)
            .max(0) as u64;
        let expected = received.saturating_add(lost);
        if received == 0 {
            return LinkQuality::Unknown;
        }
        Self::assess(lost as f64 * 100.0 / expected as f64, later.rtt_ms)
    }
}

/// What the screen shows.
#[derive(Debug, Clone, PartialEq)]
pub enum ScreenState {
    /// Waiting for a meeting.
    Idle {
        /// The room's name, e.g. "Điểm cầu xã Tiền Phong".
        commune: String,
        /// Local time as it should be shown, e.g. "14:05".
        clock: String,
        /// Title of the next scheduled meeting and seconds until it starts
        /// (negative once it has started).
        next_meeting: Option<(String, i64)>,
        network_ok: bool,
        provisioned: bool,
    },
    /// Connecting to `meeting`.
    Joining { commune: String, meeting: String },
    /// The district calls an urgent meeting; the room joins by itself when
    /// the countdown ends.
    Incoming { title: String, seconds_to_join: i64 },
    /// In a meeting. The self-view is always shown as a picture-in-picture.
    InCall {
        /// The district or the active speaker: peer id and room name.
        large: Option<(u64, String)>,
        /// Other rooms, shown in a strip under the large picture while
        /// there is space ([`MAX_STRIP`]).
        strip: Vec<(u64, String)>,
        /// Our microphone is muted.
        muted: bool,
        link_quality: LinkQuality,
    },
    /// Something needs the staff: `reason` and what to do (`advice`), both
    /// bilingual, e.g. "Kiểm tra cáp mạng / Check the network cable".
    Error { reason: String, advice: String },
    /// The status screen (the remote's Home key): one row per part of the
    /// room (network, provisioning, link, version, speaker...).
    Status {
        commune: String,
        rows: Vec<StatusRow>,
    },
}

/// One row of the status screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    /// Bilingual: "Mạng / Network".
    pub label: String,
    /// As staff should read it, e.g. "Kết nối với huyện / Connected to the district".
    pub value: String,
    /// Green when fine, red when something needs doing.
    pub ok: bool,
}

// ---------------------------------------------------------------------------
// Scene: the pure description of one screen.

/// A rectangle on the screen, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
}

impl Rect {
    fn new(x: i32, y: i32, w: i32, h: i32) -> Self {
        Rect { x, y, w, h }
    }

    /// Whether the point lies inside.
    pub fn contains(&self, x: i32, y: i32) -> bool {
        x >= self.x && y >= self.y && x < self.x + self.w && y < self.y + self.h
    }
}

/// Horizontal anchor of a text block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HAlign {
    Left,
    Center,
    Right,
}

/// Vertical anchor of a text block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VAlign {
    Top,
    Center,
    Bottom,
}

/// One text block: Pango markup anchored to a screen edge with a margin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub markup: String,
    pub halign: HAlign,
    pub valign: VAlign,
    /// Distance from the anchoring edges, in pixels.
    pub xpad: i32,
    pub ypad: i32,
    /// A dark box behind the text, for legibility over video.
    pub shaded: bool,
}

/// The text blocks a scene can use; one `textoverlay` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spot {
    TopLeft,
    TopRight,
    Center,
    Bottom,
    BottomLeft,
    /// Name of the video in slot `n` (0: large, 1..: strip).
    Label(usize),
    /// A short message over any screen (the speaker volume after Volume ±).
    Toast,
}

const LABELS: usize = 1 + MAX_STRIP;
const SPOTS: usize = 6 + LABELS;

impl Spot {
    fn index(self) -> usize {
        match self {
            Spot::TopLeft => 0,
            Spot::TopRight => 1,
            Spot::Center => 2,
            Spot::Bottom => 3,
            Spot::BottomLeft => 4,
            Spot::Label(n) => 5 + n.min(LABELS - 1),
            Spot::Toast => 5 + LABELS,
        }
    }
}

/// One video on the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Video {
    /// The `intervideosink` channel it comes from.
    pub channel: String,
    pub rect: Rect,
    /// Higher is drawn on top.
    pub zorder: u32,
}

/// Everything one screen shows; made by [`Scene::layout`], applied by
/// [`Screen::show`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scene {
    /// Background colour, ARGB.
    pub background: u32,
    /// The colour (ARGB) of the bar across the top, if shown. It is
    /// [`bar_height`] lines high.
    pub bar: Option<u32>,
    pub texts: Vec<(Spot, Text)>,
    pub videos: Vec<Video>,
}

const BG: u32 = 0xff0b_1622;
const BG_CALL: u32 = 0xff00_0000;
const BG_URGENT: u32 = 0xff2a_0c0c;
const BAR_BLUE: u32 = 0xff14_3d6b;
const BAR_RED: u32 = 0xffb7_1c1c;
const BAR_ERROR: u32 = 0xff8a_1c1c;

const WHITE: &str = "#ffffff";
const GREY: &str = "#b8c7d6";
const YELLOW: &str = "#ffd54f";
const GREEN: &str = "#69d36e";
const RED: &str = "#ff6b6b";
const FONT: &str = "DejaVu Sans";

/// Markup helpers, sized for a screen of height `h` (sizes are given in
/// points for a 720-line screen).
struct Style {
    scale: f64,
}

impl Style {
    fn new(height: u32) -> Self {
        Style {
            scale: (f64::from(height) / 720.0).max(0.1),
        }
    }

    fn px(&self, v: f64) -> i32 {
        (v * self.scale).round() as i32
    }

    /// `text`, escaped, in the given size, colour and weight.
    fn span(&self, pt: f64, color: &str, bold: bool, text: &str) -> String {
        let size = (pt * self.scale * 1024.0).round() as i64;
        format!(
            "<span font_family=\"{FONT}\" size=\"{size}\" foreground=\"{color}\"{w}>{t}</span>",
            w = if bold { " weight=\"bold\"" } else { "" },
            t = glib::markup_escape_text(text),
        )
    }

    /// Like [`span`](Self::span) on a coloured box.
    fn boxed(&self, pt: f64, fg: &str, bg: &str, text: &str) -> String {
        let size = (pt * self.scale * 1024.0).round() as i64;
        format!(
            "<span font_family=\"{FONT}\" size=\"{size}\" foreground=\"{fg}\" background=\"{bg}\" \
             weight=\"bold\">\u{2002}{t}\u{2002}</span>",
            t = glib::markup_escape_text(text),
        )
    }

    /// A bilingual text: Vietnamese large, English smaller under it.
    fn bilingual(&self, pt: f64, color: &str, bold: bool, text: &str) -> String {
        let (vi, en) = split_bilingual(text);
        match en {
            Some(en) => format!(
                "{}\n{}",
                self.span(pt, color, bold, vi),
                self.span(pt * 0.72, GREY, false, en)
            ),
            None => self.span(pt, color, bold, vi),
        }
    }
}

/// Splits "Tiếng Việt / English" at the first " / ".
pub fn split_bilingual(text: &str) -> (&str, Option<&str>) {
    match text.split_once(" / ") {
        Some((vi, en)) if !vi.trim().is_empty() && !en.trim().is_empty() => {
            (vi.trim(), Some(en.trim()))
        }
        _ => (text.trim(), None),
    }
}

/// "1 giờ 15 phút / 1 h 15 min" for a positive number of seconds.
pub fn duration_text(seconds: i64) -> (String, String) {
    let s = seconds.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if s < 60 {
        (format!("{s} giây"), format!("{s} s"))
    } else if s < 3600 {
        // Round up: "starts in 1 min" until it starts.
        let m = (s + 59) / 60;
        (format!("{m} phút"), format!("{m} min"))
    } else if d == 0 {
        (format!("{h} giờ {m} phút"), format!("{h} h {m} min"))
    } else {
        (format!("{d} ngày {h} giờ"), format!("{d} d {h} h"))
    }
}

/// The countdown line of the next meeting, bilingual.
pub fn countdown_text(seconds_to_start: i64) -> String {
    if seconds_to_start <= 0 {
        return "Đang diễn ra / In progress".to_owned();
    }
    let (vi, en) = duration_text(seconds_to_start);
    format!("Bắt đầu sau {vi} / Starts in {en}")
}

impl Scene {
    /// What `state` looks like on a `width`×`height` screen.
    pub fn layout(state: &ScreenState, width: u32, height: u32) -> Scene {
        let st = Style::new(height);
        let (w, h) = (clamp_i32(width), clamp_i32(height));
        let margin = st.px(32.0);
        let mut texts = Vec::new();
        let mut put = |spot, markup: String, halign, valign, xpad, ypad, shaded| {
            texts.push((
                spot,
                Text {
                    markup,
                    halign,
                    valign,
                    xpad,
                    ypad,
                    shaded,
                },
            ));
        };
        // Texts inside the top bar sit centred in it.
        let bar_text_y = st.px(22.0);
        let mut videos = Vec::new();
        let (background, bar) = match state {
            ScreenState::Idle {
                commune,
                clock,
                next_meeting,
                network_ok,
                provisioned,
            } => {
                put(
                    Spot::TopLeft,
                    st.span(30.0, WHITE, true, commune),
                    HAlign::Left,
                    VAlign::Top,
                    margin,
                    bar_text_y,
                    false,
                );
                put(
                    Spot::TopRight,
                    st.span(30.0, WHITE, true, clock),
                    HAlign::Right,
                    VAlign::Top,
                    margin,
                    bar_text_y,
                    false,
                );
                let meeting = match next_meeting {
                    Some((title, secs)) => {
                        let countdown = countdown_text(*secs);
                        let (vi, en) = split_bilingual(&countdown);
                        format!(
                            "{}\n{}\n{}\n{}",
                            st.span(20.0, GREY, false, "Cuộc họp tiếp theo · Next meeting"),
                            st.span(34.0, WHITE, true, title),
                            st.span(28.0, YELLOW, true, vi),
                            st.span(20.0, GREY, false, en.unwrap_or_default()),
                        )
                    }
                    None => st.bilingual(
                        28.0,
                        WHITE,
                        false,
                        "Chưa có cuộc họp nào / No meeting scheduled",
                    ),
                };
                put(
                    Spot::Center,
                    meeting,
                    HAlign::Center,
                    VAlign::Top,
                    0,
                    st.px(170.0),
                    false,
                );
                put(
                    Spot::Bottom,
                    format!(
                        "{}\n{}",
                        st.boxed(34.0, WHITE, "#2e7d32", "Nhấn OK để tham gia"),
                        st.span(22.0, GREY, false, "Press OK to join"),
                    ),
                    HAlign::Center,
                    VAlign::Bottom,
                    0,
                    st.px(110.0),
                    false,
                );
                let net = if *network_ok {
                    st.span(18.0, GREEN, false, "● Mạng tốt · Network OK")
                } else {
                    st.span(
                        18.0,
                        RED,
                        true,
                        "● Mất mạng: kiểm tra cáp mạng · No network: check the cable",
                    )
                };
                let prov = if *provisioned {
                    st.span(18.0, GREEN, false, "● Đã cài đặt · Set up")
                } else {
                    st.span(
                        18.0,
                        YELLOW,
                        true,
                        "● Chưa cài đặt: gọi huyện · Not set up: call the district",
                    )
                };
                put(
                    Spot::BottomLeft,
                    format!("{net}\u{2003}\u{2003}{prov}"),
                    HAlign::Left,
                    VAlign::Bottom,
                    margin,
                    st.px(24.0),
                    false,
                );
                (BG, Some(BAR_BLUE))
            }
            ScreenState::Joining { commune, meeting } => {
                put(
                    Spot::TopLeft,
                    st.span(30.0, WHITE, true, commune),
                    HAlign::Left,
                    VAlign::Top,
                    margin,
                    bar_text_y,
                    false,
                );
                put(
                    Spot::Center,
                    format!(
                        "{}\n{}\n\n{}",
                        st.span(48.0, WHITE, true, "Đang kết nối…"),
                        st.span(28.0, GREY, false, "Joining…"),
                        st.span(30.0, YELLOW, true, meeting),
                    ),
                    HAlign::Center,
                    VAlign::Center,
                    0,
                    0,
                    false,
                );
                put(
                    Spot::Bottom,
                    st.bilingual(22.0, GREY, false, "Vui lòng chờ / Please wait"),
                    HAlign::Center,
                    VAlign::Bottom,
                    0,
                    st.px(48.0),
                    false,
                );
                (BG, Some(BAR_BLUE))
            }
            ScreenState::Incoming {
                title,
                seconds_to_join,
            } => {
                put(
                    Spot::TopLeft,
                    format!(
                        "{}{}",
                        st.span(30.0, WHITE, true, "⚠ Cuộc họp khẩn từ huyện"),
                        st.span(22.0, WHITE, false, "  ·  Urgent district meeting"),
                    ),
                    HAlign::Left,
                    VAlign::Top,
                    margin,
                    bar_text_y,
                    false,
                );
                let (vi, en) = duration_text(*seconds_to_join);
                put(
                    Spot::Center,
                    format!(
                        "{}\n\n{}\n{}",
                        st.span(40.0, WHITE, true, title),
                        st.span(30.0, YELLOW, true, &format!("Tự động tham gia sau {vi}")),
                        st.span(22.0, GREY, false, &format!("Joining automatically in {en}")),
                    ),
                    HAlign::Center,
                    VAlign::Top,
                    0,
                    st.px(190.0),
                    false,
                );
                put(
                    Spot::Bottom,
                    format!(
                        "{}\n{}",
                        st.boxed(34.0, WHITE, "#2e7d32", "Nhấn OK để tham gia ngay"),
                        st.span(22.0, GREY, false, "Press OK to join now"),
                    ),
                    HAlign::Center,
                    VAlign::Bottom,
                    0,
                    st.px(90.0),
                    false,
                );
                (BG_URGENT, Some(BAR_RED))
            }
            ScreenState::Error { reason, advice } => {
                put(
                    Spot::TopLeft,
                    format!(
                        "{}{}",
                        st.span(30.0, WHITE, true, "⚠ Có sự cố"),
                        st.span(22.0, WHITE, false, "  ·  Problem"),
                    ),
                    HAlign::Left,
                    VAlign::Top,
                    margin,
                    bar_text_y,
                    false,
                );
                put(
                    Spot::Center,
                    st.bilingual(38.0, WHITE, true, reason),
                    HAlign::Center,
                    VAlign::Top,
                    0,
                    st.px(190.0),
                    false,
                );
                let (vi, en) = split_bilingual(advice);
                let mut what = format!(
                    "{}\n{}",
                    st.span(20.0, GREY, false, "Cách xử lý · What to do"),
                    st.boxed(32.0, "#1a1a1a", YELLOW, vi),
                );
                if let Some(en) = en {
                    what.push('\n');
                    what.push_str(&st.span(24.0, YELLOW, false, en));
                }
                put(
                    Spot::Bottom,
                    what,
                    HAlign::Center,
                    VAlign::Bottom,
                    0,
                    st.px(90.0),
                    false,
                );
                (BG_URGENT, Some(BAR_ERROR))
            }
            ScreenState::Status { commune, rows } => {
                put(
                    Spot::TopLeft,
                    format!(
                        "{}{}",
                        st.span(30.0, WHITE, true, "Trạng thái"),
                        st.span(22.0, WHITE, false, "  ·  Status"),
                    ),
                    HAlign::Left,
                    VAlign::Top,
                    margin,
                    bar_text_y,
                    false,
                );
                put(
                    Spot::TopRight,
                    st.span(24.0, WHITE, true, commune),
                    HAlign::Right,
                    VAlign::Top,
                    margin,
                    bar_text_y + st.px(4.0),
                    false,
                );
                let lines: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        let (vi, en) = split_bilingual(&r.label);
                        let label = match en {
                            Some(en) => format!("{vi} · {en}"),
                            None => vi.to_owned(),
                        };
                        let (dot, color) = if r.ok { ("●", GREEN) } else { ("●", RED) };
                        format!(
                            "{} {}  {}",
                            st.span(22.0, color, true, dot),
                            st.span(20.0, GREY, false, &format!("{label}:")),
                            st.span(22.0, WHITE, !r.ok, &r.value.replace(" / ", " · ")),
                        )
                    })
                    .collect();
                put(
                    Spot::Center,
                    lines.join("\n"),
                    HAlign::Left,
                    VAlign::Top,
                    margin * 2,
                    st.px(140.0),
                    false,
                );
                put(
                    Spot::Bottom,
                    st.bilingual(
                        22.0,
                        GREY,
                        false,
                        "Nhấn Home hoặc Back để đóng / Press Home or Back to close",
                    ),
                    HAlign::Center,
                    VAlign::Bottom,
                    0,
                    st.px(40.0),
                    false,
                );
                (BG, Some(BAR_BLUE))
            }
            ScreenState::InCall {
                large,
                strip,
                muted,
                link_quality,
            } => {
                let gap = st.px(8.0);
                let strip: Vec<&(u64, String)> = strip
                    .iter()
                    .filter(|(id, _)| large.as_ref().is_none_or(|(l, _)| l != id))
                    .collect();
                let strip_h = if strip.is_empty() { 0 } else { h / 5 };
                let tile_w = strip_h * 16 / 9;
                let fits = if tile_w > 0 {
                    usize::try_from((w - gap) / (tile_w + gap)).unwrap_or(0)
                } else {
                    0
                };
                let shown = strip.len().min(fits).min(MAX_STRIP);
                let large_rect = Rect::new(0, 0, w, h - if shown > 0 { strip_h + gap } else { 0 });
                let label_pt = 20.0;
                match large {
                    Some((id, name)) => {
                        videos.push(Video {
                            channel: peer_channel(*id),
                            rect: large_rect,
                            zorder: 2,
                        });
                        put(
                            Spot::Label(0),
                            st.span(label_pt + 4.0, WHITE, true, name),
                            HAlign::Left,
                            VAlign::Bottom,
                            margin,
                            h - (large_rect.y + large_rect.h) + st.px(20.0),
                            true,
                        );
                    }
                    None => put(
                        Spot::Center,
                        st.bilingual(
                            30.0,
                            WHITE,
                            false,
                            "Đang chờ hình từ huyện… / Waiting for the district video…",
                        ),
                        HAlign::Center,
                        VAlign::Top,
                        0,
                        large_rect.h / 2 - st.px(40.0),
                        false,
                    ),
                }
                for (i, (id, name)) in strip.iter().take(shown).enumerate() {
                    let n = i32::try_from(i).unwrap_or(0);
                    let rect = Rect::new(gap + n * (tile_w + gap), h - strip_h, tile_w, strip_h);
                    videos.push(Video {
                        channel: peer_channel(*id),
                        rect,
                        zorder: 3,
                    });
                    put(
                        Spot::Label(i + 1),
                        st.span(16.0, WHITE, true, name),
                        HAlign::Left,
                        VAlign::Bottom,
                        rect.x + st.px(6.0),
                        st.px(6.0),
                        true,
                    );
                }
                if strip.len() > shown {
                    put(
                        Spot::BottomLeft,
                        st.span(22.0, WHITE, true, &format!("+{}", strip.len() - shown)),
                        HAlign::Left,
                        VAlign::Bottom,
                        gap + i32::try_from(shown).unwrap_or(0) * (tile_w + gap) + st.px(12.0),
                        strip_h / 2 - st.px(14.0),
                        false,
                    );
                }
                // Self-view: bottom right corner of the large picture.
                let pip_w = w * 22 / 100;
                let pip_h = pip_w * 9 / 16;
                let pip = Rect::new(
                    w - pip_w - margin / 2,
                    large_rect.y + large_rect.h - pip_h - margin / 2,
                    pip_w,
                    pip_h,
                );
                videos.push(Video {
                    channel: SELF_CHANNEL.to_owned(),
                    rect: pip,
                    zorder: 4,
                });
                put(
                    Spot::TopLeft,
                    link_markup(&st, *link_quality),
                    HAlign::Left,
                    VAlign::Top,
                    st.px(16.0),
                    st.px(16.0),
                    true,
                );
                let mute = if *muted {
                    format!(
                        "{}\n{}",
                        st.boxed(26.0, WHITE, "#c62828", "MIC ĐANG TẮT"),
                        st.span(18.0, WHITE, true, "Microphone muted"),
                    )
                } else {
                    st.span(18.0, GREEN, true, "● Mic bật · Mic on")
                };
                put(
                    Spot::TopRight,
                    mute,
                    HAlign::Right,
                    VAlign::Top,
                    st.px(16.0),
                    st.px(16.0),
                    !*muted,
                );
                (BG_CALL, None)
            }
        };
        Scene {
            background,
            bar,
            texts,
            videos,
        }
    }

    /// The scene with a short bilingual message over it (e.g. "Âm lượng
    /// 60 % / Volume 60 %"), drawn large on a dark box below the middle (where the idle
    /// screen has nothing), on a
    /// `height`-line screen.
    pub fn with_toast(mut self, text: &str, height: u32) -> Scene {
        let st = Style::new(height);
        let (vi, en) = split_bilingual(text);
        let mut markup = st.span(30.0, WHITE, true, vi);
        if let Some(en) = en {
            markup.push('\n');
            markup.push_str(&st.span(20.0, GREY, false, en));
        }
        self.texts.retain(|(s, _)| *s != Spot::Toast);
        self.texts.push((
            Spot::Toast,
            Text {
                markup,
                halign: HAlign::Center,
                valign: VAlign::Top,
                xpad: 0,
                ypad: st.px(380.0),
                shaded: true,
            },
        ));
        self
    }

    /// The text at `spot`, if the scene uses it.
    pub fn text(&self, spot: Spot) -> Option<&Text> {
        self.texts.iter().find(|(s, _)| *s == spot).map(|(_, t)| t)
    }

    /// The rectangle of the video from `channel`, if shown.
    pub fn video(&self, channel: &str) -> Option<Rect> {
        self.videos
            .iter()
            .find(|v| v.channel == channel)
            .map(|v| v.rect)
    }
}

fn link_markup(st: &Style, q: LinkQuality) -> String {
    let (lit, color, vi, en) = match q {
        LinkQuality::Good => (4, GREEN, "Tốt", "good"),
        LinkQuality::Fair => (3, YELLOW, "Trung bình", "fair"),
        LinkQuality::Poor => (1, RED, "Kém", "poor"),
        LinkQuality::Unknown => (0, GREY, "…", "…"),
    };
    let bars: Vec<char> = "▂▄▆█".chars().collect();
    let on: String = bars[..lit].iter().collect();
    let off: String = bars[lit..].iter().collect();
    format!(
        "{}{}{}",
        st.span(22.0, color, true, &on),
        st.span(22.0, "#5a6672", true, &off),
        st.span(
            18.0,
            WHITE,
            false,
            &format!("  Đường truyền: {vi} · Link: {en}")
        ),
    )
}

/// Height of the top bar: 96 lines on a 720-line screen.
pub fn bar_height(height: u32) -> u32 {
    (height * 96 / 720).max(1)
}

fn clamp_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

// ---------------------------------------------------------------------------
// Screen: the pipeline.

/// A composed frame, RGB.
#[derive(Debug, Clone)]
pub struct Frame {
    width: u32,
    height: u32,
    stride: usize,
    data: Vec<u8>,
    sample: gst::Sample,
}

impl Frame {
    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The colour at (`x`, `y`); `None` outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = y as usize * self.stride + x as usize * 3;
        let p = self.data.get(i..i + 3)?;
        Some([p[0], p[1], p[2]])
    }

    /// Reads a PNG file (such as the one `video_out = "screen-png"`
    /// writes) into a frame, for checks of what the screen showed.
    pub fn read_png(path: &std::path::Path) -> Result<Frame, MediaError> {
        gst::init().map_err(|e| MediaError::Pipeline(format!("GStreamer: {e}")))?;
        let desc = format!(
            "filesrc location=\"{}\" ! pngdec ! videoconvert ! video/x-raw,format=RGB \
             ! appsink name=out sync=false",
            crate::escape(&path.to_string_lossy())
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| MediaError::Pipeline(format!("{}: {e}", path.display())))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| MediaError::Pipeline("not a pipeline".into()))?;
        let sink = pipeline
            .by_name("out")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| MediaError::Pipeline("no appsink".into()))?;
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| MediaError::Pipeline(format!("{}: {e}", path.display())))?;
        let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(5));
        let _ = pipeline.set_state(gst::State::Null);
        let sample = sample
            .ok_or_else(|| MediaError::Pipeline(format!("{}: no picture", path.display())))?;
        frame_of(sample)
    }

    /// The frame as a PNG file.
    pub fn to_png(&self) -> Result<Vec<u8>, MediaError> {
        let caps = gst::Caps::builder("image/png").build();
        let png = gst_video::convert_sample(&self.sample, &caps, gst::ClockTime::from_seconds(5))
            .map_err(|e| MediaError::Pipeline(format!("screen: PNG encoding: {e}")))?;
        let buffer = png
            .buffer()
            .ok_or_else(|| MediaError::Pipeline("screen: PNG encoding gave no data".into()))?;
        let map = buffer
            .map_readable()
            .map_err(|e| MediaError::Pipeline(format!("screen: PNG buffer: {e}")))?;
        Ok(map.as_slice().to_vec())
    }
}

/// One `intervideosrc` and its compositor pad.
struct Slot {
    src: gst::Element,
    pad: gst::Pad,
    /// The channel it plays while running.
    channel: Option<String>,
}

/// The running screen pipeline. Dropping it stops the pipeline.
pub struct Screen {
    spec: ScreenSpec,
    pipeline: gst::Pipeline,
    background: gst::Element,
    bar: gst::Element,
    bar_pad: gst::Pad,
    overlays: Vec<gst::Element>,
    slots: Vec<Slot>,
    appsink: Option<gst_app::AppSink>,
    /// Running time of the last [`show`](Self::show).
    shown_at: gst::ClockTime,
    error: Arc<Mutex<Option<String>>>,
}

/// Video slots: a large picture, the strip, and the self-view.
const SLOTS: usize = 1 + MAX_STRIP + 1;
const FIRST_SLOT_PAD: usize = 2;

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        for slot in &self.slots {
            let _ = slot.src.set_state(gst::State::Null);
        }
    }
}

impl Screen {
    /// Builds the screen pipeline and starts it, showing an empty dark
    /// background until the first [`show`](Self::show).
    pub fn start(spec: ScreenSpec) -> Result<Screen, MediaError> {
        if spec.width < 64 || spec.height < 64 || spec.fps == 0 {
            return Err(MediaError::Pipeline(format!(
                "screen: unusable size {}x{} at {} fps",
                spec.width, spec.height, spec.fps
            )));
        }
        let desc = description(&spec);
        tracing::debug!(pipeline = %desc, "screen");
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| MediaError::Pipeline(format!("screen: {e}")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| MediaError::Pipeline("screen is not a pipeline".into()))?;
        let by_name = |name: &str| {
            pipeline
                .by_name(name)
                .ok_or_else(|| MediaError::Pipeline(format!("screen: no element {name}")))
        };
        let mix = by_name("mix")?;
        let pad = |i: usize| {
            mix.static_pad(&format!("sink_{i}"))
                .ok_or_else(|| MediaError::Pipeline(format!("screen: no compositor pad {i}")))
        };
        let background = by_name("bg")?;
        let bar = by_name("bar")?;
        let bar_pad = pad(1)?;
        bar_pad.set_property("alpha", 0.0f64);
        let overlays = (0..SPOTS)
            .map(|i| by_name(&format!("text{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut slots = Vec::with_capacity(SLOTS);
        for i in 0..SLOTS {
            let src = by_name(&format!("slot{i}"))?;
            // Slots run only while shown; the pipeline's state changes leave
            // them alone.
            src.set_locked_state(true);
            let pad = pad(FIRST_SLOT_PAD + i)?;
            pad.set_property("alpha", 0.0f64);
            // A 4:3 camera is not stretched: black bars instead.
            pad.set_property_from_str("sizing-policy", "keep-aspect-ratio");
            slots.push(Slot {
                src,
                pad,
                channel: None,
            });
        }
        let appsink = match pipeline.by_name("snap") {
            Some(e) => Some(
                e.downcast::<gst_app::AppSink>()
                    .map_err(|_| MediaError::Pipeline("screen: snap is not an appsink".into()))?,
            ),
            None => None,
        };

        let error = Arc::new(Mutex::new(None));
        if let Some(bus) = pipeline.bus() {
            let error = error.clone();
            bus.set_sync_handler(move |_, msg| {
                match msg.view() {
                    gst::MessageView::Error(e) => {
                        let text = format!(
                            "{} ({})",
                            e.error(),
                            e.debug().map(|d| d.to_string()).unwrap_or_default()
                        );
                        tracing::error!(error = %text, "screen pipeline");
                        *error.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
                    }
                    gst::MessageView::Warning(w) => {
                        tracing::warn!(warning = %w.error(), "screen pipeline");
                    }
                    _ => {}
                }
                gst::BusSyncReply::Drop
            });
        }

        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| MediaError::Pipeline(format!("screen does not start: {e}")))?;
        Ok(Screen {
            spec,
            pipeline,
            background,
            bar,
            bar_pad,
            overlays,
            slots,
            appsink,
            shown_at: gst::ClockTime::ZERO,
            error,
        })
    }

    /// The size and sink the screen was started with.
    pub fn spec(&self) -> &ScreenSpec {
        &self.spec
    }

    /// Fails with the pipeline's error if it has stopped on one.
    pub fn health(&self) -> Result<(), MediaError> {
        match &*self.error.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(MediaError::Pipeline(format!("screen: {e}"))),
            None => Ok(()),
        }
    }

    /// Shows `state` from the next frame on. Cheap: call it every second
    /// for the clock and the countdowns.
    pub fn show(&mut self, state: &ScreenState) -> Result<(), MediaError> {
        let scene = Scene::layout(state, self.spec.width, self.spec.height);
        self.apply(&scene)
    }

    /// Shows a scene made by [`Scene::layout`] (or adjusted by the caller).
    pub fn apply(&mut self, scene: &Scene) -> Result<(), MediaError> {
        self.health()?;
        set_color(&self.background, scene.background);
        // The bar's geometry is fixed: changing a compositor pad's size
        // rebuilds its converter, which GStreamer 1.22 does not do safely
        // while a frame is being composed. Only its colour and alpha change.
        match scene.bar {
            Some(color) => {
                set_color(&self.bar, color);
                set_if_changed(&self.bar_pad, "alpha", 1.0f64);
            }
            None => set_if_changed(&self.bar_pad, "alpha", 0.0f64),
        }
        self.place_videos(&scene.videos)?;
        for (i, overlay) in self.overlays.iter().enumerate() {
            match scene.texts.iter().find(|(s, _)| s.index() == i) {
                Some((_, t)) => set_text(overlay, t),
                None => overlay.set_property("text", ""),
            }
        }
        self.shown_at = self.running_time();
        Ok(())
    }

    fn running_time(&self) -> gst::ClockTime {
        self.pipeline
            .current_running_time()
            .unwrap_or(gst::ClockTime::ZERO)
    }

    /// Gives each video a slot, keeping the slot a channel already plays in
    /// so that a feed moving from the strip to the large picture does not
    /// restart. The last slot is reserved for the self-view.
    fn place_videos(&mut self, videos: &[Video]) -> Result<(), MediaError> {
        let mut assigned: Vec<Option<&Video>> = vec![None; self.slots.len()];
        let mut pending = Vec::new();
        let self_slot = self.slots.len() - 1;
        for v in videos.iter().take(self.slots.len()) {
            let wanted = if v.channel == SELF_CHANNEL {
                Some(self_slot)
            } else {
                self.slots[..self_slot]
                    .iter()
                    .position(|s| s.channel.as_deref() == Some(v.channel.as_str()))
            };
            match wanted {
                Some(i) if assigned[i].is_none() => assigned[i] = Some(v),
                _ if v.channel != SELF_CHANNEL => pending.push(v),
                _ => {}
            }
        }
        for v in pending {
            if let Some(i) = (0..self_slot).find(|&i| {
                assigned[i].is_none()
                    && !videos
                        .iter()
                        .any(|o| self.slots[i].channel.as_deref() == Some(o.channel.as_str()))
            }) {
                assigned[i] = Some(v);
            }
        }
        let now = self.running_time();
        let base_time = self.pipeline.base_time();
        let clock = self.pipeline.clock();
        for (slot, video) in self.slots.iter_mut().zip(assigned) {
            match video {
                Some(v) => {
                    // Only on change: see the note on the bar in `apply`.
                    let pad = &slot.pad;
                    set_if_changed(pad, "xpos", v.rect.x);
                    set_if_changed(pad, "ypos", v.rect.y);
                    set_if_changed(pad, "width", v.rect.w.max(1));
                    set_if_changed(pad, "height", v.rect.h.max(1));
                    set_if_changed(pad, "zorder", v.zorder);
                    if slot.channel.as_deref() != Some(v.channel.as_str()) {
                        restart(slot, &v.channel, now, base_time, clock.as_ref())?;
                    }
                    set_if_changed(&slot.pad, "alpha", 1.0f64);
                }
                None => {
                    set_if_changed(&slot.pad, "alpha", 0.0f64);
                    if slot.channel.take().is_some() {
                        let _ = slot.src.set_state(gst::State::Null);
                    }
                }
            }
        }
        Ok(())
    }

    /// The first frame composed after the last [`show`](Self::show), or an
    /// error if none comes within two seconds. Only with
    /// [`ScreenSink::AppSink`].
    pub fn snapshot(&self) -> Result<Frame, MediaError> {
        let sink = self.appsink.as_ref().ok_or_else(|| {
            MediaError::Pipeline("screen: snapshots need ScreenSink::AppSink".into())
        })?;
        // Two frame times after the change: the compositor has used the new
        // geometry and every overlay its new text.
        let frame = gst::ClockTime::SECOND / u64::from(self.spec.fps.max(1));
        let wanted = self.shown_at + frame * 2;
        // Generous: the first frame of a new screen waits for fontconfig
        // and pango's first layout, seconds on a busy machine.
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            self.health()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(MediaError::Pipeline(
                    "screen: no frame for a snapshot".into(),
                ));
            }
            let Some(sample) =
                sink.try_pull_sample(gst::ClockTime::from_nseconds(left.as_nanos() as u64))
            else {
                continue;
            };
            let Some(buffer) = sample.buffer() else {
                continue;
            };
            if buffer.pts().is_some_and(|pts| pts < wanted) {
                continue;
            }
            return frame_of(sample);
        }
    }
}

fn frame_of(sample: gst::Sample) -> Result<Frame, MediaError> {
    let caps = sample
        .caps()
        .ok_or_else(|| MediaError::Pipeline("screen: frame without caps".into()))?;
    let info = gst_video::VideoInfo::from_caps(caps)
        .map_err(|e| MediaError::Pipeline(format!("screen: frame caps: {e}")))?;
    let buffer = sample
        .buffer()
        .ok_or_else(|| MediaError::Pipeline("screen: empty sample".into()))?;
    let map = buffer
        .map_readable()
        .map_err(|e| MediaError::Pipeline(format!("screen: frame: {e}")))?;
    let stride = usize::try_from(info.stride()[0])
        .map_err(|_| MediaError::Pipeline("screen: negative stride".into()))?;
    let data = map.as_slice().to_vec();
    drop(map);
    Ok(Frame {
        width: info.width(),
        height: info.height(),
        stride,
        data,
        sample,
    })
}

/// Points a slot at `channel` and (re)starts its `intervideosrc`.
/// `intervideosrc` picks its channel up when it starts, so it goes through
/// NULL. The slot is locked out of the pipeline's state changes, so it gets
/// the pipeline's clock and base time by hand; its buffers are then time
/// stamped in the pipeline's running time (no pad offset is needed: one would
/// put them in the future and the compositor would hold them back).
fn restart(
    slot: &mut Slot,
    channel: &str,
    now: gst::ClockTime,
    base_time: Option<gst::ClockTime>,
    clock: Option<&gst::Clock>,
) -> Result<(), MediaError> {
    let _ = slot.src.set_state(gst::State::Null);
    slot.src.set_property("channel", channel);
    if let Some(pad) = slot.src.static_pad("src") {
        pad.set_offset(0);
    }
    tracing::debug!(channel, at = %now, "screen: video slot starts");
    if let Some(clock) = clock {
        let _ = slot.src.set_clock(Some(clock));
    }
    if let Some(bt) = base_time {
        slot.src.set_base_time(bt);
    }
    slot.src.set_start_time(gst::ClockTime::NONE);
    slot.src.set_state(gst::State::Playing).map_err(|e| {
        MediaError::Pipeline(format!("screen: video {channel} does not start: {e}"))
    })?;
    slot.channel = Some(channel.to_owned());
    Ok(())
}

fn set_color(src: &gst::Element, argb: u32) {
    set_if_changed(src, "foreground-color", argb);
}

/// Sets a property unless it already has that value.
fn set_if_changed<V>(obj: &impl IsA<glib::Object>, name: &str, value: V)
where
    V: Into<glib::Value> + for<'a> glib::value::FromValue<'a> + PartialEq + 'static,
{
    if obj.property::<V>(name) != value {
        obj.set_property(name, value);
    }
}

fn set_text(overlay: &gst::Element, t: &Text) {
    let halign = match t.halign {
        HAlign::Left => "left",
        HAlign::Center => "center",
        HAlign::Right => "right",
    };
    let valign = match t.valign {
        VAlign::Top => "top",
        VAlign::Center => "center",
        VAlign::Bottom => "bottom",
    };
    overlay.set_property_from_str("halignment", halign);
    overlay.set_property_from_str("valignment", valign);
    overlay.set_property_from_str("line-alignment", halign);
    overlay.set_property("xpad", t.xpad.max(0));
    overlay.set_property("ypad", t.ypad.max(0));
    overlay.set_property("shaded-background", t.shaded);
    overlay.set_property("text", &t.markup);
}

/// Pixel formats the video slots pass on without converting (producers
/// should send one of them; I420 or NV12 from a decoder is ideal). Without a
/// restriction an idle `intervideosrc` would pick the compositor's first, and
/// dearest, format: 64-bit ABGR.
pub const INPUT_FORMATS: &str = "{ I420, NV12, YV12, NV21, Y42B, Y444, YUY2, UYVY, \
     BGRx, RGBx, xRGB, xBGR, BGRA, RGBA, ARGB, ABGR, AYUV, RGB, BGR, GRAY8 }";

/// The pipeline, as a `gst-launch` description.
fn description(spec: &ScreenSpec) -> String {
    let (w, h, fps) = (spec.width, spec.height, spec.fps);
    let mut d = format!(
        "compositor name=mix background=black ignore-inactive-pads=true \
         ! video/x-raw,format=I420,width={w},height={h},framerate={fps}/1,pixel-aspect-ratio=1/1"
    );
    for i in 0..SPOTS {
        // Sizes come from the markup; auto-resize would scale them again.
        d.push_str(&format!(
            " ! textoverlay name=text{i} auto-resize=false font-desc=\"{FONT} 20\" \
             draw-shadow=false draw-outline=true shading-value=160 text=\"\""
        ));
    }
    d.push_str(" ! videoconvert");
    match &spec.sink {
        ScreenSink::Element(fragment) => d.push_str(&format!(" ! {fragment}")),
        ScreenSink::AppSink => d.push_str(
            " ! video/x-raw,format=RGB ! appsink name=snap max-buffers=2 drop=true sync=false",
        ),
    }
    d.push_str(&format!(
        " videotestsrc name=bg is-live=true pattern=solid-color foreground-color={BG} \
         ! video/x-raw,width={w},height={h},framerate={fps}/1 ! mix.sink_0 \
         videotestsrc name=bar is-live=true pattern=solid-color foreground-color={BAR_BLUE} \
         ! video/x-raw,width={w},height={bh},framerate={fps}/1 ! mix.sink_1",
        bh = bar_height(h),
    ));
    let timeout = PRODUCER_TIMEOUT.as_nanos();
    // intervideosrc answers the latency query with "live, at most 0 ns",
    // which the compositor cannot meet; a leaky queue lifts the maximum.
    for i in 0..SLOTS {
        d.push_str(&format!(
            " intervideosrc name=slot{i} channel=diemcau-unused-{i} timeout={timeout} \
             ! videoconvert ! video/x-raw,format={INPUT_FORMATS} \
             ! queue max-size-buffers=1 max-size-bytes=0 max-size-time=0 leaky=downstream \
             ! mix.sink_{p}",
            p = FIRST_SLOT_PAD + i
        ));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(next: Option<(&str, i64)>) -> ScreenState {
        ScreenState::Idle {
            commune: "Điểm cầu xã Tiền Phong".into(),
            clock: "14:05".into(),
            next_meeting: next.map(|(t, s)| (t.into(), s)),
            network_ok: true,
            provisioned: true,
        }
    }

    #[test]
    fn channels() {
        assert_eq!(peer_channel(7), "diemcau-peer-7");
        assert_ne!(peer_channel(0), SELF_CHANNEL);
    }

    #[test]
    fn bilingual_split() {
        assert_eq!(
            split_bilingual("Nhấn OK để tham gia / Press OK to join"),
            ("Nhấn OK để tham gia", Some("Press OK to join"))
        );
        assert_eq!(split_bilingual("Chỉ tiếng Việt"), ("Chỉ tiếng Việt", None));
        assert_eq!(split_bilingual(" / x"), ("/ x", None));
        assert_eq!(split_bilingual(""), ("", None));
    }

    #[test]
    fn countdowns() {
        assert_eq!(countdown_text(45), "Bắt đầu sau 45 giây / Starts in 45 s");
        assert_eq!(countdown_text(61), "Bắt đầu sau 2 phút / Starts in 2 min");
        assert_eq!(
            countdown_text(4500),
            "Bắt đầu sau 1 giờ 15 phút / Starts in 1 h 15 min"
        );
        assert_eq!(
            countdown_text(2 * 86_400 + 3 * 3600),
            "Bắt đầu sau 2 ngày 3 giờ / Starts in 2 d 3 h"
        );
        assert_eq!(countdown_text(0), "Đang diễn ra / In progress");
        assert_eq!(countdown_text(i64::MIN), "Đang diễn ra / In progress");
        let _ = countdown_text(i64::MAX);
    }

    #[test]
    fn markup_is_escaped() {
        let s = Scene::layout(
            &ScreenState::Idle {
                commune: "A & <B>".into(),
                clock: String::new(),
                next_meeting: None,
                network_ok: false,
                provisioned: false,
            },
            1280,
            720,
        );
        let top = s.text(Spot::TopLeft).map(|t| t.markup.clone());
        assert!(top.is_some_and(|m| m.contains("A &amp; &lt;B&gt;")));
        for (_, t) in &s.texts {
            let m = &t.markup;
            assert_eq!(
                m.matches("<span").count(),
                m.matches("</span>").count(),
                "{m}"
            );
        }
    }

    #[test]
    fn idle_has_no_video_and_a_bar() {
        let s = Scene::layout(&idle(Some(("Họp giao ban", 4500))), 1280, 720);
        assert!(s.videos.is_empty());
        assert!(s.bar.is_some());
        let c = s
            .text(Spot::Center)
            .map(|t| t.markup.as_str())
            .unwrap_or("");
        assert!(c.contains("Họp giao ban") && c.contains("1 giờ 15 phút"));
    }

    #[test]
    fn call_layout_large_pip_and_strip() {
        let state = ScreenState::InCall {
            large: Some((1, "Huyện".into())),
            strip: vec![(2, "Xã A".into()), (1, "Huyện".into()), (3, "Xã B".into())],
            muted: false,
            link_quality: LinkQuality::Good,
        };
        let s = Scene::layout(&state, 1280, 720);
        let large = s.video(&peer_channel(1)).expect("large");
        let pip = s.video(SELF_CHANNEL).expect("pip");
        let a = s.video(&peer_channel(2)).expect("strip a");
        let b = s.video(&peer_channel(3)).expect("strip b");
        // The large one is not repeated in the strip.
        assert_eq!(s.videos.len(), 4);
        assert!(large.w == 1280 && large.h > 500);
        assert!(
            large.contains(pip.x, pip.y) && large.contains(pip.x + pip.w - 1, pip.y + pip.h - 1)
        );
        assert!(a.y >= large.h && b.x > a.x + a.w - 1);
        assert!(b.x + b.w <= 1280 && a.y + a.h <= 720);
    }

    #[test]
    fn strip_is_limited_to_what_fits() {
        let strip = (10..30).map(|i| (i, format!("Xã {i}"))).collect();
        let state = ScreenState::InCall {
            large: None,
            strip,
            muted: true,
            link_quality: LinkQuality::Poor,
        };
        for (w, h) in [(1280, 720), (640, 360), (64, 64), (7680, 4320)] {
            let s = Scene::layout(&state, w, h);
            let peers = s
                .videos
                .iter()
                .filter(|v| v.channel != SELF_CHANNEL)
                .count();
            assert!(peers <= MAX_STRIP, "{w}x{h}: {peers}");
            for v in &s.videos {
                assert!(v.rect.x >= 0 && v.rect.y >= 0, "{w}x{h}: {v:?}");
                assert!(v.rect.x + v.rect.w <= w as i32 && v.rect.y + v.rect.h <= h as i32);
            }
        }
    }

    #[test]
    fn link_quality() {
        assert_eq!(LinkQuality::assess(0.2, Some(40.0)), LinkQuality::Good);
        assert_eq!(LinkQuality::assess(2.0, None), LinkQuality::Fair);
        assert_eq!(LinkQuality::assess(0.0, Some(500.0)), LinkQuality::Poor);
        assert_eq!(LinkQuality::assess(f64::NAN, None), LinkQuality::Unknown);
        let a = RtpStats {
            packets_received: 1000,
            packets_lost: 10,
            ..Default::default()
        };
        let b = RtpStats {
            packets_received: 1900,
            packets_lost: 110,
            ..Default::default()
        };
        assert_eq!(LinkQuality::between(&a, &b), LinkQuality::Poor);
        assert_eq!(LinkQuality::between(&b, &a), LinkQuality::Unknown);
    }
}
