"""Compensation: a failed or cancelled run undoes its succeeded steps, last completed first (docs/compensation.md)."""

from __future__ import annotations

import json
import threading

import pytest

from app.core.binding import BoundWorkflow
from app.core.config import load_settings
from app.core.engine import Engine
from app.core.execution import RunStateError
from app.runs import RunStatus
from app.storage.json.store import JsonStore
from tests.conftest import TEST_SETTINGS
from tests.fixtures import EchoAction, side_effect_lines
from tests.fixtures.compensation import (
    BookingWorkflow,
    CancelledWorkflow,
    FailingUndoWorkflow,
    HeldUndoWorkflow,
    PausedBookingWorkflow,
    SlowUndoWorkflow,
    SucceedingWorkflow,
)
from tests.fixtures.gates import arrivals, gate, release_gates, reset_gates
from tests.waiting import wait_until

SETTINGS = {**load_settings({}), **TEST_SETTINGS}
ENTRY_FIELDS = {"step", "type", "status", "attempts", "result", "error", "started_at", "finished_at"}


def make_engine(store) -> Engine:
    return Engine(store, SETTINGS)


def bind(engine: Engine, workflow) -> BoundWorkflow:
    return BoundWorkflow.bind(workflow, engine.settings, engine.renderer)


def run_once(engine: Engine, workflow, timeout: float = 10.0) -> dict:
    run, created = engine.submit(bind(engine, workflow), {})
    assert created and engine.wait(run["id"], timeout), f"run {run['id']} did not end within {timeout} s"
    return engine.store.get_run(run["id"])


@pytest.fixture
def engine(tmp_path):
    reset_gates()
    engine = make_engine(JsonStore(tmp_path / "data"))
    yield engine
    release_gates()
    engine.shutdown(timeout=2)
    reset_gates()


def test_a_failed_run_undoes_its_succeeded_steps_last_first(engine):
    run = run_once(engine, BookingWorkflow)
    assert run["status"] == RunStatus.FAILED
    assert run["error"] == "step 'pay' failed: this step always fails"  # the run's own error, kept
    assert [entry["step"] for entry in run["compensations"]] == ["flight", "hotel"]
    for entry in run["compensations"]:
        assert set(entry) == ENTRY_FIELDS
        assert entry["status"] == "succeeded" and entry["attempts"] == 1 and entry["error"] is None
        assert entry["type"] == "append_line" and entry["started_at"] <= entry["finished_at"]
    error = "step 'pay' failed: this step always fails"
    assert side_effect_lines(engine.store.root / "undone.txt") == [
        f"undo flight: seat 3A ({error})", f"undo hotel: room 12 ({error})"]
    assert run["compensations"][0]["result"] == {"written": f"undo flight: seat 3A ({error})"}
    assert "compensating" not in run
    logs = [line["message"] for line in engine.store.get_logs(run["id"])]
    assert "compensating 2 step(s), last completed first: flight, hotel" in logs


def test_a_failing_compensation_is_retried_then_recorded_and_the_next_runs(engine):
    run = run_once(engine, FailingUndoWorkflow)
    assert run["status"] == RunStatus.FAILED
    assert run["error"] == "step 'pay' failed: this step always fails"
    second, first = run["compensations"]
    assert second["step"] == "second" and second["status"] == "failed"
    assert second["error"] == "this step always fails" and second["attempts"] == 1
    assert first["step"] == "first" and first["status"] == "succeeded"
    assert first["attempts"] == 2 and first["result"] == {"attempt": 2}


def test_a_succeeded_run_compensates_nothing(engine):
    run = run_once(engine, SucceedingWorkflow)
    assert run["status"] == RunStatus.SUCCEEDED and "compensations" not in run
    assert not (engine.store.root / "undone.txt").exists()


def test_cancelling_a_run_undoes_what_it_did(engine):
    run, _ = engine.submit(bind(engine, CancelledWorkflow), {})
    wait_until(lambda: arrivals("cancel-me") == 1, timeout=10, message="the run reaches its gate")
    engine.cancel(engine.store.get_run(run["id"]), by="tester")
    assert engine.wait(run["id"], 10)
    done = engine.store.get_run(run["id"])
    assert done["status"] == RunStatus.CANCELLED and done["error"] is None
    assert [(entry["step"], entry["status"]) for entry in done["compensations"]] == [("hotel", "succeeded")]
    assert side_effect_lines(engine.store.root / "undone.txt") == ["undo hotel: room 7 (cancelled)"]
    assert done["history"][-1]["by"] == "tester"


