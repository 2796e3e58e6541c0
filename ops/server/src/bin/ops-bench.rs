//! `ops-bench`: N simulated devices heartbeating every `interval` against
//! one `diemcau-ops` process on SQLite, over loopback only. Prints p50/p99
//! latency and the server's CPU use. Bounded in time (default 70 s).
//!
//! ```text
//! cargo run --release -p diemcau-ops --bin ops-bench -- --devices 10000 --interval-s 10 --duration-s 70
//! ```
//!
//! The devices are written straight into a fresh SQLite store (enrolment is
//! not what is measured); the server runs as a child process (this binary
//! re-executed with a hidden `serve` argument) so its CPU time is its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use clap::Parser;
use diemcau_agent::{Credentials, OpsClient};
use diemcau_ops::store::DeviceRow;
use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};

#[derive(Debug, Parser)]
struct Args {
    /// Simulated devices.
    #[arg(long, default_value_t = 10_000)]
    devices: u32,
    /// Heartbeat interval of each device, seconds.
    #[arg(long, default_value_t = 10)]
    interval_s: u64,
    /// Total run time, seconds (the first interval is warm-up, not counted).
    #[arg(long, default_value_t = 70)]
    duration_s: u64,
    /// Devices that also keep a push stream (SSE) open.
    #[arg(long, default_value_t = 0)]
    push_streams: u32,
    /// Internal: run the server (used by the bench itself).
    #[arg(long, hide = true)]
    serve: Option<String>,
}

fn device_key(i: u32) -> SigningKey {
    let seed: [u8; 32] = Sha256::digest(format!("bench-device-{i}").as_bytes()).into();
    SigningKey::from_bytes(&seed)
}

