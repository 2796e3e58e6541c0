//! Two rooms in one conference, through a real Janus.

use std::time::Duration;

use diemcau_tests::*;

#[test]
fn two_rooms_see_and_hear_each_other() -> anyhow::Result<()> {
    isolate()?;
    let dir = scratch("two-rooms")?;
    let room = JanusRoom {
        id: 1234,
        pin: Some("4321".into()),
    };
    let _janus = Janus::start(&dir.path().join("janus"), std::slice::from_ref(&room))?;
    let a = Daemon::start(dir.path(), &RoomSpec::new("Xa A", &_janus, &room))?;
    let b = Daemon::start(dir.path(), &RoomSpec::new("Xa B", &_janus, &room))?;
    a.ctl(CtlCommand::Join)?;
    b.ctl(CtlCommand::Join)?;
    let sa = a.wait_for("60 frames from B", Duration::from_secs(30), |s| {
        peer(s, "Xa B").is_some_and(|p| p.media.video_frames >= 60)
    })?;
    println!("{sa:#?}");
    Ok(())
}
