"""Step graphs through the engine: depends_on, parallel branches, when, on_failure, retry, loops, sub-workflows."""

from __future__ import annotations

from pathlib import Path

import pytest

from actions.base import BaseAction
from workflows.base import Workflow
from workflows.registry import WorkflowLoadError, WorkflowRegistry


def define(client, name: str, steps: list[dict], **top) -> None:
    response = client.post("/api/workflows", json={"name": name, "steps": steps, **top})
    assert response.status_code == 201, response.get_json()


def run(client, name: str, inputs: dict | None = None) -> dict:
    response = client.post(f"/api/workflows/{name}/runs?wait=20", json={"inputs": inputs or {}})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def statuses(run: dict) -> dict[str, str]:
    return {step["name"]: step["status"] for step in run["steps"]}


def results(run: dict) -> dict[str, dict]:
    return {step["name"]: step["result"] for step in run["steps"]}


def log(name: str, message: str = "ok", **keys) -> dict:
    return {"name": name, "type": "log", "config": {"message": message}, **keys}


def append(name: str, **keys) -> dict:
    """A step that appends its name to trace.txt (under WORKFLOW_FILES_ROOT): a side effect to count runs by."""
    return {"name": name, "type": "file", "config": {"operation": "append", "path": "trace.txt",
                                                     "content": f"{name}\n"}, **keys}


def read(name: str, path: str, **keys) -> dict:
    """A step that fails (without retries) while ``path`` does not exist under WORKFLOW_FILES_ROOT."""
    return {"name": name, "type": "file", "retries": 0, "config": {"operation": "read", "path": path}, **keys}


def trace(storage: Path) -> list[str]:
    path = storage / "files" / "trace.txt"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


# -- the graph ----------------------------------------------------------------------------------------

def test_a_cycle_is_refused_at_registration(client):
    response = client.post("/api/workflows", json={"name": "loopy", "steps": [
        log("a", depends_on=["c"]), log("b"), log("c", depends_on=["b"])]})
    assert response.status_code == 422
    # Read the arrows as "runs before": b follows a (no depends_on), c waits for b, a waits for c.
    assert response.get_json()["error"]["details"] == [{"path": "steps",
                                                        "message": "steps form a cycle: a -> b -> c -> a"}]

    class Echo(BaseAction):
        def execute(self, data_store: dict) -> dict:
            return {}

    class Cyclic(Workflow):
        name = "cyclic"
        actions = [Echo("a", depends_on=["b"]), Echo("b", depends_on=["a"])]

    with pytest.raises(WorkflowLoadError, match="steps form a cycle: a -> b -> a"):
        WorkflowRegistry().register(Cyclic, "cyclic.py")


def test_independent_steps_run_in_parallel(client):
    wait = {"type": "wait", "config": {"seconds": 0.5}}
    define(client, "side_by_side", [{"name": "a", **wait}, {"name": "b", "depends_on": [], **wait}])
    define(client, "one_after_another", [{"name": "a", **wait}, {"name": "b", **wait}])

    steps = {}
    for name in ("side_by_side", "one_after_another"):
        finished = run(client, name)
        assert finished["status"] == "succeeded"
        steps[name] = {step["name"]: step for step in finished["steps"]}

    # What the steps' own records say: b began while a was still waiting, or only after a had finished.
    side, chain = steps["side_by_side"], steps["one_after_another"]
    assert side["b"]["started_at"] < side["a"]["finished_at"] and side["a"]["started_at"] < side["b"]["finished_at"]
    assert chain["b"]["started_at"] >= chain["a"]["finished_at"]


def test_independent_steps_beyond_max_parallel_steps_all_run(client, storage):
    # Six independent steps, four at a time: the last two used to be marked skipped and the run "succeeded".
    # Each writes a file of its own (appends to one file from parallel branches may race).
    define(client, "six_wide", [{"name": f"s{i}", "type": "file", "depends_on": [], "config": {
        "operation": "write", "path": f"wide/s{i}.txt", "content": "done"}} for i in range(6)],
        max_parallel_steps=4)
    finished = run(client, "six_wide")
    assert finished["status"] == "succeeded"
    assert statuses(finished) == {f"s{i}": "succeeded" for i in range(6)}
    assert sorted(path.name for path in (storage / "files" / "wide").iterdir()) == [f"s{i}.txt" for i in range(6)]


def test_steps_beyond_max_parallel_steps_wait_for_a_free_branch(client, storage):
    wait = {"type": "wait", "config": {"seconds": 0.05}}
    define(client, "one_at_a_time", [{"name": f"w{i}", "depends_on": [], **wait} for i in range(3)],
           max_parallel_steps=1)
    finished = run(client, "one_at_a_time")
    assert statuses(finished) == {f"w{i}": "succeeded" for i in range(3)}
    spans = sorted((step["started_at"], step["finished_at"]) for step in finished["steps"])
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1)), spans


