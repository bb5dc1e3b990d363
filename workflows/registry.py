"""The workflow registry and the discovery of workflow modules."""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
import sys
import traceback
from collections.abc import Iterable, Iterator
from types import ModuleType

from actions.text import shown_path
from workflows.base import Workflow

logger = logging.getLogger(__name__)

# Modules of the workflows package that hold machinery, not workflows.
_NOT_WORKFLOW_MODULES = frozenset({"base", "registry", "graph", "catalog", "declarative", "type_schemas"})


class WorkflowLoadError(Exception):
    """A workflow module or class cannot be registered; the message names the file.

    ``module``: the module that was asked for, when importing it failed (its caller may know who listed it).
    """

    def __init__(self, message: str, module: str | None = None):
        super().__init__(message)
        self.module = module


def _source_of(workflow: type[Workflow]) -> str:
    path = getattr(sys.modules.get(workflow.__module__), "__file__", None)
    return shown_path(path) if path else workflow.__module__


class WorkflowRegistry:
    """Workflows by name; refuses a second workflow of the same name."""

    def __init__(self) -> None:
        self._workflows: dict[str, type[Workflow]] = {}
        self._sources: dict[str, str] = {}

    def register(self, workflow: type[Workflow], source: str | None = None) -> type[Workflow]:
        """Add ``workflow``; a misconfigured class or a taken name raises WorkflowLoadError."""
        source = source or _source_of(workflow)
        try:
            workflow.check()
        except ValueError as error:
            raise WorkflowLoadError(f"{source}: {error}") from None
        if workflow.name in self._workflows:
            raise WorkflowLoadError(
                f"{source}: workflow name {workflow.name!r} is already used by {self._sources[workflow.name]}"
            )
        self._workflows[workflow.name] = workflow
        self._sources[workflow.name] = source
        return workflow

    def unregister(self, name: str) -> None:
        """Remove the workflow called ``name`` if it is registered."""
        self._workflows.pop(name, None)
        self._sources.pop(name, None)

    def get(self, name: str) -> type[Workflow] | None:
        """The workflow called ``name``, or None."""
        return self._workflows.get(name)

    def source(self, name: str) -> str | None:
        """Where the workflow called ``name`` was defined."""
        return self._sources.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._workflows

    def __iter__(self) -> Iterator[type[Workflow]]:
        return iter(sorted(self._workflows.values(), key=lambda workflow: workflow.name))

    def __len__(self) -> int:
        return len(self._workflows)


def workflows_in(module) -> list[type[Workflow]]:
    """Workflow subclasses defined (not merely imported) in ``module``."""
    return [
        member
        for _, member in inspect.getmembers(module, inspect.isclass)
        if issubclass(member, Workflow) and member is not Workflow and member.__module__ == module.__name__
        and member.name
    ]


def import_module(name: str) -> ModuleType:
    """Import a module; any failure becomes a WorkflowLoadError naming its file and line."""
    try:
        return importlib.import_module(name)
    except Exception as error:
        where = name.replace(".", "/") + ".py"
        frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename.endswith(where)]
        line = f" line {frames[-1].lineno}:" if frames else ""
        raise WorkflowLoadError(f"cannot load {where}:{line} {type(error).__name__}: {error}", name) from error


def module_names(package: str = "workflows") -> list[str]:
    """The workflow modules of ``package``: one per .py file, machinery excluded."""
    root = importlib.import_module(package)
    return [
        f"{package}.{info.name}"
        for info in pkgutil.iter_modules(root.__path__)
        if not info.ispkg and info.name not in _NOT_WORKFLOW_MODULES and not info.name.startswith("_")
    ]


def discover(registry: WorkflowRegistry, modules: Iterable[str]) -> WorkflowRegistry:
    """Import ``modules`` and register every Workflow subclass they define."""
    for name in modules:
        module = import_module(name)
        for workflow in workflows_in(module):
            registry.register(workflow, _source_of(workflow))
    return registry
