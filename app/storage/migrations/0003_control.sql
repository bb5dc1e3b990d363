-- Version 3: a pending request to cancel or pause a run, for the process executing it
-- (app/storage/postgres.py, request_control and take_controls; docs/postgres.md).

ALTER TABLE pyflow_runs
    ADD COLUMN control    text,               -- 'cancel' or 'pause', NULL when none is pending
    ADD COLUMN control_by text,               -- who asked
    ADD COLUMN control_at timestamptz;        -- when (the database's now())
-- take_controls, polled by every worker about once a second: the few runs with a pending request, by owner.
CREATE INDEX pyflow_runs_control ON pyflow_runs (lease_owner) WHERE control IS NOT NULL;
