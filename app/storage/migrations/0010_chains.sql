-- Version 10: the runs each event chain started (app/storage/postgres.py count_chain_run, prune_chains;
-- docs/events.md). The runs' ends of one chain start at most MAX_CHAIN_RUNS runs on every server and worker
-- of the database together: one upsert counts a run only while the chain's count is below the limit.

CREATE TABLE pyflow_chains (
    chain text PRIMARY KEY,                   -- the id of the event the chain began with
    runs  integer NOT NULL,                   -- runs its runs' ends started
    at    timestamptz NOT NULL DEFAULT now()  -- when it last counted one
);
-- prune_chains: by age, with the event ids.
CREATE INDEX pyflow_chains_at ON pyflow_chains (at);
