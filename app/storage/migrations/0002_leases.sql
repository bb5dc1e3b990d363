-- Version 2: a worker's lease on a run (app/storage/postgres.py, claim_run; docs/postgres.md).
-- Times are the database's now(), so hosts whose clocks disagree agree on when a lease ends.

ALTER TABLE pyflow_runs
    ADD COLUMN lease_owner   text,            -- host:pid of the worker holding the lease, NULL when none
    ADD COLUMN lease_expires timestamptz;     -- when it ends unless renewed
-- expired_leases: the few leased runs, by when their lease ends.
CREATE INDEX pyflow_runs_lease ON pyflow_runs (lease_expires) WHERE lease_owner IS NOT NULL;

-- A json object with one key set, the other keys kept in their order (json_each of json keeps it; jsonb
-- would reorder the keys and refuse "\u0000"): names the worker in a run's record inside the claim's UPDATE.
CREATE FUNCTION pyflow_json_set(record json, field text, field_value json) RETURNS json
LANGUAGE sql IMMUTABLE AS $$
    -- $1, $2, $3 by position: a parameter's name would lose to json_each's columns of the same name.
    SELECT COALESCE(json_object_agg(merged.key, merged.value ORDER BY merged.position), '{}'::json)
    FROM (
        SELECT e.key, CASE WHEN e.key = $2 THEN $3 ELSE e.value END AS value, e.position
        FROM json_each($1) WITH ORDINALITY AS e(key, value, position)
        UNION ALL
        SELECT $2, $3, 9223372036854775807
        WHERE NOT EXISTS (SELECT FROM json_each($1) AS x WHERE x.key = $2)
    ) AS merged
$$;
