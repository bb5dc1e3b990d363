"""Dashboard logins kept on the server, so that logging out ends a session for good.

Flask's session is a signed cookie held by the browser: clearing it at logout
does not stop a copy taken earlier. So each login gets a random id, the
session carries it, and the server keeps the ids of live logins (hashed, with
their expiry) in ``sessions.json`` under the store's folder. Logout removes
the id; a cookie whose id is not live is not logged in. The file lets logins
survive a restart when WORKFLOW_SECRET_KEY is set (without it the signing key
is new each start and every old cookie is void anyway).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface

from app.errors import StorageError
from app.storage.json.files import dumps, read_json, write_atomic

logger = logging.getLogger(__name__)

FILENAME = "sessions.json"
# More live logins than this and the oldest are logged out: the file stays small.
MAX_LOGINS = 10_000


class TLSAwareSessionInterface(SecureCookieSessionInterface):
    """The session cookie is ``Secure`` whenever the request came over TLS (or SESSION_COOKIE_SECURE says so)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        # request.is_secure sees TLS terminated by a proxy only when ProxyFix trusts its X-Forwarded-Proto.
        return bool(request.is_secure) or super().get_cookie_secure(app)


def _digest(login_id: str) -> str:
    # The file holds digests, so reading it gives nobody a login id.
    return hashlib.sha256(login_id.encode()).hexdigest()


class LoginRegistry:
    """The ids of live logins and when each expires; thread-safe, saved to ``path`` on every change."""

    def __init__(self, path: Path | None, lifetime: float, clock: Callable[[], float] = time.time):
        self.path = path
        self.lifetime = lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, float] = {}
        if path is not None:
            try:
                saved = read_json(path, {})
            except StorageError as error:
                # Unreadable: everyone logs in again, which is the safe side.
                logger.warning("ignoring saved logins: %s", error.message)
                saved = {}
            logins = saved.get("logins") if isinstance(saved, dict) else None
            if isinstance(logins, dict):
                self._live = {key: float(at) for key, at in logins.items()
                              if isinstance(key, str) and isinstance(at, (int, float))}

    def open(self) -> str:
        """A new login's id, live for ``lifetime`` seconds."""
        login_id = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._prune(now)
            self._live[_digest(login_id)] = now + self.lifetime
            while len(self._live) > MAX_LOGINS:
                oldest = min(self._live, key=self._live.__getitem__)
                del self._live[oldest]
            self._save()
        return login_id

    def is_live(self, login_id: object) -> bool:
        """True when ``login_id`` was opened, has not been closed and has not expired."""
        if not isinstance(login_id, str) or not login_id:
            return False
        with self._lock:
            expires = self._live.get(_digest(login_id))
            return expires is not None and expires > self._clock()

    def close(self, login_id: object) -> None:
        """End a login: its id is never live again."""
        if not isinstance(login_id, str) or not login_id:
            return
        with self._lock:
            if self._live.pop(_digest(login_id), None) is not None:
                self._prune(self._clock())
                self._save()

    def __len__(self) -> int:
        return len(self._live)

    def _prune(self, now: float) -> None:
        for key in [key for key, expires in self._live.items() if expires <= now]:
            del self._live[key]

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            write_atomic(self.path, dumps({"logins": self._live}))
        except StorageError as error:
            # The login still works in this process; after a restart it must be made again.
            logger.warning("cannot save logins: %s", error.message)
