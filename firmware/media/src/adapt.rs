//! Sender adaptation: what to send, given what the network reports back.
//!
//! A pure, sans-IO controller. Once a second (any interval works; time is
//! an input, in monotonic milliseconds) the publisher feeds it a
//! [`LinkReport`] built from the RTCP receiver reports of our own sent
//! stream (fraction lost, round-trip time), the bandwidth estimate if one
//! exists (REMB from Janus, or a transport-cc estimator such as
//! `rtpgccbwe`) and what was actually sent. [`Controller::update`] returns a
//! [`Target`]: the video bitrate, a rung of the resolution/frame-rate
//! ladder ([`Step`]: 720p30, 540p25, 360p15, 180p10, or video paused), the
//! Opus `packet-loss-percentage` for its in-band FEC, whether video FEC
//! (red/ulpfec) is worth its overhead, and a short reason for the screen
//! and `ctl status`.
//!
//! The policy is the loss-based half of Google Congestion Control, with an
//! estimate and a queueing-delay guard on top, and a ladder with hysteresis:
//!
//! * **Down, fast.** Loss over [`Config::loss_high`] (10 %) cuts the rate
//!   by half the loss fraction (`rate × (1 − loss/2)`), an estimate below the
//!   rate brings the rate to 85 % of the estimate, and round-trip time more
//!   than [`Config::queue_delay_ms`] above its minimum (a queue building up
//!   at the bottleneck) cuts it by 15 %: all at once, at the first report.
//!   The ladder rung follows the rate immediately, several rungs at a time
//!   if need be.
//! * **Hold** while loss is between 2 % and 10 %.
//! * **Up, slowly.** After [`Config::up_hold_ms`] (3 s) of clean reports
//!   the rate grows 10 % a second (or straight to 85 % of a higher
//!   estimate), capped at the top of the current rung; the rung goes up one
//!   at a time, each after another 3 s clean.
//! * **Audio first.** Below [`Config::pause_below_kbps`] (120 kbit/s) video
//!   pauses; Opus carries on with its own FEC tuned to the loss, and video
//!   resumes at 180p10 once the rate has grown back past
//!   [`Config::resume_kbps`] after 3 s clean.
//!
//! How a publisher applies a target is described on [`Target`].

use serde::Serialize;

/// A rung of the video ladder, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Step {
    /// 1280×720 at 30 frames per second.
    P720x30,
    /// 960×540 at 25 frames per second.
    P540x25,
    /// 640×360 at 15 frames per second.
    P360x15,
    /// 320×180 at 10 frames per second.
    P180x10,
    /// No video is sent; audio continues.
    Paused,
}

impl Step {
    /// All rungs, best first.
    pub const LADDER: [Step; 5] = [
        Step::P720x30,
        Step::P540x25,
        Step::P360x15,
        Step::P180x10,
        Step::Paused,
    ];

    /// Width, height and frame rate; `None` when paused.
    pub fn format(self) -> Option<(u32, u32, u32)> {
        match self {
            Step::P720x30 => Some((1280, 720, 30)),
            Step::P540x25 => Some((960, 540, 25)),
            Step::P360x15 => Some((640, 360, 15)),
            Step::P180x10 => Some((320, 180, 10)),
            Step::Paused => None,
        }
    }

    /// The lowest video rate (kbit/s) this rung is used at; below it the
    /// next rung down is chosen.
    pub fn min_kbps(self) -> u32 {
        match self {
            Step::P720x30 => 900,
            Step::P540x25 => 500,
            Step::P360x15 => 220,
            Step::P180x10 => 0, // below Config::pause_below_kbps: paused
            Step::Paused => 0,
        }
    }

    /// The highest video rate (kbit/s) worth spending on this rung; the
    /// rate climbs no further until the next rung up is taken.
    pub fn max_kbps(self) -> u32 {
        match self {
            Step::P720x30 => 2_000,
            Step::P540x25 => 1_100,
            Step::P360x15 => 600,
            Step::P180x10 => 260,
            Step::Paused => 0,
        }
    }

