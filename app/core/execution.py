"""A run in progress: its execution state, and the errors and messages of its steps."""

from __future__ import annotations

import itertools
import random
import threading
from collections import deque
from typing import TYPE_CHECKING

from actions import text
from actions.base import ActionError
from actions.redaction import Scrubber
from app.core.binding import BoundWorkflow
from app.core.templating import RenderError
from app.runs import FINISHED_STEP
from triggers.base import TriggerError

if TYPE_CHECKING:
    from app.core.run_logs import RunLog

MAX_BACKOFF_SECONDS = 600.0
MAX_ERROR_LENGTH = 500


class StepTimeout(Exception):
    """An attempt ran past the step timeout."""


class StepInterrupted(Exception):
    """The run was asked to stop before an attempt began."""


class RunStateError(Exception):
    """A control operation that makes no sense in the run's current status."""

    def __init__(self, run: dict, wanted: str):
        super().__init__(f"run {run['id']} is {run['status']}; it cannot be {wanted}")
        self.run = run


def one_line(error: BaseException) -> str:
    """A step's or a run's error message: one line, at most MAX_ERROR_LENGTH characters, no traceback."""
    return text.one_line(error, (ActionError, RenderError, StepTimeout, TriggerError), MAX_ERROR_LENGTH)


def backoff(base: float, attempt: int) -> float:
    """Seconds before retry number ``attempt``: exponential with "equal jitter"."""
    delay = min(base * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
    return delay / 2 + random.uniform(0, delay / 2)


class Execution:
    """A run being executed in this process, and where it is."""

    def __init__(self, bound: BoundWorkflow, run: dict, data_store: dict, results: dict):
        self.bound = bound
        self.run = run
        self.data_store = data_store
        self.results = results
        self.done = threading.Event()
        # Set with ``done``, or once the run compensates (its plan stored): a cancel or pause answers then, as it
        # does not wait for compensations. A run resumed while it compensated (recovered, or cancelled paused) is so.
        self.settled = threading.Event()
        if run.get("compensating"):
            self.settled.set()
        # Set with ``done``, or earlier at shutdown: whoever waits for the outcome answers now.
        self.answer = threading.Event()
        # Set to stop at the next step boundary (or end a backoff); ``control`` says why:
        # "shutdown" (resume after a restart), "pause" or "cancel".
        self.stop = threading.Event()
        self.control = "shutdown"
        self.control_by = "shutdown"
        self.cancelled = threading.Event()
        # Watchdog tokens of the attempts under way, by step index; whoever disarms one owns that step.
        self.tokens: dict[int, int] = {}
        # The step the run thread executes itself (a chain), or None while it coordinates branches.
        self.inline: int | None = None
        # Steps executing on branch threads, and the condition their ends are signalled on.
        self.in_flight: set[int] = set()
        self.changed = threading.Condition()
        # Per-step clocks (perf_counter at the first attempt) for duration_ms.
        self.clocks: dict[int, float] = {}
        # Failure handlers (on_failure: <step>) that a failure has called for.
        self.triggered: set[int] = set()
        # Steps that parked in this execution (indexed then): a run halting ``waiting`` indexes only the others.
        self.parked: set[str] = set()
        # Unfinished dependencies per step, and steps whose count reached zero: readiness in O(1) per step.
        graph, steps = bound.graph, run["steps"]
        self.waiting = [sum(steps[dep]["status"] not in FINISHED_STEP for dep in deps) for deps in graph.deps]
        self.candidates: deque[int] = deque(
            index for index, step in enumerate(steps) if step["status"] not in FINISHED_STEP and not self.waiting[index]
        )
        # Why the run will fail once nothing is in flight any more.
        self.failure: str | None = None
        # True while it counts against its workflow's max_concurrent_runs.
        self.counted = False
        # A sub-workflow's run: its thread holds no concurrency slot.
        self.slotless = False
        # A sub-workflow's run started beside others (a parallel loop's item, a parallel step, a serial run's
        # step): its steps and loop items run one at a time, so threads do not multiply with each level.
        self.serial = False
        # Set once the dispatcher handed the run to the engine, or a cancel or pause claimed it before.
        self.dispatched = False
        # Someone waits for its end (Engine.outcome): the engine keeps the record it ended with.
        self.awaited = False
        # completion_order of the next step with a compensation to succeed (app/core/compensation.py).
        self.completions = itertools.count(1 + max((step.get("completion_order") or 0 for step in steps), default=0))
        # Cache keys of steps that looked in the cache and missed: their result is kept when they succeed.
        self.cache_keys: dict[int, str] = {}
        # Secret values hidden from its records, errors and logs (the engine adds the run's own).
        self.scrubber = Scrubber()
        # Its own log, repeats folded and capped (set by the engine, which knows the store and the cap).
        self.log: RunLog | None = None
        # What its steps' results weigh together as JSON, added to as each is recorded: measuring them all
        # again for every step would cost O(steps²). Parallel branches add under the lock.
        self.results_bytes = 0
        self._results_lock = threading.Lock()

    def add_result(self, size: int, limit: int) -> int | None:
        """Count a result of ``size`` bytes into ``results_bytes``; None, or the total it would make past ``limit``."""
        with self._results_lock:
            total = self.results_bytes + size
            if total > limit:
                return total
            self.results_bytes = total
            return None

    def __repr__(self) -> str:
        return f"<run {self.run['id']}>"


class Attempt:
    """What the watchdog watches: one attempt of one step, and who carries on after it."""

    __slots__ = ("execution", "index", "branch")

    def __init__(self, execution: Execution, index: int, branch: bool):
        self.execution = execution
        self.index = index
        self.branch = branch
