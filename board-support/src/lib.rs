//! Board profiles as data, board detection and device probing.
//!
//! This crate owns everything the room needs to know about the hardware it
//! runs on, and nothing about what the room does:
//!
//! - [`profile`]: a board profile says which GStreamer elements a room uses
//!   on that board: camera and microphone sources, the video encoders (in
//!   order of preference) and their properties, the decoder and the display
//!   and speaker sinks, and the device nodes they need. Profiles live as TOML
//!   files in `board-support/boards/` and are compiled into the binary.
//! - [`detect`]: which board this is, from `/proc/device-tree/compatible` or
//!   DMI, overridable from config; unknown boards get the `generic` profile.
//! - [`select`]: probes the GStreamer registry and the device nodes (both
//!   behind traits with real and fake implementations) and picks the first
//!   usable encoder, decoder and sink, saying why each skipped one was skipped.
//! - [`camera`]: V4L2 camera discovery (ioctl driver and sysfs) and the pure
//!   choice of capture mode.
//! - [`audio`]: ALSA speakerphone discovery from `/proc/asound`.
//! - [`device`]: the camera and microphone as [`device::DeviceSource`]s
//!   (is it plugged in, and the GStreamer source for it): V4L2 and ALSA
//!   for real boards, marker-file fakes for the sim board.
//! - [`encoder`]: per-encoder knowledge (bitrate units, software or not).
//!
//! Every function that reads the system takes a root path, so tests run
//! against fixture trees in `tests/fixtures/`.

pub mod audio;
pub mod camera;
pub mod detect;
pub mod device;
pub mod encoder;
pub mod profile;
pub mod select;
// The one module with `unsafe`: V4L2 ioctls (the kernel fills #[repr(C)]
// structs). The workspace denies unsafe_code everywhere else.
#[allow(unsafe_code)]
mod v4l2;

pub use profile::{
    AudioProfile, BoardProfile, CameraProfile, DeviceRequirement, DmiPattern, ElementSpec,
    ProfileError, Unavailable, VideoProfile, builtin, builtin_all, builtin_names, parse_profile,
};

/// An error and all its causes on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
