"""Audit from a request: ``record(action, target, details)`` with the caller as the actor.

The one call every handler that changes or controls something makes once it succeeded, e.g.
``audit.record("secret.set", name)``. The actor is the request's token name (``admin`` for
WORKFLOW_API_TOKEN, ``anonymous`` while access is open); pass ``actor=`` only where the request
has none yet (a login). ``details`` never hold a secret's value (fields named like secrets are
redacted anyway). Actions are listed in app/core/audit.py ACTIONS.
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from app.api.auth import principal
from app.core import audit


def actor() -> str:
    """Who this request's caller is, as the audit log names it (a token's name, ``admin``, ``anonymous``)."""
    return principal().name


def record(action: str, target: str, details: dict[str, Any] | None = None, *, actor: str | None = None) -> dict:
    """Append an entry to the audit log for this request; the entry."""
    store = current_app.extensions["pyflow"].store
    return audit.record(store, actor or principal().name, action, target, details)
