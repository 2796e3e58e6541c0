//! The daemon's configuration file, in two stages: [`RawConfig`] is what the
//! TOML file says, [`Config`] is what the program uses after validation.
//! Every error names the file, the key and what was expected.
//!
//! ```toml
//! [room]
//! name = "Điểm cầu xã Tiền Phong"   # drawn on our picture
//! board = "sim"                     # a board profile, or "auto"
//!
//! [conference]
//! janus_url = "ws://127.0.0.1:8188/"
//! room_id = 1234
//! display_name = "Xã Tiền Phong"    # default: room.name
//! pin = "4321"                      # optional
//!
//! [media]
//! jitter_ms = 50
//! video_out = "window"              # "window" | "png" | "none"
//! png_dir = "/var/lib/diemcau/frames"
//! audio_out = "device"              # "device" | "none"
//! stamp_frames = false              # draw time stamps for latency tests
//! camera = "auto"                   # or pin one: "usb:046d:082d", "C920", "/dev/video2"
//! microphone = "auto"               # or pin a sound card: "usb:0b0e:0412", "Jabra"
//! speaker_volume = 80               # percent, until changed with Volume ±
//!                                   # (then kept in district.state_dir)
//! echo_cancel = "auto"              # software echo cancellation (webrtcdsp):
//!                                   # "auto": on unless the speakerphone (or
//!                                   # the board) cancels echo in hardware;
//!                                   # "on", "off"
//! noise_suppression = "moderate"    # "off", "low", "moderate", "high", "very-high"
//! sim_speaker_loop = false          # sim board: the speaker plays into the
//!                                   # fake microphone (an echo path, for tests)
//! sim_devices = "/run/diemcau/sim"  # sim board: its test camera (microphone) is
//!                                   # plugged in while sim_devices/camera
//!                                   # (sim_devices/microphone) exists
//!
//! [control]
//! socket = "/run/diemcau/ctl.sock"
//! remote = true                     # remotes from /dev/input (input_dir,
//!                                   # input_sysfs: where to look)
//! default_keys = true               # start from the default key map
//! cec = "auto"                      # HDMI-CEC: "auto" (/dev/cec0 if present),
//!                                   # "off", "/dev/cecN", "sim:DIR" (tests)
//! cec_standby_after_secs = 1800     # TV to standby when idle; 0: never
//! cec_wake_on_meeting = true        # TV on when a meeting is due
//!
//! [control.keys]                    # Linux key name (or code) = remote key
//! KEY_F1 = "ok"                     # ok: join or leave; mute; volume_up,
//! KEY_POWER = "none"                # volume_down; back: leave (twice);
//!                                   # home: status screen; none: ignore
//!
//! [hardware]                        # optional, per board
//! watchdog = "/dev/watchdog"        # pet the hardware watchdog
//! watchdog_timeout_secs = 15
//! gpio_chip = "/dev/gpiochip0"
//! status_led = 17                   # line offset; status_led_active_low = false
//! join_button = 27                  # join/leave; join_button_active_low = true
//!
//! [district]                        # optional: enrol with the district server
//! provisioning_file = "/boot/firmware/diemcau-provision.toml"
//! state_dir = "/var/lib/diemcau"
//! ```

use std::path::{Path, PathBuf};

use diemcau_control::keys::{KeyMap, RemoteKey, key_code_from_name};
use serde::Deserialize;

