"""Pause of a waiting run: it stays paused when its answer or event comes (kept for its step), and its resume
applies what came, or returns it to waiting; over every store and with a worker (procrastinate)."""

from __future__ import annotations

import threading
import time

import pytest

from app.core.config import load_settings
from app.core.events import parse_event
from app.core.runtime import Runtime
from app.dashboard.approvals import waiting_rows, waiting_runs
from app.errors import Conflict
from app.runs import RunStatus, StepStatus
from app.storage.base import Durability
from app.storage.memory import MemoryStore
from app.storage.postgres import PostgresStore
from tests.conftest import TEST_SETTINGS
from tests.runtimes import runtimes
from tests.test_parked_parallel import Setup, finished, local_runtimes, parked, steps
from tests.waiting import threads_in, wait_until

ASKS = {"name": "asks", "steps": [
    {"name": "ok", "type": "approval", "config": {"timeout": 600}},
    {"name": "done", "type": "log", "config": {"message": "approved by {{ steps.ok.by }}"}}]}
PAYS = {"name": "pays", "steps": [
    {"name": "paid", "type": "wait_for_event", "config": {"event": "order.paid", "key": "A-1", "timeout": 600}},
    {"name": "done", "type": "log", "config": {"message": "paid {{ steps.paid.event.data.amount }}"}}]}


@pytest.fixture(params=["memory", "json", pytest.param("postgres", marks=pytest.mark.services),
                        pytest.param("procrastinate", marks=pytest.mark.services)])
def setup(request, tmp_path):
    settings: dict = {}
    if request.param in ("memory", "json"):
        with local_runtimes(tmp_path, request.param, settings) as make:
            yield Setup(request.param, make, settings)
        return
    if request.param == "procrastinate":
        settings["WORKFLOW_EXECUTOR"] = "procrastinate"
    with runtimes(tmp_path, request.getfixturevalue("postgres_url"), settings) as make:
        yield Setup(request.param, make, settings)


def answer(server: Runtime, run_id: str, kind: str) -> None:
    """Approve the run's approval (by olga), or publish the event its step waits for."""
    if kind == "asks":
        server.approvals.answer(run_id, True, "olga", comment="fine")
    else:
        assert server.publish(parse_event({"type": "order.paid", "key": "A-1", "data": {"amount": 42}}))[
            "resumed"] == [run_id]


def listed(server: Runtime, run_id: str) -> list[tuple]:
    """The run's rows on the dashboard's Waiting page: (step, paused, what was kept for it)."""
    runs, _ = waiting_runs(server.store)
    return [(row["step"]["name"], row["paused"], row["kept"]) for row in waiting_rows(server.store, runs)
            if row["run"]["id"] == run_id]


EXPECTED = {"asks": "approved by olga", "pays": "paid 42"}


@pytest.mark.parametrize("definition", [ASKS, PAYS], ids=["approval", "event"])
def test_a_paused_waiting_run_keeps_what_came_and_its_resume_applies_it(setup, definition):
    server = setup.start()
    run_id = setup.run(definition)
    first = definition["steps"][0]["name"]
    parked(server, run_id, [first])

    paused = server.control(run_id, "pause", by="ops")
    assert paused["status"] == RunStatus.PAUSED
    assert listed(server, run_id) == [(first, True, None)]  # the dashboard's Waiting page lists it, paused
    answer(server, run_id, definition["name"])
    assert [(step, is_paused, kept is not None) for step, is_paused, kept in listed(server, run_id)] == [
        (first, True, True)]  # and shows what came as kept

    # The run does not continue: still paused, its step waiting with what came kept for it (due never, so no
    # waker continues it), and a second answer is refused.
    run = server.get_run(run_id)
    assert (run["status"], steps(run)[first]["status"]) == (RunStatus.PAUSED, StepStatus.WAITING)
    [entry] = server.store.parked(run_id)
    assert entry["outcome"] is not None and entry["due"] is None
    if definition is ASKS:
        with pytest.raises(Conflict):
            server.approvals.answer(run_id, False, "vic")

    server.control(run_id, "resume", by="ops")
    done = finished(server, run_id)
    assert steps(done)["done"]["result"] == {"message": EXPECTED[definition["name"]]}
    assert server.store.parked(run_id) == []
    assert [change["to"] for change in done["history"]][-4:] == ["paused", "queued", "running", "succeeded"]
    assert listed(server, run_id) == []


@pytest.mark.parametrize("definition", [ASKS, PAYS], ids=["approval", "event"])
def test_resume_before_any_answer_returns_the_run_to_waiting_and_a_later_answer_continues_it(setup, definition):
    server = setup.start()
    run_id = setup.run(definition)
    first = definition["steps"][0]["name"]
    parked(server, run_id, [first])
    assert server.control(run_id, "pause")["status"] == RunStatus.PAUSED

    server.control(run_id, "resume")
    parked(server, run_id, [first])  # waiting again, still indexed: never executed again
    answer(server, run_id, definition["name"])
    done = finished(server, run_id)
    assert steps(done)["done"]["result"] == {"message": EXPECTED[definition["name"]]}


