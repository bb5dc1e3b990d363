"""Caps on what one step may ask for (threads, waits, timeouts), by setting name.

A definition is checked against them when it is posted (app/core/limits.py); a value
that a template makes is checked when the step runs, with ``capped``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from itertools import chain
from typing import Any

from actions.base import ActionError

# The most a step's result may hold, as JSON (a loop's gathered results are one result): 1,000 fetches of 9 MB
# each gathered 9 GB in memory before the loop ended. Each action's own limit (an answer's 10 MB) stays below it.
MAX_RESULT_BYTES = 64 * 2**20
RESULT_TOO_LARGE = f"of more than {MAX_RESULT_BYTES // 2**20} MB as JSON, the most a step's result may hold"


# How an item of a value adds to its size: (its own weight, an iterator over what it holds, or None).
Weigh = Callable[[Any], tuple[int, Iterator[Any] | None]]


def walk_size(value: Any, limit: int, weigh: Weigh) -> int:
    """``value``'s weight and that of everything it holds, by ``weigh``, depth first, summed until past ``limit``.

    No recursion (a value nested 100,000 deep is measured too), and no more of the value is read once the sum
    passes ``limit``.
    """
    total = 0
    pending: list[Iterator[Any]] = [iter((value,))]
    while pending:
        for item in pending[-1]:
            weight, inner = weigh(item)
            total += weight
            if total > limit:
                return total
            if inner is not None:
                pending.append(inner)
                break
        else:
            pending.pop()
    return total


def _json_weight(item: Any) -> tuple[int, Iterator[Any] | None]:
    if isinstance(item, str):
        return len(item) + 2, None
    if isinstance(item, Mapping):
        return 2 + 2 * len(item), chain.from_iterable(item.items())
    if isinstance(item, (list, tuple)):
        return 2 + len(item), iter(item)
    if isinstance(item, int) and not isinstance(item, bool):
        return item.bit_length() // 3 + 1, None
    return 5, None  # true, false, null, a float's first digits


def json_size(value: Any, limit: int = MAX_RESULT_BYTES) -> int:
    """About how long ``value`` is as JSON, counted only until past ``limit``, without writing it.

    A value held twice counts twice, as JSON writes it twice: a transform that puts one text in
    10,000 rows makes 10,000 copies of it when written.
    """
    return walk_size(value, limit, _json_weight)


# step type -> config key -> the setting that caps it.
CONFIG_CAPS: dict[str, dict[str, str]] = {
    "loop": {"max_parallel": "WORKFLOW_MAX_PARALLEL"},
    "wait": {"seconds": "WORKFLOW_MAX_WAIT"},
    "http_request": {"timeout": "WORKFLOW_MAX_STEP_TIMEOUT"},
    "http_check": {"request_timeout": "WORKFLOW_MAX_STEP_TIMEOUT"},
    "shell": {"timeout": "WORKFLOW_MAX_STEP_TIMEOUT"},
    "workflow": {"timeout": "WORKFLOW_MAX_STEP_TIMEOUT"},
}
# A step's own keys.
STEP_CAPS: dict[str, str] = {"timeout": "WORKFLOW_MAX_STEP_TIMEOUT", "retries": "WORKFLOW_MAX_RETRIES"}
# A step's nested keys (cache: {ttl}).
NESTED_STEP_CAPS: dict[tuple[str, str], str] = {("cache", "ttl"): "WORKFLOW_MAX_CACHE_TTL"}
# A definition's top-level keys.
TOP_CAPS: dict[str, str] = {"step_timeout": "WORKFLOW_MAX_STEP_TIMEOUT", "max_parallel_steps": "WORKFLOW_MAX_PARALLEL",
                            "max_retries": "WORKFLOW_MAX_RETRIES"}
# How many items a loop may have.
ITEMS_SETTING = "WORKFLOW_MAX_LOOP_ITEMS"


def over(value: Any, setting: str, settings: Mapping[str, Any]) -> str | None:
    """Why ``value`` is past ``setting`` ("1500 is more than WORKFLOW_MAX_PARALLEL (16)"), else None.

    A setting that is absent (an action run on its own) caps nothing; text that is no number is left
    to the step's own checks.
    """
    limit = settings.get(setting)
    if limit is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number > limit:
        return f"{value!r} is more than {setting} ({limit:.15g})"  # 2592000, not 2.592e+06
    return None


def capped(value: Any, setting: str, settings: Mapping[str, Any], what: str) -> Any:
    """``value`` when within ``setting``; a non-retryable ActionError naming ``what`` and the setting otherwise."""
    problem = over(value, setting, settings)
    if problem:
        raise ActionError(f"{what} {problem}", retryable=False)
    return value
