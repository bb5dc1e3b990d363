"""The "run now" form: fields built from a workflow's inputs_schema, and the inputs read back from a post."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import MultiDict

from actions.jsontext import JSONLimitError, load_json

logger = logging.getLogger(__name__)

# The inputs property that carries uploaded files (DESIGN.md section 4: trigger_data["attachments"]).
ATTACHMENTS = "attachments"
# Step types that read the run's attachments: a workflow starting with one takes files.
FILE_STEP_TYPES = frozenset({"extract_pdf_data", "pdf_text"})
# The textarea used when a workflow has no schema with properties.
RAW_INPUTS = "inputs_json"


@dataclass
class Field:
    """One form field: what the template renders and how the posted text is read back."""

    name: str
    kind: str  # text, number, integer, boolean, enum, json
    label: str
    required: bool = False
    help: str = ""
    choices: list[Any] = field(default_factory=list)
    default: Any = None
    value: str = ""
    error: str = ""


@dataclass
class RunForm:
    """The fields of a workflow's run form, its file field, and the problems of the last post."""

    fields: list[Field]
    takes_files: bool
    raw_json: bool  # no schema properties: one JSON textarea for all inputs
    raw_value: str = "{}"
    errors: list[str] = field(default_factory=list)


def takes_files(summary: dict) -> bool:
    """True when the workflow reads uploads: its inputs_schema has ``attachments``, or it starts by reading a PDF."""
    properties = (summary.get("inputs_schema") or {}).get("properties") or {}
    actions = summary.get("actions") or []
    return ATTACHMENTS in properties or bool(actions and actions[0].get("type") in FILE_STEP_TYPES)


def _kind(schema: dict) -> str:
    if "enum" in schema:
        return "enum"
    kind = schema.get("type")
    if kind in ("string", "number", "integer", "boolean"):
        return "text" if kind == "string" else kind
    return "json"


def _help(schema: dict) -> str:
    parts = [schema.get("description") or ""]
    if schema.get("format"):
        parts.append(f"format: {schema['format']}")
    return " · ".join(part for part in parts if part)


def build_form(summary: dict) -> RunForm:
    """The empty form of a workflow (defaults filled in)."""
    schema = summary.get("inputs_schema") or {}
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = set(schema.get("required") or [])
    fields = []
    for name, prop in properties.items():
        if name == ATTACHMENTS or not isinstance(prop, dict):
            continue  # uploads arrive through the file field
        kind = _kind(prop)
        default = prop.get("default")
        value = "" if default is None else (json.dumps(default) if kind == "json" else str(default))
        if kind == "boolean":
            value = "on" if default else ""
        fields.append(Field(name=name, kind=kind, label=prop.get("title") or name, required=name in required,
                            help=_help(prop), choices=list(prop.get("enum") or []), default=default, value=value))
    return RunForm(fields=fields, takes_files=takes_files(summary), raw_json=not properties)


def _convert(item: Field, raw: str) -> tuple[bool, Any]:
    """(present, value) of one posted field; ValueError with a message for the user."""
    if item.kind == "boolean":
        return True, raw == "on"
    if raw.strip() == "":
        return False, None  # an empty box means "not given", so optional fields stay absent
    if item.kind == "integer":
        try:
            return True, int(raw.strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
    if item.kind == "number":
        try:
            number = float(raw.strip())
        except ValueError:
            raise ValueError("must be a number") from None
        return True, int(number) if number.is_integer() and "." not in raw and "e" not in raw.lower() else number
    if item.kind == "enum":
        for choice in item.choices:
            if _choice_value(choice) == raw:
                return True, choice
        raise ValueError(f"must be one of {', '.join(_choice_value(choice) for choice in item.choices)}")
    if item.kind == "json":
        try:
            return True, load_json(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"is not valid JSON: {error.msg} at column {error.colno}") from None
        except JSONLimitError as error:
            raise ValueError(f"is refused: {error}") from None
    return True, raw


def _choice_value(choice: Any) -> str:
    return choice if isinstance(choice, str) else json.dumps(choice)


def read_form(form: RunForm, posted: MultiDict) -> dict[str, Any]:
    """The inputs of a post; problems are recorded on the fields and in ``form.errors``."""
    inputs: dict[str, Any] = {}
    if form.raw_json:
        form.raw_value = posted.get(RAW_INPUTS, "")
        if form.raw_value.strip():
            try:
                parsed = load_json(form.raw_value)
            except json.JSONDecodeError as error:
                where = f"line {error.lineno} column {error.colno}"
                form.errors.append(f"Inputs are not valid JSON: {error.msg} at {where}")
                return {}
            except JSONLimitError as error:
                form.errors.append(f"Inputs are refused: {error}")
                return {}
            if not isinstance(parsed, dict):
                form.errors.append(f"Inputs must be a JSON object, got {type(parsed).__name__}")
                return {}
            inputs.update(parsed)
        return inputs
    for item in form.fields:
        raw = posted.get(item.name, "")
        item.value = raw
        try:
            present, value = _convert(item, raw)
        except ValueError as error:
            item.error = str(error)
            form.errors.append(f"{item.label}: {error}")
            continue
        if present:
            inputs[item.name] = value
        elif item.required:
            item.error = "is required"
            form.errors.append(f"{item.label}: is required")
    return inputs


def attach_errors(form: RunForm, details: Any) -> None:
    """Put the runtime's schema problems (``[{"path", "message"}]``) next to their fields."""
    by_name = {item.name: item for item in form.fields}
    for problem in details if isinstance(details, list) else []:
        path = str(problem.get("path", ""))
        message = str(problem.get("message", ""))
        item = by_name.get(path.split(".")[0])
        if item is not None and not item.error:
            item.error = message
        form.errors.append(f"{path}: {message}" if path and path != "inputs" else message)
