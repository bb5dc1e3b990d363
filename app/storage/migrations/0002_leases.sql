-- Version 2: a worker's lease on a run (app/storage/postgres.py, claim_run; docs/postgres.md).
-- Times are the database's now(), so hosts whose clocks disagree agree on when a lease ends.

ALTER TABLE pyflow_runs
    ADD COLUMN lease_owner   text,            -- host:pid of the worker holding the lease, NULL when none
    ADD COLUMN lease_expires timestamptz;     -- when it ends unless renewed
-- expired_leases: the few leased runs, by when their lease ends.
CREATE INDEX pyflow_runs_lease ON pyflow_runs (lease_expires) WHERE lease_owner IS NOT NULL;

