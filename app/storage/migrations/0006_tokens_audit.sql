-- Version 6: API tokens with roles and the hash-chained audit log (app/storage/postgres.py; DESIGN section 10).
-- Versions 4 and 5 come from other work; migrate.py applies every version not yet applied, in order.

-- A token is kept as its sha256 (hex), never itself.
CREATE TABLE pyflow_tokens (
    name      text PRIMARY KEY,
    role      text NOT NULL,
    hash      text NOT NULL UNIQUE,
    created   timestamptz NOT NULL,
    last_used timestamptz
);

-- Append-only: an entry's hash covers its content and the previous entry's hash (app/storage/audit_chain.py).
-- Appends take an advisory lock, so processes on several hosts extend one chain.
CREATE TABLE pyflow_audit (
    id     bigint PRIMARY KEY,                -- 1, 2, 3...: the chain's order
    actor  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    entry  json NOT NULL                      -- the whole entry as hashed: {"id", "at", ..., "prev", "hash"}
);
-- GET /api/audit?action=|actor=|target=, newest first.
CREATE INDEX pyflow_audit_action ON pyflow_audit (action, id);
CREATE INDEX pyflow_audit_actor ON pyflow_audit (actor, id);
CREATE INDEX pyflow_audit_target ON pyflow_audit (target, id);
