"""Benchmark: how late do scheduled triggers fire, and what does polling cost, with many started workflows?

Run as ``python bench/scheduler.py [--workflows 1000] [--seconds 20] [--cron 100] [--cron-minutes 2]``;
prints one JSON object. Phase 1 starts ``--workflows`` interval workflows (every 1 s, a no-op action, a
MemoryStore, phases spread over one second as when workflows are started at different times) and measures,
over ``--seconds``, each fire's lateness (``fired_at`` - ``scheduled_time``, and the run's ``created_at`` -
``scheduled_time``) and the process's CPU share. Targets: p99 <= 100 ms, CPU <= 1 core. Beside it, chains
of bare ``threading.Timer``s fire at the same times as a sample of the workflows, in the same process under
the same load: the floor any Python scheduler could reach here; ``ratio_p50``/``ratio_p99`` compare to it.
Phase 2 does the same for ``--cron`` cron workflows ``* * * * *`` over ``--cron-minutes`` minute boundaries.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run from anywhere: the repository root (app/, actions/, triggers/, workflows/) replaces this file's folder
# on sys.path, where bench/email.py would shadow the standard library's email package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent), *(entry for entry in sys.path if Path(entry or ".").resolve() != HERE)]

from actions.base import BaseAction  # noqa: E402
from app.core.config import load_settings  # noqa: E402
from app.core.runtime import Runtime  # noqa: E402
from app.runs import parse_time  # noqa: E402
from app.storage.memory import MemoryStore  # noqa: E402
from triggers.cron import CronTrigger  # noqa: E402
from triggers.interval import IntervalTrigger  # noqa: E402
from workflows.base import Workflow  # noqa: E402

logger = logging.getLogger(__name__)

# Every how many-th interval workflow a Timer chain shadows.
TIMER_SAMPLE_EVERY = 50
WARM_UP_SECONDS = 2.0


class NoopAction(BaseAction):
    """Does nothing, so the numbers are the scheduler's and the engine's own."""

    def execute(self, data_store: dict) -> dict:
        return {}


# (scheduled time, seconds late) of every fire, noted by the triggers at full clock precision
# (the ISO times in run records have milliseconds only).
FIRES: list[tuple[float, float]] = []


class TimedIntervalTrigger(IntervalTrigger):
    """An IntervalTrigger that notes how late each fire is."""

    def get_trigger_data(self) -> dict:
        due, now = self._due_at(), time.time()
        data = super().get_trigger_data()
        if due:  # the first fire after a start is "now" by definition
            FIRES.append((due, now - due))
        return data


class TimedCronTrigger(CronTrigger):
    """A CronTrigger that notes how late each fire is."""

    def poll(self) -> list[dict]:
        now = time.time()
        events = super().poll()
        for event in events:
            scheduled = parse_time(event["scheduled_time"])
            FIRES.append((scheduled, now - scheduled))
        return events


def fires_between(since: float, until: float) -> list[float]:
    """Lateness of the fires scheduled in [since, until)."""
    return [late for scheduled, late in list(FIRES) if since <= scheduled < until]


class WarningCounter(logging.Handler):
    """Counts APScheduler's warnings (a poll skipped because the previous one still ran)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def workflow_classes(prefix: str, count: int, make_trigger) -> list[type[Workflow]]:
    """``count`` Workflow subclasses built programmatically, each with its own trigger."""
    return [
        type(f"Bench{prefix.title()}{number}", (Workflow,), {
            "name": f"{prefix}_{number:04d}",
            "description": "A benchmark workflow.",
            "trigger": make_trigger(),
            "actions": [NoopAction("noop")],
            "max_retries": 0,
        })
        for number in range(count)
    ]


def make_runtime(folder: str, workflows: list[type[Workflow]]) -> Runtime:
    settings = load_settings({})
    settings.update(WORKFLOW_STORAGE_PATH=folder, WORKFLOW_MODULES=(), SMTP_HOST="", IMAP_HOST="")
    runtime = Runtime(settings, store=MemoryStore(folder), workflows=workflows)
    runtime.start()
    return runtime


def timer_chain(targets: list[float], lateness: list[float]) -> None:
    """Fire a bare threading.Timer at each target in turn and note how late it ran."""

    def fire(index: int) -> None:
        lateness.append(time.time() - targets[index])
        if index + 1 < len(targets):
            start(index + 1)

    def start(index: int) -> None:
        timer = threading.Timer(max(0.0, targets[index] - time.time()), fire, args=[index])
        timer.daemon = True
        timer.start()

    if targets:
        start(0)


