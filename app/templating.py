"""``{{ }}`` rendering of action and trigger settings in a Jinja2 sandbox."""

from __future__ import annotations

import copy
import re
import weakref
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# A value that is exactly one expression keeps the expression's native type.
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)
# Attributes that configure the engine, not the action's work.
_NOT_RENDERED = frozenset({"name", "context", "depends_on", "on_failure"})


class RenderError(ValueError):
    """A template could not be rendered; the message names the field."""


def needs_rendering(value: Any) -> bool:
    """True when ``value`` holds a template string anywhere inside it."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(needs_rendering(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(needs_rendering(item) for item in value)
    return False


def is_truthy(value: Any) -> bool:
    """Truth of a rendered ``when``: the strings "false", "0", "no", "none" are false."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "null")
    return bool(value)


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, immutable (a template cannot append to a step's result), keys before attributes.

    Jinja looks up ``steps.items`` as the dict method ``items`` before the key
    ``items``; for step names and data keys the key is what a user means.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and isinstance(attribute, str):
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


class Renderer:
    """Renders templates with a sandboxed Jinja2 environment and caches compiled ones."""

    def __init__(self) -> None:
        # Chainable: `trigger_data.url or settings.UPTIME_URL` works when url is absent.
        self.env = _Environment(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=True)
        self._compile_template = lru_cache(maxsize=2048)(self.env.from_string)
        self._compile_expression = lru_cache(maxsize=2048)(self._expression)
        self._template_fields: weakref.WeakKeyDictionary[object, tuple[str, ...]] = weakref.WeakKeyDictionary()

    def _expression(self, source: str):
        return self.env.compile_expression(source, undefined_to_none=True)

    def render_string(self, text: str, context: Mapping[str, Any]) -> Any:
        """Render one string; a single ``{{ expr }}`` returns the expression's value."""
        if "{{" not in text and "{%" not in text:
            return text
        match = _SINGLE_EXPRESSION.match(text)
        if match:
            value = self._compile_expression(match.group("expr").strip())(**context)
            return None if isinstance(value, ChainableUndefined) else value
        return self._compile_template(text).render(context)

    def render_value(self, value: Any, context: Mapping[str, Any], where: str = "value") -> Any:
        """Render every template string inside ``value`` (dicts and lists too)."""
        if isinstance(value, str):
            try:
                return self.render_string(value, context)
            except TemplateError as error:
                raise RenderError(f"{where}: template error: {error}") from None
            except Exception as error:  # an expression may raise anything (1/0, bad attribute)
                raise RenderError(f"{where}: template failed: {type(error).__name__}: {error}") from None
        if isinstance(value, Mapping):
            return {key: self.render_value(item, context, f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            rendered = [self.render_value(item, context, f"{where}[{index}]") for index, item in enumerate(value)]
            return rendered if isinstance(value, list) else tuple(rendered)
        return value

    def template_fields(self, obj: object) -> tuple[str, ...]:
        """Names of ``obj``'s public attributes that hold templates (computed once per object)."""
        fields = self._template_fields.get(obj)
        if fields is None:
            raw = getattr(obj, "raw_fields", ())
            fields = tuple(
                key
                for key, value in vars(obj).items()
                if not key.startswith("_") and key not in _NOT_RENDERED and key not in raw and needs_rendering(value)
            )
            self._template_fields[obj] = fields
        return fields

    def render_object(self, obj: Any, context: Mapping[str, Any], label: str) -> Any:
        """A shallow copy of ``obj`` whose template attributes are rendered.

        The original is never changed, so one action instance serves concurrent runs.
        """
        if hasattr(obj, "__dict__") and not hasattr(obj, "__copy__"):
            # What copy.copy does for a plain object, at a tenth of its cost: this runs for every step.
            clone = object.__new__(type(obj))
            clone.__dict__.update(obj.__dict__)
        else:
            clone = copy.copy(obj)
        for field in self.template_fields(obj):
            setattr(clone, field, self.render_value(getattr(obj, field), context, f"{label}: field {field!r}"))
        return clone
