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

    def start(self) -> None:
        """Repeat on a thread until ``stop`` (when this server becomes the leader); nothing if already repeating."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop repeating (this server stopped leading, or shuts down)."""
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._work()
            except StorageError as error:  # the database went away: the next round tries again
                logger.warning("%s failed: %s", self._what, one_line(error))
            except Exception:
                logger.exception("%s failed", self._what)
