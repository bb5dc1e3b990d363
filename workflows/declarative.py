"""Workflows from YAML or JSON definitions, built into ordinary Workflow classes."""

from __future__ import annotations

import collections.abc
import inspect
import json
import math
import types
import typing
from collections import Counter
from collections.abc import Hashable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from actions.base import BaseAction, SettingError, cache_problem
from actions.jsontext import DEFAULT_MAX_DEPTH, JSONLimitError, load_json
from actions.schemas import check_schema
from triggers.base import BaseTrigger
from workflows.base import MAX_NAME_LENGTH, NAME_PATTERN, Workflow
from workflows.catalog import action_types, trigger_types

DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")

TOP_KEYS = {"name", "description", "inputs", "trigger", "steps", "max_retries", "retry_delay", "step_timeout",
            "check_interval", "max_concurrent_runs", "overlap", "max_parallel_steps", "layout"}
_STEP_KEYS = {"name", "type", "config", "depends_on", "when", "retries", "timeout", "on_failure", "compensate", "cache",
              "limits"}
# A compensation written as a step (with ``config``); without ``config`` every key but type and name is its config.
_COMPENSATE_KEYS = {"name", "type", "config", "retries", "timeout"}
# Keys a loop's nested steps cannot have: the engine applies them to a run's own steps only.
_TOP_STEP_ONLY = ("compensate", "cache")
# The layout's key of the trigger's node; the others are step names (the designer's node positions).
TRIGGER_NODE = "@trigger"
# Farthest a node may be placed from the origin: a position is a screen coordinate, not a store of data.
MAX_COORDINATE = 1e6
# Options a step carries beside its config: the step's key -> the constructor's parameter (compensate, cache and
# limits, checked on their own, have the same name in both).
_STEP_OPTIONS = {"when": "when", "retries": "retries", "timeout": "step_timeout", "depends_on": "depends_on",
                 "on_failure": "on_failure"}
_OPTION_KEYS = {option: key for key, option in _STEP_OPTIONS.items()}
# Parameters a definition cannot set through config: the engine owns them.
_RESERVED = {"self", "name", "when", "retries", "step_timeout", "depends_on", "on_failure", "compensate", "cache"}


class DefinitionError(ValueError):
    """An invalid definition; ``problems`` lists each as {"path", "message"}."""

    def __init__(self, source: str, problems: list[dict[str, str]]):
        self.source = source
        self.problems = problems
        listed = "; ".join(f"{problem['path'] or '(top)'}: {problem['message']}" for problem in problems)
        super().__init__(f"{source}: {listed}")


class _Problems:
    """Collects problems so one answer lists them all."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append({"path": path, "message": message})


def config_parameters(cls: type) -> list[inspect.Parameter]:
    """The constructor parameters a definition's config sets: the one source of a type's settings."""
    return [parameter for parameter in inspect.signature(cls.__init__).parameters.values()
            if parameter.name not in _RESERVED
            and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)]


def is_callable_hint(hint: Any) -> bool:
    """True for a Python callable's type hint (``Callable[...]``, also inside ``X | None``)."""
    if hint is collections.abc.Callable or typing.get_origin(hint) is collections.abc.Callable:
        return True
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and any(
        is_callable_hint(arg) for arg in typing.get_args(hint))


def constructor_hints(cls: type) -> dict[str, Any]:
    """The constructor's resolved type hints; {} when one names something unimportable (then untyped)."""
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # a plugin's hint naming a TYPE_CHECKING-only class must not break a check
        return {}


@lru_cache(maxsize=256)  # inspect.signature was most of the cost of a large definition
def _accepted(cls: type) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The constructor's setting names, the required ones, and the optional Python callables."""
    names: set[str] = set()
    required: set[str] = set()
    callables: set[str] = set()
    hints = constructor_hints(cls)
    for parameter in config_parameters(cls):
        names.add(parameter.name)
        if parameter.default is parameter.empty:
            required.add(parameter.name)
        elif is_callable_hint(hints.get(parameter.name)):
            callables.add(parameter.name)  # a test's fake clock: code sets it, never a definition
    return frozenset(names), frozenset(required), frozenset(callables)