    fn up(self) -> Step {
        match self {
            Step::P720x30 | Step::P540x25 => Step::P720x30,
            Step::P360x15 => Step::P540x25,
            Step::P180x10 => Step::P360x15,
            Step::Paused => Step::P180x10,
        }
    }

    /// Short name for status and the screen: "720p30", ..., "paused".
    pub fn label(self) -> &'static str {
        match self {
            Step::P720x30 => "720p30",
            Step::P540x25 => "540p25",
            Step::P360x15 => "360p15",
            Step::P180x10 => "180p10",
            Step::Paused => "paused",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What the network said about our sent stream during the last interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkReport {
    /// Monotonic time of the report, milliseconds (any origin).
    pub now_ms: u64,
    /// Fraction of our packets lost, 0.0..=1.0, from the latest RTCP
    /// receiver report (`fraction-lost` / 256) of the video stream, or of
    /// the audio stream while video is paused.
    pub fraction_lost: f64,
    /// Round-trip time from RTCP, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Available bandwidth for everything we send (kbit/s): REMB from the
    /// server, or a transport-cc estimator's figure. `None` if neither.
    pub estimate_kbps: Option<u32>,
    /// What we actually sent over the interval (all streams), kbit/s; 0
    /// if unknown. Bounds the cut when a queue builds up.
    pub sent_kbps: u32,
}

/// Tuning. The defaults are the values described in the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Video rate at the start of a call, kbit/s.
    pub start_kbps: u32,
    /// The ladder's best rung (a board that cannot encode 720p30 starts
    /// lower).
    pub top: Step,
    /// Loss above which the rate is cut (fraction).
    pub loss_high: f64,
    /// Loss below which a report counts as clean (fraction).
    pub loss_low: f64,
    /// Clean time needed before the rate grows and before each rung up.
    pub up_hold_ms: u64,
    /// Rate growth per second while clean (0.10 = 10 %).
    pub growth_per_s: f64,
    /// Video pauses below this rate, kbit/s.
    pub pause_below_kbps: u32,
    /// Paused video resumes once the rate is back above this, kbit/s.
    pub resume_kbps: u32,
    /// What audio needs, kbit/s (Opus at 32 kbit/s plus RTP/SRTP/UDP/IP
    /// overhead of 50 packets a second), subtracted from an estimate.
    pub audio_kbps: u32,
    /// Round-trip time this far above the lowest seen counts as congestion.
    pub queue_delay_ms: f64,
    /// Loss (fraction) at which video FEC is switched on.
    pub fec_on_loss: f64,
    /// Video FEC goes off after this long with loss under `loss_low`.
    pub fec_off_after_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            start_kbps: 1_500,
            top: Step::P720x30,
            loss_high: 0.10,
            loss_low: 0.02,
            up_hold_ms: 3_000,
            growth_per_s: 0.10,
            pause_below_kbps: 120,
            resume_kbps: 160,
            audio_kbps: 45,
            queue_delay_ms: 150.0,
            fec_on_loss: 0.03,
            fec_off_after_ms: 5_000,
        }
    }
}

