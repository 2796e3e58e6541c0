//! `diemcau-ops`: command-line glue around the `diemcau_ops` library.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use diemcau_ops::{ServerConfig, Store, admin, util};

#[derive(Debug, Parser)]
#[command(
    name = "diemcau-ops",
    version,
    about = "diemcau district control plane"
)]
struct Cli {
    /// Database: sqlite://PATH (made on first run) or postgres://...
    #[arg(
        long,
        global = true,
        env = "DIEMCAU_OPS_DB",
        default_value = "sqlite://diemcau-ops.db"
    )]
    db: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the API and the fleet page.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Janus HTTP API, e.g. http://127.0.0.1:8088/janus
        #[arg(long)]
        janus_url: Option<String>,
        /// Janus WebSocket URL handed to devices.
        #[arg(long, default_value = "ws://127.0.0.1:8188/")]
        janus_ws_url: String,
        #[arg(long, default_value_t = 10)]
        heartbeat_interval_s: u32,
        /// Enrolment attempts allowed per minute per address.
        #[arg(long, default_value_t = 30)]
        enrol_per_minute: u32,
        #[command(flatten)]
        mdns: MdnsArgs,
    },
    /// Manage admins.
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Manage claim tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Manage communes.
    Commune {
        #[command(subcommand)]
        cmd: CommuneCmd,
    },
}

/// Zero-touch discovery: boards without a district URL browse for
/// `_diemcau-ops._tcp.local.` on the district network.
#[derive(Debug, clap::Args)]
struct MdnsArgs {
    /// Do not advertise by mDNS (by default the server answers on the
    /// interfaces holding its --listen address; never on loopback).
    #[arg(long)]
    no_mdns: bool,
    /// mDNS instance name; the host is advertised as NAME.local.
    #[arg(long, default_value = "diemcau-ops")]
    mdns_name: String,
    /// Port to advertise (default: the listen port); a TLS proxy's port.
    #[arg(long)]
    mdns_port: Option<u16>,
    /// Tell devices to use https (a TLS proxy in front of this server).
    #[arg(long)]
    mdns_tls: bool,
}

impl MdnsArgs {
    /// Raw flags → settings (`None` with --no-mdns).
    fn settings(self) -> anyhow::Result<Option<diemcau_ops::MdnsSettings>> {
        if self.no_mdns {
            return Ok(None);
        }
        let name = self.mdns_name.trim().to_owned();
        if name.is_empty() || name.len() > 40 || name.chars().any(char::is_control) {
            anyhow::bail!("--mdns-name: expected 1 to 40 printable characters");
        }
        if self.mdns_port == Some(0) {
            anyhow::bail!("--mdns-port: expected a port from 1 to 65535");
        }
        Ok(Some(diemcau_ops::MdnsSettings {
            name,
            port: self.mdns_port,
            tls: self.mdns_tls,
        }))
    }
}

#[derive(Debug, Subcommand)]
enum AdminCmd {
    /// Create an admin. Without --password-stdin a password is generated and printed.
    Create {
        #[arg(long)]
        user: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Create a claim token (printed once).
    Create {
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// e.g. 90m, 24h, 7d
        #[arg(long, default_value = "24h")]
        expires_in: String,
        #[arg(long)]
        commune: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CommuneCmd {
    /// Add a commune.
    Add {
        /// Stable id: a-z 0-9 - (e.g. xa-tan-lap)
        #[arg(long)]
        id: String,
        /// Display name (e.g. "Xã Tân Lập")
        #[arg(long)]
        name: String,
    },
}

fn print_chain(e: &anyhow::Error) {
    eprintln!("error: {e}");
    for c in e.chain().skip(1) {
        eprintln!("  caused by: {c}");
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_chain(&e);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Serve {
            listen,
            janus_url,
            janus_ws_url,
            heartbeat_interval_s,
            enrol_per_minute,
            mdns,
        } => {
            let mut cfg = ServerConfig::new(listen, &cli.db);
            cfg.mdns = mdns.settings()?;
            cfg.janus_url = janus_url;
            cfg.janus_ws_url = janus_ws_url;
            cfg.heartbeat_interval_s = heartbeat_interval_s.clamp(1, 3600);
            cfg.offline_after_s = i64::from(cfg.heartbeat_interval_s) * 3 + 5;
            cfg.enrol_per_minute = enrol_per_minute;
            let server = diemcau_ops::start(cfg).await?;
            println!("listening on http://{}", server.addr);
            // Ctrl-C or SIGTERM (systemd): stop cleanly, mDNS goodbye included.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r?,
                _ = term.recv() => {}
            }
            server.stop().await;
            Ok(())
        }
        Cmd::Admin {
            cmd:
                AdminCmd::Create {
                    user,
                    password_stdin,
                },
        } => {
            let store = Store::connect(&cli.db).await?;
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            let p = admin::create_admin(&store, &user, password.as_deref()).await?;
            if password.is_none() {
                println!("admin {user} created; password: {p}");
            } else {
                println!("admin {user} created");
            }
            Ok(())
        }
        Cmd::Token {
            cmd:
                TokenCmd::Create {
                    uses,
                    expires_in,
                    commune,
                },
        } => {
            let secs = util::parse_duration(&expires_in).ok_or_else(|| {
                anyhow::anyhow!("--expires-in: expected a duration like 90m, 24h or 7d")
            })?;
            let req = diemcau_ops_api::CreateToken {
                uses,
                expires_in_s: secs,
                commune: commune.clone(),
            };
            diemcau_ops_api::Validate::validate(&req)?;
            let store = Store::connect(&cli.db).await?;
            if let Some(c) = &commune
                && store.commune_name(c).await?.is_none()
            {
                anyhow::bail!(
                    "--commune: unknown commune `{c}` (add it with `diemcau-ops commune add`)"
                );
            }
            let t = admin::create_token(&store, uses, secs, commune.as_deref()).await?;
            println!("{}", t.token);
            eprintln!("uses: {}, expires at (unix): {}", t.uses, t.expires_at);
            Ok(())
        }
        Cmd::Commune {
            cmd: CommuneCmd::Add { id, name },
        } => {
            let store = Store::connect(&cli.db).await?;
            let c = admin::add_commune(&store, &id, &name).await?;
            println!("commune {} ({}) added", c.id, c.name);
            Ok(())
        }
    }
}
