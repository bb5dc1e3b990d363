"""Compensation: a failed or cancelled run undoes its succeeded steps, the last completed first (DESIGN section 12).

The methods of ``Compensating`` are Engine methods (app/core/engine.py mixes it in), kept here apart from
the step loop. The engine calls them at six points: ``_note_completion`` when a step succeeds,
``_compensated`` in ``_finish`` before a run ends failed, ``_compensate_on_cancel`` in ``_halt`` before a
run executing here ends cancelled, ``_plan_cancel_elsewhere`` in ``cancel`` for a run that executes nowhere
(paused, queued: it is resumed to compensate), ``_resume_compensating`` at the start of ``_execute`` for a
run resumed while it compensated, and ``_reopen_compensated`` when a retry or a skip reopens a run.
docs/compensation.md has the behaviour; in short:

- The plan (one ``compensations`` entry per step to undo, newest completion first) and the run's
  ``compensating`` (the status it ends with: failed or cancelled) are stored before the first compensation
  runs. The run stays ``running`` until the last one ended, so recovery (restart, worker takeover) resumes
  it like any running run and finishes the entries not yet ended; then ``compensating`` is dropped.
- A compensation is tried like its step: its own ``retries``/``timeout``, else the step's, else the
  workflow's, with the same backoff. A failed one is recorded and the next one runs; the run's error stays.
- Cancel or pause asked while compensations run changes nothing: undoing half of them would leave things
  worse. A cancel answers at once with the run as it stands (``settled`` is set once the plan is stored);
  a pause is refused (run_control.py). A shutdown (or a lost lease) stops between compensations; the
  restart continues.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import ChainMap
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from actions.base import ActionError, BaseAction
from app.core import run_logs
from app.core.execution import Execution, StepTimeout, backoff, one_line
from app.core.redaction import redact, scrubbing, secret_values
from app.core.secrets import resolve_secret_fields
from app.core.templating import RenderError
from app.runs import RunStatus, StepStatus, new_step, utcnow
from app.storage.base import Durability

if TYPE_CHECKING:
    from app.core.binding import BoundWorkflow
    from app.core.engine import Engine

logger = logging.getLogger(__name__)

# A compensation's statuses (a subset of a step's).
PENDING, RUNNING, SUCCEEDED, FAILED = "pending", "running", "succeeded", "failed"
ENDED = frozenset({SUCCEEDED, FAILED})


def new_compensation(step: dict, action: BaseAction) -> dict[str, Any]:
    """A compensation's record before it runs."""
    return {"step": step["name"], "type": action.compensate.type, "status": PENDING, "attempts": 0,
            "result": None, "error": None, "started_at": None, "finished_at": None}


def due(run: dict, actions: tuple[BaseAction, ...]) -> list[int]:
    """Indices of the steps to compensate, the last completed first: succeeded, not from the cache, with one."""
    steps = run["steps"]
    chosen = [index for index, step in enumerate(steps)
              if step["status"] == StepStatus.SUCCEEDED and not step.get("cached")
              and getattr(actions[index], "compensate", None) is not None]
    # completion_order is recorded when such a step succeeds; finished_at orders records made without it.
    return sorted(chosen, key=lambda index: (steps[index].get("completion_order") or 0,
                                             steps[index].get("finished_at") or "", index), reverse=True)


def first_completion(run: dict) -> int:
    """The number the next step to succeed in ``run`` gets as its completion_order."""
    return 1 + max((step.get("completion_order") or 0 for step in run["steps"]), default=0)


def _first(*values: Any) -> Any:
    """The first value that is not None: a compensation's own setting, else its step's, else the workflow's."""
    return next(value for value in values if value is not None)


