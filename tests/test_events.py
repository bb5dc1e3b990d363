"""Events and parked runs against a real ``run.py`` server (local mode, the JSON store): DESIGN section 12."""

from __future__ import annotations

import pytest

from tests.server import Server, Servers
from tests.waiting import wait_until


@pytest.fixture
def server(tmp_path):
    with Servers(tmp_path) as servers:
        yield servers.start()


def define(server: Server, definition: dict, start: bool = False) -> None:
    response = server.post("/api/workflows", json=definition)
    assert response.status_code == 201, response.text
    if start:
        assert server.post(f"/api/workflows/{definition['name']}/start").status_code == 200


def run_of(server: Server, run_id: str) -> dict:
    return server.get(f"/api/runs/{run_id}").json()


def until_status(server: Server, run_id: str, status: str, timeout: float = 15) -> dict:
    return wait_until(lambda: (run := run_of(server, run_id))["status"] == status and run, timeout,
                      message=f"run {run_id} {status}")


def start_run(server: Server, name: str, inputs: dict | None = None) -> str:
    response = server.post(f"/api/workflows/{name}/runs", json={"inputs": inputs or {}})
    assert response.status_code == 202, response.text
    return response.json()["id"]


ON_TICKET = {
    "name": "on_ticket",
    "trigger": {"type": "event", "event": "ticket.created", "filter": "{{ event.data.priority == 'high' }}"},
    "steps": [{"name": "say", "type": "log", "config": {"message": "ticket {{ inputs.data.title }}"}}],
}


def test_an_event_starts_each_matching_started_workflow_once_per_id(server):
    define(server, ON_TICKET)
    event = {"type": "ticket.created", "data": {"priority": "high", "title": "disk full"}, "id": "T-1"}
    not_started = server.post("/api/events", json=event).json()
    assert not_started["started"] == []  # only started workflows receive events
    assert server.post("/api/workflows/on_ticket/start").status_code == 200

    response = server.post("/api/events", json={**event, "id": "T-2"})
    assert response.status_code == 202
    answer = response.json()
    assert answer["event"] == {"id": "T-2", "type": "ticket.created"} and answer["resumed"] == []
    assert len(answer["started"]) == 1 and answer["runs"] == answer["started"]
    run = until_status(server, answer["started"][0], "succeeded")
    assert run["source"] == "event" and run["trigger_data"]["data"]["title"] == "disk full"
    assert run["steps"][0]["result"] == {"message": "ticket disk full"}

    again = server.post("/api/events", json={**event, "id": "T-2"}).json()
    assert again["duplicate"] is True and again["started"] == []
    low = server.post("/api/events", json={**event, "id": "T-3", "data": {"priority": "low"}}).json()
    assert low["started"] == []  # the filter is false
    other = server.post("/api/events", json={"type": "ticket.closed", "data": {"priority": "high"}}).json()
    assert other["started"] == []


def test_bad_events_and_bad_filters_are_refused_with_422(server):
    response = server.post("/api/events", json={"data": {"x": 1}})
    assert response.status_code == 422 and response.json()["error"]["details"][0]["path"] == "type"
    assert server.post("/api/events", json={"type": "a", "surprise": 1}).status_code == 422
    for key in (True, [1], "k" * 256):
        response = server.post("/api/events", json={"type": "a", "key": key})
        assert response.status_code == 422 and response.json()["error"]["details"][0]["path"] == "key"
    assert server.post("/api/events", data="{", headers={"Content-Type": "application/json"}).status_code == 400
    bad = {**ON_TICKET, "trigger": {"type": "event", "event": "x", "filter": "{{ event.data. }}"}}
    response = server.post("/api/workflows", json=bad)
    assert response.status_code == 422
    assert any(problem["path"] == "trigger.filter" for problem in response.json()["error"]["details"])
    plain = {**ON_TICKET, "trigger": {"type": "event", "event": "x", "filter": "priority is high"}}
    assert server.post("/api/workflows", json=plain).status_code == 422


WAITS = {
    "name": "waits_for_payment",
    "steps": [
        {"name": "paid", "type": "wait_for_event",
         "config": {"event": "order.paid", "key": "{{ inputs.order }}", "timeout": 600}},
        {"name": "ship", "type": "log",
         "config": {"message": "ship {{ inputs.order }}: {{ steps.paid.event.data.amount }}"}},
    ],
}


