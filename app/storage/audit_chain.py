"""The audit log's hash chain: each entry's hash covers its content and the hash of the entry before it.

An entry is ``{"id", "at", "actor", "action", "target", "details", "prev", "hash"}``: ``id`` counts
1, 2, 3...; ``prev`` is the previous entry's ``hash`` (GENESIS for the first); ``hash`` is the sha256
of the canonical JSON (sorted keys, no spaces) of the entry without ``hash``. Changing, inserting or
removing an entry breaks the chain at that entry (``verify`` in app/core/audit.py says where).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: ``prev`` of the first entry.
GENESIS = "0" * 64
#: An entry's fields, in the order they are stored.
FIELDS = ("id", "at", "actor", "action", "target", "details", "prev", "hash")
#: The filters list_audit takes.
FILTERS = ("action", "actor", "target")


def canonical(entry: dict) -> bytes:
    """The bytes an entry's hash covers: its canonical JSON without ``hash``."""
    body = {key: value for key, value in entry.items() if key != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict) -> str:
    """The sha256 (hex) an entry's ``hash`` must hold."""
    return hashlib.sha256(canonical(entry)).hexdigest()


def seal(entry_id: int, at: str, actor: str, action: str, target: str, details: Any, prev: str) -> dict:
    """A new entry after the one whose hash is ``prev``, with its hash."""
    entry = {"id": entry_id, "at": at, "actor": actor, "action": action, "target": target,
             "details": details if details is not None else {}, "prev": prev}
    entry["hash"] = entry_hash(entry)
    return entry


def check_entry(actor: str, action: str, target: str) -> None:
    """A ValueError naming the field when an entry's actor, action or target is not a non-empty string."""
    for field, value in (("actor", actor), ("action", action), ("target", target)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"an audit entry's {field} must be a non-empty string, got {value!r}")


def matches(entry: dict, filters: dict[str, str | None]) -> bool:
    """Whether ``entry`` has every field value ``filters`` asks for (None: any)."""
    return all(value is None or entry.get(key) == value for key, value in filters.items())


def check_page(limit: int, before: int | None) -> None:
    """A ValueError for a page size below 1 or a cursor that is not an entry id."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
    if before is not None and (isinstance(before, bool) or not isinstance(before, int)):
        raise ValueError(f"before must be an audit entry id (an integer), got {before!r}")