def answered_at_once(control) -> dict:
    """What ``control()`` answers, called on a thread of its own: it must answer while a compensation is held."""
    answer: dict = {}
    threading.Thread(target=lambda: answer.setdefault("run", control()), daemon=True).start()
    # The held compensation never ends by itself; before the fix the answer came only after 5 s.
    return wait_until(lambda: answer.get("run"), timeout=4, message="the answer, while a compensation is held")


def test_a_cancel_answers_at_once_while_its_compensations_run(engine):
    run, _ = engine.submit(bind(engine, HeldUndoWorkflow), {})
    wait_until(lambda: arrivals("cancel-here") == 1, timeout=10, message="the run reaches its gate")
    answered = answered_at_once(lambda: engine.cancel(engine.store.get_run(run["id"]), by="tester"))
    assert not gate("undo-hotel").is_set()  # the compensation is still held: the answer did not wait for it
    assert answered["status"] == RunStatus.RUNNING and answered["compensating"] == "cancelled"
    assert step_statuses(answered) == {"hotel": "succeeded", "wait": "cancelled"}
    wait_until(lambda: arrivals("undo-hotel") == 1, timeout=10, message="the compensation reaching its gate")
    # Asked again while the compensation runs: the same answer at once; a pause is refused, naming why.
    again = answered_at_once(lambda: engine.cancel(engine.store.get_run(run["id"]), by="someone else"))
    assert again["status"] == RunStatus.RUNNING and again["compensating"] == "cancelled"
    with pytest.raises(RunStateError, match=r"cannot be paused while it undoes its steps \(compensating\); "
                                            "it ends cancelled once they ran"):
        engine.pause(engine.store.get_run(run["id"]), by="tester")
    gate("undo-hotel").set()
    wait_until(lambda: engine.store.get_run(run["id"])["status"] == RunStatus.CANCELLED, timeout=10,
               message="the run ending cancelled")
    done = engine.store.get_run(run["id"])
    assert [(entry["step"], entry["status"]) for entry in done["compensations"]] == [("hotel", "succeeded")]
    assert done["history"][-1]["by"] == "tester" and "compensating" not in done


def test_a_cancel_of_a_failing_run_answers_at_once_and_it_ends_failed(engine):
    run, _ = engine.submit(bind(engine, SlowUndoWorkflow), {})
    wait_until(lambda: arrivals("undo-flight") == 1, timeout=10, message="the first compensation starts")
    answered = answered_at_once(lambda: engine.cancel(engine.store.get_run(run["id"]), by="tester"))
    assert answered["status"] == RunStatus.RUNNING and answered["compensating"] == "failed"
    with pytest.raises(RunStateError, match="it ends failed once they ran"):
        engine.pause(engine.store.get_run(run["id"]), by="tester")
    gate("undo-flight").set()
    assert engine.wait(run["id"], 10)
    done = engine.store.get_run(run["id"])
    assert done["status"] == RunStatus.FAILED and done["error"] == "step 'pay' failed: this step always fails"
    assert [entry["status"] for entry in done["compensations"]] == ["succeeded", "succeeded"]
    logs = [line["message"] for line in engine.store.get_logs(run["id"])]
    assert "the cancel asked by tester lets the compensations finish: the run ends failed once they ran" in logs


def stopped_between_compensations(data) -> dict:
    """A SlowUndoWorkflow run whose engine shut down while its first compensation ran: the second is left."""
    reset_gates()
    first = make_engine(JsonStore(data))
    try:
        run, _ = first.submit(bind(first, SlowUndoWorkflow), {})
        wait_until(lambda: arrivals("undo-flight") == 1, timeout=10, message="the first compensation starts")
        stored = first.store.get_run(run["id"])
        assert stored["status"] == RunStatus.RUNNING and stored["compensating"] == "failed"
        assert [entry["status"] for entry in stored["compensations"]] == ["running", "pending"]
        first.shutdown(timeout=0.1)  # the compensation under way goes on; the next one is left to the restart
        gate("undo-flight").set()
        assert first.wait(run["id"], 10)
    finally:
        release_gates()
    return first.store.get_run(run["id"])