def test_wait_for_event_parks_the_run_until_its_event_with_its_key(server):
    define(server, WAITS)
    first, second = start_run(server, "waits_for_payment", {"order": "A-1"}), start_run(
        server, "waits_for_payment", {"order": "B-2"})
    parked = until_status(server, first, "waiting")
    until_status(server, second, "waiting")
    step = parked["steps"][0]
    assert step["status"] == "waiting" and step["wait"]["event"] == "order.paid" and step["wait"]["key"] == "A-1"
    listed = server.get("/api/runs", params={"status": "waiting"}).json()["runs"]
    assert {run["id"] for run in listed} == {first, second}

    # docs/events.md: a number is taken as its text, on both sides
    numbered = start_run(server, "waits_for_payment", {"order": 1234})
    assert until_status(server, numbered, "waiting")["steps"][0]["wait"]["key"] == "1234"
    assert server.post("/api/events", json={"type": "order.paid", "key": 1234, "data": {}}).json()["resumed"] == [
        numbered]
    until_status(server, numbered, "succeeded")
    other = server.post("/api/events", json={"type": "order.paid", "key": "C-3", "data": {}}).json()
    assert other["resumed"] == []
    answer = server.post("/api/events", json={"type": "order.paid", "key": "A-1", "data": {"amount": 42}}).json()
    assert answer["resumed"] == [first]
    run = until_status(server, first, "succeeded")
    assert run["steps"][0]["result"]["event"]["data"] == {"amount": 42}
    assert run["steps"][1]["result"] == {"message": "ship A-1: 42"}
    assert run_of(server, second)["status"] == "waiting"
    # Its log says it started once and went on after the wait, not that it started twice.
    messages = [line["message"] for line in server.get(f"/api/runs/{first}/logs").json()["logs"]]
    assert [message for message in messages if message.startswith("run ")] == [
        "run started (api), 2 steps", "run waiting (no thread, no slot)", "run resumed", "run succeeded"], messages


def test_a_timeout_follows_on_timeout(server):
    steps = lambda on_timeout: [  # noqa: E731
        {"name": "reply", "type": "wait_for_event",
         "config": {"event": "reply", "timeout": 1, "on_timeout": on_timeout}},
        {"name": "after", "type": "log", "config": {"message": "timed out: {{ steps.reply.timed_out }}"}}]
    define(server, {"name": "fails_on_timeout", "steps": steps("fail")})
    define(server, {"name": "goes_on", "steps": steps("continue")})
    failed = until_status(server, start_run(server, "fails_on_timeout"), "failed")
    assert failed["steps"][0]["error"] == "no event 'reply' within 1 s (on_timeout: fail)"
    assert "step 'reply' failed" in failed["error"]
    went_on = until_status(server, start_run(server, "goes_on"), "succeeded")
    assert went_on["steps"][0]["result"] == {"event": None, "timed_out": True}
    assert went_on["steps"][1]["result"] == {"message": "timed out: True"}


def test_a_run_end_publishes_an_event_another_workflow_follows_without_looping(server):
    define(server, {"name": "breaks", "steps": [
        {"name": "reply", "type": "wait_for_event", "config": {"event": "never", "timeout": 1}}]})
    define(server, {"name": "on_failure", "trigger": {"type": "event", "event": "run.failed",
                                                      "filter": "{{ event.data.workflow == 'breaks' }}"},
                    "steps": [{"name": "note", "type": "log", "config": {"message": "{{ inputs.data.error }}"}}]},
           start=True)
    # Follows every run end, its own included: it must not fire on its own runs (no loop).
    define(server, {"name": "follows_all", "trigger": {"type": "event", "event": "run.*"},
                    "steps": [{"name": "note", "type": "log", "config": {"message": "{{ inputs.type }}"}}]},
           start=True)
    broken = until_status(server, start_run(server, "breaks"), "failed")

    def follower(name: str) -> list[dict]:
        return server.get("/api/runs", params={"workflow": name}).json()["runs"]

    noted = wait_until(lambda: [r for r in follower("on_failure") if r["status"] == "succeeded"], 15)
    assert noted[0]["trigger_data"]["type"] == "run.failed"
    assert noted[0]["trigger_data"]["data"] == {"run_id": broken["id"], "workflow": "breaks", "status": "failed",
                                                "error": broken["error"]}
    # follows_all runs once for breaks' end and once for on_failure's end, never for its own ends.
    followed = wait_until(lambda: len(runs := [r for r in follower("follows_all") if r["status"] == "succeeded"]) >= 2
                          and runs, 15)
    seen = sorted(run["trigger_data"]["data"]["workflow"] for run in followed)
    assert seen == ["breaks", "on_failure"]
    assert len(follower("follows_all")) == 2