fn proc_cpu_s(pid: u32) -> f64 {
    // Fields 14 and 15 of /proc/PID/stat: utime, stime in clock ticks (100/s).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

fn proc_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

async fn serve(db: &str, listen: SocketAddr) -> anyhow::Result<()> {
    let mut cfg = diemcau_ops::ServerConfig::new(listen, db);
    cfg.heartbeat_interval_s = 10;
    let s = diemcau_ops::start(cfg).await?;
    println!("READY {}", s.addr);
    s.wait().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(db) = &args.serve {
        let rt = tokio::runtime::Runtime::new()?;
        return rt.block_on(serve(db, "127.0.0.1:0".parse()?));
    }
    // The load generator gets one worker thread; the server the rest.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.devices > 0 && args.interval_s > 0,
        "--devices and --interval-s must be positive"
    );
    anyhow::ensure!(
        args.duration_s > args.interval_s && args.duration_s <= 900,
        "--duration-s must be > interval and ≤ 900"
    );
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let t0 = Instant::now();
    {
        let store = diemcau_ops::Store::connect(&db).await?;
        diemcau_ops::admin::add_commune(&store, "xa-bench", "Xã Bench").await?;
        let now = diemcau_ops::util::now();
        for i in 0..args.devices {
            let k = device_key(i);
            store
                .insert_device(&DeviceRow {
                    id: format!("dev_bench{i:06}"),
                    serial: format!("BENCH{i:06}"),
                    board: "sim".into(),
                    public_key: base64::engine::general_purpose::STANDARD
                        .encode(k.verifying_key().to_bytes()),
                    token_hash: "bench".into(),
                    commune_id: Some("xa-bench".into()),
                    versions: "{}".into(),
                    enrolled_at: now,
                    revoked_at: None,
                    last_seen: None,
                    state: None,
                    heartbeat: None,
                })
                .await?;
        }
        store.close().await;
    }
    eprintln!("seeded {} devices in {:.1?}", args.devices, t0.elapsed());

    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .arg("--serve")
        .arg(&db)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start server process")?;
    let pid = child.id().context("server pid")?;
    let mut out = tokio::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line),
    )
    .await
    .context("server did not start in 20 s")??;
    let addr = line
        .trim()
        .strip_prefix("READY ")
        .context("server READY line")?
        .to_owned();
    let base = format!("http://{addr}");

    // One connection pool shared by all simulated devices: a real board has
    // its own connection, but this sandbox allows 20,000 open files per
    // process, and push streams need one connection each.
    let shared = OpsClient::new(&base, None)?;
    let clients: Vec<OpsClient> = (0..args.devices)
        .map(|i| {
            shared.with_credentials(Credentials {
                device_id: format!("dev_bench{i:06}"),
                key: device_key(i),
            })
        })
        .collect();
    let clients = Arc::new(clients);

    // Push streams get their own pool, and all are open before the
    // heartbeat load starts (opening 10,000 signed streams is a start-up
    // storm of its own, not the steady state measured here).
    let push_shared = OpsClient::new(&base, None)?;
    let push_connected = Arc::new(AtomicU64::new(0));
    let push_closed = Arc::new(AtomicU64::new(0));
    let push_gate = Arc::new(tokio::sync::Semaphore::new(64));
    let n_push = args.push_streams.min(args.devices);
    for i in 0..n_push {
        let c = push_shared.with_credentials(Credentials {
            device_id: format!("dev_bench{i:06}"),
            key: device_key(i),
        });
        let (connected, closed, gate) = (
            push_connected.clone(),
            push_closed.clone(),
            push_gate.clone(),
        );
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let r = c
                .signed_request(reqwest::Method::GET, "/api/v1/device/push", Vec::new())
                .send()
                .await;
            drop(permit);
            match r {
                Ok(mut resp) if resp.status().is_success() => {
                    connected.fetch_add(1, Ordering::Relaxed);
                    while let Ok(Some(_)) = resp.chunk().await {}
                }
                _ => {}
            }
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    let t_push = Instant::now();
    while push_connected.load(Ordering::Relaxed) + push_closed.load(Ordering::Relaxed)
        < u64::from(n_push)
    {
        anyhow::ensure!(
            t_push.elapsed() < Duration::from_secs(120),
            "push streams did not open in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if n_push > 0 {
        eprintln!(
            "{} push streams open in {:.1?}",
            push_connected.load(Ordering::Relaxed),
            t_push.elapsed()
        );
    }

    let hb = diemcau_ops_api::Heartbeat {
        state: diemcau_ops_api::DeviceState::Idle,
        versions: [("daemon".to_string(), "0.1.0".to_string())]
            .into_iter()
            .collect(),
        uptime_s: 1000,
        temperature_c: Some(50.0),
        link: diemcau_ops_api::LinkStats {
            kind: Some("ethernet".into()),
            signal_dbm: None,
            rtt_ms: Some(3),
            quality_pct: Some(90),
        },
        call: None,
        self_test: None,
    };
    let hb = Arc::new(hb);
    let interval = Duration::from_secs(args.interval_s);
    let warmup_end = Instant::now() + interval;
    let end = Instant::now() + Duration::from_secs(args.duration_s);
    let lat = Arc::new(std::sync::Mutex::new(Vec::<u32>::with_capacity(
        (u64::from(args.devices) * args.duration_s / args.interval_s) as usize,
    )));
    let errors = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(2000));
    let start = Instant::now();
    let mut cpu_at_warmup: Option<(f64, Instant)> = None;
    let step = interval.as_secs_f64() / f64::from(args.devices);
    let mut n: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let due = start + Duration::from_secs_f64(n as f64 * step);
        if due >= end {
            break;
        }
        if cpu_at_warmup.is_none() && due >= warmup_end {
            cpu_at_warmup = Some((proc_cpu_s(pid), Instant::now()));
        }
        tokio::time::sleep_until(due.into()).await;
        let i = (n % u64::from(args.devices)) as usize;
        let counted = due >= warmup_end;
        let (c, hb, lat, errors) = (clients[i].clone(), hb.clone(), lat.clone(), errors.clone());
        let permit = in_flight.clone().acquire_owned().await?;
        tasks.spawn(async move {
            let t = Instant::now();
            let r = c.heartbeat(&hb).await;
            let us = t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            drop(permit);
            if r.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            } else if counted {
                lat.lock().unwrap_or_else(|p| p.into_inner()).push(us);
            }
        });
        while tasks.try_join_next().is_some() {}
        n += 1;
    }
    while tasks.join_next().await.is_some() {}
    let (cpu0, t_w) = cpu_at_warmup.unwrap_or((0.0, start));
    let wall = t_w.elapsed().as_secs_f64();
    let server_cpu = (proc_cpu_s(pid) - cpu0) / wall * 100.0;
    let rss = proc_rss_mb(pid);
    let self_cpu = proc_cpu_s(std::process::id());
    let _ = child.start_kill();
    let mut l = lat.lock().unwrap_or_else(|p| p.into_inner()).clone();
    l.sort_unstable();
    let errs = errors.load(Ordering::Relaxed);
    let push_closed = push_closed.load(Ordering::Relaxed);
    println!(
        "ops-bench: {} devices, heartbeat every {} s, {} s run ({} s warm-up not counted), {} push streams",
        args.devices,
        args.interval_s,
        args.duration_s,
        args.interval_s,
        args.push_streams.min(args.devices)
    );
    if args.push_streams > 0 {
        println!("push streams closed early: {push_closed}");
    }
    println!(
        "requests measured: {} ({:.0}/s), errors: {}",
        l.len(),
        l.len() as f64 / wall,
        errs
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        pct(&l, 0.50),
        pct(&l, 0.90),
        pct(&l, 0.99),
        pct(&l, 0.999),
        pct(&l, 1.0)
    );
    println!(
        "server CPU: {server_cpu:.1}% of one core (measured window), RSS {rss:.0} MB; load generator CPU total {self_cpu:.1} s"
    );
    let p99 = pct(&l, 0.99);
    println!(
        "target p99 <= 50 ms: {}",
        if p99 <= 50.0 && errs == 0 {
            "MET"
        } else {
            "NOT MET"
        }
    );
    Ok(())
}
