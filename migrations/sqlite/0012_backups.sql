-- Backups and DR plans.

-- Declared backup targets and DR plans, every version kept (as applications are): a
-- declaration adds a version and a removal adds one without a spec.
CREATE TABLE backup_targets (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    spec TEXT,                         -- JSON: device, source, repository, schedule; NULL: removed
    declared_by TEXT NOT NULL,
    declared_at_ms INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE dr_plans (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,               -- the plan's revision
    spec TEXT,                         -- the plan's YAML as given; NULL: removed
    declared_by TEXT NOT NULL,
    declared_at_ms INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);

-- Every backup, repository check, restore drill and restore of a target, with its outcome:
-- "verified", the RPO and the RTO are read from here, and a check's rotation continues from
-- the number of checks already run.
CREATE TABLE backup_runs (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,                -- backup, check, drill, restore
    device_id TEXT NOT NULL,
    job_id TEXT,
    started_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER NOT NULL,
    passed BOOLEAN NOT NULL,
    snapshot TEXT,                     -- the snapshot made, checked or drilled
    snapshot_at_ms INTEGER,                 -- when that snapshot was taken
    restore_ms INTEGER,                     -- a drill's or restore's measured restore time (RTO)
    details TEXT NOT NULL,             -- JSON: the host's report, cleaned
    error TEXT
);
CREATE INDEX backup_runs_by_target ON backup_runs (target, kind, finished_at_ms);
