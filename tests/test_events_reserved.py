"""run.* events are PyFlow's own: POST /api/events refuses them whatever the role; a run's end still publishes them.

Also the bounds on a posted event's type, key and id (docs/events.md), and bodies that once answered 500.
"""

from __future__ import annotations

import pytest

from app import create_app, start_app
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS
from tests.server import Server, Servers
from tests.waiting import wait_until

ADMIN = "events-admin-token-0123456789abcdef"
LEADER = {"name": "leader", "steps": [
    {"name": "go", "type": "wait_for_event", "config": {"event": "go", "timeout": 600}},
    {"name": "done", "type": "log", "config": {"message": "done"}}]}
FOLLOWER = {"name": "follower",
            "trigger": {"type": "event", "event": "run.succeeded", "filter": "{{ event.data.workflow == 'leader' }}"},
            "steps": [{"name": "note", "type": "log", "config": {"message": "{{ inputs.data.run_id }}"}}]}
WAITER = {"name": "waiter", "steps": [
    {"name": "end", "type": "wait_for_event", "config": {"event": "run.succeeded", "key": "{{ inputs.run }}",
                                                         "timeout": 600}}]}


@pytest.fixture
def server(tmp_path):
    with Servers(tmp_path) as servers:
        yield servers.start(env={"WORKFLOW_API_TOKEN": ADMIN})


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def as_admin(server: Server, path: str, body: dict | None = None) -> dict:
    response = server.post(path, json=body, headers=bearer(ADMIN))
    assert response.status_code < 300, response.text
    return response.json()


def runs_of(server: Server, name: str) -> list[dict]:
    return server.get("/api/runs", params={"workflow": name}, headers=bearer(ADMIN)).json()["runs"]


def until_status(server: Server, run_id: str, status: str) -> dict:
    def reached() -> dict | None:
        run = server.get(f"/api/runs/{run_id}", headers=bearer(ADMIN)).json()
        return run if run["status"] == status else None

    return wait_until(reached, 15, message=f"run {run_id} {status}")


def test_a_posted_run_end_is_refused_to_operator_and_admin_and_a_real_end_still_follows(server):
    for definition in (LEADER, FOLLOWER, WAITER):
        as_admin(server, "/api/workflows", definition)
    as_admin(server, "/api/workflows/follower/start")
    operator = as_admin(server, "/api/tokens", {"name": "ops", "role": "operator"})["token"]
    leader = as_admin(server, "/api/workflows/leader/runs")["id"]
    waiter = as_admin(server, "/api/workflows/waiter/runs", {"inputs": {"run": leader}})["id"]
    until_status(server, leader, "waiting")
    until_status(server, waiter, "waiting")

    forged = {"type": "run.succeeded", "key": leader,
              "data": {"run_id": leader, "workflow": "leader", "status": "succeeded", "error": None}}
    for token in (operator, ADMIN):
        response = server.post("/api/events", json=forged, headers=bearer(token))
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_input" and error["details"][0]["path"] == "type"
        assert "published by PyFlow when runs end" in error["details"][0]["message"]
        assert error["message"].startswith("invalid event: type is reserved")
    # Taking the id of the end first would drop the real end as a duplicate.
    end_id = f"{leader}:succeeded:2026-12-05T10:00:00.000Z"
    taken = server.post("/api/events", json={"type": "order.paid", "id": end_id}, headers=bearer(operator))
    assert taken.status_code == 422 and taken.json()["error"]["details"][0]["path"] == "id"
    assert runs_of(server, "follower") == []
    assert [run["status"] for run in runs_of(server, "waiter")] == ["waiting"]
    assert [run["status"] for run in runs_of(server, "leader")] == ["waiting"]

    # The leader's real end publishes run.succeeded: the follower starts and the waiter goes on.
    go = server.post("/api/events", json={"type": "go"}, headers=bearer(operator)).json()
    assert go["resumed"] == [leader]
    until_status(server, leader, "succeeded")
    followed = wait_until(lambda: [run for run in runs_of(server, "follower") if run["status"] == "succeeded"], 15,
                          message="the follower's run")
    assert followed[0]["trigger_data"]["type"] == "run.succeeded"
    assert followed[0]["trigger_data"]["data"]["run_id"] == leader
    ended = until_status(server, waiter, "succeeded")
    assert ended["steps"][0]["result"]["event"]["data"]["run_id"] == leader
    assert len(runs_of(server, "follower")) == 1