def test_the_run_record_keeps_each_steps_dependencies(client):
    define(client, "diamond", [log("top"), log("left"), log("right", depends_on=["top"]),
                               log("bottom", depends_on=["left", "right"])])
    finished = run(client, "diamond")
    assert [(step["name"], step["depends_on"]) for step in finished["steps"]] == [
        ("top", []), ("left", ["top"]), ("right", ["top"]), ("bottom", ["left", "right"])]
    assert statuses(finished) == dict.fromkeys(("top", "left", "right", "bottom"), "succeeded")


def test_a_false_when_skips_the_step_only(client):
    define(client, "conditional", [log("check", "{{ inputs.go }}"),
                                   log("act", "acted", when="{{ inputs.go }}"),
                                   log("after", "{{ steps.act.message or 'nothing' }}")])
    skipped = run(client, "conditional", {"go": False})
    assert statuses(skipped) == {"check": "succeeded", "act": "skipped", "after": "succeeded"}
    assert results(skipped)["after"] == {"message": "nothing"}
    assert results(run(client, "conditional", {"go": True}))["after"] == {"message": "acted"}


# -- on_failure ---------------------------------------------------------------------------------------

def test_on_failure_continue_skips_the_dependents_and_the_run_succeeds(client):
    define(client, "tolerant", [log("start"), read("optional", "missing.txt", on_failure="continue"),
                                log("uses_optional", "{{ steps.optional.content }}"),
                                log("independent", depends_on=["start"])])
    finished = run(client, "tolerant")
    assert finished["status"] == "succeeded"
    assert finished["error"] is None
    assert statuses(finished) == {"start": "succeeded", "optional": "failed", "uses_optional": "skipped",
                                  "independent": "succeeded"}
    assert finished["steps"][2]["error"] == "skipped: optional failed"


def test_on_failure_handler_runs_with_the_error_and_the_run_fails(client):
    define(client, "handled", [
        log("start"),
        read("gate", "{{ inputs.path }}", on_failure="alert"),
        log("after_gate"),
        log("alert", "alert: {{ run.error }}"),
    ])
    failed = run(client, "handled", {"path": "missing.txt"})
    assert failed["status"] == "failed"
    assert failed["error"].startswith("step 'gate' failed: ")
    assert statuses(failed) == {"start": "succeeded", "gate": "failed", "after_gate": "pending", "alert": "succeeded"}
    assert results(failed)["alert"] == {"message": f"alert: {failed['error']}"}


def test_a_handler_no_failure_called_is_skipped(client, storage):
    define(client, "handled_ok", [read("gate", "present.txt", on_failure="alert"), log("alert", "{{ run.error }}")])
    (storage / "files").mkdir(parents=True)
    (storage / "files" / "present.txt").write_text("here", encoding="utf-8")
    finished = run(client, "handled_ok")
    assert finished["status"] == "succeeded"
    assert statuses(finished) == {"gate": "succeeded", "alert": "skipped"}


def test_retry_reruns_the_failed_steps_and_their_skipped_dependents_only(client, runtime, storage):
    define(client, "retryable", [
        append("start"),
        append("side", depends_on=["start"]),
        read("optional", "optional.txt", depends_on=["start"], on_failure="continue"),
        append("uses_optional"),
        read("gate", "gate.txt", depends_on=["uses_optional"]),
        append("after_gate"),
    ])
    failed = run(client, "retryable")
    assert failed["status"] == "failed"
    assert statuses(failed) == {"start": "succeeded", "side": "succeeded", "optional": "failed",
                                "uses_optional": "skipped", "gate": "failed", "after_gate": "pending"}
    assert sorted(trace(storage)) == ["side", "start"]

    for name in ("optional.txt", "gate.txt"):
        (storage / "files" / name).write_text("now here", encoding="utf-8")
    assert client.post(f"/api/runs/{failed['id']}/retry").status_code == 200
    assert runtime.engine.wait(failed["id"], 10)
    retried = client.get(f"/api/runs/{failed['id']}").get_json()

    assert retried["status"] == "succeeded"
    assert set(statuses(retried).values()) == {"succeeded"}
    assert sorted(trace(storage)) == ["after_gate", "side", "start", "uses_optional"]
    assert results(retried)["gate"]["content"] == "now here"


# -- loops and sub-workflows --------------------------------------------------------------------------

