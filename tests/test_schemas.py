"""actions/schemas.py: JSON Schemas whose patterns have a time limit and whose $refs are never fetched."""

from __future__ import annotations

import pytest
from jsonschema.exceptions import SchemaError

from actions.patterns import PatternTimeout, budget
from actions.schemas import SchemaFailure, check_schema, errors_of, make_validator

SLOW = r"^(a|a)*$"


@pytest.mark.parametrize(("schema", "path", "words"), [
    ({"$ref": "https://example.org/s.json"}, ["$ref"], "$ref 'https://example.org/s.json' points outside"),
    ({"properties": {"a": {"$ref": "file:///etc/passwd"}}}, ["properties", "a", "$ref"], "never fetches"),
    ({"$id": "https://example.org/root.json", "properties": {"a": {"$ref": "other.json"}}},
     ["properties", "a", "$ref"], "'other.json' points outside"),
    ({"patternProperties": {"^a": {}}, "unevaluatedProperties": False}, ["unevaluatedProperties"],
     "patternProperties beside unevaluatedProperties is not supported"),
])
def test_a_schema_that_would_reach_out_or_run_unbounded_is_refused(schema, path, words):
    with pytest.raises(SchemaError) as caught:
        check_schema(schema)
    assert words in caught.value.message
    assert list(caught.value.path) == path


@pytest.mark.parametrize("schema", [0, 1.5, "string", ["a", "list"], None])
def test_a_schema_that_is_neither_an_object_nor_a_boolean_is_refused(schema):
    with pytest.raises(SchemaError, match="a JSON Schema is an object or a boolean, got"):
        check_schema(schema)


@pytest.mark.parametrize("schema", [
    {"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}},
    {"$id": "https://example.org/root.json", "$defs": {"n": {"type": "integer"}},
     "properties": {"a": {"$ref": "#/$defs/n"}}},
    {"$defs": {"n": {"$id": "urn:n", "type": "integer"}}, "properties": {"a": {"$ref": "urn:n"}}},
    {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"n": {"type": "integer"}},
     "properties": {"a": {"$ref": "#/definitions/n"}}},
])
def test_refs_inside_the_schema_resolve(schema):
    check_schema(schema)
    assert [error.message for error in make_validator(schema).iter_errors({"a": "x"})] == [
        "'x' is not of type 'integer'"]


@pytest.mark.parametrize(("schema", "instance"), [
    ({"type": "string", "pattern": SLOW}, "a" * 30 + "!"),
    ({"type": "object", "patternProperties": {SLOW: {}}}, {"a" * 30 + "!": 1}),
    ({"type": "object", "patternProperties": {SLOW: {}}, "additionalProperties": False}, {"a" * 30 + "!": 1}),
])
def test_a_runaway_pattern_stops_at_the_timeout(schema, instance):
    with pytest.raises(PatternTimeout, match=r"did not finish within 0.2 s .*\(WORKFLOW_REGEX_TIMEOUT\)"):
        list(make_validator(schema, timeout=0.2).iter_errors(instance))


def test_bounded_keywords_answer_as_jsonschema_does():
    schema = {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[a-z]+$"}},
              "patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": False}
    validator = make_validator(schema)
    assert sorted(error.message for error in validator.iter_errors({"id": "A1", "x-n": "s", "other": 1})) == [
        "'A1' does not match '^[a-z]+$'", "'other' does not match any of the regexes: '^x-'",
        "'s' is not of type 'integer'"]
    assert list(validator.iter_errors({"id": "abc", "x-n": 1})) == []


def test_the_time_limit_is_shared_by_every_pattern_of_one_validation():
    # Each search alone stays well under the limit; a hundred thousand of them would not.
    schema = {"type": "array", "items": {"type": "string", "pattern": SLOW}}
    validator = make_validator(schema, timeout=0.5)
    text = "a" * 18 + "!"  # a few milliseconds each
    with pytest.raises(PatternTimeout, match="did not finish within 0.5 s"), budget(0.5):
        list(validator.iter_errors([text] * 100000))


@pytest.mark.parametrize(("items", "unique"), [
    ([{"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}], False),  # key order does not matter
    ([1, 1.0], False),
    ([1, True], True),  # true is not 1 in JSON Schema
    ([0, False, None, ""], True),
    ([[1, 2], [2, 1]], True),
    ([{"a": [1]}, {"a": [1.0]}], False),
])
def test_unique_items_as_json_schema_means_it(items, unique):
    assert make_validator({"uniqueItems": True}).is_valid(items) is unique


def test_unique_items_of_many_objects_is_linear():
    # jsonschema compared 8,000 objects pairwise (54 s on the request thread); pairwise, 100,000 would take hours,
    # so a budget far above what a linear check needs (well under a second) still tells them apart on a busy machine.
    errors = errors_of(make_validator({"uniqueItems": True}), [{"a": index} for index in range(100000)], 30.0)
    assert errors == []


@pytest.mark.parametrize("schema", [{"$ref": "#"}, {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}])
def test_a_ref_loop_is_a_schema_failure_not_a_recursion_error(schema):
    with pytest.raises(SchemaFailure, match=r"the schema's \$refs lead back to themselves without end"):
        errors_of(make_validator(schema), {"x": 1})


@pytest.mark.parametrize(("schema", "path", "name"), [
    ({"properties": {"a": {"format": "duration"}}}, ["properties", "a", "format"], "duration"),
    ({"items": {"anyOf": [{"format": "iri"}]}}, ["items", "anyOf", 0, "format"], "iri"),
    ({"$schema": "http://json-schema.org/draft-07/schema#", "format": "uuid"}, ["format"], "uuid"),
])
def test_a_format_left_unchecked_is_refused_when_the_schema_loads(schema, path, name):
    with pytest.raises(SchemaError) as caught:
        check_schema(schema)
    assert caught.value.message.startswith(f"format {name!r} is not checked, so any text would pass")
    assert list(caught.value.path) == path


def test_format_words_inside_data_are_not_formats():
    check_schema({"properties": {"format": {"type": "string"}}, "default": {"format": "anything"},
                  "enum": [{"format": "x"}, None]})


@pytest.mark.parametrize(("name", "good", "bad"), [
    ("uri", "https://example.org/path?q=1", "not a uri"),
    ("uri-reference", "../relative#part", "bad reference\\"),
    ("date-time", "2026-12-05T01:30:00+01:00", "2026-12-05 01:30"),
    ("time", "01:30:00Z", "1:30"),
    ("hostname", "mail.example.org", "under_score.example.org"),
    ("json-pointer", "/a/~1b", "a/b"),
    ("uri-template", "/users/{id}", "/users/{id"),
])
def test_the_common_formats_are_checked(name, good, bad):
    schema = {"format": name}
    validator = make_validator(schema, validator_class=check_schema(schema))
    assert list(validator.iter_errors(good)) == []
    assert [error.validator for error in validator.iter_errors(bad)] == ["format"]


def test_the_shipped_python_workflows_declare_only_checked_formats():
    from workflows.insurance_application import InsuranceApplication
    from workflows.uptime_monitor import UptimeMonitor

    for workflow in (InsuranceApplication, UptimeMonitor):
        check_schema(workflow.inputs_schema)
