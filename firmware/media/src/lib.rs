//! GStreamer pipelines: camera and microphone to WebRTC, WebRTC to display and speaker.
