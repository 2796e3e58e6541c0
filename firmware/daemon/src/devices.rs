//! The room's camera and microphone: which [`DeviceSource`] the board
//! gets, and what `ctl status` says about them.
//!
//! A board whose profile captures with `v4l2src` gets the V4L2 camera
//! (the one pinned by `media.camera`, or the best found, in the best mode
//! within the board's limits); one whose profile captures with `alsasrc`
//! gets the ALSA microphone (`media.microphone`, or a USB speakerphone
//! first). Any other source (the sim board's test sources) is a fake whose
//! presence follows a marker file in `media.sim_devices`, or is always there
//! when that is not set.

use std::path::Path;
use std::sync::Arc;

use diemcau_board::BoardProfile;
use diemcau_board::audio::{pick_audio, read_cards};
use diemcau_board::camera::CameraLimits;
use diemcau_board::device::{
    AlsaMicrophone, DeviceSource, FakeCamera, FakeMicrophone, V4l2Camera, sim_markers,
};
use diemcau_board::select::{GstRegistry, ListRegistry, RootedDevices};
use diemcau_media::{DeviceStatus, MediaSettings};

use crate::config::DevicesConfig;

/// The sim board's room loop (`media.sim_speaker_loop`), process-wide.
pub const SIM_ROOM: &str = "diemcau-sim-room";

/// The camera and microphone for `profile`. On a board that plays through
/// `alsasink`, also points the profile's speaker at the card ALSA discovery
/// chooses (the speakerphone, else HDMI), logging why.
pub fn sources(
    cfg: &DevicesConfig,
    profile: &mut BoardProfile,
) -> (Arc<dyn DeviceSource>, Arc<dyn DeviceSource>) {
    let root = Path::new("/");
    let (cam_marker, mic_marker) = match &cfg.sim_devices {
        Some(dir) => {
            let (c, m) = sim_markers(dir);
            (Some(c), Some(m))
        }
        None => (None, None),
    };
    let devices = RootedDevices::system();
    let limits = match GstRegistry::new() {
        Ok(r) => CameraLimits::for_profile(profile, &r, &devices),
        Err(e) => {
            tracing::warn!(error = %e, "GStreamer registry unavailable; assuming no hardware JPEG decoder");
            CameraLimits::for_profile(profile, &ListRegistry::default(), &devices)
        }
    };
    let camera: Arc<dyn DeviceSource> = if profile.video.source.element == "v4l2src" {
        tracing::info!(pin = ?cfg.camera.as_ref().map(ToString::to_string), "camera: V4L2 discovery");
        Arc::new(V4l2Camera::new(
            root,
            cfg.camera.clone(),
            limits,
            profile.camera.jpeg_decoder.clone(),
        ))
    } else {
        if cfg.camera.is_some() {
            tracing::warn!(
                source = %profile.video.source.element,
                "media.camera is ignored: this board does not capture with v4l2src"
            );
        }
        Arc::new(FakeCamera::new(&profile.video.source, cam_marker, limits))
    };
    let microphone: Arc<dyn DeviceSource> = if profile.audio.source.element == "alsasrc" {
        if cfg.sim_speaker_loop {
            tracing::warn!("media.sim_speaker_loop is ignored: this board has a real microphone");
        }
        Arc::new(AlsaMicrophone::new(root, cfg.microphone.clone()))
    } else if cfg.sim_speaker_loop {
        tracing::info!(
            channel = SIM_ROOM,
            "sim board: the speaker plays into the microphone"
        );
        profile.audio.sink = FakeMicrophone::room_loop_sink(SIM_ROOM);
        Arc::new(FakeMicrophone::new(&profile.audio.source, mic_marker).with_room_loop(SIM_ROOM))
    } else {
        Arc::new(FakeMicrophone::new(&profile.audio.source, mic_marker))
    };
    if profile.audio.sink.element == "alsasink" {
        match read_cards(root).and_then(|cards| pick_audio(&cards, cfg.microphone.as_ref())) {
            Ok(choice) => {
                for r in &choice.reasons {
                    tracing::info!("audio: {r}");
                }
                choice.apply(&mut profile.audio);
            }
            Err(e) => tracing::warn!(
                error = %crate::chain(&e),
                "no sound card chosen for playback; alsasink uses ALSA's default"
            ),
        }
    }
    (camera, microphone)
}

/// What `ctl status` shows for the camera and microphone: the call's feeds
/// while in a call, else one probe of each source.
pub fn status(
    media: &MediaSettings,
    in_call: (Option<DeviceStatus>, Option<DeviceStatus>),
) -> (Option<DeviceStatus>, Option<DeviceStatus>) {
    let probe = |s: &Arc<dyn DeviceSource>| DeviceStatus::from_probe(s.kind(), &s.probe());
    let (cam, mic) = in_call;
    (
        Some(cam.unwrap_or_else(|| probe(&media.camera))),
        Some(mic.unwrap_or_else(|| probe(&media.microphone))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use diemcau_board::device::DeviceKind;

    #[test]
    fn sim_board_gets_fakes_that_follow_markers() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = diemcau_board::builtin("sim").unwrap();
        let cfg = DevicesConfig {
            sim_devices: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let (cam, mic) = sources(&cfg, &mut p);
        assert_eq!(cam.kind(), DeviceKind::Camera);
        assert_eq!(mic.kind(), DeviceKind::Microphone);
        assert!(!cam.probe().is_present() && !mic.probe().is_present());
        std::fs::write(dir.path().join("camera"), b"").unwrap();
        std::fs::write(dir.path().join("microphone"), b"").unwrap();
        assert!(cam.probe().is_present() && mic.probe().is_present());
        // Without sim_devices they are always there.
        let (cam, mic) = sources(&DevicesConfig::default(), &mut p);
        assert!(cam.probe().is_present() && mic.probe().is_present());
    }

    #[test]
    fn real_boards_get_v4l2_and_alsa_and_no_panic_without_devices() {
        let mut p = diemcau_board::builtin("rpi4").unwrap();
        let (cam, mic) = sources(&DevicesConfig::default(), &mut p);
        assert!(format!("{cam:?}").starts_with("V4l2Camera"), "{cam:?}");
        assert!(format!("{mic:?}").starts_with("AlsaMicrophone"), "{mic:?}");
        // This machine has neither: answers, not panics.
        let _ = (cam.probe(), mic.probe());
    }
}
