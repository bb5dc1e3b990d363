"""The condition action: compare two values, so later steps can branch on the result."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from actions import patterns
from actions.base import ActionError, BaseAction, SettingError

logger = logging.getLogger(__name__)

OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le", "contains", "matches", "in", "exists")


class ConditionAction(BaseAction):
    """Evaluates ``condition: {type, left, right}`` and returns ``{"result": bool, "value"}``.

    Types: eq, ne, gt, ge, lt, le, contains, matches (``re.search(right, left)``, at most
    WORKFLOW_REGEX_TIMEOUT seconds),
    in (left is in right), exists (left is neither null nor ""; right is ignored).
    Both sides compare as numbers when both look like numbers, since templates
    often render numbers as text ("10" > "9"). ``value`` is ``true_value`` or
    ``false_value``. A later step branches with ``when: "{{ steps.<name>.result }}"``.
    """

    type = "condition"
    result_keys = ("result", "value")
    config_shapes = {"condition": {"required": ["type"], "properties": {
        "type": {"enum": list(OPERATORS), "description": "how left and right are compared"},
        "left": {"description": "a value or a template"}, "right": {"description": "a value or a template"}}}}

    def __init__(self, name: str, *, condition: Mapping[str, Any], true_value: Any = True,
                 false_value: Any = False, **options: Any):
        super().__init__(name, **options)
        try:
            # A template (the whole condition, or its type) is checked once rendered, in execute.
            if not _is_template(condition):
                _check(condition, defer_templates=True)
        except ActionError as error:
            raise SettingError("condition", f"action {name!r}: {error}") from None
        self.condition = condition
        self.true_value = true_value
        self.false_value = false_value

    def execute(self, data_store: dict) -> dict:
        """Compare; the outcome is the result, never a failure."""
        op = _check(self.condition)
        timeout = self.context.settings.get(patterns.SETTING, patterns.DEFAULT_TIMEOUT)
        try:
            result = compare(op, self.condition.get("left"), self.condition.get("right"), regex_timeout=timeout)
        except patterns.PatternTimeout as error:
            raise ActionError(f"condition matches: {error}", retryable=False) from None
        logger.info("condition %s: %s -> %s", self.name, op, result)
        return {"result": result, "value": self.true_value if result else self.false_value}


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _check(condition: Any, *, defer_templates: bool = False) -> str:
    """The operator of a well-formed condition; ActionError naming what is wrong."""
    if not isinstance(condition, Mapping):
        raise ActionError(f"condition must be a mapping with type, left and right, got {condition!r}",
                          retryable=False)
    unknown = set(condition) - {"type", "left", "right"}
    if unknown:
        raise ActionError(f"condition: unknown key {sorted(unknown)[0]!r} (expected type, left, right)",
                          retryable=False)
    op = str(condition.get("type", "")).strip().lower()
    if defer_templates and _is_template(op):
        return op
    if op not in OPERATORS:
        raise ActionError(f"condition: type must be one of {', '.join(OPERATORS)}, got {condition.get('type')!r}",
                          retryable=False)
    return op


def as_number(value: Any) -> float | None:
    """``value`` as a finite float when it is a number or numeric text, else None (booleans are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    # "nan" and "inf" parse as floats but are words to a user.
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    """The text a template would have rendered: true/false for booleans, "" for null."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def equal(left: Any, right: Any) -> bool:
    """Equality as a user means it: numerically for numbers, as text when one side is text."""
    a, b = as_number(left), as_number(right)
    if a is not None and b is not None:
        return a == b
    if isinstance(left, str) or isinstance(right, str):
        return _text(left) == _text(right)
    return left == right


def compare(op: str, left: Any, right: Any, *, regex_timeout: float = patterns.DEFAULT_TIMEOUT) -> bool:
    """Apply operator ``op`` (one of OPERATORS) to ``left`` and ``right``; ``matches`` may raise PatternTimeout."""
    if op == "eq":
        return equal(left, right)
    if op == "ne":
        return not equal(left, right)
    if op in ("gt", "ge", "lt", "le"):
        a, b = as_number(left), as_number(right)
        if a is None or b is None:
            if not (isinstance(left, str) and isinstance(right, str)):
                raise ActionError(f"condition: cannot compare {left!r} {op} {right!r}: not two numbers or two texts",
                                  retryable=False)
            a, b = left, right  # ISO dates and times order correctly as text
        return {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op]
    if op == "contains":
        return _contains(left, right)
    if op == "in":
        return _contains(right, left)
    if op == "matches":
        try:
            return patterns.search(_text(right), _text(left), regex_timeout) is not None
        except patterns.PatternError as error:
            raise ActionError(f"condition: {error}", retryable=False) from None
    if op == "exists":
        return left is not None and left != ""
    raise ActionError(f"condition: unknown type {op!r}", retryable=False)


def _contains(container: Any, item: Any) -> bool:
    """Substring for text, membership for lists, key for mappings; nothing is in null."""
    if container is None:
        return False
    if isinstance(container, str):
        return _text(item) in container
    if isinstance(container, Mapping):
        return _text(item) in {_text(key) for key in container}
    if isinstance(container, (list, tuple, set)):
        return any(equal(element, item) for element in container)
    raise ActionError(f"condition: cannot look inside {container!r} (a text, list or mapping is needed)",
                      retryable=False)
