"""JSON Schema validators that cannot stall or reach out: bounded patterns, no remote or file ``$ref``.

Schemas come from posted definitions and inputs. jsonschema runs ``pattern`` and
``patternProperties`` with Python's ``re`` (no time limit) and, by default, fetches
an unknown ``$ref`` over the network or from a ``file://`` URL. Every schema in
PyFlow is checked and compiled here instead.

jsonschema passes any ``format`` it has no checker for, so ``format: uri`` would let
"not a uri" through. The light checkers in requirements.txt cover the common formats;
a schema naming any other format is refused when it loads, never silently left unchecked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urldefrag, urljoin

from jsonschema import FormatChecker, ValidationError, validators
from jsonschema._keywords import additionalProperties as _additional_properties
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import Draft202012Validator, validator_for
from jsonschema_specifications import REGISTRY as SPECIFICATIONS
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable

from actions.patterns import DEFAULT_TIMEOUT, PatternError, PatternTimeout, budget, compile_pattern, search

__all__ = ["SchemaError", "SchemaFailure", "Unresolvable", "check_schema", "errors_of", "make_validator", "message_of"]


class SchemaFailure(ValueError):
    """Validation could not finish (a pattern past its time, a $ref loop or one left unresolved); says which."""


def _refuse(uri: str) -> Any:
    """A ``$ref`` outside the schema itself: PyFlow never fetches one."""
    raise NoSuchResource(ref=uri)


# Retrieves nothing: a $ref is resolved inside its own schema (and the drafts' metaschemas) or refused.
NO_RETRIEVAL: Registry = Registry(retrieve=_refuse)


def check_schema(schema: Any) -> type[Validator]:
    """Check a JSON Schema and return its draft's validator class; SchemaError naming the problem.

    A schema without ``$schema`` is taken as draft 2020-12. Besides the draft's
    metaschema: every pattern must compile, every ``$ref`` must point inside
    the schema, and every ``format`` must be one the draft's format checker checks.
    """
    if not isinstance(schema, (dict, bool)):  # validator_for would raise TypeError on a number or a list
        raise SchemaError(f"a JSON Schema is an object or a boolean, got {type(schema).__name__}")
    validator_class = validator_for(schema, default=None)
    if validator_class is None:
        # jsonschema would silently fall back to the latest draft for a misspelt $schema; say so instead.
        if isinstance(schema, dict) and "$schema" in schema:
            raise SchemaError(f"$schema {schema['$schema']!r} names no JSON Schema draft known to jsonschema")
        validator_class = Draft202012Validator
    validator_class.check_schema(schema)
    ids: set[str] = {""}
    refs: list[tuple[list[Any], str, str]] = []
    formats: list[tuple[list[Any], str]] = []
    _walk(schema, "", [], ids, refs, formats)
    checked = validator_class.FORMAT_CHECKER.checkers
    for path, name in formats:
        if name not in checked:
            raise SchemaError(f"format {name!r} is not checked, so any text would pass; formats checked "
                              f"({_draft(validator_class)}): {', '.join(sorted(checked))}", path=path)
    for path, base, ref in refs:
        target = urldefrag(urljoin(base, ref)).url
        if target not in ids and not _is_metaschema(target):
            raise SchemaError(f"$ref {ref!r} points outside the schema; PyFlow never fetches a remote or file "
                              f"$ref (put the definition under $defs)", path=path)
    return validator_class


def _draft(validator_class: type[Validator]) -> str:
    """ "draft 2020-12" for Draft202012Validator, for messages."""
    digits = validator_class.__name__.removeprefix("Draft").removesuffix("Validator")
    return f"draft {digits[:4]}-{digits[4:]}" if len(digits) == 6 else f"draft {digits}"


def _is_metaschema(uri: str) -> bool:
    try:
        SPECIFICATIONS.contents(uri)
    except LookupError:
        return False
    return True


def _walk(node: Any, base: str, path: list[Any], ids: set[str], refs: list, formats: list) -> None:
    """Collect the schema's $id URIs, its $refs (with their base URI) and formats, and check its patterns."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _walk(item, base, [*path, index], ids, refs, formats)
        return
    if not isinstance(node, Mapping):
        return
    if isinstance(node.get("$id"), str):
        base = urldefrag(urljoin(base, node["$id"])).url
        ids.add(base)
    for keyword in ("$ref", "$dynamicRef"):
        if isinstance(node.get(keyword), str):
            refs.append(([*path, keyword], base, node[keyword]))
    if isinstance(node.get("format"), str):
        formats.append(([*path, "format"], node["format"]))
    patterns = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
    if isinstance(node.get("patternProperties"), Mapping):
        patterns += list(node["patternProperties"])
        if "unevaluatedProperties" in node:
            # jsonschema evaluates these patterns with re, outside our time limit.
            raise SchemaError("patternProperties beside unevaluatedProperties is not supported",
                              path=[*path, "unevaluatedProperties"])
    for pattern in patterns:
        try:
            compile_pattern(pattern)
        except PatternError as error:
            raise SchemaError(str(error), path=[*path, "pattern"]) from None
    for key, value in node.items():
        if key not in ("const", "enum", "default", "examples"):  # data, not schemas
            _walk(value, base, [*path, key], ids, refs, formats)


