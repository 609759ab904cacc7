-- Configuration change transactions across devices, and each device's part in them.
CREATE TABLE change_transactions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,               -- plan | deploy
    state TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    request_id TEXT NOT NULL,
    change_set TEXT NOT NULL,         -- JSON as requested
    options TEXT NOT NULL,            -- JSON
    error TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX change_transactions_created ON change_transactions (created_at_ms);

CREATE TABLE change_targets (
    txn_id TEXT NOT NULL REFERENCES change_transactions (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    state TEXT NOT NULL,
    prepare_report TEXT,              -- JSON: diffs and validator output
    commit_report TEXT,               -- JSON: health outcomes
    error TEXT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (txn_id, device_id)
);
CREATE INDEX change_targets_device ON change_targets (device_id);
