"""The ``hello`` step: greets someone, and says which run greeted them."""

from __future__ import annotations

from typing import Any

from actions.base import ActionError, BaseAction, SettingError

PUNCTUATION = ("!", ".", "?")


class HelloAction(BaseAction):
    """Greets ``who``; returns {"message"}."""

    type = "hello"
    # The same tuple the constructor checks: GET /api/catalog shows it as the field's enum.
    config_choices = {"punctuation": PUNCTUATION}

    def __init__(self, name: str, *, who: str, greeting: str = "Hello", punctuation: str = "!", **options: Any):
        super().__init__(name, **options)
        if isinstance(punctuation, str) and "{{" not in punctuation and punctuation not in PUNCTUATION:
            # SettingError names the field: the definition check reports it at config.punctuation.
            raise SettingError("punctuation", f"action {name!r}: punctuation must be one of "
                               f"{' '.join(PUNCTUATION)}, got {punctuation!r}")
        self.who = who
        self.greeting = greeting
        self.punctuation = punctuation

    def execute(self, data_store: dict) -> dict:
        """Build the greeting (``who`` and ``greeting`` are rendered templates by now)."""
        who = str(self.who).strip()
        if not who:
            raise ActionError("hello: who is empty; nobody to greet", retryable=False)
        return {"message": f"{self.greeting}, {who}{self.punctuation}"}