def _canonical(value: Any) -> Any:
    """A hashable key equal for JSON-equal values: true is not 1, 1 is 1.0, key order does not matter."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, Mapping):
        return ("object", frozenset((key, _canonical(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return ("array", tuple(_canonical(item) for item in value))
    return ("other", repr(value))


@lru_cache(maxsize=64)
def _bounded(base: type[Validator], timeout: float) -> type[Validator]:
    """``base`` whose pattern keywords run with the time limit."""

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
        if validator.is_type(instance, "string") and not search(patrn, instance, timeout):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator: Any, properties: Any, instance: Any, schema: Any) -> Iterator:
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in properties.items():
            for key, value in instance.items():
                if search(patrn, key, timeout):
                    yield from validator.descend(value, subschema, path=key, schema_path=patrn)

    def additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator:
        patterns = schema.get("patternProperties") or {}
        if not patterns or not validator.is_type(instance, "object"):
            yield from _additional_properties(validator, allowed, instance, schema)
            return
        known = schema.get("properties", {})
        extras = [key for key in instance
                  if key not in known and not any(search(patrn, key, timeout) for patrn in patterns)]
        if validator.is_type(allowed, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], allowed, path=extra)
        elif not allowed and extras:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            listed = ", ".join(repr(each) for each in sorted(patterns))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {listed}")

    def unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
        # jsonschema compares unhashable items pairwise: 8,000 objects took 54 s. One canonical key each.
        if not unique or not validator.is_type(instance, "array"):
            return
        seen: set[Any] = set()
        for index, item in enumerate(instance):
            key = _canonical(item)
            if key in seen:
                # Naming the item, not the whole list (jsonschema repeats the list: 300 KB for 20,000 rows).
                shown = repr(item) if len(repr(item)) <= 80 else repr(item)[:77] + "..."
                yield ValidationError(f"has non-unique elements: item {index} ({shown}) repeats an earlier one")
                return
            seen.add(key)

    keywords = {"pattern": pattern, "patternProperties": pattern_properties,
                "additionalProperties": additional_properties, "uniqueItems": unique_items}
    return validators.extend(base, {key: keywords[key] for key in keywords if key in base.VALIDATORS})


def make_validator(schema: Any, *, timeout: float = DEFAULT_TIMEOUT, format_checker: FormatChecker | None = None,
                   validator_class: type[Validator] | None = None) -> Validator:
    """A validator for a checked ``schema``: patterns bounded by ``timeout`` s, no $ref retrieved.

    Validating raises PatternTimeout when a pattern runs too long, Unresolvable for a $ref it refused.
    """
    base = validator_class or validator_for(schema, default=Draft202012Validator)
    cls = _bounded(base, float(timeout))
    checker = base.FORMAT_CHECKER if format_checker is None else format_checker
    return cls(schema, registry=NO_RETRIEVAL, format_checker=checker)


def errors_of(validator: Validator, instance: Any, timeout: float = DEFAULT_TIMEOUT) -> list[ValidationError]:
    """Every error of ``instance``, all patterns sharing ``timeout`` seconds; SchemaFailure when it cannot finish."""
    try:
        with budget(timeout):
            return list(validator.iter_errors(instance))
    except PatternTimeout as error:
        raise SchemaFailure(str(error)) from None
    except Unresolvable as error:
        raise SchemaFailure(f"cannot resolve $ref {error.ref!r}") from None
    except RecursionError:
        # {"$ref": "#"} refers to itself without going into the data: jsonschema recurses for ever.
        raise SchemaFailure("the schema's $refs lead back to themselves without end") from None


def message_of(error: ValidationError) -> str:
    """jsonschema's message, with the reason a format check gave ("... is not a 'date': day is out of range")."""
    if error.validator == "format" and error.cause is not None and str(error.cause):
        return f"{error.message}: {' '.join(str(error.cause).split())}"
    return error.message
