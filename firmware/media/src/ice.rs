//! Turns libnice's UPnP off for every ICE agent of the process.
//!
//! GStreamer 1.22's `webrtcbin` creates its libnice `NiceAgent` internally and
//! does not expose it, and libnice enables UPnP by default: when gathering,
//! it would send SSDP multicast searches onto the local network to open ports
//! in a router. A commune's board must not do that. `upnp` is a construct
//! property of `NiceAgent`, so every new agent takes the default value of its
//! parameter spec; we set that default to false once, before any agent is
//! created (GLib caches a parameter's default the first time an instance is
//! constructed, so this must run before the first `webrtcbin` exists: we load
//! libnice and register `NiceAgent` ourselves instead of making a `webrtcbin`). The end-to-end tests listen for SSDP on the test network and
//! fail if any is sent.

#![allow(unsafe_code)]

use gst::glib;
use gst::glib::prelude::*;
use gst::glib::translate::ToGlibPtr;

use crate::MediaError;

pub(crate) fn disable_upnp() -> Result<(), MediaError> {
    if gst::ElementFactory::find("webrtcbin").is_none() {
        return Err(MediaError::Init(
            "webrtcbin is not installed (gstreamer1.0-plugins-bad, gstreamer1.0-nice)".into(),
        ));
    }
    let ty = match glib::Type::from_name("NiceAgent") {
        Some(t) => t,
        None => register_nice_agent()?,
    };
    let Some(class) = glib::Class::<glib::Object>::from_type(ty) else {
        return Err(MediaError::Init("cannot load NiceAgent's class".into()));
    };
    let Some(pspec) = class.find_property("upnp") else {
        // A libnice built without UPnP support: nothing to turn off.
        return Ok(());
    };
    let Some(bool_spec) = pspec.downcast_ref::<glib::ParamSpecBoolean>() else {
        return Err(MediaError::Init("NiceAgent:upnp is not a boolean".into()));
    };
    if !pspec.flags().contains(glib::ParamFlags::CONSTRUCT) {
        return Err(MediaError::Init(
            "NiceAgent:upnp is not a construct property; cannot turn UPnP off".into(),
        ));
    }
    let raw: *mut glib::gobject_ffi::GParamSpecBoolean =
        ToGlibPtr::<*const glib::gobject_ffi::GParamSpec>::to_glib_none(bool_spec).0
            as *mut glib::gobject_ffi::GParamSpecBoolean;
    // SAFETY: `raw` points at the class's GParamSpecBoolean for "upnp", which
    // lives as long as the class (for the whole process; `class` holds a
    // reference). GObject reads `default_value` when constructing an
    // instance; we write it before any NiceAgent exists and never again.
    unsafe {
        (*raw).default_value = glib::ffi::GFALSE;
    }
    if bool_spec.default_value() {
        return Err(MediaError::Init("could not turn libnice UPnP off".into()));
    }
    let probe: glib::Object = glib::Object::with_type(ty);
    if probe.property::<bool>("upnp") {
        return Err(MediaError::Init("could not turn libnice UPnP off".into()));
    }
    Ok(())
}

/// Loads libnice and registers its `NiceAgent` type without creating an agent.
fn register_nice_agent() -> Result<glib::Type, MediaError> {
    use glib::translate::FromGlib;
    // SAFETY: loading libnice runs no initialisers beyond GLib's type system
    // hooks; the library stays loaded for the life of the process (it is
    // already a dependency of webrtcbin). `nice_agent_get_type` has the
    // signature `GType (void)`.
    unsafe {
        let lib = libloading::Library::new("libnice.so.10")
            .map_err(|e| MediaError::Init(format!("cannot load libnice: {e}")))?;
        let get_type: libloading::Symbol<unsafe extern "C" fn() -> glib::ffi::GType> = lib
            .get(b"nice_agent_get_type\0")
            .map_err(|e| MediaError::Init(format!("libnice has no nice_agent_get_type: {e}")))?;
        let gtype = get_type();
        std::mem::forget(lib);
        Ok(glib::Type::from_glib(gtype))
    }
}
