"""CSRF protection for dashboard forms: a per-session token in a hidden field, checked on every POST."""

from __future__ import annotations

import hmac
import logging
import secrets

from flask import abort, request, session

logger = logging.getLogger(__name__)

FIELD = "csrf_token"
SESSION_KEY = "csrf"


def csrf_token() -> str:
    """This session's token, made on first use (templates put it in every form)."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = session[SESSION_KEY] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Abort with 400 unless a POST carries this session's token (a before_request hook)."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    expected = session.get(SESSION_KEY)
    sent = request.form.get(FIELD, "")
    if not isinstance(expected, str) or not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
        logger.warning("refused %s %r: missing or wrong CSRF token", request.method, request.path)  # %r: one line
        abort(400, description="The form expired or did not come from this dashboard. Reload the page and try again.")
