-- Durable jobs: long operations run by the controller's job runner, outside any request.
-- A job is owned by one replica through a lease it renews; an expired lease lets another
-- replica (or the same one after a restart) take it over and reconcile it.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,          -- the registry's operation ID
    state TEXT NOT NULL,              -- queued | running | succeeded | failed | cancelled
    surface TEXT NOT NULL,            -- rest | mcp
    requested_by TEXT NOT NULL,       -- principal ID
    requested_by_name TEXT NOT NULL,
    requested_scope TEXT NOT NULL,
    requested_owner TEXT NOT NULL,
    request_id TEXT NOT NULL,
    arguments TEXT NOT NULL,          -- JSON: the operation's flat arguments
    result TEXT,                      -- JSON: the operation's response
    error TEXT,
    error_kind TEXT,                  -- the error's kind (invalid_input, conflict, ...)
    progress_done INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    cancel_requested_at_ms INTEGER,
    owner TEXT,                       -- the replica holding the lease
    lease_expires_ms INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    started_at_ms INTEGER,
    finished_at_ms INTEGER,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX jobs_created ON jobs (created_at_ms);
CREATE INDEX jobs_live ON jobs (state, lease_expires_ms);

-- Each step is written before it is taken and again with its outcome.
CREATE TABLE job_steps (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,              -- running | succeeded | failed
    error TEXT,
    started_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER,
    PRIMARY KEY (job_id, seq)
);

-- The event stream (GET /jobs/{id}/events): append-only, numbered per job.
CREATE TABLE job_events (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,               -- JSON
    PRIMARY KEY (job_id, seq)
);

-- The devices a job works on (for the device view and GET /jobs?device=).
CREATE TABLE job_devices (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    PRIMARY KEY (job_id, device_id)
);
CREATE INDEX job_devices_device ON job_devices (device_id);

-- What a live job is changing: one holder per device and resource, released when it ends.
CREATE TABLE job_locks (
    device_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (device_id, resource)
);
CREATE INDEX job_locks_job ON job_locks (job_id);
