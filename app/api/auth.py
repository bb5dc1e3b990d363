"""Access control: a bearer token for /api and /metrics, a login session for the dashboard.

Everything is open while WORKFLOW_API_TOKEN is unset (a local tool on
127.0.0.1). Once it is set, /api and /metrics need ``Authorization: Bearer
<token>`` or a logged-in dashboard session, and dashboard pages redirect to the
login page. /api/health (liveness probes) and /api/hooks/ (webhooks carry
their own HMAC signature) stay open.

Guessing is bounded: after 10 failed authentications (a wrong bearer token or
a wrong token on the login form) from one address within a minute, that
address gets 429 with Retry-After, even with the right token, until the minute
has passed. A login lasts WORKFLOW_SESSION_HOURS and ends for good at logout
(app/api/sessions.py keeps the live logins on the server).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify, redirect, request, session, url_for

from app.api import hosts
from app.api.hosts import is_loopback
from app.api.sessions import FILENAME, LoginRegistry, TLSAwareSessionInterface
from app.api.throttle import FailureLimiter
from app.errors import error_body

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/api/health", "/login", "/favicon.ico"})
OPEN_PREFIXES = ("/api/hooks/", "/static/")
# Paths answered with a 401 JSON error rather than a redirect to the login page.
API_PREFIXES = ("/api/", "/metrics")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_KEY = "login"
LOGIN_ID_KEY = "login_id"
LOGIN_AT_KEY = "login_at"
CSRF_HEADER = "X-CSRF-Token"
# Failed authentications one address may make within FAILURE_WINDOW seconds before it is locked out.
FAILURE_LIMIT = 10
FAILURE_WINDOW = 60.0
LIMITER_KEY = "pyflow_auth_failures"
LOGINS_KEY = "pyflow_logins"


def init_app(app: Flask) -> None:
    """Set the session key and check every request before it reaches a view."""
    # A random key per process is safe by default; sessions then end when the server restarts.
    app.secret_key = app.config.get("WORKFLOW_SECRET_KEY") or secrets.token_hex(32)
    # Flask's defaults are HttpOnly and no SameSite; Lax keeps the cookie off cross-site posts as well.
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    lifetime = float(app.config["WORKFLOW_SESSION_HOURS"]) * 3600
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=lifetime)
    app.session_interface = TLSAwareSessionInterface()
    store_root = Path(app.extensions["pyflow"].store.root)
    app.extensions[LOGINS_KEY] = LoginRegistry(store_root / FILENAME, lifetime)
    app.extensions[LIMITER_KEY] = FailureLimiter(FAILURE_LIMIT, FAILURE_WINDOW)
    hosts.init_app(app)  # runs before every other hook
    app.before_request(refuse_cross_site)
    app.before_request(require_login)


def exposure_problem(settings: Mapping[str, Any]) -> str | None:
    """Why serving with these settings would expose an open API to the network; None when it would not."""
    host = str(settings.get("HOST") or "")
    if is_loopback(host) or settings.get("WORKFLOW_API_TOKEN") or settings.get("WORKFLOW_ALLOW_OPEN"):
        return None
    return (f"HOST is {host!r}, which other machines can reach, and WORKFLOW_API_TOKEN is not set, so anyone "
            f"there could run workflows; set WORKFLOW_API_TOKEN, or WORKFLOW_ALLOW_OPEN=true to serve it open")


def api_token() -> str:
    """The configured token, "" when access is open."""
    return str(current_app.config.get("WORKFLOW_API_TOKEN") or "")


def token_matches(candidate: str | None) -> bool:
    """True when ``candidate`` is the configured token, compared in constant time."""
    token = api_token()
    return bool(token) and candidate is not None and hmac.compare_digest(candidate.encode(), token.encode())


def _login_marker() -> str:
    # Bound to the token: changing WORKFLOW_API_TOKEN logs every session out.
    return hmac.new(current_app.secret_key.encode(), api_token().encode(), hashlib.sha256).hexdigest()  # type: ignore[union-attr]


def _logins() -> LoginRegistry:
    return current_app.extensions[LOGINS_KEY]


def log_in() -> None:
    """Mark the session as logged in (the caller checked the token) for WORKFLOW_SESSION_HOURS."""
    csrf = session.get("csrf")
    session.clear()  # a fresh session on login: nothing from before carries over
    if csrf:
        session["csrf"] = csrf
    session[SESSION_KEY] = _login_marker()
    session[LOGIN_ID_KEY] = _logins().open()
    session[LOGIN_AT_KEY] = time.time()
    session.permanent = True  # the cookie expires after PERMANENT_SESSION_LIFETIME instead of living on


def log_out() -> None:
    """End the login on the server too, so a copy of the cookie no longer works."""
    _logins().close(session.get(LOGIN_ID_KEY))
    session.clear()


def logged_in() -> bool:
    """True when access is open or the session holds a live login younger than WORKFLOW_SESSION_HOURS."""
    if not api_token():
        return True
    marker, at = session.get(SESSION_KEY), session.get(LOGIN_AT_KEY)
    if not isinstance(marker, str) or not hmac.compare_digest(marker, _login_marker()):
        return False
    lifetime = float(current_app.config["WORKFLOW_SESSION_HOURS"]) * 3600
    if not isinstance(at, (int, float)) or not time.time() - lifetime < at <= time.time() + 60:
        return False
    return _logins().is_live(session.get(LOGIN_ID_KEY))


def _limiter() -> FailureLimiter:
    return current_app.extensions[LIMITER_KEY]


def locked_out() -> int | None:
    """Seconds this request's address must wait after too many failed authentications; None if it need not."""
    return _limiter().retry_after(request.remote_addr)


