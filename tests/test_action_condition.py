"""ConditionAction: every comparison, including numbers rendered as text."""

from __future__ import annotations

import pytest

from actions.base import ActionError, RunContext
from actions.condition import ConditionAction


def check(type_: str, left=None, right=None) -> bool:
    action = ConditionAction("c", condition={"type": type_, "left": left, "right": right})
    return action.execute({})["result"]


@pytest.mark.parametrize(("type_", "left", "right", "expected"), [
    ("eq", "10", 10, True),
    ("eq", "10.0", "10", True),
    ("eq", "abc", "abc", True),
    ("eq", True, "true", True),
    ("eq", None, "", True),
    ("ne", "a", "b", True),
    ("ne", "1", 1, False),
    ("gt", "10", "9", True),  # as numbers, not as text
    ("ge", 3, "3", True),
    ("lt", "2.5", 3, True),
    ("le", "4", 3, False),
    ("gt", "2026-02-01", "2026-01-31", True),  # ISO dates order as text
    ("contains", "hello world", "wor", True),
    ("contains", [1, 2, 3], "2", True),
    ("contains", {"a": 1}, "a", True),
    ("contains", None, "a", False),
    ("matches", "order-1234", r"\d{4}$", True),
    ("matches", "order", r"^\d", False),
    ("in", "b", ["a", "b"], True),
    ("in", "x", "xyz", True),
    ("in", 5, ["1", "5"], True),
    ("exists", "x", None, True),
    ("exists", None, None, False),
    ("exists", "", None, False),
    ("exists", 0, None, True),
])
def test_comparisons(type_, left, right, expected):
    assert check(type_, left, right) is expected


def test_values_follow_the_result():
    action = ConditionAction("c", condition={"type": "gt", "left": "11", "right": 10}, true_value="many",
                             false_value="few")
    assert action.execute({}) == {"result": True, "value": "many"}
    assert ConditionAction("c", condition={"type": "exists"}).execute({}) == {"result": False, "value": False}


@pytest.mark.parametrize(("type_", "left", "right", "message"), [
    ("gt", "abc", 3, "cannot compare"),
    ("matches", "x", "(", "invalid regular expression"),
    ("contains", 5, "5", "cannot look inside"),
])
def test_impossible_comparisons_are_not_retried(type_, left, right, message):
    with pytest.raises(ActionError, match=message) as caught:
        check(type_, left, right)
    assert not caught.value.retryable


@pytest.mark.parametrize(("condition", "message"), [
    ({"type": "bigger", "left": 1}, "type must be one of"),
    ({"type": "eq", "lft": 1}, "unknown key 'lft'"),
    ("x > 1", "must be a mapping"),
])
def test_bad_condition_is_refused_at_definition(condition, message):
    with pytest.raises(ValueError, match=message):
        ConditionAction("c", condition=condition)


def test_templates_are_checked_once_rendered():
    action = ConditionAction("c", condition={"type": "{{ inputs.op }}", "left": 1, "right": 1})
    action.condition = {"type": "eq", "left": 1, "right": 1}  # as the engine renders it
    assert action.execute({})["result"] is True


# A pattern that backtracks exponentially in re and in regex alike: (a|a)* on "aaa...!".
CATASTROPHIC = r"^(a|a)*$"


def test_a_runaway_pattern_fails_the_step_naming_the_regex_timeout():
    action = ConditionAction("c", condition={"type": "matches", "left": "a" * 30 + "!", "right": CATASTROPHIC})
    action.context = RunContext(settings={"WORKFLOW_REGEX_TIMEOUT": 0.2})
    with pytest.raises(ActionError) as caught:
        action.execute({})
    assert "did not finish within 0.2 s" in str(caught.value)
    assert "WORKFLOW_REGEX_TIMEOUT" in str(caught.value)
    assert not caught.value.retryable


def test_the_pattern_that_stalled_the_server_in_issue_12_now_answers():
    # ^(a+)+$ is the measured attack: regex answers it at once, re backtracked for minutes.
    assert check("matches", "a" * 30 + "!", r"^(a+)+$") is False
    assert check("matches", "a" * 30, r"^(a+)+$") is True
