"""API tokens with roles: POST /api/tokens answers a new token once; GET lists them; DELETE forgets one.

The store keeps a token's sha256, never the token (app/api/auth.py compares hashes).
"""

from __future__ import annotations

import logging
import re
import secrets

from flask import Response, jsonify

from app.api import audit
from app.api.auth import ADMIN_ACTOR, OPEN_ACTOR, digest
from app.api.roles import NAMES, Role
from app.api.routes import _json_body, _object, bp, runtime
from app.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Actor names the audit log gives to callers that are not stored tokens.
RESERVED = frozenset({ADMIN_ACTOR, OPEN_ACTOR, "cli", "webhook", "system"})
TOKEN_BYTES = 32


def public(record: dict) -> dict:
    """A token's record as answered: never its hash."""
    return {key: record.get(key) for key in ("name", "role", "created", "last_used")}


def _problem(path: str, message: str) -> InvalidInput:
    return InvalidInput(f"{path} {message}", details=[{"path": path, "message": message}])


def check_new_token(body: dict) -> tuple[str, Role]:
    """The name and role of a POST /api/tokens body; InvalidInput naming each problem."""
    unknown = sorted(set(body) - {"name", "role"})
    if unknown:
        raise InvalidInput(f"unknown field(s) in body: {', '.join(unknown)}; send {{\"name\", \"role\"}}",
                           details=[{"path": key, "message": "unknown field"} for key in unknown])
    name, role = body.get("name"), body.get("role")
    if not isinstance(name, str) or not NAME.match(name):
        raise _problem("name", f"must be 1-64 letters, digits, '_', '.' or '-' (starting with a letter or digit), "
                               f"got {name!r}")
    if name.lower() in RESERVED:
        raise _problem("name", f"{name!r} is reserved for the audit log's actors ({', '.join(sorted(RESERVED))})")
    try:
        return name, Role.parse(role)
    except ValueError:
        raise _problem("role", f"must be one of {', '.join(NAMES)}, got {role!r}") from None


@bp.post("/tokens")
def create_token() -> tuple[Response, int, dict]:
    body = _object(_json_body(), "body")
    name, role = check_new_token(body)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    record = runtime().store.add_token(name, role.label, digest(token))
    audit.record("token.create", name, {"role": role.label})
    # The only time the token is shown: nothing stores it, so nobody can show it again.
    return jsonify({**public(record), "token": token}), 201, {"Cache-Control": "no-store"}


@bp.get("/tokens")
def list_tokens() -> Response:
    return jsonify(tokens=[public(record) for record in runtime().store.list_tokens()])


@bp.delete("/tokens/<name>")
def delete_token(name: str) -> tuple[str, int]:
    if not runtime().store.delete_token(name):
        raise NotFound(f"no token named {name!r}; GET /api/tokens lists them")
    audit.record("token.delete", name)
    return "", 204
