-- Version 8: the step cache (docs/step-cache.md). An entry is a succeeded step's recorded result under a
-- sha256 key of the workflow, its version, the step's type and its rendered config (or its cache key
-- template's rendering): the config itself, which may carry a secret, is never stored.

CREATE TABLE pyflow_cache (
    key        text PRIMARY KEY,              -- 64 hex digits
    workflow   text NOT NULL,
    step       text NOT NULL,
    run_id     text NOT NULL,                 -- the run whose step made the result (no foreign key: it may be pruned first)
    result     jsonb NOT NULL,
    created_at double precision NOT NULL,     -- epoch seconds
    expires_at double precision NOT NULL
);
CREATE INDEX pyflow_cache_expires ON pyflow_cache (expires_at);
