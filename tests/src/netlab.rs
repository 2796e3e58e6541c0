//! A shaped network path between one room and Janus, on loopback addresses
//! only.
//!
//! [`isolate`](crate::isolate) puts everything in one namespace, where all
//! traffic between 127.0.0.x addresses crosses `lo` and no queueing
//! discipline or filter on the veth ever sees it. A [`Netlab`] instead makes
//! two named namespaces (`ip netns add`, unique per lab, deleted on drop)
//! joined by one veth pair:
//!
//! ```text
//!  ns <id>j  "janus side"                      ns <id>r  "room side"
//!  ┌───────────────────────────────┐           ┌──────────────────────────┐
//!  │ Janus        127.0.0.2        │  dcau0    │ dcroom0  127.0.0.3       │
//!  │ clean rooms  (via lo)         ├───────────┤ shaped room's daemon     │
//!  │ tbf + nft loss on dcau0       │   veth    │ tbf + nft loss on dcroom0│
//!  └───────────────────────────────┘           └──────────────────────────┘
//! ```
//!
//! 127/8 is made routable between the two: `route_localnet=1` on the
//! veths (the kernel otherwise drops 127.x arriving on a non-loopback device
//! as a martian), the local table's `127.0.0.0/8 dev lo` route is deleted so
//! only 127.0.0.1 stays local, and each side gets a /32 host route to the
//! other through the veth. IPv6 is off on the veths so every candidate is a
//! 127.x one. Nothing in either namespace can reach beyond them.
//!
//! The Janus side's veth is called `dcau0` and carries 127.0.0.2, the names
//! [`Janus::start`](crate::Janus::start) writes into `janus.jcfg`
//! (`ice_enforce_list`, `interface`), so the harness's Janus and [`Daemon`]
//! helpers are reused unchanged: [`Netns::enter`] moves the calling thread
//! into a namespace while they spawn their process (a child inherits the
//! network namespace of the thread that forks it), then moves it back. The
//! control sockets are filesystem Unix sockets, reachable from any network
//! namespace.
//!
//! [`Link`] shapes the veth in both directions: `tbf` on the egress of each
//! end (bandwidth), and an nftables `numgen random mod 100 < N drop` rule on
//! the input hook of each namespace (random loss, invisible to the sender as
//! on a real link; there is no netem in this kernel). [`Link::cut`] drops
//! everything, as a dead radio link does (no error reaches the sockets).
//!
//! [`Daemon`]: crate::Daemon

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

use crate::{Daemon, JANUS_IP, Janus, JanusRoom, RoomSpec, run};

/// The shaped room's address.
pub const ROOM_IP: &str = "127.0.0.3";
/// The veth end in the Janus namespace (the name `janus.jcfg` enforces).
pub const JANUS_DEV: &str = crate::DEV;
/// The veth end in the room namespace.
pub const ROOM_DEV: &str = "dcroom0";
/// Prefix of every namespace a lab makes: `dcl<pid>n<k>[jr]`.
const NS_PREFIX: &str = "dcl";
/// nftables table holding the loss rules in each namespace.
const NFT_TABLE: &str = "dclink";

static LABS: AtomicU32 = AtomicU32::new(0);

/// Feeds `script` to `nft -f -` inside namespace `ns`.
fn nft(ns: &str, script: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft (apt-get install nftables)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns} failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A named network namespace (`/run/netns/NAME`), deleted on drop.
pub struct Netns {
    name: String,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "netns {}", self.name)
    }
}

impl Netns {
    fn create(name: &str) -> Result<Netns> {
        run("ip", &["netns", "add", name]).context("the link tests need root")?;
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `cmd args` inside the namespace and returns its output.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", &self.name, cmd];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `ip -n NAME args`.
    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `f` with the calling thread in this namespace, then moves the
    /// thread back (also when `f` panics). Processes spawned by `f` stay in
    /// the namespace for their whole life.
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        struct Back(File);
        impl Drop for Back {
            fn drop(&mut self) {
                if let Err(e) = setns(&self.0, CloneFlags::CLONE_NEWNET) {
                    // Staying in a lab namespace would silently move the
                    // rest of the test there: fail loudly instead.
                    panic!("cannot return to the original network namespace: {e}");
                }
            }
        }
        let home = File::open("/proc/thread-self/ns/net").context("own network namespace")?;
        let target = File::open(Path::new("/run/netns").join(&self.name))
            .with_context(|| format!("{self:?} is gone"))?;
        setns(&target, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("cannot enter {self:?}"))?;
        let _back = Back(home);
        Ok(f())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// How the link between the room and Janus behaves.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Shape {
    /// Bandwidth of each direction in kbit/s; `None`: unshaped.
    pub kbit: Option<u32>,
    /// Random loss of each direction, percent (0..=100).
    pub loss_percent: u8,
    /// Everything dropped in both directions.
    pub cut: bool,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cut {
            return write!(f, "cut");
        }
        match self.kbit {
            Some(k) if k >= 1000 && k % 1000 == 0 => write!(f, "{} Mbit/s", k / 1000)?,
            Some(k) => write!(f, "{k} kbit/s")?,
            None => write!(f, "unshaped")?,
        }
        if self.loss_percent > 0 {
            write!(f, ", {} % loss", self.loss_percent)?;
        }
        Ok(())
    }
}

