"""load_json: JSON from outside with a nesting bound, no NaN or Infinity, and a clear word for long integers."""

from __future__ import annotations

import json

import pytest

from actions.jsontext import JSONLimitError, load_json, nesting


@pytest.mark.parametrize(("text", "depth"), [
    ("1", 0),
    ("[]", 1),
    ('{"a": [1, {"b": 2}]}', 3),
    ('{"a": "[[[[{{{{"}', 1),  # brackets inside strings do not count
    ('["\\"[[[", "]"]', 1),  # nor after an escaped quote
    ("[[]]" * 1000, 2),
])
def test_nesting_counts_brackets_outside_strings(text, depth):
    assert nesting(text) == depth


@pytest.mark.parametrize(("text", "words"), [
    ("[" * 100000 + "]" * 100000, "JSON nested deeper than 64 levels (WORKFLOW_MAX_JSON_DEPTH)"),
    ('{"a":' * 900 + "1" + "}" * 900, "JSON nested deeper than 64 levels"),
    ("1" + "0" * 5000, "an integer of 5001 digits is too long (at most 4300 digits)"),
    ('{"n": -' + "9" * 5000 + "}", "an integer of 5000 digits is too long"),
    ("[NaN]", "NaN is not a JSON number"),
    ('{"a": Infinity}', "Infinity is not a JSON number"),
    ("-Infinity", "-Infinity is not a JSON number"),
    ("1e400", "the number 1e400 is too large for a JSON number"),
    ('{"a": "\\ud800"}', "the escape \\ud800 is half of a UTF-16 surrogate pair, not a character"),
    ('[{"\\uDFFF": 1}]', "the escape \\udfff is half of a UTF-16 surrogate pair"),
    ('"\\ude00\\ud83d"', "the escape \\ude00 is half"),  # a pair in the wrong order is two halves
])
def test_past_a_bound_is_refused_with_its_reason(text, words):
    with pytest.raises(JSONLimitError) as caught:
        load_json(text.encode())
    assert words in str(caught.value)


def test_within_the_bounds_it_is_json_loads():
    value = {"a": [1, 2.5, None, True, "é", {"b": "[{"}], "n": 10 ** 40}
    text = json.dumps(value)
    assert load_json(text) == load_json(text.encode()) == load_json(text.encode("utf-16")) == value
    assert load_json("[" * 64 + "]" * 64) == json.loads("[" * 64 + "]" * 64)
    # An escaped pair is one character; an escaped backslash before "ud800" is text.
    assert load_json('["\\ud83d\\ude00", "\\\\ud800"]') == ["\U0001f600", "\\ud800"]


def test_malformed_text_is_json_decode_error():
    with pytest.raises(json.JSONDecodeError):
        load_json("[}")
