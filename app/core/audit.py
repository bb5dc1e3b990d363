"""The audit log: who changed or controlled what (DESIGN section 10), appended to the store's hash chain.

``record`` is the one way in: API handlers call it through app/api/audit.py (which knows the caller),
the CLI with actor ``cli``. ``verify`` walks the chain and names the first entry that does not hold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.core.redaction import redact
from app.storage.audit_chain import GENESIS, entry_hash
from app.storage.base import Store

logger = logging.getLogger(__name__)

#: Every action an entry may name; a later issue adds "approval.approve" and "approval.reject".
ACTIONS = frozenset({
    "definition.create", "definition.update", "definition.delete",
    "workflow.start", "workflow.stop",
    "run.cancel", "run.pause", "run.resume", "run.retry", "run.skip", "run.variables",
    "approval.approve", "approval.reject",
    "secret.set", "secret.delete",
    "token.create", "token.delete",
    "login.success", "login.failure",
    "access.denied",
})


def record(store: Store, actor: str, action: str, target: str, details: dict[str, Any] | None = None) -> dict:
    """Append ``{"actor", "action", "target", "details"}`` to the audit log; the stored entry.

    ``details`` are redacted by key (a field named like a secret reads ``"***"``); never pass a secret's value.
    ValueError for an action not in ACTIONS.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; add it to app/core/audit.py ACTIONS")
    entry = store.append_audit(actor, action, target, redact(dict(details or {})))
    logger.info("audit %d: %s %s %s", entry["id"], actor, action, target)
    return entry


@dataclass(frozen=True)
class Broken:
    """The first entry of the chain that does not hold, and why."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def verify(entries: Iterable[dict]) -> tuple[int, Broken | None]:
    """How many entries hold, and the first that does not (None when the whole chain holds)."""
    prev, expected_id, checked = GENESIS, 1, 0
    for entry in entries:
        if "unreadable" in entry:
            return checked, Broken(str(entry["unreadable"]), f"not an audit entry (after entry {expected_id - 1})")
        at = f" (at {entry['at']})" if isinstance(entry.get("at"), str) else ""
        where = f"audit entry {entry.get('id')!r}{at}"
        if entry.get("id") != expected_id:
            return checked, Broken(where, f"expected entry {expected_id} here: an entry was removed or inserted")
        if entry.get("prev") != prev:
            return checked, Broken(where, f"its prev does not match the hash of entry {expected_id - 1}: "
                                          "the chain was cut or an entry before it replaced")
        if entry.get("hash") != entry_hash(entry):
            return checked, Broken(where, "its hash does not match its contents: the entry was changed")
        prev, expected_id, checked = entry["hash"], expected_id + 1, checked + 1
    return checked, None
