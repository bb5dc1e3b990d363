"""TransformAction: every operation on small tables."""

from __future__ import annotations

import pytest

from actions.base import ActionError, RunContext
from actions.transform import TransformAction

PEOPLE = [
    {"name": "Ann", "team": "ops", "age": "34", "address": {"city": "Berlin"}},
    {"name": "Bob", "team": "dev", "age": 9},
    {"name": "Cy", "team": "ops", "age": "120", "address": {"city": "Paris"}},
]


def run(**config):
    return TransformAction("t", **config).execute({})["data"]


def test_csv_json_round_trip():
    text = "name;note\nAnn;\"a; b\"\nBob;x\n"
    rows = run(operation="csv_to_json", data=text, delimiter=";")
    assert rows == [{"name": "Ann", "note": "a; b"}, {"name": "Bob", "note": "x"}]
    assert run(operation="json_to_csv", data=rows, delimiter=";") == text


def test_json_to_csv_columns_and_nested_values():
    text = run(operation="json_to_csv", data=PEOPLE, fields=["name", "address.city", "address"])
    assert text.splitlines() == ["name,address.city,address", 'Ann,Berlin,"{""city"": ""Berlin""}"', "Bob,,",
                                 'Cy,Paris,"{""city"": ""Paris""}"']
    assert run(operation="json_to_csv", data='[{"a": 1, "b": null}]') == "a,b\n1,\n"


@pytest.mark.parametrize(("where", "names"), [
    ({"field": "team", "value": "ops"}, ["Ann", "Cy"]),
    ({"field": "age", "op": "gt", "value": "10"}, ["Ann", "Cy"]),  # numerically, though text
    ({"field": "age", "op": "le", "value": 34}, ["Ann", "Bob"]),
    ({"field": "name", "op": "contains", "value": "o"}, ["Bob"]),
    ({"field": "name", "op": "matches", "value": "^[AC]"}, ["Ann", "Cy"]),
    ({"field": "team", "op": "in", "value": ["dev", "qa"]}, ["Bob"]),
    ({"field": "address.city", "op": "exists"}, ["Ann", "Cy"]),
    ({"field": "address", "op": "exists", "value": False}, ["Bob"]),
    ({"field": "team", "op": "ne", "value": "ops"}, ["Bob"]),
    ([{"field": "team", "value": "ops"}, {"field": "age", "op": "lt", "value": 100}], ["Ann"]),
])
def test_filter(where, names):
    assert [row["name"] for row in run(operation="filter", data=PEOPLE, where=where)] == names


def test_map():
    mapped = run(operation="map", data=PEOPLE[:2], fields={"who": "name", "city": "address.city",
                                                            "source": {"value": "hr"}})
    assert mapped == [{"who": "Ann", "city": "Berlin", "source": "hr"}, {"who": "Bob", "city": None, "source": "hr"}]
    kept = run(operation="map", data=PEOPLE[:1], fields={"who": "name"}, keep="true")
    assert kept[0]["who"] == kept[0]["name"] == "Ann"


def test_sort():
    assert [row["name"] for row in run(operation="sort", data=PEOPLE, by="age")] == ["Bob", "Ann", "Cy"]
    by_two = run(operation="sort", data=PEOPLE, by=["team", "name"], reverse=True)
    assert [row["name"] for row in by_two] == ["Cy", "Ann", "Bob"]
    # Rows without the field go last, whatever the direction.
    assert [row["name"] for row in run(operation="sort", data=PEOPLE, by="address.city", reverse=True)] == [
        "Cy", "Ann", "Bob"]


def test_group():
    groups = run(operation="group", data=PEOPLE, by="team")
    assert {team: [row["name"] for row in rows] for team, rows in groups.items()} == {"ops": ["Ann", "Cy"],
                                                                                       "dev": ["Bob"]}