def _build(cls: type, name: str, config: Mapping[str, Any], extra: dict[str, Any], path: str,
           problems: _Problems, step: str | None = None) -> Any:
    """``cls(name, **config, **extra)`` with unknown and missing keys reported at ``path``.

    A setting the constructor refuses (SettingError) is reported at ``path.<key>`` when the config
    holds it, at ``step.<its key>`` when it is an option of ``extra`` written on the step at path
    ``step``, else at ``path``. With unknown keys (but none missing) the constructor still checks
    the known ones, so a file's every problem is listed at once; the object is then None all the same.
    """
    names, required, callables = _accepted(cls)
    unknown = sorted(set(config) - names)
    missing = sorted(required - set(config))
    for key in unknown:
        problems.add(f"{path}.{key}", f"unknown setting for type {cls.type!r}; known: {', '.join(sorted(names))}")
    python_only = sorted(callables & set(config))
    for key in python_only:
        problems.add(f"{path}.{key}", f"a Python callable: only a workflow written in Python can set {key!r}")
    unknown += python_only
    for key in missing:
        problems.add(f"{path}.{key}", "is required")
    if missing:
        return None
    try:
        built = cls(name, **{key: value for key, value in config.items() if key in names and key not in callables},
                    **extra)
    except (TypeError, ValueError) as error:
        # A refused setting is reported at its own field, so the designer marks that field.
        key = error.key if isinstance(error, SettingError) else None
        if key is not None and key in config:
            path = f"{path}.{key}"
        elif key is not None and key in extra and step is not None:
            path = f"{step}.{_OPTION_KEYS.get(key, key)}"
        problems.add(path, str(error))
        return None
    return None if unknown else built


def _check_type(value: Any, expected: type, path: str, what: str, problems: _Problems) -> bool:
    if isinstance(value, expected):
        return True
    problems.add(path, f"must be {what}, got {type(value).__name__}")
    return False


def _trigger(data: Any, workflow: Any, problems: _Problems) -> BaseTrigger | None:
    """The trigger a definition's ``trigger`` defines, named after the workflow ``workflow`` when that name is valid.

    Its name is what its errors and log lines show (``trigger 'nightly_report': ...``); a Python workflow names
    its own. Nothing is stored under it: a trigger's state is kept under the workflow's name.
    """
    if data is None:
        data = {"type": "manual"}
    if not isinstance(data, Mapping) or not isinstance(data.get("type"), str):
        problems.add("trigger", "must be a mapping with a type, e.g. {type: interval, seconds: 60}")
        return None
    settings = {key: value for key, value in data.items() if key != "type"}
    cls = trigger_types().get(data["type"])
    if cls is None:
        known = ", ".join(trigger_types().names())
        problems.add("trigger.type", f"unknown trigger type {data['type']!r}; known: {known}")
        return None
    name = workflow if isinstance(workflow, str) and NAME_PATTERN.match(workflow) else "trigger"
    return _build(cls, name, settings, {}, "trigger", problems)


def _number_problem(data: Mapping[str, Any], key: str, path: str, problems: _Problems) -> bool:
    """Report a step's ``retries`` or ``timeout`` that is no number >= 0 at its own key; True when reported."""
    value = data.get(key)
    if key in data and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        problems.add(f"{path}.{key}", f"must be a number >= 0, got {value!r}")
        return True
    return False


def _compensation(path: str, data: Any, step: str, problems: _Problems) -> BaseAction | None:
    """The action a step's ``compensate`` defines: a step (type, config, retries, timeout) or type plus config keys."""
    if not isinstance(data, Mapping) or not isinstance(data.get("type"), str):
        problems.add(path, "must be a step definition with a type, e.g. {type: http_request, config: {url: ...}}")
        return None
    as_step = "config" in data
    if as_step:
        for key in sorted(set(data) - _COMPENSATE_KEYS):
            problems.add(f"{path}.{key}", f"unknown key; a compensation has {', '.join(sorted(_COMPENSATE_KEYS))}")
    config = data.get("config") if as_step else {key: value for key, value in data.items()
                                                 if key not in ("type", "name")}
    cls = action_types().get(data["type"])
    if cls is None:
        problems.add(f"{path}.type", f"unknown step type {data['type']!r}; known: {', '.join(action_types().names())}")
    name = data.get("name", f"{step}_compensate")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.add(f"{path}.name", f"must match [a-z0-9_]+, got {name!r}")
        name = f"{step}_compensate"
    extra: dict[str, Any] = {}
    if as_step:
        for key, option in (("retries", "retries"), ("timeout", "step_timeout")):
            if key in data and not _number_problem(data, key, path, problems):
                extra[option] = data[key]
    if cls is None or not _check_type(config, Mapping, f"{path}.config" if as_step else path, "a mapping", problems):
        return None
    return _build(cls, name, config, extra, f"{path}.config" if as_step else path, problems, path)


