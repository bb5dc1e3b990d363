"""A trigger that only fires through the API or the CLI."""

from triggers.base import BaseTrigger


class ManualTrigger(BaseTrigger):
    """Never fires by itself; runs start with POST /api/workflows/{name}/runs."""

    type = "manual"
    pollable = False
    startable = False

    def is_triggered(self) -> bool:
        return False
