-- Alerts, notifications, silences and maintenance.

-- The newest report of every check of every device, kept with each round (the history stays
-- in check_reports): the alert evaluator and the device views read it without scanning the
-- history. `recorded_at_ms` equals the device's `capabilities_at_ms` while the check is still
-- in the device's latest round.
CREATE TABLE check_latest (
    device_id TEXT NOT NULL,
    check_name TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    evidence TEXT NOT NULL,
    checked_at_ms BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, check_name)
);
INSERT INTO check_latest (device_id, check_name, status, message, evidence, checked_at_ms,
                          recorded_at_ms)
SELECT c.device_id, c.check_name, c.status, c.message, c.evidence, c.checked_at_ms,
       COALESCE(d.capabilities_at_ms, c.checked_at_ms)
FROM check_reports c JOIN devices d ON d.id = c.device_id
WHERE c.id IN (SELECT MAX(id) FROM check_reports GROUP BY device_id, check_name);

-- One row per alert that is pending, firing or still remembered for flap detection, keyed by
-- rule, device and subject: the state machine's record and what people were last told, so a
-- restarted controller resumes without saying anything twice.
CREATE TABLE alerts (
    alert_key TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    device_id TEXT NOT NULL,           -- '' for the controller's own (a job on no device)
    subject TEXT NOT NULL,
    severity TEXT NOT NULL,
    summary TEXT NOT NULL,
    labels TEXT NOT NULL,              -- JSON object
    record TEXT NOT NULL,              -- JSON: state, history, flapping
    announced TEXT NOT NULL,           -- nothing | firing | flapping
    suppressed TEXT,                   -- why nothing is sent now: silenced | inhibited
    updated_at_ms BIGINT NOT NULL
);

-- The outbox: one notification per channel and device group, written in the transaction that
-- changes the alerts it is about. Kept once sent, and once dead (out of attempts), so every
-- delivery can be traced and a dead letter sent again.
CREATE TABLE notifications (
    id BIGSERIAL PRIMARY KEY,
    channel TEXT NOT NULL,
    device_id TEXT NOT NULL,
    body TEXT NOT NULL,                -- JSON: the notification
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    last_error TEXT,
    created_at_ms BIGINT NOT NULL,
    sent_at_ms BIGINT
);
CREATE INDEX notifications_due ON notifications (state, next_attempt_at_ms);

-- Silences and maintenance windows: what they cover, when, who made them and why, and an
-- expiry that cannot be left out. Ended ones are kept (the audit log has every change).
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    scope TEXT NOT NULL,               -- JSON: devices, or label matchers
    schedule TEXT NOT NULL,            -- JSON: once, or daily / weekly in a named zone
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    ended_at_ms BIGINT,
    ended_by TEXT
);
CREATE INDEX silences_live ON silences (expires_at_ms);

-- Devices in maintenance: who, why, until when, what was stopped, the silence it holds.
CREATE TABLE device_maintenance (
    device_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    started_by TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    until_ms BIGINT NOT NULL,
    stopped TEXT NOT NULL,             -- JSON: what was stopped, in order
    silence_id TEXT NOT NULL
);

-- Work one controller does for all (the alert evaluator): who holds it, until when.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
