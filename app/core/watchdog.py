"""One thread that notices steps running past their deadline."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

IDLE_LOOK_SECONDS = 5.0


class Watchdog:
    """Calls ``on_expired(subject)`` for every armed deadline that passes before it is disarmed.

    Arming and disarming are a dict operation under a lock, so a step pays no
    thread hand-off for its timeout; only an expired step costs a thread.
    """

    def __init__(self, on_expired: Callable[[Any], None]):
        self._on_expired = on_expired
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, Any]] = {}
        self._tokens = itertools.count(1)
        self._wake_at = float("inf")
        self._thread: threading.Thread | None = None
        self._stopped = False

    def arm(self, subject: Any, seconds: float) -> int:
        """Watch ``subject`` for ``seconds``; returns the token that disarms it."""
        deadline = time.monotonic() + seconds
        with self._cond:
            token = next(self._tokens)
            self._armed[token] = (deadline, subject)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="pyflow-watchdog", daemon=True)
                self._thread.start()
            elif deadline < self._wake_at:
                self._cond.notify()
        return token

    def disarm(self, token: int) -> bool:
        """Stop watching; False when the deadline already expired (the subject was handed on)."""
        with self._cond:
            return self._armed.pop(token, None) is not None

    def stop(self) -> None:
        """End the watchdog thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                expired = [token for token, (deadline, _) in self._armed.items() if deadline <= now]
                subjects = [self._armed.pop(token)[1] for token in expired]
                # Idle, it still looks in every few seconds: an arm whose deadline is later than that
                # (the usual minutes-long step timeout) then needs no wake-up, so a step costs no switch.
                self._wake_at = min((deadline for deadline, _ in self._armed.values()), default=now + IDLE_LOOK_SECONDS)
                if not subjects:
                    self._cond.wait(timeout=max(self._wake_at - now, 0.0))
                    continue
            for subject in subjects:
                try:
                    self._on_expired(subject)
                except Exception:
                    logger.exception("timeout handler failed for %r", subject)
