"""Starts and executes runs: concurrency, retries, timeouts and step records."""

from __future__ import annotations

import copy
import json
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from actions.base import ActionError, BaseAction, RunContext
from app import run_logs
from app.binding import BoundWorkflow
from app.config import SECRET_SETTINGS, public_settings
from app.redaction import redact
from app.runs import FINISHED_STEP, RunStatus, StepStatus, new_run, new_step, progress, utcnow
from app.store import Store
from app.templating import Renderer, RenderError, is_truthy
from app.watchdog import Watchdog

logger = logging.getLogger(__name__)

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
    """A human one-line message for an exception (no traceback)."""
    try:
        message = str(error)
    except Exception:  # a broken __str__ must not stop the engine from recording the failure
        message = ""
    if isinstance(error, (ActionError, RenderError, StepTimeout)):
        text = message
    else:  # an unexpected exception: its class name is part of the story
        text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 1] + "…"


def backoff(base: float, attempt: int) -> float:
    """Seconds before retry number ``attempt``: exponential with "equal jitter"."""
    delay = min(base * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
    return delay / 2 + random.uniform(0, delay / 2)


class _Execution:
    """A run being executed in this process, and where it is."""

    def __init__(self, bound: BoundWorkflow, run: dict, data_store: dict, results: dict, step_index: int):
        self.bound = bound
        self.run = run
        self.data_store = data_store
        self.results = results
        self.step_index = step_index
        self.attempt = 0
        self.step_clock = 0.0
        self.done = threading.Event()
        # Set to stop at the next step boundary (or end a backoff); ``control`` says why:
        # "shutdown" (resume after a restart), "pause" or "cancel".
        self.stop = threading.Event()
        self.control = "shutdown"
        self.control_by = "shutdown"
        self.cancelled = threading.Event()
        # The watchdog token of the attempt under way; whoever disarms it owns the run.
        self.token: int | None = None
        # True while it counts against its workflow's max_concurrent_runs.
        self.counted = False

    def __repr__(self) -> str:
        return f"<run {self.run['id']} step {self.step_index}>"


class Engine:
    """Executes runs with at most ``WORKFLOW_MAX_CONCURRENT`` at once; the rest wait queued."""

    def __init__(self, store: Store, settings: Mapping[str, Any], renderer: Renderer | None = None):
        self.store = store
        self.settings = settings
        self.renderer = renderer or Renderer()
        self.max_concurrent = int(settings["WORKFLOW_MAX_CONCURRENT"])
        self._public_settings = public_settings(settings)
        self._lock = threading.Condition()
        self._pending: deque[_Execution] = deque()
        self._active = 0
        self._running: Counter[str] = Counter()
        self._executions: dict[str, _Execution] = {}
        self._closing = False
        self._watchdog = Watchdog(self._on_timeout)
        self._secrets = tuple(str(settings[name]) for name in SECRET_SETTINGS if settings.get(name))
        run_logs.install()

    # -- starting runs ------------------------------------------------------
    def submit(
        self,
        bound: BoundWorkflow,
        trigger_data: dict,
        *,
        source: str = "api",
        idempotency_key: str | None = None,
    ) -> tuple[dict, bool]:
        """Store a queued run and schedule it; with a used key, return the first run and False."""
        steps = [new_step(action.name, action.type) for action in bound.actions]
        run = new_run(bound.name, steps, redact(trigger_data), source)
        stored, created = self.store.create_run(run, idempotency_key)
        if created:
            # The caller gets a snapshot: the worker changes ``run`` before the store has each change.
            stored = copy.deepcopy(run)
            data_store = {"trigger_data": trigger_data}
            self._schedule(_Execution(bound, run, data_store, {}, 0))
        return stored, created

    def resume(self, bound: BoundWorkflow, run: dict, by: str = "restart") -> None:
        """Continue a stored run from its first unfinished step (recovery, resume, retry)."""
        data_store: dict[str, Any] = {"trigger_data": run["trigger_data"]}
        results: dict[str, Any] = {}
        steps = run["steps"]
        index = next((i for i, step in enumerate(steps) if step["status"] not in FINISHED_STEP), len(steps))
        for step in steps[:index]:
            data_store[step["name"]] = results[step["name"]] = step["result"]
        execution = _Execution(bound, run, data_store, results, index)
        if index < len(run["steps"]) and run["steps"][index]["status"] == StepStatus.RUNNING:
            action = bound.actions[index]
            if not action.idempotent:
                # Repeating it could act twice (an e-mail sent twice); a person decides.
                self._fail_step(execution, run["steps"][index], "interrupted by restart")
                return
            execution.attempt = run["steps"][index]["attempts"]
        if run["status"] != RunStatus.QUEUED:
            self._transition(execution.run, RunStatus.QUEUED, by)
        where = f"at step {index + 1} of {len(steps)}" if index < len(steps) else "after its last step"
        self._log(execution, logging.INFO, f"continues {where} ({by})")
        self._schedule(execution)

    def wait(self, run_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a run of this process to finish; True when it has."""
        with self._lock:
            execution = self._executions.get(run_id)
        return execution is None or execution.done.wait(timeout)

    # -- control ----------------------------------------------------------------
    def cancel(self, run: dict, by: str = "api") -> dict:
        """Cancel a queued, running or paused run; a running step is abandoned, never waited for."""
        if run["status"] not in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED):
            raise RunStateError(run, "cancelled")
        execution = self._claim(run["id"], "cancel", by)
        if execution is None:
            self._transition(run, RunStatus.CANCELLED, by, finished=True)
            return run
        if execution.token is None:  # queued here, or its attempt was disarmed: this thread owns it
            self._halt(execution)
        return self._settled(execution)

    def pause(self, run: dict, by: str = "api") -> dict:
        """Pause a queued or running run: the current step finishes, the next does not start."""
        if run["status"] not in (RunStatus.QUEUED, RunStatus.RUNNING):
            raise RunStateError(run, "paused")
        execution = self._claim(run["id"], "pause", by)
        if execution is None:
            self._transition(run, RunStatus.PAUSED, by)
            return run
        if execution.token is None:
            self._halt(execution)
        return self._settled(execution, timeout=2.0)

    def retry(self, bound: BoundWorkflow, run: dict, by: str = "api") -> dict:
        """Continue a failed or cancelled run from its first unfinished step, keeping finished results."""
        if run["status"] not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise RunStateError(run, "retried")
        for step in run["steps"]:
            if step["status"] in (StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.RUNNING):
                step.update(new_step(step["name"], step["type"]))
        return self._reopen(bound, run, by)

    def skip(self, bound: BoundWorkflow, run: dict, step_name: str, by: str = "api") -> dict:
        """Mark a failed run's failed step skipped and continue after it."""
        if run["status"] != RunStatus.FAILED:
            raise RunStateError(run, "continued past a step")
        step = next((step for step in run["steps"] if step["name"] == step_name), None)
        if step is None or step["status"] != StepStatus.FAILED:
            state = "no such step" if step is None else f"step {step_name!r} is {step['status']}"
            raise RunStateError(run, f"made to skip {step_name!r} ({state}; only a failed step can be skipped)")
        step["status"] = StepStatus.SKIPPED.value
        return self._reopen(bound, run, by)

    def _reopen(self, bound: BoundWorkflow, run: dict, by: str) -> dict:
        run.update(error=None, finished_at=None)
        run["progress"] = progress(run["steps"])
        self.store.save_run(run)  # the reset steps, before the run is queued again
        self.resume(bound, run, by)
        return copy.deepcopy(run)

    def _claim(self, run_id: str, control: str, by: str) -> _Execution | None:
        """Ask the execution of ``run_id`` to stop for ``control``; None when it is not in this process.

        A cancel also disarms the attempt under way: then ``token`` is None and
        the caller owns the run, as the watchdog does on a timeout.
        """
        with self._lock:
            execution = self._executions.get(run_id)
            if execution is None:
                return None
            execution.control, execution.control_by = control, by
            execution.stop.set()
            if control == "cancel":
                execution.cancelled.set()
            if execution in self._pending:
                self._pending.remove(execution)
                execution.token = None
            elif control == "cancel" and execution.token is not None and self._watchdog.disarm(execution.token):
                execution.token = None
                # The abandoned thread held a slot: hand it to the next pending run.
                threading.Thread(target=lambda: self._work(self._next()), daemon=True).start()
            else:
                execution.token = -1  # the run thread will see ``stop`` and halt by itself
        return execution

    def _settled(self, execution: _Execution, timeout: float = 5.0) -> dict:
        execution.done.wait(timeout)
        return copy.deepcopy(execution.run)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop starting steps, wait up to ``timeout`` for running steps; the rest resume on restart."""
        with self._lock:
            self._closing = True
            for execution in self._executions.values():
                execution.stop.set()
            deadline = time.monotonic() + timeout
            while self._active and time.monotonic() < deadline:
                self._lock.wait(deadline - time.monotonic())
        self._watchdog.stop()

    # -- workers --------------------------------------------------------------
    def running_count(self, workflow: str) -> int:
        """Runs of ``workflow`` executing now in this process."""
        with self._lock:
            return self._running[workflow]

    def _may_run(self, execution: _Execution) -> bool:
        limit = execution.bound.workflow.max_concurrent_runs
        return limit is None or self._running[execution.bound.name] < limit

    def _take(self, execution: _Execution) -> _Execution:
        """Count ``execution`` as running (call with the lock held)."""
        execution.counted = True
        self._running[execution.bound.name] += 1
        return execution

    def _schedule(self, execution: _Execution) -> None:
        with self._lock:
            self._executions[execution.run["id"]] = execution
            if self._closing:
                return
            if self._active >= self.max_concurrent or not self._may_run(execution):
                self._pending.append(execution)
                return
            self._active += 1
            self._take(execution)
        self._start_thread(execution)

    def _start_thread(self, execution: _Execution) -> None:
        name = f"pyflow-{execution.run['id']}"
        threading.Thread(target=self._work, args=(execution,), name=name, daemon=True).start()

    def _work(self, execution: _Execution | None) -> None:
        """Execute runs until none is pending; the slot is this thread's until then."""
        while execution is not None:
            try:
                if not self._execute(execution):
                    return  # a timed-out step handed this run (and the slot) to another thread
            except Exception:  # a store failure: the run stays as stored and resumes on restart
                logger.exception("run %s stopped: the engine could not record it", execution.run["id"])
                self._forget(execution)
            execution = self._next()

    def _next(self) -> _Execution | None:
        """The next pending run for a thread that holds a slot, or None after releasing the slot."""
        with self._lock:
            if not self._closing:
                # First come, first served, past runs whose workflow is at its max_concurrent_runs.
                for execution in self._pending:
                    if self._may_run(execution):
                        self._pending.remove(execution)
                        return self._take(execution)
            self._active -= 1
            self._lock.notify_all()
            return None

    def _on_timeout(self, execution: _Execution) -> None:
        """A step ran past its deadline: fail the attempt and carry on in a fresh thread."""
        seconds = self._timeout_of(execution)
        error = StepTimeout(f"timed out after {seconds:g} s")

        def carry_on() -> None:
            try:
                goes_on = self._after_failure(execution, error)
            except Exception:
                logger.exception("run %s stopped: the engine could not record it", execution.run["id"])
                self._forget(execution)
                goes_on = False
            self._work(execution if goes_on else self._next())

        self._log(execution, logging.WARNING, str(error), self._action(execution).name)
        threading.Thread(target=carry_on, name=f"pyflow-{execution.run['id']}", daemon=True).start()

    # -- one run --------------------------------------------------------------
    def _execute(self, execution: _Execution) -> bool:
        """Run steps from the current one; False when a timed-out step handed the run on."""
        run = execution.run
        if run["status"] != RunStatus.RUNNING:
            run["started_at"] = run["started_at"] or utcnow()
            self._transition(run, RunStatus.RUNNING, "engine")
            self._log(execution, logging.INFO, f"run started ({run['source']}), {len(run['steps'])} steps")
        actions = execution.bound.actions
        while execution.step_index < len(actions):
            if execution.stop.is_set():
                self._halt(execution)
                return True
            action = actions[execution.step_index]
            step = run["steps"][execution.step_index]
            try:
                rendered = self._render(execution, action)
            except RenderError as error:
                self._fail_step(execution, step, one_line(error))
                return True
            if execution.attempt == 0 and rendered.when is not None and not is_truthy(rendered.when):
                self._skip_step(execution, step)
                continue
            outcome = self._attempt(execution, rendered, step)
            if outcome is None:
                return False
            if isinstance(outcome, BaseException):
                if not self._after_failure(execution, outcome):
                    return True
        self._finish(execution, RunStatus.SUCCEEDED, None)
        return True

    def _render(self, execution: _Execution, action: BaseAction) -> BaseAction:
        """A per-run copy of ``action`` with its templates rendered and its context set."""
        if self.renderer.template_fields(action):
            context = {
                **execution.data_store,
                "inputs": execution.data_store["trigger_data"],
                "steps": execution.results,
                "run": {"id": execution.run["id"], "workflow": execution.bound.name},
                "settings": self._public_settings,
            }
            rendered = self.renderer.render_object(action, context, f"step {action.name!r}")
        else:
            rendered = self.renderer.render_object(action, {}, "")
        return rendered

    def _attempt(self, execution: _Execution, action: BaseAction, step: dict) -> dict | BaseException | None:
        """One attempt; the result, the exception, or None when the watchdog took the run over."""
        run_id = execution.run["id"]
        execution.attempt += 1
        step["status"] = StepStatus.RUNNING.value
        step["attempts"] = execution.attempt
        if step["started_at"] is None:
            step["started_at"] = utcnow()
        if not execution.step_clock:  # also after a restart, which resets the clock
            execution.step_clock = time.perf_counter()
        self.store.update_step(run_id, execution.step_index, step, durable=False)
        action.context = RunContext(
            run_id=run_id,
            workflow=execution.bound.name,
            step=action.name,
            attempt=execution.attempt,
            settings=self.settings,
            storage_path=str(self.store.root),
            cancel_event=execution.cancelled,
        )
        with self._lock:
            if execution.stop.is_set():
                return StepInterrupted()
            token = execution.token = self._watchdog.arm(execution, self._timeout_of(execution))
        try:
            with run_logs.run_scope(self.store, run_id, action.name, self._secrets):
                result: Any = action.execute(execution.data_store)
        except Exception as error:  # any failure of user code fails the attempt
            if not self._release(execution, token):
                return None
            if not isinstance(error, ActionError):
                logger.warning("run %s: step %s attempt %d raised", run_id, action.name, execution.attempt,
                               exc_info=True)
            return error
        if not self._release(execution, token):
            return None
        try:
            result = self._as_result(result)
        except TypeError as error:
            return ActionError(f"returned a result that is not JSON: {error}", retryable=False)
        self._succeed_step(execution, step, result)
        return result

    @staticmethod
    def _as_result(value: Any) -> dict:
        result = {} if value is None else value if isinstance(value, dict) else {"value": value}
        if result:
            json.dumps(result)  # fail the step here, not later in the store
        return result

    def _after_failure(self, execution: _Execution, error: BaseException) -> bool:
        """Retry after a backoff or fail the run; True when the run goes on."""
        if isinstance(error, StepInterrupted):
            execution.attempt -= 1  # the attempt never started
            self._halt(execution)
            return False
        step = execution.run["steps"][execution.step_index]
        message = one_line(error)
        action = self._action(execution)
        retries = execution.bound.max_retries if action.retries is None else action.retries
        retryable = getattr(error, "retryable", True)
        if not retryable or execution.attempt > retries:
            self._fail_step(execution, step, message)
            return False
        step["error"] = message
        self.store.update_step(execution.run["id"], execution.step_index, step, durable=False)
        delay = backoff(execution.bound.retry_delay, execution.attempt)
        self._log(execution, logging.WARNING,
                  f"attempt {execution.attempt} failed: {message}; retrying in {delay:.1f} s", action.name)
        if execution.stop.wait(delay):
            self._halt(execution)
            return False
        return True

    def _release(self, execution: _Execution, token: int) -> bool:
        """Disarm the attempt's watchdog; False when a timeout or a cancel took the run over."""
        with self._lock:
            owned = self._watchdog.disarm(token)
            if owned:
                execution.token = None
        return owned

    def _halt(self, execution: _Execution) -> None:
        """Stop a run at a boundary for its ``control``: cancel, pause, or shutdown (left for the restart)."""
        run, by = execution.run, execution.control_by
        if execution.control == "cancel":
            if execution.step_index < len(run["steps"]):
                step = run["steps"][execution.step_index]
                if step["status"] == StepStatus.RUNNING:
                    self._close_step(execution, step, StepStatus.CANCELLED)
                    step["error"] = "cancelled while running"
                    self.store.update_step(run["id"], execution.step_index - 1, step)
            self._transition(run, RunStatus.CANCELLED, by, finished=True)
            self._log(execution, logging.WARNING, f"run cancelled ({by})")
        elif execution.control == "pause":
            self._transition(run, RunStatus.PAUSED, by)
            self._log(execution, logging.INFO, f"run paused ({by})")
        self._forget(execution)

    def _transition(self, run: dict, status: RunStatus, by: str, *, finished: bool = False) -> None:
        """Change a run's status, record it in ``history``, and store it before anyone hears of it."""
        run.setdefault("history", []).append({"at": utcnow(), "from": run["status"], "to": status.value, "by": by})
        run["status"] = status.value
        if finished:
            run["finished_at"] = run["history"][-1]["at"]
            run["progress"] = progress(run["steps"])
            self.store.save_run(run)
        else:
            fields = {"status": run["status"], "history": run["history"], "started_at": run["started_at"]}
            self.store.update_run(run["id"], fields)

    # -- records --------------------------------------------------------------
    def _close_step(self, execution: _Execution, step: dict, status: StepStatus) -> None:
        step["status"] = status.value
        step["finished_at"] = utcnow()
        if execution.step_clock:
            step["duration_ms"] = round((time.perf_counter() - execution.step_clock) * 1000)
        execution.step_index += 1
        execution.attempt = 0
        execution.step_clock = 0.0

    def _succeed_step(self, execution: _Execution, step: dict, result: dict) -> None:
        step["result"] = redact(result)
        step["error"] = None
        execution.data_store[step["name"]] = execution.results[step["name"]] = result
        self._close_step(execution, step, StepStatus.SUCCEEDED)
        self.store.update_step(execution.run["id"], execution.step_index - 1, step)

    def _skip_step(self, execution: _Execution, step: dict) -> None:
        self._log(execution, logging.INFO, "skipped: its condition (when) is false", step["name"])
        execution.data_store[step["name"]] = execution.results[step["name"]] = None
        self._close_step(execution, step, StepStatus.SKIPPED)
        self.store.update_step(execution.run["id"], execution.step_index - 1, step)

    def _fail_step(self, execution: _Execution, step: dict, message: str) -> None:
        self._log(execution, logging.ERROR, f"failed: {message}", step["name"])
        step["error"] = message
        self._close_step(execution, step, StepStatus.FAILED)
        self._finish(execution, RunStatus.FAILED, f"step {step['name']!r} failed: {message}")

    def _finish(self, execution: _Execution, status: RunStatus, error: str | None) -> None:
        run = execution.run
        run["error"] = error
        run["started_at"] = run["started_at"] or utcnow()
        self._transition(run, status, "engine", finished=True)
        level = logging.INFO if status == RunStatus.SUCCEEDED else logging.WARNING
        self._log(execution, level, f"run {status.value}" + (f": {error}" if error else ""))
        self._forget(execution)

    def _forget(self, execution: _Execution) -> None:
        with self._lock:
            self._executions.pop(execution.run["id"], None)
            if execution.counted:
                execution.counted = False
                self._running[execution.bound.name] -= 1
        execution.done.set()

    def _log(self, execution: _Execution, level: int, message: str, step: str | None = None) -> None:
        """Log to the server log and to the run's own log."""
        logger.log(level, "run %s of %s: %s", execution.run["id"], execution.bound.name, message)
        run_logs.write(self.store, execution.run["id"], level, message, step, self._secrets)

    @staticmethod
    def _action(execution: _Execution) -> BaseAction:
        return execution.bound.actions[execution.step_index]

    def _timeout_of(self, execution: _Execution) -> float:
        action = self._action(execution)
        return float(execution.bound.step_timeout if action.step_timeout is None else action.step_timeout)