def test_a_parallel_loop_keeps_the_items_order(tmp_path):
    from app import create_app, start_app
    from tests.conftest import TEST_SETTINGS

    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                                "WORKFLOW_PYTHON_MODULES": ("tests.fixtures.functions",)}))
    client = app.test_client()
    delays = [0.4, 0.1, 0.25]
    barrier = f"loop-{tmp_path.name}"
    try:
        define(client, "looping", [{"name": "each", "type": "loop", "config": {
            "items": "{{ inputs.delays }}", "max_parallel": 3,
            "steps": [
                # All three items must be under way at once to get past it: the loop runs them in parallel.
                {"name": "meet", "type": "python", "config": {
                    "function": "tests.fixtures.functions:meet", "kwargs": {"barrier": barrier, "parties": 3}}},
                {"name": "pause", "type": "wait", "config": {"seconds": "{{ item }}"}},
                log("say", "{{ loop.index }}/{{ loop.length }}: {{ item }}")]}}])
        finished = run(client, "looping", {"delays": delays})
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)
    assert finished["status"] == "succeeded", finished["error"]
    result = results(finished)["each"]
    assert result["count"] == 3
    # They finished in the order of their waits (0.1, 0.25, 0.4), yet the results keep the items' order.
    assert [item["say"]["message"] for item in result["results"]] == ["1/3: 0.4", "2/3: 0.1", "3/3: 0.25"]


def test_a_sub_workflow_step_returns_the_child_run(client):
    define(client, "child", [log("greet", "hi {{ inputs.who }}")])
    define(client, "parent", [{"name": "call", "type": "workflow",
                               "config": {"workflow": "child", "inputs": {"who": "{{ inputs.who }}"}}},
                              log("echo", "{{ steps.call.steps.greet.message }}")])
    finished = run(client, "parent", {"who": "Ann"})
    assert finished["status"] == "succeeded", finished["error"]
    call = results(finished)["call"]
    assert call["status"] == "succeeded" and call["error"] is None
    assert call["steps"] == {"greet": {"message": "hi Ann"}}
    assert results(finished)["echo"] == {"message": "hi Ann"}
    child = client.get(f"/api/runs/{call['run_id']}").get_json()
    assert (child["workflow"], child["status"], child["source"]) == ("child", "succeeded", "workflow")


def test_a_failing_child_fails_the_parent_step(client):
    define(client, "failing_child", [read("gate", "missing.txt")])
    define(client, "caller", [{"name": "call", "type": "workflow", "config": {"workflow": "failing_child"}}])
    finished = run(client, "caller")
    assert finished["status"] == "failed"
    assert finished["steps"][0]["attempts"] == 1  # starting the child again is not the engine's call
    error = finished["steps"][0]["error"]
    assert error.startswith("sub-workflow failing_child run run_") and " failed: step 'gate' failed: " in error


def test_a_sub_workflow_that_cannot_start_fails_the_step_at_once_naming_why(client):
    """No such workflow, or inputs it refuses: the step fails on its first attempt, no class name in the error."""
    define(client, "strict_child", [log("greet")],
           inputs={"type": "object", "properties": {"team": {"type": "string"}}, "required": ["team"]})
    define(client, "asks_nothing", [{"name": "missing", "type": "workflow", "on_failure": "continue",
                                     "config": {"workflow": "no_such_child"}},
                                    {"name": "refused", "type": "workflow", "depends_on": [], "on_failure": "continue",
                                     "config": {"workflow": "strict_child", "inputs": {}}}])
    steps = {step["name"]: step for step in run(client, "asks_nothing")["steps"]}
    missing = steps["missing"]
    assert (missing["attempts"], missing["error"]) == (1, "workflow: no workflow named 'no_such_child'")
    assert steps["refused"]["attempts"] == 1
    assert steps["refused"]["error"].startswith("workflow: invalid inputs for 'strict_child'")


def test_a_sub_workflow_past_its_timeout_is_not_started_again(client):
    """docs/task-library.md: the step waits up to timeout and fails; retrying would start a second sub-run."""
    define(client, "slow_child", [{"name": "nap", "type": "wait", "config": {"seconds": 2}}])
    define(client, "impatient", [{"name": "call", "type": "workflow", "retries": 2,
                                  "config": {"workflow": "slow_child", "timeout": 0.1}}])
    finished = run(client, "impatient")
    step = finished["steps"][0]
    assert (finished["status"], step["attempts"]) == ("failed", 1)
    assert "did not finish within 0.1 s" in step["error"] and "TimeoutError" not in step["error"]
    assert len(client.get("/api/runs?workflow=slow_child").get_json()["runs"]) == 1


def test_sub_workflow_cycles_are_refused(client):
    define(client, "ping", [{"name": "call", "type": "workflow", "config": {"workflow": "pong"}}])
    define(client, "pong", [{"name": "call", "type": "workflow", "config": {"workflow": "ping"}}])
    finished = run(client, "ping")
    assert finished["status"] == "failed"
    assert "workflow cycle: ping -> pong -> ping" in finished["error"]