use crate::hw::{HardwareConfig, LineConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub room: RawRoom,
    pub conference: RawConference,
    #[serde(default)]
    pub media: RawMedia,
    #[serde(default)]
    pub control: RawControl,
    /// The district server. Without this section the room only joins its
    /// own conference when asked.
    pub district: Option<RawDistrict>,
    /// The board's watchdog, status LED and join button.
    #[serde(default)]
    pub hardware: RawHardware,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHardware {
    pub watchdog: Option<PathBuf>,
    pub watchdog_timeout_secs: Option<i64>,
    pub gpio_chip: Option<PathBuf>,
    pub status_led: Option<i64>,
    pub status_led_active_low: Option<bool>,
    pub join_button: Option<i64>,
    pub join_button_active_low: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDistrict {
    pub provisioning_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub serial: Option<String>,
    pub heartbeat_secs: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoom {
    pub name: String,
    /// Minutes east of UTC for the screen's clock (Vietnam: 420).
    pub utc_offset_minutes: Option<i64>,
    #[serde(default = "default_board")]
    pub board: String,
}

fn default_board() -> String {
    "auto".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConference {
    pub janus_url: String,
    pub room_id: i64,
    pub display_name: Option<String>,
    pub pin: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMedia {
    pub jitter_ms: Option<i64>,
    pub video_out: Option<String>,
    pub png_dir: Option<PathBuf>,
    pub png_every_secs: Option<i64>,
    pub audio_out: Option<String>,
    pub stamp_frames: Option<bool>,
    pub encoder: Option<String>,
    pub camera: Option<String>,
    pub microphone: Option<String>,
    pub sim_devices: Option<PathBuf>,
    /// The speaker volume until someone changes it with the remote, percent.
    pub speaker_volume: Option<i64>,
    /// "auto", "on" or "off".
    pub echo_cancel: Option<String>,
    /// "off", "low", "moderate", "high" or "very-high".
    pub noise_suppression: Option<String>,
    /// Sim board: what the speaker plays reaches the fake microphone.
    pub sim_speaker_loop: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    pub socket: Option<PathBuf>,
    /// Read remote controls (USB RF remotes, IR receivers) from evdev.
    pub remote: Option<bool>,
    pub input_dir: Option<PathBuf>,
    pub input_sysfs: Option<PathBuf>,
    /// Start from the default key map (true) or from an empty one.
    pub default_keys: Option<bool>,
    /// HDMI-CEC: "auto" (default: /dev/cec0 if present), "off", a device
    /// path, or "sim:DIR" (a simulated bus, for tests).
    pub cec: Option<String>,
    pub cec_standby_after_secs: Option<i64>,
    pub cec_wake_on_meeting: Option<bool>,
    /// `[control.keys]`: Linux key name (or number) = remote key, or "none".
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, String>,
}

/// Where received video goes, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoOutConfig {
    Window,
    Png {
        dir: PathBuf,
        every_secs: u32,
    },
    None,
    /// The room screen (idle, joining, incoming, in call, error) on the
    /// board's display; with `png`, no display: the screen is written to
    /// that file every `every_secs` instead.
    Screen {
        png: Option<(PathBuf, u32)>,
    },
}

/// How the room talks to the district server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistrictConfig {
    pub provisioning_file: PathBuf,
    pub state_dir: PathBuf,
    /// The board's serial number; read from the hardware when not given.
    pub serial: Option<String>,
    /// Overrides the heartbeat interval the server asks for (tests).
    pub heartbeat_secs: Option<u64>,
}

/// Which camera and microphone the room uses (`[media]` `camera`,
/// `microphone`, `sim_devices`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DevicesConfig {
    /// A camera named in config; `None`: the best one found.
    pub camera: Option<diemcau_board::camera::CameraPin>,
    /// A sound card named in config; `None`: the best one found.
    pub microphone: Option<diemcau_board::audio::AudioPin>,
    /// Sim board: the fake camera is plugged in while `sim_devices/camera`
    /// exists, the fake microphone while `sim_devices/microphone` does.
    /// `None`: both always there.
    pub sim_devices: Option<PathBuf>,
    /// Sim board: the speaker plays into the room's "air", which the fake
    /// microphone hears (attenuated and delayed) with its own tone.
    pub sim_speaker_loop: bool,
}

/// `media.echo_cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EchoCancel {
    /// On, unless the speakerphone or the board cancels echo in hardware.
    #[default]
    Auto,
    On,
    Off,
}

impl EchoCancel {
    /// Whether software echo cancellation runs, given whether the
    /// hardware cancels echo itself.
    pub fn resolve(self, hardware_cancels: bool) -> bool {
        match self {
            EchoCancel::Auto => !hardware_cancels,
            EchoCancel::On => true,
            EchoCancel::Off => false,
        }
    }
}

pub const DEFAULT_PROVISIONING_FILE: &str = "/boot/firmware/diemcau-provision.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/diemcau";

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub room_name: String,
    pub board: String,
    pub janus_url: String,
    pub room_id: u64,
    pub display_name: String,
    pub pin: Option<String>,
    pub jitter_ms: u32,
    pub video_out: VideoOutConfig,
    pub audio_out_device: bool,
    /// Draw a machine-readable time stamp into the top rows of our picture,
    /// so receivers can measure glass-to-glass latency (tests, benchmarks).
    pub stamp_frames: bool,
    /// The screen clock's time zone, minutes east of UTC.
    pub utc_offset_min: i32,
    /// Use only this one of the board's encoders (benchmarks, a site
    /// whose hardware encoder misbehaves); `None`: the board's order.
    pub encoder: Option<String>,
    /// Which camera and microphone to capture from.
    pub devices: DevicesConfig,
    /// The speaker volume until the remote changes it (then the saved one).
    pub speaker_volume: u8,
    /// Software echo cancellation of the microphone.
    pub echo_cancel: EchoCancel,
    /// Noise suppression of the microphone; `None`: off.
    pub noise_suppression: Option<diemcau_media::NoiseSuppression>,
    pub socket: PathBuf,
    /// Where to look for remotes; `None`: no remote.
    pub remote: Option<crate::remote::RemoteConfig>,
    /// Linux key codes to remote keys (`[control.keys]` over the defaults).
    pub keymap: KeyMap,
    /// The TV over HDMI-CEC; `None`: `cec = "off"`.
    pub tv: Option<crate::tv::TvConfig>,
    pub district: Option<DistrictConfig>,
    pub hardware: HardwareConfig,
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: expected {expected}, got {got}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        expected: &'static str,
        got: String,
    },
    /// Like `Invalid`, for keys named by the file (`control.keys.KEY_F13`).
    #[error("config file {path}: key `{key}`: expected {expected}, got {got}")]
    InvalidEntry {
        path: PathBuf,
        key: String,
        expected: &'static str,
        got: String,
    },
}

