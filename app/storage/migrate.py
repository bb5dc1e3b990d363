"""Versioned schema migrations of the PostgreSQL store, applied at start-up under an advisory lock."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from app.errors import ConfigError

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_lock's key: any constant shared by every PyFlow process ("PyFlowMg" as 8 bytes).
LOCK_KEY = int.from_bytes(b"PyFlowMg", "big") - (1 << 63)
_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


def migrations() -> list[tuple[int, Path]]:
    """(version, file) of every migration this PyFlow knows, oldest first."""
    found = [(int(match.group(1)), path) for path in MIGRATIONS.iterdir() if (match := _NAME.fullmatch(path.name))]
    return sorted(found)


def migrate(conn: Any, where: str) -> list[int]:
    """Bring the database of ``conn`` (autocommit) up to the newest schema; the versions applied.

    Two processes starting at once take turns on an advisory lock, so the
    second finds the work done. A database newer than this code stops start-up.
    """
    known = migrations()
    newest = known[-1][0] if known else 0
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS pyflow_schema ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM pyflow_schema")}
        current = max(applied, default=0)
        if current > newest:
            raise ConfigError(
                f"WORKFLOW_DATABASE_URL: the database at {where} has schema version {current}; "
                f"this PyFlow knows up to {newest}: upgrade PyFlow"
            )
        done = []
        for version, path in known:
            if version in applied:
                continue
            with conn.transaction():  # a migration and its row, or neither
                conn.execute(path.read_text(encoding="utf-8"))
                conn.execute("INSERT INTO pyflow_schema (version, name) VALUES (%s, %s)", (version, path.name))
            logger.info("applied schema migration %s to the database at %s", path.name, where)
            done.append(version)
        return done
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