/// What to send now.
///
/// Applying it in the publisher:
/// * `step.format()` → the capsfilter after `videoscale ! videorate`:
///   `video/x-raw,width=W,height=H,framerate=F/1` (set its `caps`
///   property; videoscale and videorate renegotiate on the fly). The
///   encoder is kept; ask for a key frame after a change of size.
/// * `Step::Paused` → stop feeding the encoder (a `valve drop=true` before
///   it, or block the pad); audio is untouched. On resume open the valve
///   and request a key frame (force-key-unit event upstream of the
///   encoder).
/// * `video_kbps` → the encoder's bitrate property, in its own unit
///   (x264enc/vaapih264enc `bitrate` kbit/s; openh264enc/nvv4l2h264enc
///   `bitrate` bit/s; mpph264enc `bps`; v4l2h264enc `extra-controls`
///   `video_bitrate`): the table in `diemcau_board::encoder`.
/// * `opus_loss_percent` → `opusenc packet-loss-percentage`, with
///   `inband-fec=true` always; `opus_dtx` → `opusenc dtx`.
/// * `video_fec_percent` → the video transceiver's `fec-percentage`
///   (only meaningful when `fec-type=ulp-red` was negotiated); 0 = off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub step: Step,
    /// Video encoder rate, kbit/s (0 while paused).
    pub video_kbps: u32,
    /// For `opusenc packet-loss-percentage`: the expected loss, percent.
    pub opus_loss_percent: u8,
    /// For `opusenc dtx`: on when the link is tight.
    pub opus_dtx: bool,
    /// Video FEC overhead in percent (red/ulpfec); 0 = off.
    pub video_fec_percent: u8,
    /// Why the controller is where it is, for the screen and status.
    pub reason: String,
}

/// The controller. One per publishing call.
#[derive(Debug, Clone)]
pub struct Controller {
    cfg: Config,
    rate_kbps: f64,
    step: Step,
    /// Loss as fed to Opus: jumps up with a report, decays slowly.
    loss_smooth: f64,
    min_rtt_ms: Option<f64>,
    last_ms: Option<u64>,
    /// Since when reports have been clean (None: the last one was not).
    clean_since: Option<u64>,
    /// When the rung last changed (a rung up needs `up_hold_ms` after it).
    step_changed_ms: Option<u64>,
    low_loss_since: Option<u64>,
    fec: bool,
    reason: String,
}

/// Whether a report says the link is congested, and why.
enum Verdict {
    Congested(String),
    Hold(String),
    Clean,
}

impl Controller {
    pub fn new(cfg: Config) -> Controller {
        let rate = f64::from(cfg.start_kbps.min(cfg.top.max_kbps()));
        let step = ladder_step(&cfg, rate, cfg.top);
        Controller {
            rate_kbps: rate,
            step,
            loss_smooth: 0.0,
            min_rtt_ms: None,
            last_ms: None,
            clean_since: None,
            step_changed_ms: None,
            low_loss_since: None,
            fec: false,
            reason: "start".into(),
            cfg,
        }
    }

    /// The target in force (before any report: the start).
    pub fn target(&self) -> Target {
        let paused = self.step == Step::Paused;
        Target {
            step: self.step,
            video_kbps: if paused {
                0
            } else {
                self.rate_kbps.round() as u32
            },
            opus_loss_percent: percent_up(self.loss_smooth),
            opus_dtx: self.step >= Step::P360x15,
            video_fec_percent: if self.fec && !paused {
                // Roughly twice the loss, bounded: ulpfec's XOR parity
                // repairs one loss per protected group.
                percent_up(self.loss_smooth * 2.0).clamp(10, 50)
            } else {
                0
            },
            reason: self.reason.clone(),
        }
    }