def test_a_follower_defined_or_changed_after_runs_ended_hears_the_next_run_ends(server):
    # Which workflows listen for events is worked out once per change of the served workflows: a follower
    # defined after runs ended, or changed by a PUT, must be heard from the next run's end on.
    define(server, {"name": "plain", "steps": [{"name": "say", "type": "log", "config": {"message": "hi"}}]})
    until_status(server, start_run(server, "plain"), "succeeded")  # nobody listens yet

    def follower_runs() -> list[dict]:
        return server.get("/api/runs", params={"workflow": "follower"}).json()["runs"]

    follower = {"name": "follower", "trigger": {"type": "event", "event": "run.failed"},
                "steps": [{"name": "note", "type": "log", "config": {"message": "{{ inputs.type }}"}}]}
    define(server, follower, start=True)
    until_status(server, start_run(server, "plain"), "succeeded")  # run.succeeded: not what it follows
    changed = server.put("/api/workflows/follower", json={**follower, "trigger": {
        "type": "event", "event": "run.succeeded", "filter": "{{ event.data.workflow == 'plain' }}"}})
    assert changed.status_code == 200, changed.text
    ended = until_status(server, start_run(server, "plain"), "succeeded")
    runs = wait_until(lambda: follower_runs(), 15, message="the changed follower's run")
    assert [run["trigger_data"]["data"]["run_id"] for run in runs] == [ended["id"]]


def test_a_chain_of_workflows_following_each_other_stops_after_8_links_with_one_warning(server):
    """docs/events.md: a -> b -> c ... stops starting runs after MAX_EVENT_DEPTH links, said in the server log."""
    define(server, {"name": "link0", "steps": [{"name": "note", "type": "log", "config": {"message": "0"}}]})
    for index in range(1, 11):
        define(server, {"name": f"link{index}", "steps": [{"name": "note", "type": "log", "config": {"message": "x"}}],
                        "trigger": {"type": "event", "event": "run.succeeded",
                                    "filter": f"{{{{ event.data.workflow == 'link{index - 1}' }}}}"}}, start=True)
    start_run(server, "link0")

    def runs(index: int) -> list[dict]:
        return server.get("/api/runs", params={"workflow": f"link{index}"}).json()["runs"]

    last = wait_until(lambda: [run for run in runs(8) if run["status"] == "succeeded"], 30)
    assert last[0]["trigger_data"]["depth"] == 8
    wait_until(lambda: "would start" in server.stderr, 15, message="the warning of the 9th link")
    assert runs(9) == [] and runs(10) == []
    # Only the workflow the chain would have gone on to is named, not every follower of run.succeeded.
    warnings = [line for line in server.stderr.splitlines() if "would start" in line]
    assert len(warnings) == 1 and "would start link9, but 9 runs' ends led to it (at most 8)" in warnings[0]


def test_a_parked_wait_survives_a_restart_and_a_waiting_run_can_be_cancelled(server):
    define(server, {"name": "sleeps", "steps": [{"name": "nap", "type": "wait", "config": {"seconds": 8}},
                                                {"name": "up", "type": "log", "config": {"message": "up"}}]})
    kept, dropped = start_run(server, "sleeps"), start_run(server, "sleeps")
    until_status(server, kept, "waiting")
    until_status(server, dropped, "waiting")
    cancelled = server.post(f"/api/runs/{dropped}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["steps"][0]["status"] == "cancelled"
    server.restart()
    assert run_of(server, kept)["status"] == "waiting"
    run = until_status(server, kept, "succeeded", timeout=20)
    assert run["steps"][0]["result"]["waited_s"] == 8 and run["steps"][1]["status"] == "succeeded"
    assert run_of(server, dropped)["status"] == "cancelled"
    assert server.post(f"/api/runs/{kept}/cancel").status_code == 409
