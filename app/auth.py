"""Access control: a bearer token for /api and /metrics, a login session for the dashboard.

Everything is open while WORKFLOW_API_TOKEN is unset (a local tool on
127.0.0.1). Once it is set, /api and /metrics need ``Authorization: Bearer
<token>`` or a logged-in dashboard session, and dashboard pages redirect to the
login page. /api/health (liveness probes) and /api/hooks/ (webhooks carry
their own HMAC signature) stay open.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify, redirect, request, session, url_for

from app.errors import error_body

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/api/health", "/login"})
OPEN_PREFIXES = ("/api/hooks/", "/static/")
# Paths answered with a 401 JSON error rather than a redirect to the login page.
API_PREFIXES = ("/api/", "/metrics")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_KEY = "login"
CSRF_HEADER = "X-CSRF-Token"


def init_app(app: Flask) -> None:
    """Set the session key and check every request before it reaches a view."""
    # A random key per process is safe by default; sessions then end when the server restarts.
    app.secret_key = app.config.get("WORKFLOW_SECRET_KEY") or secrets.token_hex(32)
    # Flask's defaults are HttpOnly and no SameSite; Lax keeps the cookie off cross-site posts as well.
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.before_request(refuse_cross_site)
    app.before_request(require_login)


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


def log_in() -> None:
    """Mark the session as logged in (the caller checked the token)."""
    csrf = session.get("csrf")
    session.clear()  # a fresh session on login: nothing from before carries over
    if csrf:
        session["csrf"] = csrf
    session[SESSION_KEY] = _login_marker()


def log_out() -> None:
    """Forget the login."""
    session.clear()


def logged_in() -> bool:
    """True when access is open or the session holds a valid login."""
    if not api_token():
        return True
    marker = session.get(SESSION_KEY)
    return isinstance(marker, str) and hmac.compare_digest(marker, _login_marker())


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
        if token_matches(_bearer()) or _session_may_call_api():
            return None
        body = error_body(401, "unauthorized", "send Authorization: Bearer <WORKFLOW_API_TOKEN>")
        return jsonify(body), 401, {"WWW-Authenticate": 'Bearer realm="PyFlow"'}
    if logged_in():
        return None
    full_path = request.full_path if request.query_string else request.path
    return redirect(url_for("dashboard.login", next=full_path))
