"""Declarative workflows: built from a definition and checked against the caps and the binding."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.binding import BoundWorkflow
from app.errors import ConfigError, InvalidInput
from app.limits import definition_problems
from app.templating import Renderer
from workflows.base import Workflow
from workflows.declarative import DefinitionError, build_workflow, load_file

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "workflows" / "definitions"


def definitions_folder(settings: Mapping[str, Any]) -> Path:
    """Where definition files are read from (WORKFLOW_DEFINITIONS_PATH)."""
    return Path(settings.get("WORKFLOW_DEFINITIONS_PATH") or DEFAULT_FOLDER)


def _relative(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def load_definition_file(path: Path) -> type[Workflow]:
    """The workflow of a definition file; DefinitionError or WorkflowLoadError naming the file."""
    workflow = load_file(path)
    workflow.origin, workflow.source = "file", _relative(path)
    return workflow


def bindable(workflow: Any, definition: Any, source: str, settings: Mapping[str, Any],
             renderer: Renderer) -> BoundWorkflow:
    """The workflow bound to ``settings``; DefinitionError when a cap (app/limits.py) or the binding refuses it.

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


def build_api_workflow(definition: Any, source: str, version: int) -> type[Workflow]:
    """The workflow class of a definition made through the API; DefinitionError listing its problems."""
    workflow = build_workflow(definition, source, version=version)
    workflow.origin = "api"
    return workflow


def checked(definition: Any, source: str, version: int, settings: Mapping[str, Any],
            renderer: Renderer) -> tuple[type[Workflow], BoundWorkflow]:
    """A posted definition's workflow and its binding; InvalidInput (422) listing each problem with its path."""
    try:
        workflow = build_api_workflow(definition, source, version)
        return workflow, bindable(workflow, definition, source, settings, renderer)
    except DefinitionError as error:
        raise InvalidInput(f"invalid workflow definition: {error}", details=error.problems) from None