pub const DEFAULT_SOCKET: &str = "/run/diemcau/ctl.sock";

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        Self::validate(path, raw)
    }

    fn validate(path: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
        let invalid = |key, expected, got: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            expected,
            got,
        };
        let room_name = raw.room.name.trim().to_string();
        if room_name.is_empty() || room_name.chars().count() > 80 {
            return Err(invalid(
                "room.name",
                "a name of 1 to 80 characters",
                format!("{:?}", raw.room.name),
            ));
        }
        let board = raw.room.board.trim().to_string();
        if board != "auto" && diemcau_board::builtin(&board).is_err() {
            return Err(invalid(
                "room.board",
                "\"auto\" or a known board profile",
                format!(
                    "{board:?} (known: {})",
                    diemcau_board::builtin_names().join(", ")
                ),
            ));
        }
        let url = raw.conference.janus_url.trim().to_string();
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("wss://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(invalid(
                "conference.janus_url",
                "a WebSocket URL like ws://host:8188/",
                format!("{url:?}"),
            ));
        }
        let room_id = u64::try_from(raw.conference.room_id)
            .ok()
            .filter(|r| *r > 0)
            .ok_or_else(|| {
                invalid(
                    "conference.room_id",
                    "a positive room number",
                    raw.conference.room_id.to_string(),
                )
            })?;
        let display_name = raw
            .conference
            .display_name
            .map(|d| d.trim().to_string())
            .unwrap_or_else(|| room_name.clone());
        if display_name.is_empty() || display_name.chars().count() > 80 {
            return Err(invalid(
                "conference.display_name",
                "a name of 1 to 80 characters",
                format!("{display_name:?}"),
            ));
        }
        let pin = raw.conference.pin;
        if let Some(p) = &pin
            && (p.is_empty() || p.len() > 64 || p.chars().any(|c| c.is_control()))
        {
            return Err(invalid(
                "conference.pin",
                "1 to 64 printable characters",
                format!("{} characters", p.chars().count()),
            ));
        }
        let jitter = raw.media.jitter_ms.unwrap_or(50);
        let jitter_ms = u32::try_from(jitter)
            .ok()
            .filter(|j| *j <= 2000)
            .ok_or_else(|| {
                invalid(
                    "media.jitter_ms",
                    "0 to 2000 milliseconds",
                    jitter.to_string(),
                )
            })?;
        let every = raw.media.png_every_secs.unwrap_or(1);
        let every_secs = u32::try_from(every)
            .ok()
            .filter(|e| (1..=3600).contains(e))
            .ok_or_else(|| {
                invalid(
                    "media.png_every_secs",
                    "1 to 3600 seconds",
                    every.to_string(),
                )
            })?;
        let video_out = match raw.media.video_out.as_deref().unwrap_or("window") {
            "window" => VideoOutConfig::Window,
            "none" => VideoOutConfig::None,
            "screen" => VideoOutConfig::Screen { png: None },
            "screen-png" => VideoOutConfig::Screen {
                png: Some((
                    raw.media
                        .png_dir
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("/var/lib/diemcau/frames"))
                        .join("screen.png"),
                    every_secs,
                )),
            },
            "png" => VideoOutConfig::Png {
                dir: raw
                    .media
                    .png_dir
                    .unwrap_or_else(|| PathBuf::from("/var/lib/diemcau/frames")),
                every_secs,
            },
            other => {
                return Err(invalid(
                    "media.video_out",
                    "\"screen\", \"screen-png\", \"window\", \"png\" or \"none\"",
                    format!("{other:?}"),
                ));
            }
        };
        let audio_out_device = match raw.media.audio_out.as_deref().unwrap_or("device") {
            "device" => true,
            "none" => false,
            other => {
                return Err(invalid(
                    "media.audio_out",
                    "\"device\" or \"none\"",
                    format!("{other:?}"),
                ));
            }
        };
        let district = match raw.district {
            None => None,
            Some(d) => {
                let heartbeat_secs = match d.heartbeat_secs {
                    None => None,
                    Some(h) => Some(
                        u64::try_from(h)
                            .ok()
                            .filter(|h| (1..=3600).contains(h))
                            .ok_or_else(|| {
                                invalid(
                                    "district.heartbeat_secs",
                                    "1 to 3600 seconds",
                                    h.to_string(),
                                )
                            })?,
                    ),
                };
                if let Some(serial) = &d.serial
                    && (serial.is_empty()
                        || serial.len() > 64
                        || !serial
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-'))
                {
                    return Err(invalid(
                        "district.serial",
                        "1 to 64 letters, digits or '-'",
                        format!("{serial:?}"),
                    ));
                }
                Some(DistrictConfig {
                    provisioning_file: d
                        .provisioning_file
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_PROVISIONING_FILE)),
                    state_dir: d
                        .state_dir
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
                    serial: d.serial,
                    heartbeat_secs,
                })
            }
        };
        let hardware = validate_hardware(&invalid, raw.hardware)?;
        let offset = raw.room.utc_offset_minutes.unwrap_or(420);
        let utc_offset_min = i32::try_from(offset)
            .ok()
            .filter(|o| (-720..=840).contains(o))
            .ok_or_else(|| {
                invalid(
                    "room.utc_offset_minutes",
                    "-720 to 840 minutes east of UTC (Vietnam: 420)",
                    offset.to_string(),
                )
            })?;
        let encoder = match raw.media.encoder.as_deref().map(str::trim) {
            None => None,
            Some(e)
                if !e.is_empty()
                    && e.len() <= 64
                    && e.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                Some(e.to_string())
            }
            Some(e) => {
                return Err(invalid(
                    "media.encoder",
                    "a GStreamer encoder element name like x264enc",
                    format!("{e:?}"),
                ));
            }
        };
        let auto = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| v != "auto");
        let camera = auto(raw.media.camera)
            .map(|c| {
                c.parse().map_err(|e: String| {
                    invalid(
                        "media.camera",
                        "\"auto\", a device path, usb:VID:PID or part of the camera's name",
                        e,
                    )
                })
            })
            .transpose()?;
        let microphone = auto(raw.media.microphone)
            .map(|c| {
                c.parse().map_err(|e: String| {
                    invalid(
                        "media.microphone",
                        "\"auto\", usb:VID:PID or part of the sound card's name",
                        e,
                    )
                })
            })
            .transpose()?;
        if let Some(d) = &raw.media.sim_devices
            && !d.is_absolute()
        {
            return Err(invalid(
                "media.sim_devices",
                "an absolute folder path",
                format!("{:?}", d.display()),
            ));
        }
        let keymap = validate_keys(path, &raw.control)?;
        let tv = validate_cec(&invalid, &raw.control)?;
        let volume = raw
            .media
            .speaker_volume
            .unwrap_or(i64::from(crate::volume::DEFAULT_PERCENT));
        let speaker_volume = u8::try_from(volume)
            .ok()
            .filter(|v| *v <= 100)
            .ok_or_else(|| {
                invalid(
                    "media.speaker_volume",
                    "0 to 100 percent",
                    volume.to_string(),
                )
            })?;
        let echo_cancel = match raw.media.echo_cancel.as_deref().map(str::trim) {
            None | Some("auto") => EchoCancel::Auto,
            Some("on") => EchoCancel::On,
            Some("off") => EchoCancel::Off,
            Some(other) => {
                return Err(invalid(
                    "media.echo_cancel",
                    "\"auto\", \"on\" or \"off\"",
                    format!("{other:?}"),
                ));
            }
        };
        let noise_suppression = match raw.media.noise_suppression.as_deref().map(str::trim) {
            None => Some(diemcau_media::NoiseSuppression::Moderate),
            Some("off") => None,
            Some(level) => Some(level.parse().map_err(|got| {
                invalid(
                    "media.noise_suppression",
                    "\"off\", \"low\", \"moderate\", \"high\" or \"very-high\"",
                    got,
                )
            })?),
        };
        let devices = DevicesConfig {
            camera,
            microphone,
            sim_devices: raw.media.sim_devices,
            sim_speaker_loop: raw.media.sim_speaker_loop.unwrap_or(false),
        };
        Ok(Config {
            echo_cancel,
            noise_suppression,
            tv,
            devices,
            speaker_volume,
            district,
            hardware,
            room_name,
            board,
            janus_url: url,
            room_id,
            display_name,
            pin,
            jitter_ms,
            video_out,
            audio_out_device,
            stamp_frames: raw.media.stamp_frames.unwrap_or(false),
            utc_offset_min,
            encoder,
            remote: raw.control.remote.unwrap_or(true).then(|| {
                let d = crate::remote::RemoteConfig::default();
                crate::remote::RemoteConfig {
                    dev_root: raw.control.input_dir.clone().unwrap_or(d.dev_root),
                    sys_root: raw.control.input_sysfs.clone().unwrap_or(d.sys_root),
                    keymap: keymap.clone(),
                }
            }),
            keymap,
            socket: raw
                .control
                .socket
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        })
    }
}

