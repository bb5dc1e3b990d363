"""Run control: cancel, pause, retry and skip, here or, through the store, in the process executing the run."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from app.core.binding import BoundWorkflow
from app.core.execution import Execution, RunStateError
from app.runs import FINISHED_RUN, RunStatus, StepStatus, new_step, progress, snapshot

if TYPE_CHECKING:
    from app.core.engine import Engine

logger = logging.getLogger(__name__)

# How long a cancel or pause asked of another process waits for it to act (it looks every 0.5 s).
CONTROL_WAIT_SECONDS = {"cancel": 5.0, "pause": 2.0}


class Controlling:
    """The Engine's run controls (mixed into app/core/engine.py's Engine)."""

    def cancel(self: Engine, run: dict, by: str = "api") -> dict:
        """Cancel a queued, running, paused or waiting run; a running step is abandoned, never waited for.

        Nor are compensations: a run that has steps to undo answers still ``running``, ``compensating``
        set, and ends cancelled (or failed, when a failure made it compensate) once they ran.
        """
        if run["status"] not in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.WAITING):
            raise RunStateError(run, "cancelled")
        execution, owned, holds_slot = self._claim(run["id"], "cancel", by)
        if execution is None and self._elsewhere(run["id"]):
            return self._ask_elsewhere(run, "cancel", by)
        if execution is None:
            return self._cancel_here(run, by)
        if owned:
            try:
                self._halt(execution)
            finally:
                if holds_slot:
                    # The abandoned run thread held a slot: hand it to the next pending run, only now
                    # that the cancelled run no longer counts against its workflow's max_concurrent_runs.
                    threading.Thread(target=lambda: self._work(self._next()), daemon=True).start()
        settled = self._settled(execution)
        if settled.get("compensating") == RunStatus.FAILED:
            self._log(execution, logging.INFO, f"the cancel asked by {by} lets the compensations finish: "
                      "the run ends failed once they ran")
        if settled["status"] == RunStatus.WAITING and execution.done.is_set():
            # Asked while the run halted into waiting (past its thread's last look at the cancel): it is
            # parked now, no longer executing here, and cancelled as a parked run.
            return self.cancel(settled, by)
        return settled

    def _cancel_here(self: Engine, run: dict, by: str) -> dict:
        """Cancel a run that executes nowhere (queued, paused, waiting), its lease held by ``_elsewhere``."""
        compensating = None
        try:
            run = self._current(run, "cancelled",
                                (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.WAITING))
            self._cancel_parked(run)
            compensating = self._plan_cancel_elsewhere(run, by)  # compensation: resumed below to undo its steps
            if not run.get("compensating"):  # else it compensates (now, or as planned before): it ends after
                self._transition(run, RunStatus.CANCELLED, by, finished=True)
        finally:
            if self.leases is not None:
                self.leases.release(run["id"])  # taken by _elsewhere while the status changed
        if compensating is not None:
            self.resume(compensating, run, by)  # executes (here or on a worker) its compensations only
            return snapshot(run)
        return run

    def pause(self: Engine, run: dict, by: str = "api") -> dict:
        """Pause a queued, running or waiting run: the current step finishes, the next does not start.

        A waiting run's steps keep waiting, indexed; an answer, event or timeout that comes while it is paused
        is kept for its step (app/core/parking.py) and applied when the run is resumed. A run undoing its
        steps (compensating) is not paused: RunStateError, as it ends once they ran.
        """
        if run["status"] not in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING):
            raise RunStateError(run, "paused")
        _refuse_pause_while_compensating(run)
        execution, owned, _ = self._claim(run["id"], "pause", by)
        if execution is None and self._elsewhere(run["id"]):
            return self._ask_elsewhere(run, "pause", by)
        if execution is None:
            return self._pause_here(run, by)
        if owned:
            self._halt(execution)
        settled = self._settled(execution, timeout=2.0)
        _refuse_pause_while_compensating(settled)  # it was, or it failed before the pause took: it ends after
        if settled["status"] == RunStatus.WAITING and execution.done.is_set():
            # Asked while the run halted into waiting (past its thread's last look at the pause): it is
            # parked now, no longer executing here, and paused as a parked run.
            return self.pause(settled, by)
        return settled

    def _pause_here(self: Engine, run: dict, by: str) -> dict:
        """Pause a run that executes nowhere (queued, or waiting: its steps stay waiting), its lease held."""
        try:
            run = self._current(run, "paused", (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING))
            self._transition(run, RunStatus.PAUSED, by)
        finally:
            if self.leases is not None:
                self.leases.release(run["id"])  # taken by _elsewhere while the status changed
        return run

    def _elsewhere(self: Engine, run_id: str) -> bool:
        """True when another process holds the run's lease: it executes the run, so it must act on a control.

        Otherwise this process takes the lease (released once the control's change is stored), so no
        worker starts the run while its status changes here.
        """
        return self.leases is not None and not self.leases.claim(run_id)

    def _ask_elsewhere(self: Engine, run: dict, control: str, by: str) -> dict:
        """Have the process executing the run cancel or pause it; the run once it did (or as it stands)."""
        self.store.request_control(run["id"], control, by)
        deadline = time.monotonic() + CONTROL_WAIT_SECONDS[control]
        done = FINISHED_RUN | {RunStatus.PAUSED}
        fresh = run
        while time.monotonic() < deadline:
            fresh = self.store.get_run(run["id"]) or fresh
            if fresh["status"] in done or fresh.get("compensating"):
                break  # acted on, or undoing its steps (a cancel does not wait for that; a pause is refused)
            if fresh["status"] == RunStatus.WAITING and not self._elsewhere(run["id"]):
                # It halted into waiting before its process took the request (which its release dropped):
                # parked now, it is this process's to act on.
                act = self._cancel_here if control == "cancel" else self._pause_here
                return act(fresh, by)
            time.sleep(0.05)
        if control == "pause":
            _refuse_pause_while_compensating(fresh)
        return fresh

    def _on_control(self: Engine, run_id: str, control: str, by: str) -> None:
        """A cancel or pause asked through another process, for a run executing here (Leases hands it over)."""
        with self._lock:
            execution = self._executions.get(run_id)
        if execution is None:
            return  # it stopped executing here meanwhile
        act = self.cancel if control == "cancel" else self.pause

        def apply() -> None:
            try:
                act(execution.run, by)
            except RunStateError:
                pass  # it finished or paused in between: nothing to do
            except Exception:
                logger.exception("run %s: the %s asked by %s failed", run_id, control, by)

        threading.Thread(target=apply, name=f"pyflow-{control}-{run_id}", daemon=True).start()

    def _lost(self: Engine, run_id: str) -> None:
        """This process lost the run's lease: stop executing it, writing nothing more (another owns it now)."""
        with self._lock:
            execution = self._executions.get(run_id)
            if execution is None:
                return
            execution.control, execution.control_by = "lost", "lease lost"
            execution.stop.set()
            execution.cancelled.set()  # a step under way should stop too: another process repeats it
        with execution.changed:
            execution.changed.notify_all()

    def _current(self: Engine, run: dict, wanted: str, allowed: tuple[RunStatus, ...]) -> dict:
        """The run as stored now: it may have finished (and left this process) since the caller read it."""
        fresh = self.store.get_run(run["id"]) or run
        if fresh["status"] not in allowed:
            raise RunStateError(fresh, wanted)
        return fresh

    def retry(self: Engine, bound: BoundWorkflow, run: dict, by: str = "api") -> dict:
        """Continue a failed or cancelled run from its first unfinished step, keeping finished results."""
        if run["status"] not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise RunStateError(run, "retried")
        for step in run["steps"]:
            behind_failure = step["status"] == StepStatus.SKIPPED and step["error"]
            if step["status"] in (StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.RUNNING) or behind_failure:
                step.update(new_step(step["name"], step["type"], step["depends_on"]))
                # A new attempt parks anew: a wait or a timeout runs from now, and an approval mails new links
                # (the earlier park's nonce goes with it, so its links answer no more).
                step.pop("wait", None)
        return self._reopen(bound, run, by)

    def skip(self: Engine, bound: BoundWorkflow, run: dict, step_name: str, by: str = "api") -> dict:
        """Mark a failed run's failed step skipped and continue after it."""
        if run["status"] != RunStatus.FAILED:
            raise RunStateError(run, "continued past a step")
        step = next((step for step in run["steps"] if step["name"] == step_name), None)
        if step is None or step["status"] != StepStatus.FAILED:
            state = "no such step" if step is None else f"step {step_name!r} is {step['status']}"
            raise RunStateError(run, f"made to skip {step_name!r} ({state}; only a failed step can be skipped)")
        step["status"] = StepStatus.SKIPPED.value
        step["error"] = None  # a person's skip is final, like a `when` skip: a later retry must not undo it
        return self._reopen(bound, run, by)

    def _reopen(self: Engine, bound: BoundWorkflow, run: dict, by: str) -> dict:
        self._reopen_compensated(run)  # compensation: undone steps run again
        run.update(error=None, finished_at=None)
        run["progress"] = progress(run["steps"])
        self.store.save_run(run)  # the reset steps, before the run is queued again
        self.resume(bound, run, by)
        return snapshot(run)

    def _claim(self: Engine, run_id: str, control: str, by: str) -> tuple[Execution | None, bool, bool]:
        """Ask the execution of ``run_id`` to stop for ``control``: (execution or None, owned, holds_slot).

        ``owned`` is True when the caller must halt the run itself: it was
        queued (waiting for a slot, or not yet handed over by the dispatcher),
        or a cancel disarmed its inline attempt (as the watchdog does on a
        timeout). Otherwise the run thread halts it at its next boundary.
        ``holds_slot``: the caller took over the abandoned run thread's slot and must hand it on.
        A run undoing its steps (compensating) is asked nothing: they finish, and it ends as planned.
        """
        with self._lock:
            execution = self._executions.get(run_id)
            if execution is None:
                return None, False, False
            if execution.run.get("compensating"):
                return execution, False, False  # nothing to stop: they finish (``settled`` is set: no wait)
            execution.control, execution.control_by = control, by
            execution.stop.set()
            if control == "cancel":
                execution.cancelled.set()
            owned = holds_slot = False
            if execution in self._pending:
                self._pending.remove(execution)
                owned = True
            elif not execution.dispatched:
                execution.dispatched = True  # not handed to the engine yet (a queue holds it): it never starts
                owned = True
            elif control == "cancel" and execution.inline is not None:
                token = execution.tokens.get(execution.inline)
                if token is not None and self._watchdog.disarm(token):
                    del execution.tokens[execution.inline]
                    owned = True
                    holds_slot = not execution.slotless  # a sub-workflow's run never took one
        with execution.changed:
            execution.changed.notify_all()  # a run thread coordinating branches wakes up and halts
        return execution, owned, holds_slot

    @staticmethod
    def _settled(execution: Execution, timeout: float = 5.0) -> dict:
        """The run once its thread acted on the request or began compensating (or as it stands after ``timeout``)."""
        execution.settled.wait(timeout)  # not ``done``: compensations may take long, and a control does not stop them
        return snapshot(execution.run)


def _refuse_pause_while_compensating(run: dict) -> None:
    """A run undoing its steps is not paused: they finish and it ends as planned (docs/compensation.md)."""
    if run.get("compensating"):
        raise RunStateError(run, f"paused while it undoes its steps (compensating); it ends {run['compensating']} "
                                 "once they ran")
