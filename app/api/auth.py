"""Access control: a bearer token for /api and /metrics, a login session for the dashboard, roles for both.

Everything is open while WORKFLOW_API_TOKEN is unset (a local tool on
127.0.0.1): every caller is the admin "anonymous". Once it is set, /api and
/metrics need ``Authorization: Bearer <token>`` or a logged-in dashboard
session, and dashboard pages redirect to the login page. The token is
WORKFLOW_API_TOKEN (the admin "admin") or one made with POST /api/tokens,
whose role (app/api/roles.py) decides which endpoints it may call; others get
403 naming the role they need. /api/health (liveness probes) and /api/hooks/
(webhooks carry their own HMAC signature) stay open.

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
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, g, jsonify, redirect, request, session, url_for

from app.api import hosts
from app.api.hosts import is_loopback
from app.api.roles import Role, allows, required
from app.api.sessions import FILENAME, LoginRegistry, TLSAwareSessionInterface
from app.api.throttle import FailureLimiter
from app.core import audit
from app.errors import Forbidden, error_body
from app.runs import format_time, parse_time

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/api/health", "/login", "/favicon.ico"})
# Approval links (/approvals/<signed token>) carry their own signature, like webhooks.
OPEN_PREFIXES = ("/api/hooks/", "/static/", "/approvals/")
# Paths answered with a 401 JSON error rather than a redirect to the login page.
API_PREFIXES = ("/api/", "/metrics")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_KEY = "login"
TOKEN_NAME_KEY = "token_name"  # the stored token a session logged in with; absent for WORKFLOW_API_TOKEN
LOGIN_ID_KEY = "login_id"
LOGIN_AT_KEY = "login_at"
CSRF_HEADER = "X-CSRF-Token"
# Failed authentications one address may make within FAILURE_WINDOW seconds before it is locked out.
FAILURE_LIMIT = 10
FAILURE_WINDOW = 60.0
LIMITER_KEY = "pyflow_auth_failures"
LOGINS_KEY = "pyflow_logins"
DENIALS_KEY = "pyflow_access_denials"
#: The actor name of WORKFLOW_API_TOKEN, and of every caller while access is open.
ADMIN_ACTOR = "admin"
OPEN_ACTOR = "anonymous"
# The longest "METHOD /path" an access.denied audit entry keeps.
MAX_DENIED_TARGET = 200
# A token's last_used is written at most this often (seconds): not a store write per request.
LAST_USED_RESOLUTION = 60.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name (the audit log's actor) and its role."""

    name: str
    role: Role
    #: The stored token's record (None for WORKFLOW_API_TOKEN and open access).
    token: dict | None = None


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
    app.extensions[DENIALS_KEY] = FailureLimiter(FAILURE_LIMIT, FAILURE_WINDOW)  # per token, not address
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


def digest(token: str) -> str:
    """How a token is stored and compared: its sha256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(candidate: str | None) -> bool:
    """True when ``candidate`` is WORKFLOW_API_TOKEN, compared in constant time (over the hashes: equal lengths)."""
    token = api_token()
    return bool(token) and candidate is not None and hmac.compare_digest(digest(candidate), digest(token))


def authenticate(candidate: str | None) -> Principal | None:
    """The caller ``candidate`` names: WORKFLOW_API_TOKEN's admin, a stored token, or None."""
    if not candidate:
        return None
    if token_matches(candidate):
        return Principal(ADMIN_ACTOR, Role.ADMIN)
    record = _store().find_token(digest(candidate))
    if record is None or not hmac.compare_digest(record["hash"], digest(candidate)):
        return None
    return _token_principal(record)


def _token_principal(record: dict) -> Principal | None:
    try:
        role = Role.parse(record.get("role"))
    except ValueError:
        logger.warning("token %r has an unknown role %r: refused", record.get("name"), record.get("role"))
        return None
    _note_use(record)
    return Principal(record["name"], role, record)


