"""The wait_for_event action: park the run until an event of a type (and correlation key) is published."""

from __future__ import annotations

import time
from typing import Any

from actions.base import ActionError, BaseAction, Park, SettingError, check_timeout
from actions.base import seconds as parse_seconds
from actions.printable import unprintable

ON_TIMEOUT = ("fail", "continue")
DEFAULT_TIMEOUT = 86400.0
# The longest key a posted event may carry (app/core/events.py): a longer one could never come.
MAX_KEY_LENGTH = 255


class WaitForEventAction(BaseAction):
    """Waits for ``POST /api/events`` of type ``event`` (with ``key``, when set) for up to ``timeout`` seconds.

    Returns ``{"event": {"id", "type", "data", "key", "at"}, "timed_out": false}``; after the
    timeout ``on_timeout: continue`` returns ``{"event": null, "timed_out": true}`` and ``fail``
    fails the step. The run is parked meanwhile: it holds no thread and no slot.
    """

    type = "wait_for_event"
    # It waits without a thread, for hours; a loop holds its thread for each item: never among its steps.
    parks_only = True
    result_keys = ("event", "timed_out")
    config_choices = {"on_timeout": ON_TIMEOUT}
    idempotent = True

    def __init__(self, name: str, *, event: str, key: Any = None, timeout: float | str = DEFAULT_TIMEOUT,
                 on_timeout: str = "fail", **options: Any):
        super().__init__(name, **options)
        if not isinstance(event, str) or not event.strip():
            raise SettingError("event", f"action {name!r}: event must be an event type such as 'order.paid', "
                                        f"got {event!r}")
        check_timeout("wait_for_event", name, timeout, on_timeout, ON_TIMEOUT)
        self.event = event
        self.key = key
        self.timeout = timeout
        self.on_timeout = on_timeout

    def execute(self, data_store: dict) -> dict:
        """Park the run; the engine resumes it with the event or the timeout's outcome."""
        if not self.context.can_park:
            raise ActionError("wait_for_event can only wait in a step of a run on a server (not in a loop's steps, "
                              "a sub-workflow, or python run.py run)", retryable=False)
        timeout = parse_seconds(self.timeout, "timeout", "wait_for_event")
        key = None if self.key is None or self.key == "" else str(self.key)
        if key is not None:
            _check_key(key)
        parked = self.context.parked or {}
        until = parked.get("until_epoch") if parked.get("for") == "event" else None
        until = float(until) if until else time.time() + timeout
        raise Park("event", until=until, event=self.event.strip(), key=key, on_timeout=self.on_timeout,
                   details={"timeout_s": timeout, "until_epoch": until})


def _check_key(key: str) -> None:
    """ActionError (not retried) for a key no posted event can carry: it would only wait for its timeout."""
    found = unprintable(key)
    if found or len(key) > MAX_KEY_LENGTH:
        why = (f"contains a control or format character ({found})" if found
               else f"is {len(key)} characters long (at most {MAX_KEY_LENGTH})")
        raise ActionError(f"wait_for_event: key {key[:60]!r} {why}; no event can carry such a key",
                          retryable=False)
