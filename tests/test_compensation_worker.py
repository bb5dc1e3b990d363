"""Compensation and the step cache in distributed mode: compensations run where the run executes (a worker),
also after a takeover; cached results are shared through the database.

A server and workers as tests/test_worker.py makes them (procrastinate on the test's PostgreSQL database).
"""

from __future__ import annotations

import threading

import pytest

from app.errors import Conflict
from app.runs import RunStatus
from tests.fixtures.actions import AppendLineAction
from tests.fixtures.compensation import BookingWorkflow, CancelledWorkflow, SlowUndoWorkflow
from tests.fixtures.gates import arrivals, gate, release_gates, reset_gates
from tests.runtimes import runtimes
from tests.waiting import wait_until
from workflows.base import Workflow

pytestmark = pytest.mark.services



class CachedLookupWorkflow(Workflow):
    """A step whose result any worker reuses for a minute."""

    name = "cached_lookup"
    actions = [AppendLineAction("lookup", path="lookups.txt", line="{{ inputs.city }}", cache={"ttl": 60})]


WORKFLOWS = [BookingWorkflow, CancelledWorkflow, SlowUndoWorkflow, CachedLookupWorkflow]
ERROR = "step 'pay' failed: this step always fails"


@pytest.fixture
def cluster(postgres_url, tmp_path):
    """``make(name, worker=False)``: a started server or a working worker on the test's database."""
    reset_gates()
    settings = {"WORKFLOW_EXECUTOR": "procrastinate", "WORKFLOW_STEP_TIMEOUT": 60.0}
    with runtimes(tmp_path, postgres_url, settings, WORKFLOWS) as make:
        yield make
        release_gates()
    reset_gates()

def test_a_run_failing_on_a_worker_is_compensated_there(cluster):
    server, worker = cluster("server"), cluster("worker", worker=True)
    run, _ = server.submit("booking", {}, awaited=True)
    done = server.outcome(run, 30)
    assert done["status"] == RunStatus.FAILED and done["error"] == ERROR, done
    assert done["worker"] == worker.engine.leases.owner
    assert [(entry["step"], entry["status"]) for entry in done["compensations"]] == [
        ("flight", "succeeded"), ("hotel", "succeeded")]
    assert done["compensations"][1]["result"] == {"written": f"undo hotel: room 12 ({ERROR})"}


def test_a_cancel_through_the_server_is_compensated_on_the_worker(cluster):
    server, worker = cluster("server"), cluster("worker", worker=True)
    run, _ = server.submit("cancelled_booking", {})
    wait_until(lambda: arrivals("cancel-me") == 1, timeout=30, message="the worker reaching the gate")
    server.control(run["id"], "cancel", by="api")
    wait_until(lambda: server.store.get_run(run["id"])["status"] == RunStatus.CANCELLED, timeout=10,
               message="the run ending cancelled")
    done = server.store.get_run(run["id"])
    assert [(entry["step"], entry["status"]) for entry in done["compensations"]] == [("hotel", "succeeded")]
    assert done["compensations"][0]["result"] == {"written": "undo hotel: room 7 (cancelled)"}
    assert (worker.store.root / "undone.txt").exists()  # the worker's disk: it ran there
    assert not (server.store.root / "undone.txt").exists()


def test_compensation_a_stopping_worker_left_is_finished_by_another(cluster):
    server, first = cluster("server"), cluster("first", worker=True)
    run, _ = server.submit("slow_undo", {})
    wait_until(lambda: arrivals("undo-flight") == 1, timeout=30, message="the first compensation starting")
    stopping = threading.Thread(target=first.stop_work, args=(10,))
    stopping.start()  # the compensation under way finishes; the next one is left for another worker
    wait_until(lambda: first.stopping, message="the first worker stopping")
    gate("undo-flight").set()
    stopping.join(15)
    left = server.store.get_run(run["id"])
    assert left["status"] == RunStatus.RUNNING and left["compensating"] == "failed"
    assert [entry["status"] for entry in left["compensations"]] == ["succeeded", "pending"]
    second = cluster("second", worker=True)
    wait_until(lambda: server.store.get_run(run["id"])["status"] == RunStatus.FAILED, timeout=30,
               message="the second worker finishing the compensations")
    done = server.store.get_run(run["id"])
    assert done["worker"] == second.engine.leases.owner and done["error"] == ERROR
    assert [(entry["status"], entry["attempts"]) for entry in done["compensations"]] == [
        ("succeeded", 1), ("succeeded", 1)]
    assert (second.store.root / "undone.txt").exists() and not (first.store.root / "undone.txt").exists()


def test_a_run_compensating_on_a_worker_refuses_a_pause_and_answers_a_cancel_as_it_stands(cluster):
    server, _ = cluster("server"), cluster("worker", worker=True)
    run, _ = server.submit("slow_undo", {})
    wait_until(lambda: arrivals("undo-flight") == 1, timeout=30, message="the first compensation starting")
    with pytest.raises(Conflict, match="cannot be paused while it undoes its steps"):
        server.control(run["id"], "pause", by="api")
    answered = server.control(run["id"], "cancel", by="api")
    assert answered["status"] == RunStatus.RUNNING and answered["compensating"] == "failed"
    gate("undo-flight").set()
    wait_until(lambda: server.store.get_run(run["id"])["status"] == RunStatus.FAILED, timeout=30,
               message="the run ending failed, as planned")
    done = server.store.get_run(run["id"])
    assert [entry["status"] for entry in done["compensations"]] == ["succeeded", "succeeded"]


def test_workers_share_the_step_cache(cluster):
    server, first = cluster("server"), cluster("first", worker=True)
    made, _ = server.submit("cached_lookup", {"city": "Oslo"}, awaited=True)
    assert server.outcome(made, 30)["status"] == RunStatus.SUCCEEDED
    first.stop_work(5)
    second = cluster("second", worker=True)
    reused, _ = server.submit("cached_lookup", {"city": "Oslo"}, awaited=True)
    done = server.outcome(reused, 30)
    assert done["status"] == RunStatus.SUCCEEDED and done["worker"] == second.engine.leases.owner
    assert done["steps"][0]["cached"] is True and done["steps"][0]["cached_from"] == made["id"]
    assert done["steps"][0]["result"] == {"written": "Oslo"}
    assert not (second.store.root / "lookups.txt").exists()  # not executed on the second worker