def _note_use(record: dict) -> None:
    """Record the token's use, at most once a LAST_USED_RESOLUTION."""
    now = time.time()
    last = record.get("last_used")
    try:
        fresh = last is not None and now - parse_time(last) < LAST_USED_RESOLUTION
    except ValueError:
        fresh = False
    if not fresh:
        _store().touch_token(record["name"], format_time(now))


def _store():
    return current_app.extensions["pyflow"].store


def principal() -> Principal:
    """This request's caller (open access: the admin "anonymous")."""
    found = g.get("pyflow_principal")
    if found is not None:
        return found
    return Principal(OPEN_ACTOR, Role.ADMIN) if not api_token() else Principal("webhook", Role.VIEWER)


def may(endpoint: str) -> bool:
    """Whether this request's caller may call ``endpoint`` (the dashboard shows only what it may do)."""
    return allows(principal().role, endpoint)


def _login_marker(record: dict | None = None) -> str:
    # Bound to the token: changing WORKFLOW_API_TOKEN, or deleting (or remaking) a stored token, logs its sessions out.
    bound = api_token() if record is None else f"token\0{record['name']}\0{record['hash']}"
    return hmac.new(current_app.secret_key.encode(), bound.encode(), hashlib.sha256).hexdigest()  # type: ignore[union-attr]


def _logins() -> LoginRegistry:
    return current_app.extensions[LOGINS_KEY]


def log_in(who: Principal) -> None:
    """Mark the session as logged in as ``who`` (the caller checked the token) for WORKFLOW_SESSION_HOURS."""
    # A fresh session on login, its CSRF token too: whoever planted the cookie before (a sibling subdomain can)
    # knows the old token, and would otherwise post forms as the user who then logged in.
    session.clear()
    session[SESSION_KEY] = _login_marker(record=who.token)
    if who.token is not None:
        session[TOKEN_NAME_KEY] = who.name
    session[LOGIN_ID_KEY] = _logins().open()
    session[LOGIN_AT_KEY] = time.time()
    session.permanent = True  # the cookie expires after PERMANENT_SESSION_LIFETIME instead of living on


def log_out() -> None:
    """End the login on the server too, so a copy of the cookie no longer works."""
    _logins().close(session.get(LOGIN_ID_KEY))
    session.clear()


def session_principal() -> Principal | None:
    """Who the session is logged in as, while its login is live and younger than WORKFLOW_SESSION_HOURS."""
    if not api_token():
        return Principal(OPEN_ACTOR, Role.ADMIN)
    marker, at = session.get(SESSION_KEY), session.get(LOGIN_AT_KEY)
    if not isinstance(marker, str):
        return None
    lifetime = float(current_app.config["WORKFLOW_SESSION_HOURS"]) * 3600
    if not isinstance(at, (int, float)) or not time.time() - lifetime < at <= time.time() + 60:
        return None
    name = session.get(TOKEN_NAME_KEY)
    record = _store().get_token(name) if isinstance(name, str) else None
    if name is not None and record is None:
        return None  # the token was deleted: so is every login made with it
    if not hmac.compare_digest(marker, _login_marker(record=record)):
        return None
    if not _logins().is_live(session.get(LOGIN_ID_KEY)):
        return None
    return _token_principal(record) if record is not None else Principal(ADMIN_ACTOR, Role.ADMIN)


def logged_in() -> bool:
    """True when access is open or the session holds a live login."""
    if g.get("pyflow_principal") is not None:
        return True  # checked by require_login for this request already
    return session_principal() is not None


def _limiter() -> FailureLimiter:
    return current_app.extensions[LIMITER_KEY]


def locked_out() -> int | None:
    """Seconds this request's address must wait after too many failed authentications; None if it need not."""
    return _limiter().retry_after(request.remote_addr)


def authentication_failed(what: str, via: str) -> None:
    """Count a failed authentication from this request's address, log and audit it (without the credential)."""
    _limiter().failed(request.remote_addr)
    logger.warning("failed %s from %s", what, request.remote_addr)
    audit.record(_store(), OPEN_ACTOR, "login.failure", via, {"address": request.remote_addr or ""})


