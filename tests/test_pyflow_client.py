"""pyflow_client against a real ``run.py`` server."""

from __future__ import annotations

import re

import pytest

from pyflow_client import Client, PyFlowAPIError
from tests.server import REPO, Servers, free_port
from tests.waiting import wait_until

TOKEN = "client-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Servers(tmp_path_factory.mktemp("client")) as servers:
        yield servers.start(env={"WORKFLOW_API_TOKEN": TOKEN})


@pytest.fixture
def client(server):
    with Client(server.url, token=TOKEN, timeout=15) as client:
        yield client


def definition(name: str, *steps: dict) -> dict:
    return {"name": name, "steps": list(steps)}


def log(name: str, message: str = "hi", **step) -> dict:
    return {"name": name, "type": "log", "config": {"message": message}, **step}


def wait(name: str, seconds: float, **step) -> dict:
    return {"name": name, "type": "wait", "config": {"seconds": seconds}, **step}


# -- settings and errors ------------------------------------------------------------------------------

def test_url_and_token_come_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("WORKFLOW_API_URL", server.url + "/")
    monkeypatch.setenv("WORKFLOW_API_TOKEN", TOKEN)
    with Client() as client:
        assert client.base_url == server.url
        assert "echo" in [workflow["name"] for workflow in client.list_workflows()]


def test_without_the_token_the_error_is_the_apis(server, monkeypatch):
    monkeypatch.delenv("WORKFLOW_API_TOKEN", raising=False)
    with Client(server.url) as client, pytest.raises(PyFlowAPIError) as caught:
        client.list_workflows()
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert "Authorization: Bearer" in caught.value.message
    assert str(caught.value).startswith(f"GET {server.url}/api/workflows: 401 unauthorized: ")


def test_an_unknown_run_is_not_found(client):
    with pytest.raises(PyFlowAPIError) as caught:
        client.get_execution_status("run_doesnotexist")
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert "run_doesnotexist" in caught.value.message


def test_no_server_is_a_connection_error_naming_the_url_without_its_password():
    port = free_port()
    with Client(f"http://admin:hunter2@127.0.0.1:{port}", timeout=5) as client, \
            pytest.raises(PyFlowAPIError) as caught:
        client.get_workflow("echo")
    error = caught.value
    assert (error.status, error.code) == (None, "connection_error")
    assert error.url == f"http://127.0.0.1:{port}/api/workflows/echo"
    assert f"cannot reach PyFlow at http://127.0.0.1:{port}" in str(error)
    assert "hunter2" not in str(error)


# -- workflows ----------------------------------------------------------------------------------------

def test_create_get_update_delete(client):
    created = client.create_workflow(definition("crud_flow", log("one")))
    assert created["name"] == "crud_flow" and [a["name"] for a in created["actions"]] == ["one"]
    assert client.get_workflow("crud_flow")["definition"]["steps"][0]["name"] == "one"
    assert "crud_flow" in [workflow["name"] for workflow in client.list_workflows()]

    # YAML text works as well as a mapping.
    updated = client.update_workflow("crud_flow", "name: crud_flow\nsteps:\n  - {name: two, type: log, "
                                                  "config: {message: yaml}}\n")
    assert [action["name"] for action in updated["actions"]] == ["two"]

    assert client.delete_workflow("crud_flow") is None
    with pytest.raises(PyFlowAPIError) as caught:
        client.get_workflow("crud_flow")
    assert caught.value.status == 404


def test_a_taken_name_and_an_invalid_definition(client):
    client.create_workflow(definition("taken_flow", log("one")))
    with pytest.raises(PyFlowAPIError) as caught:
        client.create_workflow(definition("taken_flow", log("one")))
    assert (caught.value.status, caught.value.code) == (409, "conflict")
    with pytest.raises(PyFlowAPIError) as caught:
        client.create_workflow(definition("invalid_flow", {"name": "x", "type": "telepathy"}))
    assert caught.value.status == 422
    assert [problem["path"] for problem in caught.value.details] == ["steps[0].type"]


def test_validate_answers_true_or_raises_the_problems(client):
    client.create_workflow(definition("validated_flow", log("one")))
    # Nothing is stored, and the name may be taken (an edit keeps its name).
    assert client.validate(definition("validated_flow", log("two"))) is True
    assert client.validate("name: fresh_flow\nsteps:\n  - {name: one, type: log, config: {message: hi}}\n") is True
    assert client.get_workflow("validated_flow")["definition"]["steps"][0]["name"] == "one"
    with pytest.raises(PyFlowAPIError) as caught:
        client.validate(definition("bad_flow", log("one"), {"name": "two", "type": "telepathy"}))
    assert (caught.value.status, caught.value.code) == (422, "invalid_input")
    assert [problem["path"] for problem in caught.value.details] == ["steps[1].type"]
    with pytest.raises(PyFlowAPIError):
        client.get_workflow("bad_flow")


