"""Parked steps: what a waiting step becomes when it wakes (time, event, answer), and the waker thread.

A step parks by raising actions.base.Park; the engine indexes it in the store's wake index (``park``, one
entry per run and step: when and on what it continues) and records it ``waiting``; the run goes on with its
other branches and halts ``waiting`` once nothing else can run. Whoever takes a step's entry out of the index
(``unpark``, atomic) wakes it: that caller records the step's outcome and continues the run the normal way
(Engine.wake: resumed here, or sent to a worker). When the run is busy (executing another branch, halting)
the outcome is kept in the entry, due at once: the waker wakes the step with it once the run halts. When the
run is paused it is kept due never: resuming the run applies it (Engine._apply_kept).
A run a crash left waiting with a step unindexed is indexed again at start-up (``reindex``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from actions.base import Park
from app.core.binding import BoundWorkflow
from app.core.execution import Execution, one_line
from app.core.periodic import Periodic
from app.core.redaction import redact
from app.runs import FINISHED_RUN, RunStatus, StepStatus, format_time, parse_time, utcnow
from app.storage.base import Durability

if TYPE_CHECKING:
    from app.core.engine import Engine
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


# What one try of a wake came to (HELD: kept for a paused run, applied when it is resumed).
WOKEN, KEPT, HELD, GONE = "woken", "kept", "held", "gone"


class Parking:
    """Wakes the parked steps of one runtime's runs: when due, on an event, on an answer."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.store = runtime.store

    def wake(self, run_id: str, step: str, outcome: Outcome | None, by: str, *,
             patience: float = 0.0, nonce: str | None = None) -> dict | None:
        """Take the step out of the wake index and continue its run with ``outcome`` (None: what is due, the
        answer kept in its entry or else its timeout); the run, or None when the step was not this caller's to
        wake (another took or answered it first, or it no longer waits).

        A run busy with another branch (or halting) keeps the outcome in the step's entry and the waker wakes
        the step once the run halts; a paused run keeps it until its resume applies it. ``patience``: seconds
        to keep trying meanwhile, so that an event or an answer arriving while the run halts finds it woken
        when the call returns. ``nonce``: only the park with this nonce (an approval link's), checked with the
        step taken out of the index, so a link of an earlier park of a retried step never answers a later one.
        """
        state, run = self._wake_once(run_id, step, outcome, by, nonce)
        if state == HELD:
            logger.info("run %s is paused: step %s keeps what %s brought until the run is resumed", run_id, step, by)
            return run
        deadline = time.monotonic() + patience
        tries = 0
        while state == KEPT and time.monotonic() < deadline:
            tries += 1
            if tries == 1:
                logger.debug("run %s is halting into waiting; %s tries again", run_id, by)
            time.sleep(RETRY_SECONDS)
            state, fresh = self._wake_once(run_id, step, None, by, nonce)  # takes back the outcome kept just now
            if state in (WOKEN, HELD):
                return fresh
            if state == GONE:  # the waker took it (and woke the step with it), or the run ended meanwhile
                return run
        if state == KEPT and patience:
            logger.info("run %s is busy: step %s is woken by %s once the run halts", run_id, step, by)
        return run if state != GONE else None

    def _wake_once(self, run_id: str, step: str, outcome: Outcome | None, by: str,
                   nonce: str | None = None) -> tuple[str, dict | None]:
        """One try of ``wake``: WOKEN and the run, KEPT (the outcome waits in the index) and the run, or GONE."""
        rt, engine = self.runtime, self.runtime.engine
        claimed = False
        entry = None
        try:
            # Held before the step is taken out of the index: a reindex, which holds the run alike, never
            # finds the step waiting and unindexed while this wakes it (and indexes it again).
            with rt.control_lock:  # a cancel of this process is not half-way through it
                if engine.leases is not None:
                    claimed = engine.leases.claim(run_id)  # else another process acts on the run now
                entry = self.store.unpark(run_id, step)
                if entry is None:
                    return GONE, None
                kept = entry.get("outcome")
                if outcome is not None and kept is not None:  # answered first by another, kept for the busy run
                    self._repark(entry)
                    return GONE, None
                run = self.store.get_run(run_id)
                record = None if run is None else next((s for s in run["steps"] if s["name"] == step), None)
                if record is None or run["status"] in FINISHED_RUN or record["status"] not in (
                        StepStatus.WAITING, StepStatus.RUNNING):  # RUNNING: indexed, a moment before recorded
                    return GONE, None
                if nonce is not None and (record.get("wait") or {}).get("nonce") != nonce:
                    # Another park of the step (retried since the link was read): the entry is that park's.
                    # Its record says so from before its entry was indexed: a retry resets the step first.
                    self._repark(entry)
                    return GONE, None
                result = kept
                if result is None and (outcome is not None or record["status"] == StepStatus.WAITING):
                    result = (outcome or timed_out)(record.get("wait") or {})
                if run["status"] == RunStatus.PAUSED and result is not None:
                    return self._hold(entry, result, by), run
                busy = (run["status"] != RunStatus.WAITING or record["status"] != StepStatus.WAITING
                        or (engine.leases is not None and not claimed) or engine.executes(run_id))
                if busy:
                    self._keep(entry, result, by)
                    return KEPT, run
                bound = rt.bound_for(run)
                if bound is None:
                    return GONE, None
                engine.wake(bound, run, step, result, (kept or {}).get("by") or by)
                return WOKEN, run
        except Exception:
            if entry is not None:
                self._repark(entry)  # tried again: by the waker when due, by the next event or answer
            raise
        finally:
            if claimed and (engine.queue is not None or not engine.executes(run_id)):
                engine.leases.release(run_id)  # a worker takes it (its job), or it ended already

    def _keep(self, entry: dict, result: dict | None, by: str) -> None:
        """Put the entry back for a busy run: with its outcome and who brought it, due now (the waker wakes the
        step once the run halts); without one (a time for a step not yet recorded waiting), as it was."""
        if result is None:
            self._repark(entry)
            return
        self.store.park(entry["run_id"], entry["step"], due=time.time(),
                        outcome={"by": by, **redact(result)})

    def _hold(self, entry: dict, result: dict, by: str) -> str:
        """Keep the outcome for a paused run, due never: its resume applies it (Engine._apply_kept). HELD, or
        KEPT (due now, for the waker) when the run was resumed meanwhile, its resume maybe past the index."""
        outcome = {"by": by, **redact(result)}
        self.store.park(entry["run_id"], entry["step"], outcome=outcome)
        fresh = self.store.get_run(entry["run_id"])
        if fresh is not None and fresh["status"] == RunStatus.PAUSED:
            return HELD
        self.store.park(entry["run_id"], entry["step"], due=time.time(), outcome=outcome)
        return KEPT

    def _repark(self, entry: dict) -> None:
        try:
            self.store.park(entry["run_id"], entry["step"], due=entry.get("due"), event=entry.get("event"),
                            key=entry.get("key"), outcome=entry.get("outcome"))
        except Exception as error:
            logger.warning("run %s: step %s could not be parked again: %s", entry["run_id"], entry["step"],
                           one_line(error))

    def wake_due(self, now: float | None = None) -> list[str]:
        """Wake the steps whose time came (a wait's end, a timeout, an outcome kept for a busy run); their runs' ids."""
        woken: list[str] = []
        for run_id, step in self.store.due_parked(now):
            try:
                if self.wake(run_id, step, None, "time") is not None and run_id not in woken:
                    woken.append(run_id)
            except Exception as error:
                logger.warning("run %s: step %s could not be woken: %s", run_id, step, one_line(error))
        return woken

    def deliver(self, event: dict) -> list[str]:
        """Wake the steps waiting for ``event`` (its type, and its key or any); their runs' ids."""
        woken: list[str] = []
        for run_id, step in self.store.parked_for(event["type"], event.get("key")):
            if (self.wake(run_id, step, received(event), f"event {event['id']}", patience=EVENT_PATIENCE) is not None
                    and run_id not in woken):
                woken.append(run_id)
        return woken

    def reindex(self) -> int:
        """Index the waiting steps a crash left out of the wake index (of runs stored waiting); how many."""
        count = 0
        for run_id in self.store.find_run_ids({RunStatus.WAITING.value}):
            try:
                count += self._reindex_run(run_id)
            except Exception as error:
                logger.warning("run %s: its waiting steps could not be indexed again: %s", run_id, one_line(error))
        if count:
            logger.info("indexed %d waiting steps again", count)
        return count

    def _reindex_run(self, run_id: str) -> int:
        """Index the run's unindexed waiting steps, holding it as a wake does: a step an answer took out of the
        index a moment ago (waking it now) is not indexed again."""
        engine = self.runtime.engine
        with self.runtime.control_lock:
            if engine.executes(run_id):
                return 0  # it halts here: indexed as it parks
            if engine.leases is not None and not engine.leases.claim(run_id):
                return 0  # another process acts on it now (a wake): it halts, or parks again, indexed
            try:
                run = self.store.get_run(run_id)
                if run is None or run["status"] != RunStatus.WAITING:
                    return 0
                indexed = {entry["step"] for entry in self.store.parked(run_id)}
                missing = [step for step in run["steps"]
                           if step["status"] == StepStatus.WAITING and step["name"] not in indexed]
                for step in missing:
                    engine.park_index(run_id, step)
                return len(missing)
            finally:
                if engine.leases is not None:
                    engine.leases.release(run_id)