    /// Takes one report and returns the new target.
    pub fn update(&mut self, r: &LinkReport) -> Target {
        let now = r.now_ms;
        // Time is monotonic by contract; should it step back anyway (a
        // caller using wall-clock time across a clock jump), start the
        // timers over rather than wait for the old time to come back.
        let dt_ms = match self.last_ms {
            Some(last) if now >= last => (now - last).min(5_000),
            Some(_) => {
                self.clean_since = self.clean_since.map(|_| now);
                self.step_changed_ms = self.step_changed_ms.map(|_| now);
                self.low_loss_since = self.low_loss_since.map(|_| now);
                0
            }
            None => 1_000,
        };
        self.last_ms = Some(now);
        let loss = r.fraction_lost.clamp(0.0, 1.0);
        self.loss_smooth = loss.max(self.loss_smooth * 0.85_f64.powf(dt_ms as f64 / 1000.0));
        if self.loss_smooth < 0.005 {
            self.loss_smooth = 0.0;
        }

        let verdict = self.judge(r, loss);
        let paused_before = self.step == Step::Paused;
        match verdict {
            Verdict::Congested(why) => {
                self.clean_since = None;
                self.reason = why;
                let new_step = ladder_step(&self.cfg, self.rate_kbps, self.cfg.top);
                // Down only: a cut never raises the rung.
                if new_step > self.step {
                    self.step = new_step;
                    self.step_changed_ms = Some(now);
                }
            }
            Verdict::Hold(why) => {
                self.clean_since = None;
                self.reason = why;
            }
            Verdict::Clean => {
                let since = *self.clean_since.get_or_insert(now);
                let clean_for = now.saturating_sub(since);
                if clean_for >= self.cfg.up_hold_ms {
                    self.grow(r, dt_ms);
                    self.maybe_step_up(now);
                }
                self.reason = format!(
                    "clean for {} s at {}",
                    clean_for / 1000,
                    if self.step == Step::Paused {
                        "audio only".to_string()
                    } else {
                        format!("{} kbit/s", self.rate_kbps.round())
                    }
                );
            }
        }
        if !paused_before && self.step == Step::Paused {
            self.reason = format!("video paused, audio continues: {}", self.reason);
        }
        self.update_fec(now, loss);
        self.target()
    }

    /// Applies the congestion signals of `r` to the rate.
    fn judge(&mut self, r: &LinkReport, loss: f64) -> Verdict {
        let mut why = Vec::new();
        if loss > self.cfg.loss_high {
            self.rate_kbps *= 1.0 - loss / 2.0;
            why.push(format!("loss {:.0} %", loss * 100.0));
        }
        if let Some(est) = r.estimate_kbps {
            let budget = f64::from(est.saturating_sub(self.cfg.audio_kbps));
            if budget < self.rate_kbps {
                self.rate_kbps = self.rate_kbps.min(budget * 0.85);
                why.push(format!("estimate {est} kbit/s"));
            }
        }
        if let Some(rtt) = r.rtt_ms.filter(|v| v.is_finite() && *v >= 0.0) {
            let min = self.min_rtt_ms.map_or(rtt, |m| m.min(rtt));
            self.min_rtt_ms = Some(min);
            if rtt > min + self.cfg.queue_delay_ms {
                // A queue is building: the path carries less than we send.
                // What we sent bounds what got through.
                let sent_video = f64::from(r.sent_kbps.saturating_sub(self.cfg.audio_kbps));
                self.rate_kbps *= 0.85;
                if sent_video > 0.0 {
                    self.rate_kbps = self.rate_kbps.min(sent_video * 0.85);
                }
                why.push(format!("delay {:.0} ms over {:.0} ms", rtt - min, min));
            }
        }
        self.rate_kbps = self.rate_kbps.max(1.0);
        if !why.is_empty() {
            Verdict::Congested(why.join(", "))
        } else if loss >= self.cfg.loss_low {
            Verdict::Hold(format!("holding: loss {:.0} %", loss * 100.0))
        } else {
            Verdict::Clean
        }
    }

    fn grow(&mut self, r: &LinkReport, dt_ms: u64) {
        let factor = (1.0 + self.cfg.growth_per_s).powf(dt_ms as f64 / 1000.0);
        let mut rate = self.rate_kbps * factor;
        if let Some(est) = r.estimate_kbps {
            let budget = f64::from(est.saturating_sub(self.cfg.audio_kbps)) * 0.85;
            rate = rate
                .max(budget.min(rate * 2.0))
                .min(budget.max(self.rate_kbps));
        }
        let cap = match self.step {
            Step::Paused => f64::from(self.cfg.resume_kbps),
            s => f64::from(s.max_kbps()),
        };
        self.rate_kbps = rate.min(cap).max(self.rate_kbps);
    }

