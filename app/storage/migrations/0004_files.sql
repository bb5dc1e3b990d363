-- Version 4: files that runs need on any host (uploads, e-mail attachments; app/core/files.py, docs/files.md).
-- A worker on another host reads a run's attachment from here, not from an assumed shared disk. Each file is
-- bounded by WORKFLOW_MAX_UPLOAD_MB when it is shared, far below bytea's 1 GB.

CREATE TABLE pyflow_files (
    key        text PRIMARY KEY,                    -- attachments/<folder>/<name>
    content    bytea NOT NULL,
    size       bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- prune_files: the oldest files first.
CREATE INDEX pyflow_files_created ON pyflow_files (created_at);