/// The shapeable veth pair between the two namespaces of a [`Netlab`].
pub struct Link {
    /// (namespace, its veth end), one per direction's sender.
    ends: [(String, &'static str); 2],
    shape: Mutex<Shape>,
}

impl Link {
    /// Limits both directions to `kbit` kbit/s with `loss_percent` % random
    /// loss each (and lifts a cut).
    pub fn set(&self, kbit: u32, loss_percent: u8) -> Result<()> {
        self.apply(Shape {
            kbit: Some(kbit),
            loss_percent,
            cut: false,
        })
    }

    /// Removes all shaping: a clean link.
    pub fn clear(&self) -> Result<()> {
        self.apply(Shape::default())
    }

    /// Drops every packet in both directions, silently (as a dead link).
    pub fn cut(&self) -> Result<()> {
        let s = Shape {
            cut: true,
            ..self.shape()
        };
        self.apply(s)
    }

    /// Ends a cut; the shaping in force before it stays.
    pub fn restore(&self) -> Result<()> {
        let s = Shape {
            cut: false,
            ..self.shape()
        };
        self.apply(s)
    }

    /// The shape now in force.
    pub fn shape(&self) -> Shape {
        *self.shape.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `shape` to both ends.
    pub fn apply(&self, shape: Shape) -> Result<()> {
        if shape.loss_percent > 100 {
            bail!("loss {} % is over 100 %", shape.loss_percent);
        }
        let mut cur = self.shape.lock().unwrap_or_else(|e| e.into_inner());
        for (ns, dev) in &self.ends {
            let exec = |args: &[&str]| {
                let mut all = vec!["netns", "exec", ns.as_str()];
                all.extend_from_slice(args);
                run("ip", &all)
            };
            match shape.kbit {
                Some(kbit) => {
                    let (burst, limit) = tbf_sizes(kbit);
                    exec(&[
                        "tc",
                        "qdisc",
                        "replace",
                        "dev",
                        dev,
                        "root",
                        "tbf",
                        "rate",
                        &format!("{kbit}kbit"),
                        "burst",
                        &burst.to_string(),
                        "limit",
                        &limit.to_string(),
                    ])?;
                }
                None if cur.kbit.is_some() => {
                    exec(&["tc", "qdisc", "del", "dev", dev, "root"])?;
                }
                None => {}
            }
            let rule = if shape.cut {
                format!("add rule inet {NFT_TABLE} in iifname \"{dev}\" counter drop\n")
            } else if shape.loss_percent > 0 {
                format!(
                    "add rule inet {NFT_TABLE} in iifname \"{dev}\" numgen random mod 100 < {} counter drop\n",
                    shape.loss_percent
                )
            } else {
                String::new()
            };
            let script = format!("flush chain inet {NFT_TABLE} in\n{rule}");
            nft(ns, &script)?;
        }
        *cur = shape;
        Ok(())
    }

    /// Packets dropped by the loss/cut rules so far, both directions
    /// (counters restart at every change of shape).
    pub fn dropped_packets(&self) -> u64 {
        self.ends
            .iter()
            .filter_map(|(ns, _)| {
                run(
                    "ip",
                    &[
                        "netns", "exec", ns, "nft", "list", "chain", "inet", NFT_TABLE, "in",
                    ],
                )
                .ok()
            })
            .flat_map(|text| {
                text.split_whitespace()
                    .collect::<Vec<_>>()
                    .windows(2)
                    .filter(|w| w[0] == "packets")
                    .filter_map(|w| w[1].parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}

/// Token bucket size and queue limit (bytes) for `kbit`: a bucket of about
/// 20 ms of traffic (at least two full-size packets) and a queue of about
/// 150 ms, like a modest radio or DSL modem buffer.
fn tbf_sizes(kbit: u32) -> (u32, u32) {
    let bytes_per_s = kbit.saturating_mul(1000) / 8;
    let burst = (bytes_per_s / 50).max(3_200);
    let limit = (bytes_per_s * 3 / 20).max(burst + 3_000);
    (burst, limit)
}

/// Two namespaces joined by a shapeable veth: Janus (and any clean rooms)
/// on one side, the room under test on the other.
pub struct Netlab {
    pub janus_ns: Netns,
    pub room_ns: Netns,
    pub link: Link,
}

impl Netlab {
    /// Builds the topology described in the module documentation. Needs
    /// root. Namespaces left by earlier, killed runs are removed first.
    pub fn new() -> Result<Netlab> {
        remove_stale_namespaces();
        let id = format!(
            "{NS_PREFIX}{}n{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let janus_ns = Netns::create(&format!("{id}j"))?;
        let room_ns = Netns::create(&format!("{id}r"))?;
        run(
            "ip",
            &[
                "link",
                "add",
                JANUS_DEV,
                "netns",
                &janus_ns.name,
                "type",
                "veth",
                "peer",
                "name",
                ROOM_DEV,
                "netns",
                &room_ns.name,
            ],
        )?;
        for (ns, dev, me, other) in [
            (&janus_ns, JANUS_DEV, JANUS_IP, ROOM_IP),
            (&room_ns, ROOM_DEV, ROOM_IP, JANUS_IP),
        ] {
            ns.exec(
                "sysctl",
                &[
                    "-qw",
                    "net.ipv4.conf.all.route_localnet=1",
                    &format!("net.ipv4.conf.{dev}.route_localnet=1"),
                    &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
                ],
            )?;
            // Only 127.0.0.1 stays local to `lo`; other 127.x go by route.
            ns.ip(&[
                "route",
                "del",
                "local",
                "127.0.0.0/8",
                "dev",
                "lo",
                "table",
                "local",
            ])?;
            ns.ip(&["addr", "add", &format!("{me}/32"), "dev", dev])?;
            ns.ip(&["link", "set", dev, "up"])?;
            ns.ip(&[
                "route",
                "add",
                &format!("{other}/32"),
                "dev",
                dev,
                "src",
                me,
            ])?;
            // Multicast would go out of the veth, where nothing answers.
            ns.ip(&["route", "add", "224.0.0.0/4", "dev", dev])?;
            nft(
                &ns.name,
                &format!(
                    "table inet {NFT_TABLE} {{\n  chain in {{ type filter hook input priority -10; policy accept; }}\n}}\n"
                ),
            )?;
        }
        let link = Link {
            ends: [
                (janus_ns.name.clone(), JANUS_DEV),
                (room_ns.name.clone(), ROOM_DEV),
            ],
            shape: Mutex::new(Shape::default()),
        };
        Ok(Netlab {
            janus_ns,
            room_ns,
            link,
        })
    }

    /// Starts Janus on the Janus side (127.0.0.2).
    pub fn start_janus(&self, dir: &Path, rooms: &[JanusRoom]) -> Result<Janus> {
        self.janus_ns.enter(|| Janus::start(dir, rooms))?
    }

    /// Restarts (kills, then starts) Janus on the Janus side.
    pub fn restart_janus(&self, janus: &mut Janus) -> Result<()> {
        self.janus_ns.enter(|| janus.restart())?
    }

    /// Starts a room daemon behind the shaped link.
    pub fn start_shaped_room(&self, dir: &Path, spec: &RoomSpec) -> Result<Daemon> {
        self.room_ns.enter(|| Daemon::start(dir, spec))?
    }

    /// Starts a room daemon on the Janus side: its media never crosses the
    /// shaped link.
    pub fn start_clean_room(&self, dir: &Path, spec: &RoomSpec) -> Result<Daemon> {
        self.janus_ns.enter(|| Daemon::start(dir, spec))?
    }
}

impl fmt::Debug for Netlab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Netlab({} <-> {}, {})",
            self.janus_ns.name,
            self.room_ns.name,
            self.link.shape()
        )
    }
}

/// Deletes `dcl<pid>n<k>*` namespaces whose process no longer runs (a test
/// killed before its drops ran).
fn remove_stale_namespaces() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('n') else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_sizes_hold_packets_and_scale_with_rate() {
        let (b, l) = tbf_sizes(300);
        assert!(b >= 3_000 && l > b, "{b} {l}");
        let (b2, l2) = tbf_sizes(2_000);
        assert_eq!(b2, 5_000);
        assert_eq!(l2, 37_500);
    }

    #[test]
    fn shape_reads_well() {
        let s = Shape {
            kbit: Some(300),
            loss_percent: 20,
            cut: false,
        };
        assert_eq!(s.to_string(), "300 kbit/s, 20 % loss");
        let s = Shape {
            kbit: Some(2000),
            ..Shape::default()
        };
        assert_eq!(s.to_string(), "2 Mbit/s");
        assert_eq!(Shape { cut: true, ..s }.to_string(), "cut");
        assert_eq!(Shape::default().to_string(), "unshaped");
    }
}