/// `[control] cec`, `cec_standby_after_secs`, `cec_wake_on_meeting`.
fn validate_cec(
    invalid: &dyn Fn(&'static str, &'static str, String) -> ConfigError,
    raw: &RawControl,
) -> Result<Option<crate::tv::TvConfig>, ConfigError> {
    use crate::tv::{CecAdapter, DEFAULT_STANDBY_SECS, TvConfig};
    let value = raw.cec.as_deref().map(str::trim).unwrap_or("auto");
    let adapter = match value {
        "off" => return Ok(None),
        "auto" => CecAdapter::Auto,
        v if v.starts_with("sim:") && Path::new(&v[4..]).is_absolute() => {
            CecAdapter::Sim(PathBuf::from(&v[4..]))
        }
        v if v.starts_with("/dev/") && v.len() > 5 => CecAdapter::Device(PathBuf::from(v)),
        v => {
            return Err(invalid(
                "control.cec",
                "\"auto\", \"off\", a CEC device like \"/dev/cec0\" or \"sim:/absolute/folder\"",
                format!("{v:?}"),
            ));
        }
    };
    let standby = raw
        .cec_standby_after_secs
        .unwrap_or(DEFAULT_STANDBY_SECS as i64);
    let standby_after = u64::try_from(standby)
        .ok()
        .filter(|s| *s <= 86_400)
        .ok_or_else(|| {
            invalid(
                "control.cec_standby_after_secs",
                "0 (never) to 86400 seconds",
                standby.to_string(),
            )
        })?;
    Ok(Some(TvConfig {
        adapter,
        standby_after: (standby_after > 0).then(|| std::time::Duration::from_secs(standby_after)),
        wake_on_meeting: raw.cec_wake_on_meeting.unwrap_or(true),
    }))
}

