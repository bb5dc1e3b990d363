"""Declarative workflows: built from a definition and checked as the server serves them.

One check, ``checked``, for the API, start-up and ``run.py validate``: the definition's structure,
the caps (app/limits.py) and the syntax of each template, every problem at once; then the binding.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actions.text import shown_path
from app.core.binding import BoundWorkflow
from app.core.limits import definition_problems, definition_size, size_problem
from app.core.templating import Renderer
from app.errors import ConfigError, InvalidInput
from workflows.base import Workflow
from workflows.declarative import DefinitionError, build_workflow, read_definition

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "workflows" / "definitions"


def definitions_folder(settings: Mapping[str, Any]) -> Path:
    """Where definition files are read from (WORKFLOW_DEFINITIONS_PATH)."""
    return Path(settings.get("WORKFLOW_DEFINITIONS_PATH") or DEFAULT_FOLDER)


def checked(definition: Any, source: str, settings: Mapping[str, Any], renderer: Renderer, *,
            version: int | None = None) -> tuple[type[Workflow], BoundWorkflow]:
    """Build a definition and bind it as the server serves it; ``version``: an API-made definition's.

    DefinitionError lists every problem at once: its structure, the caps and the syntax of each
    template; then binding renders the trigger's settings (``seconds: "{{ 1/0 }}"`` fails here),
    so a definition that could not be served is never stored.
    """
    too_large = size_problem(definition_size(definition), settings)
    if too_large:  # refused before the work that grows with its size
        raise DefinitionError(source, [{"path": "", "message": too_large}])
    problems = definition_problems(definition, settings) + template_problems(definition, renderer)
    try:
        workflow = build_workflow(definition, source, version=version)
    except DefinitionError as error:
        raise DefinitionError(source, [*error.problems, *problems]) from None
    if problems:
        raise DefinitionError(source, problems)
    if version is not None:
        workflow.origin = "api"
    return workflow, _bind(workflow, source, settings, renderer)


def posted(definition: Any, source: str, version: int, settings: Mapping[str, Any],
           renderer: Renderer) -> tuple[type[Workflow], BoundWorkflow]:
    """:func:`checked` for a definition sent to the API: InvalidInput (422) listing each problem with its path."""
    try:
        return checked(definition, source, settings, renderer, version=version)
    except DefinitionError as error:
        raise InvalidInput(f"invalid workflow definition: {error}", details=error.problems) from None


def load_definition_file(path: Path, settings: Mapping[str, Any],
                         renderer: Renderer) -> tuple[type[Workflow], BoundWorkflow]:
    """The workflow of a definition file and its binding; DefinitionError naming the file."""
    workflow, bound = checked(read_definition(path), str(path), settings, renderer)
    workflow.origin, workflow.source = "file", shown_path(path)
    return workflow, bound


# Keys of a step that are names, never rendered: a "{{" there is not a template.
_PLAIN_STEP_KEYS = frozenset({"name", "type", "depends_on", "on_failure"})


def template_problems(definition: Any, renderer: Renderer) -> list[dict[str, str]]:
    """Each template string of ``definition`` that does not compile in the app's sandbox, with its path.

    Without this a typo such as ``{{ inputs.x | }}`` passes validation and fails every run.
    """
    problems: list[dict[str, str]] = []
    if not isinstance(definition, Mapping):
        return problems
    trigger = definition.get("trigger")
    if isinstance(trigger, Mapping):
        for key, value in trigger.items():
            if key != "type":
                _templates(value, f"trigger.{key}", renderer, problems)
    _step_templates(definition.get("steps"), "steps", renderer, problems)
    return problems


def _step_templates(steps: Any, path: str, renderer: Renderer, problems: list[dict[str, str]]) -> None:
    if not isinstance(steps, list):
        return
    for index, step in enumerate(steps):
        if not isinstance(step, Mapping):
            continue
        for key, value in step.items():
            where = f"{path}[{index}].{key}"
            if key in _PLAIN_STEP_KEYS:
                continue
            if key == "config" and step.get("type") == "loop" and isinstance(value, Mapping):
                for option, item in value.items():  # a loop's steps are steps: their names are not templates
                    if option == "steps":
                        _step_templates(item, f"{where}.steps", renderer, problems)
                    else:
                        _templates(item, f"{where}.{option}", renderer, problems)
                continue
            _templates(value, where, renderer, problems)


def _templates(value: Any, path: str, renderer: Renderer, problems: list[dict[str, str]]) -> None:
    if isinstance(value, str):
        message = renderer.syntax_error(value)
        if message:
            problems.append({"path": path, "message": f"template syntax error: {message}"})
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _templates(item, f"{path}.{key}", renderer, problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _templates(item, f"{path}[{index}]", renderer, problems)


def _bind(workflow: Any, source: str, settings: Mapping[str, Any], renderer: Renderer) -> BoundWorkflow:
    """The built workflow bound to ``settings``; DefinitionError at "trigger" when binding refuses it."""
    try:
        return BoundWorkflow.bind(workflow, settings, renderer)
    except (ConfigError, ValueError, TypeError) as error:
        message = str(error)
        for prefix in (f"workflow {workflow.name!r}: ", f"workflow {workflow.name!r}: ", "trigger: "):
            message = message.removeprefix(prefix)  # the path says where
        raise DefinitionError(source, [{"path": "trigger", "message": message}]) from None
