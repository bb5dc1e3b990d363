"""A definition checked against the bounds when posted or loaded: caps (actions/limits.py), the python allow-list."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from actions.limits import CONFIG_CAPS, ITEMS_SETTING, NESTED_STEP_CAPS, STEP_CAPS, TOP_CAPS, over
from actions.python import allowed_modules, is_function_path, not_allowed

SIZE_SETTING = "WORKFLOW_MAX_DEFINITION_KB"
STEPS_SETTING = "WORKFLOW_MAX_STEPS"
# The shortest check_interval a posted definition may ask for: 0.0001 s kept a core busy polling a folder.
MIN_CHECK_INTERVAL = 0.1
# The shortest interval a definition's interval trigger may fire at: 0.001 s made a run every poll, flooding the
# store. n8n and Zapier fire no faster than once a second either; a workflow written in Python may.
MIN_INTERVAL_SECONDS = 1.0


def interval_problem(seconds: float) -> str | None:
    """Why a definition's interval trigger may not fire every ``seconds``, or None."""
    if seconds >= MIN_INTERVAL_SECONDS:
        return None
    return f"{seconds:g} is less than {MIN_INTERVAL_SECONDS:g} s, the shortest interval a definition's trigger fires at"


def definition_caps(settings: Mapping[str, Any]) -> dict[str, int]:
    """The caps on a whole definition, as GET /api/catalog shows them: its bytes and its steps."""
    return {"max_definition_bytes": int(settings[SIZE_SETTING]) * 1024, "max_steps": int(settings[STEPS_SETTING])}


def size_problem(size: int, settings: Mapping[str, Any], what: str = "the definition") -> str | None:
    """Why ``what`` of ``size`` bytes is too large ("... 600 KB, more than WORKFLOW_MAX_DEFINITION_KB (512 KB)")."""
    limit = settings.get(SIZE_SETTING)
    if limit is None or size <= limit * 1024:
        return None
    return f"{what} is {size / 1024:.0f} KB, more than {SIZE_SETTING} ({limit} KB)"


def definition_size(definition: Any) -> int:
    """A definition's size as compact JSON, in bytes: the same measure for YAML, JSON and files."""
    return len(json.dumps(definition, separators=(",", ":"), default=str).encode())


def definition_problems(definition: Any, settings: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every value of ``definition`` past its cap, and every python function not allowed, as ``{"path", "message"}``."""
    problems: list[dict[str, str]] = []
    if not isinstance(definition, Mapping):
        return problems
    steps, limit = definition.get("steps"), settings.get(STEPS_SETTING)
    if isinstance(steps, list) and limit is not None and len(steps) > limit:
        problems.append({"path": "steps", "message": f"{len(steps)} steps, more than {STEPS_SETTING} ({limit})"})
    for key, setting in TOP_CAPS.items():
        _check(problems, key, definition.get(key), setting, settings)
    interval = definition.get("check_interval")
    if _is_number(interval) and 0 < interval < MIN_CHECK_INTERVAL:
        problems.append({"path": "check_interval", "message": f"{interval:g} is less than {MIN_CHECK_INTERVAL:g} s, "
                                                              f"the shortest interval a trigger is polled at"})
    trigger = definition.get("trigger")
    if isinstance(trigger, Mapping) and trigger.get("type") == "interval":
        seconds = trigger.get("seconds")
        # Only a number is checked here (the trigger refuses text and 0); a template is checked once rendered.
        problem = _is_number(seconds) and seconds > 0 and interval_problem(seconds)
        if problem:
            problems.append({"path": "trigger.seconds", "message": problem})
    _steps(definition.get("steps"), "steps", settings, problems)
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(problems: list, path: str, value: Any, setting: str, settings: Mapping[str, Any]) -> None:
    problem = None if value is None else over(value, setting, settings)
    if problem:
        problems.append({"path": path, "message": problem})


def _steps(steps: Any, path: str, settings: Mapping[str, Any], problems: list) -> None:
    if not isinstance(steps, list):
        return
    for index, step in enumerate(steps):
        if isinstance(step, Mapping):
            _step(step, f"{path}[{index}]", settings, problems)


def _step(step: Mapping[str, Any], where: str, settings: Mapping[str, Any], problems: list,
          config_where: str | None = None) -> None:
    """``config_where``: where the step's config is, when not at ``<where>.config`` (a short compensate)."""
    for key, setting in STEP_CAPS.items():
        _check(problems, f"{where}.{key}", step.get(key), setting, settings)
    for (key, inner), setting in NESTED_STEP_CAPS.items():
        value = step.get(key)
        if isinstance(value, Mapping):
            _check(problems, f"{where}.{key}.{inner}", value.get(inner), setting, settings)
    compensate = step.get("compensate")
    if isinstance(compensate, Mapping):
        # Written as a step (with config) or as its type plus config keys: checked as a step either way.
        if "config" in compensate:
            _step(compensate, f"{where}.compensate", settings, problems)
        else:
            as_step = {"type": compensate.get("type"), "config": compensate}
            _step(as_step, f"{where}.compensate", settings, problems, config_where=f"{where}.compensate")
    config = step.get("config")
    if not isinstance(config, Mapping):
        return
    kind = step.get("type")
    config_where = config_where or f"{where}.config"
    for key, setting in CONFIG_CAPS.get(kind if isinstance(kind, str) else "", {}).items():
        _check(problems, f"{config_where}.{key}", config.get(key), setting, settings)
    function = config.get("function")
    if kind == "python" and isinstance(function, str) and is_function_path(function):
        # Refused when posted, not first when it runs: a designer or a client sees it as it validates.
        refused = not_allowed(function.strip(), allowed_modules(settings))
        if refused:
            problems.append({"path": f"{config_where}.function", "message": refused})
    if kind == "loop":
        items = config.get("items")
        if isinstance(items, (list, Mapping)):
            _check(problems, f"{config_where}.items", len(items), ITEMS_SETTING, settings)
        _steps(config.get("steps"), f"{config_where}.steps", settings, problems)
