"""Store workflow results in SQLite with the standard library: one analysed document, or a batch of rows.

Called by a python step, ``db_path`` must lead into WORKFLOW_FILES_ROOT (a relative path is taken under it).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from actions.paths import confine

# Table and column names go into SQL text (placeholders cannot stand for them): only plain identifiers.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MODES = ("append", "replace")
# Seconds to wait for another writer's lock before giving up.
LOCK_TIMEOUT = 10.0

_DOCUMENT_COLUMNS = ("source", "pages", "word_count", "emails", "phone_numbers", "dates", "amounts", "text",
                     "created_at")


def _identifier(name: Any, what: str) -> str:
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise ValueError(f"{what} must be a plain name (letters, digits, _), got {name!r}")
    return name


def _quoted(name: str) -> str:
    """A checked name quoted for SQL, so words such as ``order`` work as names too."""
    return f'"{name}"'


def _cell(value: Any) -> Any:
    """What SQLite stores for a value: lists and objects as JSON text."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` (its folder created), committed on success, always closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=LOCK_TIMEOUT)) as connection, connection:
        # sqlite3 opens transactions only before INSERT and the like; a replace's DROP must be undone too.
        connection.execute("BEGIN")
        yield connection


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def insert_document(db_path: str, source: str, text: str, analysis: Mapping[str, Any], pages: int | None = None,
                    table: str = "documents") -> dict[str, Any]:
    """Insert one analysed document (creating the table when missing); returns ``{"id", "db_path", "table"}``.

    ``analysis`` is what ``analysis.analyse_text`` returned; its lists are stored as JSON text.
    """
    table = _identifier(table, "table")
    quoted = _quoted(table)
    if not isinstance(analysis, Mapping):
        raise ValueError(f"analysis must be a mapping (the analyse step's result), got {type(analysis).__name__}")
    row = {"source": source, "pages": pages, "word_count": analysis.get("word_count"),
           **{key: analysis.get(key, []) for key in ("emails", "phone_numbers", "dates", "amounts")},
           "text": text, "created_at": _now()}
    path = confine(db_path, "db_path")
    with _connect(path) as connection:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {quoted} (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT, pages INTEGER, "
            "word_count INTEGER, emails TEXT, phone_numbers TEXT, dates TEXT, amounts TEXT, text TEXT, "
            "created_at TEXT NOT NULL)"
        )
        cursor = connection.execute(
            f"INSERT INTO {quoted} ({', '.join(_DOCUMENT_COLUMNS)}) VALUES ({', '.join('?' * len(_DOCUMENT_COLUMNS))})",
            [_cell(row[column]) for column in _DOCUMENT_COLUMNS],
        )
    return {"id": cursor.lastrowid, "db_path": str(path), "table": table}


def load_rows(db_path: str, table: str, rows: Sequence[Mapping[str, Any]], mode: str = "append") -> dict[str, Any]:
    """Write ``rows`` into ``table`` in one transaction; returns ``{"table", "mode", "inserted", "total"}``.

    ``append`` adds them (and any column the table lacks); ``replace`` drops the
    table first, so it holds exactly these rows. Columns come from the rows' keys,
    in first-seen order; lists and objects are stored as JSON text.
    """
    table = _identifier(table, "table")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(rows, Sequence) or isinstance(rows, str) or not all(isinstance(row, Mapping) for row in rows):
        raise ValueError("rows must be a list of objects")
    columns = [_identifier(key, "column") for key in dict.fromkeys(key for row in rows for key in row)]
    quoted, names = _quoted(table), ", ".join(map(_quoted, columns))
    with _connect(confine(db_path, "db_path")) as connection:
        if mode == "replace":
            connection.execute(f"DROP TABLE IF EXISTS {quoted}")
        if columns:
            # Untyped columns keep each value's own type (SQLite's dynamic typing): numbers stay numbers.
            connection.execute(f"CREATE TABLE IF NOT EXISTS {quoted} ({names})")
            # SQLite compares column names without regard to case.
            existing = {row[1].lower() for row in connection.execute(f"PRAGMA table_info({quoted})")}
            for column in columns:
                if column.lower() not in existing:
                    connection.execute(f"ALTER TABLE {quoted} ADD COLUMN {_quoted(column)}")
            connection.executemany(
                f"INSERT INTO {quoted} ({names}) VALUES ({', '.join('?' * len(columns))})",
                [[_cell(row.get(column)) for column in columns] for row in rows],
            )
        exists = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                                    [table]).fetchone()
        total = connection.execute(f"SELECT COUNT(*) FROM {quoted}").fetchone()[0] if exists else 0
    return {"table": table, "mode": mode, "inserted": len(rows), "total": total}