def test_aggregate():
    metrics = {"n": {"op": "count"}, "total": {"op": "sum", "field": "age"}, "mean": {"op": "avg", "field": "age"},
               "young": {"op": "min", "field": "age"}, "old": {"op": "max", "field": "age"}}
    assert run(operation="aggregate", data=PEOPLE, metrics=metrics) == {
        "n": 3, "total": 163, "mean": 163 / 3, "young": 9, "old": 120}
    assert run(operation="aggregate", data=PEOPLE, by="team", metrics={"total": {"op": "sum", "field": "age"}}) == [
        {"team": "ops", "total": 154}, {"team": "dev", "total": 9}]
    with pytest.raises(ActionError, match="metric 'total': name value 'Ann' is not a number"):
        run(operation="aggregate", data=PEOPLE, metrics={"total": {"op": "sum", "field": "name"}})


def test_dedupe():
    rows = [{"a": 1, "b": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 1}, {"a": 2}]
    assert run(operation="dedupe", data=rows) == [{"a": 1, "b": 1}, {"a": 1, "b": 2}, {"a": 2}]
    assert run(operation="dedupe", data=rows, by="a") == [{"a": 1, "b": 1}, {"a": 2}]


@pytest.mark.parametrize(("config", "message"), [
    ({"operation": "pivot", "data": []}, "operation must be one of"),
    ({"operation": "sort", "data": []}, "'by' is required"),
    ({"operation": "sort", "data": [], "by": "a", "where": {"field": "a"}}, "key 'where' does not apply"),
])
def test_bad_keys_are_refused_at_definition(config, message):
    with pytest.raises(ValueError, match=message):
        TransformAction("t", **config)


@pytest.mark.parametrize(("config", "message"), [
    ({"operation": "filter", "data": {"a": 1}, "where": {"field": "a"}}, "data must be a list, got dict"),
    ({"operation": "filter", "data": [], "where": {"field": "a", "op": "like"}}, "'op' must be one of"),
    ({"operation": "filter", "data": [], "where": {"fld": "a"}}, "'where' must be"),
    ({"operation": "map", "data": [1], "fields": {"x": "a"}}, r"data\[0\] must be an object"),
    ({"operation": "map", "data": [{}], "fields": {"x": 5}}, "field 'x' must be a dotted path"),
    ({"operation": "aggregate", "data": [], "metrics": {"m": {"op": "median", "field": "a"}}}, "metric 'm' needs"),
    ({"operation": "csv_to_json", "data": "a", "delimiter": ";;"}, "'delimiter' must be one character"),
    ({"operation": "sort", "data": [], "by": "a", "reverse": "maybe"}, "'reverse' must be true or false"),
])
def test_bad_values_name_the_key(config, message):
    with pytest.raises(ActionError, match=message) as caught:
        TransformAction("t", **config).execute({})
    assert not caught.value.retryable


def test_a_path_part_that_only_looks_like_an_index_reads_nothing():
    # "²" passes str.isdigit(), which int() refuses: the step failed with a ValueError.
    action = TransformAction("t", operation="map", data=[{"a": ["x", "y"]}], fields={"first": "a.0", "odd": "a.²"})
    assert action.execute({})["data"] == [{"first": "x", "odd": None}]


def test_data_rendered_to_null_is_explained():
    action = TransformAction("t", operation="dedupe", data="{{ steps.read.rows }}")
    action.data = None  # what the engine's rendering gives for a name that does not exist
    with pytest.raises(ActionError, match="'data' is null"):
        action.execute({})


def test_a_runaway_filter_pattern_fails_the_step_naming_the_regex_timeout():
    action = TransformAction("t", operation="filter", data=[{"name": "a" * 30 + "!"}],
                             where={"field": "name", "op": "matches", "value": r"^(a|a)*$"})
    action.context = RunContext(settings={"WORKFLOW_REGEX_TIMEOUT": 0.2})
    with pytest.raises(ActionError, match=r"transform filter: regular expression .* \(WORKFLOW_REGEX_TIMEOUT\)"):
        action.execute({})
