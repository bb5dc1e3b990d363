"""Template filters: times, durations, percentages and JSON as the dashboard shows them."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from app.runs import parse_time

logger = logging.getLogger(__name__)


def when(iso: str | None) -> str:
    """``2026-01-01T10:00:01.123Z`` -> ``2026-01-01 10:00:01`` (UTC; the page says so)."""
    return iso.replace("T", " ")[:19] if iso else "—"


def ago(iso: str | None, now: float | None = None) -> str:
    """How long ago ``iso`` was, in words: "just now", "5 min ago", "3 days ago"."""
    if not iso:
        return ""
    try:
        seconds = (time.time() if now is None else now) - parse_time(iso)
    except ValueError:
        return ""
    if seconds < 10:
        return "just now"
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''} ago"
    return f"{int(seconds)} s ago"


def duration(seconds: float | None) -> str:
    """812 ms, 4.2 s, 3 min 5 s, 2 h 10 min."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def duration_ms(milliseconds: float | None) -> str:
    """A step's ``duration_ms`` as :func:`duration` words."""
    return duration(None if milliseconds is None else milliseconds / 1000)


def run_duration(run: dict) -> str:
    """finished_at (or now, while it runs) minus started_at, in words."""
    if not run.get("started_at"):
        return "—"
    try:
        end = parse_time(run["finished_at"]) if run.get("finished_at") else time.time()
        return duration(max(0.0, end - parse_time(run["started_at"])))
    except ValueError:
        return "—"


def percent(rate: float | None) -> str:
    """0.875 -> "87.5%"; None -> "—"."""
    if rate is None:
        return "—"
    value = rate * 100
    return f"{value:.0f}%" if value.is_integer() else f"{value:.1f}%"


def pretty_json(value: Any) -> str:
    """Indented JSON; anything JSON cannot hold is shown as its string."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


FILTERS = {
    "when": when,
    "ago": ago,
    "duration": duration,
    "duration_ms": duration_ms,
    "run_duration": run_duration,
    "percent": percent,
    "pretty_json": pretty_json,
}