def _step(path: str, data: Any, known_names: list[Any], problems: _Problems, nested: bool = False) -> BaseAction | None:
    if not isinstance(data, Mapping):
        problems.add(path, f"must be a mapping with name, type and config, got {type(data).__name__}")
        return None
    for key in sorted(set(data) - _STEP_KEYS):
        problems.add(f"{path}.{key}", f"unknown key; a step has {', '.join(sorted(_STEP_KEYS))}")
    for key in _TOP_STEP_ONLY if nested else ():
        if key in data:
            problems.add(f"{path}.{key}", "not supported on a loop's nested steps (only on a workflow's own steps)")
    # Every key is checked whatever the others hold, so one run of validate lists a step's every problem.
    before = len(problems.items)
    name, kind, config = data.get("name"), data.get("type"), data.get("config", {})
    named = _check_type(name, str, f"{path}.name", "a step name", problems)
    if named and not NAME_PATTERN.match(name):
        problems.add(f"{path}.name", f"must match [a-z0-9_]+, got {name!r}")
    cls = action_types().get(kind) if isinstance(kind, str) else None
    if cls is None:
        problems.add(f"{path}.type", f"unknown step type {kind!r}; known: {', '.join(action_types().names())}")
    elif nested and cls.parks_only:
        problems.add(f"{path}.type", parks_only_message(cls.type))
    configured = _check_type(config, Mapping, f"{path}.config", "a mapping", problems)
    extra: dict[str, Any] = {}
    for key, option in _STEP_OPTIONS.items():
        if key in data:
            extra[option] = data[key]
    if "depends_on" in extra and isinstance(extra["depends_on"], str):
        extra["depends_on"] = [extra["depends_on"]]
    if isinstance(extra.get("depends_on"), list):
        unknown = [dep for dep in extra["depends_on"] if dep not in known_names]
        if unknown:
            problems.add(f"{path}.depends_on", f"unknown step(s): {', '.join(map(str, unknown))}")
            extra["depends_on"] = [dep for dep in extra["depends_on"] if dep in known_names]
    for key, option in (("retries", "retries"), ("timeout", "step_timeout")):
        # Reported at the step's own key: BaseAction's message would otherwise land on the config.
        if _number_problem(data, key, path, problems):
            del extra[option]
    step_name = name if named and NAME_PATTERN.match(name) else "step"
    if "compensate" in data and not nested:
        compensation = _compensation(f"{path}.compensate", data["compensate"], step_name, problems)
        if compensation is not None:
            extra["compensate"] = compensation
    if "cache" in data and not nested:
        problem = cache_problem(data["cache"])
        if problem is None:
            extra["cache"] = data["cache"]
        else:
            problems.add(f"{path}.cache{problem[0]}", problem[1])
    target = data.get("on_failure")
    if isinstance(target, str) and target not in ("fail", "continue") and (target not in known_names or target == name):
        # Reported here, like depends_on, so the path names the step and not just "steps".
        problems.add(f"{path}.on_failure", f"must be 'fail', 'continue' or the name of another step, got {target!r}")
        del extra["on_failure"]
    if "limits" in data and cls is not None:
        # DESIGN section 9: a shell step carries limits beside its config; the constructor takes them.
        if "limits" not in inspect.signature(cls.__init__).parameters:
            problems.add(f"{path}.limits", f"only shell steps take limits, not type {cls.type!r}")
        elif configured and "limits" in config:
            problems.add(f"{path}.limits", "given both on the step and in its config; keep one")
        else:
            extra["limits"] = data["limits"]
    if cls is None or not configured:
        return None
    if cls.type == "loop" and isinstance(config.get("steps"), list):
        _steps(config["steps"], f"{path}.config.steps", problems, nested=True)  # checked now, built per item later
    # A step whose name is wrong still has its config checked, under a stand-in name.
    action = _build(cls, name if named and NAME_PATTERN.match(name) else "step", config, extra, f"{path}.config",
                    problems, path)
    return None if len(problems.items) > before else action


def parks_only_message(kind: str) -> str:
    """Why a step of type ``kind`` (one that can only park) cannot be among a loop's nested steps."""
    types = action_types()
    parking = [name for name in types.names() if getattr(types.get(name), "parks_only", False)]
    return (f"{kind!r} cannot be inside a loop's steps: {' and '.join(parking)} steps wait by parking the run "
            f"(no thread held, across restarts), which only a workflow's own steps can do, not the steps a loop "
            f"runs on its thread for each item; put it before or after the loop (a wait step may be inside: "
            f"it sleeps on the loop's thread)")


