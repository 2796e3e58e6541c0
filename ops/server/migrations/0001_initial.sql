-- diemcau-ops initial schema. Portable between SQLite and PostgreSQL:
-- times are BIGINT unix seconds, booleans are BIGINT 0/1, ids are TEXT.

CREATE TABLE communes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE admins (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE claim_tokens (
    token_hash TEXT PRIMARY KEY,
    commune_id TEXT REFERENCES communes(id),
    uses_left BIGINT NOT NULL,
    uses_total BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    board TEXT NOT NULL,
    public_key TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL,
    commune_id TEXT REFERENCES communes(id),
    versions TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    revoked_at BIGINT,
    last_seen BIGINT,
    state TEXT,
    heartbeat TEXT
);
CREATE INDEX devices_serial ON devices(serial);
CREATE INDEX devices_commune ON devices(commune_id);

CREATE TABLE meetings (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    room_id BIGINT NOT NULL,
    pin TEXT,
    secret TEXT NOT NULL,
    ws_url TEXT NOT NULL,
    urgent BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX meetings_ends ON meetings(ends_at);

CREATE TABLE meeting_communes (
    meeting_id TEXT NOT NULL REFERENCES meetings(id),
    commune_id TEXT NOT NULL REFERENCES communes(id),
    PRIMARY KEY (meeting_id, commune_id)
);
CREATE INDEX meeting_communes_commune ON meeting_communes(commune_id);

CREATE TABLE events (
    device_id TEXT NOT NULL REFERENCES devices(id),
    id TEXT NOT NULL,
    at BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    meeting_id TEXT,
    message TEXT,
    offline BIGINT NOT NULL,
    PRIMARY KEY (device_id, id)
);
CREATE INDEX events_device_at ON events(device_id, at);
