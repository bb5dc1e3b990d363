"""The wait action: pause the run for a while, stopping early when it is cancelled."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from actions.base import ActionError, BaseAction

logger = logging.getLogger(__name__)


class WaitAction(BaseAction):
    """Waits ``seconds``; returns ``{"waited_s"}``. Cancelling the run ends the wait at once."""

    type = "wait"

    def __init__(self, name: str, *, seconds: float | str, **options: Any):
        super().__init__(name, **options)
        if not (isinstance(seconds, str) and "{{" in seconds):
            try:
                _seconds(seconds)
            except ActionError as error:
                raise ValueError(f"action {name!r}: {error}") from None
        self.seconds = seconds

    def execute(self, data_store: dict) -> dict:
        """Sleep on the run's cancel event, so a cancel wakes it."""
        seconds = _seconds(self.seconds)
        started = time.monotonic()
        if self.context.cancel_event.wait(seconds):
            raise ActionError(f"cancelled after {time.monotonic() - started:.1f} s of a {seconds:g} s wait",
                              retryable=False)
        return {"waited_s": round(time.monotonic() - started, 3)}


def _seconds(value: Any) -> float:
    try:
        number = float(str(value).strip()) if not isinstance(value, bool) else math.nan
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= 0):
        raise ActionError(f"wait: seconds must be a number >= 0, got {value!r}", retryable=False)
    return number
