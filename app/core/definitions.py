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
from workflows.catalog import action_types
from workflows.declarative import DefinitionError, build_workflow, read_definition

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "workflows" / "definitions"


def definitions_folder(settings: Mapping[str, Any]) -> Path:
    """Where definition files are read from (WORKFLOW_DEFINITIONS_PATH)."""
    return Path(settings.get("WORKFLOW_DEFINITIONS_PATH") or DEFAULT_FOLDER)


def checked(definition: Any, source: str, settings: Mapping[str, Any], renderer: Renderer, *,
            version: int | None = None, storage_path: str | None = None) -> tuple[type[Workflow], BoundWorkflow]:
    """Build a definition and bind it as the server serves it; ``version``: an API-made definition's.

    DefinitionError lists every problem at once: its structure, the caps and the syntax of each
    template; then binding renders the trigger's settings (``seconds: "{{ 1/0 }}"`` fails here) and
    asks each step whether this server could ever run it (``refused_steps``), so a definition that
    could not be served is never stored. ``storage_path``: the store's folder, under which the
    default WORKFLOW_FILES_ROOT lies (else WORKFLOW_STORAGE_PATH's).
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
    refused = refused_steps(definition, settings, storage_path)
    try:
        bound = _bind(workflow, source, settings, renderer)
    except DefinitionError as error:
        raise DefinitionError(source, [*error.problems, *refused]) from None
    if refused:
        raise DefinitionError(source, refused)
    return workflow, bound


def posted(definition: Any, source: str, version: int, settings: Mapping[str, Any], renderer: Renderer, *,
           storage_path: str | None = None) -> tuple[type[Workflow], BoundWorkflow]:
    """:func:`checked` for a definition sent to the API: InvalidInput (422) listing each problem with its path."""
    try:
        return checked(definition, source, settings, renderer, version=version, storage_path=storage_path)
    except DefinitionError as error:
        raise InvalidInput(f"invalid workflow definition: {error}", details=error.problems) from None


def load_definition_file(path: Path, settings: Mapping[str, Any], renderer: Renderer,
                         storage_path: str | None = None) -> tuple[type[Workflow], BoundWorkflow]:
    """The workflow of a definition file and its binding; DefinitionError naming the file."""
    workflow, bound = checked(read_definition(path), str(path), settings, renderer, storage_path=storage_path)
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


def refused_steps(definition: Mapping[str, Any], settings: Mapping[str, Any],
                  storage_path: str | None = None) -> list[dict[str, str]]:
    """Each setting of a built definition's steps that no run on this server could use, with its path.

    A shell step without WORKFLOW_ALLOW_SHELL, a literal path outside WORKFLOW_FILES_ROOT (each
    action's ``refusals``): a run would fail on it every time, so the definition is refused instead
    (DESIGN section 10). Loops' nested steps and compensations are steps too.
    """
    problems: list[dict[str, str]] = []
    _refused(definition.get("steps"), "steps", settings, storage_path, problems)
    return problems


def _refused(steps: Any, path: str, settings: Mapping[str, Any], storage_path: str | None,
             problems: list[dict[str, str]]) -> None:
    for index, step in enumerate(steps if isinstance(steps, list) else ()):
        if not isinstance(step, Mapping):
            continue
        where = f"{path}[{index}]"
        config = step.get("config")
        cls = _refuse(step, config, f"{where}.config", where, settings, storage_path, problems)
        if cls is not None and "steps" in cls.raw_fields and isinstance(config, Mapping):
            _refused(config.get("steps"), f"{where}.config.steps", settings, storage_path, problems)
        compensation = step.get("compensate")
        if isinstance(compensation, Mapping):
            # Written as a step (with config), or as its type beside its config's keys.
            as_step = "config" in compensation
            config = compensation.get("config") if as_step else {
                key: value for key, value in compensation.items() if key not in ("type", "name")}
            _refuse(compensation, config, f"{where}.compensate" + (".config" if as_step else ""),
                    f"{where}.compensate", settings, storage_path, problems)


def _refuse(step: Mapping[str, Any], config: Any, config_path: str, step_path: str, settings: Mapping[str, Any],
            storage_path: str | None, problems: list[dict[str, str]]) -> type | None:
    """Add the refusals of one step (or compensation) to ``problems``; its action class, None when unknown."""
    kind = step.get("type")
    cls = action_types().get(kind) if isinstance(kind, str) else None
    if cls is None:
        return None
    for key, message in cls.refusals(config if isinstance(config, Mapping) else {}, settings, storage_path):
        problems.append({"path": f"{config_path}.{key}" if key else f"{step_path}.type", "message": message})
    return cls


def _bind(workflow: Any, source: str, settings: Mapping[str, Any], renderer: Renderer) -> BoundWorkflow:
    """The built workflow bound to ``settings``; DefinitionError at "trigger" when binding refuses it."""
    try:
        return BoundWorkflow.bind(workflow, settings, renderer)
    except (ConfigError, ValueError, TypeError) as error:
        message = str(error)
        for prefix in (f"workflow {workflow.name!r}: ", f"workflow {workflow.name!r}: ", "trigger: "):
            message = message.removeprefix(prefix)  # the path says where
        raise DefinitionError(source, [{"path": "trigger", "message": message}]) from None
