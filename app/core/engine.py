"""Starts and executes runs: concurrency, retries, timeouts and step records."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections import ChainMap, Counter, OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from actions.base import ActionError, BaseAction, Park, RunContext
from actions.limits import MAX_RESULT_BYTES, RESULT_TOO_LARGE, json_size
from actions.loop import in_parallel_item
from app.core import files, run_logs
from app.core.binding import BoundWorkflow
from app.core.compensation import Compensating
from app.core.config import SETTINGS, public_settings
from app.core.events import lineage as event_lineage
from app.core.execution import Attempt, Execution, StepInterrupted, StepTimeout, backoff, one_line
from app.core.leases import Leases
from app.core.parking import ParkedSteps
from app.core.redaction import Scrubber, redact, scrubbing, secret_values, settings_scrubber
from app.core.run_control import Controlling
from app.core.secrets import Secrets, resolve_secret_fields
from app.core.step_cache import Caching
from app.core.templating import Renderer, RenderError, is_truthy
from app.core.tracing import RunObserver
from app.core.watchdog import Watchdog
from app.dispatch.base import Dispatcher, Queue
from app.dispatch.local import LocalDispatcher
from app.errors import InvalidInput, NotFound, StorageError
from app.runs import (
    FINISHED_STEP,
    RunStatus,
    StepStatus,
    new_run,
    new_step,
    progress,
    snapshot,
    utcnow,
)
from app.storage.base import Durability, Store

logger = logging.getLogger(__name__)
# Set on a branch thread (a step running beside others): a sub-workflow started there runs serially.
_branch = threading.local()

IDLE_WORKER_SECONDS = 5.0
# Backoff between attempts to resume runs a store failure stopped (a full disk), first and longest.
RESUME_FIRST_DELAY = 1.0
RESUME_MAX_DELAY = 30.0
# Records of awaited runs that ended here, until their waiter reads them (oldest dropped first).
_MAX_OUTCOMES = 256
# Steps of a run that ends as succeeded once no other is left.
_DONE = frozenset({StepStatus.SUCCEEDED, StepStatus.SKIPPED})
RUN_RESULTS_SETTING = "WORKFLOW_MAX_RUN_RESULTS_MB"


class Engine(Controlling, ParkedSteps, Compensating, Caching):
    """Executes runs with at most ``WORKFLOW_MAX_CONCURRENT`` at once; the rest wait queued.

    Mixed in: run controls (app/core/run_control.py), parked steps (app/core/parking.py), compensation
    (app/core/compensation.py) and step caching (app/core/step_cache.py).
    """

    def __init__(self, store: Store, settings: Mapping[str, Any], renderer: Renderer | None = None):
        self.store = store
        self.settings = settings
        self.renderer = renderer or Renderer()
        self.max_concurrent = int(settings["WORKFLOW_MAX_CONCURRENT"])
        self._public_settings = public_settings(settings)
        self._lock = threading.Condition()
        self._pending: deque[Execution] = deque()
        self._active = 0
        # Workers waiting in _next() for a run to arrive.
        self._idle = 0
        self._running: Counter[str] = Counter()
        self._executions: dict[str, Execution] = {}
        self._outcomes: OrderedDict[str, dict] = OrderedDict()
        self._closing = False
        # Set at shutdown: waiters (?wait, a webhook's result) answer with the run as it stands.
        self._released = False
        # Runs a store failure stopped here (run id -> bound workflow), resumed once the store writes again.
        self._stalled: dict[str, BoundWorkflow] = {}
        self._resume_timer: threading.Timer | None = None
        self._resume_delay = RESUME_FIRST_DELAY
        self._watchdog = Watchdog(self._on_timeout)
        # Secret settings' values, scrubbed from every record, error and log line of every run.
        self._scrubber = settings_scrubber(settings)
        self._fixed_secrets: weakref.WeakKeyDictionary[BaseAction, frozenset[str]] = weakref.WeakKeyDictionary()
        # Environment variables templates may read as {{ env.NAME }}: only those allow-listed.
        allowed = settings.get("WORKFLOW_ENV_ALLOWLIST", ())
        self._env = {name: os.environ[name] for name in allowed if name in os.environ}
        # Set by the runtime: runs a sub-workflow to its end (name, inputs, timeout, call_stack, serial, lineage,
        # attachment_folders) -> run.
        self.run_child: Callable[[str, dict, float, tuple[str, ...], bool, dict | None, tuple[str, ...]], dict] \
            | None = None
        #: Set by the runtime: the workflow a stored run executes with (compensating a run cancelled elsewhere).
        self.bound_for: Callable[[dict], BoundWorkflow | None] | None = None
        self._max_log_lines = int(settings.get("WORKFLOW_RUN_LOG_LINES", run_logs.DEFAULT_MAX_LINES))
        # The most a run's results may weigh together as JSON: each step's is bounded (MAX_RESULT_BYTES), but
        # 500 steps of 60 MB each would hold 30 GB in the store and in memory.
        self._max_run_results_mb = float(settings.get(RUN_RESULTS_SETTING, SETTINGS[RUN_RESULTS_SETTING][0]))
        self._max_run_results = int(self._max_run_results_mb * 2**20)
        #: Set by the runtime: what templates read as {{ secrets.NAME }}, decrypted when a step renders.
        self.secrets: Secrets | None = None
        # How queued runs reach an executor: this engine's threads; with a ``queue``, workers elsewhere.
        self.dispatcher: Dispatcher = LocalDispatcher(self)
        #: Set by the runtime of a server whose runs execute on ``run.py worker`` processes (DESIGN section 11).
        self.queue: Queue | None = None
        #: Set by ``use_leases`` when processes share the store: a run executes where its lease is held.
        self.leases: Leases | None = None
        #: Set by the runtime when tracing is on (app/core/tracing.py): told of runs and steps; None costs nothing.
        self.observer: RunObserver | None = None
        #: Set by the runtime: called with a run's record once it ended (publishes run.succeeded|failed|cancelled).
        self.on_finished: Callable[[dict], None] | None = None
        #: Set by a started server or worker runtime: steps may park (a waker continues them); ``run.py run``
        #: executes without one, so its long waits sleep on their thread.
        self.parking = False
        #: Set by the runtime: (run id, step, until epoch, nonce) -> signed approve and reject links (approvals).
        self.approval_links: Callable[[str, str, float, str], dict] | None = None
        run_logs.install()

    def use_leases(self, seconds: float) -> Leases:
        """Execute a run only while holding its lease in the store (processes sharing a PostgreSQL database)."""
        self.leases = Leases(self.store, seconds, on_lost=self._lost, on_control=self._on_control)
        return self.leases

    # -- starting runs ------------------------------------------------------
    def submit(
        self,
        bound: BoundWorkflow,
        trigger_data: dict,
        *,
        source: str = "api",
        idempotency_key: str | None = None,
        call_stack: tuple[str, ...] = (),
        awaited: bool = False,
        queue: Queue | None = None,
        serial: bool = False,
        lineage: dict | None = None,
        attachment_folders: Sequence[str] = (),
    ) -> tuple[dict, bool]:
        """Store a queued run and schedule it; with a used key, return the first run and False.

        ``awaited``: the caller will ask for its ``outcome``, which then needs no read of the store.
        ``queue``: send it to workers through this queue even where the engine executes runs (a worker
        starting the runs of an event it published).

        A run with a ``call_stack`` is a sub-workflow of a running step: it starts at
        once, outside WORKFLOW_MAX_CONCURRENT, since its parent already holds a slot
        and waits for it (queueing it could deadlock a full engine). ``serial``: its
        steps and loop items run one at a time (it was started beside other work). ``lineage``: a
        sub-run's parent's event chain (app/core/events.py), which the sub-run's end continues.
        ``attachment_folders``: the folders the server saved this run's files in (uploads, e-mail
        attachments), the only ones under the attachments folder its steps may read; only trusted code
        names them, never the inputs (DESIGN section 10).
        """
        names = [action.name for action in bound.actions]
        steps = [
            new_step(action.name, action.type, bound.graph.depends_on(names, index))
            for index, action in enumerate(bound.actions)
        ]
        scrubber = self._scrubber_for(bound, trigger_data)
        run = new_run(bound.name, steps, scrubber.scrub(redact(trigger_data)), source)
        run["version"] = bound.workflow.version
        if call_stack:
            run["call_stack"] = list(call_stack)
        if lineage is not None:
            run["lineage"] = dict(lineage)
        # Always there, if only empty: a run without the key was stored before it existed (files.own_folders).
        run["attachment_folders"] = list(attachment_folders)
        queue = queue or self.queue
        if queue is not None and not call_stack:
            # A worker executes it: the run is stored with its job (procrastinate) or just before it (celery).
            stored, created = queue.create(self.store, run, idempotency_key)
            return (snapshot(run) if created else stored), created
        if self.leases is not None:  # executed here: its lease taken as it is stored
            stored, created = self.leases.create(run, idempotency_key)
        else:
            stored, created = self.store.create_run(run, idempotency_key)
        if created:
            # The caller gets a snapshot: the worker changes ``run`` before the store has each change.
            stored = snapshot(run)
            execution = Execution(bound, run, {"trigger_data": trigger_data}, {})
            execution.scrubber = scrubber
            execution.log = self._run_log(run["id"], scrubber)
            execution.awaited = awaited
            if call_stack:
                execution.slotless = execution.dispatched = True  # started here, outside the dispatcher
                execution.serial = serial
                with self._lock:
                    self._executions[run["id"]] = execution
                self._start_thread(execution)
            else:
                self._schedule(execution)
        return stored, created

    def resume(self, bound: BoundWorkflow, run: dict, by: str = "restart", inputs: dict | None = None) -> None:
        """Continue a stored run from its first unfinished step (recovery, resume, retry).

        ``inputs``: what the steps see as the run's inputs when not its record's (files fetched to this host).
        """
        if run["status"] == RunStatus.PAUSED:
            # Queued first: an answer coming from now on no longer finds the run paused (parking.py keeps it
            # for the waker then), so none is left behind by the kept ones applied here.
            self._transition(run, RunStatus.QUEUED, by)
            self._apply_kept(bound, run)
        data_store: dict[str, Any] = {"trigger_data": run["trigger_data"] if inputs is None else inputs}
        results: dict[str, Any] = {}
        steps = run["steps"]
        for step in steps:
            if step["status"] in (StepStatus.SUCCEEDED, StepStatus.SKIPPED):
                data_store[step["name"]] = results[step["name"]] = step["result"]
        execution = Execution(bound, run, data_store, results)
        # Measured once here (results recorded elsewhere: an answer, an event), then kept as a running total.
        kept = [*results.values(), *(entry.get("result") for entry in run.get("compensations") or ())]
        execution.results_bytes = sum(json_size(result, self._max_run_results) for result in kept if result)
        execution.scrubber = self._scrubber_for(bound, run["trigger_data"])
        # The cap counts the lines an earlier process or execution of this run already wrote. A run that never
        # left "queued" has none (its first line follows its start, which the store keeps in order before it):
        # a worker's first look at a run reads no log.
        fresh = run["started_at"] is None and len(run.get("history") or ()) <= 1
        kept = 0 if fresh else len(self.store.get_logs(run["id"]))
        execution.log = self._run_log(run["id"], execution.scrubber, kept=kept)
        for index, step in enumerate(steps):
            # A waiting step (a parallel branch parked beside the one woken, or parked before a pause) stays
            # waiting, indexed: never executed again (an approval would mail twice); the run halts for it.
            if step["status"] == StepStatus.RUNNING and not bound.actions[index].idempotent:
                # Repeating it could act twice (an e-mail sent twice); a person decides.
                self._fail_step(execution, index, f"interrupted by {by}")
            elif step["status"] == StepStatus.FAILED:
                self._on_failure(execution, index, step["error"] or "failed")
        if run["status"] != RunStatus.QUEUED:
            self._transition(execution.run, RunStatus.QUEUED, by)
        index = next((i for i, step in enumerate(steps) if step["status"] not in FINISHED_STEP), len(steps))
        if index or run.get("started_at"):  # not a worker's first look at a run that never started
            where = f"at step {index + 1} of {len(steps)}" if index < len(steps) else "after its last step"
            self._log(execution, logging.INFO, f"continues {where} ({by})")
        self._schedule(execution)

    def _run_log(self, run_id: str, scrubber: Scrubber, kept: int = 0) -> run_logs.RunLog:
        return run_logs.RunLog(self.store, run_id, scrubber, self._max_log_lines, kept)

    def _config_secrets(self, original: BaseAction, rendered: BaseAction) -> frozenset[str]:
        """Secret values in a step's config: its fixed attributes' (found once per action) and its rendered fields'."""
        fields = self.renderer.template_fields(original)
        fixed = self._fixed_secrets.get(original)
        if fixed is None:
            # Walking every attribute of every step cost a third of a no-op step; most never change.
            fixed = frozenset(secret_values({key: value for key, value in vars(original).items() if key not in fields}))
            fixed |= original.config_secrets()  # a token inside a URL: its field's name does not say so
            self._fixed_secrets[original] = fixed
        if not fields:
            return fixed
        return fixed | secret_values({field: getattr(rendered, field) for field in fields}) | rendered.config_secrets()

    def _scrubber_for(self, bound: BoundWorkflow, trigger_data: dict) -> Scrubber:
        """The settings' secrets plus every value redacted by key in the run's inputs, definition and trigger."""
        definition, trigger = bound.workflow.definition, bound.trigger.describe()
        return self._scrubber.extended(secret_values(trigger_data) | secret_values(definition) | secret_values(trigger))

    def executes(self, run_id: str) -> bool:
        """True while the run executes here or waits here for a slot."""
        with self._lock:
            return run_id in self._executions

    def wait(self, run_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a run of this process to finish; True when it has."""
        with self._lock:
            execution = self._executions.get(run_id)
        return execution is None or execution.done.wait(timeout)

    def outcome(self, run_id: str, timeout: float) -> dict | None:
        """The run as its execution here ended (finished, paused or halted) within ``timeout``, as stored.

        None when it is still executing, or did not execute here lately: then the store has the answer.
        """
        with self._lock:
            execution = self._executions.get(run_id)
        # ``answer`` is set when it ends, or earlier by release_waiters (shutdown): then it is not finished.
        finished = execution is None or (execution.answer.wait(timeout) and execution.done.is_set())
        with self._lock:
            if not finished and execution is not None:
                execution.awaited = False  # its waiter gives up: nobody will read the record
            return self._outcomes.pop(run_id, None)

    def release_waiters(self) -> None:
        """Let everyone waiting for a run's outcome answer now, with the run as it stands (shutdown)."""
        with self._lock:
            self._released = True
            for execution in self._executions.values():
                execution.answer.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop starting steps, wait up to ``timeout`` for running steps; the rest resume on restart."""
        self.release_waiters()
        with self._lock:
            self._closing = True
            if self._resume_timer is not None:
                self._resume_timer.cancel()
            self._lock.notify_all()  # idle workers end now
            for execution in self._executions.values():
                execution.stop.set()
            deadline = time.monotonic() + timeout
            while self._active and time.monotonic() < deadline:
                self._lock.wait(deadline - time.monotonic())
        self._watchdog.stop()
        if self.leases is not None:
            self.leases.stop()

    # -- workers --------------------------------------------------------------
    def unfinished_count(self, workflow: str) -> int:
        """Runs of ``workflow`` executing now or waiting for a slot in this process (paused ones excluded)."""
        with self._lock:
            return self._running[workflow] + sum(execution.bound.name == workflow for execution in self._pending)

    def _may_run(self, execution: Execution) -> bool:
        limit = execution.bound.workflow.max_concurrent_runs
        return limit is None or self._running[execution.bound.name] < limit

    def _take(self, execution: Execution) -> Execution:
        """Count ``execution`` as running (call with the lock held)."""
        execution.counted = True
        self._running[execution.bound.name] += 1
        return execution

    def _schedule(self, execution: Execution) -> None:
        """Register a queued run here and hand it to the dispatcher, which has it executed (execute_here).

        With a queue, a worker executes it instead; with leases, only while this process holds the run's.
        """
        run_id = execution.run["id"]
        if self.queue is not None:
            execution.log.close()
            self.store.flush(run_id)  # the worker reads the run as it stands now
            self.queue.submit(run_id)
            return
        if self.leases is not None:
            # A run created here holds its lease already (a claim would only renew it).
            if not (self.leases.holds(run_id) or self.leases.claim(run_id)):
                logger.info("run %s is executed by another process (it holds the run's lease)", run_id)
                return
            execution.run["worker"] = self.leases.owner  # as the claim stored it: the run's last save keeps it
        with self._lock:
            self._executions[run_id] = execution
            if self._released:
                execution.answer.set()
            closing = self._closing
        if closing:
            if self.leases is not None:
                self._forget(execution)  # left as stored, for another process (the sweeper sends it on)
            return
        self.dispatcher.submit(run_id)

    def execute_here(self, run_id: str) -> None:
        """Execute a run registered here on a thread holding a slot, or queue it for the next free slot."""
        with self._lock:
            execution = self._executions.get(run_id)
            if execution is None or execution.dispatched or self._closing:
                return  # a cancel or pause claimed it first, or this process is stopping: a restart resumes it
            execution.dispatched = True
            if self._idle or self._active >= self.max_concurrent or not self._may_run(execution):
                self._pending.append(execution)
                self._lock.notify()  # one idle worker takes it (waking them all cost each run a dozen switches)
                return
            self._active += 1
            self._take(execution)
        self._start_thread(execution)

    def _start_thread(self, execution: Execution) -> None:
        name = f"pyflow-{execution.run['id']}"
        threading.Thread(target=self._work, args=(execution,), name=name, daemon=True).start()

    def _work(self, execution: Execution | None) -> None:
        """Execute runs until none is pending; the slot is this thread's until then."""
        if execution is not None and execution.slotless:
            try:
                self._execute(execution)
            except Exception as error:
                self._stall(execution, error)
            return
        while execution is not None:
            try:
                if not self._execute(execution):
                    return  # a timed-out step handed this run (and the slot) to another thread
            except Exception as error:  # a store failure: the run stays as stored until the store writes again
                self._stall(execution, error)
            execution = self._next()

    def _next(self) -> Execution | None:
        """The next pending run for a thread that holds a slot, or None after releasing the slot.

        A worker with nothing to do waits IDLE_WORKER_SECONDS for the next run before it
        ends: handing a run to a waiting thread is far quicker than starting one.
        """
        with self._lock:
            deadline = time.monotonic() + IDLE_WORKER_SECONDS
            while not self._closing:
                # First come, first served, past runs whose workflow is at its max_concurrent_runs.
                for execution in self._pending:
                    if self._may_run(execution):
                        self._pending.remove(execution)
                        return self._take(execution)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle += 1
                try:
                    self._lock.wait(remaining)
                finally:
                    self._idle -= 1
            self._active -= 1
            self._lock.notify_all()
            return None

    def _on_timeout(self, attempt: Attempt) -> None:
        """A step ran past its deadline: fail the attempt and carry on in a fresh thread."""
        execution, index = attempt.execution, attempt.index
        error = StepTimeout(f"timed out after {self._timeout_of(execution, index):g} s")
        self._log(execution, logging.WARNING, str(error), execution.bound.actions[index].name)

        def carry_on() -> None:
            try:
                retrying = self._after_failure(execution, index, error)
                if retrying and self._run_step(execution, index, attempt.branch) is None:
                    return  # timed out again: another thread carries on
                if attempt.branch:
                    self._branch_done(execution, index)
                    return
                goes_on = True
            except Exception as failure:
                self._stall(execution, failure)
                goes_on = False
            self._work(execution if goes_on else self._next())

        threading.Thread(target=carry_on, name=f"pyflow-{execution.run['id']}", daemon=True).start()

    # -- one run --------------------------------------------------------------
    def _execute(self, execution: Execution) -> bool:
        """Run the steps as their dependencies allow; False when a timed-out step handed the run on.

        A chain runs inline on this thread, one step after another; steps whose
        dependencies are all done at the same moment run on branch threads
        (at most the workflow's max_parallel_steps), this thread waiting for them.
        """
        run = execution.run
        if self.observer is not None:
            self.observer.run_started(run)
        if run["status"] != RunStatus.RUNNING:
            resumed = run["started_at"] is not None  # woken from a wait, resumed, retried or taken over
            now = utcnow()  # one moment: a first start's started_at is the history's "running" time
            run["started_at"] = run["started_at"] or now
            self._transition(run, RunStatus.RUNNING, "engine", at=now)
            count = len(run["steps"])
            self._log(execution, logging.INFO, "run resumed" if resumed else
                      f"run started ({run['source']}), {count} step{'' if count == 1 else 's'}")
        if run.get("compensating"):  # compensation: recovered while it compensated
            return self._resume_compensating(execution)
        limit = 1 if execution.serial else execution.bound.workflow.max_parallel_steps
        finished = False
        while True:
            with execution.changed:
                if execution.stop.is_set():
                    if execution.in_flight and execution.control != "cancel":
                        execution.changed.wait()  # a pause lets the steps under way finish
                        continue
                    break
                ready = self._ready(execution)
                if not ready and not execution.in_flight:
                    # Finished outside ``changed``: compensations may take long, and a cancel notifies on it.
                    finished = True
                    break
                if not execution.in_flight and len(ready) == 1:
                    execution.inline = ready[0]
                else:
                    execution.inline = None
                    free = max(limit - len(execution.in_flight), 0)
                    for index in ready[:free]:
                        execution.in_flight.add(index)
                        self._start_branch(execution, index)
                    # The rest wait for a branch to end: dropped here, they were later taken for skipped.
                    execution.candidates.extendleft(reversed(ready[free:]))
                    execution.changed.wait()
                    continue
            if self._run_step(execution, execution.inline, branch=False) is None:
                return False
        if finished and self._parks(execution):
            self._halt(execution)
        elif finished:
            self._finish(execution)
        else:
            self._halt(execution)
        return True

    def _ready(self, execution: Execution) -> list[int]:
        """Steps that may start now; a step behind a failed dependency is skipped instead.

        Once the run is failing, only the failure handlers it called may still start.
        """
        steps, graph = execution.run["steps"], execution.bound.graph
        ready: list[int] = []
        deferred: list[int] = []
        while execution.candidates:
            index = execution.candidates.popleft()
            step = steps[index]
            if step["status"] not in (StepStatus.PENDING, StepStatus.RUNNING) or index in execution.in_flight:
                continue
            if index in graph.handlers and index not in execution.triggered:
                continue  # comes back through _on_failure if a failure calls it
            if execution.failure and index not in execution.triggered:
                deferred.append(index)  # not started while failing; a retry starts it
                continue
            broken = [steps[dep]["name"] for dep in graph.deps[index]
                      if steps[dep]["status"] in (StepStatus.FAILED, StepStatus.CANCELLED)]
            if broken and index not in execution.triggered:
                # The error marks a skip a retry must undo (a `when` skip has none).
                step["error"] = f"skipped: {', '.join(broken)} failed"
                self._skip_step(execution, index, step["error"])  # its dependents become candidates
            else:
                ready.append(index)
        execution.candidates.extend(deferred)
        return ready

    def _start_branch(self, execution: Execution, index: int) -> None:
        def branch() -> None:
            _branch.active = True  # a step beside others: a sub-workflow it starts runs serially
            try:
                if self._run_step(execution, index, branch=True) is None:
                    return  # the watchdog or a cancel took the step over
            except Exception:
                logger.exception("run %s: step %d stopped: the engine could not record it", execution.run["id"], index)
            self._branch_done(execution, index)

        threading.Thread(target=branch, name=f"pyflow-{execution.run['id']}-{index}", daemon=True).start()

    @staticmethod
    def _branch_done(execution: Execution, index: int) -> None:
        with execution.changed:
            execution.in_flight.discard(index)
            execution.changed.notify_all()

    def _run_step(self, execution: Execution, index: int, branch: bool) -> bool | None:
        """All attempts of one step; True when it finished, False when stopped, None when handed on."""
        action = execution.bound.actions[index]
        step = execution.run["steps"][index]
        while not execution.stop.is_set():
            try:
                rendered = self._render(execution, action)
            except RenderError as error:
                self._fail_step(execution, index, one_line(error))
                return True
            # A `when` that renders to nothing (an undefined name) is false, not absent.
            if step["attempts"] == 0 and action.when is not None and not is_truthy(rendered.when):
                self._skip_step(execution, index, "skipped: its condition (when) is false")
                return True
            cached = step["attempts"] == 0 and getattr(action, "cache", None)
            if cached and self._from_cache(execution, index, rendered):
                return True  # step cache: a recent result reused
            outcome = self._attempt(execution, index, rendered, branch)
            if outcome is None:
                return None
            if isinstance(outcome, Park):
                self._park_step(execution, index, outcome)
                return False
            if not isinstance(outcome, BaseException):
                return True
            if not self._after_failure(execution, index, outcome):
                return not execution.stop.is_set()
        return False

    def _render(self, execution: Execution, action: BaseAction) -> BaseAction:
        """A per-run copy of ``action`` with its templates rendered (and its credential fields' secrets read)."""
        if self.renderer.template_fields(action):
            rendered = self.renderer.render_object(action, self._names(execution), f"step {action.name!r}")
        else:
            rendered = self.renderer.render_object(action, {}, "")
        if action.secret_fields:
            resolve_secret_fields(rendered, self._names(execution).get("secrets"), f"step {action.name!r}")
        return rendered

    def _names(self, execution: Execution) -> Mapping[str, Any]:
        """What templates see: the data store plus inputs, steps, run, settings, env and secrets."""
        names = {
            "inputs": execution.data_store["trigger_data"],
            "steps": execution.results,
            "run": {"id": execution.run["id"], "workflow": execution.bound.name, "error": execution.failure},
            "settings": self._public_settings,
            "env": self._env,
        }
        if self.secrets is not None:
            # Read when a template names one, never kept in the run: its value joins the run's scrubber.
            names["secrets"] = self.secrets.view(lambda value: execution.scrubber.add([value]))
        return ChainMap(names, execution.data_store)

    def _attempt(
        self, execution: Execution, index: int, action: BaseAction, branch: bool
    ) -> dict | BaseException | None:
        """One attempt; the result, the exception, or None when the watchdog or a cancel took it over."""
        run_id = execution.run["id"]
        step = execution.run["steps"][index]
        step["status"] = StepStatus.RUNNING.value
        step["attempts"] += 1
        if step["started_at"] is None:
            step["started_at"] = utcnow()
        if self.observer is not None:
            self.observer.step_started(execution.run, step)
        execution.clocks.setdefault(index, time.perf_counter())  # a restart starts a new clock
        # A step that must not run twice is written as running before it starts (with whatever was deferred):
        # after a kill, recovery finds it interrupted instead of running it again. Another may be deferred.
        idempotent = execution.bound.actions[index].idempotent
        self.store.update_step(run_id, index, step, mode=Durability.DEFERRED if idempotent else Durability.WRITTEN)
        timeout = self._timeout_of(execution, index)
        action.context = self._context(execution, action, step["attempts"], timeout)
        # A step of a run with a thread of its own may park; a sub-workflow's parent waits on a thread for it.
        action.context.can_park = self.parking and not execution.slotless
        action.context.parked = step.get("wait")
        # The rendered config: a header's token, a password.
        execution.scrubber.add(self._config_secrets(execution.bound.actions[index], action))
        with self._lock:
            if execution.stop.is_set():
                return StepInterrupted()
            token = self._watchdog.arm(Attempt(execution, index, branch), timeout)
            execution.tokens[index] = token
        try:
            with run_logs.run_scope(execution.log, action.name):
                result: Any = action.execute(execution.data_store)
        except Exception as error:  # any failure of user code fails the attempt
            if not self._release(execution, index, token):
                return None
            if not isinstance(error, (ActionError, Park)):
                with scrubbing(execution.scrubber):  # the traceback may quote the run's secrets
                    logger.warning("run %s: step %s attempt %d raised", run_id, action.name, step["attempts"],
                                   exc_info=True)
            return error
        if not self._release(execution, index, token):
            return None
        accepted = self._accepted_result(execution, result)
        if isinstance(accepted, ActionError):
            return accepted
        self._succeed_step(execution, index, accepted)
        return accepted

    def _accepted_result(self, execution: Execution, value: Any) -> dict | ActionError:
        """What an action returned, as a result counted into its run's total; or why it cannot be kept."""
        try:
            result, size = self._measured(value)
        except TypeError as error:
            return ActionError(f"returned a result that is not JSON: {error}", retryable=False)
        except ValueError as error:  # past MAX_RESULT_BYTES: the store and every later template would hold it
            return ActionError(f"returned a result {error}", retryable=False)
        too_much = self._count_result(execution, size)
        if too_much:
            return ActionError(too_much, retryable=False)  # the same result again would pass it again
        return result

    def _count_result(self, execution: Execution, size: int) -> str | None:
        """Add a step's result of ``size`` bytes to its run's total; why not, when that passes the run's bound."""
        total = execution.add_result(size, self._max_run_results)
        if total is None:
            return None
        return (f"returned a result of {size / 2**20:.1f} MB, which brings the run's results to {total / 2**20:.1f} MB "
                f"as JSON, more than {RUN_RESULTS_SETTING} ({self._max_run_results_mb:g} MB)")

    def _context(self, execution: Execution, action: BaseAction, attempt: int, timeout: float) -> RunContext:
        names = self._names(execution)
        call_stack = (*execution.run.get("call_stack", ()), execution.bound.name)
        where = f"step {action.name!r}"

        def render(value: Any, extra: Mapping[str, Any]) -> Any:
            return self.renderer.render_value(value, ChainMap(dict(extra), names), where)

        def run_workflow(name: str, inputs: dict, wait: float) -> dict:
            if self.run_child is None:
                raise ActionError("sub-workflows need the PyFlow runtime", retryable=False)
            # Started beside other work, the child runs one step and one item at a time: a parallel loop
            # calling a workflow with a parallel loop would otherwise multiply threads with every level.
            serial = execution.serial or in_parallel_item() or getattr(_branch, "active", False)
            # The parent's files are the child's too: the parent could read them itself, and passes them on.
            folders = files.own_folders(execution.run)
            try:
                return self.run_child(name, inputs, wait, call_stack, serial, event_lineage(execution.run), folders)
            except (NotFound, InvalidInput) as exc:  # no such workflow, inputs it refuses: again would not help
                raise ActionError(f"workflow: {exc}", retryable=False) from None
            except TimeoutError as exc:  # the sub-run goes on: another attempt would start a second one
                raise ActionError(str(exc), retryable=False) from None

        def run_steps(definitions: list[dict], extra: Mapping[str, Any]) -> dict:
            return self._run_nested(execution, action, definitions, extra, names, timeout)

        approval_links = None
        if self.approval_links is not None:
            links, run_id = self.approval_links, execution.run["id"]

            def approval_links(until: float, nonce: str) -> dict:
                return links(run_id, action.name, until, nonce)

        return RunContext(
            run_id=execution.run["id"],
            workflow=execution.bound.name,
            step=action.name,
            attempt=attempt,
            settings=self.settings,
            storage_path=str(self.store.root),
            attachment_folders=files.own_folders(execution.run),
            cancel_event=execution.cancelled,
            step_timeout=timeout,
            template_context=names,
            render=render,
            run_steps=run_steps,
            run_workflow=run_workflow,
            call_stack=tuple(execution.run.get("call_stack", ())),
            serial=execution.serial,
            approval_links=approval_links,
        )

    def _run_nested(self, execution: Execution, parent: BaseAction, definitions: list[dict],
                    extra: Mapping[str, Any], names: Mapping[str, Any], timeout: float) -> dict:
        """Run a loop's nested steps once, in order, with ``extra`` names (item, loop); {name: result}."""
        from workflows.declarative import DefinitionError, build_actions

        try:
            actions = build_actions(definitions, f"step {parent.name!r}: steps")
        except DefinitionError as error:
            raise ActionError(str(error), retryable=False) from None
        results: dict[str, Any] = {}
        scope = ChainMap({**extra, "steps": ChainMap(results, execution.results)}, names)
        # A loop may call this from its own worker threads: their log records belong to the run too.
        with run_logs.run_scope(execution.log, parent.name):
            for action in actions:
                rendered = self.renderer.render_object(action, scope, f"step {parent.name!r}: {action.name!r}")
                resolve_secret_fields(rendered, scope.get("secrets"), f"step {parent.name!r}: {action.name!r}")
                if action.when is not None and not is_truthy(rendered.when):
                    results[action.name] = None
                    continue
                rendered.context = self._context(execution, rendered, 1, timeout)
                execution.scrubber.add(secret_values(vars(rendered)) | rendered.config_secrets())
                results[action.name] = self._as_result(rendered.execute({**execution.data_store, **results}))
        return results

    @classmethod
    def _as_result(cls, value: Any) -> dict:
        return cls._measured(value)[0]

    @staticmethod
    def _measured(value: Any) -> tuple[dict, int]:
        """What a step returned as its result, and that result's size as JSON; ValueError past MAX_RESULT_BYTES."""
        result = {} if value is None else value if isinstance(value, dict) else {"value": value}
        if not result:
            return result, 2
        # Measured before it is written: one text repeated in many rows would be gigabytes as JSON.
        if json_size(result) > MAX_RESULT_BYTES:
            raise ValueError(RESULT_TOO_LARGE)
        size = len(json.dumps(result))  # fails the step here, not later in the store
        if size > MAX_RESULT_BYTES:
            raise ValueError(RESULT_TOO_LARGE)
        return result, size

    def _after_failure(self, execution: Execution, index: int, error: BaseException) -> bool:
        """Wait the backoff before another attempt (True), or fail the step (False)."""
        step = execution.run["steps"][index]
        if isinstance(error, StepInterrupted):
            step["attempts"] -= 1  # the attempt never started
            return False
        message = execution.scrubber.text(one_line(error))
        action = execution.bound.actions[index]
        retries = execution.bound.max_retries if action.retries is None else action.retries
        if not getattr(error, "retryable", True) or step["attempts"] > retries:
            self._fail_step(execution, index, message)
            return False
        step["error"] = message
        self.store.update_step(execution.run["id"], index, step, mode=Durability.DEFERRED)
        delay = backoff(execution.bound.retry_delay, step["attempts"])
        self._log(execution, logging.WARNING,
                  f"attempt {step['attempts']} failed: {message}; retrying in {delay:.1f} s", action.name)
        return not execution.stop.wait(delay)

    def _release(self, execution: Execution, index: int, token: int) -> bool:
        """Disarm the attempt's watchdog; False when a timeout or a cancel took the step over."""
        with self._lock:
            owned = self._watchdog.disarm(token)
            if owned:
                execution.tokens.pop(index, None)
        return owned

    def _halt(self, execution: Execution) -> None:
        """Stop a run for its ``control``: cancel, pause, or shutdown (left for the restart)."""
        run, by = execution.run, execution.control_by
        if execution.control == "lost":
            self._forget(execution)  # another process owns the run now: nothing more is written from here
            return
        execution.log.close()
        if execution.control == "cancel":
            with self._lock:
                for token in execution.tokens.values():
                    self._watchdog.disarm(token)  # results of abandoned attempts are ignored
                execution.tokens.clear()
            for index, step in enumerate(run["steps"]):
                if step["status"] == StepStatus.RUNNING:
                    step["error"] = "cancelled while running"
                    self._close_step(execution, index, StepStatus.CANCELLED)
            self._stop_waiting(execution, "cancelled while waiting")
            if self._compensate_on_cancel(execution):  # compensation: a thread of its own ends the run
                return
            self._transition(run, RunStatus.CANCELLED, by, finished=True)
            self._log(execution, logging.WARNING, f"run cancelled ({by})")
        else:
            # A pause or shutdown halts only once no attempt is under way: a step still marked
            # running was between attempts (a backoff), so it is pending again and a resume or
            # restart retries it rather than taking it for an interrupted attempt.
            for index, step in enumerate(run["steps"]):
                if step["status"] == StepStatus.RUNNING:
                    step["status"] = StepStatus.PENDING.value
                    self.store.update_step(run["id"], index, step, mode=Durability.SYNC)
            if execution.control == "pause":
                self._transition(run, RunStatus.PAUSED, by)
                self._log(execution, logging.INFO, f"run paused ({by})")
            elif execution.control == "park":
                self._park_run(execution)
            elif self.leases is not None and run["status"] == RunStatus.RUNNING:
                # Handed on while the process stops (a worker's SIGTERM): queued again, so the process that
                # takes it records an orderly hand-off, not a worker lost with its run running.
                self._transition(run, RunStatus.QUEUED, by)
        self.store.flush(run["id"])  # a halted run's file has all of it: the next process may take it over
        self._forget(execution, ended=True)

    def _transition(self, run: dict, status: RunStatus, by: str, *, finished: bool = False,
                    at: str | None = None) -> None:
        """Change a run's status, record it in ``history``, and store it before anyone hears of it.

        ``at``: the change's time when the caller took it already (a first start's ``started_at``), else now.
        """
        at = at or utcnow()
        run.setdefault("history", []).append({"at": at, "from": run["status"], "to": status.value, "by": by})
        run["status"] = status.value
        if finished:
            run["finished_at"] = run["history"][-1]["at"]
            run["progress"] = progress(run["steps"])
            if self.leases is not None and self.leases.let_go(run["id"]):
                self.store.save_and_release(run, self.leases.owner)  # in one commit, where the store can
            else:
                self.store.save_run(run)
            self._announce(run)
        else:
            fields = {"status": run["status"], "history": run["history"], "started_at": run["started_at"]}
            # queued -> running may even be deferred: after a crash a queued and a running run recover alike.
            running = status == RunStatus.RUNNING
            self.store.update_run(run["id"], fields, mode=Durability.DEFERRED if running else Durability.SYNC)

    # -- records --------------------------------------------------------------
    def _close_step(self, execution: Execution, index: int, status: StepStatus) -> None:
        step = execution.run["steps"][index]
        step["status"] = status.value
        step["finished_at"] = utcnow()
        clock = execution.clocks.pop(index, None)
        if clock is not None:
            step["duration_ms"] = round((time.perf_counter() - clock) * 1000)
        # Written at once, so a killed process never runs a finished step again; synced at once when a
        # repetition could act twice, else with the next synced change: only a power loss, or a crash of the
        # database server, can undo it, and the step then runs again, which an idempotent step allows.
        # The last step of a run that succeeds goes with the run's save, which follows at once: nothing
        # runs in between, so a kill finds it as it would have a moment sooner (an idempotent step, run again).
        idempotent = execution.bound.actions[index].idempotent
        if not idempotent:
            mode = Durability.SYNC
        elif self._ends_run(execution, status):
            mode = Durability.DEFERRED
        else:
            mode = Durability.REPEATABLE
        self.store.update_step(execution.run["id"], index, step, mode=mode)
        if self.observer is not None:
            self.observer.step_ended(execution.run, step)
        for dependent in execution.bound.graph.dependents[index]:
            execution.waiting[dependent] -= 1
            if not execution.waiting[dependent]:
                execution.candidates.append(dependent)

    @staticmethod
    def _ends_run(execution: Execution, status: StepStatus) -> bool:
        """True when the step just closed with ``status`` was the run's last: every step done, none failed."""
        if status not in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) or execution.failure or execution.stop.is_set():
            return False
        # From the last step: in a chain the step after this one is pending, so a step's end looks at one or
        # two records, not at all those before it (O(steps²) per run: 250 looks a step in a 500-step chain).
        return all(step["status"] in _DONE for step in reversed(execution.run["steps"]))

    def _succeed_step(self, execution: Execution, index: int, result: dict) -> None:
        step = execution.run["steps"][index]
        execution.scrubber.add(secret_values(result))  # a token a step fetched is hidden wherever it shows up
        step["result"] = execution.scrubber.scrub(redact(result))
        step["error"] = None
        execution.data_store[step["name"]] = execution.results[step["name"]] = result
        self._note_completion(execution, index)  # compensation: completion order
        self._remember(execution, index)  # step cache: keep the result of a step that missed
        self._close_step(execution, index, StepStatus.SUCCEEDED)

    def _skip_step(self, execution: Execution, index: int, reason: str) -> None:
        step = execution.run["steps"][index]
        self._log(execution, logging.INFO, reason, step["name"])
        execution.data_store[step["name"]] = execution.results[step["name"]] = None
        self._close_step(execution, index, StepStatus.SKIPPED)

    def _fail_step(self, execution: Execution, index: int, message: str) -> None:
        step = execution.run["steps"][index]
        message = execution.scrubber.text(message)
        self._log(execution, logging.ERROR, f"failed: {message}", step["name"])
        step["error"] = message
        self._close_step(execution, index, StepStatus.FAILED)
        self._on_failure(execution, index, message)

    def _on_failure(self, execution: Execution, index: int, message: str) -> None:
        """Apply the step's on_failure: fail the run, continue, or call its handler step."""
        action = execution.bound.actions[index]
        if action.on_failure == "continue":
            return
        execution.failure = execution.failure or f"step {action.name!r} failed: {message}"
        handler = execution.bound.graph.handler[index]
        if handler is not None:
            # The handler runs; the run still ends failed, with the error of the step that failed.
            execution.triggered.add(handler)
            execution.candidates.append(handler)

    def _finish(self, execution: Execution) -> None:
        """End the run: failed when a step failed (on_failure: fail or a handler), else succeeded."""
        run = execution.run
        status = RunStatus.FAILED if execution.failure else RunStatus.SUCCEEDED
        if status == RunStatus.FAILED and not self._compensated(execution, status):
            return  # compensation: stopped by a shutdown, the run is left running for the restart
        if status == RunStatus.SUCCEEDED:
            for index, step in enumerate(run["steps"]):
                if step["status"] == StepStatus.PENDING:  # a failure handler that no failure called
                    self._close_step(execution, index, StepStatus.SKIPPED)
        # After a failure, steps not reached stay pending: a retry runs them.
        run["error"] = execution.failure
        run["started_at"] = run["started_at"] or utcnow()
        level = logging.INFO if status == RunStatus.SUCCEEDED else logging.WARNING
        execution.log.close()  # a pending repeat count and the dropped lines, before the last line
        # Logged first: the line is written with the run's last change instead of after it.
        self._log(execution, level, f"run {status.value}" + (f": {run['error']}" if run["error"] else ""))
        self._transition(run, status, "engine", finished=True)
        self._forget(execution, ended=True)

    def _forget(self, execution: Execution, ended: bool = False) -> None:
        """Drop a run that no longer executes here; ``ended``: as stored (not stopped by a store failure)."""
        with self._lock:
            self._executions.pop(execution.run["id"], None)
            if ended and execution.awaited:
                self._outcomes[execution.run["id"]] = snapshot(execution.run)
                if len(self._outcomes) > _MAX_OUTCOMES:
                    self._outcomes.popitem(last=False)
            if execution.counted:
                execution.counted = False
                self._running[execution.bound.name] -= 1
        if self.leases is not None:
            self.leases.release(execution.run["id"])
        if self.observer is not None:
            self.observer.run_ended(execution.run)
        execution.done.set()
        execution.settled.set()
        execution.answer.set()

    def _announce(self, run: dict) -> None:
        """Tell the runtime a run ended (it publishes run.<status>); never fails the run."""
        if self.on_finished is None:
            return
        try:
            self.on_finished(run)
        except Exception:
            logger.exception("run %s: publishing its end failed", run["id"])

    # -- runs a store failure stopped ---------------------------------------------
    def _stall(self, execution: Execution, error: Exception) -> None:
        """Drop a run the store failed to record, and try to resume it later (the disk may be freed)."""
        # A storage error says all in one line (path and errno); anything else is a bug: its traceback.
        logger.error("run %s stopped: the engine could not record it: %s", execution.run["id"], one_line(error),
                     exc_info=not isinstance(error, StorageError))
        self._forget(execution)
        if execution.slotless:
            return  # a sub-workflow's parent step waits for it and fails on its own timeout
        with self._lock:
            self._stalled[execution.run["id"]] = execution.bound
            self._arm_resume()

    def _arm_resume(self) -> None:
        """Schedule the next attempt to resume stalled runs (call with the lock held)."""
        if self._closing or self._resume_timer is not None or not self._stalled:
            return
        self._resume_timer = threading.Timer(self._resume_delay, self._resume_stalled)
        self._resume_timer.daemon = True
        self._resume_timer.start()

    def _resume_stalled(self) -> None:
        """Resume the stalled runs as stored; while the store still fails, try again after a longer wait."""
        with self._lock:
            self._resume_timer = None
            stalled = list(self._stalled.items())
        failed = False
        for run_id, bound in stalled:
            try:
                run = self.store.get_run(run_id)
                if run is not None and run["status"] in (RunStatus.QUEUED, RunStatus.RUNNING):
                    self.resume(bound, run, "a storage error")
            except Exception as error:
                logger.warning("run %s still cannot be resumed: %s", run_id, one_line(error))
                failed = True
                break
            with self._lock:
                self._stalled.pop(run_id, None)
        with self._lock:
            self._resume_delay = min(self._resume_delay * 2, RESUME_MAX_DELAY) if failed else RESUME_FIRST_DELAY
            self._arm_resume()

    def _log(self, execution: Execution, level: int, message: str, step: str | None = None) -> None:
        """Log to the server log and to the run's own log."""
        message = execution.scrubber.text(message)
        if step is None:
            logger.log(level, "run %s of %s: %s", execution.run["id"], execution.bound.name, message)
        else:  # the server's log has no step column: the line names it
            logger.log(level, "run %s of %s, step %s: %s", execution.run["id"], execution.bound.name, step, message)
        # Deferred: written with the run's next change; an action's own log lines are written at once.
        # Kept past the cap: the engine's lines are few (per step and attempt) and say how the run went.
        execution.log.write(level, message, step, mode=Durability.DEFERRED, keep=True)

    @staticmethod
    def _timeout_of(execution: Execution, index: int) -> float:
        action = execution.bound.actions[index]
        return float(execution.bound.step_timeout if action.step_timeout is None else action.step_timeout)
