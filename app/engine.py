"""Starts and executes runs: concurrency, retries, timeouts and step records."""

from __future__ import annotations

import copy
import json
import logging
import random
import threading
import time
from collections import deque
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
        # Set on shutdown: stop at the next step boundary; the run resumes after a restart.
        self.stop = threading.Event()

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

    def resume(self, bound: BoundWorkflow, run: dict) -> None:
        """Continue a stored run from its first unfinished step (crash recovery)."""
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
        self._log(execution, logging.INFO, f"resumed after a restart at step {index + 1} of {len(run['steps'])}")
        self._schedule(execution)

    def wait(self, run_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a run of this process to finish; True when it has."""
        with self._lock:
            execution = self._executions.get(run_id)
        return execution is None or execution.done.wait(timeout)

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
    def _schedule(self, execution: _Execution) -> None:
        with self._lock:
            self._executions[execution.run["id"]] = execution
            if self._closing:
                return
            if self._active >= self.max_concurrent:
                self._pending.append(execution)
                return
            self._active += 1
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
            if self._pending and not self._closing:
                return self._pending.popleft()
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
            run["status"] = RunStatus.RUNNING.value
            run["started_at"] = run["started_at"] or utcnow()
            self.store.update_run(run["id"], {"status": run["status"], "started_at": run["started_at"]})
            self._log(execution, logging.INFO, f"run started ({run['source']}), {len(run['steps'])} steps")
        actions = execution.bound.actions
        while execution.step_index < len(actions):
            if execution.stop.is_set():
                self._forget(execution)
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
        )
        token = self._watchdog.arm(execution, self._timeout_of(execution))
        try:
            with run_logs.run_scope(self.store, run_id, action.name, self._secrets):
                result: Any = action.execute(execution.data_store)
        except Exception as error:  # any failure of user code fails the attempt
            if not self._watchdog.disarm(token):
                return None
            if not isinstance(error, ActionError):
                logger.warning("run %s: step %s attempt %d raised", run_id, action.name, execution.attempt,
                               exc_info=True)
            return error
        if not self._watchdog.disarm(token):
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
            self._forget(execution)
            return False
        return True

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
        run.update(status=status.value, error=error, finished_at=utcnow(), progress=progress(run["steps"]))
        run["started_at"] = run["started_at"] or run["finished_at"]
        self.store.save_run(run)
        level = logging.INFO if status == RunStatus.SUCCEEDED else logging.WARNING
        self._log(execution, level, f"run {status.value}" + (f": {error}" if error else ""))
        self._forget(execution)

    def _forget(self, execution: _Execution) -> None:
        with self._lock:
            self._executions.pop(execution.run["id"], None)
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