def summary(samples: list[float]) -> dict:
    """p50, p99 and max of latenesses, in milliseconds."""
    if len(samples) < 2:
        return {"n": len(samples), "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(samples)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98]
    return {"n": len(samples), "p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(p99 * 1000, 2), "max_ms": round(ordered[-1] * 1000, 2)}


def ratio(ours: dict, baseline: dict, key: str) -> float | None:
    if not ours[key] or not baseline[key]:
        return None
    return round(ours[key] / baseline[key], 2)


def created_lateness(runtime: Runtime, names: list[str], since: float, until: float) -> list[float]:
    """created_at - scheduled_time (millisecond records) of the runs scheduled in [since, until)."""
    created = []
    for name in names:
        runs, _ = runtime.store.list_runs(workflow=name, limit=10_000)
        for run in runs:
            scheduled = parse_time(run["trigger_data"]["scheduled_time"])
            if since <= scheduled < until:
                created.append(parse_time(run["created_at"]) - scheduled)
    return created


def wait_for_engine(runtime: Runtime, timeout: float = 30.0) -> int:
    """Wait until no run is queued or running; how many still are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = len(runtime.store.find_run_ids({"queued", "running"}))
        if not left:
            return 0
        time.sleep(0.2)
    return left


def interval_phase(count: int, seconds: float, warnings: WarningCounter) -> dict:
    """Phase 1: ``count`` workflows every second for ``seconds``."""
    workflows = workflow_classes("interval", count, lambda: TimedIntervalTrigger("every", seconds=1))
    names = [workflow.name for workflow in workflows]
    with tempfile.TemporaryDirectory() as folder:
        runtime = make_runtime(folder, workflows)
        try:
            began = time.time()
            for index, name in enumerate(names):
                # Spread the phases over a second, as workflows started at different times are.
                time.sleep(max(0.0, began + index / count - time.time()))
                runtime.start_workflow(name)
            time.sleep(WARM_UP_SECONDS)
            # Timer chains at the same times as every TIMER_SAMPLE_EVERY-th workflow's grid.
            window_start = time.time() + 0.5
            window_end = window_start + seconds
            timer_lateness: list[float] = []
            for name in names[::TIMER_SAMPLE_EVERY]:
                grid = runtime.bound[name].trigger.state["last_fired_at"]
                first = grid + int(window_start - grid) + 1
                timer_chain([first + step for step in range(int(seconds) - 1)], timer_lateness)
            warnings.count = 0
            time.sleep(max(0.0, window_start - time.time()))
            cpu_before, wall_before = os.times(), time.monotonic()
            time.sleep(seconds)
            cpu_after, wall = os.times(), time.monotonic() - wall_before
            for name in names:
                runtime.stop_workflow(name)
            left = wait_for_engine(runtime)
            fired = fires_between(window_start, window_end)
            created = created_lateness(runtime, names, window_start, window_end)
        finally:
            runtime.shutdown(timeout=5)
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    ours, baseline = summary(fired), summary(timer_lateness)
    return {
        "workflows": count,
        "interval_s": 1,
        "window_s": seconds,
        "fires": len(fired),
        "expected_fires": count * int(seconds),
        "fire_lateness": ours,
        "run_created_lateness": summary(created),
        "timer_baseline_lateness": baseline,
        "ratio_p50": ratio(ours, baseline, "p50_ms"),
        "ratio_p99": ratio(ours, baseline, "p99_ms"),
        "cpu_cores": round(cpu / wall, 3),
        "skipped_polls": warnings.count,
        "runs_unfinished_after_stop": left,
    }


def cron_phase(count: int, minutes: int, warnings: WarningCounter) -> dict:
    """Phase 2: ``count`` cron workflows "* * * * *" across ``minutes`` minute boundaries."""
    workflows = workflow_classes("cron", count, lambda: TimedCronTrigger("minutely", "* * * * *"))
    names = [workflow.name for workflow in workflows]
    with tempfile.TemporaryDirectory() as folder:
        runtime = make_runtime(folder, workflows)
        try:
            for name in names:
                runtime.start_workflow(name)
            time.sleep(0.5)  # the first polls note the start; fires begin at the next minute
            boundaries = [(int(time.time()) // 60 + 1 + step) * 60.0 for step in range(minutes)]
            timer_lateness: list[float] = []
            for _ in range(count):
                timer_chain(boundaries, timer_lateness)
            warnings.count = 0
            cpu_before, wall_before = os.times(), time.monotonic()
            time.sleep(max(0.0, boundaries[-1] + 2.0 - time.time()))
            cpu_after, wall = os.times(), time.monotonic() - wall_before
            for name in names:
                runtime.stop_workflow(name)
            wait_for_engine(runtime)
            fired = fires_between(boundaries[0] - 1, boundaries[-1] + 1)
            created = created_lateness(runtime, names, boundaries[0] - 1, boundaries[-1] + 1)
        finally:
            runtime.shutdown(timeout=5)
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    ours, baseline = summary(fired), summary(timer_lateness)
    return {
        "workflows": count,
        "schedule": "* * * * *",
        "minute_boundaries": minutes,
        "fires": len(fired),
        "expected_fires": count * minutes,
        "fire_lateness": ours,
        "run_created_lateness": summary(created),
        "timer_baseline_lateness": baseline,
        "ratio_p50": ratio(ours, baseline, "p50_ms"),
        "ratio_p99": ratio(ours, baseline, "p99_ms"),
        "cpu_cores": round(cpu / wall, 3),
        "skipped_polls": warnings.count,
    }


def main() -> None:
    """Run both phases and print the measurements as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--cron", type=int, default=100)
    parser.add_argument("--cron-minutes", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    warnings = WarningCounter()
    logging.getLogger("apscheduler").addHandler(warnings)
    logging.getLogger("apscheduler").propagate = False
    report = {
        "benchmark": "scheduler",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "targets": {"interval_fire_lateness_p99_ms": 100, "interval_cpu_cores": 1.0},
        "interval": interval_phase(args.workflows, args.seconds, warnings),
    }
    if args.cron > 0 and args.cron_minutes > 0:
        report["cron"] = cron_phase(args.cron, args.cron_minutes, warnings)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
