-- Every mutation from any surface: who, through which surface, under which correlation ID,
-- with which (redacted) arguments, and how it ended. Append-only.
CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    principal TEXT NOT NULL,          -- token:<id> or system:<what>
    principal_name TEXT NOT NULL,
    surface TEXT NOT NULL,            -- rest | mcp
    request_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    arguments TEXT NOT NULL,          -- JSON, secrets and file contents redacted
    outcome TEXT NOT NULL,            -- ok | error | pending_approval
    status INTEGER NOT NULL,          -- HTTP status of the outcome
    detail TEXT
);
CREATE INDEX audit_log_at ON audit_log (at_ms);

-- Operation timings, one row per (flush, surface, operation): count, errors and a latency
-- histogram (JSON: bucket index -> count) that merges exactly across rows.
CREATE TABLE operation_metrics (
    id BIGSERIAL PRIMARY KEY,
    window_start_ms BIGINT NOT NULL,
    window_end_ms BIGINT NOT NULL,
    surface TEXT NOT NULL,
    operation TEXT NOT NULL,
    count BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    sum_ms DOUBLE PRECISION NOT NULL,
    max_ms DOUBLE PRECISION NOT NULL,
    buckets TEXT NOT NULL
);
CREATE INDEX operation_metrics_window ON operation_metrics (window_end_ms);

-- Mutating MCP tool calls held for a human's decision (mcp_require_approval).
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    operation TEXT NOT NULL,
    arguments TEXT NOT NULL,          -- JSON as requested: executed as-is once approved
    preview TEXT NOT NULL,            -- JSON: the plan the approver sees
    requested_by TEXT NOT NULL,
    requested_by_name TEXT NOT NULL,
    requested_scope TEXT NOT NULL,
    request_id TEXT NOT NULL,
    state TEXT NOT NULL,              -- pending | approved | rejected | expired
    decided_by TEXT,
    decided_at_ms BIGINT,
    result TEXT                       -- JSON: the operation's output or error
);
CREATE INDEX approvals_state ON approvals (state, created_at_ms);
