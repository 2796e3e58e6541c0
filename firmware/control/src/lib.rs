//! Room controls: remote keys (evdev), HDMI-CEC, GPIO buttons and LEDs.
