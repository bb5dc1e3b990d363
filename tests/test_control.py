"""Run control over the API and run.py: cancel, pause, resume, retry, skip and variables, in every state."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from app import create_app, start_app
from tests.conftest import TEST_SETTINGS
from tests.fixtures import (
    DURABLE_WORKFLOWS,
    arrivals,
    gate,
    release_gates,
    reset_gates,
    side_effect_lines,
    wait_until,
)
from tests.server import Servers, free_port, run_py
from tests.waiting import threads_in

OPERATIONS = ("cancel", "pause", "resume", "retry", "skip")


@pytest.fixture
def app(storage):
    """One run executes at a time, so a second run waits queued; shell commands are allowed."""
    reset_gates()
    app = start_app(create_app({
        **TEST_SETTINGS,
        "WORKFLOW_STORAGE_PATH": str(storage),
        "WORKFLOW_CLASSES": DURABLE_WORKFLOWS,
        "WORKFLOW_MAX_CONCURRENT": 1,
        "WORKFLOW_ALLOW_SHELL": True,
    }))
    yield app
    release_gates()  # steps still held at a gate go on, so the shutdown need not wait for them
    app.extensions["pyflow"].shutdown(timeout=5)


# -- helpers ------------------------------------------------------------------------------------


def get_run(client, run_id: str) -> dict:
    response = client.get(f"/api/runs/{run_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def start(client, workflow: str, **inputs) -> str:
    response = client.post(f"/api/workflows/{workflow}/runs", json={"inputs": inputs})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def wait_for_status(client, run_id: str, *statuses: str, timeout: float = 10) -> dict:
    return wait_until(lambda: (run := get_run(client, run_id))["status"] in statuses and run,
                      timeout=timeout, message=f"run {run_id} {'/'.join(statuses)}")


def at_gate(client, workflow: str = "gated", **inputs) -> str:
    """A run of ``workflow`` whose step waits at the (closed) gate of that name."""
    before = arrivals(workflow)
    run_id = start(client, workflow, **inputs)
    wait_until(lambda: arrivals(workflow) > before, timeout=10, message=f"run {run_id} at the gate")
    return run_id


def control(client, run_id: str, operation: str, **body):
    return client.post(f"/api/runs/{run_id}/{operation}", json=body or None)


def steps(run: dict) -> dict[str, str]:
    return {step["name"]: step["status"] for step in run["steps"]}


def make_run(client, state: str) -> str:
    """A run in ``state``; queued and paused ones wait behind a run held at the gate (one slot)."""
    if state == "succeeded":
        return client.post("/api/workflows/echo/runs?wait=10", json={"inputs": {"text": "hi"}}).get_json()["id"]
    if state == "failed":
        return client.post("/api/workflows/failing/runs?wait=10").get_json()["id"]
    run_id = at_gate(client, text=state)
    if state == "running":
        return run_id
    if state == "cancelled":
        assert control(client, run_id, "cancel").status_code == 200
        return run_id
    queued = start(client, "echo", text="waiting")
    assert get_run(client, queued)["status"] == "queued"
    if state == "paused":
        assert control(client, queued, "pause").status_code == 200
    return queued


def gated_lines(storage: Path) -> list[str]:
    return side_effect_lines(storage / "gated.txt")


# -- which operation each state allows --------------------------------------------------------------

# (operation, state) -> the status the history records the run moving to.
ALLOWED = {
    ("cancel", "queued"): "cancelled",
    ("cancel", "running"): "cancelled",
    ("cancel", "paused"): "cancelled",
    ("pause", "queued"): "paused",
    ("pause", "running"): "paused",
    ("resume", "paused"): "queued",
    ("retry", "failed"): "queued",
    ("retry", "cancelled"): "queued",
}
STATES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")
# Skipping a failed run's step is allowed only for its failed step: see the skip tests.
REFUSED = [(operation, state) for operation in OPERATIONS for state in STATES
           if (operation, state) not in ALLOWED and (operation, state) != ("skip", "failed")]


@pytest.mark.parametrize(("operation", "state"), REFUSED)
def test_an_operation_the_state_does_not_allow_answers_409_and_changes_nothing(client, operation, state):
    run_id = make_run(client, state)
    before = get_run(client, run_id)

    response = control(client, run_id, operation, **({"step": "first"} if operation == "skip" else {}))

    assert response.status_code == 409, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "conflict"
    assert f"run {run_id} is {state}" in error["message"]
    after = get_run(client, run_id)
    assert after["status"] == state
    assert after["history"] == before["history"]


@pytest.mark.parametrize(("operation", "state"), sorted(ALLOWED))
def test_an_allowed_operation_answers_200_and_is_recorded_in_history(client, operation, state):
    run_id = make_run(client, state)
    release = threading.Timer(0.5, gate("gated").set) if (operation, state) == ("pause", "running") else None
    if release:
        release.start()  # the held step ends soon after the pause request, which waits for it

    response = control(client, run_id, operation)

    assert response.status_code == 200, response.get_json()
    if operation in ("cancel", "pause"):
        assert response.get_json()["status"] == ALLOWED[operation, state]
    history = get_run(client, run_id)["history"]
    transition = history[[entry["from"] for entry in history].index(state)]
    assert set(transition) == {"at", "from", "to", "by"}
    assert (transition["to"], transition["by"]) == (ALLOWED[operation, state], "api")
    assert transition["at"].endswith("Z")
    if release:
        release.join()


@pytest.mark.parametrize("operation", OPERATIONS)
def test_unknown_run_ids_answer_404(client, operation):
    for run_id in ("run_0123456789abcdef", "nonsense"):
        response = control(client, run_id, operation)
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"
    assert client.patch("/api/runs/run_0123456789abcdef/variables", json={"x": 1}).status_code == 404


# -- cancel -----------------------------------------------------------------------------------------


def test_cancel_of_a_running_run_is_immediate_even_while_its_step_hangs(client, storage):
    run_id = at_gate(client, text="a")

    response = control(client, run_id, "cancel")

    assert response.status_code == 200
    # It answered while the step still hangs at its closed gate: it did not wait for the step.
    assert threads_in("GateAction.execute", f"pyflow-{run_id}"), "the step was not hanging any more"
    run = response.get_json()
    assert run["status"] == "cancelled"
    assert steps(run) == {"first": "succeeded", "hold": "cancelled", "last": "pending"}
    assert run["steps"][1]["error"] == "cancelled while running"
    assert run["finished_at"] is not None
    assert get_run(client, run_id) == run
    # The slot is free at once: the next run does not wait for the abandoned step.
    assert client.post("/api/workflows/echo/runs?wait=10", json={"inputs": {"text": "x"}}).status_code == 200
    # When the hung step finally returns, its result is ignored and nothing after it runs.
    gate("gated").set()
    wait_until(lambda: not threads_in("Engine._execute", f"pyflow-{run_id}"), message="the abandoned step to return")
    assert get_run(client, run_id) == run
    assert gated_lines(storage) == ["first a"]


def test_cancel_of_a_queued_run_means_it_never_starts(client, storage):
    holder = at_gate(client, text="holder")
    queued = start(client, "gated", text="queued")

    response = control(client, queued, "cancel")

    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    assert set(steps(response.get_json()).values()) == {"pending"}
    gate("gated").set()
    wait_for_status(client, holder, "succeeded")
    assert get_run(client, queued)["status"] == "cancelled"
    assert gated_lines(storage) == ["first holder", "last holder after first holder"]


def test_cancel_of_a_paused_run_finishes_it(client):
    paused = make_run(client, "paused")

    response = control(client, paused, "cancel")

    assert response.status_code == 200
    run = response.get_json()
    assert run["status"] == "cancelled"
    assert [entry["to"] for entry in run["history"]] == ["queued", "paused", "cancelled"]


def test_cancel_kills_a_running_shell_command(client, tmp_path):
    pidfile = tmp_path / "shell.pid"
    run_id = start(client, "shell_sleep", pidfile=str(pidfile))
    pid = wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=10, message="pid written")
    process = Path(f"/proc/{pid}")
    assert process.exists(), "the command should be running"

    response = control(client, run_id, "cancel")

    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    assert steps(response.get_json()) == {"sleep": "cancelled"}
    wait_until(lambda: not process.exists(), timeout=10, message=f"process {pid} gone")


# -- pause, variables, resume -------------------------------------------------------------------------


def pause_at_gate(client, text: str) -> str:
    """A gated run paused while its held step runs: the step finishes, the next does not start."""
    run_id = at_gate(client, text=text)
    release = threading.Timer(0.5, gate("gated").set)
    release.start()
    response = control(client, run_id, "pause")
    release.join()
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "paused"
    return run_id


def test_pause_lets_the_running_step_finish_and_starts_no_other(client, storage):
    run_id = pause_at_gate(client, "a")

    # Its thread has left the run: nothing can start the last step any more.
    wait_until(lambda: not threads_in("Engine._execute", f"pyflow-{run_id}"), message="the run's thread to let go")
    run = get_run(client, run_id)
    assert run["status"] == "paused"
    assert steps(run) == {"first": "succeeded", "hold": "succeeded", "last": "pending"}
    assert gated_lines(storage) == ["first a"]

    response = control(client, run_id, "resume")

    assert response.status_code == 200
    run = wait_for_status(client, run_id, "succeeded")
    assert gated_lines(storage) == ["first a", "last a after first a"]
    assert [(entry["from"], entry["to"], entry["by"]) for entry in run["history"]] == [
        (None, "queued", "api"),
        ("queued", "running", "engine"),
        ("running", "paused", "api"),
        ("paused", "queued", "api"),
        ("queued", "running", "engine"),
        ("running", "succeeded", "engine"),
    ]
    times = [entry["at"] for entry in run["history"]]
    assert times == sorted(times)
    assert all(at.endswith("Z") for at in times)


def test_a_paused_queued_run_gives_its_place_to_the_next(client):
    holder = at_gate(client, text="holder")
    paused = start(client, "echo", text="paused")
    later = start(client, "echo", text="later")

    assert control(client, paused, "pause").get_json()["status"] == "paused"
    gate("gated").set()

    wait_for_status(client, later, "succeeded")
    wait_for_status(client, holder, "succeeded")
    assert get_run(client, paused)["status"] == "paused"
    assert control(client, paused, "resume").status_code == 200
    assert wait_for_status(client, paused, "succeeded")["steps"][1]["result"] == {"value": "PAUSED"}


def test_a_run_paused_between_attempts_retries_its_step_on_resume(client):
    """The step is not running while it waits out a backoff: resuming is not a restart."""
    run_id = start(client, "flaky_send")
    wait_until(lambda: get_run(client, run_id)["steps"][0]["error"] == "ConnectionError: attempt 1 refused",
               timeout=10, message="first attempt failed")

    paused = control(client, run_id, "pause").get_json()

    assert paused["status"] == "paused"
    assert paused["steps"][0]["status"] == "pending"
    assert paused["steps"][0]["attempts"] == 1
    assert control(client, run_id, "resume").status_code == 200
    run = wait_for_status(client, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded", run["error"]
    assert run["steps"][0]["result"] == {"attempt": 2}


def test_resume_runs_the_version_the_run_started_with(client):
    def definition(*messages):
        steps = [{"name": "nap", "type": "wait", "config": {"seconds": 0.3}}]
        steps += [{"name": f"say_{n}", "type": "log", "config": {"message": m}} for n, m in enumerate(messages)]
        return {"name": "versioned", "trigger": {"type": "manual"}, "steps": steps}

    assert client.post("/api/workflows", json=definition("v1")).status_code == 201
    run_id = start(client, "versioned")
    wait_for_status(client, run_id, "running")
    assert control(client, run_id, "pause").get_json()["status"] == "paused"
    assert client.put("/api/workflows/versioned", json=definition("v2", "v2 again")).status_code == 200

    assert control(client, run_id, "resume").status_code == 200

    run = wait_for_status(client, run_id, "succeeded", "failed")
    assert run["status"] == "succeeded", run["error"]
    assert run["version"] == 1
    assert [step["result"] for step in run["steps"]][1:] == [{"message": "v1"}]


def test_variables_of_a_paused_run_reach_the_steps_still_to_run(client, storage):
    run_id = pause_at_gate(client, "old")

    response = client.patch(f"/api/runs/{run_id}/variables", json={"variables": {"text": "new", "extra": 1}})

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["trigger_data"] == {"text": "new", "extra": 1}
    assert control(client, run_id, "resume").status_code == 200
    run = wait_for_status(client, run_id, "succeeded")
    assert gated_lines(storage) == ["first old", "last new after first old"]
    assert run["trigger_data"] == {"text": "new", "extra": 1}


def test_variables_may_also_be_the_bare_object(client):
    run_id = make_run(client, "paused")

    response = client.patch(f"/api/runs/{run_id}/variables", json={"text": "bare"})

    assert response.status_code == 200
    assert response.get_json()["trigger_data"]["text"] == "bare"


@pytest.mark.parametrize("state", ["queued", "running", "succeeded", "failed", "cancelled"])
def test_variables_of_a_run_that_is_not_paused_answer_409(client, state):
    run_id = make_run(client, state)
    before = get_run(client, run_id)["trigger_data"]

    response = client.patch(f"/api/runs/{run_id}/variables", json={"variables": {"text": "late"}})

    assert response.status_code == 409
    assert "only a paused run" in response.get_json()["error"]["message"]
    assert get_run(client, run_id)["trigger_data"] == before


@pytest.mark.parametrize(("body", "status"), [
    (b"", 422),
    (b"{not json", 400),
    (b"[1, 2]", 422),
    (b'"text"', 422),
    (b'{"variables": 5}', 422),
    (b'{"variables": ["a"]}', 422),
])
def test_a_bad_variables_body_is_refused_and_changes_nothing(client, body, status):
    run_id = make_run(client, "paused")
    before = get_run(client, run_id)

    response = client.patch(f"/api/runs/{run_id}/variables", data=body, content_type="application/json")

    assert response.status_code == status, response.get_json()
    assert get_run(client, run_id) == before


def test_variables_that_name_secrets_are_redacted_in_the_answer_and_the_record(client, storage):
    run_id = make_run(client, "paused")

    response = client.patch(f"/api/runs/{run_id}/variables", json={"variables": {"api_token": "t-123"}})

    assert response.status_code == 200
    assert response.get_json()["trigger_data"]["api_token"] == "***"
    assert get_run(client, run_id)["trigger_data"]["api_token"] == "***"
    assert not [path for path in storage.rglob("*") if path.is_file() and b"t-123" in path.read_bytes()]


# -- retry ----------------------------------------------------------------------------------------------


def test_retry_of_a_failed_run_continues_from_the_failed_step_and_keeps_earlier_results(client, storage):
    failed = client.post("/api/workflows/needs_file/runs?wait=10").get_json()
    assert failed["status"] == "failed"
    assert failed["error"] == "step 'check' failed: needed.txt is missing"
    assert steps(failed) == {"first": "succeeded", "check": "failed", "last": "pending"}
    (storage / "needed.txt").write_text("now it is there", encoding="utf-8")

    response = control(client, failed["id"], "retry")

    assert response.status_code == 200
    run = wait_for_status(client, failed["id"], "succeeded")
    # The first step is not run again: its side effect happened once, its result is the stored one.
    assert side_effect_lines(storage / "needs_file.txt") == ["first", "last after first"]
    assert run["steps"][0] == failed["steps"][0]
    assert run["steps"][1]["attempts"] == 1
    assert run["error"] is None
    assert [(entry["from"], entry["to"]) for entry in run["history"]][-3:] == [
        ("failed", "queued"), ("queued", "running"), ("running", "succeeded")]


def test_retry_of_a_cancelled_run_continues_from_the_cancelled_step(client, storage):
    run_id = at_gate(client, text="a")
    assert control(client, run_id, "cancel").get_json()["status"] == "cancelled"
    gate("gated").set()

    response = control(client, run_id, "retry")

    assert response.status_code == 200
    run = wait_for_status(client, run_id, "succeeded")
    assert gated_lines(storage) == ["first a", "last a after first a"]
    assert steps(run) == {"first": "succeeded", "hold": "succeeded", "last": "succeeded"}
    assert arrivals("gated") == 2, "the cancelled step runs again; the finished one does not"


def test_a_failed_retry_can_be_retried_again(client, storage):
    run_id = client.post("/api/workflows/needs_file/runs?wait=10").get_json()["id"]

    assert control(client, run_id, "retry").status_code == 200
    assert wait_for_status(client, run_id, "failed")["steps"][1]["attempts"] == 1
    (storage / "needed.txt").touch()
    assert control(client, run_id, "retry").status_code == 200

    wait_for_status(client, run_id, "succeeded")
    assert side_effect_lines(storage / "needs_file.txt") == ["first", "last after first"]


# -- skip -----------------------------------------------------------------------------------------------


def test_skip_of_the_failed_step_continues_the_run(client, storage):
    run_id = client.post("/api/workflows/needs_file/runs?wait=10").get_json()["id"]

    response = control(client, run_id, "skip", step="check")

    assert response.status_code == 200
    run = wait_for_status(client, run_id, "succeeded")
    assert steps(run) == {"first": "succeeded", "check": "skipped", "last": "succeeded"}
    assert side_effect_lines(storage / "needs_file.txt") == ["first", "last after first"]


@pytest.mark.parametrize(("step", "words"), [
    ("first", "step 'first' is succeeded"),
    ("last", "step 'last' is pending"),
    ("nope", "no such step"),
])
def test_skip_of_a_step_that_did_not_fail_answers_409(client, step, words):
    run_id = client.post("/api/workflows/needs_file/runs?wait=10").get_json()["id"]

    response = control(client, run_id, "skip", step=step)

    assert response.status_code == 409
    assert words in response.get_json()["error"]["message"]
    assert get_run(client, run_id)["status"] == "failed"


@pytest.mark.parametrize("body", [None, {}, {"step": ""}, {"step": 3}, {"step": ["check"]}])
def test_skip_without_a_step_name_answers_422(client, body):
    run_id = client.post("/api/workflows/needs_file/runs?wait=10").get_json()["id"]

    response = client.post(f"/api/runs/{run_id}/skip", json=body)

    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["code"] == "invalid_input"
    assert get_run(client, run_id)["status"] == "failed"


def test_a_skipped_step_stays_skipped_when_a_later_failure_is_retried(client, storage):
    run_id = client.post("/api/workflows/needs_two_files/runs?wait=10").get_json()["id"]
    assert control(client, run_id, "skip", step="a").status_code == 200
    assert wait_for_status(client, run_id, "failed")["error"] == "step 'b' failed: b.txt is missing"
    (storage / "b.txt").touch()

    assert control(client, run_id, "retry").status_code == 200

    # A person decided step a is not needed: the retry must not run it (and fail on it) again.
    run = wait_for_status(client, run_id, "succeeded", "failed")
    assert steps(run) == {"a": "skipped", "b": "succeeded", "done": "succeeded"}, run["error"]


# -- run.py against a real server -----------------------------------------------------------------------


@pytest.mark.slow  # a real run.py server
def test_run_py_cancel_controls_the_running_server(tmp_path):
    with Servers(tmp_path) as servers:
        server = servers.start()
        env = {**server.env, "WORKFLOW_API_URL": server.url}
        run_id = server.post("/api/workflows/slow/runs", json={"inputs": {"seconds": 30}}).json()["id"]
        wait_until(lambda: server.get(f"/api/runs/{run_id}").json()["status"] == "running", timeout=10)

        cancelled = run_py("cancel", run_id, env=env)
        again = run_py("cancel", run_id, env=env)
    nobody = run_py("cancel", run_id, env={**env, "WORKFLOW_API_URL": f"http://127.0.0.1:{free_port()}"})

    assert cancelled.returncode == 0, cancelled.stderr
    printed = json.loads(cancelled.stdout)
    assert (printed["id"], printed["status"]) == (run_id, "cancelled")
    assert printed["steps"][0]["status"] == "cancelled"
    assert again.returncode == 1
    assert f"run {run_id} is cancelled; it cannot be cancelled" in again.stderr
    assert nobody.returncode == 2
    assert "not running" in nobody.stderr


@pytest.mark.slow  # a real run.py server
def test_run_py_cancel_sends_the_token_of_a_server_that_needs_one(tmp_path):
    token = "control-token-0123456789"
    with Servers(tmp_path) as servers:
        server = servers.start(env={"WORKFLOW_API_TOKEN": token})
        auth = {"Authorization": f"Bearer {token}"}
        run_id = server.post("/api/workflows/slow/runs", json={"inputs": {"seconds": 30}}, headers=auth).json()["id"]
        wait_until(lambda: server.get(f"/api/runs/{run_id}", headers=auth).json()["status"] == "running", timeout=10)
        env = {**server.env, "WORKFLOW_API_URL": server.url}  # WORKFLOW_API_TOKEN as the server has it
        refused = run_py("cancel", run_id, env={**env, "WORKFLOW_API_TOKEN": ""})
        wrong = run_py("cancel", run_id, env={**env, "WORKFLOW_API_TOKEN": "not-the-token"})
        cancelled = run_py("cancel", run_id, env=env)
    # The setting to fix is named, as for a server that is not running: exit 2.
    assert refused.returncode == 2
    assert refused.stderr == (f"run.py: cancel {run_id}: PyFlow at {server.url} needs a token: set "
                              "WORKFLOW_API_TOKEN (the server's, or one made with POST /api/tokens)\n")
    assert wrong.returncode == 2
    assert f"PyFlow at {server.url} refused WORKFLOW_API_TOKEN: set it to the server's token" in wrong.stderr
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