    /// One rung up, if the rate has reached the top of this rung and the
    /// last change is `up_hold_ms` old.
    fn maybe_step_up(&mut self, now: u64) {
        if self.step <= self.cfg.top {
            return;
        }
        let held = self
            .step_changed_ms
            .is_none_or(|t| now.saturating_sub(t) >= self.cfg.up_hold_ms);
        let full = match self.step {
            Step::Paused => self.rate_kbps >= f64::from(self.cfg.resume_kbps),
            s => self.rate_kbps >= f64::from(s.max_kbps()),
        };
        if held && full {
            self.step = self.step.up();
            self.step_changed_ms = Some(now);
        }
    }

    fn update_fec(&mut self, now: u64, loss: f64) {
        if loss >= self.cfg.fec_on_loss {
            self.fec = true;
        }
        if loss < self.cfg.loss_low {
            let since = *self.low_loss_since.get_or_insert(now);
            if now.saturating_sub(since) >= self.cfg.fec_off_after_ms {
                self.fec = false;
            }
        } else {
            self.low_loss_since = None;
        }
    }
}

/// `fraction` as a whole percentage, rounded up (0.071 → 8), ignoring
/// floating-point dust (0.07 → 7), within 0..=50.
fn percent_up(fraction: f64) -> u8 {
    (fraction * 100.0 - 1e-6).ceil().clamp(0.0, 50.0) as u8
}