def resumed_after_restart(engine: Engine, run_id: str) -> dict:
    """The stored SlowUndoWorkflow run ``run_id`` resumed by ``engine`` (a restarted process) to its end."""
    try:
        engine.resume(bind(engine, SlowUndoWorkflow), engine.store.get_run(run_id))
        assert engine.wait(run_id, 10)
        return engine.store.get_run(run_id)
    finally:
        engine.shutdown(timeout=2)
        reset_gates()


def test_compensation_stopped_by_a_shutdown_finishes_after_the_restart(tmp_path):
    run = stopped_between_compensations(tmp_path / "data")
    assert run["status"] == RunStatus.RUNNING  # recovery picks it up
    assert [entry["status"] for entry in run["compensations"]] == ["succeeded", "pending"]
    assert not (tmp_path / "data" / "undone.txt").exists()

    done = resumed_after_restart(make_engine(JsonStore(tmp_path / "data")), run["id"])
    assert done["status"] == RunStatus.FAILED and done["error"] == "step 'pay' failed: this step always fails"
    assert [entry["status"] for entry in done["compensations"]] == ["succeeded", "succeeded"]
    assert done["compensations"][0]["attempts"] == 1  # the one that ended before the shutdown never ran again
    assert side_effect_lines(tmp_path / "data" / "undone.txt") == [
        "undo hotel: room 1 (step 'pay' failed: this step always fails)"]
    assert "compensating" not in done


def test_a_retried_run_runs_the_undone_steps_again(engine):
    run = run_once(engine, BookingWorkflow)
    retried = engine.retry(bind(engine, BookingWorkflow), run)
    assert "compensations" not in retried
    assert engine.wait(run["id"], 10)
    again = engine.store.get_run(run["id"])
    # pay fails again: flight and hotel ran again (new attempts) and were undone again.
    assert again["status"] == RunStatus.FAILED
    assert [entry["step"] for entry in again["compensations"]] == ["flight", "hotel"]
    assert len(side_effect_lines(engine.store.root / "undone.txt")) == 4


def test_the_completion_order_is_recorded(engine):
    run = run_once(engine, BookingWorkflow)
    orders = {step["name"]: step.get("completion_order") for step in run["steps"]}
    assert orders == {"hotel": 1, "note": None, "flight": 2, "pay": None}


def test_compensate_must_be_an_action():
    with pytest.raises(ValueError, match="compensate must be an action, got dict"):
        EchoAction("x", compensate={"type": "log"})


# -- declarative definitions through the API ----------------------------------------------------------
ORDER = {
    "name": "order",
    "steps": [
        {"name": "reserve", "type": "log", "config": {"message": "reserved {{ inputs.item }}"},
         "compensate": {"type": "log", "message": "released {{ steps.reserve.message }} after: {{ run.error }}"}},
        {"name": "charge", "type": "log", "config": {"message": "charged"},
         "compensate": {"name": "refund", "type": "log", "config": {"message": "refunded"}, "retries": 1}},
        # The file is not there: this step fails at once (not retryable).
        {"name": "ship", "type": "file", "config": {"operation": "read", "path": "missing.txt"}},
    ],
}


def test_a_definition_compensates_through_the_api(client):
    assert client.post("/api/workflows", json=ORDER).status_code == 201
    response = client.post("/api/workflows/order/runs?wait=10", json={"inputs": {"item": "lamp"}})
    run = response.get_json()
    assert run["status"] == "failed", run
    assert run["error"].startswith("step 'ship' failed: file read: 'missing.txt' not found")
    assert [(entry["step"], entry["type"], entry["status"]) for entry in run["compensations"]] == [
        ("charge", "log", "succeeded"), ("reserve", "log", "succeeded")]
    assert run["compensations"][0]["result"] == {"message": "refunded"}
    assert run["compensations"][1]["result"] == {"message": f"released reserved lamp after: {run['error']}"}
    page = client.get(f"/runs/{run['id']}").get_data(as_text=True)
    assert 'id="compensations-table"' in page and "released reserved lamp" in page


