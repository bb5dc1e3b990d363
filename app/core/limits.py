"""A definition's numbers checked against the caps (actions/limits.py) when it is posted or loaded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actions.limits import CONFIG_CAPS, ITEMS_SETTING, NESTED_STEP_CAPS, STEP_CAPS, TOP_CAPS, over


def definition_problems(definition: Any, settings: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every value of ``definition`` past its cap, as ``{"path", "message"}`` (templates are checked at run time)."""
    problems: list[dict[str, str]] = []
    if not isinstance(definition, Mapping):
        return problems
    for key, setting in TOP_CAPS.items():
        _check(problems, key, definition.get(key), setting, settings)
    _steps(definition.get("steps"), "steps", settings, problems)
    return problems


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
    if kind == "loop":
        items = config.get("items")
        if isinstance(items, (list, Mapping)):
            _check(problems, f"{config_where}.items", len(items), ITEMS_SETTING, settings)
        _steps(config.get("steps"), f"{config_where}.steps", settings, problems)
