"""The transform action: reshape tabular data (CSV <-> JSON, filter, map, sort, group, aggregate, dedupe)."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from actions import patterns
from actions.base import ActionError, BaseAction, SettingError
from actions.condition import OPERATORS as CONDITION_OPERATORS
from actions.condition import as_number, compare
from actions.jsontext import JSONLimitError, load_json

logger = logging.getLogger(__name__)

# operation -> (required keys, optional keys); any other key given is a mistake worth naming.
KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "csv_to_json": (("data",), ("delimiter",)),
    "json_to_csv": (("data",), ("fields", "delimiter")),
    "filter": (("data", "where"), ()),
    "map": (("data", "fields"), ("keep",)),
    "sort": (("data", "by"), ("reverse",)),
    "group": (("data", "by"), ()),
    "aggregate": (("data", "metrics"), ("by",)),
    "dedupe": (("data",), ("by",)),
}
METRICS = ("count", "sum", "avg", "min", "max")
_MISSING = object()


class TransformAction(BaseAction):
    """Reshapes ``data`` with one ``operation``; returns ``{"data": ...}``.

    ``data`` is a list of objects (or JSON text of one); fields are named by
    dotted paths such as ``customer.email``. Operations and their keys:

    - ``csv_to_json``: data (CSV text with a header row), delimiter (",") -> list of objects, values as text.
    - ``json_to_csv``: data, fields (column list; default every key in first-seen order), delimiter -> CSV text.
    - ``filter``: data, where: ``{field, op, value}`` or a list of them (all must hold); op is one of eq, ne,
      gt, ge, lt, le, contains, matches, in, exists (default eq), compared as the condition action does.
    - ``map``: data, fields: ``{new_name: "dotted.path"}`` or ``{new_name: {value: constant}}``;
      keep (false): keep the other fields too.
    - ``sort``: data, by (a field or a list), reverse (false); numbers (also numeric text) sort numerically,
      missing values last.
    - ``group``: data, by (a field) -> ``{value: [items]}``.
    - ``aggregate``: data, metrics: ``{name: {op: count|sum|avg|min|max, field}}``, by (optional field)
      -> ``{name: value}``, or with ``by`` a list of ``{by: value, name: value, ...}`` in first-seen order.
    - ``dedupe``: data, by (a field or a list; default the whole item) -> the first item of each kind.
    """

    type = "transform"
    result_keys = ("data",)
    config_choices = {"operation": tuple(KEYS)}

    def __init__(
        self,
        name: str,
        *,
        operation: str,
        data: Any = None,
        delimiter: str | None = None,
        fields: list[str] | Mapping[str, Any] | None = None,
        where: Mapping[str, Any] | list[Mapping[str, Any]] | None = None,
        keep: bool | str | None = None,
        by: str | list[str] | None = None,
        reverse: bool | str | None = None,
        metrics: Mapping[str, Mapping[str, Any]] | None = None,
        **options: Any,
    ):
        super().__init__(name, **options)
        self.operation = operation
        self.data = data
        self.delimiter = delimiter
        self.fields = fields
        self.where = where
        self.keep = keep
        self.by = by
        self.reverse = reverse
        self.metrics = metrics
        if not (isinstance(operation, str) and "{{" in operation):
            problem = self._problem()
            if problem is not None:
                raise SettingError(problem[0], f"action {name!r}: {problem[1]}")

    def execute(self, data_store: dict) -> dict:
        """Apply the operation to ``data``."""
        operation = self._check_keys()
        handler: Callable[[], Any] = getattr(self, f"_{operation}")
        result = handler()
        logger.info("transform %s: %s done", self.name, operation)
        return {"data": result}

    def _check_keys(self) -> str:
        """The rendered operation; ActionError naming an unknown operation, a missing key or one that does not apply."""
        problem = self._problem(rendered=True)
        if problem is not None:
            raise ActionError(problem[1], retryable=False)
        return str(self.operation).strip().lower()

    def _problem(self, rendered: bool = False) -> tuple[str, str] | None:
        """The key that is wrong and why, as (key, message); None when the operation has the keys it takes."""
        operation = str(self.operation).strip().lower()
        if operation not in KEYS:
            return "operation", f"transform: operation must be one of {', '.join(KEYS)}, got {self.operation!r}"
        required, optional = KEYS[operation]
        for key in required:
            if getattr(self, key) is None:
                # Once rendered, a template that found nothing is the likelier cause.
                why = "is null (did its template find nothing?)" if rendered else "is required"
                return key, f"transform {operation}: {key!r} {why}"
        for key in ("delimiter", "fields", "where", "keep", "by", "reverse", "metrics"):
            if getattr(self, key) is not None and key not in required + optional:
                return key, (f"transform {operation}: key {key!r} does not apply (it takes "
                             f"{', '.join(required + optional)})")
        return None

    # -- operations ---------------------------------------------------------------
    def _csv_to_json(self) -> list[dict]:
        if not isinstance(self.data, str):
            raise ActionError(f"transform csv_to_json: data must be CSV text, got {type(self.data).__name__}",
                              retryable=False)
        reader = csv.DictReader(io.StringIO(self.data), delimiter=self._delimiter())
        try:
            # Cells beyond the header land under the key None, which JSON cannot hold.
            return [{key: value for key, value in row.items() if key is not None} for row in reader]
        except csv.Error as error:
            raise ActionError(f"transform csv_to_json: invalid CSV at line {reader.line_num}: {error}",
                              retryable=False)

    def _json_to_csv(self) -> str:
        rows = self._rows()
        if self.fields is None:
            fields = list(dict.fromkeys(key for row in rows for key in row))
        elif isinstance(self.fields, (list, tuple)) and all(isinstance(field, str) for field in self.fields):
            fields = list(self.fields)
        else:
            raise ActionError(f"transform json_to_csv: 'fields' must be a list of column names, got {self.fields!r}",
                              retryable=False)
        out = io.StringIO()
        writer = csv.writer(out, delimiter=self._delimiter(), lineterminator="\n")
        writer.writerow(fields)
        for row in rows:
            writer.writerow([_cell(_get(row, field)) for field in fields])
        return out.getvalue()

    def _filter(self) -> list:
        rules = self.where if isinstance(self.where, (list, tuple)) else [self.where]
        checked = [_rule(rule) for rule in rules]
        timeout = self.context.settings.get(patterns.SETTING, patterns.DEFAULT_TIMEOUT)
        try:
            with patterns.budget(timeout):
                return [item for item in self._items() if all(_holds(item, *rule, timeout) for rule in checked)]
        except patterns.PatternTimeout as error:
            raise ActionError(f"transform filter: {error}", retryable=False) from None

    def _map(self) -> list[dict]:
        if not isinstance(self.fields, Mapping) or not self.fields:
            raise ActionError(f"transform map: 'fields' must map new names to paths, got {self.fields!r}",
                              retryable=False)
        getters = {str(new): _getter(new, spec) for new, spec in self.fields.items()}
        keep = _flag(self.keep, "keep")
        mapped = []
        for row in self._rows():
            out = dict(row) if keep else {}
            out.update({new: getter(row) for new, getter in getters.items()})
            mapped.append(out)
        return mapped

    def _sort(self) -> list:
        paths = _paths(self.by, "by")
        reverse = _flag(self.reverse, "reverse")
        # Missing values go last either way: sort them apart rather than invert their key.
        present, missing = [], []
        for item in self._items():
            (present if all(_get(item, path) is not _MISSING for path in paths) else missing).append(item)
        present.sort(key=lambda item: [_sort_key(_get(item, path)) for path in paths], reverse=reverse)
        return present + missing

    def _group(self) -> dict[str, list]:
        path = _path(self.by, "by")
        groups: dict[str, list] = {}
        for item in self._items():
            groups.setdefault(_key(_get(item, path)), []).append(item)
        return groups

    def _aggregate(self) -> dict | list[dict]:
        metrics = _metrics(self.metrics)
        if self.by is None:
            return {name: _metric(name, op, field, self._items()) for name, (op, field) in metrics.items()}
        path = _path(self.by, "by")
        groups: dict[str, tuple[Any, list]] = {}
        for item in self._items():
            value = _get(item, path)
            groups.setdefault(_key(value), (None if value is _MISSING else value, []))[1].append(item)
        return [
            {path: value, **{name: _metric(name, op, field, items) for name, (op, field) in metrics.items()}}
            for value, items in groups.values()
        ]

    def _dedupe(self) -> list:
        paths = _paths(self.by, "by") if self.by is not None else None
        seen: set[str] = set()
        unique = []
        for item in self._items():
            parts = [_get(item, path) for path in paths] if paths else item
            signature = json.dumps(parts, sort_keys=True, default=_signature_part)
            if signature not in seen:
                seen.add(signature)
                unique.append(item)
        return unique

    # -- helpers ------------------------------------------------------------------
    def _items(self) -> list:
        """``data`` as a list; JSON text of a list (a file's content) is parsed."""
        data = self.data
        if isinstance(data, str):
            try:
                data = load_json(data)
            except JSONLimitError as error:
                raise ActionError(f"transform {self.operation}: data refused: {error}", retryable=False) from None
            except ValueError:
                raise ActionError(f"transform {self.operation}: data is text but not JSON", retryable=False)
        if not isinstance(data, (list, tuple)):
            raise ActionError(f"transform {self.operation}: data must be a list, got {type(data).__name__}",
                              retryable=False)
        return list(data)

    def _rows(self) -> list[Mapping]:
        """``data`` as a list of objects."""
        items = self._items()
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise ActionError(f"transform {self.operation}: data[{index}] must be an object, "
                                  f"got {type(item).__name__}", retryable=False)
        return items

    def _delimiter(self) -> str:
        delimiter = "," if self.delimiter is None else str(self.delimiter)
        if delimiter == "\\t":  # YAML authors write a tab as \t inside plain quotes
            delimiter = "\t"
        if len(delimiter) != 1:
            raise ActionError(f"transform {self.operation}: 'delimiter' must be one character, got {delimiter!r}",
                              retryable=False)
        return delimiter


def _get(item: Any, path: str) -> Any:
    """The value at a dotted path (list indexes as numbers), or _MISSING."""
    if isinstance(item, Mapping) and path in item:
        return item[path]
    current = item
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, (list, tuple)) and part.isdecimal() and int(part) < len(current):  # not '²'
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _signature_part(value: Any) -> Any:
    """Missing and null are one kind to dedupe; anything JSON cannot hold compares by its text."""
    return None if value is _MISSING else str(value)