def too_many_failures_message(wait: int) -> str:
    """What a locked-out client is told."""
    return (f"too many failed authentications from {request.remote_addr}: more than {FAILURE_LIMIT - 1} "
            f"within {FAILURE_WINDOW:g} s; try again in {wait} s")


def _bearer() -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _session_api_principal() -> Principal | None:
    """A dashboard session may call the API as its login; writes also need the session's CSRF token in a header."""
    who = session_principal()
    if who is None or request.method in SAFE_METHODS:
        return who
    expected, sent = session.get("csrf"), request.headers.get(CSRF_HEADER)
    # As bytes: compare_digest refuses str with non-ASCII characters (a header byte 0xE9), which was a 500.
    return who if bool(expected and sent) and hmac.compare_digest(str(expected).encode(), sent.encode()) else None


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


def require_login() -> Response | tuple[Response, int] | tuple[Response, int, dict] | None:
    """The before_request hook: who calls (``principal()``), and whether its role may; None lets the request through."""
    if not api_token() or is_open(request.path):
        return None
    if request.path.startswith(API_PREFIXES):
        bearer = _bearer()
        who = None
        if bearer is not None:
            # Checked before the token: during a lockout even the right one is refused, which stops guessing.
            wait = locked_out()
            if wait is not None:
                body = error_body(429, "too_many_failed_authentications", too_many_failures_message(wait))
                return jsonify(body), 429, {"Retry-After": str(wait)}
            who = authenticate(bearer)
            if who is None:
                authentication_failed("bearer authentication", "api")
        else:
            who = _session_api_principal()
        if who is None:
            body = error_body(401, "unauthorized", "send Authorization: Bearer <token> (WORKFLOW_API_TOKEN or "
                                                   "one made with POST /api/tokens)")
            return jsonify(body), 401, {"WWW-Authenticate": 'Bearer realm="PyFlow"'}
        g.pyflow_principal = who
        return _forbidden_answer(who)
    who = session_principal()
    if who is not None:
        g.pyflow_principal = who
        return _forbidden_answer(who)
    full_path = request.full_path if request.query_string else request.path
    return redirect(url_for("dashboard.login", next=full_path))


def _audit_denial(who: Principal, need: Role) -> None:
    """Audit a refused call like a failed login, so a viewer or operator probing admin endpoints shows.

    At most FAILURE_LIMIT entries per token a minute: a token that loops on a refused call must not fill
    the disk with audit entries; the rest are logged.
    """
    target = f"{request.method} {request.path}"
    if len(target) > MAX_DENIED_TARGET:
        target = target[:MAX_DENIED_TARGET] + "..."
    denials: FailureLimiter = current_app.extensions[DENIALS_KEY]
    if denials.retry_after(who.name) is not None:
        logger.warning("refused %r to token %r (more than %d refusals a minute: not audited)", target, who.name,
                       FAILURE_LIMIT)
        return
    denials.failed(who.name)
    audit.record(_store(), who.name, "access.denied", target, {"required_role": need.label, "role": who.role.label})


def _forbidden_answer(who: Principal) -> tuple[Response, int] | None:
    """403 naming the role needed when ``who`` may not call this endpoint (a dashboard page: an HTML 403)."""
    if request.endpoint is None or allows(who.role, request.endpoint):
        return None  # no such endpoint: the 404 or 405 says so
    need = required(request.endpoint)
    _audit_denial(who, need)
    message = (f"{request.method} {request.path} needs the {need.label} role; "
               f"token {who.name!r} is a{'n' if who.role.label[0] in 'aeiou' else ''} {who.role.label}")
    if not request.path.startswith(API_PREFIXES):
        abort(403, description=message)
    error = Forbidden(message, details={"required_role": need.label, "role": who.role.label})
    return jsonify(error.to_dict()), 403
