-- Version 7: event ids seen (POST /api/events does nothing twice) and the wake index of parked runs
-- (app/storage/postgres.py, record_event, park, unpark, due_parked, parked_for; docs/events.md).

CREATE TABLE pyflow_events (
    id   text PRIMARY KEY,
    type text NOT NULL,
    at   timestamptz NOT NULL DEFAULT now()
);
-- prune_events: by age.
CREATE INDEX pyflow_events_at ON pyflow_events (at);

CREATE TABLE pyflow_parked (
    run_id    text PRIMARY KEY REFERENCES pyflow_runs (id) ON DELETE CASCADE,
    step      text NOT NULL,              -- the waiting step's name
    due       timestamptz,                -- wake then (a wait's end, a timeout); NULL: no time
    event     text,                       -- wake on an event of this type
    key       text,                       -- ... with this correlation key (NULL: any key)
    parked_at timestamptz NOT NULL DEFAULT now()
);
-- due_parked, asked each second by the waker: the few entries with a time, soonest first.
CREATE INDEX pyflow_parked_due ON pyflow_parked (due) WHERE due IS NOT NULL;
-- parked_for, on each event.
CREATE INDEX pyflow_parked_event ON pyflow_parked (event, key) WHERE event IS NOT NULL;
