-- Every step of every DR plan run, with its output: a later step's arguments read it, a
-- resumed run starts after the steps that succeeded, and nothing a run learned is lost.
CREATE TABLE dr_steps (
    run_id TEXT NOT NULL,              -- the execute_dr_plan job
    step_id TEXT NOT NULL,
    plan TEXT NOT NULL,
    revision BIGINT NOT NULL,
    position BIGINT NOT NULL,
    operation TEXT NOT NULL,
    state TEXT NOT NULL,               -- succeeded, failed, planned, reused
    output TEXT NOT NULL,              -- JSON
    error TEXT,
    job_id TEXT,                       -- the step's own job, for operations that are jobs
    started_at_ms BIGINT NOT NULL,
    finished_at_ms BIGINT NOT NULL,
    PRIMARY KEY (run_id, step_id)
);
