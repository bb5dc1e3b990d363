"""Plugins: installed packages that add action types, trigger types and workflows (DESIGN section 13).

Entry point groups: ``pyflow.actions`` (type name -> BaseAction subclass), ``pyflow.triggers``
(type name -> BaseTrigger subclass), ``pyflow.workflows`` (a module whose Workflow classes register).
They are read when a runtime is created (never at import time). A plugin that cannot load - its
import raises, it names the wrong kind of class, its name clashes with a built-in or another
plugin - is logged with its name and the error, listed in ``problems`` (GET /api/catalog), and
skipped: start-up goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

from actions.base import BaseAction
from actions.text import one_line
from app.core.limits import definition_caps
from triggers.base import BaseTrigger
from workflows.catalog import TypeRegistry, action_types, trigger_types
from workflows.type_schemas import describe_type, step_keys_schema

logger = logging.getLogger(__name__)

ACTIONS, TRIGGERS, WORKFLOWS = "pyflow.actions", "pyflow.triggers", "pyflow.workflows"


@dataclass
class Plugins:
    """What the installed plugins brought: workflow modules to register, and the plugins that failed."""

    #: (plugin label, imported module) for each ``pyflow.workflows`` entry point that imported.
    workflow_modules: list[tuple[str, ModuleType]] = field(default_factory=list)
    #: {"plugin": "<group> <name> (<distribution> <version>)", "error": one line} for each broken plugin.
    problems: list[dict[str, str]] = field(default_factory=list)

    def fail(self, plugin: str, error: str) -> None:
        """Record (and log) a plugin that is skipped."""
        logger.error("plugin %s is not loaded: %s", plugin, error)
        self.problems.append({"plugin": plugin, "error": error})


def origin(point: EntryPoint) -> str:
    """The distribution that declares ``point``: "name version" (a catalog row's origin)."""
    dist = point.dist
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


def label(point: EntryPoint) -> str:
    """How logs and the catalog name a plugin: its group, name and distribution."""
    return f"{point.group} {point.name} ({origin(point)})"


def load_plugins() -> Plugins:
    """Register every installed plugin's action and trigger types; import its workflow modules.

    Registering the same classes again (a second runtime in one process) changes nothing.
    """
    plugins = Plugins()
    installed = entry_points()  # read once: each group=... call would scan every distribution again
    for group, registry, base in ((ACTIONS, action_types(), BaseAction), (TRIGGERS, trigger_types(), BaseTrigger)):
        points = sorted(installed.select(group=group), key=lambda point: point.name)
        if points:
            # Every built-in is known before a plugin can take a name (they are imported lazily otherwise).
            builtin = {name for name in registry.names() if registry.origin(name) == "builtin"}
            for point in points:
                _register(point, registry, base, builtin, plugins)
    for point in sorted(installed.select(group=WORKFLOWS), key=lambda point: point.name):
        try:
            module = point.load()
        except Exception as error:
            plugins.fail(label(point), _error(error))
            continue
        if not isinstance(module, ModuleType):
            plugins.fail(label(point), f"{point.value} is a {type(module).__name__}, not a module of workflows")
            continue
        plugins.workflow_modules.append((label(point), module))
    return plugins


def _register(point: EntryPoint, registry: TypeRegistry, base: type, builtin: set[str], plugins: Plugins) -> None:
    kind = registry.kind
    try:
        cls = point.load()
    except Exception as error:
        plugins.fail(label(point), _error(error))
        return
    if not (isinstance(cls, type) and issubclass(cls, base)):
        plugins.fail(label(point), f"{point.value} is not a {base.__name__} subclass")
        return
    if cls.type != point.name:
        plugins.fail(label(point), f"the entry point is named {point.name!r} but {cls.__qualname__}.type is "
                                   f"{cls.type!r}; name the entry point after the type")
        return
    if point.name in builtin:
        plugins.fail(label(point), f"{kind} type {point.name!r} is built in; a plugin cannot replace it")
        return
    try:
        registry.register(cls, origin(point))
    except ValueError as error:  # another plugin took the name
        plugins.fail(label(point), str(error))


def _error(error: BaseException) -> str:
    """An import failure in one line: its type and message (no traceback)."""
    return one_line(error, limit=500)


def type_catalog(plugins: Plugins, settings: Mapping[str, Any]) -> dict[str, Any]:
    """GET /api/catalog: every action and trigger type (built in and plugged in), the broken plugins, the keys
    every step may carry and the caps on a whole definition."""
    return {
        "actions": [describe_type(action_types().get(name), action_types().origin(name) or "builtin")
                    for name in action_types().names()],
        "triggers": [describe_type(trigger_types().get(name), trigger_types().origin(name) or "builtin")
                     for name in trigger_types().names()],
        "problems": list(plugins.problems),
        "step_keys": step_keys_schema(),
        "limits": definition_caps(settings),
    }