def parking_in_loops(steps: Any, path: str) -> list[dict[str, str]]:
    """Problems of nested step definitions ``steps`` (and of loops among them) that can only park.

    A Python workflow's loops are checked with this when it is bound; a definition's, step by step in _step.
    """
    found: list[dict[str, str]] = []
    for index, step in enumerate(steps if isinstance(steps, list) else ()):
        kind = step.get("type") if isinstance(step, Mapping) else None
        cls = action_types().get(kind) if isinstance(kind, str) else None
        if cls is None:
            continue
        if cls.parks_only:
            found.append({"path": f"{path}[{index}].type", "message": parks_only_message(kind)})
        config = step.get("config")
        if "steps" in cls.raw_fields and isinstance(config, Mapping):
            found += parking_in_loops(config.get("steps"), f"{path}[{index}].config.steps")
    return found


def _steps(steps: Any, path: str, problems: _Problems, nested: bool = False) -> list[BaseAction]:
    """Actions from a list of step definitions; problems are collected with their paths."""
    if not isinstance(steps, list) or not steps:
        problems.add(path, "must be a non-empty list of steps")
        return []
    names = [step.get("name") for step in steps if isinstance(step, Mapping)]
    counts = Counter(name for name in names if isinstance(name, Hashable))  # names.count() per step was O(n²)
    actions: list[BaseAction] = []
    for index, step in enumerate(steps):
        action = _step(f"{path}[{index}]", step, names, problems, nested)
        if action is not None:
            actions.append(action)
        if isinstance(step, Mapping) and isinstance(step.get("name"), Hashable) and counts[step.get("name")] > 1:
            problems.add(f"{path}[{index}].name", f"duplicate step name {step.get('name')!r}")
    return actions


def _layout(layout: Any, steps: Any, problems: _Problems) -> None:
    """Check ``layout: {<step name> | "@trigger": [x, y]}``: the designer's positions, which the engine ignores.

    Its keys must name the definition's own steps, so it holds at most one entry per node.
    """
    if not isinstance(layout, Mapping):
        problems.add("layout", f"must be a mapping of step name to [x, y], got {type(layout).__name__}")
        return
    steps = steps if isinstance(steps, list) else []
    names = {step["name"] for step in steps if isinstance(step, Mapping) and isinstance(step.get("name"), str)}
    for key, position in layout.items():
        path = f"layout.{key}"
        if key != TRIGGER_NODE and key not in names:
            problems.add(path, f"not a step of this definition (nor {TRIGGER_NODE!r})")
        elif (not isinstance(position, list) or len(position) != 2
              or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                         and abs(v) <= MAX_COORDINATE for v in position)):
            problems.add(path, f"must be [x, y]: two finite numbers within ±{MAX_COORDINATE:g}, got {position!r}")


def build_actions(steps: Any, source: str) -> list[BaseAction]:
    """Actions from step definitions (a loop's nested steps); DefinitionError lists the problems."""
    problems = _Problems()
    actions = _steps(steps, "steps", problems, nested=True)
    if problems.items:
        raise DefinitionError(source, problems.items)
    return actions


