"""The Workflow base class: a trigger composed with actions."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from actions.base import BaseAction
from triggers.base import BaseTrigger
from triggers.manual import ManualTrigger
from workflows.graph import build_graph

NAME_PATTERN = re.compile(r"^[a-z0-9_]+$")
# A workflow's name names its files in the store (app/storage/json/store.py), so it stays a short file name.
MAX_NAME_LENGTH = 128


class Workflow:
    """Subclass this in a module of workflows/ to add a workflow.

    Class attributes configure it; ``None`` means "use the setting":
    max_retries -> WORKFLOW_RETRY_COUNT, retry_delay -> WORKFLOW_RETRY_DELAY,
    step_timeout -> WORKFLOW_STEP_TIMEOUT, check_interval -> the trigger's own.
    """

    # Unique, [a-z0-9_]+; the URL path segment /api/workflows/<name>.
    name: ClassVar[str] = ""
    # One line shown in listings.
    description: ClassVar[str] = ""
    # What starts a run; ManualTrigger fires only through the API.
    trigger: ClassVar[BaseTrigger] = ManualTrigger("manual")
    # The steps, run in order.
    actions: ClassVar[list[BaseAction]] = []
    # Retries after the first attempt of a step.
    max_retries: ClassVar[int | None] = None
    # Seconds; base of the exponential backoff between attempts.
    retry_delay: ClassVar[float | None] = None
    # Seconds one attempt of a step may take.
    step_timeout: ClassVar[float | None] = None
    # Seconds between trigger polls while the workflow is started.
    check_interval: ClassVar[float | None] = None
    # Optional JSON Schema the run's inputs must satisfy.
    inputs_schema: ClassVar[dict[str, Any] | None] = None
    # At most this many runs of this workflow execute at once (None: only WORKFLOW_MAX_CONCURRENT).
    max_concurrent_runs: ClassVar[int | None] = None
    # What a scheduled event does while max_concurrent_runs are running: "queue" it, or "skip" it.
    overlap: ClassVar[str] = "queue"
    # Steps of one run that may execute at once when their dependencies allow it.
    max_parallel_steps: ClassVar[int] = 4
    # Where the workflow comes from: "python" (a class), "file" or "api" (a definition),
    # the file or label it was read from, its version (API definitions), and the definition itself.
    origin: ClassVar[str] = "python"
    source: ClassVar[str | None] = None
    version: ClassVar[int | None] = None
    definition: ClassVar[dict[str, Any] | None] = None

    @classmethod
    def check(cls) -> None:
        """Raise ValueError naming the attribute when the class is misconfigured."""
        where = f"workflow {cls.__qualname__}"
        if not isinstance(cls.name, str) or not NAME_PATTERN.match(cls.name):
            raise ValueError(f"{where}: name must match [a-z0-9_]+, got {cls.name!r}")
        if len(cls.name) > MAX_NAME_LENGTH:
            raise ValueError(f"{where}: name must be at most {MAX_NAME_LENGTH} characters, got {len(cls.name)}")
        if not isinstance(cls.trigger, BaseTrigger):
            raise ValueError(f"{where}: trigger must be a BaseTrigger, got {cls.trigger!r}")
        if not isinstance(cls.actions, (list, tuple)):
            raise ValueError(f"{where}: actions must be a list of BaseAction, got {cls.actions!r}")
        seen: set[str] = set()
        for index, action in enumerate(cls.actions):
            if not isinstance(action, BaseAction):
                raise ValueError(f"{where}: actions[{index}] must be a BaseAction, got {action!r}")
            if action.name in seen or action.name == "trigger_data":
                raise ValueError(f"{where}: actions[{index}]: duplicate or reserved step name {action.name!r}")
            seen.add(action.name)
        if cls.max_concurrent_runs is not None and (
            isinstance(cls.max_concurrent_runs, bool) or not isinstance(cls.max_concurrent_runs, int)
            or cls.max_concurrent_runs < 1
        ):
            raise ValueError(f"{where}: max_concurrent_runs must be an integer >= 1 or None, "
                             f"got {cls.max_concurrent_runs!r}")
        if cls.overlap not in ("queue", "skip"):
            raise ValueError(f"{where}: overlap must be 'queue' or 'skip', got {cls.overlap!r}")
        try:
            build_graph(list(cls.actions))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if not isinstance(cls.max_parallel_steps, int) or cls.max_parallel_steps < 1:
            raise ValueError(f"{where}: max_parallel_steps must be an integer >= 1, got {cls.max_parallel_steps!r}")
        for field in ("max_retries", "retry_delay", "step_timeout", "check_interval"):
            value = getattr(cls, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{where}: {field} must be a number >= 0 or None, got {value!r}")

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, description, trigger and steps, as the API's Summary shows them."""
        return {
            "name": cls.name,
            "description": cls.description,
            "trigger": cls.trigger.describe(),
            "actions": [action.describe() for action in cls.actions],
        }
