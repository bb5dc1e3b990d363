"""JSON Schemas of action and trigger configs, derived from each type's constructor (GET /api/catalog).

The constructor is the one source of truth: its parameters are the config's fields (the same
list the definition builder accepts), its defaults the defaults, its type hints the types, and
the class's ``config_choices`` (the constants its checks use) the enums. Nothing is written twice.

Extensions a client can read: ``x-pyflow-template`` (the field may be a ``{{ }}`` template, rendered
per run), ``x-pyflow-secret`` (exactly ``{{ secrets.NAME }}``), ``x-pyflow-python-only`` (a Python
callable: only a Python workflow can set it; on the schema itself: the type is not usable from a
definition).
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import os
import types
import typing
from typing import Any

from workflows.base import NAME_PATTERN
from workflows.declarative import config_parameters, constructor_hints, is_callable_hint

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# A string holding a template: any value may be one, its type is known once rendered.
TEMPLATE = {"type": "string", "pattern": r"\{\{|\{%", "description": "a {{ }} template, rendered per run"}

_SCALARS = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Iterable,
              collections.abc.Collection)




def schema_of(hint: Any) -> dict[str, Any]:
    """A JSON Schema for a Python type hint; {} (anything) for what JSON cannot say."""
    if hint is Any or hint is inspect.Parameter.empty:
        return {}
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [schema_of(arg) for arg in args]
        if {} in parts:
            return {}
        if all(set(part) == {"type"} for part in parts):
            names = list(dict.fromkeys(part["type"] for part in parts))
            return {"type": names[0] if len(names) == 1 else names}
        return {"anyOf": [part for index, part in enumerate(parts) if part not in parts[:index]]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if hint is os.PathLike or origin is os.PathLike:
        return {"type": "string"}
    if hint in _MAPPINGS or origin in _MAPPINGS:
        values = schema_of(args[1]) if len(args) == 2 else {}
        return {"type": "object", **({"additionalProperties": values} if values else {})}
    if hint in _SEQUENCES or origin in _SEQUENCES:
        items = schema_of(args[0]) if args else {}  # tuple[str, ...] too
        return {"type": "array", **({"items": items} if items else {})}
    if hint is collections.abc.Callable or origin is collections.abc.Callable:
        return {"x-pyflow-python-only": True}
    return {}


def _admits_any_string(schema: dict[str, Any]) -> bool:
    kinds = schema.get("type")
    if schema == {} or kinds == "string" or (isinstance(kinds, list) and "string" in kinds):
        return "enum" not in schema
    return any(_admits_any_string(part) for part in schema.get("anyOf", []))


def _jsonable(value: Any) -> tuple[bool, Any]:
    value = list(value) if isinstance(value, tuple) else value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False, None
    return True, value


def config_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``cls``'s config: fields, required, types, enums, defaults, templates."""
    hints = constructor_hints(cls)
    choices = getattr(cls, "config_choices", {}) or {}
    shapes = getattr(cls, "config_shapes", {}) or {}
    raw = set(getattr(cls, "raw_fields", ()))
    secrets = {field.lstrip("_") for field in getattr(cls, "secret_fields", ())}
    properties: dict[str, Any] = {}
    required: list[str] = []
    python_only = False
    for parameter in config_parameters(cls):
        name = parameter.name
        hint = hints.get(name, parameter.annotation if not isinstance(parameter.annotation, str)
                         else inspect.Parameter.empty)
        # A callable, also an optional one (a test's fake clock): no definition can hold it.
        field = {"x-pyflow-python-only": True} if is_callable_hint(hint) else schema_of(hint)
        optional = parameter.default is not parameter.empty
        if name in choices:
            field = {"type": "string", "enum": list(choices[name])}
            if optional and parameter.default is None:
                field = {"type": ["string", "null"], "enum": [*choices[name], None]}
        if name in shapes and field.get("type") == "object":
            field = {**field, **shapes[name]}
        if field.get("x-pyflow-python-only"):
            python_only = python_only or not optional
        elif name in secrets:
            field = {"type": ["string", "null"] if optional else "string", "x-pyflow-secret": True,
                     "description": "exactly {{ secrets.NAME }}: the stored secret's value is used"}
        elif name in raw:
            field["x-pyflow-template"] = False  # rendered by the action itself (a loop's steps, per item)
        else:
            if not _admits_any_string(field):
                field = {"anyOf": [field, {"$ref": "#/$defs/template"}]}
            field["x-pyflow-template"] = True
        if optional:
            serialisable, default = _jsonable(parameter.default)
            if serialisable:
                field["default"] = default
        else:
            required.append(name)
        properties[name] = field
    schema: dict[str, Any] = {"$schema": DRAFT, "type": "object", "properties": properties,
                              "required": required, "additionalProperties": False,
                              "$defs": {"template": TEMPLATE}}
    if python_only:
        schema["x-pyflow-python-only"] = True
    return schema


def description(cls: type) -> str:
    """The first line of the class's own docstring."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return doc.splitlines()[0] if doc else ""


def describe_type(cls: type, origin: str) -> dict[str, Any]:
    """One row of GET /api/catalog: type, description, config_schema, origin (and an action's result keys)."""
    row = {"type": cls.type, "description": description(cls), "config_schema": config_schema(cls),  # type: ignore[attr-defined]
           "origin": origin}
    if hasattr(cls, "result_keys"):  # an action: what steps.<name>.<key> a later template may read
        row["results"] = list(cls.result_keys)
    return row


def step_keys_schema() -> dict[str, Any]:
    """The JSON Schema of the keys any step may carry beside name, type and config (DESIGN section 9)."""
    step_name = {"type": "string", "pattern": NAME_PATTERN.pattern}
    seconds = {"type": "number", "minimum": 0}
    return {"$schema": DRAFT, "type": "object", "properties": {
        "depends_on": {"type": "array", "items": step_name, "uniqueItems": True,
                       "description": "the steps that must finish first; [] starts at once (without the key: "
                                      "the step before)"},
        "when": {"type": "string", "description": "a {{ }} template: the step runs only when it renders true, "
                                                  "else it is skipped"},
        "retries": {"type": "integer", "minimum": 0, "description": "attempts after a failure (the workflow's "
                                                                    "max_retries when absent)"},
        "timeout": {**seconds, "description": "seconds one attempt may take"},
        "on_failure": {"anyOf": [{"enum": ["fail", "continue"]}, step_name],
                       "description": "fail the run, continue with the next steps, or run the named handler step"},
        "compensate": {"type": "object", "required": ["type"], "description": "a step run to undo this one when "
                       "the run fails or is cancelled: {type, config} (also name, retries, timeout)",
                       "properties": {"name": step_name, "type": {"type": "string"}, "config": {"type": "object"},
                                      "retries": {"type": "integer", "minimum": 0}, "timeout": seconds}},
        "cache": {"type": "object", "required": ["ttl"], "additionalProperties": False,
                  "description": "reuse the result of an earlier run with the same key for ttl seconds",
                  "properties": {"ttl": {"type": "number", "exclusiveMinimum": 0, "description": "seconds"},
                                 "key": {"type": "string", "description": "a {{ }} template; the step's rendered "
                                                                          "config when absent"}}},
        "limits": {"type": "object", "additionalProperties": False,
                   "description": "shell steps only: what each process of the command may use",
                   "properties": {"cpu_seconds": {"type": "integer", "minimum": 1},
                                  "memory_mb": {"type": "number", "exclusiveMinimum": 0},
                                  "output_kb": {"type": "number", "exclusiveMinimum": 0},
                                  "processes": {"type": "integer", "minimum": 1}}},
    }, "additionalProperties": False}
