-- Version 9: the wake index holds an entry per waiting step, not per run: parallel branches of one run park
-- at once, each woken on its own (app/storage/postgres.py park, unpark, unpark_run; docs/events.md).
-- ``outcome``: an answer, event or timeout that came while the run was busy (executing another branch), kept
-- until the run halts; the waker then wakes the step with it.

ALTER TABLE pyflow_parked DROP CONSTRAINT pyflow_parked_pkey;
ALTER TABLE pyflow_parked ADD PRIMARY KEY (run_id, step);
ALTER TABLE pyflow_parked ADD COLUMN outcome jsonb;
