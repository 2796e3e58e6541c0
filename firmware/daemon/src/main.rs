//! `diemcau`: the room daemon and its control client.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use diemcau_daemon::config::{Config, DEFAULT_SOCKET};
use diemcau_daemon::ctl::{self, Command};

#[derive(Parser)]
#[command(
    name = "diemcau",
    version,
    about = "diemcau: a commune's bridge point into the district conference"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the room daemon.
    Run {
        /// The room's configuration file.
        #[arg(long, short, default_value = "/etc/diemcau/room.toml")]
        config: PathBuf,
    },
    /// Check that this board can capture and encode: encodes a few frames
    /// with the board's chosen encoder and prints a report.
    SelfTest {
        /// Board profile to test (default: detected).
        #[arg(long, default_value = "auto")]
        board: String,
        /// Frames to encode.
        #[arg(long, default_value_t = 30)]
        frames: u32,
    },
    /// Check a configuration file and exit.
    CheckConfig { config: PathBuf },
    /// Talk to a running daemon.
    Ctl {
        /// The daemon's control socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print status as JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Action,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum Action {
    /// Join the conference.
    Join,
    /// Leave the conference.
    Leave,
    /// Join if idle, leave if in a call (the remote's OK button).
    Toggle,
    /// Mute or unmute the microphone of the call (the remote's Mute key).
    Mute,
    /// Speaker one step (10 %) louder (the remote's Volume +).
    VolumeUp,
    /// Speaker one step (10 %) quieter (the remote's Volume −).
    VolumeDown,
    /// Show the status screen for a while (the remote's Home key).
    Home,
    /// Run the pre-meeting self-test (camera, speaker and microphone,
    /// district server, Janus) and print each check; exit 1 if one fails.
    Selftest,
    /// Show state, room, peers and call statistics.
    Status,
}

fn print_error(e: &dyn std::error::Error) {
    eprintln!("diemcau: error: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        eprintln!("  caused by: {s}");
        src = s.source();
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DIEMCAU_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&e);
            return ExitCode::FAILURE;
        }
    };
    match cli.cmd {
        Cmd::Run { config } => {
            init_logging();
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    print_error(&e);
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(diemcau_daemon::run::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    print_error(&e);
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::SelfTest { board, frames } => {
            init_logging();
            match diemcau_daemon::run::self_test(&board, frames) {
                Ok(r) => {
                    println!(
                        "self-test ok: {} on board {}, encoder {}: {} frames, {} bytes in {} ms",
                        r.gstreamer,
                        r.board,
                        r.encoder,
                        r.frames_encoded,
                        r.encoded_bytes,
                        r.elapsed_ms
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    print_error(&e);
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok (room {:?}, board {}, conference {} room {})",
                    config.display(),
                    c.room_name,
                    c.board,
                    c.janus_url,
                    c.room_id
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                print_error(&e);
                ExitCode::from(2)
            }
        },
        Cmd::Ctl {
            socket,
            json,
            action,
        } => {
            let cmd = match action {
                Action::Join => Command::Join,
                Action::Leave => Command::Leave,
                Action::Toggle => Command::Toggle,
                Action::Mute => Command::Mute,
                Action::VolumeUp => Command::VolumeUp,
                Action::VolumeDown => Command::VolumeDown,
                Action::Home => Command::Home,
                Action::Selftest => Command::SelfTest,
                Action::Status => Command::Status,
            };
            match rt.block_on(ctl::request(&socket, cmd)) {
                Ok(status) => {
                    if json {
                        match serde_json::to_string_pretty(&status) {
                            Ok(s) => println!("{s}"),
                            Err(e) => {
                                print_error(&e);
                                return ExitCode::FAILURE;
                            }
                        }
                    } else if matches!(action, Action::Selftest)
                        && let Some(r) = &status.self_test
                    {
                        print!("{}", diemcau_daemon::selftest::render(r));
                    } else {
                        println!("{}", ctl::render(&status));
                    }
                    let failed = status.self_test.as_ref().is_some_and(|r| !r.passed);
                    if matches!(action, Action::Selftest) && failed {
                        return ExitCode::FAILURE;
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    print_error(&e);
                    ExitCode::FAILURE
                }
            }
        }
    }
}