def test_versions_and_one_version(client):
    client.create_workflow(definition("versioned_flow", log("one", "first")))
    client.update_workflow("versioned_flow", definition("versioned_flow", log("one", "second")))
    versions = client.versions("versioned_flow")
    assert [item["version"] for item in versions] == [2, 1]
    assert all(item["saved_at"] for item in versions)
    assert client.get_version("versioned_flow", 1)["steps"][0]["config"]["message"] == "first"
    assert client.get_version("versioned_flow", 2)["steps"][0]["config"]["message"] == "second"
    with pytest.raises(PyFlowAPIError) as caught:
        client.get_version("versioned_flow", 3)
    assert caught.value.status == 404
    assert client.versions("echo") == []


def test_an_update_of_an_older_version_is_a_conflict_carrying_the_newest(client):
    client.create_workflow(definition("shared_flow", log("one", "mine")))
    client.update_workflow("shared_flow", definition("shared_flow", log("one", "theirs")), if_version=1)
    with pytest.raises(PyFlowAPIError) as caught:
        client.update_workflow("shared_flow", definition("shared_flow", log("one", "late")), if_version=1)
    assert (caught.value.status, caught.value.code) == (409, "conflict")
    details = caught.value.details
    assert details["version"] == 2
    assert details["definition"]["steps"][0]["config"]["message"] == "theirs"
    changed = [line for line in details["diff"].splitlines() if line[:1] in "-+" and line[:3] not in ("---", "+++")]
    assert any(line.startswith("-") and "mine" in line for line in changed)
    assert any(line.startswith("+") and "theirs" in line for line in changed)
    # Nothing was stored; with the newest version the update goes through.
    assert [item["version"] for item in client.versions("shared_flow")] == [2, 1]
    client.update_workflow("shared_flow", definition("shared_flow", log("one", "late")), if_version=2)
    assert client.get_workflow("shared_flow")["definition"]["steps"][0]["config"]["message"] == "late"


def test_create_from_a_template(client):
    created = client.create_workflow(name="my_pipeline", template="data_pipeline")
    assert created["name"] == "my_pipeline"
    mine, shipped = client.get_workflow("my_pipeline"), client.get_workflow("data_pipeline")
    assert mine["definition"]["steps"] == shipped["definition"]["steps"]


def test_a_python_workflow_is_no_template(client):
    with pytest.raises(PyFlowAPIError, match="has no definition to copy") as caught:
        client.create_workflow(name="copy", template="echo")
    assert caught.value.code == "not_declarative"


@pytest.mark.parametrize("kwargs", [{}, {"template": "data_pipeline"},
                                    {"definition": {"name": "x", "steps": []}, "template": "data_pipeline"}])
def test_create_workflow_needs_one_source(client, kwargs):
    with pytest.raises(ValueError, match="create_workflow"):
        client.create_workflow(**kwargs)


# -- runs ---------------------------------------------------------------------------------------------

def test_execute_and_wait_reports_each_step_once_in_order(client):
    client.create_workflow(definition("chain_flow", log("first", "{{ inputs.word }}"), wait("pause", 0.2),
                                      log("last")))
    run = client.execute_workflow("chain_flow", inputs={"word": "hello"})
    assert run["status"] in ("queued", "running")
    seen: list[str] = []
    done = client.wait_for_completion(run["id"], timeout=30, on_step_complete=lambda step: seen.append(step["name"]),
                                      poll=0.05)
    assert done["status"] == "succeeded"
    assert seen == ["first", "pause", "last"]
    assert done["steps"][0]["result"]["message"] == "hello"


def test_parallel_steps_are_reported_in_the_order_they_finished(client):
    client.create_workflow({**definition("fan_flow", wait("slow", 0.3, depends_on=[]), log("quick", depends_on=[]),
                                         log("both", depends_on=["slow", "quick"]))})
    run = client.execute_workflow("fan_flow")
    seen: list[dict] = []
    done = client.wait_for_completion(run["id"], timeout=30, on_step_complete=seen.append, poll=0.05)
    by_finish = sorted(range(3), key=lambda index: (done["steps"][index]["finished_at"], index))
    assert [step["name"] for step in seen] == [done["steps"][index]["name"] for index in by_finish]
    assert seen[-1]["name"] == "both"