/// The rung for `rate`, no better than `top`.
fn ladder_step(cfg: &Config, rate: f64, top: Step) -> Step {
    if rate < f64::from(cfg.pause_below_kbps) {
        return Step::Paused;
    }
    Step::LADDER
        .into_iter()
        .filter(|s| *s >= top && *s != Step::Paused)
        .find(|s| rate >= f64::from(s.min_kbps()))
        .unwrap_or(Step::P180x10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(now_s: u64, loss: f64) -> LinkReport {
        LinkReport {
            now_ms: now_s * 1000,
            fraction_lost: loss,
            rtt_ms: Some(20.0),
            estimate_kbps: None,
            sent_kbps: 0,
        }
    }

    /// Feeds one report a second from `from_s` for `secs` seconds.
    fn run(c: &mut Controller, from_s: u64, secs: u64, loss: f64) -> Target {
        let mut t = c.target();
        for s in from_s..from_s + secs {
            t = c.update(&report(s, loss));
        }
        t
    }

    #[test]
    fn starts_at_720p30_with_opus_fec_idle() {
        let c = Controller::new(Config::default());
        let t = c.target();
        assert_eq!(t.step, Step::P720x30);
        assert_eq!(t.video_kbps, 1_500);
        assert_eq!(t.opus_loss_percent, 0);
        assert_eq!(t.video_fec_percent, 0);
        assert!(!t.opus_dtx);
    }

    #[test]
    fn start_rate_is_bounded_by_the_top_rung() {
        let c = Controller::new(Config {
            top: Step::P360x15,
            ..Config::default()
        });
        assert_eq!(c.target().step, Step::P360x15);
        assert_eq!(c.target().video_kbps, 600);
    }

    #[test]
    fn heavy_loss_steps_down_at_once_possibly_several_rungs() {
        let mut c = Controller::new(Config::default());
        let t = c.update(&report(0, 0.20));
        // 1500 × 0.9 = 1350: still 720p30 by rate...
        assert_eq!(t.video_kbps, 1_350);
        assert_eq!(t.step, Step::P720x30);
        assert!(t.reason.contains("loss 20 %"), "{}", t.reason);
        // ...but repeated 20 % loss walks down the ladder a rung per cut.
        let t = run(&mut c, 1, 4, 0.20);
        assert_eq!(t.step, Step::P540x25, "{t:?}"); // 1350 × 0.9^4 = 886
        let t = run(&mut c, 5, 6, 0.20);
        assert_eq!(t.step, Step::P360x15, "{t:?}"); // 886 × 0.9^6 = 470
        // Heavier loss cuts harder: 60 % takes 30 % off per report.
        let mut c = Controller::new(Config::default());
        assert_eq!(c.update(&report(0, 0.60)).video_kbps, 1_050);
        let t = c.update(&report(1, 0.60));
        assert_eq!((t.step, t.video_kbps), (Step::P540x25, 735));
    }

    #[test]
    fn moderate_loss_holds_rate_and_rung() {
        let mut c = Controller::new(Config::default());
        let t = run(&mut c, 0, 20, 0.05);
        assert_eq!(t.step, Step::P720x30);
        assert_eq!(t.video_kbps, 1_500);
        assert!(t.reason.starts_with("holding"), "{}", t.reason);
    }

    #[test]
    fn loss_just_over_the_threshold_cuts() {
        let mut c = Controller::new(Config::default());
        assert_eq!(c.update(&report(0, 0.10)).video_kbps, 1_500);
        assert!(c.update(&report(1, 0.11)).video_kbps < 1_500);
    }

    #[test]
    fn estimate_below_the_rate_brings_the_rate_under_it_at_once() {
        let mut c = Controller::new(Config::default());
        let t = c.update(&LinkReport {
            estimate_kbps: Some(345),
            ..report(0, 0.0)
        });
        // (345 − 45 audio) × 0.85 = 255 → 360p15.
        assert_eq!(t.video_kbps, 255);
        assert_eq!(t.step, Step::P360x15);
        assert!(t.reason.contains("estimate 345"), "{}", t.reason);
        // An estimate above the rate is no congestion.
        let t = c.update(&LinkReport {
            estimate_kbps: Some(5_000),
            ..report(1, 0.0)
        });
        assert_eq!(t.step, Step::P360x15);
        assert!(t.reason.starts_with("clean"), "{}", t.reason);
    }

    #[test]
    fn rising_rtt_is_congestion() {
        let mut c = Controller::new(Config::default());
        c.update(&report(0, 0.0));
        let t = c.update(&LinkReport {
            rtt_ms: Some(400.0),
            ..report(1, 0.0)
        });
        assert_eq!(t.video_kbps, 1_275);
        assert!(t.reason.contains("delay 380 ms"), "{}", t.reason);
        // Not below the minimum plus the margin: fine.
        let t = c.update(&LinkReport {
            rtt_ms: Some(150.0),
            ..report(2, 0.0)
        });
        assert_eq!(t.video_kbps, 1_275);
        // When we know what we sent, the cut goes below that.
        let t = c.update(&LinkReport {
            rtt_ms: Some(400.0),
            sent_kbps: 845,
            ..report(3, 0.0)
        });
        assert_eq!(t.video_kbps, 680);
    }

    #[test]
    fn below_the_pause_threshold_video_pauses_and_audio_carries_on() {
        let mut c = Controller::new(Config::default());
        let t = c.update(&LinkReport {
            estimate_kbps: Some(150),
            ..report(0, 0.25)
        });
        assert_eq!(t.step, Step::Paused, "{t:?}");
        assert_eq!(t.video_kbps, 0);
        assert!(t.reason.starts_with("video paused, audio continues"));
        // Audio is still protected: Opus expects the loss.
        assert_eq!(t.opus_loss_percent, 25);
        assert!(t.opus_dtx);
        assert_eq!(t.video_fec_percent, 0, "no video FEC while paused");
    }

    #[test]
    fn no_step_up_before_three_clean_seconds() {
        let mut c = Controller::new(Config::default());
        c.update(&LinkReport {
            estimate_kbps: Some(345),
            ..report(0, 0.0)
        });
        // Clean from t=1: the hold ends at t=4.
        let t = run(&mut c, 1, 3, 0.0);
        assert_eq!(t.video_kbps, 255, "no growth while held: {t:?}");
        assert_eq!(t.step, Step::P360x15);
    }

    #[test]
    fn steps_up_one_rung_at_a_time_after_holds() {
        let mut c = Controller::new(Config::default());
        c.update(&LinkReport {
            estimate_kbps: Some(345),
            ..report(0, 0.0)
        });
        let mut steps = vec![(0, c.target().step)];
        for s in 1..60 {
            let t = c.update(&report(s, 0.0));
            if t.step != steps.last().map(|x| x.1).unwrap_or(t.step) {
                steps.push((s, t.step));
            }
        }
        let rungs: Vec<Step> = steps.iter().map(|x| x.1).collect();
        assert_eq!(
            rungs,
            [Step::P360x15, Step::P540x25, Step::P720x30],
            "{steps:?}"
        );
        // Each rung up at least up_hold after the previous change.
        for w in steps.windows(2) {
            assert!(w[1].0 - w[0].0 >= 3, "{steps:?}");
        }
        assert_eq!(c.target().video_kbps, 2_000, "full rate in the end");
    }

    #[test]
    fn a_higher_estimate_speeds_the_climb_but_never_past_it() {
        let mut slow = Controller::new(Config::default());
        let mut fast = Controller::new(Config::default());
        for c in [&mut slow, &mut fast] {
            c.update(&LinkReport {
                estimate_kbps: Some(345),
                ..report(0, 0.0)
            });
        }
        let mut slow_done = None;
        let mut fast_done = None;
        for s in 1..80 {
            if slow.update(&report(s, 0.0)).step == Step::P720x30 && slow_done.is_none() {
                slow_done = Some(s);
            }
            let t = fast.update(&LinkReport {
                estimate_kbps: Some(3_000),
                ..report(s, 0.0)
            });
            if t.step == Step::P720x30 && fast_done.is_none() {
                fast_done = Some(s);
            }
        }
        let (slow_done, fast_done) = (slow_done.unwrap(), fast_done.unwrap());
        assert!(fast_done < slow_done, "{fast_done} vs {slow_done}");
        assert!(fast_done <= 12, "{fast_done}");
        // With an estimate of 800, the rate settles below it.
        let mut c = Controller::new(Config::default());
        for s in 0..60 {
            c.update(&LinkReport {
                estimate_kbps: Some(800),
                ..report(s, 0.0)
            });
        }
        let t = c.target();
        assert!(t.video_kbps <= 800 - 45, "{t:?}");
        assert_eq!(t.step, Step::P540x25);
    }

    #[test]
    fn paused_video_resumes_at_180p10_after_a_clean_hold() {
        let mut c = Controller::new(Config::default());
        c.update(&LinkReport {
            estimate_kbps: Some(150),
            ..report(0, 0.0)
        });
        assert_eq!(c.target().step, Step::Paused);
        let mut resumed = None;
        for s in 1..30 {
            if c.update(&report(s, 0.0)).step != Step::Paused {
                resumed = Some(s);
                break;
            }
        }
        let s = resumed.expect("video resumes");
        assert!((4..=12).contains(&s), "resumed at {s}");
        assert_eq!(c.target().step, Step::P180x10);
        assert!(c.target().video_kbps >= 160);
    }

    #[test]
    fn from_paused_back_to_720p30_within_a_minute_of_clean_link() {
        let mut c = Controller::new(Config::default());
        run(&mut c, 0, 10, 0.5);
        assert_eq!(c.target().step, Step::Paused);
        let mut back = None;
        for s in 10..100 {
            if c.update(&report(s, 0.0)).step == Step::P720x30 {
                back = Some(s - 10);
                break;
            }
        }
        let back = back.expect("full quality returns");
        assert!(back <= 60, "{back} s");
    }

    #[test]
    fn loss_after_clean_time_resets_the_hold() {
        let mut c = Controller::new(Config::default());
        c.update(&LinkReport {
            estimate_kbps: Some(345),
            ..report(0, 0.0)
        });
        run(&mut c, 1, 2, 0.0);
        c.update(&report(3, 0.05)); // hold: not clean
        let t = run(&mut c, 4, 3, 0.0);
        assert_eq!(t.video_kbps, 255, "hold restarted: {t:?}");
        let t = c.update(&report(7, 0.0));
        assert!(t.video_kbps > 255, "{t:?}");
    }

    #[test]
    fn opus_loss_follows_measured_loss_up_at_once_and_decays_slowly() {
        let mut c = Controller::new(Config::default());
        assert_eq!(c.update(&report(0, 0.07)).opus_loss_percent, 7);
        assert_eq!(c.update(&report(1, 0.20)).opus_loss_percent, 20);
        let t = c.update(&report(2, 0.0));
        assert_eq!(t.opus_loss_percent, 17, "20 × 0.85");
        let t = run(&mut c, 3, 30, 0.0);
        assert_eq!(t.opus_loss_percent, 0);
        // Bounded.
        assert_eq!(c.update(&report(40, 0.9)).opus_loss_percent, 50);
        assert_eq!(c.update(&report(41, 7.0)).opus_loss_percent, 50);
    }

    #[test]
    fn video_fec_on_with_loss_off_after_five_clean_seconds() {
        let mut c = Controller::new(Config::default());
        assert_eq!(c.update(&report(0, 0.02)).video_fec_percent, 0);
        let t = c.update(&report(1, 0.05));
        assert_eq!(t.video_fec_percent, 10);
        let t = c.update(&report(2, 0.15));
        assert_eq!(t.video_fec_percent, 30);
        let t = run(&mut c, 3, 4, 0.0);
        assert!(t.video_fec_percent > 0, "still on after 4 s: {t:?}");
        let t = run(&mut c, 7, 2, 0.0);
        assert_eq!(t.video_fec_percent, 0, "{t:?}");
    }

    #[test]
    fn time_going_backwards_restarts_holds_without_panicking() {
        let mut c = Controller::new(Config::default());
        c.update(&LinkReport {
            estimate_kbps: Some(345),
            ..report(100, 0.0)
        });
        run(&mut c, 101, 2, 0.0);
        // The clock jumps back 90 s.
        let t = run(&mut c, 10, 3, 0.0);
        assert_eq!(t.video_kbps, 255, "hold restarted: {t:?}");
        let t = run(&mut c, 13, 2, 0.0);
        assert!(t.video_kbps > 255, "{t:?}");
    }

    #[test]
    fn a_long_gap_counts_as_at_most_five_seconds_of_growth() {
        let mut c = Controller::new(Config::default());
        c.update(&LinkReport {
            estimate_kbps: Some(345),
            ..report(0, 0.0)
        });
        run(&mut c, 1, 4, 0.0);
        let before = c.target().video_kbps;
        let t = c.update(&report(3_600, 0.0));
        assert!(
            f64::from(t.video_kbps) <= f64::from(before) * 1.1_f64.powi(5) + 1.0,
            "{before} → {t:?}"
        );
    }

    #[test]
    fn ladder_formats_and_labels() {
        assert_eq!(Step::P720x30.format(), Some((1280, 720, 30)));
        assert_eq!(Step::P540x25.format(), Some((960, 540, 25)));
        assert_eq!(Step::P360x15.format(), Some((640, 360, 15)));
        assert_eq!(Step::P180x10.format(), Some((320, 180, 10)));
        assert_eq!(Step::Paused.format(), None);
        assert_eq!(Step::P360x15.to_string(), "360p15");
        for w in Step::LADDER.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].min_kbps() >= w[1].min_kbps());
            if w[1] != Step::Paused {
                // Rungs overlap, so a rate at the top of one rung is
                // inside the next: no oscillation at the boundary.
                assert!(w[1].max_kbps() > w[0].min_kbps(), "{w:?}");
            }
        }
        let cfg = Config::default();
        assert_eq!(ladder_step(&cfg, 119.0, Step::P720x30), Step::Paused);
        assert_eq!(ladder_step(&cfg, 120.0, Step::P720x30), Step::P180x10);
        assert_eq!(ladder_step(&cfg, 220.0, Step::P720x30), Step::P360x15);
        assert_eq!(ladder_step(&cfg, 5_000.0, Step::P540x25), Step::P540x25);
    }
}
