-- Devices: enrolled agents and agentless (SSH) entries. Revoked devices keep their row so an
-- identity is never reused; reads hide them.
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('agent', 'agentless')),
    ssh_address TEXT,
    ssh_user TEXT,
    hostname TEXT,
    agent_version TEXT,
    created_at_ms BIGINT NOT NULL,
    last_seen_ms BIGINT,
    revoked_at_ms BIGINT,
    high_water_mark BIGINT NOT NULL DEFAULT 0,
    spool_dropped_batches BIGINT NOT NULL DEFAULT 0,
    spool_dropped_samples BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX devices_live_name ON devices (name) WHERE revoked_at_ms IS NULL;

CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    used_at_ms BIGINT,
    used_by_device TEXT
);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'operate', 'admin')),
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT,
    revoked_at_ms BIGINT
);

CREATE TABLE issued_certificates (
    serial TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    issued_at_ms BIGINT NOT NULL,
    not_after_ms BIGINT NOT NULL
);

-- Metric series: a name plus canonical JSON labels, per device.
CREATE TABLE series (
    id BIGSERIAL PRIMARY KEY,
    device_id TEXT NOT NULL,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (device_id, name, labels)
);

CREATE TABLE samples (
    series_id BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (series_id, ts_ms)
);

CREATE TABLE rollups_5m (
    series_id BIGINT NOT NULL,
    bucket_ms BIGINT NOT NULL,
    count BIGINT NOT NULL,
    sum DOUBLE PRECISION NOT NULL,
    min DOUBLE PRECISION NOT NULL,
    max DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (series_id, bucket_ms)
);

CREATE TABLE rollups_1h (
    series_id BIGINT NOT NULL,
    bucket_ms BIGINT NOT NULL,
    count BIGINT NOT NULL,
    sum DOUBLE PRECISION NOT NULL,
    min DOUBLE PRECISION NOT NULL,
    max DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (series_id, bucket_ms)
);

-- Time ranges ingested since the rollup job last ran; written in the ingest transaction.
CREATE TABLE rollup_pending (
    id BIGSERIAL PRIMARY KEY,
    device_id TEXT NOT NULL,
    from_ms BIGINT NOT NULL,
    to_ms BIGINT NOT NULL
);
