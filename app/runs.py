"""Run and step records: statuses, ids, timestamps and the record shape."""

from __future__ import annotations

import math
import random
import time
from datetime import datetime
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """Where a run is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    # Parked until a time, an event or an answer: no thread, no slot, no lease (app/core/parking.py).
    WAITING = "waiting"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    """Where a step is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


FINISHED_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
FINISHED_STEP = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED})


def utcnow() -> str:
    """Now as UTC ISO 8601 with milliseconds and ``Z``."""
    return format_time(time.time())


# The last second format_time wrote and its text: a run's dozen timestamps mostly fall in one second.
_last_second: tuple[float, str] = (-1.0, "")


def format_time(epoch: float) -> str:
    """An epoch as UTC ISO 8601 with milliseconds and ``Z``."""
    # strftime over gmtime: the same text as datetime.isoformat, at a third of the cost (twice per step).
    global _last_second
    fraction, seconds = math.modf(epoch)
    micros = round(fraction * 1_000_000)  # rounded as datetime.fromtimestamp rounds, then cut to ms like isoformat
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    last = _last_second  # one read: another thread may replace the pair, never half of it
    if last[0] != seconds:
        last = _last_second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{last[1]}.{micros // 1000:03d}Z"


def parse_time(text: str) -> float:
    """UTC ISO 8601 (``...Z``) back to an epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def new_run_id() -> str:
    """A run id that sorts by creation time: ``run_`` + 16 hex digits of µs + 6 random."""
    # random, not os.urandom: no system call per run, and each process (forks too) seeds it from the OS.
    return f"run_{time.time_ns() // 1000:016x}{random.getrandbits(24):06x}"


def new_step(name: str, step_type: str, depends_on: list[str] | None = None) -> dict[str, Any]:
    """A step record before it runs; ``depends_on`` keeps the graph so a client can draw it."""
    return {
        "name": name,
        "type": step_type,
        "depends_on": depends_on or [],
        "status": StepStatus.PENDING.value,
        "attempts": 0,
        "started_at": None,
        "finished_at": None,
        "duration_ms": None,
        "result": None,
        "error": None,
    }


def new_run(workflow: str, steps: list[dict], trigger_data: dict, source: str) -> dict[str, Any]:
    """A queued run record."""
    created_at = utcnow()
    return {
        "id": new_run_id(),
        "workflow": workflow,
        "status": RunStatus.QUEUED.value,
        "source": source,
        "trigger_data": trigger_data,
        "steps": steps,
        "progress": 0,
        "created_at": created_at,
        "started_at": None,
        "finished_at": None,
        "error": None,
        # Every status change: {"at", "from", "to", "by"}.
        "history": [{"at": created_at, "from": None, "to": RunStatus.QUEUED.value, "by": source}],
    }


def progress(steps: list[dict]) -> int:
    """Percentage of steps that have finished, 100 for a run without steps."""
    if not steps:
        return 100
    done = sum(1 for step in steps if step["status"] in FINISHED_STEP)
    return done * 100 // len(steps)


def snapshot(run: dict) -> dict:
    """A copy of a run record that later changes to the original do not reach.

    Writers change a step's fields or append to the history, and replace
    nested values (results, inputs) rather than editing them, so copying the
    step dicts and the history list is enough, and far cheaper than deepcopy.
    """
    return {**run, "steps": [dict(step) for step in run["steps"]], "history": list(run.get("history", []))}
