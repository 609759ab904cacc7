-- Agentless hosts' change journals, kept in the database so that whichever replica is alive
-- can finish a transaction another started (an agent keeps its own on its own disk).
CREATE TABLE change_journals (
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    owner TEXT NOT NULL,               -- the replica that last moved it
    state TEXT,                        -- NULL while its files are staged, before a journal
    journal TEXT,                      -- JSON: the engine's journal
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, txn_id)
);
CREATE INDEX change_journals_live ON change_journals (state, device_id);

-- The staged and original contents of a transaction's files.
CREATE TABLE change_journal_blobs (
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    name TEXT NOT NULL,
    content BYTEA NOT NULL,
    PRIMARY KEY (device_id, txn_id, name),
    FOREIGN KEY (device_id, txn_id) REFERENCES change_journals (device_id, txn_id)
        ON DELETE CASCADE
);
