//! `diemcau-lab demo`: a local district conference on this machine.
//!
//! Starts a real Janus (Debian's package) and two simulated rooms (test
//! pattern and tone, each room's name drawn on its picture) that join the same
//! VideoRoom. At a desktop each room shows the far room in a window;
//! headless, received frames are written as PNG files and the folder is
//! printed. Everything runs in a private network namespace (Janus on
//! 127.0.0.2), so nothing reaches beyond this machine. Needs root.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use diemcau_tests::*;

#[derive(Parser)]
#[command(name = "diemcau-lab", about = "diemcau's local test district")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Janus plus simulated rooms joining one conference.
    Demo {
        /// How many rooms.
        #[arg(long, default_value_t = 2)]
        rooms: usize,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Where logs and PNG frames go.
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        /// Force PNG output even at a desktop.
        #[arg(long)]
        headless: bool,
        /// Draw latency stamps into the pictures.
        #[arg(long)]
        stamp: bool,
    },
}

const NAMES: &[&str] = &[
    "Điểm cầu xã Tiền Phong",
    "Điểm cầu xã An Bình",
    "Điểm cầu xã Mường Lát",
    "Điểm cầu xã Pù Nhi",
    "Điểm cầu xã Quang Chiểu",
    "Điểm cầu xã Trung Lý",
];

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Demo {
            rooms,
            duration,
            out,
            headless,
            stamp,
        } => demo(rooms.clamp(1, NAMES.len()), duration, out, headless, stamp),
    }
}

fn demo(
    rooms: usize,
    duration: Option<u64>,
    out: PathBuf,
    headless: bool,
    stamp: bool,
) -> Result<()> {
    let desktop = !headless
        && (std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some());
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    println!("diemcau demo: building the room daemon…");
    daemon_binary()?;
    isolate().context("the demo runs Janus in a private network namespace; run it as root")?;

    let room = JanusRoom {
        id: 1234,
        pin: Some("2468".into()),
    };
    let janus = Janus::start(&out.join("janus"), std::slice::from_ref(&room))?;
    println!("Janus VideoRoom {} is up at {}", room.id, janus.ws_url);

    let mut daemons = Vec::new();
    for name in NAMES.iter().take(rooms) {
        let mut spec = RoomSpec::new(name, &janus, &room);
        spec.stamp = stamp;
        spec.video_out = if desktop { "window" } else { "png" }.into();
        let d = Daemon::start(&out, &spec)?;
        println!("room {name:?}: config {}", d.config.display());
        daemons.push(d);
    }
    for d in &daemons {
        d.ctl(CtlCommand::Join)?;
    }
    if !desktop {
        for d in &daemons {
            let frames = d
                .config
                .parent()
                .map(|p| p.join("frames"))
                .unwrap_or_default();
            println!(
                "{}: received frames are written to {}",
                d.name,
                frames.display()
            );
        }
    }
    println!("status: sudo diemcau ctl --socket <room>/ctl.sock status   (Ctrl-C to stop)");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc_handler(move || stop.store(true, std::sync::atomic::Ordering::SeqCst));
    }
    let started = Instant::now();
    let mut next_print = Instant::now() + Duration::from_secs(3);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if duration.is_some_and(|d| started.elapsed() >= Duration::from_secs(d)) {
            break;
        }
        if Instant::now() >= next_print {
            next_print += Duration::from_secs(5);
            for d in &daemons {
                match d.status() {
                    Ok(s) => {
                        let peers: Vec<String> = s
                            .peers
                            .iter()
                            .map(|p| {
                                format!(
                                    "{} {:.0} fps {} frames audio {} latency p50 {}",
                                    p.name,
                                    p.media.fps,
                                    p.media.video_frames,
                                    p.media
                                        .audio_level_db
                                        .map(|d| format!("{d:.0} dBFS"))
                                        .unwrap_or("-".into()),
                                    p.media
                                        .latency_p50_ms
                                        .map(|l| format!("{l} ms"))
                                        .unwrap_or("-".into())
                                )
                            })
                            .collect();
                        println!(
                            "[{:>4}s] {}: {} sending {:.0} kbit/s; receiving: {}",
                            started.elapsed().as_secs(),
                            d.name,
                            s.state,
                            s.send_bitrate_kbps,
                            if peers.is_empty() {
                                "-".into()
                            } else {
                                peers.join("; ")
                            }
                        );
                    }
                    Err(e) => println!("{}: {e:#}", d.name),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("stopping");
    for d in &mut daemons {
        d.stop();
    }
    drop(janus);
    println!("logs and frames are in {}", out.display());
    Ok(())
}

/// Runs `f` on SIGINT/SIGTERM (a small thread waiting on a signal fd-free
/// loop: the flag is polled by the demo loop).
fn ctrlc_handler(f: impl Fn() + Send + 'static) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            f();
        })
    });
    Ok(())
}