def test_steps_are_reported_while_the_run_goes_on(client):
    client.create_workflow(definition("long_flow", log("first"), wait("long", 60), log("never")))
    run = client.execute_workflow("long_flow")
    seen: list[tuple[str, str]] = []

    def step_done(step: dict) -> None:
        # The run still waits in "long": cancelling it here ends the wait below.
        seen.append((step["name"], step["status"]))
        if step["name"] == "first":
            # A long wait may park the run ("waiting") once parked runs exist.
            assert client.get_execution_status(run["id"])["status"] in ("running", "waiting")
            client.cancel_execution(run["id"])

    done = client.wait_for_completion(run["id"], timeout=30, on_step_complete=step_done, poll=0.05)
    assert done["status"] == "cancelled"
    assert seen[0] == ("first", "succeeded")
    assert [name for name, _ in seen].count("first") == 1


def test_an_idempotency_key_makes_one_run(client):
    first = client.execute_workflow("echo", inputs={"n": 1}, idempotency_key="client-key-1")
    again = client.execute_workflow("echo", inputs={"n": 1}, idempotency_key="client-key-1")
    other = client.execute_workflow("echo", inputs={"n": 1}, idempotency_key="client-key-2")
    assert again["id"] == first["id"] != other["id"]


def test_wait_gives_up_after_its_timeout(client):
    client.create_workflow(definition("stuck_flow", wait("long", 60)))
    run = client.execute_workflow("stuck_flow")
    try:
        still = rf"run {run['id']} is still (queued|running|waiting) after 0.2 s"
        with pytest.raises(PyFlowAPIError, match=still) as caught:
            client.wait_for_completion(run["id"], timeout=0.2, poll=0.05)
        assert (caught.value.status, caught.value.code) == (None, "timeout")
    finally:
        client.cancel_execution(run["id"])


def test_pause_and_resume(client):
    client.create_workflow(definition("pausing_flow", wait("hold", 1), log("after")))
    run = client.execute_workflow("pausing_flow")
    wait_until(lambda: client.get_execution_status(run["id"])["status"] == "running", timeout=10,
               message="the run to start")
    client.pause_execution(run["id"])
    paused = wait_until(lambda: (state := client.get_execution_status(run["id"]))["status"] == "paused" and state,
                        timeout=15, message="the run to pause")
    assert paused["steps"][1]["status"] == "pending"
    client.resume_execution(run["id"])
    assert client.wait_for_completion(run["id"], timeout=30, poll=0.05)["status"] == "succeeded"
    with pytest.raises(PyFlowAPIError) as caught:
        client.resume_execution(run["id"])
    assert caught.value.status == 409


def test_retry_a_failed_step(client, server):
    client.create_workflow(definition("retry_flow", log("before"),
                                      {"name": "read", "type": "file", "retries": 0,
                                       "config": {"operation": "read", "path": "client-flag.txt"}}))
    run = client.wait_for_completion(client.execute_workflow("retry_flow")["id"], timeout=30, poll=0.05)
    assert run["status"] == "failed" and run["steps"][1]["status"] == "failed"
    with pytest.raises(PyFlowAPIError, match="step 'before' .* cannot be retried: it is succeeded") as caught:
        client.retry_step(run["id"], step="before")
    assert caught.value.status == 409

    files = server.storage / "files"
    files.mkdir(parents=True, exist_ok=True)
    (files / "client-flag.txt").write_text("there now")
    client.retry_step(run["id"], step="read")
    done = client.wait_for_completion(run["id"], timeout=30, poll=0.05)
    assert done["status"] == "succeeded"
    assert done["steps"][1]["result"]["content"] == "there now"


def test_skip_a_failed_step(client):
    client.create_workflow(definition("skip_flow", {"name": "read", "type": "file", "retries": 0,
                                                    "config": {"operation": "read", "path": "never-there.txt"}},
                                      log("after")))
    run = client.wait_for_completion(client.execute_workflow("skip_flow")["id"], timeout=30, poll=0.05)
    assert run["status"] == "failed"
    client.skip_step(run["id"], "read")
    done = client.wait_for_completion(run["id"], timeout=30, poll=0.05)
    assert [step["status"] for step in done["steps"]] == ["skipped", "succeeded"]


# -- approvals and events (their endpoints come with the rest of issue 16) -----------------------------