class Compensating:
    """Engine methods that run a failing or cancelled run's compensations (see the module docstring)."""

    # -- hooks called by the engine -----------------------------------------------------------
    def _note_completion(self: Engine, execution: Execution, index: int) -> None:
        """Number a succeeded step that has a compensation: compensations run in reverse of these numbers."""
        step = execution.run["steps"][index]
        if getattr(execution.bound.actions[index], "compensate", None) is not None and not step.get("cached"):
            step["completion_order"] = next(execution.completions)  # itertools.count: safe across branches

    def _compensated(self: Engine, execution: Execution, ending: RunStatus) -> bool:
        """Run the compensations the run is due before it ends ``ending``; False when a shutdown stopped them.

        On False the run was left as stored (running, ``compensating`` set) for the restart or the takeover.
        """
        self._plan_compensations(execution, ending)
        return self._run_compensations(execution)

    def _compensate_on_cancel(self: Engine, execution: Execution) -> bool:
        """Before a run ends cancelled: plan its compensations and run them on a thread that then ends it.

        False when there is nothing to compensate: the caller ends the run at once. A cancel answers
        without waiting for the compensations (a cancel can come from an API request's thread).
        """
        if not self._plan_compensations(execution, RunStatus.CANCELLED):
            return False
        self._log(execution, logging.WARNING, f"run cancelled ({execution.control_by}): its compensations run first")
        name = f"pyflow-{execution.run['id']}-compensate"
        threading.Thread(target=self._resume_compensating, args=(execution,), name=name, daemon=True).start()
        return True

    def _resume_compensating(self: Engine, execution: Execution) -> bool:
        """Finish a run's planned compensations, then end it as planned (failed or cancelled)."""
        run = execution.run
        try:
            if run.get("compensating") == RunStatus.FAILED:
                execution.failure = execution.failure or run.get("error") or "failed"
                self._finish(execution)  # its _compensated call finds the plan and runs what is left
                return True
            if not self._run_compensations(execution):
                return True
            by = run.pop("cancelled_by", None) or "engine"
            self._transition(run, RunStatus.CANCELLED, by, finished=True)
            self._log(execution, logging.WARNING, f"run cancelled ({by}), compensated")
            self.store.flush(run["id"])
            self._forget(execution, ended=True)
        except Exception as error:  # a store failure: resumed as stored once the store writes again
            self._stall(execution, error)
        return True

    @staticmethod
    def _reopen_compensated(run: dict) -> None:
        """A retried or skipped-past run: steps whose compensation undid them run again; the plan is dropped."""
        undone = {entry["step"] for entry in run.get("compensations") or () if entry["status"] == SUCCEEDED}
        for step in run["steps"]:
            if step["name"] in undone and step["status"] == StepStatus.SUCCEEDED:
                step.update(new_step(step["name"], step["type"], step["depends_on"]))
        for field in ("compensations", "compensating", "cancelled_by"):
            run.pop(field, None)

    # -- the work ---------------------------------------------------------------------------
    def _plan_compensations(self: Engine, execution: Execution, ending: RunStatus) -> bool:
        """Store the plan (once) before any compensation runs; False when the run has nothing to compensate."""
        run = execution.run
        if run.get("compensating"):
            return True  # planned by an earlier execution: recovery continues it
        names = self._store_plan(run, execution.bound, ending, execution.failure, execution.control_by)
        if names:
            self._log(execution, logging.WARNING, f"compensating {len(names)} step(s), last completed first: "
                      + ", ".join(names))
            execution.settled.set()  # a cancel or pause waiting for the run answers now: compensations outlast it
        return bool(names)

    def _store_plan(self: Engine, run: dict, bound: BoundWorkflow, ending: RunStatus, error: str | None,
                    by: str) -> list[str]:
        """Put the compensation plan in ``run`` and the store (synced); the names of the steps to undo, maybe none.

        ``error``: a failing run's; ``by``: who cancelled a cancelled one (its history names them at the end).
        """
        steps = run["steps"]
        indices = due(run, bound.actions)
        if not indices:
            return []
        run["compensating"] = ending.value
        run["compensations"] = [new_compensation(steps[index], bound.actions[index]) for index in indices]
        fields = {"compensating": run["compensating"], "compensations": run["compensations"]}
        if ending == RunStatus.FAILED:
            run["error"] = fields["error"] = error  # what recovery ends the run with
        else:
            run["cancelled_by"] = fields["cancelled_by"] = by
        self.store.update_run(run["id"], fields, mode=Durability.SYNC)
        return [steps[index]["name"] for index in indices]

    def _plan_cancel_elsewhere(self: Engine, run: dict, by: str) -> BoundWorkflow | None:
        """A cancel of a run that does not execute here (paused, or queued in the store): plan its compensations.

        The workflow it runs with when there is something to compensate (the caller then resumes the run,
        which compensates and ends cancelled wherever it executes); None when it ends cancelled at once.
        """
        if run.get("compensating"):
            return None  # planned already: a cancel changes nothing while compensations are due
        bound = self.bound_for(run) if self.bound_for is not None else None
        if bound is None or not self._store_plan(run, bound, RunStatus.CANCELLED, None, by):
            return None
        return bound

    def _run_compensations(self: Engine, execution: Execution) -> bool:
        """Run the plan's entries not yet ended, in order; False when a shutdown or a lost lease stopped them."""
        run = execution.run
        if not run.get("compensating"):
            return True
        positions = {step["name"]: index for index, step in enumerate(run["steps"])}
        for position, entry in enumerate(run["compensations"]):
            if entry["status"] in ENDED:
                continue
            if self._compensation_stops(execution):
                return self._leave_compensating(execution)
            index = positions.get(entry["step"])
            if index is None or getattr(execution.bound.actions[index], "compensate", None) is None:
                self._set_compensation(execution, position, status=FAILED, finished_at=utcnow(),
                                       error=f"step {entry['step']!r} has no compensation in this workflow version")
                continue
            if not self._compensate_step(execution, position, index):
                return self._leave_compensating(execution)
        run.pop("compensating", None)  # the run's last save (its end) drops it
        return True

    def _compensate_step(self: Engine, execution: Execution, position: int, index: int) -> bool:
        """Every attempt of one compensation until it succeeds or fails for good; False when stopped."""
        bound, action = execution.bound, execution.bound.actions[index]
        compensation: BaseAction = action.compensate
        retries = _first(compensation.retries, action.retries, bound.max_retries)
        timeout = float(_first(compensation.step_timeout, action.step_timeout, bound.step_timeout))
        entry = execution.run["compensations"][position]
        if entry["status"] == RUNNING and not compensation.idempotent:
            # Repeating it could act twice; a person decides, as for an interrupted step.
            self._end_compensation(execution, position, index, error="interrupted by restart")
            return True
        while True:
            attempts = entry["attempts"] + 1
            entry = self._set_compensation(execution, position, status=RUNNING, attempts=attempts,
                                           started_at=entry["started_at"] or utcnow())
            outcome = self._compensation_attempt(execution, index, compensation, attempts, timeout)
            if not isinstance(outcome, BaseException):
                self._end_compensation(execution, position, index, result=outcome)
                return True
            message = execution.scrubber.text(one_line(outcome))
            if not getattr(outcome, "retryable", True) or attempts > retries:
                self._end_compensation(execution, position, index, error=message)
                return True
            entry = self._set_compensation(execution, position, error=message)
            delay = backoff(bound.retry_delay, attempts)
            self._log(execution, logging.WARNING, f"compensation attempt {attempts} failed: {message}; "
                      f"retrying in {delay:.1f} s", action.name)
            if not self._compensation_pause(execution, delay):
                self._set_compensation(execution, position, status=PENDING)  # no attempt under way: rerun it
                return False

    def _compensation_attempt(self: Engine, execution: Execution, index: int, compensation: BaseAction,
                              attempt: int, timeout: float) -> dict | BaseException:
        """One attempt of a compensation, on a thread of its own so its timeout holds; the result or the error."""
        action, run = execution.bound.actions[index], execution.run
        ending = run.get("compensating")
        error = execution.failure or run.get("error") or ("cancelled" if ending == RunStatus.CANCELLED else None)
        names = ChainMap({"run": {"id": run["id"], "workflow": execution.bound.name, "error": error}},
                         self._names(execution))
        where = f"step {action.name!r}: compensate"
        try:
            rendered = self.renderer.render_object(compensation, names, where)
            resolve_secret_fields(rendered, names.get("secrets"), where)
        except (RenderError, ValueError) as problem:
            return ActionError(one_line(problem), retryable=False)
        # Its own cancel event: a cancel of the run must not stop the compensation it asked for.
        context = self._context(execution, rendered, attempt, timeout)
        rendered.context = replace(context, cancel_event=threading.Event())
        execution.scrubber.add(self._config_secrets(compensation, rendered))
        outcome: dict[str, Any] = {}

        def attempt_it() -> None:
            try:
                with run_logs.run_scope(execution.log, action.name):
                    outcome["value"] = rendered.execute(execution.data_store)
            except Exception as failure:  # any failure of user code fails the attempt
                outcome["error"] = failure

        worker = threading.Thread(target=attempt_it, name=f"pyflow-{run['id']}-compensate-{index}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():  # abandoned, as a timed-out step's thread is; told to stop if it listens
            rendered.context.cancel_event.set()
            return StepTimeout(f"timed out after {timeout:g} s")
        if "error" in outcome:
            failure = outcome["error"]
            if not isinstance(failure, ActionError):
                with scrubbing(execution.scrubber):  # the traceback may quote the run's secrets
                    logger.warning("run %s: compensation of step %s attempt %d raised", run["id"], action.name,
                                   attempt, exc_info=failure)
            return failure
        # Measured and counted as a step's result is (not an abandoned one): the run's results stay bounded.
        return self._accepted_result(execution, outcome["value"])

    def _end_compensation(self: Engine, execution: Execution, position: int, index: int, *,
                          result: dict | None = None, error: str | None = None) -> None:
        name = execution.bound.actions[index].name
        if error is None:
            execution.scrubber.add(secret_values(result or {}))
            self._set_compensation(execution, position, status=SUCCEEDED, error=None, finished_at=utcnow(),
                                   result=execution.scrubber.scrub(redact(result or {})))
            self._log(execution, logging.INFO, "compensated", name)
        else:
            error = execution.scrubber.text(error)
            self._set_compensation(execution, position, status=FAILED, error=error, finished_at=utcnow())
            self._log(execution, logging.ERROR, f"compensation failed: {error}", name)

    def _set_compensation(self: Engine, execution: Execution, position: int, **changes: Any) -> dict:
        """Change one compensation's record and store the list at once (a fresh list: snapshots keep theirs)."""
        run = execution.run
        entries = list(run["compensations"])
        entries[position] = {**entries[position], **changes}
        run["compensations"] = entries
        self.store.update_run(run["id"], {"compensations": entries}, mode=Durability.SYNC)
        return entries[position]

    def _compensation_stops(self: Engine, execution: Execution) -> bool:
        """True when the compensations must stop here: this process shuts down, or another owns the run now."""
        return self._closing or execution.control == "lost"

    def _compensation_pause(self: Engine, execution: Execution, delay: float) -> bool:
        """Wait a retry's backoff; False when a shutdown or a lost lease ends it early."""
        # Not execution.stop.wait: a cancel or a pause sets it too, and compensations outlast those.
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            if self._compensation_stops(execution):
                return False
            time.sleep(min(0.1, remaining))
        return not self._compensation_stops(execution)

    def _leave_compensating(self: Engine, execution: Execution) -> bool:
        """Stop compensating here: the run stays as stored (running, ``compensating`` set) for whoever resumes it."""
        if execution.control != "lost":  # another process owns the run now: nothing more is written from here
            execution.log.close()
            self.store.flush(execution.run["id"])
        self._forget(execution)
        return False

