-- PyFlow's PostgreSQL store, version 1 (app/storage/postgres.py; docs/postgres.md).
-- Records are `json`, not `jsonb`: json keeps a record's keys in the order they were written (API answers
-- read as the JSON store's do) and accepts "\u0000" in strings, which jsonb refuses.

CREATE TABLE pyflow_runs (
    id              text PRIMARY KEY,             -- run_<µs hex><random>: sorts by creation time
    workflow        text NOT NULL,
    status          text NOT NULL,
    created_at      timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    version         integer,                      -- the definition version the run started with
    worker          text,                         -- host:pid of the process executing it, when known
    idempotency_key text,
    record          json NOT NULL                 -- the run record without its steps
);
-- Listing newest first (the primary key, read backwards), by workflow, by status.
CREATE INDEX pyflow_runs_workflow ON pyflow_runs (workflow, id);
CREATE INDEX pyflow_runs_status ON pyflow_runs (status, id);
CREATE INDEX pyflow_runs_created ON pyflow_runs (created_at, id);
CREATE INDEX pyflow_runs_finished ON pyflow_runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX pyflow_runs_key ON pyflow_runs (workflow, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- One row per step: recording step 1000 costs what step 1 did.
CREATE TABLE pyflow_steps (
    run_id text NOT NULL REFERENCES pyflow_runs (id) ON DELETE CASCADE,
    index  integer NOT NULL,
    record json NOT NULL,
    PRIMARY KEY (run_id, index)
);

CREATE TABLE pyflow_logs (
    run_id text NOT NULL REFERENCES pyflow_runs (id) ON DELETE CASCADE,
    seq    bigint GENERATED ALWAYS AS IDENTITY,
    entry  json NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE pyflow_trigger_state (
    workflow text PRIMARY KEY,
    state    json NOT NULL,
    saved_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pyflow_started_workflows (
    workflow text PRIMARY KEY
);

CREATE TABLE pyflow_definitions (
    name       text NOT NULL,
    version    integer NOT NULL,
    definition json NOT NULL,
    saved_at   timestamptz NOT NULL,
    PRIMARY KEY (name, version)
);