@pytest.mark.parametrize("call", [
    lambda client, run_id: client.approve(run_id, comment="ok"),
    lambda client, run_id: client.reject(run_id, step="gate", comment="no"),
])
def test_approve_and_reject_fail_cleanly_where_nothing_waits(client, call):
    run = client.wait_for_completion(client.execute_workflow("echo")["id"], timeout=30, poll=0.05)
    with pytest.raises(PyFlowAPIError) as caught:
        call(client, run["id"])
    assert caught.value.status == 409  # nothing waits for an answer
    assert caught.value.code and caught.value.message


def test_emit_event_is_accepted(client):
    answer = client.emit_event("client.test", {"id": 7}, key="7", id="client-event-1")
    assert answer["event"]["type"] == "client.test"


def test_emit_event_of_a_run_end_is_refused_naming_type(client):
    """run.* events are PyFlow's own (docs/events.md): the client gets the API's 422, whatever the token."""
    with pytest.raises(PyFlowAPIError) as caught:
        client.emit_event("run.succeeded", {"run_id": "run_0", "workflow": "echo", "status": "succeeded"})
    assert (caught.value.status, caught.value.code) == (422, "invalid_input")
    assert caught.value.details[0]["path"] == "type"
    assert "published by PyFlow when runs end" in caught.value.details[0]["message"]


# -- any other endpoint --------------------------------------------------------------------------------

def test_request_reaches_any_endpoint(client):
    run = client.wait_for_completion(client.execute_workflow("echo", inputs={"n": 2})["id"], timeout=30, poll=0.05)
    listed = client.request("GET", "/api/runs", params={"workflow": "echo", "limit": 500})
    assert run["id"] in [item["id"] for item in listed["runs"]]


def test_a_request_without_an_answer_in_time_is_a_timeout(client):
    # 4 s: a wait over 5 s parks the run (no thread), and ?wait then answers at once with the waiting run.
    client.create_workflow(definition("slow_answer_flow", wait("long", 4)))
    with pytest.raises(PyFlowAPIError, match=r"no answer within 0.3 s") as caught:
        client.request("POST", "/api/workflows/slow_answer_flow/runs?wait=30", json={}, timeout=0.3)
    assert (caught.value.status, caught.value.code) == (None, "timeout")
    for run in client.request("GET", "/api/runs", params={"workflow": "slow_answer_flow"})["runs"]:
        client.cancel_execution(run["id"])


def test_a_template_whose_inputs_name_a_secret_is_copied_with_its_schema(client):
    """notification_flow's input webhook_url was shown as "***" in place of its schema: the copy was refused."""
    created = client.create_workflow(name="notice_copy", template="notification_flow")
    assert created["definition"]["inputs"]["properties"]["webhook_url"]["format"] == "uri"
    secret = {"name": "hook", "type": "http_request",
              "config": {"url": "https://example.org/hook", "headers": {"Authorization": "Bearer abc123456"}}}
    made = client.create_workflow({"name": "hooked", "inputs": {"type": "object", "properties": {
        "api_key": {"type": "string"}}}, "steps": [secret]})
    assert made["definition"]["inputs"]["properties"]["api_key"] == {"type": "string"}
    assert made["definition"]["steps"][0]["config"]["headers"]["Authorization"] == "***"  # still hidden
    client.delete_workflow("notice_copy")
    client.delete_workflow("hooked")


# -- README ---------------------------------------------------------------------------------------------

def readme_example() -> str:
    """The code of README's "From Python" section, as a reader copies it."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


def test_the_readme_example_runs_as_written_offline_against_a_fresh_server(tmp_path, monkeypatch, capsys):
    """It copied the shipped data_pipeline, which fetches a public URL: on a machine offline it failed."""
    with Servers(tmp_path) as servers:  # a fresh store; no token, no SMTP_HOST, no network needed
        server = servers.start()
        monkeypatch.setenv("WORKFLOW_API_URL", server.url)
        monkeypatch.delenv("WORKFLOW_API_TOKEN", raising=False)
        exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme"})
        [run] = Client(server.url).request("GET", "/api/runs", params={"workflow": "backup_notice"})["runs"]
    assert run["status"] == "succeeded"
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == ["render succeeded", "email succeeded"]
    assert sorted(printed[2:4]) == ["notify skipped", "webhook skipped"]  # no Apprise URL, no webhook given
    [error] = printed[4:]
    assert error.startswith(f"POST {server.url}/api/runs/{run['id']}/retry: 409 conflict: "), error
    [mail] = (server.storage / "outbox").glob("*.eml")  # no SMTP_HOST: the e-mail is a file
    assert "Backup done" in mail.read_text(encoding="utf-8")

