"""A job a leading server repeats on a thread of its own (the sweeper, the waker of parked runs)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app.core.execution import one_line
from app.errors import StorageError

logger = logging.getLogger(__name__)


class Periodic:
    """Calls ``work`` every ``interval`` seconds between ``start`` and ``stop``; a failure is logged, never raised."""

    def __init__(self, name: str, interval: float, work: Callable[[], object], what: str):
        self.name = name
        self.interval = interval
        self._work = work
        self._what = what  # "sweeping runs without a worker": how the log names a failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Repeat on a thread until ``stop`` (when this server becomes the leader); nothing if already repeating."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and not self._stop.is_set():
                return
            # A stopped thread may still be in its last round (a sweep waiting on the database): it ends
            # with its own event, and the new thread waits for it, so rounds never overlap.
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, args=(self._stop, self._thread), name=self.name,
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop repeating (this server stopped leading, or shuts down)."""
        with self._lock:
            self._stop.set()

    def _loop(self, stop: threading.Event, previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join()
        while not stop.wait(self.interval):
            try:
                self._work()
            except StorageError as error:  # the database went away: the next round tries again
                logger.warning("%s failed: %s", self._what, one_line(error))
            except Exception:
                logger.exception("%s failed", self._what)
