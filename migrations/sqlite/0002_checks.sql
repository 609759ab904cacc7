-- Host checks: capabilities detected on each device and the history of check reports.
ALTER TABLE devices ADD COLUMN capabilities TEXT NOT NULL DEFAULT '[]';
ALTER TABLE devices ADD COLUMN capabilities_at_ms INTEGER;

CREATE TABLE check_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    check_name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'warning', 'critical')),
    message TEXT NOT NULL,
    evidence TEXT NOT NULL,
    checked_at_ms INTEGER NOT NULL
);
CREATE INDEX check_reports_by_device ON check_reports (device_id, check_name, id);
