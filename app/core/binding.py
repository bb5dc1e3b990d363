"""A registered workflow bound to the settings of one runtime."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actions.base import BaseAction
from actions.paths import PathError
from app.core.config import public_settings
from app.core.limits import MIN_CHECK_INTERVAL, interval_problem
from app.core.secrets import resolve_secret_fields
from app.core.templating import Renderer
from app.errors import ConfigError
from triggers.base import BaseTrigger
from triggers.interval import IntervalTrigger
from workflows.base import Workflow
from workflows.declarative import parking_in_loops
from workflows.graph import StepGraph, build_graph


@dataclass
class BoundWorkflow:
    """A workflow class with its defaults resolved and its own trigger instance."""

    workflow: type[Workflow]
    trigger: BaseTrigger
    max_retries: int
    retry_delay: float
    step_timeout: float
    check_interval: float
    # Which steps wait for which; a plain list of actions is a chain.
    graph: StepGraph
    # poll() and acknowledge() of one trigger never run concurrently.
    poll_lock: threading.Lock = field(default_factory=threading.Lock)
    # Why the trigger cannot be polled (a missing setting), shown in the Summary.
    error: str | None = None
    # The last poll's outcome, shown in the Summary: {"at", "error", "events"}.
    last_poll: dict[str, Any] = field(default_factory=dict)
    # Consecutive failed polls, for the backoff between retries.
    failures: int = 0
    retry_at: float = 0.0
    # Counts the times it was scheduled (each start): a poll under way when it was scheduled again reports
    # its outcome, but leaves ``failures`` and ``retry_at`` to the polls of the newer job.
    schedules: int = 0
    # Guards schedules, failures and retry_at together: a start between a poll's check and its backoff would
    # otherwise be undone all the same.
    backoff_lock: threading.Lock = field(default_factory=threading.Lock)
    # The trigger's state changed but could not be saved: every poll tries again until it is.
    state_unsaved: bool = False

    @property
    def name(self) -> str:
        return self.workflow.name

    @property
    def actions(self) -> tuple[BaseAction, ...]:
        return self._actions

    def __post_init__(self) -> None:
        # A tuple taken once: the engine indexes it for every step (a fresh list each time was O(steps)).
        self._actions = tuple(self.workflow.actions)

    @classmethod
    def bind(cls, workflow: type[Workflow], settings: Mapping[str, Any], renderer: Renderer) -> BoundWorkflow:
        """Copy and set up the trigger, and resolve settings-backed defaults."""
        where = f"workflow {workflow.name!r}"
        # A Python workflow's loop is refused here, not when a run reaches it (a definition's was refused when saved).
        for action in workflow.actions:
            if "steps" in action.raw_fields:
                for problem in parking_in_loops(getattr(action, "steps", None), f"step {action.name!r}: steps"):
                    raise ConfigError(f"{where}: {problem['path']}: {problem['message']}")
        context = {"settings": public_settings(settings)}
        error = None
        try:
            trigger = renderer.render_object(workflow.trigger, context, f"{where}: trigger")
        except ValueError as problem:
            raise ConfigError(f"{where}: {problem}") from None
        trigger.state = {}  # the copy must not share the class-level trigger's dict
        try:
            resolve_secret_fields(trigger, renderer.provided("secrets"), "trigger")
        except ValueError as problem:  # an unknown secret, or a key that cannot read it
            raise ConfigError(f"{where}: {problem}") from None
        # A workflow class written in Python is trusted code; a definition's trigger stays in WORKFLOW_FILES_ROOT.
        trigger._trusted_code = workflow.origin == "python" and workflow.__module__ != "workflows.declarative"
        try:
            trigger.setup(settings)
            check_interval = workflow.check_interval or trigger.default_check_interval
            if not trigger._trusted_code:  # a definition's trigger (an interval of 0.001 s) cannot poll without pause
                check_interval = max(check_interval, MIN_CHECK_INTERVAL)
                too_fast = isinstance(trigger, IntervalTrigger) and interval_problem(trigger.interval)
                if too_fast:  # a template's value ("{{ settings.X }}"): a number was refused when posted
                    raise ValueError(f"trigger {trigger.name!r}: seconds {too_fast}")
        except PathError as problem:
            # A folder outside WORKFLOW_FILES_ROOT is the definition's fault, not a missing setting: refuse it.
            raise ConfigError(f"{where}: {problem}") from None
        except ValueError as problem:
            # Still usable through the API (a run with posted inputs); only polling is refused.
            error, check_interval = str(problem), 60.0
        return cls(
            workflow=workflow,
            trigger=trigger,
            max_retries=settings["WORKFLOW_RETRY_COUNT"] if workflow.max_retries is None else workflow.max_retries,
            retry_delay=settings["WORKFLOW_RETRY_DELAY"] if workflow.retry_delay is None else workflow.retry_delay,
            step_timeout=settings["WORKFLOW_STEP_TIMEOUT"] if workflow.step_timeout is None else workflow.step_timeout,
            check_interval=float(check_interval),
            error=error,
            graph=build_graph(list(workflow.actions)),
        )
