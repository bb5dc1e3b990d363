"""Two servers on one PostgreSQL database, runs on their own threads: leases, control across processes, takeover.

The multi-process tests (tests/test_cluster.py) kill real processes; these drive two runtimes of one
test process, each with its own lease owner and storage folder, through the same code paths.
"""

from __future__ import annotations

import threading

import pytest

from actions.log import LogAction
from app.core.config import load_settings
from app.core.runtime import Runtime
from app.runs import RunStatus, StepStatus, new_run, new_step
from app.storage.postgres import PostgresStore
from tests.conftest import TEST_SETTINGS
from tests.fixtures.gates import arrivals, gate, release_gates, reset_gates
from tests.fixtures.workflows import EchoWorkflow, GatedWorkflow, SendSlowlyWorkflow
from tests.waiting import threads_in, wait_until
from triggers.interval import IntervalTrigger
from workflows.base import Workflow

pytestmark = pytest.mark.services

LEASE = 2.0


@pytest.fixture
def pair(postgres_url, tmp_path):
    """Two started runtimes sharing one database, each with its own folder."""
    reset_gates()
    runtimes = []
    for name in ("a", "b"):
        storage = tmp_path / name
        storage.mkdir()
        settings = {**load_settings({}), **TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                    "WORKFLOW_DATABASE_URL": postgres_url, "WORKFLOW_LEASE_SECONDS": LEASE,
                    "WORKFLOW_STEP_TIMEOUT": 60.0}
        runtime = Runtime(settings, workflows=[EchoWorkflow, GatedWorkflow, SendSlowlyWorkflow])
        runtime.start()
        runtimes.append(runtime)
    yield runtimes
    release_gates()
    for runtime in runtimes:
        runtime.shutdown(timeout=2)
    reset_gates()


def status_of(runtime: Runtime, run_id: str) -> str:
    return runtime.get_run(run_id)["status"]


def test_a_run_executes_where_it_was_started_and_names_that_process(pair):
    a, b = pair
    run, _ = a.submit("gated", {"text": "x"})
    wait_until(lambda: arrivals("gated") == 1, message="the run reaching its gate")
    assert a.get_run(run["id"])["worker"] == a.engine.leases.owner
    assert b.take_run(run["id"]) is False  # a duplicate: the lease is a's
    gate("gated").set()
    wait_until(lambda: status_of(b, run["id"]) == RunStatus.SUCCEEDED, message="the run finishing")
    assert arrivals("gated") == 1
    assert b.get_run(run["id"])["worker"] == a.engine.leases.owner


def test_cancel_through_another_server_reaches_the_run_within_two_seconds(pair):
    a, b = pair
    run, _ = a.submit("gated", {"text": "x"})
    wait_until(lambda: arrivals("gated") == 1, message="the run reaching its gate")
    answered = b.control(run["id"], "cancel", by="api")
    assert answered["status"] == RunStatus.CANCELLED
    stored = b.get_run(run["id"])
    assert [step["status"] for step in stored["steps"]] == ["succeeded", "cancelled", "pending"]
    wait_until(lambda: not a.engine.executes(run["id"]), timeout=2, message="a's execution ending")


def test_pause_through_another_server_then_resume_there_runs_each_step_once(pair, tmp_path):
    a, b = pair
    run, _ = a.submit("gated", {"text": "x"})
    wait_until(lambda: arrivals("gated") == 1, message="the run reaching its gate")
    threading.Timer(0.5, gate("gated").set).start()  # the step under way finishes; the pause takes effect after
    b.control(run["id"], "pause", by="api")
    wait_until(lambda: status_of(b, run["id"]) == RunStatus.PAUSED, message="the run pausing")
    assert [step["status"] for step in b.get_run(run["id"])["steps"]] == ["succeeded", "succeeded", "pending"]

    b.control(run["id"], "resume", by="api")  # b takes the lease and executes the rest
    wait_until(lambda: status_of(a, run["id"]) == RunStatus.SUCCEEDED, message="the resumed run finishing")
    lines = [line for folder in ("a", "b") if (tmp_path / folder / "gated.txt").exists()
             for line in (tmp_path / folder / "gated.txt").read_text().splitlines()]
    assert sorted(line.split()[0] for line in lines) == ["first", "last"]
    assert arrivals("gated") == 1
    assert b.get_run(run["id"])["worker"] == b.engine.leases.owner


def test_waiting_for_a_run_executing_on_another_server(pair):
    a, b = pair
    run, _ = a.submit("gated", {"text": "x"})
    wait_until(lambda: arrivals("gated") == 1, message="the run reaching its gate")
    assert b.outcome(run, 0.2)["status"] == RunStatus.RUNNING  # as it stands when the wait ends
    threading.Timer(0.2, gate("gated").set).start()
    assert b.outcome(run, 30)["status"] == RunStatus.SUCCEEDED


