-- Several controllers on one database: which replica holds each agent's stream, which
-- replicas are alive, and calls one replica asks another to make on an agent it holds.
CREATE TABLE controller_replicas (
    id TEXT PRIMARY KEY,
    seen_at_ms BIGINT NOT NULL
);

CREATE TABLE agent_sessions (
    device_id TEXT PRIMARY KEY,
    replica TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    connected_at_ms BIGINT NOT NULL
);

CREATE TABLE routed_calls (
    id TEXT PRIMARY KEY,
    from_replica TEXT NOT NULL,
    to_replica TEXT NOT NULL,
    device_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    call TEXT NOT NULL,               -- JSON: what to do on the agent
    answer TEXT,                      -- JSON: its result or error
    created_at_ms BIGINT NOT NULL,
    answered_at_ms BIGINT
);
CREATE INDEX routed_calls_to ON routed_calls (to_replica, answered_at_ms);
