//! The store: devices, communes, claim tokens, admins, meetings, events.
//!
//! One implementation over `sqlx::AnyPool`: SQLite by default (a file made
//! on first run) or PostgreSQL when given a `postgres://` URL. The schema
//! and queries are written in the SQL both accept (`$N` parameters, BIGINT
//! times, 0/1 booleans, `ON CONFLICT DO NOTHING`, `RETURNING`), so the two
//! backends run the same code and the same tests. Migrations are embedded
//! from `ops/server/migrations/` and run at every start.

use std::borrow::Cow;

use diemcau_ops_api::{DeviceEvent, DeviceEventKind, StoredEvent};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Row as _};

/// Migrations compiled into the binary.
const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "initial", include_str!("../migrations/0001_initial.sql"))];

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> futures_util::future::BoxFuture<'s, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(d),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("database query failed: {what}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("{what} already exists")]
    Conflict { what: &'static str },
    #[error("unknown database URL scheme in {0} (expected sqlite:// or postgres://)")]
    Scheme(String),
}

fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Which backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A device row.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    pub id: String,
    pub serial: String,
    pub board: String,
    pub public_key: String,
    pub token_hash: String,
    pub commune_id: Option<String>,
    /// JSON object of versions.
    pub versions: String,
    pub enrolled_at: i64,
    pub revoked_at: Option<i64>,
    pub last_seen: Option<i64>,
    pub state: Option<String>,
    /// JSON of the last heartbeat.
    pub heartbeat: Option<String>,
}

/// A meeting row (with its communes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingRow {
    pub id: String,
    pub title: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub room_id: i64,
    pub pin: Option<String>,
    pub secret: String,
    pub ws_url: String,
    pub urgent: bool,
    pub created_at: i64,
    pub communes: Vec<String>,
}

/// Why a claim token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    Unknown,
    Expired,
    UsedUp,
}

const DEVICE_COLS: &str = "id, serial, board, public_key, token_hash, commune_id, versions, enrolled_at, revoked_at, last_seen, state, heartbeat";
const MEETING_COLS: &str =
    "id, title, starts_at, ends_at, room_id, pin, secret, ws_url, urgent, created_at";

fn device_from(r: &AnyRow) -> Result<DeviceRow, sqlx::Error> {
    Ok(DeviceRow {
        id: r.try_get(0)?,
        serial: r.try_get(1)?,
        board: r.try_get(2)?,
        public_key: r.try_get(3)?,
        token_hash: r.try_get(4)?,
        commune_id: r.try_get(5)?,
        versions: r.try_get(6)?,
        enrolled_at: r.try_get(7)?,
        revoked_at: r.try_get(8)?,
        last_seen: r.try_get(9)?,
        state: r.try_get(10)?,
        heartbeat: r.try_get(11)?,
    })
}

fn meeting_from(r: &AnyRow) -> Result<MeetingRow, sqlx::Error> {
    Ok(MeetingRow {
        id: r.try_get(0)?,
        title: r.try_get(1)?,
        starts_at: r.try_get(2)?,
        ends_at: r.try_get(3)?,
        room_id: r.try_get(4)?,
        pin: r.try_get(5)?,
        secret: r.try_get(6)?,
        ws_url: r.try_get(7)?,
        urgent: r.try_get::<i64, _>(8)? != 0,
        created_at: r.try_get(9)?,
        communes: Vec::new(),
    })
}