def build_workflow(definition: Any, source: str, *, version: int | None = None) -> type[Workflow]:
    """A Workflow subclass from a parsed definition; DefinitionError lists every problem with its path."""
    problems = _Problems()
    if not isinstance(definition, Mapping):
        raise DefinitionError(source, [{"path": "", "message": "a definition is a mapping with name, trigger, steps"}])
    for key in sorted(set(definition) - TOP_KEYS):
        problems.add(key, f"unknown key; a definition has {', '.join(sorted(TOP_KEYS))}")
    name = definition.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.add("name", f"must match [a-z0-9_]+, got {name!r}")
    elif len(name) > MAX_NAME_LENGTH:
        problems.add("name", f"must be at most {MAX_NAME_LENGTH} characters, got {len(name)}")
    inputs = definition.get("inputs")
    if inputs is not None and not isinstance(inputs, Mapping):
        problems.add("inputs", f"must be a JSON Schema object, got {type(inputs).__name__}")
    elif inputs is not None:
        try:
            check_schema(inputs)
        except jsonschema.SchemaError as error:
            where = ".".join(str(part) for part in error.absolute_path)
            problems.add(f"inputs.{where}" if where else "inputs", f"not a valid JSON Schema: {error.message}")
    trigger = _trigger(definition.get("trigger"), name, problems)
    actions = _steps(definition.get("steps"), "steps", problems)
    if "layout" in definition:
        _layout(definition["layout"], definition.get("steps"), problems)
    if problems.items:
        raise DefinitionError(source, problems.items)
    attributes: dict[str, Any] = {
        "__module__": __name__,
        "name": name,
        "description": str(definition.get("description", "")),
        "trigger": trigger,
        "actions": actions,
        "inputs_schema": inputs,
        "definition": dict(definition),
        "version": version,
        "source": source,
    }
    for key in ("max_retries", "retry_delay", "step_timeout", "check_interval", "max_concurrent_runs", "overlap",
                "max_parallel_steps"):
        if key in definition:
            attributes[key] = definition[key]
    workflow = type(f"Definition_{name}", (Workflow,), attributes)
    try:
        workflow.check()
    except ValueError as error:  # the graph: cycles, on_failure targets
        message = str(error).removeprefix(f"workflow {workflow.__qualname__}: ")
        # A top-level setting's message starts with its name (max_parallel_steps must be...).
        key = message.split(" ", 1)[0]
        raise DefinitionError(source, [{"path": key if key in TOP_KEYS else "steps", "message": message}]) from None
    return workflow


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases, and with a nesting limit.

    An alias repeats a node without repeating its text: a 449-byte body of nested
    aliases became a 66 MB definition. Definitions do not need them.
    """

    max_depth = DEFAULT_MAX_DEPTH

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not accepted (nor anchors)",
                                              event.start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        if self._depth > self.max_depth:
            raise yaml.composer.ComposerError(None, None, f"YAML nested deeper than {self.max_depth} levels",
                                              event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# A date written plainly (2024-01-01) stays the text it was written as, as it would in JSON.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_JSON_SCALARS = (str, int, float, bool, type(None))


def _json_data(value: Any, source: str, path: str = "") -> Any:
    """``value`` as the JSON it must be (keys as JSON writes them); DefinitionError naming a value JSON cannot hold.

    A definition is stored as JSON: a date (``!!timestamp``), bytes (``!!binary``) or a set (``!!set``)
    would make storing it fail.
    """
    if isinstance(value, Mapping):
        data = {}
        for key, item in value.items():
            if not isinstance(key, _JSON_SCALARS):
                raise _not_json(source, path, f"key {key!r}")
            key = key if isinstance(key, str) else json.dumps(key)
            data[key] = _json_data(item, source, f"{path}.{key}" if path else key)
        return data
    if isinstance(value, (list, tuple)):
        return [_json_data(item, source, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, _JSON_SCALARS):
        return value
    raise _not_json(source, path, f"{type(value).__name__} {value!r}")


def _not_json(source: str, path: str, what: str) -> DefinitionError:
    return DefinitionError(source, [{"path": path, "message": f"{what} is not JSON data (a text, number, true, "
                                                              f"false, null, list or mapping); quote it to keep "
                                                              f"it as text"}])


def parse(text: str, source: str, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """YAML or JSON text (JSON is YAML) to data; DefinitionError with the line of a syntax error.

    YAML anchors and aliases are refused, and nesting deeper than ``max_depth`` (WORKFLOW_MAX_JSON_DEPTH).
    """
    try:
        if source.endswith(".json"):
            return load_json(text, max_depth)
        loader = _Loader(text)
        loader.max_depth = max_depth
        try:
            return _json_data(loader.get_single_data(), source)
        finally:
            loader.dispose()
    except JSONLimitError as error:
        raise DefinitionError(source, [{"path": "", "message": str(error)}]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
        message = f"not valid YAML: {getattr(error, 'problem', None) or error}"
        raise DefinitionError(source, [{"path": where, "message": message}]) from None
    except json.JSONDecodeError as error:
        raise DefinitionError(source, [{"path": f"line {error.lineno} column {error.colno}",
                                        "message": f"not valid JSON: {error.msg}"}]) from None


def read_definition(path: str | Path) -> Any:
    """The parsed content of a .yaml/.yml/.json definition file; DefinitionError when unreadable or malformed."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DefinitionError(source, [{"path": "", "message": f"cannot read: {error.strerror or error}"}]) from None
    return parse(text, source)


def load_file(path: str | Path) -> type[Workflow]:
    """A Workflow class from a .yaml/.yml/.json definition file."""
    return build_workflow(read_definition(path), str(path))


def definition_files(folder: str | Path) -> list[Path]:
    """The definition files of ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix in DEFINITION_SUFFIXES and path.is_file())