@pytest.mark.parametrize(("body", "path", "words"), [
    ({"type": "run.failed"}, "type", "is reserved: run.* events (run.succeeded, run.failed, run.cancelled)"),
    ({"type": "run.cancelled"}, "type", "published by PyFlow when runs end"),
    ({"type": "  run.succeeded "}, "type", "is reserved"),
    ({"type": "run.custom"}, "type", "is reserved"),
    ({"type": "Run.Succeeded"}, "type", "is reserved"),
    ({"type": 7}, "type", "must be a string such as 'ticket.created', got int"),
    ({"type": "order\npaid"}, "type", "must not contain control or format characters, got U+000A at position 5"),
    ({"type": "order\u202e.paid"}, "type", "got U+202E at position 5"),
    ({"type": "a\x00"}, "type", "got U+0000 at position 1"),
    ({"type": "a", "key": "A-1\r\nforged log line"}, "key", "got U+000D at position 3"),
    ({"type": "a", "key": "k\x00"}, "key", "got U+0000"),
    ({"type": "a", "id": "i\x7f"}, "id", "got U+007F"),
    ({"type": "a", "id": "run_0001:succeeded:2026-12-05T10:00:00.000Z"}, "id", "is reserved: ids '<run id>:"),
    ({"type": "a", "id": "r:cancelled:"}, "id", "those of the run.* events PyFlow publishes when runs end"),
])
def test_a_reserved_or_unprintable_field_is_422_naming_it(client, body, path, words):
    response = client.post("/api/events", json=body)
    assert response.status_code == 422, response.get_data(as_text=True)
    problems = response.get_json()["error"]["details"]
    assert problems[0]["path"] == path and words in problems[0]["message"], problems


def test_only_the_run_namespace_is_reserved(client):
    assert client.post("/api/events", json={"type": "run.succeeded"}).status_code == 422
    for body in ({"type": "runner.started"}, {"type": "order.run.succeeded"}, {"type": "run"},
                 {"type": "order.paid", "key": "Zoë Müller", "id": "pay:77"}, {"type": "deploy", "id": "d:done:1"}):
        response = client.post("/api/events", json=body)
        assert response.status_code == 202, (body, response.get_data(as_text=True))


@pytest.mark.parametrize("raw", [
    b'{"type": "a", "id": "\\ud800"}',
    b'{"type": "a", "key": "\\udfff"}',
    b'{"type": "\\ud83d"}',
    b'{"type": "ticket.created", "data": {"title": "\\uDC00"}}',
])
def test_half_a_surrogate_pair_is_400_not_500(client, raw):
    """A lone surrogate escape is JSON that no store can write (UTF-8): refused like malformed JSON."""
    defined = client.post("/api/workflows", json={
        "name": "on_ticket", "trigger": {"type": "event", "event": "ticket.created"},
        "steps": [{"name": "say", "type": "log", "config": {"message": "x"}}]})
    assert defined.status_code == 201 and client.post("/api/workflows/on_ticket/start").status_code == 200
    response = client.post("/api/events", data=raw, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "is half of a UTF-16 surrogate pair" in response.get_json()["error"]["message"]
    # A pair is one character: taken.
    paired = client.post("/api/events", data=b'{"type": "ticket.created", "data": {"t": "\\ud83d\\ude00"}}',
                         content_type="application/json")
    assert paired.status_code == 202 and len(paired.get_json()["started"]) == 1


@pytest.fixture(params=["json", "postgres"])
def store_client(request, storage, key_file):
    """A client of an app on the JSON store or on a PostgreSQL database of the test's own."""
    settings = {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_KEY_FILE": str(key_file),
                "WORKFLOW_CLASSES": WORKFLOWS}
    if request.param == "postgres":
        settings["WORKFLOW_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    app = start_app(create_app(settings))
    yield app.test_client()
    app.extensions["pyflow"].shutdown(timeout=2)


@pytest.mark.parametrize(("order", "words"), [
    ("A-1\x00", "contains a control or format character (got U+0000 at position 3)"),
    ("A-1\nB", "(got U+000A at position 3)"),
    ("k" * 256, "is 256 characters long (at most 255)"),
])
def test_a_waiting_step_whose_key_no_event_can_carry_fails_naming_it(store_client, order, words):
    """A NUL in the key stopped the run's thread on PostgreSQL (the run stayed running); elsewhere it waited in vain."""
    waits = {"name": "waits", "steps": [{"name": "paid", "type": "wait_for_event",
                                         "config": {"event": "order.paid", "key": "{{ inputs.order }}"}}]}
    assert store_client.post("/api/workflows", json=waits).status_code == 201
    run_id = store_client.post("/api/workflows/waits/runs", json={"inputs": {"order": order}}).get_json()["id"]
    run = wait_until(lambda: (run := store_client.get(f"/api/runs/{run_id}").get_json())["status"] not in (
        "queued", "running") and run, 15, message=f"run {run_id} to end or wait")
    assert run["status"] == "failed", run
    assert words in run["steps"][0]["error"] and "no event can carry such a key" in run["steps"][0]["error"]
    assert run["steps"][0]["attempts"] == 1
