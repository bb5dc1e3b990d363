"""Events and parked runs with a server and a worker on one PostgreSQL database (procrastinate, or celery on
Redis), in one process.

As tests/test_worker.py: each runtime has its own storage folder and lease owner; the worker executes runs.
"""

from __future__ import annotations

import pytest

from app.core.events import MAX_CHAIN_RUNS
from app.core.runtime import Runtime
from app.runs import RunStatus
from tests.runtimes import runtimes
from tests.services import unique_queue
from tests.test_store_contract import at_once
from tests.waiting import wait_until

pytestmark = pytest.mark.services

PAYMENT = {"name": "waits_for_payment", "steps": [
    {"name": "paid", "type": "wait_for_event", "config": {"event": "order.paid", "key": "{{ inputs.order }}"}},
    {"name": "ship", "type": "log", "config": {"message": "ship {{ steps.paid.event.data.amount }}"}}]}
NAP = {"name": "naps", "steps": [{"name": "nap", "type": "wait", "config": {"seconds": 6}},
                                 {"name": "up", "type": "log", "config": {"message": "up"}}]}


@pytest.fixture(params=["procrastinate", "celery-redis"])
def executor(request) -> dict:
    """The settings of one executor: procrastinate, or celery on Redis (a queue of the test's own)."""
    if request.param == "procrastinate":
        return {"WORKFLOW_EXECUTOR": "procrastinate"}
    return {"WORKFLOW_EXECUTOR": "celery", "CELERY_BROKER_URL": request.getfixturevalue("redis_url"),
            "WORKFLOW_QUEUE": unique_queue()}


@pytest.fixture
def cluster(postgres_url, tmp_path, executor):
    """``make(name, worker=False)``: a started server or a working worker on the test's database."""
    with runtimes(tmp_path, postgres_url, executor) as make:
        yield make

def status_of(runtime: Runtime, run_id: str) -> str:
    return runtime.get_run(run_id)["status"]


def test_an_event_resumes_a_run_waiting_on_a_worker(cluster):
    server = cluster("server")
    server.create_definition(PAYMENT)
    worker = cluster("worker", worker=True)  # loads the stored definition
    run, _ = server.submit("waits_for_payment", {"order": "A-1"})
    wait_until(lambda: status_of(server, run["id"]) == RunStatus.WAITING, 30, message="the run parking on the worker")
    # Parked: the worker lets it go (no thread, no lease) right after storing it waiting.
    wait_until(lambda: not worker.engine.executes(run["id"]), 5, message="the worker letting the run go")
    assert [entry["key"] for entry in server.store.parked(run["id"])] == ["A-1"]

    answer = server.publish({"id": "pay-1", "type": "order.paid", "data": {"amount": 7}, "key": "A-1", "at": "",
                             "depth": 0})
    assert answer["resumed"] == [run["id"]]
    done = wait_until(lambda: (stored := server.get_run(run["id"]))["status"] == RunStatus.SUCCEEDED and stored, 30,
                      message="the run finishing on the worker")
    assert done["steps"][1]["result"] == {"message": "ship 7"}
    assert done["worker"] == worker.engine.leases.owner
    assert server.publish({"id": "pay-1", "type": "order.paid", "data": {}, "key": "A-1", "at": "",
                           "depth": 0})["duplicate"]


def test_a_parked_wait_survives_a_server_restart_and_continues_on_the_worker(cluster):
    server = cluster("server")
    server.create_definition(NAP)
    worker = cluster("worker", worker=True)
    run, _ = server.submit("naps", {})
    wait_until(lambda: status_of(server, run["id"]) == RunStatus.WAITING, 30, message="the run parking")
    server.shutdown(timeout=2)  # the waker stops with it
    again = cluster("server-again")  # leads once the first let go, and wakes the run when due
    done = wait_until(lambda: (stored := again.get_run(run["id"]))["status"] == RunStatus.SUCCEEDED and stored, 40,
                      message="the run waking and finishing on the worker")
    assert done["steps"][0]["result"] == {"waited_s": 6.0}
    assert done["worker"] == worker.engine.leases.owner


