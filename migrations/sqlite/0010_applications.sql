-- Declared applications, every version kept: a declaration adds a version and a removal adds
-- one without a spec, so what was declared, by whom and when is never lost.
CREATE TABLE applications (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    spec TEXT,                         -- JSON: the members and their dependencies; NULL: removed
    declared_by TEXT NOT NULL,
    declared_at_ms INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