def _path(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ActionError(f"transform: {key!r} must be a field name, got {value!r}", retryable=False)
    return value.strip()


def _paths(value: Any, key: str) -> list[str]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ActionError(f"transform: {key!r} must name at least one field", retryable=False)
    return [_path(item, key) for item in values]


def _flag(value: Any, key: str) -> bool:
    """A boolean option, which templates may have rendered as text."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ActionError(f"transform: {key!r} must be true or false, got {value!r}", retryable=False)


def _cell(value: Any) -> Any:
    """A CSV cell: nested values as JSON, null and missing as empty."""
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _key(value: Any) -> str:
    """A group's name: JSON object keys are text."""
    text = _cell(value)
    return text if isinstance(text, str) else str(text)


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers before text, so mixed columns still sort."""
    number = as_number(value)
    return (0, number) if number is not None else (1, _key(value))


def _rule(rule: Any) -> tuple[str, str, Any]:
    """(field, op, value) of one ``where`` rule; ActionError naming what is wrong."""
    if not isinstance(rule, Mapping) or "field" not in rule:
        raise ActionError(f"transform filter: 'where' must be {{field, op, value}} or a list of them, got {rule!r}",
                          retryable=False)
    unknown = set(rule) - {"field", "op", "value"}
    if unknown:
        raise ActionError(f"transform filter: unknown key {sorted(unknown)[0]!r} in 'where' (expected field, op, "
                          f"value)", retryable=False)
    op = str(rule.get("op", "eq")).strip().lower()
    if op not in CONDITION_OPERATORS:
        raise ActionError(f"transform filter: 'op' must be one of {', '.join(CONDITION_OPERATORS)}, got {op!r}",
                          retryable=False)
    value = rule.get("value", True if op == "exists" else None)
    if op == "matches":
        try:
            patterns.compile_pattern(str(value))
        except patterns.PatternError as error:
            raise ActionError(f"transform filter: {error}", retryable=False) from None
    return _path(rule["field"], "field"), op, value


def _holds(item: Any, path: str, op: str, value: Any, timeout: float = patterns.DEFAULT_TIMEOUT) -> bool:
    found = _get(item, path)
    if op == "exists":
        return compare("exists", None if found is _MISSING else found, None) == _flag(value, "value")
    if found is _MISSING:
        return op == "ne"
    try:
        return compare(op, found, value, regex_timeout=timeout)
    except ActionError:
        return False  # an item whose value cannot be ordered against ``value`` does not match


def _getter(new: Any, spec: Any) -> Callable[[Any], Any]:
    """How ``map`` computes one new field: a dotted path, or ``{value: constant}``."""
    if isinstance(spec, str) and spec.strip():
        path = spec.strip()
        return lambda row: None if (value := _get(row, path)) is _MISSING else value
    if isinstance(spec, Mapping) and set(spec) == {"value"}:
        return lambda row: spec["value"]
    raise ActionError(f"transform map: field {new!r} must be a dotted path or {{value: constant}}, got {spec!r}",
                      retryable=False)


def _metrics(metrics: Any) -> dict[str, tuple[str, str | None]]:
    """name -> (op, field) of ``aggregate``'s metrics."""
    if not isinstance(metrics, Mapping) or not metrics:
        raise ActionError(f"transform aggregate: 'metrics' must map names to {{op, field}}, got {metrics!r}",
                          retryable=False)
    checked = {}
    for name, spec in metrics.items():
        op = str(spec.get("op", "")).strip().lower() if isinstance(spec, Mapping) else ""
        if op not in METRICS:
            raise ActionError(f"transform aggregate: metric {name!r} needs op: {'|'.join(METRICS)}, got {spec!r}",
                              retryable=False)
        field = spec.get("field")
        if op != "count" and not field:
            raise ActionError(f"transform aggregate: metric {name!r} ({op}) needs a field", retryable=False)
        checked[str(name)] = (op, _path(field, "field") if field else None)
    return checked


def _metric(name: str, op: str, field: str | None, items: list) -> Any:
    """One metric over ``items``; null and missing values are skipped, text must be numeric."""
    values = items if field is None else [_get(item, field) for item in items]
    values = [value for value in values if value is not _MISSING and value is not None and value != ""]
    if op == "count":
        return len(values)
    numbers = []
    for value in values:
        number = as_number(value)
        if number is None:
            raise ActionError(f"transform aggregate: metric {name!r}: {field} value {value!r} is not a number",
                              retryable=False)
        numbers.append(int(number) if number.is_integer() else number)
    if op == "sum":
        return sum(numbers)
    if not numbers:
        return None
    if op == "avg":
        return sum(numbers) / len(numbers)
    return min(numbers) if op == "min" else max(numbers)
