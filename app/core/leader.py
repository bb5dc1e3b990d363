"""Which of several servers on one PostgreSQL database polls triggers: the holder of an advisory lock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# The advisory lock every PyFlow server of a database competes for ("pyflow" in ASCII): locks are per database.
LOCK_KEY = 0x7079666C6F77
# How often a follower tries the lock and the leader checks its connection: with the keepalives below,
# a dead leader's lock is free within ~11 s and taken within CHECK_SECONDS more (issue 14: 15 s).
CHECK_SECONDS = 2.0
# Client and server drop a connection whose peer stopped answering (a host gone without a FIN): an idle one
# after idle + interval * count = 11 s, one with unanswered data after tcp_user_timeout (9 s; PostgreSQL 12+),
# so neither a dead leader's lock nor a cut-off leader's belief outlives it by much.
_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
              "tcp_user_timeout": 9000}
_SERVER_KEEPALIVE = ("-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 "
                     "-c tcp_user_timeout=9000")
_CONNECT_TIMEOUT = 5


class Leadership:
    """Holds a session-level ``pg_try_advisory_lock`` on a connection of its own (not the store's pool).

    A thread tries the lock every CHECK_SECONDS while it does not hold it, and
    runs ``SELECT 1`` as often while it does. ``on_gain`` is called when the lock
    is taken; ``on_check`` after each check that the leader's connection answered;
    ``on_loss`` when the connection fails (PostgreSQL has freed the
    lock, or will when it notices) or at ``stop``. PostgreSQL frees the lock the
    moment the holder's session ends, so a killed leader hands over by itself.
    """

    def __init__(self, url: str, on_gain: Callable[[], object], on_loss: Callable[[], object],
                 *, on_check: Callable[[], object] | None = None, every: float = CHECK_SECONDS):
        self._url = url
        self._on_gain = on_gain
        self._on_loss = on_loss
        self._on_check = on_check
        self._every = every
        self._conn: Any = None  # a psycopg.Connection while one is open
        self._leading = False
        self._unreachable = False  # said once per outage, not every CHECK_SECONDS
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        """True while this process holds the lock (and its connection last answered)."""
        return self._leading

    def start(self) -> None:
        """Try the lock now, then keep trying (or checking) in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="pyflow-leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling triggers and release the lock (closing the connection), so another server takes over."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)
        self._lose("this server is stopping", level=logging.INFO)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if self._leading:
                self._check()
            else:
                self._try()
            self._stopping.wait(self._every)

    def _try(self) -> None:
        """Take the lock if it is free; a database that cannot be reached is tried again later."""
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT,
                                             options=_SERVER_KEEPALIVE, application_name="pyflow-leader",
                                             **_KEEPALIVE)
            got = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
        except psycopg.Error as error:
            if not self._unreachable:
                self._unreachable = True
                # The store's helpers name the database and the cause without the URL's password.
                from app.storage.postgres import _cause, where

                logger.warning("cannot try for trigger leadership in the database at %s, retrying every %g s: %s",
                               where(self._url), self._every, _cause(error, self._url))
            self._close()
            return
        self._unreachable = False
        if got and not self._stopping.is_set():
            self._leading = True
            logger.info("this server now polls triggers (it holds the leader lock of the database)")
            self._call(self._on_gain, "starting to poll triggers")
        elif got:  # stop() came while the lock was being taken: give it back at once
            self._close()

    def _check(self) -> None:
        """Ask the connection to answer; on failure this server stops polling at once."""
        import psycopg

        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error as error:
            from app.storage.postgres import _cause

            self._lose(f"its database connection failed: {_cause(error, self._url)}")
            return
        if self._on_check is not None:
            self._call(self._on_check, "following the started workflows")

    def _lose(self, why: str, level: int = logging.WARNING) -> None:
        """Stop leading (when leading) and close the connection, which frees the lock in PostgreSQL."""
        was, self._leading = self._leading, False
        self._close()
        if was:
            logger.log(level, "this server stopped polling triggers: %s", why)
            self._call(self._on_loss, "stopping to poll triggers")

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a broken connection may refuse even that; it is gone either way
                logger.debug("closing the leader connection failed", exc_info=True)

    @staticmethod
    def _call(callback: Callable[[], object], what: str) -> None:
        try:
            callback()
        except Exception:  # the thread must keep watching the lock whatever the scheduler did
            logger.exception("%s failed", what)
