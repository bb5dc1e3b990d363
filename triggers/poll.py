"""A trigger that fires when a user-supplied condition becomes true."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from actions.base import SettingError
from triggers.base import BaseTrigger
from triggers.interval import _iso, parse_seconds


class PollTrigger(BaseTrigger):
    """Calls ``condition()`` every ``interval`` seconds and fires when it is truthy.

    A condition may return a dict: that dict becomes the trigger data, so a
    check such as "is there a new release?" can hand the release to the run.
    """

    type = "poll"

    def __init__(self, name: str, condition: Callable[[], Any], interval: float | str = 60):
        super().__init__(name)
        if not callable(condition):
            raise SettingError("condition", f"trigger {name!r}: condition must be callable, got {condition!r}")
        self._condition = condition
        if not (isinstance(interval, str) and "{" in interval):
            parse_seconds(interval, f"trigger {name!r}: interval", "interval")
        self.interval = interval
        self._last_value: Any = None

    @property
    def default_check_interval(self) -> float:  # type: ignore[override]
        return parse_seconds(self.interval, f"trigger {self.name!r}: interval", "interval")

    def setup(self, settings: Mapping[str, Any]) -> None:
        self.interval = self.default_check_interval

    def is_triggered(self) -> bool:
        self._last_value = self._condition()
        return bool(self._last_value)

    def get_trigger_data(self) -> dict:
        now = time.time()
        self.state["last_fired_at"] = now
        data = {"fired_at": _iso(now)}
        if isinstance(self._last_value, dict):
            data.update(self._last_value)
        return data

    def describe(self) -> dict:
        condition = getattr(self._condition, "__qualname__", repr(self._condition))
        return {**super().describe(), "condition": condition}
