"""LoopAction with a small stand-in for the engine's run_steps service."""

from __future__ import annotations

import threading
import time

import pytest

from actions.base import ActionError, RunContext
from actions.condition import ConditionAction
from actions.loop import LoopAction
from actions.python import PythonAction
from app.core.templating import Renderer

TYPES = {"condition": ConditionAction, "python": PythonAction, "loop": LoopAction}
_running = {"now": 0, "most": 0}
_lock = threading.Lock()


def slow_echo(value, delay):
    """Echo ``value`` after ``delay`` seconds, counting how many run at once."""
    with _lock:
        _running["now"] += 1
        _running["most"] = max(_running["most"], _running["now"])
    time.sleep(float(delay))
    with _lock:
        _running["now"] -= 1
    if value == "boom":
        raise ValueError("boom")
    return {"echo": value}


def run_steps(definitions, names):
    """What the engine does for nested steps, minus records and retries: render, build, execute in order."""
    results = {}
    for definition in definitions:
        config = Renderer().render_value(definition.get("config", {}), {**names, "steps": results})
        action = TYPES[definition["type"]](definition["name"], **config)
        action.context = RunContext(settings={"WORKFLOW_PYTHON_MODULES": ("tests",)}, run_steps=run_steps)
        results[definition["name"]] = action.execute({})
    return results


def loop(items, steps, max_parallel=1, services=True) -> dict:
    action = LoopAction("each", items=items, steps=steps, max_parallel=max_parallel)
    action.context = RunContext(run_steps=run_steps if services else None)
    return action.execute({})


def test_runs_the_steps_per_item_with_loop_names():
    steps = [
        {"name": "big", "type": "condition", "config": {"condition": {"type": "gt", "left": "{{ item }}", "right": 3}}},
        {"name": "where", "type": "python", "config": {
            "function": "tests.test_action_loop:slow_echo", "kwargs": {
                "value": "{{ loop.index }}/{{ loop.length }} {{ loop.first }} {{ loop.last }} {{ steps.big.result }}",
                "delay": 0}}},
    ]
    result = loop(["1", 5], steps)
    assert result["count"] == 2
    assert [item["where"]["echo"] for item in result["results"]] == ["1/2 True False False", "2/2 False True True"]


def test_parallel_keeps_order_and_bound():
    _running["most"] = 0
    steps = [{"name": "echo", "type": "python",
              "config": {"function": "tests.test_action_loop:slow_echo", "kwargs": {"value": "{{ item[0] }}",
                                                                                    "delay": "{{ item[1] }}"}}}]
    items = [["a", 0.15], ["b", 0.0], ["c", 0.1], ["d", 0.0], ["e", 0.05]]
    result = loop(items, steps, max_parallel="2")
    assert [item["echo"]["echo"] for item in result["results"]] == ["a", "b", "c", "d", "e"]
    assert _running["most"] == 2


@pytest.mark.parametrize("max_parallel", [1, 3])
def test_a_failing_item_fails_the_step_naming_it(max_parallel):
    steps = [{"name": "echo", "type": "python",
              "config": {"function": "tests.test_action_loop:slow_echo", "kwargs": {"value": "{{ item }}",
                                                                                    "delay": 0}}}]
    with pytest.raises(ActionError, match="loop item 2 of 3: ValueError: boom") as caught:
        loop(["ok", "boom", "ok"], steps, max_parallel=max_parallel)
    assert caught.value.retryable


def test_mapping_items_and_empty_list():
    steps = [{"name": "is_a", "type": "condition", "config": {"condition": {"type": "eq", "left": "{{ item.key }}",
                                                                           "right": "a"}}}]
    assert [r["is_a"]["result"] for r in loop({"a": 1, "b": 2}, steps)["results"]] == [True, False]
    assert loop([], steps) == {"results": [], "count": 0}


def test_needs_the_engine():
    with pytest.raises(ActionError, match="loop needs the PyFlow engine") as caught:
        loop([1], [{"name": "x", "type": "condition"}], services=False)
    assert not caught.value.retryable


@pytest.mark.parametrize(("items", "max_parallel", "message"), [
    (5, 1, "items must be a list, got int"),
    (None, 1, "items is null"),
    ([1], 0, "max_parallel must be an integer >= 1"),
    ([1], "²", "max_parallel must be an integer >= 1"),  # str.isdigit() takes it; int() does not
    ([1], "9" * 5000, "max_parallel must be an integer >= 1"),  # past int()'s 4,300 digits
])
def test_bad_config(items, max_parallel, message):
    with pytest.raises(ActionError, match=message):
        loop(items, [{"name": "x", "type": "condition"}], max_parallel=max_parallel)


def test_steps_are_checked_at_definition_and_never_rendered_by_the_engine():
    with pytest.raises(ValueError, match=r"steps\[0\] must be a mapping with a name and a type"):
        LoopAction("each", items=[], steps=[{"type": "log"}])
    assert LoopAction.raw_fields == ("steps",)


def test_max_parallel_past_the_cap_fails_naming_the_setting():
    action = LoopAction("each", items=[1, 2, 3], steps=[{"name": "s", "type": "condition", "config": {
        "condition": {"type": "eq", "left": 1, "right": 1}}}], max_parallel="{{ 1500 }}")
    action.max_parallel = "1500"  # as a template would have rendered it
    action.context = RunContext(run_steps=run_steps, settings={"WORKFLOW_MAX_PARALLEL": 16})
    threads = threading.active_count()
    with pytest.raises(ActionError) as caught:
        action.execute({})
    assert str(caught.value) == "loop: max_parallel 1500 is more than WORKFLOW_MAX_PARALLEL (16)"
    assert not caught.value.retryable
    assert threading.active_count() <= threads  # refused before a pool was made


def test_more_items_than_the_cap_fails_naming_the_setting():
    action = LoopAction("each", items=list(range(11)), steps=[{"name": "s", "type": "condition", "config": {
        "condition": {"type": "eq", "left": 1, "right": 1}}}])
    action.context = RunContext(run_steps=run_steps, settings={"WORKFLOW_MAX_LOOP_ITEMS": 10})
    with pytest.raises(ActionError, match=r"loop: the item count 11 is more than WORKFLOW_MAX_LOOP_ITEMS \(10\)"):
        action.execute({})


def test_items_as_deeply_nested_json_text_is_a_step_error():
    with pytest.raises(ActionError, match="loop: items must be a list"):
        loop("[" * 100000 + "]" * 100000, [{"name": "s", "type": "condition", "config": {
            "condition": {"type": "eq", "left": 1, "right": 1}}}])


def test_a_loop_inside_a_parallel_loop_runs_its_items_one_at_a_time():
    _running.update(now=0, most=0)
    inner = {"name": "inner", "type": "loop", "config": {"items": ["a", "b", "c"], "max_parallel": 3, "steps": [
        {"name": "echo", "type": "python", "config": {"function": "tests.test_action_loop:slow_echo",
                                                      "kwargs": {"value": "{{ item }}", "delay": 0.05}}}]}}
    result = loop([1, 2, 3, 4], [inner], max_parallel=4)
    assert [len(item["inner"]["results"]) for item in result["results"]] == [3, 3, 3, 3]
    assert _running["most"] <= 4  # the outer loop's 4, not 4 x 3