def authentication_failed(what: str) -> None:
    """Count a failed authentication from this request's address (and log it without the credential)."""
    _limiter().failed(request.remote_addr)
    logger.warning("failed %s from %s", what, request.remote_addr)


def too_many_failures_message(wait: int) -> str:
    """What a locked-out client is told."""
    return (f"too many failed authentications from {request.remote_addr}: more than {FAILURE_LIMIT - 1} "
            f"within {FAILURE_WINDOW:g} s; try again in {wait} s")


def _bearer() -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _session_may_call_api() -> bool:
    """A dashboard session may read the API; writes also need the session's CSRF token in a header."""
    if not logged_in():
        return False
    if request.method in SAFE_METHODS:
        return True
    expected, sent = session.get("csrf"), request.headers.get(CSRF_HEADER)
    return bool(expected and sent) and hmac.compare_digest(str(expected), sent)


def is_open(path: str) -> bool:
    """True for paths that never need a login."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def safe_next(target: str | None) -> str:
    """``target`` when it is a path on this site, else the dashboard's home (no open redirects)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("dashboard.workflows")


def refuse_cross_site() -> tuple[Response, int] | None:
    """Refuse a state-changing /api request a browser sent from another site (its Origin says so).

    Without WORKFLOW_API_TOKEN the API is open, and any web page could make a
    visitor's browser post a form to it; browsers name that page in Origin.
    Clients that are not browsers (curl, requests) send no Origin and pass.
    """
    origin = request.headers.get("Origin")
    if request.method in SAFE_METHODS or not origin or not request.path.startswith("/api/"):
        return None
    if request.path.startswith(OPEN_PREFIXES) or urlsplit(origin).netloc == request.host:
        return None  # webhooks come from anywhere and carry their own signature
    body = error_body(403, "cross_site_request", f"a request from {origin} to {request.host} is refused")
    return jsonify(body), 403


def require_login() -> Response | tuple[Response, int, dict] | None:
    """The before_request hook: None lets the request through."""
    if not api_token() or is_open(request.path):
        return None
    if request.path.startswith(API_PREFIXES):
        bearer = _bearer()
        if bearer is not None:
            # Checked before the token: during a lockout even the right one is refused, which stops guessing.
            wait = locked_out()
            if wait is not None:
                body = error_body(429, "too_many_failed_authentications", too_many_failures_message(wait))
                return jsonify(body), 429, {"Retry-After": str(wait)}
            if token_matches(bearer):
                return None
            authentication_failed("bearer authentication")
        elif _session_may_call_api():
            return None
        body = error_body(401, "unauthorized", "send Authorization: Bearer <WORKFLOW_API_TOKEN>")
        return jsonify(body), 401, {"WWW-Authenticate": 'Bearer realm="PyFlow"'}
    if logged_in():
        return None
    full_path = request.full_path if request.query_string else request.path
    return redirect(url_for("dashboard.login", next=full_path))


def requires_role(role: str):
    """Mark a view as needing ``role`` (DESIGN section 10: viewer, operator, admin); read as ``view.required_role``.

    Today WORKFLOW_API_TOKEN, the one token, is an admin, so the mark changes nothing yet; tokens with roles
    map it onto a 403 naming the role.
    """
    def mark(view):
        view.required_role = role
        return view

    return mark