def waker(parking: Parking, interval: float = WAKE_INTERVAL_SECONDS) -> Periodic:
    """On the polling server (like the Sweeper): every second, wakes the parked runs whose time came."""
    return Periodic("pyflow-waker", interval, parking.wake_due, "waking parked runs")


class ParkedSteps:
    """The Engine's side of parked steps: indexing, halting ``waiting``, waking (mixed into Engine)."""

    def _park_step(self: Engine, execution: Execution, index: int, park: Park) -> None:
        """Index the step in the wake index and record it ``waiting`` with what it waits for; the run goes on
        with its other branches, and halts ``waiting`` once nothing else can run (``_parks``)."""
        step = execution.run["steps"][index]
        record = {"for": park.kind, "since": utcnow(), "until": None if park.until is None else format_time(park.until),
                  "event": park.event, "key": park.key, "on_timeout": park.on_timeout, **park.details}
        step["wait"] = execution.scrubber.scrub(redact(record))
        step["error"] = None
        # Indexed first: whoever finds the step stored waiting finds its entry too (or took it, answering).
        self.park_index(execution.run["id"], step)
        execution.parked.add(step["name"])
        step["status"] = StepStatus.WAITING.value
        self.store.update_step(execution.run["id"], index, step, mode=Durability.SYNC)
        until = f" until {record['until']}" if record["until"] else ""
        what = f"event {park.event!r}" + (f" (key {park.key!r})" if park.key else "") if park.event else park.kind
        self._log(execution, logging.INFO, f"waits for {what}{until}", step["name"])

    def _parks(self: Engine, execution: Execution) -> bool:
        """Nothing more can run: True when steps wait, so the run halts ``waiting`` (a cancel or pause asked
        first wins); a failing run does not wait for them: they stop waiting, and the run ends."""
        if not any(step["status"] == StepStatus.WAITING for step in execution.run["steps"]):
            return False
        if execution.failure:
            self._stop_waiting(execution, "no longer waited for: the run failed")
            return False
        with self._lock:
            if not execution.stop.is_set():
                execution.control, execution.control_by = "park", "engine"
                execution.stop.set()
        return True

    def _stop_waiting(self: Engine, execution: Execution, reason: str) -> None:
        """Cancel the run's waiting steps with ``reason``, out of the wake index."""
        for index, step in enumerate(execution.run["steps"]):
            if step["status"] == StepStatus.WAITING:
                self.store.unpark(execution.run["id"], step["name"])
                step["error"] = reason
                self._log(execution, logging.INFO, reason, step["name"])
                self._close_step(execution, index, StepStatus.CANCELLED)

    def _park_run(self: Engine, execution: Execution) -> None:
        """The run halts ``waiting``: the waiting steps it carried over indexed again where missing (a crash may
        have come between taking one out of the index and putting it back), then stored ``waiting``; ``_forget``
        releases its slot and lease."""
        run = execution.run
        earlier = [step for step in run["steps"]
                   if step["status"] == StepStatus.WAITING and step["name"] not in execution.parked]
        if earlier:  # parked before this execution: indexed then, unless a crash came between
            entries = {entry["step"]: entry for entry in self.store.parked(run["id"])}
            for step in earlier:
                entry = entries.get(step["name"])
                if entry is None:  # an entry a waker took, finding the run busy, it puts back itself
                    self.park_index(run["id"], step)
                elif entry.get("outcome") and entry.get("due") is None:  # kept while paused, missed by the resume
                    self.store.park(run["id"], step["name"], due=time.time(), outcome=entry["outcome"])
        self._transition(run, RunStatus.WAITING, "engine")
        self._log(execution, logging.INFO, "run waiting (no thread, no slot)")

    def park_index(self: Engine, run_id: str, step: dict) -> None:
        """Index a waiting step in the store's wake index, from its park record."""
        wait = step.get("wait") or {}
        until = wait.get("until")
        self.store.park(run_id, step["name"], due=parse_time(until) if until else None,
                        event=wait.get("event"), key=wait.get("key"))

    def wake(self: Engine, bound: BoundWorkflow, run: dict, step_name: str, outcome: dict, by: str) -> None:
        """Continue a waiting run: its parked step ends with ``outcome`` (``{"result"}`` succeeds it, with
        ``"error"`` it fails), then the run goes on from there the normal way (here, or a worker's job);
        its other waiting steps keep waiting."""
        self._end_parked(bound, run, step_name, outcome)
        self.resume(bound, run, by)

    def _apply_kept(self: Engine, bound: BoundWorkflow, run: dict) -> None:
        """A paused run being resumed: its waiting steps whose answer, event or timeout came meanwhile (kept in
        their wake index entries) end with it; the others keep waiting."""
        kept = {entry["step"]: entry for entry in self.store.parked(run["id"]) if entry.get("outcome")}
        for step in run["steps"]:
            if step["status"] != StepStatus.WAITING or step["name"] not in kept:
                continue
            entry = self.store.unpark(run["id"], step["name"])  # atomic: a waker finding it first applies it itself
            if entry is not None and entry.get("outcome"):
                self._end_parked(bound, run, step["name"], entry["outcome"])
            elif entry is not None:  # taken back meanwhile by whoever brought it: it waits on, as it was
                self.store.park(run["id"], step["name"], due=entry.get("due"), event=entry.get("event"),
                                key=entry.get("key"))

    def _end_parked(self: Engine, bound: BoundWorkflow, run: dict, step_name: str, outcome: dict) -> None:
        """Record a parked step's end with ``outcome`` (out of the wake index already)."""
        index = next(i for i, step in enumerate(run["steps"]) if step["name"] == step_name)
        step = run["steps"][index]
        step["finished_at"] = utcnow()
        if step.get("started_at"):
            waited = parse_time(step["finished_at"]) - parse_time(step["started_at"])
            step["duration_ms"] = max(round(waited * 1000), 0)
        scrubber = self._scrubber_for(bound, run["trigger_data"])
        result = outcome.get("result")
        step["result"] = None if result is None else scrubber.scrub(redact(result))
        step["error"] = scrubber.text(outcome["error"]) if outcome.get("error") else None
        step["status"] = (StepStatus.FAILED if step["error"] else StepStatus.SUCCEEDED).value
        self.store.update_step(run["id"], index, step, mode=Durability.SYNC)

    def _cancel_parked(self: Engine, run: dict) -> None:
        """A run being cancelled where it does not execute: its waiting steps cancelled, out of the wake index."""
        waiting = [step for step in run["steps"] if step["status"] == StepStatus.WAITING]
        if run["status"] != RunStatus.WAITING and not waiting:
            return
        self.store.unpark_run(run["id"])
        for step in waiting:
            step.update(status=StepStatus.CANCELLED.value, finished_at=utcnow(), error="cancelled while waiting")
