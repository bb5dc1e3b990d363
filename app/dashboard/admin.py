"""The admin pages: API tokens (made, listed, deleted) and the audit log."""

from __future__ import annotations

import logging
import secrets

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app.api import audit
from app.api.auth import digest
from app.api.roles import NAMES
from app.api.routes import runtime
from app.api.tokens import TOKEN_BYTES, check_new_token, public
from app.dashboard.blueprint import bp
from app.errors import Conflict, InvalidInput

logger = logging.getLogger(__name__)

AUDIT_PAGE_SIZE = 50
FILTERS = ("action", "actor", "target")


def _tokens_page(status: int = 200, **extra) -> tuple[str, int]:
    tokens = [public(record) for record in runtime().store.list_tokens()]
    return render_template("tokens.html", tokens=tokens, roles=NAMES, **extra), status


@bp.get("/tokens")
def tokens() -> tuple[str, int]:
    """Every token with its role and last use, and the form that makes one."""
    return _tokens_page()


@bp.post("/tokens")
def create_token() -> tuple[str, int] | tuple[str, int, dict]:
    """Make a token and show it, this once."""
    form = {"name": request.form.get("name", "").strip(), "role": request.form.get("role", "")}
    try:
        name, role = check_new_token(form)
        token = secrets.token_urlsafe(TOKEN_BYTES)
        runtime().store.add_token(name, role.label, digest(token))
    except (InvalidInput, Conflict) as error:
        return _tokens_page(error.status, error=error.message, form=form)
    audit.record("token.create", name, {"role": role.label, "via": "dashboard"})
    page, status = _tokens_page(201, created={"name": name, "role": role.label, "token": token})
    # The only time the token is shown (as POST /api/tokens answers): no browser or proxy cache keeps the page.
    return page, status, {"Cache-Control": "no-store"}


@bp.post("/tokens/<name>/delete")
def delete_token(name: str) -> Response:
    """Delete a token: whatever used it is refused from now on."""
    if runtime().store.delete_token(name):
        audit.record("token.delete", name, {"via": "dashboard"})
        flash(f"Deleted token {name}.", "success")
    else:
        flash(f"There is no token named {name!r}.", "error")
    return redirect(url_for("dashboard.tokens"))


@bp.get("/audit")
def audit_log() -> str:
    """The audit log, newest first, filtered by action, actor and target."""
    filters = {key: request.args.get(key) or None for key in FILTERS}
    cursor = request.args.get("cursor") or None
    before = int(cursor) if cursor and cursor.isascii() and cursor.isdigit() and len(cursor) < 19 else None
    entries, next_cursor = runtime().store.list_audit(**filters, limit=AUDIT_PAGE_SIZE, before=before)
    return render_template("audit.html", entries=entries, next_cursor=next_cursor, cursor=before, filters=filters)
