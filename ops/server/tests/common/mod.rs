//! Shared test harness: an ops server on port 0 with its own store, an
//! admin HTTP client, and simulated devices (real agents with temp state).
#![allow(dead_code)]

pub mod janus;

use std::net::SocketAddr;
use std::time::Duration;

use diemcau_agent::{Agent, AgentConfig, AgentEvent};
use diemcau_ops::{RunningServer, ServerConfig, Store, admin};
use serde_json::Value;
use tokio::sync::mpsc;

pub const ADMIN: &str = "can-bo";
pub const PASSWORD: &str = "mat-khau-rat-dai-2026";

/// Which store a test runs on.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite,
    /// A fresh database on the server in `DIEMCAU_TEST_PG_URL`.
    Postgres,
}

/// Store URLs to run store tests against: SQLite always, PostgreSQL when
/// `DIEMCAU_TEST_PG_URL` is set (else a notice is printed).
pub fn backends() -> Vec<Db> {
    if std::env::var("DIEMCAU_TEST_PG_URL").is_ok() {
        vec![Db::Sqlite, Db::Postgres]
    } else {
        eprintln!("notice: DIEMCAU_TEST_PG_URL unset: PostgreSQL store tests skipped");
        vec![Db::Sqlite]
    }
}

/// A database URL for one test (a new SQLite file or PostgreSQL database).
pub async fn db_url(db: &Db, dir: &std::path::Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("ops.db").display()),
        Db::Postgres => {
            let base = std::env::var("DIEMCAU_TEST_PG_URL").expect("DIEMCAU_TEST_PG_URL");
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&base)
                .await
                .expect("connect to DIEMCAU_TEST_PG_URL");
            let name = format!(
                "diemcau_test_{}",
                diemcau_ops::util::random_id("db", 10).replace("db_", "")
            );
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .expect("create test database");
            pool.close().await;
            let (head, tail) = match base.find('?') {
                Some(i) => base.split_at(i),
                None => (base.as_str(), ""),
            };
            let cut = head
                .rfind('/')
                .filter(|&i| i > "postgres://".len())
                .unwrap_or(head.len());
            format!("{}/{name}{tail}", &head[..cut])
        }
    }
}

pub struct Ops {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub addr: SocketAddr,
    pub db_url: String,
    pub http: reqwest::Client,
    pub config: ServerConfig,
}

/// Options of a test server.
pub fn config(db_url: &str) -> ServerConfig {
    let mut c = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), db_url);
    c.heartbeat_interval_s = 1;
    c.offline_after_s = 3;
    c
}

impl Ops {
    /// Starts a server on SQLite with an admin and communes `xa-a`, `xa-b`.
    pub async fn start() -> Ops {
        Self::start_with(Db::Sqlite, |_| {}).await
    }

    pub async fn start_with(db: Db, tweak: impl FnOnce(&mut ServerConfig)) -> Ops {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_url = db_url(&db, dir.path()).await;
        let store = Store::connect(&db_url).await.expect("store");
        admin::create_admin(&store, ADMIN, Some(PASSWORD))
            .await
            .expect("admin");
        admin::add_commune(&store, "xa-a", "Xã Tân Lập")
            .await
            .expect("commune");
        admin::add_commune(&store, "xa-b", "Xã Hòa Bình")
            .await
            .expect("commune");
        store.close().await;
        let mut cfg = config(&db_url);
        tweak(&mut cfg);
        let server = diemcau_ops::start(cfg.clone()).await.expect("start ops");
        let addr = server.addr;
        Ops {
            url: server.url(),
            addr,
            server: Some(server),
            dir,
            db_url,
            http: reqwest::Client::new(),
            config: cfg,
        }
    }

    /// Stops the server (ops down).
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }

    /// Starts it again on the same address and store.
    pub async fn restart(&mut self) {
        let mut cfg = self.config.clone();
        cfg.listen = self.addr;
        let mut tries = 0;
        let s = loop {
            match diemcau_ops::start(cfg.clone()).await {
                Ok(s) => break s,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("restart: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restart: {e}"),
            }
        };
        self.server = Some(s);
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .basic_auth(ADMIN, Some(PASSWORD))
            .json(&body)
            .send()
            .await
            .expect("admin post")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .basic_auth(ADMIN, Some(PASSWORD))
            .send()
            .await
            .expect("admin get")
    }

    /// A claim token through the admin API.
    pub async fn token(&self, uses: u32, commune: Option<&str>) -> String {
        let r = self
            .post(
                "/api/v1/admin/tokens",
                serde_json::json!({"uses": uses, "expires_in_s": 3600, "commune": commune}),
            )
            .await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.expect("token json");
        v["token"].as_str().expect("token").to_owned()
    }

    /// Config of a simulated device whose provisioning file holds `token`.
    pub fn device_config(&self, name: &str, token: &str, commune: Option<&str>) -> AgentConfig {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("device dir");
        let prov = dir.join("diemcau.toml");
        let mut text = format!(
            "district_url = \"{}\"\nclaim_token = \"{token}\"\n",
            self.url
        );
        if let Some(c) = commune {
            text.push_str(&format!("commune = \"{c}\"\n"));
        }
        std::fs::write(&prov, text).expect("provisioning file");
        let mut cfg = AgentConfig::new(dir.join("state"), prov, &format!("SN-{name}"), "sim");
        cfg.retry_interval = Duration::from_millis(300);
        cfg.heartbeat_interval = Some(Duration::from_millis(500));
        cfg.push_idle_timeout = Duration::from_secs(20);
        cfg
    }
}

/// A simulated device: the agent plus its event stream.
pub struct Device {
    pub agent: Agent,
    pub events: mpsc::Receiver<AgentEvent>,
}

impl Device {
    pub async fn start(cfg: AgentConfig) -> Device {
        let (agent, events) = Agent::start(cfg).await.expect("agent start");
        Device { agent, events }
    }

    /// Waits for an event matching `pred`, failing after `secs`.
    pub async fn wait_for(
        &mut self,
        secs: u64,
        what: &str,
        mut pred: impl FnMut(&AgentEvent) -> bool,
    ) -> AgentEvent {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => {
                    if pred(&ev) {
                        return ev;
                    }
                }
                Ok(None) => panic!("agent event channel closed while waiting for {what}"),
                Err(_) => panic!("timed out after {secs} s waiting for {what}"),
            }
        }
    }

    /// Waits until the agent has a device id and a live push stream.
    pub async fn wait_enrolled(&mut self, ops: &Ops) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(id) = self.agent.device_id()
                && ops
                    .server
                    .as_ref()
                    .is_some_and(|s| s.state.push.is_connected(&id))
            {
                return id;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "device did not enrol and connect"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `f` until it returns `Some`, failing after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn now() -> i64 {
    diemcau_ops::util::now()
}
