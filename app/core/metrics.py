"""Run metrics from the store's index: per-workflow counts, success rates, durations, Prometheus collector."""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from app.runs import FINISHED_RUN, RunStatus, format_time, parse_time

if TYPE_CHECKING:
    from app.core.runtime import Runtime

logger = logging.getLogger(__name__)

# Window label -> seconds; the dashboard and GET /api/metrics show both.
WINDOWS: dict[str, float] = {"24h": 86400.0, "7d": 7 * 86400.0}
# Histogram buckets in seconds: workflow runs range from milliseconds to hours.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_FINISHED = {status.value for status in FINISHED_RUN}


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values`` by linear interpolation, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def duration_seconds(entry: Mapping[str, Any]) -> float | None:
    """finished_at - started_at of a finished run, None when it never started or is not finished."""
    if entry.get("status") not in _FINISHED or not entry.get("started_at") or not entry.get("finished_at"):
        return None
    try:
        return max(0.0, parse_time(entry["finished_at"]) - parse_time(entry["started_at"]))
    except (TypeError, ValueError):
        logger.warning("run %s has unreadable timestamps in the index", entry.get("id"))
        return None


def summarize(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts, success rate and p50/p95 duration of a group of index entries.

    Only finished runs (succeeded, failed, cancelled) count for the success
    rate and the durations; queued, running, waiting and paused runs only for ``runs``.
    """
    statuses: dict[str, int] = defaultdict(int)
    durations: list[float] = []
    for entry in entries:
        statuses[entry.get("status") or "unknown"] += 1
        duration = duration_seconds(entry)
        if duration is not None:
            durations.append(duration)
    finished = sum(statuses[status] for status in _FINISHED)
    succeeded = statuses[RunStatus.SUCCEEDED.value]
    p50, p95 = percentile(durations, 50), percentile(durations, 95)
    return {
        "runs": sum(statuses.values()),
        "finished": finished,
        "succeeded": succeeded,
        "failed": statuses[RunStatus.FAILED.value],
        "cancelled": statuses[RunStatus.CANCELLED.value],
        "success_rate": round(succeeded / finished, 4) if finished else None,
        "p50_duration_s": None if p50 is None else round(p50, 3),
        "p95_duration_s": None if p95 is None else round(p95, 3),
    }


def workflow_metrics(entries: list[Mapping[str, Any]], names: Iterable[str] = (), now: float | None = None) -> dict:
    """``{workflow: {"24h": summary, "7d": summary}}`` of index entries, by run creation time.

    Every name in ``names`` (the registered workflows) is present, with zero
    runs when it has none; workflows that only appear in the index are too.
    """
    now = time.time() if now is None else now
    by_workflow: dict[str, list[Mapping[str, Any]]] = {name: [] for name in names}
    for entry in entries:
        by_workflow.setdefault(entry.get("workflow") or "unknown", []).append(entry)
    # ISO 8601 UTC strings with Z sort like the times they name, so windows are string comparisons.
    cutoffs = {label: format_time(now - seconds) for label, seconds in WINDOWS.items()}
    return {
        name: {
            label: summarize(entry for entry in group if (entry.get("created_at") or "") >= cutoff)
            for label, cutoff in cutoffs.items()
        }
        for name, group in sorted(by_workflow.items())
    }


def last_runs(entries: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The newest index entry of each workflow (entries come oldest first)."""
    newest: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        newest[entry.get("workflow") or "unknown"] = entry
    return newest


def collect_metrics(runtime: Runtime, now: float | None = None) -> dict:
    """What GET /api/metrics answers: every workflow's metrics over the longest window."""
    now = time.time() if now is None else now
    entries = runtime.store.index_entries(since=format_time(now - max(WINDOWS.values())))
    return {
        "generated_at": format_time(now),
        "windows": list(WINDOWS),
        "workflows": workflow_metrics(entries, runtime.bound, now),
    }


class StoreCollector(Collector):
    """Prometheus metrics read from the store's index at scrape time, so nothing global is mutated."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        """Runs by workflow and status, run durations, and whether each workflow is started."""
        entries = self.runtime.store.index_entries()
        runs = CounterMetricFamily(
            "pyflow_runs", "Runs kept in the store (bounded by WORKFLOW_RETENTION_DAYS), by workflow and status.",
            labels=["workflow", "status"],
        )
        counts: dict[tuple[str, str], int] = defaultdict(int)
        durations: dict[str, list[float]] = defaultdict(list)
        for entry in entries:
            workflow = entry.get("workflow") or "unknown"
            counts[workflow, entry.get("status") or "unknown"] += 1
            duration = duration_seconds(entry)
            if duration is not None:
                durations[workflow].append(duration)
        for (workflow, status), count in sorted(counts.items()):
            runs.add_metric([workflow, status], count)
        yield runs

        histogram = HistogramMetricFamily(
            "pyflow_run_duration_seconds", "Duration of finished runs (finished_at - started_at).",
            labels=["workflow"],
        )
        for workflow, values in sorted(durations.items()):
            buckets = [(_bucket_label(bound), sum(1 for value in values if value <= bound))
                       for bound in DURATION_BUCKETS]
            buckets.append(("+Inf", len(values)))
            histogram.add_metric([workflow], buckets, sum(values))
        yield histogram

        started = self.runtime.store.started_workflows()
        gauge = GaugeMetricFamily("pyflow_workflow_started", "1 when the workflow is started (its trigger watched).",
                                  labels=["workflow"])
        for name in sorted(self.runtime.bound):
            gauge.add_metric([name], 1 if name in started else 0)
        yield gauge


def _bucket_label(bound: float) -> str:
    return f"{bound:g}"
