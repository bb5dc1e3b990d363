"""Check data against a JSON Schema and list every problem in words a customer understands."""

from __future__ import annotations

import logging
import os
import re
from datetime import date
from typing import Any

from jsonschema.exceptions import SchemaError, ValidationError

from actions import patterns
from actions.base import ActionError, BaseAction, SettingError
from actions.pdf_templates import TemplateError, check_schema, load_templates, templates_folder
from actions.schemas import SchemaFailure, errors_of, make_validator

logger = logging.getLogger(__name__)

_FORMATS = {
    "date": "must be a date written as YYYY-MM-DD",
    "date-time": "must be a date and time written as YYYY-MM-DDTHH:MM:SS with a time zone (Z or +02:00)",
    "time": "must be a time written as HH:MM:SS with a time zone (Z or +02:00)",
    "email": "must be a valid e-mail address",
    "idn-email": "must be a valid e-mail address",
    "uri": "must be a full address with its scheme, such as https://example.org/",
    "uri-reference": "must be an address or a relative path",
    "uri-template": "must be an address template (RFC 6570)",
    "ipv4": "must be an IPv4 address",
    "ipv6": "must be an IPv6 address",
    "hostname": "must be a host name",
    "idn-hostname": "must be a host name",
    "uuid": "must be a UUID such as 123e4567-e89b-12d3-a456-426614174000",
    "json-pointer": "must be a JSON pointer such as /a/b",
    "relative-json-pointer": "must be a relative JSON pointer such as 1/a",
    "regex": "must be a regular expression",
}
# A date (or date and time) written the right way round may still not exist: 2021-02-30.
_DATE_SHAPES = {
    "date": (re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII), date.fromisoformat),
    "date-time": (re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII),
                  lambda text: date.fromisoformat(text[:10])),
}
_TYPES = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a group of fields",
    "array": "a list",
    "null": "empty",
}
_BOUNDS = {"minimum": ("at least", "more than"), "maximum": ("at most", "less than")}


class ValidateDataAction(BaseAction):
    """Validates data against a JSON Schema, given directly or as a PDF template's id."""

    type = "validate_data"
    result_keys = ("validation_result", "errors")
    path_fields = {"templates_dir": "path"}

    def __init__(
        self,
        name: str,
        data: Any,
        schema: dict | bool | str | None = None,
        template: str | None = None,
        templates_dir: str | os.PathLike | None = None,
        **options: Any,
    ):
        super().__init__(name, **options)
        if (schema is None) == (template is None):
            raise ValueError(f"action {name!r}: give exactly one of schema and template")
        if template is not None and not isinstance(template, str):
            raise SettingError("template", f"action {name!r}: template must be a template id, got {template!r}")
        self.data = data
        # A dict, or a "{{ ... }}" string that renders to one.
        self.schema = schema
        self.template = template
        self.templates_dir = templates_dir

    def execute(self, data_store: dict) -> dict:
        """Validate ``data``; problems are the result, only a bad schema or template is an error."""
        schema, where = self._schema()
        try:
            validator_class = check_schema(schema)
        except SchemaError as exc:
            raise ActionError(f"invalid JSON Schema in {where}: {_schema_error(exc)}", retryable=False)
        timeout = self.context.settings.get(patterns.SETTING, patterns.DEFAULT_TIMEOUT)
        validator = make_validator(schema, timeout=timeout, validator_class=validator_class)
        try:
            errors = describe_errors(errors_of(validator, self.data, timeout))
        except SchemaFailure as exc:
            raise ActionError(f"validating against {where}: {exc}", retryable=False) from None
        logger.info("%s: %d validation problem(s) against %s", self.name, len(errors), where)
        return {"validation_result": "failure" if errors else "success", "errors": errors}

    def _schema(self) -> tuple[Any, str]:
        """The schema to use and where it came from, for messages."""
        if self.schema is not None:
            if not isinstance(self.schema, (dict, bool)):
                raise ActionError(
                    f"schema must be a JSON Schema object, got {type(self.schema).__name__}", retryable=False
                )
            return self.schema, "the step's schema"
        try:
            templates = load_templates(templates_folder(self.templates_dir, self.context, self.type))
        except TemplateError as exc:
            raise ActionError(str(exc), retryable=False)
        template = templates.get(str(self.template).strip())
        if template is None:
            raise ActionError(
                f"unknown template {self.template!r}; known templates: {', '.join(templates)}", retryable=False
            )
        return template.schema, template.source.name


def describe_errors(errors: Any) -> list[dict[str, str]]:
    """Turn jsonschema errors into ``{"path", "message"}`` dicts: dotted paths, plain words, sorted by path."""
    described: list[tuple[tuple, str]] = []
    for error in errors:
        path = tuple(error.absolute_path)
        if error.validator == "required":
            # One error per missing property; the path names the property, not the object lacking it.
            missing = [name for name in error.validator_value if name not in error.instance]
            described.extend(((*path, name), "is required") for name in missing)
        else:
            described.append((path, _message(error)))
    unique = dict.fromkeys(described)  # "required" repeats per property; format and pattern may agree
    ordered = sorted(unique, key=lambda item: [(isinstance(part, str), part) for part in item[0]])
    return [{"path": ".".join(str(part) for part in path), "message": message} for path, message in ordered]


def _message(error: ValidationError) -> str:
    """A customer-friendly message for the common keywords, else jsonschema's own."""
    keyword, expected = error.validator, error.validator_value
    if keyword == "format":
        return _impossible(expected, error.instance) or _FORMATS.get(expected, f"must be a valid {expected}")
    if keyword == "pattern":
        # Templates pair a format with a pattern (dates: the format checks the calendar, the pattern the
        # digits); the format's words describe both.
        known_format = isinstance(error.schema, dict) and error.schema.get("format") in _FORMATS
        return _FORMATS[error.schema["format"]] if known_format else f"does not have the expected form ({expected})"
    if keyword == "enum":
        return "must be one of: " + ", ".join(str(option) for option in expected)
    if keyword == "const":
        return f"must be {expected}"
    if keyword == "type":
        kinds = [expected] if isinstance(expected, str) else list(expected)
        return "must be " + " or ".join(_TYPES.get(kind, kind) for kind in kinds)
    if keyword == "minLength":
        return "must not be empty" if expected == 1 else f"must be at least {expected} characters long"
    if keyword == "maxLength":
        return f"must be at most {expected} characters long"
    if keyword in _BOUNDS:
        inclusive, exclusive = _BOUNDS[keyword]
        # Draft 4 marks an exclusive bound with a boolean beside it.
        strict = isinstance(error.schema, dict) and error.schema.get(f"exclusive{keyword.capitalize()}") is True
        return f"must be {exclusive if strict else inclusive} {expected}"
    if keyword in ("exclusiveMinimum", "exclusiveMaximum"):
        return f"must be {_BOUNDS[keyword[9:].lower()][1]} {expected}"
    return " ".join(error.message.split())


def _impossible(format_name: str, instance: Any) -> str | None:
    """"2021-02-30 is not a valid date: day is out of range for month" for a well-written day that does not exist."""
    shape = _DATE_SHAPES.get(format_name)
    if shape is None or not isinstance(instance, str) or not shape[0].fullmatch(instance):
        return None
    try:
        shape[1](instance)
    except ValueError as exc:
        return f"{instance} is not a valid date: {exc}"
    return None


def _schema_error(exc: SchemaError) -> str:
    where = ".".join(str(part) for part in exc.absolute_path)
    return f"{' '.join(exc.message.split())}" + (f" (at {where})" if where else "")