/// What `[control.keys]` may bind a key to, for error messages.
const KEY_ACTIONS: &str = "a remote key: \"ok\" (join or leave), \"mute\", \"volume_up\", \
     \"volume_down\", \"back\" (leave, pressed twice), \"home\" (status screen), \"call\", \
     \"hang_up\", \"menu\", \"up\", \"down\", \"left\", \"right\", \"power\", \"info\", a colour, \
     \"digit_0\"..\"digit_9\"; or \"none\" to ignore the key";

/// `[control] default_keys` and `[control.keys]`: the default key map with
/// the site's changes, each key name and action checked.
fn validate_keys(path: &Path, raw: &RawControl) -> Result<KeyMap, ConfigError> {
    let mut keymap = if raw.default_keys.unwrap_or(true) {
        KeyMap::default()
    } else {
        KeyMap::empty()
    };
    let invalid = |name: &str, expected, got: String| ConfigError::InvalidEntry {
        path: path.to_path_buf(),
        key: format!("control.keys.{name}"),
        expected,
        got,
    };
    for (name, action) in &raw.keys {
        let code = key_code_from_name(name).ok_or_else(|| {
            invalid(
                name,
                "a Linux key name from input-event-codes.h (KEY_ENTER, KEY_OK, KEY_VOLUMEUP...) \
                 or a key code up to 0x2ff",
                format!("{name:?}"),
            )
        })?;
        match action.trim() {
            "none" => keymap.unbind(code),
            a => {
                let key: RemoteKey = a
                    .parse()
                    .map_err(|_| invalid(name, KEY_ACTIONS, format!("{action:?}")))?;
                keymap.bind(code, key);
            }
        }
    }
    if keymap.codes().next().is_none() {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "control.default_keys",
            expected: "some keys bound in [control.keys] when the defaults are off",
            got: "false and no keys".into(),
        });
    }
    Ok(keymap)
}

