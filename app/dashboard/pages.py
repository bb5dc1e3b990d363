"""The read-only pages: workflows (/), runs (/runs) and one run (/runs/<id>)."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Response, abort, redirect, render_template, request, url_for

from app.api.routes import RUN_ID, present, runtime
from app.core.metrics import last_runs, workflow_metrics
from app.dashboard.blueprint import bp
from app.dashboard.graph import is_chain, layout, placed_layout, positions_of
from app.runs import RunStatus, parse_time

logger = logging.getLogger(__name__)

PAGE_SIZE = 25
STATUSES = [status.value for status in RunStatus]
# Which run controls apply in which run status (the engine refuses the others with a 409).
CONTROLS: dict[str, tuple[str, ...]] = {
    "cancel": ("queued", "running", "paused", "waiting"),
    "pause": ("queued", "running", "waiting"),
    "resume": ("paused",),
    "retry": ("failed", "cancelled"),
}


@bp.get("/")
def workflows() -> str:
    """Every workflow with its trigger, status, last run and metrics."""
    rt = runtime()
    entries = rt.store.index_entries()
    metrics = workflow_metrics(entries, rt.bound)
    last = last_runs(entries)
    rows = []
    for summary in rt.summaries():
        bound = rt.get(summary["name"])
        rows.append({
            "summary": summary,
            "startable": bound.trigger.startable and not bound.error,
            "last": last.get(summary["name"]),
            "metrics": metrics.get(summary["name"], {}),
        })
    totals = {label: _totals(metrics, label) for label in ("24h", "7d")}
    running = sum(1 for row in rows if row["summary"]["status"] == "running")
    # Stored definitions that no longer load (a plugin's type is gone): not served, but fixable in the designer.
    unloaded = sorted(rt.catalog.unloaded.items())
    return render_template("workflows.html", rows=rows, totals=totals, running=running, unloaded=unloaded)


def _totals(metrics: dict, label: str) -> dict[str, int]:
    windows = [windows[label] for windows in metrics.values()]
    return {key: sum(window[key] for window in windows) for key in ("runs", "succeeded", "failed")}


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico whatever the page links: send them to the SVG icon."""
    return redirect(url_for("dashboard.static", filename="favicon.svg"), 301)


@bp.get("/runs")
def runs() -> str:
    """Runs newest first, filtered by workflow and status, a page at a time."""
    rt = runtime()
    workflow = request.args.get("workflow") or None
    status = request.args.get("status") or None
    cursor = request.args.get("cursor") or None
    problems = []
    if workflow is not None and workflow not in rt.bound:
        problems.append(f"There is no workflow named {workflow!r}; showing all workflows.")
        workflow = None
    if status is not None and status not in STATUSES:
        problems.append(f"{status!r} is not a run status; showing every status.")
        status = None
    if cursor is not None and not RUN_ID.match(cursor):
        problems.append("That page link is not valid; showing the newest runs.")
        cursor = None
    found, next_cursor = rt.store.list_runs(workflow=workflow, status=status, limit=PAGE_SIZE, before=cursor)
    return render_template(
        "runs.html", runs=[present(run) for run in found], next_cursor=next_cursor, cursor=cursor,
        workflow=workflow, status=status, workflows=sorted(rt.bound), statuses=STATUSES, problems=problems,
        page_size=PAGE_SIZE,
    )


@bp.get("/runs/<run_id>")
def run(run_id: str) -> str:
    """One run: steps with their timeline, the step graph when it is not a plain chain, logs and controls."""
    rt = runtime()
    record = rt.store.get_run(run_id) if RUN_ID.match(run_id) else None
    if record is None:
        abort(404, description=f"There is no run with id {run_id!r}. It may have been pruned.")
    record = present(record)
    steps = record["steps"]
    # The version the run started with: its designer layout, when it has one, is the picture the designer showed.
    bound = rt.catalog.version(record["workflow"], record.get("version"))
    positions = positions_of(getattr(bound.workflow, "definition", None) if bound else None, steps)
    graph = placed_layout(steps, positions) if positions else None if is_chain(steps) else layout(steps)
    return render_template(
        "run.html", run=record, steps=steps, bars=timeline(record), logs=rt.store.get_logs(run_id),
        graph=graph, graph_placed=positions is not None, controls=CONTROLS,
    )


def _epoch(iso: str | None) -> float | None:
    try:
        return parse_time(iso) if iso else None
    except ValueError:
        return None


def timeline(run: dict, now: float | None = None) -> dict[str, dict[str, Any]]:
    """Step name -> {"left", "width"} in percent of the run's span (start to end, or to now while it runs)."""
    start = _epoch(run.get("started_at")) or _epoch(run.get("created_at"))
    end = _epoch(run.get("finished_at")) or (time.time() if now is None else now)
    bars: dict[str, dict[str, Any]] = {}
    if start is None:
        return bars
    span = max(end - start, 0.001)
    for step in run["steps"]:
        began = _epoch(step.get("started_at"))
        if began is None:
            continue
        ended = _epoch(step.get("finished_at")) or end
        left = min(max((began - start) / span * 100, 0.0), 100.0)
        width = min(max((ended - began) / span * 100, 0.5), 100.0 - left)
        bars[step["name"]] = {"left": round(left, 2), "width": round(max(width, 0.5), 2)}
    return bars
