"""``python run.py``: the store's lock and the port first, then the app; a shutdown that answers what it accepted.

Order matters: a second server on the same storage must fail before its
runtime recovers anything, since recovery would take over the live server's
runs. So: lock the storage folder, bind the port, and only then create the
app and start it (its runtime resumes interrupted runs).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from waitress import create_server, wasyncore

from app.errors import ConfigError, PyFlowError
from app.storage.lock import StoreLock

logger = logging.getLogger("run")

# Requests served at once; more wait in waitress's task queue. A ?wait request holds its thread until
# its run ends: with 8, bench/load.py measured 200 clients at 0.73x the runs/s of 50, with 16 at 1.09x.
THREADS = 16
# How often the serving loop looks at the stop flag (a signal only sets it).
LOOP_SECONDS = 0.2
# One "Task queue depth" line per busy period: a period ends after this long without one.
QUEUE_QUIET_SECONDS = 60.0


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on host:port; ConfigError in one line naming host:port otherwise."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {where}: HOST {host!r} does not resolve ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"cannot listen on {where}: the address is already in use "
                              f"(another server listens there); stop it or set PORT") from None
        raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class QueueDepthLog(logging.Filter):
    """Lets one waitress "Task queue depth" line through per busy period instead of one per queued request."""

    def __init__(self, quiet_seconds: float = QUEUE_QUIET_SECONDS):
        super().__init__()
        self.quiet_seconds = quiet_seconds
        self._last = float("-inf")
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        busy, self._last = now - self._last < self.quiet_seconds, now
        if busy:
            self.dropped += 1
            return False
        record.msg = f"{record.msg} (requests wait for one of {THREADS} threads; more such lines are left out " \
                     f"until none has come for {self.quiet_seconds:g} s)"
        return True


class Server:
    """The serving process: waitress on a bound socket, and the shutdown that SIGTERM or Ctrl-C asks for."""

    def __init__(self, settings: Mapping[str, Any]):
        self.settings = settings
        self.grace = float(settings["WORKFLOW_SHUTDOWN_GRACE"])
        self._stop = threading.Event()
        self._stopped = threading.Event()  # "PyFlow stopped" was printed

    def run(self) -> int:
        """Lock the store, bind, create the app, serve until asked to stop, then shut down; the exit code."""
        settings = self.settings
        lock = StoreLock(settings["WORKFLOW_STORAGE_PATH"])
        lock.acquire()
        try:
            limit = int(settings["WORKFLOW_MAX_CONNECTIONS"])
            sock = listen(settings["HOST"], int(settings["PORT"]), backlog=max(limit, 1024))
            try:
                return self._serve(sock, limit)
            finally:
                sock.close()
        finally:
            lock.release()

    def _serve(self, sock: socket.socket, limit: int) -> int:
        from app import create_app, start_app  # Flask and the runtime load only once the store and port are ours

        app = start_app(create_app())  # recovery runs here, with the store's lock and the port held
        runtime = app.extensions["pyflow"]
        logging.getLogger("waitress.queue").addFilter(QueueDepthLog())
        # poll() instead of select(): select() cannot watch descriptors past 1024.
        server = create_server(app, sockets=[sock], threads=THREADS, ident="PyFlow", connection_limit=limit,
                               backlog=max(limit, 1024), asyncore_use_poll=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"PyFlow serving {len(runtime.bound)} workflows on http://{shown}:{port} (Ctrl-C to stop)", flush=True)
        while not self._stop.is_set():
            wasyncore.loop(timeout=LOOP_SECONDS, map=server._map, use_poll=True, count=1)
        self._shut_down(server, runtime)
        print("PyFlow stopped", flush=True)
        self._stopped.set()
        return 0

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self._stop.is_set():
            logger.info("%s again: already stopping", signal.Signals(signum).name)
            return
        self._stop.set()
        # Whatever hangs (a step, a poll, a read of a dead disk), the process ends within the grace period.
        threading.Thread(target=self._deadline, name="pyflow-shutdown-deadline", daemon=True).start()

    def _deadline(self) -> None:
        """Exit 0 once the grace period is over, if the process has not ended by then (a daemon: it may not)."""
        threading.Event().wait(self.grace)
        what = "threads that would not end" if self._stopped.is_set() else "the shutdown"
        logger.error("%s took longer than WORKFLOW_SHUTDOWN_GRACE (%g s); exiting now, "
                     "unfinished runs resume at the next start", what, self.grace)
        for handler in logging.getLogger().handlers:
            handler.flush()
        if not self._stopped.is_set():
            print("PyFlow stopped", flush=True)
        os._exit(0)

    def _shut_down(self, server: Any, runtime: Any) -> None:
        """Refuse new connections, answer the requests under way, then stop the runtime; errors are logged."""
        deadline = time.monotonic() + self.grace
        logger.info("shutting down: no new connections; answering the requests under way")
        server.accepting = False
        server.del_channel()
        server.socket.close()  # new clients are refused at once, not left waiting in the backlog
        runtime.release_waiters()  # a ?wait request answers now with the run as it stands (202)
        while _busy(server) and time.monotonic() < deadline - 1.0:
            wasyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)
        server.task_dispatcher.shutdown(timeout=max(min(deadline - time.monotonic() - 1.0, 5.0), 0.1))
        wasyncore.close_all(server._map)
        try:
            runtime.shutdown(timeout=max(deadline - time.monotonic() - 0.5, 0.1))
        except Exception as error:  # a read-only or full disk: the next start recovers from what was written
            logger.error("the store could not be flushed at shutdown: %s", error,
                         exc_info=not isinstance(error, (OSError, PyFlowError)))


def _busy(server: Any) -> bool:
    """True while a connection has a request being received, served or sent."""
    return any(channel.requests or channel.total_outbufs_len or channel.request is not None
               for channel in list(server.active_channels.values()))


def serve(settings: Mapping[str, Any]) -> int:
    """Serve the API with waitress until SIGTERM or Ctrl-C, then shut down cleanly; the exit code."""
    code = Server(settings).run()
    sys.stdout.flush()
    return code
