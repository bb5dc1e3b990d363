"""Declarative workflows: loaded from files at start-up, created and versioned through the API."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actions.text import shown_path
from app.core.binding import BoundWorkflow
from app.core.limits import definition_problems
from app.core.redaction import keep_redacted
from app.core.templating import Renderer
from app.errors import ConfigError, Conflict, InvalidInput
from workflows.declarative import DefinitionError, build_workflow, definition_files, load_file
from workflows.registry import WorkflowLoadError

if TYPE_CHECKING:
    from app.core.runtime import Runtime

logger = logging.getLogger(__name__)

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "workflows" / "definitions"


def bindable(workflow: Any, definition: Any, source: str, settings: Mapping[str, Any],
             renderer: Renderer) -> BoundWorkflow:
    """The workflow bound to ``settings``; DefinitionError when a cap (app/core/limits.py) or the binding refuses it.

    Binding renders the trigger's settings (``seconds: "{{ 1/0 }}"`` fails here), so a definition
    that could not be served is never stored.
    """
    problems = definition_problems(definition, settings)
    if problems:
        raise DefinitionError(source, problems)
    try:
        return BoundWorkflow.bind(workflow, settings, renderer)
    except (ConfigError, ValueError, TypeError) as error:
        message = str(error)
        for prefix in (f"workflow {workflow.name!r}: ", f"workflow {workflow.name!r}: ", "trigger: "):
            message = message.removeprefix(prefix)  # the path says where
        raise DefinitionError(source, [{"path": "trigger", "message": message}]) from None


class Definitions:
    """Registers definition files and API-made definitions with a runtime; keeps their versions."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._lock = threading.Lock()
        # Older versions still needed by runs that started with them: (name, version) -> bound.
        self._versions: dict[tuple[str, int], BoundWorkflow] = {}
        # Stored definitions that no longer build or bind (name -> why): not served, but deletable.
        self.unloaded: dict[str, str] = {}

    @property
    def folder(self) -> Path:
        """Where definition files are read from (WORKFLOW_DEFINITIONS_PATH)."""
        return Path(self.runtime.settings.get("WORKFLOW_DEFINITIONS_PATH") or DEFAULT_FOLDER)

    def load(self) -> None:
        """Register every definition file, then every stored definition; a bad file stops start-up."""
        for path in definition_files(self.folder):
            source = shown_path(path)
            try:
                workflow = load_file(path)
                workflow.origin, workflow.source = "file", source
                self._bindable(workflow, workflow.definition, source)
                self.runtime.registry.register(workflow, source)
            except (DefinitionError, WorkflowLoadError) as error:
                raise ConfigError(str(error)) from None
        for record in self.runtime.store.list_definitions():
            name, version = record["name"], record["version"]
            try:
                workflow = self._build(record["definition"], f"api:{name} v{version}", version)
                self._bindable(workflow, record["definition"], workflow.source)
                self.runtime.registry.register(workflow, workflow.source)
            except (DefinitionError, WorkflowLoadError) as error:
                # One stored definition that no longer builds must not keep the server down;
                # it stays deletable through the API.
                self.unloaded[name] = str(error)
                logger.error("stored definition %s v%d is not loaded: %s", name, version, error)

    @staticmethod
    def _build(definition: Any, source: str, version: int) -> Any:
        workflow = build_workflow(definition, source, version=version)
        workflow.origin = "api"
        return workflow

    def create(self, definition: Any) -> dict:
        """Register a new definition (version 1); 409 when the name is taken, 422 when invalid."""
        with self._lock:
            name = definition.get("name") if isinstance(definition, dict) else None
            if isinstance(name, str) and name in self.runtime.bound:
                raise Conflict(f"a workflow named {name!r} exists; change it with PUT /api/workflows/{name}")
            workflow, bound = self._checked(definition, "request body", 1)
            workflow.version = self.runtime.store.save_definition(workflow.name, definition)
            self.unloaded.pop(workflow.name, None)
            self.runtime.add_workflow(workflow, bound)
        return self.runtime.summary(workflow.name)

    def update(self, name: str, definition: Any) -> dict:
        """Register a new version; runs under way keep the version they started with."""
        with self._lock:
            bound = self.runtime.get(name)
            self._editable(bound)
            if isinstance(definition, dict):
                definition.setdefault("name", name)
                if definition["name"] != name:
                    raise InvalidInput(f"the definition is named {definition['name']!r}, the URL {name!r}",
                                       details=[{"path": "name", "message": f"must be {name!r}"}])
            definition = keep_redacted(definition, bound.workflow.definition)  # "***" read back keeps the secret
            version = (bound.workflow.version or 0) + 1
            workflow, new = self._checked(definition, "request body", version)
            self._versions[(name, bound.workflow.version)] = bound
            workflow.version = self.runtime.store.save_definition(name, definition)
            self.runtime.replace_workflow(workflow, new)
        return self.runtime.summary(name)

    def delete(self, name: str) -> None:
        """Forget an API-made definition and every version of it (also one that no longer loads)."""
        with self._lock:
            if name in self.unloaded and name not in self.runtime.bound:
                self.runtime.store.delete_definition(name)
                del self.unloaded[name]
                return
            bound = self.runtime.get(name)
            self._editable(bound)
            self.runtime.remove_workflow(name)
            self.runtime.store.delete_definition(name)

    def bound_for(self, name: str, version: int | None) -> BoundWorkflow | None:
        """The bound workflow a run of ``version`` needs (the current one, or a stored older version)."""
        bound = self.runtime.bound.get(name)
        if bound is None or version is None or bound.workflow.version in (None, version):
            return bound
        old = self._versions.get((name, version))
        if old is None:
            record = self.runtime.store.get_definition(name, version)
            if record is None:
                return None
            try:
                workflow = self._build(record["definition"], f"api:{name} v{version}", version)
                old = self._bindable(workflow, record["definition"], workflow.source)
            except DefinitionError as error:
                logger.error("stored definition %s v%d is not loaded: %s", name, version, error)
                return None
            self._versions[(name, version)] = old
        return old

    def _checked(self, definition: Any, source: str, version: int) -> tuple[Any, BoundWorkflow]:
        """The workflow and its binding; InvalidInput (422) listing each problem with its path."""
        try:
            workflow = self._build(definition, source, version)
            return workflow, self._bindable(workflow, definition, source)
        except DefinitionError as error:
            raise InvalidInput(f"invalid workflow definition: {error}", details=error.problems) from None

    def _bindable(self, workflow: Any, definition: Any, source: str) -> BoundWorkflow:
        return bindable(workflow, definition, source, self.runtime.settings, self.runtime.renderer)

    def _editable(self, bound: BoundWorkflow) -> None:
        if bound.workflow.origin != "api":
            where = bound.workflow.source or self.runtime.registry.source(bound.name)
            raise Conflict(f"workflow {bound.name!r} is defined in {where}; only workflows created through "
                           f"the API can be changed or deleted through it")
