//! The TV over HDMI-CEC, as the daemon drives it: one thread owns the
//! adapter ([`CecDevice`]: `/dev/cec0` through [`LinuxCec`], or the
//! folder-backed [`SimCec`] of tests) and runs the TV policy
//! ([`TvControl`]: wake and switch the input on a call or a due meeting,
//! standby after an idle time, answer the TV's questions, take its remote's
//! keys). The run loop tells it what the room does ([`TvEvent`]) and
//! receives the TV remote's keys, which go through the same key policy as
//! any other remote.
//!
//! An adapter that cannot be opened, or fails under us (HDMI board
//! unplugged, driver reloaded), is retried with a backoff from 1 s to 30 s;
//! each loss and each return is logged once, and `ctl status` says why the
//! TV cannot be reached meanwhile.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diemcau_control::cec::{
    CecDevice, CecError, LogicalAddress, PhysicalAddress, TvControl, TvControlConfig, TvOutput,
};
use diemcau_control::cec_linux::LinuxCec;
use diemcau_control::cec_sim::SimCec;
use diemcau_control::keys::KeyEvent;
use tokio::sync::mpsc;

use crate::ctl::TvStatus;

/// Where the CEC adapter is (`[control] cec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CecAdapter {
    /// `/dev/cec0` if the board has it when the daemon starts (the default).
    Auto,
    /// A Linux CEC device node, e.g. `/dev/cec0`.
    Device(PathBuf),
    /// A simulated bus in a folder (`"sim:DIR"`): see [`SimCec`].
    Sim(PathBuf),
}

impl CecAdapter {
    pub fn name(&self) -> String {
        match self {
            CecAdapter::Auto => DEFAULT_DEVICE.into(),
            CecAdapter::Device(p) => p.display().to_string(),
            CecAdapter::Sim(p) => format!("sim:{}", p.display()),
        }
    }

    fn open(&self) -> Result<Box<dyn CecDevice + Send>, CecError> {
        Ok(match self {
            CecAdapter::Auto => Box::new(LinuxCec::open(DEFAULT_DEVICE)?),
            CecAdapter::Device(p) => Box::new(LinuxCec::open(p)?),
            CecAdapter::Sim(p) => Box::new(SimCec::open(p)?),
        })
    }
}

/// The adapter `cec = "auto"` uses.
pub const DEFAULT_DEVICE: &str = "/dev/cec0";

/// The TV is put to standby after this long idle unless configured.
pub const DEFAULT_STANDBY_SECS: u64 = 30 * 60;

/// The validated `[control] cec*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TvConfig {
    pub adapter: CecAdapter,
    /// Standby after this long without a call or a key; `None`: never.
    pub standby_after: Option<Duration>,
    /// Wake the TV when a meeting is about to start, before the room joins.
    pub wake_on_meeting: bool,
}

/// What the room did, for the TV policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TvEvent {
    /// A call starts: TV on, input to us.
    CallStarted,
    /// The room is idle again: the idle clock starts.
    CallEnded,
    /// A scheduled meeting is about to start.
    MeetingDue,
    /// A key on a room remote (not the TV's).
    Activity,
}

/// The TV thread's handle.
pub struct Tv {
    events: Sender<TvEvent>,
    keys: mpsc::Receiver<KeyEvent>,
    status: Arc<Mutex<TvStatus>>,
}

impl Tv {
    /// Tells the TV policy what the room did.
    pub fn send(&self, ev: TvEvent) {
        let _ = self.events.send(ev);
    }

    /// The next key of the TV's remote.
    pub async fn next_key(&mut self) -> Option<KeyEvent> {
        self.keys.recv().await
    }