impl Store {
    /// Opens (creating an SQLite file if needed) and migrates the database.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url_full) = if url.starts_with("sqlite:") {
            let u = if url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, u)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::Scheme(redact(url)));
        };
        let mut opts = AnyPoolOptions::new()
            .acquire_timeout(std::time::Duration::from_secs(5))
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 });
        if backend == Backend::Sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA busy_timeout = 5000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = opts
            .connect(&url_full)
            .await
            .map_err(|source| StoreError::Open {
                url: redact(url),
                source,
            })?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(q("enable WAL"))?;
        }
        let migrator = Migrator::new(Embedded).await.map_err(StoreError::Migrate)?;
        migrator.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(Store { pool, backend })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ----- admins -----

    /// Adds an admin; `Conflict` if the name is taken.
    pub async fn create_admin(&self, user: &str, hash: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO admins (username, password_hash, created_at) VALUES ($1, $2, $3)")
            .bind(user)
            .bind(hash)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict { what: "admin" }
                } else {
                    q("create admin")(e)
                }
            })?;
        Ok(())
    }

    /// The password hash of an admin.
    pub async fn admin_hash(&self, user: &str) -> Result<Option<String>, StoreError> {
        sqlx::query("SELECT password_hash FROM admins WHERE username = $1")
            .bind(user)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("read admin"))?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()
            .map_err(q("read admin"))
    }

    // ----- communes -----

    /// Adds a commune; `Conflict` if the id is taken.
    pub async fn add_commune(&self, id: &str, name: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO communes (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict { what: "commune" }
                } else {
                    q("add commune")(e)
                }
            })?;
        Ok(())
    }

    /// All communes, by name.
    pub async fn communes(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, name FROM communes ORDER BY name, id")
            .fetch_all(&self.pool)
            .await
            .map_err(q("list communes"))?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(q("list communes"))
    }

    /// One commune's name.
    pub async fn commune_name(&self, id: &str) -> Result<Option<String>, StoreError> {
        sqlx::query("SELECT name FROM communes WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("read commune"))?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()
            .map_err(q("read commune"))
    }

    // ----- claim tokens -----

    /// Stores a claim token by its hash.
    pub async fn create_token(
        &self,
        token_hash: &str,
        uses: u32,
        expires_at: i64,
        commune: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO claim_tokens (token_hash, commune_id, uses_left, uses_total, expires_at, created_at) \
             VALUES ($1, $2, $3, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(commune)
        .bind(i64::from(uses))
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(q("create token"))?;
        Ok(())
    }

    /// Uses a claim token once, atomically. `Ok(Ok(commune))` when accepted.
    pub async fn consume_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Result<Option<String>, TokenRejection>, StoreError> {
        let row = sqlx::query(
            "UPDATE claim_tokens SET uses_left = uses_left - 1 \
             WHERE token_hash = $1 AND uses_left > 0 AND expires_at > $2 RETURNING commune_id",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("consume token"))?;
        if let Some(r) = row {
            return Ok(Ok(r.try_get(0).map_err(q("consume token"))?));
        }
        let row =
            sqlx::query("SELECT uses_left, expires_at FROM claim_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(q("read token"))?;
        Ok(Err(match row {
            None => TokenRejection::Unknown,
            Some(r) => {
                let expires: i64 = r.try_get(1).map_err(q("read token"))?;
                if expires <= now {
                    TokenRejection::Expired
                } else {
                    TokenRejection::UsedUp
                }
            }
        }))
    }

    // ----- devices -----

    /// Inserts a new device.
    pub async fn insert_device(&self, d: &DeviceRow) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO devices ({DEVICE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(&d.id)
        .bind(&d.serial)
        .bind(&d.board)
        .bind(&d.public_key)
        .bind(&d.token_hash)
        .bind(&d.commune_id)
        .bind(&d.versions)
        .bind(d.enrolled_at)
        .bind(d.revoked_at)
        .bind(d.last_seen)
        .bind(&d.state)
        .bind(&d.heartbeat)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict { what: "device key" }
            } else {
                q("insert device")(e)
            }
        })?;
        Ok(())
    }

    /// One device by id.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRow>, StoreError> {
        sqlx::query(&format!("SELECT {DEVICE_COLS} FROM devices WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("read device"))?
            .map(|r| device_from(&r))
            .transpose()
            .map_err(q("read device"))
    }

    /// One device by public key.
    pub async fn device_by_key(&self, public_key: &str) -> Result<Option<DeviceRow>, StoreError> {
        sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices WHERE public_key = $1"
        ))
        .bind(public_key)
        .fetch_optional(&self.pool)
        .await
        .map_err(q("read device"))?
        .map(|r| device_from(&r))
        .transpose()
        .map_err(q("read device"))
    }

    /// All devices.
    pub async fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLS} FROM devices ORDER BY serial, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(q("list devices"))?;
        rows.iter()
            .map(device_from)
            .collect::<Result<_, _>>()
            .map_err(q("list devices"))
    }

    /// Ids of the non-revoked devices of the given communes.
    pub async fn device_ids_in_communes(
        &self,
        communes: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for c in communes {
            let rows =
                sqlx::query("SELECT id FROM devices WHERE commune_id = $1 AND revoked_at IS NULL")
                    .bind(c)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(q("list devices"))?;
            for r in rows {
                out.push(r.try_get(0).map_err(q("list devices"))?);
            }
        }
        Ok(out)
    }

    /// Revokes a device; `false` if unknown.
    pub async fn revoke_device(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let r =
            sqlx::query("UPDATE devices SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(q("revoke device"))?;
        if r.rows_affected() > 0 {
            return Ok(true);
        }
        Ok(self.device(id).await?.is_some())
    }

    /// Revokes the other live identities of a serial (a re-imaged board);
    /// returns their ids.
    pub async fn revoke_serial_except(
        &self,
        serial: &str,
        keep: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "UPDATE devices SET revoked_at = $3 WHERE serial = $1 AND id <> $2 AND revoked_at IS NULL RETURNING id",
        )
        .bind(serial)
        .bind(keep)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(q("revoke serial"))?;
        rows.iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(q("revoke serial"))
    }

    /// Records a heartbeat.
    pub async fn record_heartbeat(
        &self,
        id: &str,
        now: i64,
        state: &str,
        heartbeat_json: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET last_seen = $2, state = $3, heartbeat = $4 WHERE id = $1")
            .bind(id)
            .bind(now)
            .bind(state)
            .bind(heartbeat_json)
            .execute(&self.pool)
            .await
            .map_err(q("record heartbeat"))?;
        Ok(())
    }

    /// Records many heartbeats in one transaction: `(device, at, state, json)`.
    pub async fn record_heartbeats(
        &self,
        batch: &[(String, i64, String, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        for (id, now, state, json) in batch {
            sqlx::query(
                "UPDATE devices SET last_seen = $2, state = $3, heartbeat = $4 WHERE id = $1",
            )
            .bind(id)
            .bind(*now)
            .bind(state)
            .bind(json)
            .execute(&mut *tx)
            .await
            .map_err(q("record heartbeat"))?;
        }
        tx.commit().await.map_err(q("commit heartbeats"))?;
        Ok(())
    }

    /// Marks a device seen (any signed request).
    pub async fn touch(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET last_seen = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(q("touch device"))?;
        Ok(())
    }

    // ----- meetings -----

    /// Inserts a meeting and its communes in one transaction.
    pub async fn insert_meeting(&self, m: &MeetingRow) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        sqlx::query(&format!(
            "INSERT INTO meetings ({MEETING_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&m.id)
        .bind(&m.title)
        .bind(m.starts_at)
        .bind(m.ends_at)
        .bind(m.room_id)
        .bind(&m.pin)
        .bind(&m.secret)
        .bind(&m.ws_url)
        .bind(i64::from(m.urgent))
        .bind(m.created_at)
        .execute(&mut *tx)
        .await
        .map_err(q("insert meeting"))?;
        for c in &m.communes {
            sqlx::query("INSERT INTO meeting_communes (meeting_id, commune_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(&m.id)
                .bind(c)
                .execute(&mut *tx)
                .await
                .map_err(q("insert meeting commune"))?;
        }
        tx.commit().await.map_err(q("commit meeting"))?;
        Ok(())
    }

    async fn with_communes(&self, mut ms: Vec<MeetingRow>) -> Result<Vec<MeetingRow>, StoreError> {
        for m in &mut ms {
            let rows = sqlx::query(
                "SELECT commune_id FROM meeting_communes WHERE meeting_id = $1 ORDER BY commune_id",
            )
            .bind(&m.id)
            .fetch_all(&self.pool)
            .await
            .map_err(q("meeting communes"))?;
            m.communes = rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(q("meeting communes"))?;
        }
        Ok(ms)
    }

    /// Meetings not ended at `now`, by start.
    pub async fn upcoming_meetings(&self, now: i64) -> Result<Vec<MeetingRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {MEETING_COLS} FROM meetings WHERE ends_at > $1 ORDER BY starts_at, id LIMIT 500"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(q("list meetings"))?;
        let ms = rows
            .iter()
            .map(meeting_from)
            .collect::<Result<_, _>>()
            .map_err(q("list meetings"))?;
        self.with_communes(ms).await
    }

    /// Meetings of one commune not ended at `now`, by start.
    pub async fn meetings_for_commune(
        &self,
        commune: &str,
        now: i64,
    ) -> Result<Vec<MeetingRow>, StoreError> {
        let cols: Vec<String> = MEETING_COLS.split(", ").map(|c| format!("m.{c}")).collect();
        let rows = sqlx::query(&format!(
            "SELECT {} FROM meetings m JOIN meeting_communes mc ON mc.meeting_id = m.id \
             WHERE mc.commune_id = $1 AND m.ends_at > $2 ORDER BY m.starts_at, m.id LIMIT 200",
            cols.join(", ")
        ))
        .bind(commune)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(q("list commune meetings"))?;
        let ms = rows
            .iter()
            .map(meeting_from)
            .collect::<Result<_, _>>()
            .map_err(q("list commune meetings"))?;
        self.with_communes(ms).await
    }

    // ----- events -----

    /// Stores events (duplicates by id ignored); returns how many were new.
    pub async fn insert_events(
        &self,
        device: &str,
        events: &[DeviceEvent],
        now: i64,
    ) -> Result<u32, StoreError> {
        let mut tx = self.pool.begin().await.map_err(q("begin"))?;
        let mut stored = 0u32;
        for e in events {
            let r = sqlx::query(
                "INSERT INTO events (device_id, id, at, received_at, kind, meeting_id, message, offline) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .bind(device)
            .bind(&e.id)
            .bind(e.at)
            .bind(now)
            .bind(e.kind.as_str())
            .bind(&e.meeting_id)
            .bind(&e.message)
            .bind(i64::from(e.offline))
            .execute(&mut *tx)
            .await
            .map_err(q("insert event"))?;
            if r.rows_affected() > 0 {
                stored += 1;
            }
        }
        tx.commit().await.map_err(q("commit events"))?;
        Ok(stored)
    }

    /// A device's most recent events, newest first.
    pub async fn recent_events(
        &self,
        device: &str,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, meeting_id, message, offline, received_at FROM events \
             WHERE device_id = $1 ORDER BY at DESC, received_at DESC LIMIT $2",
        )
        .bind(device)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("list events"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: String = r.try_get(2).map_err(q("list events"))?;
            let Some(kind) = DeviceEventKind::parse(&kind) else {
                continue;
            };
            out.push(StoredEvent {
                event: DeviceEvent {
                    id: r.try_get(0).map_err(q("list events"))?,
                    at: r.try_get(1).map_err(q("list events"))?,
                    kind,
                    meeting_id: r.try_get(3).map_err(q("list events"))?,
                    message: r.try_get(4).map_err(q("list events"))?,
                    offline: r.try_get::<i64, _>(5).map_err(q("list events"))? != 0,
                },
                received_at: r.try_get(6).map_err(q("list events"))?,
            });
        }
        Ok(out)
    }
}

/// Hides a password in a database URL for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..s], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
