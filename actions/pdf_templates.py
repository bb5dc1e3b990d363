"""PDF templates: one JSON file per form that says how to find its fields and how to check them."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from actions import schemas
from actions.base import ActionError, RunContext
from actions.paths import PathError, readable

logger = logging.getLogger(__name__)

# The shipped templates live in the repository's top-level pdf_templates/ folder.
DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "pdf_templates"

_PATH_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TemplateError(ValueError):
    """A template file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class TemplateField:
    """Where one output value comes from: an AcroForm field name and a printed label."""

    field: str
    label: str


@dataclass(frozen=True)
class PdfTemplate:
    """One form: the header text that identifies it, its fields and its JSON Schema."""

    id: str
    match: str
    fields: dict[str, TemplateField]
    schema: dict[str, Any]
    source: Path


def check_schema(schema: Any) -> type[Validator]:
    """Check a JSON Schema (actions/schemas.py: metaschema, patterns, no outside $ref); its validator class."""
    return schemas.check_schema(schema)


def templates_folder(value: Any, context: RunContext, action: str) -> Path | None:
    """A step's ``templates_dir``, which must be readable (inside WORKFLOW_FILES_ROOT); None: the shipped ones."""
    if value is None or not str(value).strip():
        return None
    try:
        return readable(context.settings, context.storage_path, value, "templates_dir", context.attachment_folders)
    except PathError as error:
        raise ActionError(f"{action}: {error}", retryable=False) from None


def load_templates(folder: str | Path | None = None) -> dict[str, PdfTemplate]:
    """Load and check every ``*.json`` template in ``folder`` (default: the shipped ones), keyed by id."""
    folder = Path(folder) if folder else DEFAULT_TEMPLATES_DIR
    if not folder.is_dir():
        raise TemplateError(f"PDF templates folder {folder} does not exist")
    # Keyed by every file's mtime and size, so an edited, added or removed file is reloaded.
    with os.scandir(folder) as entries:
        signature = tuple(
            sorted(
                (entry.name, entry.stat().st_mtime_ns, entry.stat().st_size)
                for entry in entries
                if entry.name.endswith(".json") and entry.is_file()
            )
        )
    if not signature:
        raise TemplateError(f"PDF templates folder {folder} holds no *.json template")
    return dict(_load(folder.resolve(), signature))


@lru_cache(maxsize=16)
def _load(folder: Path, signature: tuple) -> tuple[tuple[str, PdfTemplate], ...]:
    templates: dict[str, PdfTemplate] = {}
    for name, _, _ in signature:
        template = _parse(folder / name)
        if template.id in templates:
            raise TemplateError(
                f"{template.source}: key 'id': {template.id!r} is already used by {templates[template.id].source.name}"
            )
        templates[template.id] = template
    logger.debug("loaded PDF templates %s from %s", ", ".join(templates), folder)
    return tuple(templates.items())


def _parse(path: Path) -> PdfTemplate:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TemplateError(f"{path}: cannot read template: {exc}")
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: a template must be a JSON object, got {type(data).__name__}")

    def text(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise TemplateError(f"{path}: key {key!r} must be a non-empty string, got {value!r}")
        return value

    template_id = text("id", data.get("id"))
    match = text("match", data.get("match"))
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, dict) or not raw_fields:
        raise TemplateError(f"{path}: key 'fields' must be a non-empty object of output path -> field and label")
    fields = {}
    for out_path, spec in raw_fields.items():
        key = f"fields.{out_path}"
        if not all(_PATH_SEGMENT.match(segment) for segment in out_path.split(".")):
            raise TemplateError(f"{path}: key {key!r}: an output path is dotted identifiers, like personalInfo.email")
        if not isinstance(spec, dict):
            raise TemplateError(f"{path}: key {key!r} must be an object with 'field' and 'label'")
        fields[out_path] = TemplateField(
            field=text(f"{key}.field", spec.get("field")), label=text(f"{key}.label", spec.get("label"))
        )
    labels = [" ".join(spec.label.split()).casefold() for spec in fields.values()]
    if len(set(labels)) != len(labels):
        raise TemplateError(
            f"{path}: key 'fields': two fields share a label, so the printed text cannot tell them apart"
        )
    for out_path in fields:
        # "a" and "a.b" cannot both be filled: "a" would be a value and an object at once.
        if any(other.startswith(out_path + ".") for other in fields):
            raise TemplateError(f"{path}: key 'fields.{out_path}' is also the parent of another output path")

    schema = data.get("schema")
    if not isinstance(schema, dict):
        raise TemplateError(f"{path}: key 'schema' must be a JSON Schema object")
    try:
        check_schema(schema)
    except SchemaError as exc:
        where = ".".join(str(part) for part in exc.absolute_path)
        raise TemplateError(f"{path}: key 'schema{'.' + where if where else ''}': {exc.message}")
    return PdfTemplate(template_id, match, fields, schema, path)
