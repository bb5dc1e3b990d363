"""Parked runs: what their waiting step becomes when it wakes (time, event, answer), and the waker thread.

A step parks by raising actions.base.Park; the engine indexes it in the store's wake index (``park``: when
and on what it continues), then stores the run ``waiting``. Whoever takes the run out of the index (``unpark``,
atomic) wakes it: that caller records the step's outcome and continues the run the normal way
(Engine.wake: resumed here, or sent to a worker). A run a crash left waiting but unindexed (a wake that
died half-way) is indexed again at start-up (``reindex``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.core.execution import one_line
from app.core.periodic import Periodic
from app.runs import RunStatus, StepStatus, utcnow

if TYPE_CHECKING:
    from app.core.runtime import Runtime

logger = logging.getLogger(__name__)

WAKE_INTERVAL_SECONDS = 1.0
# An event or an answer arriving while its run halts into ``waiting`` (milliseconds; a lease release on a
# worker) waits this long for it, trying every RETRY_SECONDS, rather than being lost.
EVENT_PATIENCE = 5.0
RETRY_SECONDS = 0.05

# What a parked step's outcome is made of: its park record ("wait") -> {"result"} or {"error"}.
Outcome = Callable[[dict], dict]


def timed_out(wait: dict) -> dict:
    """The outcome of a step whose time came: a wait's end, or a timeout following its on_timeout."""
    kind = wait.get("for")
    if kind == "time":
        return {"result": {"waited_s": round(float(wait.get("seconds") or 0), 3)}}
    seconds = f"{float(wait.get('timeout_s') or 0):g} s"
    if kind == "event":
        if wait.get("on_timeout") == "continue":
            return {"result": {"event": None, "timed_out": True}}
        key = f" with key {wait['key']!r}" if wait.get("key") else ""
        return {"error": f"no event {wait.get('event')!r}{key} within {seconds} (on_timeout: fail)"}
    if kind == "approval":
        if wait.get("on_timeout") == "approve":
            return {"result": {"approved": True, "by": "timeout", "comment": None, "at": utcnow(), "timed_out": True}}
        return {"error": f"no answer within {seconds} (on_timeout: reject)",
                "result": {"approved": False, "by": "timeout", "comment": None, "at": utcnow(), "timed_out": True}}
    return {"error": f"waited for {kind!r}, which this PyFlow does not know"}


def received(event: dict) -> Outcome:
    """The outcome of a wait_for_event step that got ``event``."""
    return lambda wait: {"result": {"event": event, "timed_out": False}}


class Parking:
    """Wakes parked runs of one runtime: when due, on an event, on an answer."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.store = runtime.store

    def wake(self, run_id: str, outcome: Outcome, by: str, *, step: str | None = None,
             patience: float = 0.0) -> dict | None:
        """Take the run out of the wake index and continue it with ``outcome``; the run, or None when it was not
        this caller's to wake (another took it first, or it is no longer waiting, or ``step`` is not the one).

        ``patience``: seconds to keep trying while the run is indexed but still halting (not yet stored
        ``waiting``, or its lease not yet released): an event or an answer is not tried again later, as the
        waker's time is, so giving up in that moment would lose it.
        """
        deadline = time.monotonic() + patience
        tries = 0
        while True:
            woken, transient = self._wake_once(run_id, outcome, by, step)
            if woken is not None or not transient or time.monotonic() >= deadline:
                if transient and woken is None:
                    logger.info("run %s did not come to wait within %g s; %s is left to its timeout",
                                run_id, patience, by)
                return woken
            tries += 1
            if tries == 1:
                logger.debug("run %s is halting into waiting; %s tries again", run_id, by)
            time.sleep(RETRY_SECONDS)

    def _wake_once(self, run_id: str, outcome: Outcome, by: str, step: str | None) -> tuple[dict | None, bool]:
        """One try of ``wake``: (the run or None, whether None was a passing state worth another try)."""
        entry = self.store.unpark(run_id)
        if entry is None:
            return None, False
        if step is not None and entry.get("step") != step:
            self._repark(entry)
            return None, False
        rt, engine = self.runtime, self.runtime.engine
        claimed = False
        try:
            with rt.control_lock:  # a cancel of this process is not half-way through it
                if engine.leases is not None:
                    if not engine.leases.claim(run_id):  # another process acts on it now (halting it, a cancel)
                        self._repark(entry)
                        return None, True
                    claimed = True
                run = self.store.get_run(run_id)
                if run is None:
                    return None, False
                waiting = next((s for s in run["steps"] if s["name"] == entry["step"]
                                and s["status"] == StepStatus.WAITING), None)
                if run["status"] in (RunStatus.QUEUED, RunStatus.RUNNING) and waiting is not None:
                    self._repark(entry)  # indexed, not yet stored waiting (it is halting): the next look wakes it
                    return None, True
                if run["status"] != RunStatus.WAITING or waiting is None:
                    return None, False
                bound = rt.bound_for(run)
                if bound is None:
                    return None, False
                engine.wake(bound, run, waiting["name"], outcome(waiting.get("wait") or {}), by)
                return run, False
        except Exception:
            self._repark(entry)  # tried again: by the waker when due, by the next event or answer
            raise
        finally:
            if claimed and (engine.queue is not None or not engine.executes(run_id)):
                engine.leases.release(run_id)  # a worker takes it (its job), or it ended already

    def _repark(self, entry: dict) -> None:
        try:
            self.store.park(entry["run_id"], entry["step"], due=entry.get("due"), event=entry.get("event"),
                            key=entry.get("key"))
        except Exception as error:
            logger.warning("run %s: could not be parked again: %s", entry["run_id"], one_line(error))

    def wake_due(self, now: float | None = None) -> list[str]:
        """Wake the runs whose time came (a wait's end, a timeout); their ids."""
        woken = []
        for run_id in self.store.due_parked(now):
            try:
                if self.wake(run_id, timed_out, "time") is not None:
                    woken.append(run_id)
            except Exception as error:
                logger.warning("run %s could not be woken: %s", run_id, one_line(error))
        return woken

    def deliver(self, event: dict) -> list[str]:
        """Wake the runs waiting for ``event`` (its type, and its key or any); their ids."""
        woken = []
        for run_id in self.store.parked_for(event["type"], event.get("key")):
            if self.wake(run_id, received(event), f"event {event['id']}", patience=EVENT_PATIENCE) is not None:
                woken.append(run_id)
        return woken

    def reindex(self) -> int:
        """Index waiting runs a crash left out of the wake index (stored waiting, not yet indexed); how many."""
        count = 0
        for run_id in self.store.find_run_ids({RunStatus.WAITING.value}):
            if self.store.parked(run_id) is not None:
                continue
            run = self.store.get_run(run_id)
            if run is None or run["status"] != RunStatus.WAITING:
                continue
            step = next((step for step in run["steps"] if step["status"] == StepStatus.WAITING), None)
            if step is not None:
                self.runtime.engine.park_index(run_id, step)
                count += 1
        if count:
            logger.info("indexed %d waiting runs again", count)
        return count


def waker(parking: Parking, interval: float = WAKE_INTERVAL_SECONDS) -> Periodic:
    """On the polling server (like the Sweeper): every second, wakes the parked runs whose time came."""
    return Periodic("pyflow-waker", interval, parking.wake_due, "waking parked runs")
