"""Workflow definitions over REST: create, read, version, delete; restarts; YAML bodies; inputs schemas."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from app import create_app, start_app
from app.errors import ConfigError
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS, wait_until

HELLO = {
    "name": "hello",
    "description": "Says hello.",
    "inputs": {"type": "object", "properties": {"who": {"type": "string"}}},
    "steps": [{"name": "say", "type": "log", "config": {"message": "hello {{ inputs.who }}"}}],
}


def run(client, name: str, inputs: dict | None = None) -> dict:
    response = client.post(f"/api/workflows/{name}/runs?wait=10", json={"inputs": inputs or {}})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@contextmanager
def started_app(storage, **settings):
    """An app on ``storage`` (with ``settings``), shut down when the block ends (for tests that restart it)."""
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS,
                                **settings}))
    try:
        yield app
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


def test_create_then_read_and_run(client):
    response = client.post("/api/workflows", json=HELLO)
    assert response.status_code == 201
    assert response.headers["Location"] == "/api/workflows/hello"
    created = response.get_json()
    assert {key: created[key] for key in ("name", "description", "origin", "version", "definition")} == {
        "name": "hello", "description": "Says hello.", "origin": "api", "version": 1, "definition": HELLO}
    assert created["actions"] == [{"name": "say", "type": "log"}]

    assert client.get("/api/workflows/hello").get_json() == created
    assert "hello" in [summary["name"] for summary in client.get("/api/workflows").get_json()["workflows"]]
    finished = run(client, "hello", {"who": "Ann"})
    assert (finished["status"], finished["version"]) == ("succeeded", 1)
    assert finished["steps"][0]["result"] == {"message": "hello Ann"}


@pytest.mark.parametrize(("name", "where"), [
    ("hello", "change it with PUT /api/workflows/hello"),  # made through the API
    ("echo", "a workflow named 'echo' exists"),  # a Python class
    ("notification_flow", "a workflow named 'notification_flow' exists"),  # a definition file
])
def test_a_taken_name_is_a_conflict(client, name, where):
    assert client.post("/api/workflows", json=HELLO).status_code == 201
    response = client.post("/api/workflows", json={**HELLO, "name": name})
    assert response.status_code == 409
    assert where in response.get_json()["error"]["message"]


def test_an_invalid_definition_lists_its_problems(client):
    response = client.post("/api/workflows", json={"name": "broken", "steps": [
        {"name": "get", "type": "http_request", "config": {"uri": "http://a.example"}},
        {"name": "after", "type": "log", "depends_on": ["nope"], "config": {"message": "x"}}]})
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input"
    assert [problem["path"] for problem in error["details"]] == [
        "steps[0].config.uri", "steps[0].config.url", "steps[1].depends_on"]
    assert client.get("/api/workflows/broken").status_code == 404


def test_a_template_syntax_error_is_refused_at_post_and_put_not_at_run_time(client, runtime):
    typo = {"name": "typo", "steps": [{"name": "say", "type": "log", "config": {"message": "{{ inputs.x | }}"}},
                                      {"name": "bad", "type": "log", "colour": "red", "config": {"message": "x"}}]}
    response = client.post("/api/workflows", json=typo)
    assert response.status_code == 422
    assert response.get_json()["error"]["details"] == [
        {"path": "steps[1].colour",
         "message": "unknown key; a step has cache, compensate, config, depends_on, limits, name, on_failure, retries, "
                    "timeout, type, when"},
        {"path": "steps[0].config.message",
         "message": "template syntax error: expected token 'name', got 'end of print statement'"},
    ]
    assert runtime.store.get_definition("typo") is None

    assert client.post("/api/workflows", json=HELLO).status_code == 201
    broken = {**HELLO, "steps": [{"name": "say", "type": "log", "when": "{% if %}", "config": {"message": "hi"}}]}
    response = client.put("/api/workflows/hello", json=broken)
    assert response.status_code == 422
    [problem] = response.get_json()["error"]["details"]
    assert problem["path"] == "steps[0].when" and problem["message"].startswith("template syntax error: ")
    assert client.get("/api/workflows/hello").get_json()["version"] == 1


@pytest.mark.parametrize(("body", "content_type", "status"), [
    ("name: [x", "application/yaml", 400),
    ('{"name": ', "application/json", 400),
    ('["a list"]', "application/json", 400),
    ("name: x", "text/plain", 415),
])
def test_malformed_bodies(client, body, content_type, status):
    response = client.post("/api/workflows", data=body, content_type=content_type)
    assert response.status_code == status
    assert response.get_json()["error"]["message"]


def test_a_yaml_body_is_accepted(client):
    body = "name: from_yaml\nsteps:\n  - {name: say, type: log, config: {message: 'hi {{ inputs.who }}'}}\n"
    response = client.post("/api/workflows", data=body, content_type="application/yaml")
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["definition"]["steps"][0]["config"] == {"message": "hi {{ inputs.who }}"}
    assert run(client, "from_yaml", {"who": "Bo"})["steps"][0]["result"] == {"message": "hi Bo"}


def test_put_makes_a_new_version_and_runs_keep_theirs(client, runtime):
    v1 = {"name": "versioned", "steps": [{"name": "pause", "type": "wait", "config": {"seconds": 0.5}},
                                         {"name": "say", "type": "log", "config": {"message": "v1"}}]}
    v2 = {"name": "versioned", "steps": [{"name": "shout", "type": "log", "config": {"message": "v2"}}]}
    assert client.post("/api/workflows", json=v1).status_code == 201
    early = client.post("/api/workflows/versioned/runs", json={}).get_json()
    wait_until(lambda: client.get(f"/api/runs/{early['id']}").get_json()["status"] == "running", message="running")

    response = client.put("/api/workflows/versioned", json=v2)
    assert response.status_code == 200
    assert (response.get_json()["version"], response.get_json()["definition"]) == (2, v2)
    late = run(client, "versioned")

    assert runtime.engine.wait(early["id"], 5)
    early = client.get(f"/api/runs/{early['id']}").get_json()
    assert (early["status"], early["version"]) == ("succeeded", 1)
    assert [(step["name"], step["result"]) for step in early["steps"]][1] == ("say", {"message": "v1"})
    assert (late["status"], late["version"]) == ("succeeded", 2)
    assert [(step["name"], step["result"]) for step in late["steps"]] == [("shout", {"message": "v2"})]


def test_a_failed_run_of_an_old_version_is_retried_with_its_own_steps(client, runtime, storage):
    v1 = {"name": "gated", "steps": [
        {"name": "gate", "type": "file", "retries": 0, "config": {"operation": "read", "path": "gate.txt"}},
        {"name": "say", "type": "log", "config": {"message": "v1 after {{ steps.gate.content }}"}}]}
    assert client.post("/api/workflows", json=v1).status_code == 201
    failed = run(client, "gated")
    assert failed["status"] == "failed"
    assert client.put("/api/workflows/gated", json={"steps": [v1["steps"][1]]}).status_code == 200

    (storage / "files").mkdir(parents=True, exist_ok=True)
    (storage / "files" / "gate.txt").write_text("open", encoding="utf-8")
    assert client.post(f"/api/runs/{failed['id']}/retry").status_code == 200
    assert runtime.engine.wait(failed["id"], 5)
    retried = client.get(f"/api/runs/{failed['id']}").get_json()
    assert (retried["status"], retried["version"]) == ("succeeded", 1)
    assert retried["steps"][1]["result"] == {"message": "v1 after open"}


@pytest.mark.parametrize(("name", "body", "status", "words"), [
    ("nope", HELLO, 404, "no workflow named 'nope'"),
    ("hello", {**HELLO, "name": "other"}, 422, "the definition is named 'other', the URL 'hello'"),
    ("hello", {**HELLO, "steps": []}, 422, "must be a non-empty list of steps"),
    ("echo", HELLO, 409, "only workflows created through the API can be changed or deleted through it"),
])
def test_put_refusals(client, name, body, status, words):
    assert client.post("/api/workflows", json=HELLO).status_code == 201
    response = client.put(f"/api/workflows/{name}", json=body)
    assert response.status_code == status
    assert words in response.get_json()["error"]["message"]
    assert client.get("/api/workflows/hello").get_json()["version"] == 1


def test_delete_only_what_the_api_made(client):
    assert client.post("/api/workflows", json=HELLO).status_code == 201
    assert client.put("/api/workflows/hello", json=HELLO).status_code == 200
    for name in ("echo", "data_pipeline"):
        response = client.delete(f"/api/workflows/{name}")
        assert response.status_code == 409
        assert "only workflows created through the API" in response.get_json()["error"]["message"]

    response = client.delete("/api/workflows/hello")
    assert (response.status_code, response.data) == (204, b"")
    assert "Content-Type" not in response.headers  # nothing, so no type
    assert client.get("/api/workflows/hello").status_code == 404
    assert client.delete("/api/workflows/hello").status_code == 404
    # Every version went with it: the name starts over.
    assert client.post("/api/workflows", json=HELLO).get_json()["version"] == 1


def test_definitions_survive_a_restart(storage):
    with started_app(storage) as first:
        client = first.test_client()
        assert client.post("/api/workflows", json=HELLO).status_code == 201
        changed = {**HELLO, "description": "Says hello, louder."}
        assert client.put("/api/workflows/hello", json=changed).status_code == 200
        assert client.post("/api/workflows", json={**HELLO, "name": "gone"}).status_code == 201
        assert client.delete("/api/workflows/gone").status_code == 204

    with started_app(storage) as second:
        client = second.test_client()
        summary = client.get("/api/workflows/hello").get_json()
        assert (summary["version"], summary["origin"], summary["definition"]) == (2, "api", changed)
        assert client.get("/api/workflows/gone").status_code == 404
        assert run(client, "hello", {"who": "again"})["steps"][0]["result"] == {"message": "hello again"}


def test_the_inputs_schema_is_enforced(client):
    typed = {"name": "typed", "inputs": {"type": "object", "properties": {"count": {"type": "integer"}},
                                         "required": ["count"]},
             "steps": [{"name": "double", "type": "log", "config": {"message": "{{ inputs.count * 2 }}"}}]}
    assert client.post("/api/workflows", json=typed).status_code == 201

    wrong = client.post("/api/workflows/typed/runs", json={"inputs": {"count": "three"}})
    assert wrong.status_code == 422
    assert wrong.get_json()["error"]["details"] == [{"path": "count", "message": "'three' is not of type 'integer'"}]
    missing = client.post("/api/workflows/typed/runs", json={"inputs": {}})
    assert missing.status_code == 422
    assert "'count' is a required property" in missing.get_json()["error"]["message"]
    assert run(client, "typed", {"count": 3})["steps"][0]["result"] == {"message": "6"}


# -- a definition that cannot be bound is refused and never stored (issue 12 item 7) ---------------------------
UNBINDABLE = {"name": "ticker", "trigger": {"type": "interval", "seconds": "{{ 1/0 }}"},
              "steps": [{"name": "say", "type": "log", "config": {"message": "tick"}}]}


def test_a_trigger_that_cannot_be_bound_is_refused_and_not_stored(client, runtime, storage):
    response = client.post("/api/workflows", json=UNBINDABLE)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["details"][0]["path"] == "trigger"
    assert "ZeroDivisionError" in error["details"][0]["message"]
    assert runtime.store.get_definition("ticker") is None
    assert client.get("/api/workflows/ticker").status_code == 404
    # A PUT of a good definition cannot bring it in either.
    assert client.post("/api/workflows", json=HELLO).status_code == 201
    put = client.put("/api/workflows/hello", json={**UNBINDABLE, "name": "hello"})
    assert put.status_code == 422
    assert runtime.store.get_definition("hello")["version"] == 1


def test_a_stored_definition_that_no_longer_binds_is_skipped_and_can_be_deleted(storage, caplog):
    with started_app(storage) as first:
        first.extensions["pyflow"].store.save_definition("ticker", UNBINDABLE)  # stored before binding was checked
        assert first.test_client().post("/api/workflows", json=HELLO).status_code == 201
    with started_app(storage) as second:  # starts: the bad one is skipped, naming it
        client = second.test_client()
        assert "stored definition ticker v1 is not loaded" in caplog.text
        # Not served (no runs), but shown with why, so that a PUT can fix it (the designer opens it) or DELETE drop it.
        shown = client.get("/api/workflows/ticker")
        assert shown.status_code == 200 and shown.get_json()["error"].startswith("not loaded: ")
        assert client.post("/api/workflows/ticker/runs", json={}).status_code == 404
        assert run(client, "hello", {"who": "Bo"})["status"] == "succeeded"
        assert client.delete("/api/workflows/ticker").status_code == 204
        assert second.extensions["pyflow"].store.get_definition("ticker") is None
        assert client.delete("/api/workflows/ticker").status_code == 404


@pytest.mark.parametrize(("change", "path", "setting"), [
    ({"step_timeout": 1e12}, "step_timeout", "WORKFLOW_MAX_STEP_TIMEOUT"),
    ({"max_parallel_steps": 1500}, "max_parallel_steps", "WORKFLOW_MAX_PARALLEL"),
    ({"max_retries": 10**9}, "max_retries", "WORKFLOW_MAX_RETRIES"),
    ({"steps": [{"name": "w", "type": "wait", "config": {"seconds": 1e12}}]}, "steps[0].config.seconds",
     "WORKFLOW_MAX_WAIT"),
    ({"steps": [{"name": "w", "type": "wait", "config": {"seconds": "1e12"}}]}, "steps[0].config.seconds",
     "WORKFLOW_MAX_WAIT"),
    ({"steps": [{"name": "w", "type": "log", "timeout": 1e12, "config": {"message": "x"}}]}, "steps[0].timeout",
     "WORKFLOW_MAX_STEP_TIMEOUT"),
    ({"steps": [{"name": "w", "type": "log", "retries": 1000, "config": {"message": "x"}}]}, "steps[0].retries",
     "WORKFLOW_MAX_RETRIES"),
    ({"steps": [{"name": "h", "type": "http_request", "config": {"url": "http://127.0.0.1:9", "timeout": 1e12}}]},
     "steps[0].config.timeout", "WORKFLOW_MAX_STEP_TIMEOUT"),
    ({"steps": [{"name": "l", "type": "loop", "config": {"items": [1, 2], "max_parallel": 1500, "steps": [
        {"name": "s", "type": "log", "config": {"message": "x"}}]}}]}, "steps[0].config.max_parallel",
     "WORKFLOW_MAX_PARALLEL"),
    ({"steps": [{"name": "l", "type": "loop", "config": {"items": list(range(10001)), "steps": [
        {"name": "s", "type": "log", "config": {"message": "x"}}]}}]}, "steps[0].config.items",
     "WORKFLOW_MAX_LOOP_ITEMS"),
    ({"steps": [{"name": "l", "type": "loop", "config": {"items": [1], "steps": [
        {"name": "s", "type": "wait", "config": {"seconds": 1e9}}]}}]}, "steps[0].config.steps[0].config.seconds",
     "WORKFLOW_MAX_WAIT"),
])
def test_a_value_past_its_cap_is_refused_with_its_path(client, runtime, change, path, setting):
    response = client.post("/api/workflows", json={**HELLO, **change})
    assert response.status_code == 422, response.get_json()
    details = response.get_json()["error"]["details"]
    assert [detail["path"] for detail in details] == [path]
    assert setting in details[0]["message"]
    assert runtime.store.get_definition("hello") is None


def test_a_stored_definition_past_a_lowered_cap_is_skipped(storage, caplog):
    with started_app(storage) as first:
        assert first.test_client().post("/api/workflows", json={**HELLO, "max_parallel_steps": 8}).status_code == 201
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS,
                      "WORKFLOW_MAX_PARALLEL": 4}))
    try:
        assert app.test_client().post("/api/workflows/hello/runs", json={}).status_code == 404  # not served
        assert "WORKFLOW_MAX_PARALLEL (4)" in app.test_client().get("/api/workflows/hello").get_json()["error"]
        assert "stored definition hello v1 is not loaded" in caplog.text
        assert "WORKFLOW_MAX_PARALLEL (4)" in caplog.text
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


# -- steps this server could never run as written (DESIGN section 10) ------------------------------------------
SHELL_OFF = "shell commands are disabled on this server; set WORKFLOW_ALLOW_SHELL=true to allow them"
SHELL = {"name": "sh", "type": "shell", "config": {"command": "true"}}


def _loop(*steps: dict) -> dict:
    return {"name": "each", "type": "loop", "config": {"items": [1], "steps": list(steps)}}


@pytest.mark.parametrize(("steps", "path", "message"), [
    ([SHELL], "steps[0].type", SHELL_OFF),
    ([_loop(_loop(SHELL))], "steps[0].config.steps[0].config.steps[0].type", SHELL_OFF),
    ([{**HELLO["steps"][0], "compensate": {"type": "shell", "command": "true"}}], "steps[0].compensate.type",
     SHELL_OFF),
    ([{"name": "f", "type": "file", "config": {"operation": "read", "path": "/etc/passwd"}}], "steps[0].config.path",
     "path '/etc/passwd' is outside WORKFLOW_FILES_ROOT"),
    ([{"name": "f", "type": "file", "config": {"operation": "copy", "path": "in.txt", "destination": "../k"}}],
     "steps[0].config.destination", "destination '../k' is outside WORKFLOW_FILES_ROOT"),
    ([{"name": "m", "type": "send_email", "config": {"to": "a@x.org", "attachments": ["a.txt", {"path": "~/x"}]}}],
     "steps[0].config.attachments[1].path", "attachments[1].path '~/x' is outside WORKFLOW_FILES_ROOT"),
    ([{"name": "p", "type": "pdf_text", "config": {"file": "/etc/passwd"}}], "steps[0].config.file",
     "file '/etc/passwd' is outside WORKFLOW_FILES_ROOT"),
    ([{"name": "x", "type": "extract_pdf_data", "config": {"file": "a.pdf", "templates_dir": "/usr/share"}}],
     "steps[0].config.templates_dir", "templates_dir '/usr/share' is outside WORKFLOW_FILES_ROOT"),
    ([{"name": "n", "type": "notify", "config": {"urls": "json://127.0.0.1:9/", "body": "x", "attach": "../../k"}}],
     "steps[0].config.attach", "attach '../../k' is outside WORKFLOW_FILES_ROOT"),
    ([{"name": "n", "type": "notify", "config": {"urls": ["json://127.0.0.1:9/?keyfile=/etc/k"], "body": "x"}}],
     "steps[0].config.urls[0]", "urls[0] option 'keyfile' '/etc/k' is outside WORKFLOW_FILES_ROOT"),
    ([{**HELLO["steps"][0], "compensate": {"type": "file", "config": {"operation": "delete", "path": "/"}}}],
     "steps[0].compensate.config.path", "path '/' is outside WORKFLOW_FILES_ROOT"),
])
def test_a_step_that_could_never_run_is_refused_naming_it(client, runtime, steps, path, message):
    """A shell step without WORKFLOW_ALLOW_SHELL, a literal path outside the files root: 422, nothing stored."""
    definition = {**HELLO, "steps": steps}
    for response in (client.post("/api/workflows/validate", json=definition),
                     client.post("/api/workflows", json=definition)):
        assert response.status_code == 422, response.get_json()
        details = response.get_json()["error"]["details"]
        assert [detail["path"] for detail in details] == [path]
        assert details[0]["message"].startswith(message), details
    assert runtime.store.get_definition("hello") is None
    assert client.get("/api/workflows/hello").status_code == 404
    # Nor can a PUT bring it into a stored definition.
    assert client.post("/api/workflows", json=HELLO).status_code == 201
    assert client.put("/api/workflows/hello", json=definition).status_code == 422
    assert runtime.store.get_definition("hello")["version"] == 1


def test_a_templated_or_inside_path_is_taken_and_checked_when_rendered(client):
    definition = {**HELLO, "steps": [
        {"name": "w", "type": "file", "config": {"operation": "write", "path": "out/../a.txt", "content": "x"}},
        {"name": "r", "type": "file", "config": {"operation": "read", "path": "{{ inputs.who }}"}}]}
    assert client.post("/api/workflows", json=definition).status_code == 201
    finished = run(client, "hello", {"who": "/etc/passwd"})
    assert finished["status"] == "failed"
    assert "file: path '/etc/passwd' is outside WORKFLOW_FILES_ROOT" in finished["steps"][1]["error"]


def test_a_shell_step_is_taken_where_commands_are_allowed(storage):
    with started_app(storage, WORKFLOW_ALLOW_SHELL=True) as app:
        created = app.test_client().post("/api/workflows", json={**HELLO, "steps": [SHELL]})
        assert created.status_code == 201, created.get_json()


def test_a_stored_shell_step_where_commands_are_now_disallowed_is_not_loaded(storage, caplog):
    with started_app(storage, WORKFLOW_ALLOW_SHELL=True) as first:
        client = first.test_client()
        assert client.post("/api/workflows", json={**HELLO, "steps": [SHELL]}).status_code == 201
        assert client.post("/api/workflows", json={**HELLO, "name": "other"}).status_code == 201
    with started_app(storage) as second:  # starts, serving the others; this one is shown with why, as any unloadable
        client = second.test_client()
        assert "stored definition hello v1 is not loaded" in caplog.text
        shown = client.get("/api/workflows/hello").get_json()
        assert shown["error"] == f"not loaded: api:hello v1: steps[0].type: {SHELL_OFF}"
        assert client.post("/api/workflows/hello/runs", json={}).status_code == 404
        assert run(client, "other", {"who": "Al"})["status"] == "succeeded"
        # A PUT without the shell step serves it again.
        assert client.put("/api/workflows/hello", json=HELLO).status_code == 200
        assert run(client, "hello", {"who": "Bo"})["status"] == "succeeded"


def test_a_definition_file_with_a_shell_step_stops_start_up_where_commands_are_disallowed(tmp_path):
    folder = tmp_path / "definitions"
    folder.mkdir()
    (folder / "sh.yaml").write_text("name: sh\nsteps: [{name: sh, type: shell, config: {command: 'true'}}]\n",
                                    encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                              "WORKFLOW_DEFINITIONS_PATH": str(folder)}))
    assert caught.value.message == f"{folder / 'sh.yaml'}: steps[0].type: {SHELL_OFF}"


def test_a_yaml_alias_bomb_is_refused_small(client, runtime):
    bomb = "\n".join(["name: bomb", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
                     + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)])
    response = client.post("/api/workflows", data=bomb, content_type="application/yaml")
    assert response.status_code == 400
    assert "YAML aliases are not accepted" in response.get_json()["error"]["message"]
    assert "line 2 column 4" in response.get_json()["error"]["message"]
    assert len(response.data) < 1000
    assert runtime.store.get_definition("bomb") is None


@pytest.mark.parametrize(("ref", "words"), [
    ("http://127.0.0.1:9/schema.json", "$ref 'http://127.0.0.1:9/schema.json' points outside the schema"),
    ("file:///etc/passwd", "never fetches a remote or file $ref"),
])
def test_an_inputs_schema_with_an_outside_ref_is_refused(client, ref, words):
    response = client.post("/api/workflows", json={**HELLO, "inputs": {"properties": {"who": {"$ref": ref}}}})
    assert response.status_code == 422
    details = response.get_json()["error"]["details"]
    assert details[0]["path"] == "inputs.properties.who.$ref"
    assert words in details[0]["message"]


def test_an_inputs_format_nothing_checks_is_refused_with_its_path(client, runtime):
    inputs = {"properties": {"who": {"type": "string", "format": "duration"}}}
    response = client.post("/api/workflows", json={**HELLO, "inputs": inputs})
    assert response.status_code == 422
    details = response.get_json()["error"]["details"]
    assert details[0]["path"] == "inputs.properties.who.format"
    assert "format 'duration' is not checked, so any text would pass" in details[0]["message"]
    assert runtime.store.get_definition("hello") is None


def test_inputs_formats_are_checked(client):
    inputs = {"properties": {"who": {"type": "string", "format": "uri"}, "at": {"format": "date-time"}}}
    assert client.post("/api/workflows", json={**HELLO, "inputs": inputs}).status_code == 201
    response = client.post("/api/workflows/hello/runs", json={"inputs": {"who": "not a uri", "at": "today"}})
    assert response.status_code == 422
    assert {(detail["path"], detail["message"]) for detail in response.get_json()["error"]["details"]} == {
        ("who", "'not a uri' is not a 'uri'"), ("at", "'today' is not a 'date-time'")}
    assert run(client, "hello", {"who": "https://example.org/", "at": "2026-12-05T01:00:00Z"})["status"] == "succeeded"


def test_an_input_date_that_does_not_exist_says_why(client):
    inputs = {"properties": {"day": {"type": "string", "format": "date"}}}
    assert client.post("/api/workflows", json={**HELLO, "inputs": inputs}).status_code == 201
    response = client.post("/api/workflows/hello/runs", json={"inputs": {"day": "2021-02-30"}})
    assert response.status_code == 422
    assert response.get_json()["error"]["details"] == [
        {"path": "day", "message": "'2021-02-30' is not a 'date': day is out of range for month"}]
