"""A trigger that fires every N seconds."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from actions.base import SettingError
from triggers.base import BaseTrigger


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_seconds(value: Any, field: str, key: str | None = None) -> float:
    """A positive number of seconds, or ValueError naming ``field`` (SettingError when it is the setting ``key``)."""
    try:
        if isinstance(value, bool):  # float(True) is 1.0: a yes/no is no number of seconds
            raise TypeError
        seconds = float(value)
    except (TypeError, ValueError):
        raise _refusal(key, f"{field} must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise _refusal(key, f"{field} must be greater than 0, got {value!r}")
    if math.isinf(seconds):  # "inf" fires once, then never: surely not what was meant
        raise _refusal(key, f"{field} must be a finite number of seconds, got {value!r}")
    return seconds


def _refusal(key: str | None, message: str) -> ValueError:
    # Without a key the value is no trigger's setting (EMAIL_POLL_INTERVAL), so no field is to blame.
    return ValueError(message) if key is None else SettingError(key, message)


class IntervalTrigger(BaseTrigger):
    """Fires once every ``seconds``; the first poll after a start fires at once."""

    type = "interval"

    def __init__(self, name: str, seconds: float | str = 60):
        super().__init__(name)
        # A template such as "{{ settings.UPTIME_INTERVAL }}" is checked in setup().
        if not (isinstance(seconds, str) and "{" in seconds):
            parse_seconds(seconds, f"trigger {name!r}: seconds", "seconds")
        self.seconds = seconds

    @property
    def default_check_interval(self) -> float:  # type: ignore[override]
        return min(self.interval, 1.0)

    @property
    def interval(self) -> float:
        return parse_seconds(self.seconds, f"trigger {self.name!r}: seconds", "seconds")

    def setup(self, settings: Mapping[str, Any]) -> None:
        self.seconds = self.interval

    def _due_at(self) -> float:
        last = self.state.get("last_fired_at")
        return 0.0 if last is None else last + self.interval

    def is_triggered(self) -> bool:
        return time.time() >= self._due_at()

    def next_fire_time(self) -> float:
        """The next point on the grid; now when it has never fired."""
        return self._due_at() or time.time()

    def event_key(self, event: dict) -> str | None:
        """One run per scheduled time, even if a crash lost the saved state after the run was stored."""
        return f"interval:{event['scheduled_time']}"

    def get_trigger_data(self) -> dict:
        now = time.time()
        due = self._due_at() or now
        # Fire times stay on the grid, so a late poll does not drift the schedule;
        # after a long outage the grid restarts from now instead of catching up.
        self.state["last_fired_at"] = due if now - due < self.interval else now
        return {"scheduled_time": _iso(due), "fired_at": _iso(now)}