def test_a_waiting_run_is_cancelled_through_the_server(cluster):
    server = cluster("server")
    server.create_definition(PAYMENT)
    cluster("worker", worker=True)
    run, _ = server.submit("waits_for_payment", {"order": "B-2"})
    wait_until(lambda: status_of(server, run["id"]) == RunStatus.WAITING, 30, message="the run parking")
    cancelled = server.control(run["id"], "cancel", by="api")
    assert cancelled["status"] == RunStatus.CANCELLED and cancelled["steps"][0]["status"] == "cancelled"
    assert server.store.parked(run["id"]) == []
    assert server.publish({"id": "late", "type": "order.paid", "data": {}, "key": "B-2", "at": "",
                           "depth": 0})["resumed"] == []


def test_a_run_ending_on_the_worker_starts_its_follower_through_the_queue(cluster):
    server = cluster("server")
    server.create_definition({"name": "leads", "steps": [{"name": "say", "type": "log", "config": {"message": "hi"}}]})
    server.create_definition({"name": "follows", "trigger": {"type": "event", "event": "run.succeeded",
                                                             "filter": "{{ event.data.workflow == 'leads' }}"},
                              "steps": [{"name": "note", "type": "log",
                                         "config": {"message": "{{ inputs.data.run_id }}"}}]})
    server.start_workflow("follows")
    worker = cluster("worker", worker=True)
    run, _ = server.submit("leads", {})

    def followed() -> list[dict]:
        return [r for r in server.store.list_runs(workflow="follows", limit=5)[0] if r["status"] == "succeeded"]

    done = wait_until(followed, 30, message="the follower run finishing")
    assert done[0]["steps"][0]["result"] == {"message": run["id"]}
    assert done[0]["source"] == "event" and done[0]["worker"] == worker.engine.leases.owner


FOLLOWER = {"name": "follows_ends", "trigger": {"type": "event", "event": "run.succeeded"},
            "steps": [{"name": "note", "type": "log", "config": {"message": "{{ inputs.data.run_id }}"}}]}


def run_end(n: int) -> dict:
    """The end of another workflow's run ``n``, one link down the chain ``one-chain``, as Events.publish gets it."""
    run_id = f"run_{n:024x}"
    return {"id": f"{run_id}:succeeded:2026-01-01T00:00:00Z", "type": "run.succeeded",
            "data": {"run_id": run_id, "workflow": "elsewhere", "status": "succeeded", "error": None},
            "key": run_id, "at": "", "depth": 1, "chain": "one-chain"}


def test_two_servers_on_one_database_start_at_most_max_chain_runs_of_one_chain(postgres_url, tmp_path, caplog):
    # Each server counted a chain's runs in its own memory: N servers and workers started N x 100 of them.
    with runtimes(tmp_path, postgres_url, {}) as make:
        first = make("first")
        first.create_definition(FOLLOWER)
        first.start_workflow("follows_ends")
        second = make("second")  # loads the stored definition
        ends = [(first, second)[n % 2] for n in range(MAX_CHAIN_RUNS + 20)]
        answers = at_once(lambda job: job[0].publish(run_end(job[1])), [(server, n) for n, server in enumerate(ends)])
        started = [run_id for answer in answers for run_id in answer["started"]]
        assert len(started) == MAX_CHAIN_RUNS
        assert {run_id for answer in answers[::2] for run_id in answer["started"]}  # both servers started some
        assert {run_id for answer in answers[1::2] for run_id in answer["started"]}

        def finished() -> bool:
            runs = first.store.list_runs(workflow="follows_ends", limit=500)[0]
            return len(runs) == MAX_CHAIN_RUNS and all(run["status"] == RunStatus.SUCCEEDED for run in runs)

        wait_until(finished, 60, message=f"the {MAX_CHAIN_RUNS} runs of the chain finishing")
    assert caplog.text.count("already started 100 runs (at most 100): not started") == 20
