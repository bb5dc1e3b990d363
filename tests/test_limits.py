"""Concurrency limits: WORKFLOW_MAX_CONCURRENT across every source, and a workflow's max_concurrent_runs
with overlap "queue" (later runs wait) or "skip" (scheduled events that come while one runs are dropped)."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from app import create_app, start_app
from tests.conftest import TEST_SETTINGS
from tests.fixtures import (
    DURABLE_WORKFLOWS,
    CountingAction,
    CountingIntervalTrigger,
    arrivals,
    gate,
    release_gates,
    reset_gates,
    wait_until,
)

LIMIT = 2


@pytest.fixture
def make_client(storage):
    """A test client of an app with the given settings; everything is stopped at the end."""
    apps = []

    def make(**settings):
        app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                          "WORKFLOW_CLASSES": DURABLE_WORKFLOWS, **settings}))
        apps.append(app)
        return app.test_client()

    CountingAction.reset()
    CountingIntervalTrigger.fired = 0
    reset_gates()
    yield make
    release_gates()
    for app in apps:
        app.extensions["pyflow"].shutdown(timeout=5)


def runs_of(client, workflow: str | None = None, status: str | None = None) -> list[dict]:
    query = {"limit": "500", **({"workflow": workflow} if workflow else {}), **({"status": status} if status else {})}
    response = client.get("/api/runs", query_string=query)
    assert response.status_code == 200
    return response.get_json()["runs"]


def settled(client, workflow: str | None = None) -> list[dict]:
    """All runs, once none is queued or running."""
    def quiet():
        runs = runs_of(client, workflow)
        return runs if all(run["status"] not in ("queued", "running") for run in runs) else None
    return wait_until(quiet, timeout=20, interval=0.05, message="every run finished")


def sample_running(client, until, workflow: str | None = None) -> int:
    """The most runs the API showed running at once, sampled until ``until(runs)`` holds for the listed runs."""
    most = 0

    def sampled() -> bool:
        nonlocal most
        most = max(most, len(runs_of(client, workflow, status="running")))
        return until(runs_of(client, workflow))

    wait_until(sampled, timeout=20, interval=0.01, message="the runs sampled")
    return most


def succeeded(runs: list[dict], source: str | None = None) -> int:
    """How many of ``runs`` (from ``source``, if given) succeeded."""
    return sum(run["status"] == "succeeded" and source in (None, run["source"]) for run in runs)


def test_the_global_limit_holds_across_api_runs_a_started_trigger_and_polls(make_client):
    client = make_client(WORKFLOW_MAX_CONCURRENT=LIMIT)

    assert client.post("/api/workflows/limit_tick/start").status_code == 200
    for _ in range(6):
        assert client.post("/api/workflows/limit_api/runs").status_code == 202
    assert len(client.post("/api/workflows/limit_poll/poll").get_json()["runs"]) == 4
    # Sampled until every API and poll run is done and the trigger's runs have come twice.
    most_listed = sample_running(client, lambda runs: succeeded(runs, "api") == 6 and succeeded(runs, "poll") == 4
                                 and succeeded(runs, "schedule") >= 2)
    assert client.post("/api/workflows/limit_tick/stop").status_code == 200
    runs = settled(client)

    assert Counter(run["source"] for run in runs).keys() == {"api", "poll", "schedule"}
    assert {run["status"] for run in runs} == {"succeeded"}
    assert most_listed <= LIMIT
    assert CountingAction.peak["limits"] == LIMIT, "the limit was reached, never passed"


def test_max_concurrent_runs_with_overlap_queue_makes_the_next_run_wait_its_turn(make_client):
    client = make_client()
    first = client.post("/api/workflows/one_at_a_time/runs").get_json()["id"]
    wait_until(lambda: arrivals("one_at_a_time") == 1, timeout=10, message="first run at the gate")

    second = client.post("/api/workflows/one_at_a_time/runs").get_json()["id"]
    # Other workflows still run: only this workflow is at its limit, not the engine.
    assert client.post("/api/workflows/echo/runs?wait=10", json={"inputs": {"text": "x"}}).status_code == 200
    assert client.get(f"/api/runs/{second}").get_json()["status"] == "queued"
    assert arrivals("one_at_a_time") == 1

    gate("one_at_a_time").set()
    runs = {run["id"]: run for run in settled(client, "one_at_a_time")}

    assert runs[first]["status"] == runs[second]["status"] == "succeeded"
    first_ended = runs[first]["history"][-1]["at"]
    second_started = next(entry["at"] for entry in runs[second]["history"] if entry["to"] == "running")
    assert first_ended <= second_started


def test_max_concurrent_runs_with_overlap_skip_drops_events_while_a_run_works(make_client):
    client = make_client()

    assert client.post("/api/workflows/no_overlap/start").status_code == 200
    most_listed = sample_running(client, lambda runs: succeeded(runs) >= 3, "no_overlap")
    assert client.post("/api/workflows/no_overlap/stop").status_code == 200
    runs = settled(client, "no_overlap")

    fired = CountingIntervalTrigger.fired
    assert 2 <= len(runs) < fired, f"{len(runs)} runs for {fired} events: events during a run are skipped"
    assert {run["status"] for run in runs} == {"succeeded"}
    assert most_listed <= 1
    assert CountingAction.peak["no_overlap"] == 1, "never two runs at once"


def test_overlap_skip_also_skips_while_a_run_waits_for_a_free_slot(make_client):
    client = make_client(WORKFLOW_MAX_CONCURRENT=1)
    client.post("/api/workflows/gated/runs", json={"inputs": {"text": "holds the only slot"}})
    wait_until(lambda: arrivals("gated") == 1, timeout=10, message="the slot taken")

    assert client.post("/api/workflows/no_overlap/start").status_code == 200
    wait_until(lambda: CountingIntervalTrigger.fired >= 10, timeout=10, message="ten events fired")
    assert client.post("/api/workflows/no_overlap/stop").status_code == 200

    waiting = runs_of(client, "no_overlap")
    assert [run["status"] for run in waiting] == ["queued"], "one waiting run is enough; the rest are skipped"
    gate("gated").set()
    assert [run["status"] for run in settled(client, "no_overlap")] == ["succeeded"]


def test_cancelling_the_run_at_the_limit_lets_the_queued_one_start(make_client):
    client = make_client()
    first = client.post("/api/workflows/one_at_a_time/runs").get_json()["id"]
    wait_until(lambda: arrivals("one_at_a_time") == 1, timeout=10, message="first run at the gate")
    second = client.post("/api/workflows/one_at_a_time/runs").get_json()["id"]

    assert client.post(f"/api/runs/{first}/cancel").get_json()["status"] == "cancelled"

    wait_until(lambda: arrivals("one_at_a_time") == 2, timeout=10, message="the queued run started")
    gate("one_at_a_time").set()
    assert [run["status"] for run in settled(client, "one_at_a_time")] == ["succeeded", "cancelled"]
    assert client.get(f"/api/runs/{second}").get_json()["status"] == "succeeded"


def test_cancelling_a_sub_workflow_run_leaves_the_global_limit_intact(make_client):
    client = make_client(WORKFLOW_MAX_CONCURRENT=1)
    parent = client.post("/api/workflows/calls_gated/runs").get_json()["id"]
    wait_until(lambda: arrivals("gated") == 1, timeout=10, message="the sub-run at the gate")
    [child] = runs_of(client, "gated")

    assert client.post(f"/api/runs/{child['id']}/cancel").get_json()["status"] == "cancelled"
    assert [run["status"] for run in settled(client, "calls_gated")] == ["failed"]
    assert "cancelled" in client.get(f"/api/runs/{parent}").get_json()["error"]

    # The sub-run held no slot, so its cancel gives none back: one run at a time, still.
    first = client.post("/api/workflows/gated/runs", json={"inputs": {"text": "first"}}).get_json()["id"]
    second = client.post("/api/workflows/gated/runs", json={"inputs": {"text": "second"}}).get_json()["id"]
    wait_until(lambda: arrivals("gated") == 2, timeout=10, message="the first run at the gate")
    time.sleep(0.2)  # an absence, which no event marks: time in which the second run must not start
    assert client.get(f"/api/runs/{second}").get_json()["status"] == "queued"
    assert arrivals("gated") == 2
    gate("gated").set()
    wait_until(lambda: client.get(f"/api/runs/{second}").get_json()["status"] == "succeeded", timeout=10)
    assert client.get(f"/api/runs/{first}").get_json()["status"] == "succeeded"
