"""The base class every trigger derives from."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from actions.text import snake

logger = logging.getLogger(__name__)


class TriggerError(RuntimeError):
    """A poll failed for a reason the message states fully (server down, login refused).

    The runtime logs it without a traceback and retries with backoff.
    """


class BaseTrigger:
    """Decides when a workflow runs and with which data.

    The runtime polls a started workflow's trigger every ``check_interval``
    seconds. ``self.state`` is a JSON-serialisable dict the runtime saves after
    every poll and restores on start-up (cursors, last fire time, seen ids).
    """

    # The name the trigger's ``type`` shows in summaries and definitions.
    type: str = ""
    # False for triggers the scheduler does not poll (manual, webhook).
    pollable: bool = True
    # False for triggers that cannot be started at all (manual: runs come only from the API).
    startable: bool = True
    # Seconds between polls when the workflow does not set check_interval.
    default_check_interval: float = 1.0
    # A run's ``source`` when the scheduler's poll brought its event: "schedule", "email", "file".
    run_source: str = "schedule"
    # Private attributes holding a credential (never rendered, never described) that may be exactly
    # ``{{ secrets.NAME }}``: the runtime puts the stored secret's value there before setup().
    secret_fields: tuple[str, ...] = ()
    # Config fields limited to a set of values: {field: the values}. The same constants the
    # constructor checks against, so GET /api/catalog's enums cannot drift from the code.
    config_choices: Mapping[str, Sequence[str]] = {}

    def __init__(self, name: str):
        if not isinstance(name, str) or not name:
            raise ValueError(f"trigger name must be a non-empty string, got {name!r}")
        self.name = name
        self.state: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("type"):
            cls.type = snake(cls.__name__, "Trigger")

    def setup(self, settings: Mapping[str, Any]) -> None:
        """Check and complete the configuration once the runtime binds the trigger.

        String attributes have already been rendered with ``settings`` in the
        context, so ``seconds="{{ settings.UPTIME_INTERVAL }}"`` arrives here as
        a value. Raise ``ValueError`` naming the field when one is wrong.
        """

    def is_triggered(self) -> bool:
        """True when the trigger has an event now."""
        raise NotImplementedError(f"{type(self).__name__} must implement is_triggered()")

    def get_trigger_data(self) -> dict:
        """The event that ``is_triggered`` found."""
        return {}

    def poll(self) -> list[dict]:
        """Every event available now, one run each; override for batches."""
        return [self.get_trigger_data()] if self.is_triggered() else []

    def next_fire_time(self) -> float | None:
        """Epoch seconds of the next poll that can fire; None polls every ``check_interval``.

        A trigger that knows its schedule (interval, cron) returns it, so the
        scheduler polls at that moment instead of up to a check interval late.
        A time in the past means "poll now".
        """
        return None

    def event_key(self, event: dict) -> str | None:
        """A stable id for an event, so a re-fetched event starts no second run."""
        return None

    def attachment_folders(self, event: dict) -> list[str]:
        """The folders (names under the server's attachments folder) this trigger saved ``event``'s files in.

        Its run may read them, and only them there: a trigger that saves files (e-mail) names its folders;
        none by default, whatever the event's data says.
        """
        return []

    def acknowledge(self, event: dict, run_id: str) -> None:
        """Called once the event's run is durably stored; move cursors here."""

    def close(self) -> None:
        """Release connections; called when the workflow stops or the server shuts down."""

    def describe(self) -> dict:
        """Type and public settings for the API; the runtime redacts secrets."""
        settings = {
            key: value
            for key, value in vars(self).items()
            if not key.startswith("_") and key not in ("name", "state")
        }
        return {"type": self.type, "name": self.name, **settings}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
