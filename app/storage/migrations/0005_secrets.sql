-- Version 5: secrets, as ciphertext only (app/core/secrets.py encrypts them with a key that is never
-- stored here: WORKFLOW_ENCRYPTION_KEY or WORKFLOW_KEY_FILE; docs/security/secrets.md).

CREATE TABLE pyflow_secrets (
    name       text PRIMARY KEY,
    ciphertext text NOT NULL,                 -- a Fernet token
    created_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
    updated_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now())
);
