"""The wait action: pause the run for a while, stopping early when it is cancelled.

A wait longer than PARK_AFTER_SECONDS parks the run (DESIGN section 12): no thread, no slot;
the engine's waker continues it when the time is up, also after a restart.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actions.base import ActionError, BaseAction, Park, SettingError
from actions.base import seconds as parse_seconds
from actions.limits import capped

logger = logging.getLogger(__name__)

# Shorter waits sleep on their thread: parking and waking cost a few store writes and up to a second late.
PARK_AFTER_SECONDS = 5.0


class WaitAction(BaseAction):
    """Waits ``seconds``; returns ``{"waited_s"}``. Cancelling the run ends the wait at once."""

    type = "wait"
    result_keys = ("waited_s",)

    def __init__(self, name: str, *, seconds: float | str, **options: Any):
        super().__init__(name, **options)
        if not (isinstance(seconds, str) and "{{" in seconds):
            try:
                parse_seconds(seconds, "seconds", "wait", allow_zero=True)
            except ActionError as error:
                raise SettingError("seconds", f"action {name!r}: {error}") from None
        self.seconds = seconds

    def execute(self, data_store: dict) -> dict:
        """Sleep on the run's cancel event, so a cancel wakes it."""
        seconds = parse_seconds(self.seconds, "seconds", "wait", allow_zero=True)
        capped(seconds, "WORKFLOW_MAX_WAIT", self.context.settings, "wait: seconds")
        parked = self.context.parked
        if parked and parked.get("for") == "time" and parked.get("until_epoch"):
            seconds = max(float(parked["until_epoch"]) - time.time(), 0.0)  # executed again: what remains
        if self.context.can_park and seconds > PARK_AFTER_SECONDS:
            until = time.time() + seconds
            raise Park("time", until=until, details={"seconds": seconds, "until_epoch": until})
        started = time.monotonic()
        if self.context.cancel_event.wait(seconds):
            raise ActionError(f"cancelled after {time.monotonic() - started:.1f} s of a {seconds:g} s wait",
                              retryable=False)
        return {"waited_s": round(time.monotonic() - started, 3)}