def ghost_run(runtime: Runtime, workflow: str, running: int, status: RunStatus = RunStatus.RUNNING) -> str:
    """A run left running by a process that died: steps before ``running`` done, that one under way.

    ``status`` QUEUED: the run's own "running" was still deferred when the process died (app/core/engine.py).
    """
    bound = runtime.get(workflow)
    steps = [new_step(action.name, action.type, []) for action in bound.actions]
    for step in steps[:running]:
        step.update(status=StepStatus.SUCCEEDED.value, attempts=1, result={"value": "ready"})
    steps[running].update(status=StepStatus.RUNNING.value, attempts=1)
    run = new_run(workflow, steps, {"text": "x"}, "api")
    run.update(status=status.value, started_at=run["created_at"])
    runtime.store.create_run(run)
    assert runtime.store.claim_run(run["id"], "ghost-host:1", 0.2)
    return run["id"]


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.QUEUED])
def test_a_run_whose_process_died_is_taken_over_and_its_non_idempotent_step_fails(pair, status):
    a, b = pair
    run_id = ghost_run(a, "send_slowly", running=1, status=status)
    wait_until(lambda: run_id in b.store.expired_leases(), message="the ghost's lease expiring")
    b.sweeper.sweep()  # or the leader's own sweeper got there first: either server may take it
    wait_until(lambda: status_of(b, run_id) == RunStatus.FAILED, message="the taken-over run ending")
    stored = b.get_run(run_id)
    assert stored["steps"][1]["error"] == "interrupted by worker loss"
    assert stored["steps"][0]["attempts"] == 1  # a finished step never runs again
    assert stored["worker"] in (a.engine.leases.owner, b.engine.leases.owner)


def test_a_run_whose_process_died_continues_its_idempotent_step_elsewhere(pair):
    a, b = pair
    release_gates()
    run_id = ghost_run(a, "gated", running=1)
    wait_until(lambda: run_id in a.store.expired_leases(), message="the ghost's lease expiring")
    a.sweeper.sweep()
    wait_until(lambda: status_of(a, run_id) == RunStatus.SUCCEEDED, message="the taken-over run finishing")
    stored = a.get_run(run_id)
    assert [step["attempts"] for step in stored["steps"]] == [1, 2, 1]



def say(message: str, trigger: dict | None = None) -> dict:
    """A definition of one log step; ``trigger`` when given."""
    return {"name": "made_elsewhere", **({"trigger": trigger} if trigger else {}),
            "steps": [{"name": "say", "type": "log", "config": {"message": message}}]}


def said(runtime: Runtime) -> dict:
    """A run of made_elsewhere on ``runtime``, once it ended."""
    run, _ = runtime.submit("made_elsewhere", {}, awaited=True)
    return runtime.outcome(run, 10)


def test_a_definition_made_changed_and_deleted_through_one_server_reaches_the_other(pair):
    a, b = pair
    a.create_definition(say("v1"))
    wait_until(lambda: "made_elsewhere" in b.bound, message="the other server serving the new definition")
    assert said(b)["steps"][0]["result"] == {"message": "v1"}

    a.update_definition("made_elsewhere", say("v2"))
    wait_until(lambda: b.summary("made_elsewhere")["version"] == 2, message="the other server serving version 2")
    done = said(b)
    assert (done["version"], done["steps"][0]["result"]) == (2, {"message": "v2"})

    a.delete_definition("made_elsewhere")
    wait_until(lambda: "made_elsewhere" not in b.bound, message="the other server forgetting the definition")


def test_a_definition_made_and_started_on_a_server_that_does_not_poll_is_polled_by_the_leader(pair):
    wait_until(lambda: any(runtime.polling for runtime in pair), message="a leader")
    leader, other = sorted(pair, key=lambda runtime: not runtime.polling)
    other.create_definition(say("tick", {"type": "interval", "seconds": 1}))
    other.start_workflow("made_elsewhere")
    wait_until(lambda: other.store.list_runs(workflow="made_elsewhere")[0], timeout=15,
               message="the leader polling the definition made on the other server")
    assert "made_elsewhere" in leader.scheduler.scheduled()


class HeldLeaderStore(PostgresStore):
    """The leader's next read of the started workflows waits at a gate the test opens (``hold``, ``go``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hold = threading.Event()  # set by the test: the next read by the leadership thread waits
        self.held = threading.Event()  # set when that read is waiting
        self.go = threading.Event()

    def started_workflows(self) -> set[str]:
        started = super().started_workflows()
        if self.hold.is_set() and threading.current_thread().name == "pyflow-leadership":
            self.hold.clear()
            self.held.set()
            assert self.go.wait(30), "the test never opened the gate"
        return started


class EveryTick(Workflow):
    name = "every_tick"
    description = "Due every 0.1 s."
    trigger = IntervalTrigger("every_tick", seconds=0.1)
    actions = [LogAction("note", message="tick")]


def test_a_stop_during_the_leaders_follow_round_leaves_the_workflow_unscheduled(postgres_url, tmp_path):
    # The leader follows the starts and stops made through other servers every 2 s: it read the started
    # workflows, then the scheduled ones. A stop made on the leader between the two reads was taken for a
    # start made elsewhere, and the stopped workflow was polled again (a run after the stop) until the next round.
    settings = {**load_settings({}), **TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path),
                "WORKFLOW_DATABASE_URL": postgres_url, "WORKFLOW_LEASE_SECONDS": LEASE}
    store = HeldLeaderStore(postgres_url, tmp_path)
    runtime = Runtime(settings, store=store, workflows=[EveryTick])
    runtime.start()
    try:
        wait_until(lambda: runtime.polling, timeout=15, message="the server becoming the leader")
        runtime.start_workflow("every_tick")
        wait_until(lambda: runtime.store.list_runs(workflow="every_tick")[0], message="a first run")
        store.hold.set()
        wait_until(store.held.is_set, timeout=10, message="the leader's follow round reading the started workflows")
        runtime.stop_workflow("every_tick")  # between the round's read of the started and of the scheduled ones
        store.go.set()
        wait_until(lambda: not threads_in("Runtime._follow_started", "pyflow-leadership"),
                   message="the follow round to end")
        assert "every_tick" not in runtime.scheduler.scheduled()
        assert runtime.summary("every_tick")["status"] == "stopped"
    finally:
        store.go.set()
        runtime.shutdown(timeout=2)
