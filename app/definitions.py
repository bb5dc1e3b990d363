"""Declarative workflows: loaded from files at start-up, created and versioned through the API."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.binding import BoundWorkflow
from app.errors import ConfigError, Conflict, InvalidInput
from app.redaction import keep_redacted
from workflows.declarative import DefinitionError, build_workflow, definition_files, load_file
from workflows.registry import WorkflowLoadError

if TYPE_CHECKING:
    from app.runtime import Runtime

logger = logging.getLogger(__name__)

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "workflows" / "definitions"


def _relative(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


class Definitions:
    """Registers definition files and API-made definitions with a runtime; keeps their versions."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._lock = threading.Lock()
        # Older versions still needed by runs that started with them: (name, version) -> bound.
        self._versions: dict[tuple[str, int], BoundWorkflow] = {}

    @property
    def folder(self) -> Path:
        """Where definition files are read from (WORKFLOW_DEFINITIONS_PATH)."""
        return Path(self.runtime.settings.get("WORKFLOW_DEFINITIONS_PATH") or DEFAULT_FOLDER)

    def load(self) -> None:
        """Register every definition file, then every stored definition; a bad file stops start-up."""
        for path in definition_files(self.folder):
            source = _relative(path)
            try:
                workflow = load_file(path)
                workflow.origin, workflow.source = "file", source
                self.runtime.registry.register(workflow, source)
            except (DefinitionError, WorkflowLoadError) as error:
                raise ConfigError(str(error)) from None
        for record in self.runtime.store.list_definitions():
            name, version = record["name"], record["version"]
            try:
                workflow = self._build(record["definition"], f"api:{name} v{version}", version)
                self.runtime.registry.register(workflow, workflow.source)
            except (DefinitionError, WorkflowLoadError) as error:
                # One stored definition that no longer builds must not keep the server down.
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
            workflow = self._checked(definition, "request body", 1)
            workflow.version = self.runtime.store.save_definition(workflow.name, definition)
            self.runtime.add_workflow(workflow)
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
            workflow = self._checked(definition, "request body", version)
            self._versions[(name, bound.workflow.version)] = bound
            workflow.version = self.runtime.store.save_definition(name, definition)
            self.runtime.replace_workflow(workflow)
        return self.runtime.summary(name)

    def delete(self, name: str) -> None:
        """Forget an API-made definition and every version of it."""
        with self._lock:
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
            workflow = self._build(record["definition"], f"api:{name} v{version}", version)
            old = self._versions[(name, version)] = BoundWorkflow.bind(workflow, self.runtime.settings,
                                                                       self.runtime.renderer)
        return old

    def _checked(self, definition: Any, source: str, version: int) -> Any:
        try:
            return self._build(definition, source, version)
        except DefinitionError as error:
            raise InvalidInput(f"invalid workflow definition: {error}", details=error.problems) from None

    def _editable(self, bound: BoundWorkflow) -> None:
        if bound.workflow.origin != "api":
            where = bound.workflow.source or self.runtime.registry.source(bound.name)
            raise Conflict(f"workflow {bound.name!r} is defined in {where}; only workflows created through "
                           f"the API can be changed or deleted through it")
