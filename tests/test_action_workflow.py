"""SubWorkflowAction with a small stand-in for the engine's run_workflow service."""

from __future__ import annotations

import pytest

from actions.base import ActionError, RunContext
from actions.workflow import SubWorkflowAction

CALLS = []


def run_workflow(name, inputs, timeout):
    """A run as the engine returns it; ``inputs["status"]`` says how it ended (default succeeded)."""
    CALLS.append((name, inputs, timeout))
    status = inputs.get("status", "succeeded")
    return {
        "id": "run_sub1", "workflow": name, "status": status,
        "steps": [{"name": "greet", "status": status, "result": {"text": f"hi {inputs.get('who')}"}}],
        "error": "step 'greet' failed: SMTP server down" if status == "failed" else None,
    }


def sub(workflow="child", inputs=None, timeout=300, current="", stack=()) -> SubWorkflowAction:
    action = SubWorkflowAction("call", workflow=workflow, inputs=inputs, timeout=timeout)
    action.context = RunContext(workflow=current, call_stack=stack, run_workflow=run_workflow)
    return action


def test_runs_the_sub_workflow():
    CALLS.clear()
    result = sub(inputs={"who": "Ann"}, timeout="20", current="parent", stack=("top",)).execute({})
    assert result == {"run_id": "run_sub1", "status": "succeeded", "steps": {"greet": {"text": "hi Ann"}},
                      "error": None}
    assert CALLS == [("child", {"who": "Ann"}, 20.0)]


@pytest.mark.parametrize(("workflow", "stack", "current", "cycle"), [
    ("a", ("a",), "b", "a -> b -> a"),
    ("b", (), "b", "b -> b"),
    ("b", ("a", "b"), "c", "b -> c -> b"),
])
def test_cycles_are_refused(workflow, stack, current, cycle):
    with pytest.raises(ActionError, match=f"^workflow cycle: {cycle}$") as caught:
        sub(workflow=workflow, current=current, stack=stack).execute({})
    assert not caught.value.retryable


@pytest.mark.parametrize(("status", "message"), [
    ("failed", "sub-workflow child run run_sub1 failed: step 'greet' failed: SMTP server down"),
    ("cancelled", "sub-workflow child run run_sub1 cancelled"),
    ("running", r"sub-workflow child run run_sub1 did not finish within 300 s \(status running\)"),
])
def test_unsuccessful_sub_run_fails_the_step(status, message):
    with pytest.raises(ActionError, match=message) as caught:
        sub(inputs={"status": status}).execute({})
    assert not caught.value.retryable


def test_needs_the_engine():
    action = SubWorkflowAction("call", workflow="child")
    with pytest.raises(ActionError, match="needs the PyFlow engine"):
        action.execute({})


@pytest.mark.parametrize(("config", "message"), [
    ({"inputs": ["a"]}, "inputs must be a mapping"),
    ({"timeout": "0"}, "timeout must be a number of seconds > 0"),
])
def test_bad_config(config, message):
    with pytest.raises(ActionError, match=message):
        sub(**config).execute({})