fn validate_hardware(
    invalid: &dyn Fn(&'static str, &'static str, String) -> ConfigError,
    raw: RawHardware,
) -> Result<HardwareConfig, ConfigError> {
    let line = |key: &'static str, v: Option<i64>, active_low: Option<bool>, default_low| {
        v.map(|n| {
            u32::try_from(n)
                .ok()
                .filter(|n| *n < 1024)
                .map(|line| LineConfig {
                    line,
                    active_low: active_low.unwrap_or(default_low),
                })
                .ok_or_else(|| invalid(key, "a GPIO line offset from 0 to 1023", n.to_string()))
        })
        .transpose()
    };
    let status_led = line(
        "hardware.status_led",
        raw.status_led,
        raw.status_led_active_low,
        false,
    )?;
    let join_button = line(
        "hardware.join_button",
        raw.join_button,
        raw.join_button_active_low,
        true,
    )?;
    if let (Some(l), Some(b)) = (&status_led, &join_button)
        && l.line == b.line
    {
        return Err(invalid(
            "hardware.join_button",
            "a line other than the status LED's",
            b.line.to_string(),
        ));
    }
    let watchdog_timeout = raw
        .watchdog_timeout_secs
        .map(|t| {
            u64::try_from(t)
                .ok()
                .filter(|t| (1..=3600).contains(t))
                .map(std::time::Duration::from_secs)
                .ok_or_else(|| {
                    invalid(
                        "hardware.watchdog_timeout_secs",
                        "1 to 3600 seconds",
                        t.to_string(),
                    )
                })
        })
        .transpose()?;
    if let Some(w) = &raw.watchdog
        && !w.is_absolute()
    {
        return Err(invalid(
            "hardware.watchdog",
            "an absolute device path like /dev/watchdog",
            format!("{:?}", w.display()),
        ));
    }
    Ok(HardwareConfig {
        watchdog: raw.watchdog,
        watchdog_timeout,
        gpio_chip: raw
            .gpio_chip
            .unwrap_or_else(|| PathBuf::from("/dev/gpiochip0")),
        status_led,
        join_button,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[room]
name = "Điểm cầu xã Tiền Phong"
board = "sim"
[conference]
janus_url = "ws://127.0.0.2:8188/"
room_id = 1234
pin = "4321"
[media]
video_out = "none"
audio_out = "none"
[control]
socket = "/tmp/x.sock"
"#;

    fn err(text: &str) -> String {
        Config::parse(Path::new("/etc/diemcau/room.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn echo_cancel_and_noise_suppression() {
        use diemcau_media::NoiseSuppression;
        let c = Config::parse(Path::new("room.toml"), GOOD).unwrap();
        assert_eq!(c.echo_cancel, EchoCancel::Auto);
        assert_eq!(c.noise_suppression, Some(NoiseSuppression::Moderate));
        assert!(!c.devices.sim_speaker_loop);
        // auto: software only where the hardware does not cancel echo.
        assert!(EchoCancel::Auto.resolve(false));
        assert!(!EchoCancel::Auto.resolve(true));
        assert!(EchoCancel::On.resolve(true));
        assert!(!EchoCancel::Off.resolve(false));
        let c = Config::parse(
            Path::new("room.toml"),
            &GOOD.replace(
                "[media]",
                "[media]\necho_cancel = \"off\"\nnoise_suppression = \"off\"\nsim_speaker_loop = true",
            ),
        )
        .unwrap();
        assert_eq!(c.echo_cancel, EchoCancel::Off);
        assert_eq!(c.noise_suppression, None);
        assert!(c.devices.sim_speaker_loop);
        let c = Config::parse(
            Path::new("room.toml"),
            &GOOD.replace(
                "[media]",
                "[media]\necho_cancel = \"on\"\nnoise_suppression = \"very-high\"",
            ),
        )
        .unwrap();
        assert_eq!(c.echo_cancel, EchoCancel::On);
        assert_eq!(c.noise_suppression, Some(NoiseSuppression::VeryHigh));
        let e = err(&GOOD.replace("[media]", "[media]\necho_cancel = \"hardware\""));
        assert!(
            e.contains("media.echo_cancel") && e.contains("\"hardware\""),
            "{e}"
        );
        let e = err(&GOOD.replace("[media]", "[media]\nnoise_suppression = \"max\""));
        assert!(
            e.contains("media.noise_suppression") && e.contains("very-high"),
            "{e}"
        );
    }

    #[test]
    fn good_config() {
        let c = Config::parse(Path::new("room.toml"), GOOD).expect("valid");
        assert_eq!(c.room_id, 1234);
        assert_eq!(c.display_name, "Điểm cầu xã Tiền Phong");
        assert_eq!(c.jitter_ms, 50);
        assert_eq!(c.video_out, VideoOutConfig::None);
        assert_eq!(c.pin.as_deref(), Some("4321"));
    }

    #[test]
    fn errors_name_file_key_and_expectation() {
        let e = err(&GOOD.replace("room_id = 1234", "room_id = -3"));
        assert!(e.contains("/etc/diemcau/room.toml"), "{e}");
        assert!(e.contains("conference.room_id"), "{e}");
        assert!(e.contains("positive"), "{e}");

        let e = err(&GOOD.replace("ws://127.0.0.2:8188/", "http://x"));
        assert!(
            e.contains("conference.janus_url") && e.contains("WebSocket"),
            "{e}"
        );

        let e = err(&GOOD.replace("board = \"sim\"", "board = \"pi9\""));
        assert!(e.contains("room.board") && e.contains("sim"), "{e}");

        let e = err(&GOOD.replace("video_out = \"none\"", "video_out = \"tv\""));
        assert!(e.contains("media.video_out"), "{e}");

        let c = Config::parse(Path::new("room.toml"), GOOD).expect("valid");
        assert_eq!(c.speaker_volume, 80);
        let e = err(&GOOD.replace("[media]", "[media]\nspeaker_volume = 101"));
        assert!(
            e.contains("media.speaker_volume") && e.contains("0 to 100"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_and_unknown_keys() {
        let e = err("[room\nname=");
        assert!(
            e.contains("/etc/diemcau/room.toml") && e.contains("not valid"),
            "{e}"
        );
        let e = err(&GOOD.replace("pin = ", "pinn = "));
        assert!(e.contains("pinn"), "{e}");
        let e = err(&GOOD.replace("room_id = 1234", "room_id = \"abc\""));
        assert!(e.contains("room_id"), "{e}");
        let e = err("");
        assert!(e.contains("room"), "{e}");
    }

    #[test]
    fn devices_are_auto_pinned_or_errors_naming_the_key() {
        let c = Config::parse(Path::new("room.toml"), GOOD).expect("valid");
        assert_eq!(c.devices, DevicesConfig::default());
        let pinned = GOOD.replace(
            "audio_out = \"none\"",
            "audio_out = \"none\"\ncamera = \"usb:046d:082d\"\nmicrophone = \"Jabra\"\nsim_devices = \"/run/sim\"",
        );
        let c = Config::parse(Path::new("room.toml"), &pinned).expect("valid");
        assert_eq!(c.devices.camera, Some("usb:046d:082d".parse().unwrap()));
        assert_eq!(c.devices.microphone, Some("Jabra".parse().unwrap()));
        assert_eq!(c.devices.sim_devices, Some(PathBuf::from("/run/sim")));
        let auto = GOOD.replace(
            "audio_out = \"none\"",
            "audio_out = \"none\"\ncamera = \"auto\"\nmicrophone = \" auto \"",
        );
        let c = Config::parse(Path::new("room.toml"), &auto).expect("valid");
        assert_eq!(c.devices, DevicesConfig::default());
        for (line, key) in [
            ("camera = \"usb:zz:1\"", "media.camera"),
            ("camera = \"\"", "media.camera"),
            ("microphone = \"usb:1\"", "media.microphone"),
            ("sim_devices = \"relative\"", "media.sim_devices"),
        ] {
            let e = err(&GOOD.replace(
                "audio_out = \"none\"",
                &format!("audio_out = \"none\"\n{line}"),
            ));
            assert!(e.contains(key), "{line}: {e}");
        }
    }

    #[test]
    fn key_map_defaults_and_site_changes() {
        use diemcau_control::keys::code;
        let c = Config::parse(Path::new("room.toml"), GOOD).expect("valid");
        assert_eq!(c.keymap, KeyMap::default());
        // The issue's defaults: OK/Enter, Mute, Volume +/-, Back, Home.
        assert_eq!(c.keymap.lookup(code::KEY_ENTER), Some(RemoteKey::Ok));
        assert_eq!(c.keymap.lookup(code::KEY_OK), Some(RemoteKey::Ok));
        assert_eq!(c.keymap.lookup(code::KEY_MUTE), Some(RemoteKey::Mute));
        assert_eq!(
            c.keymap.lookup(code::KEY_VOLUMEUP),
            Some(RemoteKey::VolumeUp)
        );
        assert_eq!(
            c.keymap.lookup(code::KEY_VOLUMEDOWN),
            Some(RemoteKey::VolumeDown)
        );
        assert_eq!(c.keymap.lookup(code::KEY_BACK), Some(RemoteKey::Back));
        assert_eq!(c.keymap.lookup(code::KEY_HOMEPAGE), Some(RemoteKey::Home));
        assert_eq!(c.remote.as_ref().map(|r| &r.keymap), Some(&c.keymap));

        let site = format!(
            "{GOOD}default_keys = true\n[control.keys]\nKEY_RED = \"hang_up\"\nKEY_F2 = \"ok\"\n\
             KEY_POWER = \"none\"\nKEY_OK = \" home \"\n"
        );
        let c = Config::parse(Path::new("room.toml"), &site).expect("valid");
        assert_eq!(c.keymap.lookup(code::KEY_RED), Some(RemoteKey::HangUp));
        assert_eq!(c.keymap.lookup(60), Some(RemoteKey::Ok), "KEY_F2");
        assert_eq!(c.keymap.lookup(code::KEY_POWER), None);
        assert_eq!(c.keymap.lookup(code::KEY_OK), Some(RemoteKey::Home));
        assert_eq!(c.keymap.lookup(code::KEY_ENTER), Some(RemoteKey::Ok));

        let only = format!("{GOOD}default_keys = false\n[control.keys]\nKEY_SPACE = \"ok\"\n");
        let c = Config::parse(Path::new("room.toml"), &only).expect("valid");
        assert_eq!(c.keymap.codes().collect::<Vec<_>>(), vec![code::KEY_SPACE]);
    }

    #[test]
    fn key_map_errors_name_file_key_and_expectation() {
        let e = err(&format!("{GOOD}[control.keys]\nKEY_F13 = \"ok\"\n"));
        assert!(e.contains("/etc/diemcau/room.toml"), "{e}");
        assert!(e.contains("control.keys.KEY_F13"), "{e}");
        assert!(e.contains("input-event-codes.h"), "{e}");
        let e = err(&format!("{GOOD}[control.keys]\nKEY_ENTER = \"launch\"\n"));
        assert!(e.contains("control.keys.KEY_ENTER"), "{e}");
        assert!(e.contains("\"volume_up\"") && e.contains("\"none\""), "{e}");
        assert!(e.contains("\"launch\""), "{e}");
        let e = err(&format!("{GOOD}[control.keys]\n\"0x300\" = \"ok\"\n"));
        assert!(e.contains("control.keys.0x300"), "{e}");
        let e = err(&format!("{GOOD}default_keys = false\n"));
        assert!(e.contains("control.default_keys"), "{e}");
        let e = err(&format!("{GOOD}[control.keys]\nKEY_OK = 3\n"));
        assert!(e.contains("not valid") && e.contains("KEY_OK"), "{e}");
    }

    #[test]
    fn cec_settings() {
        use crate::tv::{CecAdapter, TvConfig};
        use std::time::Duration;
        let c = Config::parse(Path::new("room.toml"), GOOD).expect("valid");
        assert_eq!(
            c.tv,
            Some(TvConfig {
                adapter: CecAdapter::Auto,
                standby_after: Some(Duration::from_secs(1800)),
                wake_on_meeting: true,
            })
        );
        let with = |extra: &str| format!("{GOOD}{extra}\n");
        let c = Config::parse(Path::new("room.toml"), &with("cec = \"off\"")).unwrap();
        assert_eq!(c.tv, None);
        let c = Config::parse(
            Path::new("room.toml"),
            &with("cec = \"/dev/cec1\"\ncec_standby_after_secs = 0\ncec_wake_on_meeting = false"),
        )
        .unwrap();
        assert_eq!(
            c.tv,
            Some(TvConfig {
                adapter: CecAdapter::Device("/dev/cec1".into()),
                standby_after: None,
                wake_on_meeting: false,
            })
        );
        let c = Config::parse(Path::new("room.toml"), &with("cec = \"sim:/tmp/tv\"")).unwrap();
        assert_eq!(
            c.tv.map(|t| t.adapter),
            Some(CecAdapter::Sim("/tmp/tv".into()))
        );
        for (line, key) in [
            ("cec = \"hdmi\"", "control.cec"),
            ("cec = \"sim:relative\"", "control.cec"),
            (
                "cec_standby_after_secs = -1",
                "control.cec_standby_after_secs",
            ),
            (
                "cec_standby_after_secs = 90000",
                "control.cec_standby_after_secs",
            ),
        ] {
            let e = err(&with(line));
            assert!(
                e.contains(key) && e.contains("/etc/diemcau/room.toml"),
                "{line}: {e}"
            );
        }
    }

    /// The README's sample configuration is a valid one (it once bound
    /// KEY_F1, which the key names did not know).
    #[test]
    fn readme_sample_config_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n[room]").expect("sample in README") + 8;
        let len = readme[start..].find("```").expect("end of sample");
        let c = Config::parse(Path::new("README.md"), &readme[start..start + len])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.keymap.lookup(59), Some(RemoteKey::Ok), "KEY_F1 = \"ok\"");
        assert_eq!(
            c.keymap.lookup(diemcau_control::keys::code::KEY_POWER),
            None
        );
        assert!(c.tv.is_some());
    }

    #[test]
    fn missing_file() {
        let e = Config::load(Path::new("/nonexistent/room.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/room.toml"), "{e}");
    }
}