def test_a_rejection_kept_while_paused_fails_the_run_on_resume(setup):
    server = setup.start()
    run_id = setup.run(ASKS)
    parked(server, run_id, ["ok"])
    server.control(run_id, "pause")
    server.approvals.answer(run_id, False, "vic", comment="too dear")
    assert server.get_run(run_id)["status"] == RunStatus.PAUSED
    server.control(run_id, "resume")
    done = finished(server, run_id, RunStatus.FAILED)
    assert steps(done)["ok"]["error"] == "rejected by vic: too dear"


def test_a_timeout_passing_while_paused_is_kept_and_its_on_timeout_applies_on_resume(setup):
    server = setup.start()
    run_id = setup.run({"name": "pays_or_not", "steps": [
        {"name": "paid", "type": "wait_for_event",
         "config": {"event": "order.paid", "key": "A-1", "timeout": 600, "on_timeout": "continue"}},
        {"name": "done", "type": "log", "config": {"message": "timed out: {{ steps.paid.timed_out }}"}}]})
    parked(server, run_id, ["paid"])
    server.control(run_id, "pause")
    # The waker's look an hour from now: the timeout has passed.
    assert server.parking.wake_due(time.time() + 3600) == [run_id]
    run = server.get_run(run_id)
    assert (run["status"], steps(run)["paid"]["status"]) == (RunStatus.PAUSED, StepStatus.WAITING)
    server.control(run_id, "resume")
    done = finished(server, run_id)
    assert steps(done)["paid"]["result"] == {"event": None, "timed_out": True}
    assert steps(done)["done"]["result"] == {"message": "timed out: True"}


class Holding:
    """Mixed into a store: holds the write of a run halting into ``waiting`` (once ``hold`` is set) until the
    test lets go (``release``)."""

    hold = threading.Event()
    release = threading.Event()

    def update_run(self, run_id, fields, *, mode=Durability.SYNC):
        if fields.get("status") == RunStatus.WAITING and self.hold.is_set():
            self.hold.clear()
            self.release.wait(30)
        return super().update_run(run_id, fields, mode=mode)


class HeldStore(Holding, MemoryStore):
    """A memory store holding a run's halt into ``waiting``."""

    def __init__(self, root):
        super().__init__(root)
        self.hold, self.release = threading.Event(), threading.Event()


class HeldPostgresStore(Holding, PostgresStore):
    """A worker's PostgreSQL store holding a run's halt into ``waiting``; one such worker per test."""


def test_a_pause_arriving_while_the_run_halts_into_waiting_is_not_lost(tmp_path, key_file):
    store = HeldStore(tmp_path / "files")
    runtime = Runtime({**load_settings({}), **TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                       "WORKFLOW_KEY_FILE": str(key_file)}, store=store)
    runtime.start()
    try:
        runtime.create_definition(PAYS)
        store.hold.set()
        run, _ = runtime.submit("pays", {})
        # The run thread has taken its decision to park and is storing the run waiting, held there.
        wait_until(lambda: threads_in("Holding.update_run"), 10, message="the run halting into waiting")
        answers: list[dict] = []
        pausing = threading.Thread(target=lambda: answers.append(runtime.control(run["id"], "pause", by="ops")))
        pausing.start()
        wait_until(lambda: threads_in("Controlling._settled"), 10, message="the pause waiting for the run thread")
        store.release.set()
        pausing.join(10)
        assert answers and answers[0]["status"] == RunStatus.PAUSED
        stored = runtime.get_run(run["id"])
        assert stored["status"] == RunStatus.PAUSED
        assert [change["by"] for change in stored["history"]][-1] == "ops"

        # And it behaves as any paused waiting run: the event is kept, the resume applies it.
        answer(runtime, run["id"], "pays")
        assert runtime.get_run(run["id"])["status"] == RunStatus.PAUSED
        runtime.control(run["id"], "resume")
        done = finished(runtime, run["id"])
        assert steps(done)["done"]["result"] == {"message": "paid 42"}
    finally:
        store.release.set()
        runtime.shutdown(timeout=2)


@pytest.mark.services
def test_a_pause_asked_of_a_worker_while_its_run_halts_into_waiting_is_not_lost(tmp_path, postgres_url):
    HeldPostgresStore.hold.clear()
    HeldPostgresStore.release.clear()
    with runtimes(tmp_path, postgres_url, {"WORKFLOW_EXECUTOR": "procrastinate"}) as make:
        server = make("server")
        server.create_definition(PAYS)
        make("worker", worker=True, store_class=HeldPostgresStore)
        HeldPostgresStore.hold.set()
        run, _ = server.submit("pays", {})
        try:
            wait_until(lambda: threads_in("Holding.update_run"), 30, message="the worker's run halting into waiting")
            answers: list[dict] = []
            pausing = threading.Thread(target=lambda: answers.append(server.control(run["id"], "pause", by="ops")))
            pausing.start()
            # The server asked the worker (which holds the run's lease) through the store; the worker lets go
            # of the run as it parks, maybe before it took the request.
            wait_until(lambda: threads_in("Controlling._ask_elsewhere"), 10, message="the pause asked of the worker")
        finally:
            HeldPostgresStore.release.set()
        pausing.join(10)
        assert answers
        wait_until(lambda: server.get_run(run["id"])["status"] == RunStatus.PAUSED, 10, message="the run paused")

        answer(server, run["id"], "pays")
        assert server.get_run(run["id"])["status"] == RunStatus.PAUSED
        server.control(run["id"], "resume")
        done = finished(server, run["id"])
        assert steps(done)["done"]["result"] == {"message": "paid 42"}