@pytest.mark.parametrize(("compensate", "path", "message"), [
    ("undo it", "steps[0].compensate", "must be a step definition with a type"),
    ({"config": {}}, "steps[0].compensate", "must be a step definition with a type"),
    ({"type": "telepathy"}, "steps[0].compensate.type", "unknown step type 'telepathy'"),
    ({"type": "log", "config": {"message": "x"}, "when": "{{ 1 }}"}, "steps[0].compensate.when",
     "unknown key; a compensation has config, name, retries, timeout, type"),
    ({"type": "log", "config": {"message": "x"}, "retries": -1}, "steps[0].compensate.retries",
     "must be a number >= 0, got -1"),
    ({"type": "log", "colour": "red"}, "steps[0].compensate.colour", "unknown setting for type 'log'"),
    ({"type": "log", "config": {"message": "x"}, "timeout": 10 ** 9}, "steps[0].compensate.timeout",
     "is more than WORKFLOW_MAX_STEP_TIMEOUT"),
    ({"type": "wait", "seconds": 10 ** 9}, "steps[0].compensate.seconds", "is more than WORKFLOW_MAX_WAIT"),
    ({"type": "wait", "config": {"seconds": 10 ** 9}}, "steps[0].compensate.config.seconds",
     "is more than WORKFLOW_MAX_WAIT"),
])
def test_a_bad_compensate_is_refused_naming_the_field(client, compensate, path, message):
    definition = {"name": "bad", "steps": [{"name": "a", "type": "log", "config": {"message": "a"},
                                            "compensate": compensate}]}
    response = client.post("/api/workflows", json=definition)
    assert response.status_code == 422, response.get_json()
    details = response.get_json()["error"]["details"]
    assert any(problem["path"] == path and message in problem["message"] for problem in details), details


def test_a_loops_nested_step_cannot_compensate(client):
    definition = {"name": "bad", "steps": [{"name": "each", "type": "loop", "config": {"items": [1], "steps": [
        {"name": "a", "type": "log", "config": {"message": "a"}, "compensate": {"type": "log", "message": "b"}}]}}]}
    response = client.post("/api/workflows", json=definition)
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["path"] == "steps[0].config.steps[0].compensate"


def test_cancelling_a_paused_run_undoes_what_it_did(engine):
    bound = bind(engine, PausedBookingWorkflow)
    engine.bound_for = lambda run: bound  # as the runtime sets it: the workflow a stored run executes with
    run, _ = engine.submit(bound, {})
    wait_until(lambda: arrivals("pause-here") == 1, timeout=10, message="the run reaches its gate")
    engine.pause(engine.store.get_run(run["id"]), by="tester")
    gate("pause-here").set()  # the step under way finishes, the next does not start
    wait_until(lambda: engine.store.get_run(run["id"])["status"] == RunStatus.PAUSED, timeout=10,
               message="the run pausing")
    # Stored paused a moment before the engine lets the run go (_halt: status, flush, then forget).
    wait_until(lambda: not engine.executes(run["id"]), timeout=10, message="the engine letting the paused run go")
    answered = engine.cancel(engine.store.get_run(run["id"]), by="tester")
    assert answered["compensating"] == "cancelled"
    wait_until(lambda: engine.store.get_run(run["id"])["status"] == RunStatus.CANCELLED, timeout=10,
               message="the run ending cancelled")
    done = engine.store.get_run(run["id"])
    assert [(entry["step"], entry["status"]) for entry in done["compensations"]] == [("hotel", "succeeded")]
    assert side_effect_lines(engine.store.root / "undone.txt") == ["undo hotel: room 5 (cancelled)"]
    assert step_statuses(done) == {"hotel": "succeeded", "wait": "succeeded", "after": "pending"}
    assert done["history"][-1]["by"] == "tester" and "compensating" not in done


def step_statuses(run: dict) -> dict:
    return {step["name"]: step["status"] for step in run["steps"]}


def test_results_of_compensations_before_a_restart_count_toward_the_runs_results(tmp_path):
    """A run continued after a restart counts the compensations' results already stored, as its steps' results."""
    run = stopped_between_compensations(tmp_path / "data")
    assert [entry["status"] for entry in run["compensations"]] == ["succeeded", "pending"]
    kept = [step["result"] for step in run["steps"] if step["result"]] + [run["compensations"][0]["result"]]
    undone = {"written": "undo hotel: room 1 (step 'pay' failed: this step always fails)"}
    # Room for everything but the first compensation's result: the hotel's undo is one result too many.
    room = sum(len(json.dumps(result)) for result in [*kept, undone]) - len(json.dumps(kept[-1]))
    second = Engine(JsonStore(tmp_path / "data"), {**SETTINGS, "WORKFLOW_MAX_RUN_RESULTS_MB": room / 2**20})
    done = resumed_after_restart(second, run["id"])
    assert [entry["status"] for entry in done["compensations"]] == ["succeeded", "failed"]
    assert "more than WORKFLOW_MAX_RUN_RESULTS_MB" in done["compensations"][1]["error"]
