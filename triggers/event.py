"""A trigger that starts a run for each published event of a type (POST /api/events, or a run's end)."""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from actions.base import SettingError
from triggers.base import BaseTrigger

# A filter must be one template: "{{ event.data.amount > 100 }}".
_TEMPLATE = re.compile(r"^\s*\{\{.*\}\}\s*$", re.DOTALL)


class EventTrigger(BaseTrigger):
    """Fires on events whose type matches ``event`` (a name, or a pattern such as ``run.*``) while started.

    ``filter`` is a template over ``event`` (``{"id", "type", "data", "key", "at"}``); a run starts only
    when it renders true. The trigger data is the event. A workflow never fires on the ``run.*``
    events of its own runs (no loop), and a chain of runs started by runs' ends stops after
    MAX_EVENT_DEPTH links (app/core/events.py).
    """

    type = "event"
    # Events arrive by themselves (app/core/events.py matches them); there is nothing to poll.
    pollable = False
    # Rendered per event over ``event``, not at binding over the settings.
    raw_fields = ("filter",)

    def __init__(self, name: str, event: str, filter: str | None = None):  # noqa: A002 (the definition's key)
        super().__init__(name)
        if not isinstance(event, str) or not event.strip():
            raise SettingError("event", f"trigger {name!r}: event must be an event type such as 'ticket.created' "
                                        f"or 'run.*', got {event!r}")
        if filter is not None and not (isinstance(filter, str) and _TEMPLATE.match(filter)):
            raise SettingError("filter", f"trigger {name!r}: filter must be one template over event, such as "
                                         f"\"{{{{ event.data.priority == 'high' }}}}\", got {filter!r}")
        self.event = event.strip()
        self.filter = filter

    def matches_type(self, event_type: str) -> bool:
        """Whether an event of ``event_type`` is this trigger's (exactly, or by its pattern)."""
        return fnmatch.fnmatchcase(event_type, self.event)

    def is_triggered(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "event": self.event, "filter": self.filter}