    pub fn status(&self) -> TvStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The first retry after a failure; doubled up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the physical address is read again (the TV or its input may
/// change under us).
const PHYSICAL_EVERY: Duration = Duration::from_secs(5);
/// How long one receive waits; events from the room wait at most this.
const RECEIVE_SLICE: Duration = Duration::from_millis(50);

/// Starts the TV thread for `cfg` (`None` with `auto` on a board without
/// `/dev/cec0`), announcing `osd_name` in the TV's source list. The thread
/// ends when the returned [`Tv`] is dropped.
pub fn start(cfg: &TvConfig, osd_name: &str) -> Option<Tv> {
    if cfg.adapter == CecAdapter::Auto && !std::path::Path::new(DEFAULT_DEVICE).exists() {
        tracing::info!("no {DEFAULT_DEVICE} on this board: no TV control over HDMI-CEC");
        return None;
    }
    match spawn(cfg.clone(), osd_name) {
        Ok(tv) => Some(tv),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the HDMI-CEC thread; no TV control");
            None
        }
    }
}

fn spawn(cfg: TvConfig, osd_name: &str) -> std::io::Result<Tv> {
    let (ev_tx, ev_rx) = std::sync::mpsc::channel();
    let (key_tx, key_rx) = mpsc::channel(16);
    let status = Arc::new(Mutex::new(TvStatus {
        device: cfg.adapter.name(),
        ..TvStatus::default()
    }));
    let adapter = cfg.adapter.clone();
    let policy = TvControlConfig {
        standby_after: cfg.standby_after,
        wake_on_meeting: cfg.wake_on_meeting,
        osd_name: diemcau_control::cec::sanitize_osd_name(osd_name),
    };
    let st = status.clone();
    std::thread::Builder::new()
        .name("cec".into())
        .spawn(move || {
            run(
                &mut || adapter.open(),
                &adapter.name(),
                policy,
                &ev_rx,
                &key_tx,
                &st,
            )
        })?;
    Ok(Tv {
        events: ev_tx,
        keys: key_rx,
        status,
    })
}

/// Why a session with the adapter ended.
enum End {
    /// The daemon is shutting down.
    Shutdown,
    /// The adapter failed; try again.
    Lost(CecError),
}

/// The room as the TV policy must remember it across adapter sessions.
#[derive(Debug, Default)]
struct Room {
    in_call: bool,
}

/// Opens the adapter with `open`, runs sessions, and retries with a backoff
/// until the event channel closes. Public in the crate for the tests.
pub(crate) fn run(
    open: &mut dyn FnMut() -> Result<Box<dyn CecDevice + Send>, CecError>,
    name: &str,
    policy: TvControlConfig,
    events: &Receiver<TvEvent>,
    keys: &mpsc::Sender<KeyEvent>,
    status: &Mutex<TvStatus>,
) {
    let mut room = Room::default();
    let mut backoff = BACKOFF_MIN;
    let mut last_problem: Option<String> = None;
    // The idle clock runs across sessions: a flaky adapter must not keep
    // the TV awake.
    let mut idle_since = Instant::now();
    loop {
        let opened = open().and_then(|dev| {
            session(
                dev,
                &policy,
                &mut room,
                &mut idle_since,
                events,
                keys,
                status,
            )
        });
        let problem = match opened {
            Ok(End::Shutdown) => return,
            // It worked for a while: try again soon.
            Ok(End::Lost(e)) => {
                let problem = crate::chain(&e);
                backoff = BACKOFF_MIN;
                tracing::warn!(device = name, error = %problem, retry_s = backoff.as_secs(), "HDMI-CEC adapter lost; retrying");
                last_problem = Some(problem.clone());
                problem
            }
            Err(e) => crate::chain(&e),
        };
        {
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            s.connected = false;
            s.active_source = false;
            s.logical_address = None;
            s.problem = Some(problem.clone());
        }
        if last_problem.as_deref() != Some(problem.as_str()) {
            tracing::warn!(device = name, error = %problem, retry_s = backoff.as_secs(), "HDMI-CEC adapter not usable; retrying");
            last_problem = Some(problem);
        } else {
            tracing::debug!(
                device = name,
                retry_s = backoff.as_secs(),
                "HDMI-CEC adapter still not usable"
            );
        }
        // Wait, keeping up with the room meanwhile.
        let until = Instant::now() + backoff;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match events.recv_timeout(left) {
                Ok(ev) => room.note(ev, &mut idle_since),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

impl Room {
    fn note(&mut self, ev: TvEvent, idle_since: &mut Instant) {
        match ev {
            TvEvent::CallStarted => self.in_call = true,
            TvEvent::CallEnded => {
                self.in_call = false;
                *idle_since = Instant::now();
            }
            TvEvent::MeetingDue | TvEvent::Activity => *idle_since = Instant::now(),
        }
    }
}

/// One session with an open adapter, until it fails or the daemon stops.
fn session(
    mut dev: Box<dyn CecDevice + Send>,
    policy: &TvControlConfig,
    room: &mut Room,
    idle_since: &mut Instant,
    events: &Receiver<TvEvent>,
    keys: &mpsc::Sender<KeyEvent>,
    status: &Mutex<TvStatus>,
) -> Result<End, CecError> {
    let own = dev.claim_playback(&policy.osd_name)?;
    let mut physical = dev.physical_address()?;
    let mut tv = TvControl::new(policy.clone(), own, physical, *idle_since);
    if room.in_call {
        // Back after a loss in the middle of a call: make sure the TV shows it.
        tv.call_started(Instant::now());
    }
    tracing::info!(logical = %own, physical = %physical, "HDMI-CEC connected");
    let publish = |tv: &TvControl, physical: PhysicalAddress, own: LogicalAddress| {
        let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
        s.connected = true;
        s.problem = None;
        s.logical_address = Some(own.get());
        s.physical_address = physical.is_valid().then(|| physical.to_string());
        s.active_source = tv.is_active_source();
    };
    publish(&tv, physical, own);
    let mut physical_at = Instant::now();
    loop {
        loop {
            match events.try_recv() {
                Ok(ev) => {
                    let now = Instant::now();
                    room.note(ev, idle_since);
                    match ev {
                        TvEvent::CallStarted => tv.call_started(now),
                        TvEvent::CallEnded => tv.call_ended(now),
                        TvEvent::MeetingDue => tv.meeting_due(now),
                        TvEvent::Activity => tv.user_activity(now),
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Ok(End::Shutdown),
            }
        }
        tv.idle_tick(Instant::now());
        if physical_at.elapsed() >= PHYSICAL_EVERY {
            physical_at = Instant::now();
            let pa = match dev.physical_address() {
                Ok(pa) => pa,
                Err(e) => return Ok(End::Lost(e)),
            };
            if pa != physical {
                tracing::info!(from = %physical, to = %pa, "HDMI-CEC physical address changed");
                physical = pa;
                tv.set_physical_address(pa);
            }
        }
        while let Some(out) = tv.poll_output() {
            match out {
                TvOutput::Transmit(msg) => match dev.transmit(&msg) {
                    Ok(()) => tracing::debug!(%msg, "CEC sent"),
                    Err(e @ CecError::Io { .. }) => return Ok(End::Lost(e)),
                    // The TV is off the bus or busy: not the adapter's fault.
                    Err(e) => tracing::info!(%msg, error = %e, "CEC message not delivered"),
                },
                TvOutput::Key(k) => {
                    tracing::info!(key = %k.key, "TV remote");
                    *idle_since = Instant::now();
                    if keys.blocking_send(k).is_err() {
                        return Ok(End::Shutdown);
                    }
                }
            }
        }
        publish(&tv, physical, own);
        match dev.receive(RECEIVE_SLICE) {
            Ok(Some(msg)) => {
                tracing::debug!(%msg, "CEC received");
                tv.message_received(Instant::now(), &msg);
            }
            Ok(None) => {}
            Err(e @ CecError::Io { .. }) => return Ok(End::Lost(e)),
            Err(e) => tracing::debug!(error = %e, "CEC receive"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diemcau_control::cec::{CecCommand, CecMessage, FakeCec};
    use diemcau_control::keys::RemoteKey;

    /// A fake adapter that can be unplugged: while `gone`, opening fails.
    fn opener(
        fake: &FakeCec,
        gone: &Arc<Mutex<bool>>,
    ) -> impl FnMut() -> Result<Box<dyn CecDevice + Send>, CecError> + use<> {
        let (fake, gone) = (fake.clone(), gone.clone());
        move || {
            if *gone.lock().unwrap() {
                return Err(CecError::Io {
                    op: "open",
                    device: "/dev/cec0".into(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
            Ok(Box::new(fake.clone()))
        }
    }

    fn wait(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn commands(fake: &FakeCec) -> Vec<CecCommand> {
        fake.sent()
            .iter()
            .filter_map(|m| m.command().ok())
            .collect()
    }

    #[test]
    fn call_wakes_the_tv_keys_come_back_idle_sends_standby() {
        let fake = FakeCec::new(PhysicalAddress(0x1000));
        let gone = Arc::new(Mutex::new(false));
        let (ev_tx, ev_rx) = std::sync::mpsc::channel();
        let (key_tx, mut key_rx) = mpsc::channel(16);
        let status = Arc::new(Mutex::new(TvStatus::default()));
        let policy = TvControlConfig {
            standby_after: Some(Duration::from_millis(300)),
            wake_on_meeting: true,
            osd_name: "Diem cau".into(),
        };
        let st = status.clone();
        let mut open = opener(&fake, &gone);
        let t = std::thread::spawn(move || run(&mut open, "fake", policy, &ev_rx, &key_tx, &st));
        wait("connected", || status.lock().unwrap().connected);
        assert_eq!(status.lock().unwrap().logical_address, Some(4));
        fake.take_sent();

        ev_tx.send(TvEvent::CallStarted).unwrap();
        wait("image view on + active source", || {
            let c = commands(&fake);
            c.contains(&CecCommand::ImageViewOn)
                && c.contains(&CecCommand::ActiveSource(PhysicalAddress(0x1000)))
        });
        wait("active source in status", || {
            status.lock().unwrap().active_source
        });
        fake.inject(CecMessage::from_hex("04:44:00").unwrap());
        fake.inject(CecMessage::from_hex("04:45").unwrap());
        let k = key_rx.blocking_recv().unwrap();
        assert_eq!(k, KeyEvent::pressed(RemoteKey::Ok));
        // In a call: no standby however long.
        std::thread::sleep(Duration::from_millis(500));
        assert!(!commands(&fake).contains(&CecCommand::Standby));
        let ended = Instant::now();
        ev_tx.send(TvEvent::CallEnded).unwrap();
        wait("standby", || commands(&fake).contains(&CecCommand::Standby));
        assert!(ended.elapsed() >= Duration::from_millis(300));
        drop(ev_tx);
        t.join().unwrap();
    }

    #[test]
    fn an_adapter_that_vanishes_is_retried_and_the_call_shown_again() {
        let fake = FakeCec::new(PhysicalAddress(0x2000));
        let gone = Arc::new(Mutex::new(true));
        let (ev_tx, ev_rx) = std::sync::mpsc::channel();
        let (key_tx, _key_rx) = mpsc::channel(16);
        let status = Arc::new(Mutex::new(TvStatus::default()));
        let st = status.clone();
        let mut open = opener(&fake, &gone);
        let policy = TvControlConfig {
            standby_after: None,
            ..TvControlConfig::default()
        };
        let t = std::thread::spawn(move || run(&mut open, "fake", policy, &ev_rx, &key_tx, &st));
        wait("problem reported", || {
            status
                .lock()
                .unwrap()
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("open"))
        });
        // The room starts a call while the adapter is away...
        ev_tx.send(TvEvent::CallStarted).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(fake.sent().is_empty());
        // ...and the adapter comes back within the first backoff.
        *gone.lock().unwrap() = false;
        wait("connected again", || status.lock().unwrap().connected);
        wait("TV woken for the call", || {
            commands(&fake).contains(&CecCommand::ImageViewOn)
        });
        assert_eq!(status.lock().unwrap().problem, None);
        assert_eq!(
            status.lock().unwrap().physical_address.as_deref(),
            Some("2.0.0.0")
        );
        drop(ev_tx);
        t.join().unwrap();
    }
}
