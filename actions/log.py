"""The log action: write a message to the run's log."""

from __future__ import annotations

import json
import logging
from typing import Any

from actions.base import ActionError, BaseAction, SettingError

# Not __name__: users filter and route their workflows' messages under one stable name. The engine
# copies records logged while a step runs into that run's log.
logger = logging.getLogger("pyflow.workflow")

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class LogAction(BaseAction):
    """Logs ``message`` at ``level`` (debug, info, warning or error) to the run's log; returns ``{"message"}``."""

    type = "log"
    result_keys = ("message",)

    config_choices = {"level": tuple(LEVELS)}

    def __init__(self, name: str, *, message: Any, level: str = "info", **options: Any):
        super().__init__(name, **options)
        if isinstance(level, str) and "{{" not in level:
            try:
                _level(level)
            except ActionError as error:
                raise SettingError("level", f"action {name!r}: {error}") from None
        self.message = message
        self.level = level

    def execute(self, data_store: dict) -> dict:
        """Log the message; a mapping or list is logged as JSON."""
        message = self.message
        if not isinstance(message, str):
            message = json.dumps(message, ensure_ascii=False, default=str)
        logger.log(_level(self.level), "%s", message)
        return {"message": message}


def _level(value: Any) -> int:
    name = str(value or "info").strip().lower()
    if name == "warn":
        name = "warning"
    if name not in LEVELS:
        raise ActionError(f"log: level must be one of {', '.join(LEVELS)}, got {value!r}", retryable=False)
    return LEVELS[name]
