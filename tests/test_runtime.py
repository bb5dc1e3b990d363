"""The runtime: persistent workflows polled on their interval, start/stop across restarts, trigger state,
failing triggers, crash recovery and retention."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from app import create_app, start_app
from app.errors import PyFlowError, StorageError
from app.runs import new_run, new_step, parse_time
from app.storage.json.store import JsonStore
from tests import pdf_factory
from tests.conftest import TEST_SETTINGS
from tests.fixtures import (
    WORKFLOWS,
    EchoAction,
    QueueTrigger,
    ResumableWorkflow,
    SendOnceWorkflow,
    side_effect_lines,
    wait_until,
)
from triggers.interval import IntervalTrigger
from workflows.base import Workflow


class MisconfiguredTickWorkflow(Workflow):
    name = "misconfigured_tick"
    description = "Its interval is a URL, so it cannot be polled."
    trigger = IntervalTrigger("every", seconds="{{ settings.UPTIME_URL }}")
    actions = [EchoAction("echo", value="{{ inputs.text }}")]


@pytest.fixture
def make_app(storage):
    """Create apps over this test's storage folder; all are shut down at the end."""
    apps = []

    def make(*extra_workflows, **settings):
        app = start_app(create_app({
            **TEST_SETTINGS,
            "WORKFLOW_STORAGE_PATH": str(storage),
            "WORKFLOW_CLASSES": [*WORKFLOWS, *extra_workflows],
            **settings,
        }))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["pyflow"].shutdown(timeout=2)


@pytest.fixture(autouse=True)
def empty_queue():
    QueueTrigger.items[:] = []
    yield
    QueueTrigger.items[:] = []


def ticks(storage) -> list[str]:
    return side_effect_lines(storage / "ticks.txt")


def finished_runs(client, workflow: str) -> list[dict]:
    runs = client.get(f"/api/runs?workflow={workflow}&limit=500").get_json()["runs"]
    return [run for run in runs if run["status"] in ("succeeded", "failed")]


def settle(client, workflow: str) -> list[dict]:
    """Wait until no poll of ``workflow`` is under way and no run of it is queued or running; all its runs."""
    def quiet():
        if workflow in client.application.extensions["pyflow"].scheduler.polling():
            return None  # a poll may still be submitting a run
        runs = client.get(f"/api/runs?workflow={workflow}&limit=500").get_json()["runs"]
        return runs if all(run["status"] not in ("queued", "running") for run in runs) else None
    return wait_until(quiet, message=f"runs of {workflow} finished") or []


# -- start and stop -------------------------------------------------------------------------------------


def test_a_started_interval_workflow_runs_on_its_interval_until_stopped(client, storage):
    response = client.post("/api/workflows/tick/start")
    assert response.status_code == 200
    assert response.get_json()["status"] == "running"
    assert client.get("/api/workflows/tick").get_json()["status"] == "running"

    wait_until(lambda: len(ticks(storage)) >= 4, message="4 ticks")

    response = client.post("/api/workflows/tick/stop")
    assert response.status_code == 200
    assert response.get_json()["status"] == "stopped"
    runs = settle(client, "tick")
    count = len(ticks(storage))
    assert count == len(runs)
    assert all(run["status"] == "succeeded" and run["source"] == "schedule" for run in runs)
    # Each line is the id of the run that wrote it: one line per run, none twice.
    assert sorted(ticks(storage)) == sorted(run["id"] for run in runs)
    # Every 0.2 s, the first at once: the runs' scheduled times are one interval apart (or more, when late).
    scheduled = sorted(parse_time(run["trigger_data"]["scheduled_time"]) for run in runs)
    assert all(later - earlier >= 0.2 - 0.002 for earlier, later in zip(scheduled, scheduled[1:], strict=False))

    # Stopped: no longer scheduled, so nothing can fire again.
    assert "tick" not in client.application.extensions["pyflow"].scheduler.scheduled()
    assert len(ticks(storage)) == count
    assert client.get("/api/workflows/tick").get_json()["status"] == "stopped"


def test_start_and_stop_are_idempotent(client):
    assert client.post("/api/workflows/tick/stop").get_json()["status"] == "stopped"
    assert client.post("/api/workflows/tick/start").get_json()["status"] == "running"
    assert client.post("/api/workflows/tick/start").get_json()["status"] == "running"
    assert client.post("/api/workflows/tick/stop").get_json()["status"] == "stopped"
    assert client.post("/api/workflows/tick/stop").get_json()["status"] == "stopped"


def test_trigger_state_is_saved_after_polls(client, storage):
    before = time.time()
    client.post("/api/workflows/tick/start")
    wait_until(lambda: len(ticks(storage)) >= 2, message="2 ticks")
    state = JsonStore(storage).load_trigger_state("tick")
    assert before < state["last_fired_at"] <= time.time()
    client.post("/api/workflows/tick/stop")


def test_a_started_workflow_is_started_again_after_a_restart(make_app, storage):
    first = make_app()
    first.test_client().post("/api/workflows/tick/start")
    wait_until(lambda: len(ticks(storage)) >= 1, message="a first tick")
    first.extensions["pyflow"].shutdown(timeout=2)
    before_restart = len(ticks(storage))
    saved = JsonStore(storage).load_trigger_state("tick")

    second = make_app()
    client = second.test_client()
    assert client.get("/api/workflows/tick").get_json()["status"] == "running"
    # The trigger continues from its saved state: no burst of missed ticks, and new ones on the interval.
    assert second.extensions["pyflow"].bound["tick"].trigger.state["last_fired_at"] >= saved["last_fired_at"]
    wait_until(lambda: len(ticks(storage)) >= before_restart + 2, message="ticks after the restart")
    client.post("/api/workflows/tick/stop")


def test_a_stopped_workflow_stays_stopped_after_a_restart(make_app, storage):
    first = make_app()
    first.test_client().post("/api/workflows/tick/start")
    first.test_client().post("/api/workflows/tick/stop")
    count = len(settle(first.test_client(), "tick"))  # also waits for a poll the start began
    assert count <= 1
    first.extensions["pyflow"].shutdown(timeout=2)

    client = make_app().test_client()
    assert client.get("/api/workflows/tick").get_json()["status"] == "stopped"
    assert "tick" not in client.application.extensions["pyflow"].scheduler.scheduled()  # so it cannot fire
    assert len(ticks(storage)) == count


def test_a_started_workflow_that_is_no_longer_registered_does_not_stop_start_up(make_app, storage):
    JsonStore(storage).set_started("retired_workflow", True)
    client = make_app().test_client()
    assert client.get("/api/health").status_code == 200
    names = [summary["name"] for summary in client.get("/api/workflows").get_json()["workflows"]]
    assert "retired_workflow" not in names and "tick" in names


def test_a_workflow_whose_trigger_cannot_be_set_up_can_still_run_but_not_start(make_app):
    client = make_app(MisconfiguredTickWorkflow).test_client()
    summary = client.get("/api/workflows/misconfigured_tick").get_json()
    assert "seconds must be a number of seconds" in summary["error"]
    response = client.post("/api/workflows/misconfigured_tick/start")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "conflict"
    assert "seconds must be a number of seconds" in response.get_json()["error"]["message"]
    run = client.post("/api/workflows/misconfigured_tick/runs?wait=5", json={"inputs": {"text": "by hand"}})
    assert run.status_code == 200
    assert run.get_json()["steps"][0]["result"] == {"value": "by hand"}


# -- failing triggers ------------------------------------------------------------------------------------


def test_a_failing_trigger_is_recorded_with_backoff_and_other_workflows_keep_running(client, storage):
    assert client.post("/api/workflows/broken_trigger/start").status_code == 200
    client.post("/api/workflows/tick/start")
    wait_until(lambda: len(ticks(storage)) >= 4, message="ticks while another trigger fails")
    wait_until(lambda: client.get("/api/workflows/broken_trigger").get_json()["last_poll"]["failures"] >= 3,
               message="three failed polls")

    summary = client.get("/api/workflows/broken_trigger").get_json()
    poll = summary["last_poll"]
    assert summary["status"] == "running"
    assert poll["error"] == "ConnectionRefusedError: server 127.0.0.1:9 refused connection"
    assert poll["events"] == 0
    # Each failure doubles the wait before the next poll (0.05 s, its check interval, after the first).
    assert poll["retry_in_s"] == round(0.05 * 2 ** (poll["failures"] - 1), 1)
    assert client.get("/api/runs?workflow=broken_trigger").get_json()["runs"] == []
    # The listing shows it too, and still answers.
    listed = {summary["name"]: summary for summary in client.get("/api/workflows").get_json()["workflows"]}
    assert listed["broken_trigger"]["last_poll"]["error"] == poll["error"]
    assert listed["tick"]["last_poll"]["error"] is None
    client.post("/api/workflows/tick/stop")
    client.post("/api/workflows/broken_trigger/stop")


def test_polling_a_failing_trigger_by_hand_answers_502_naming_the_cause(client):
    response = client.post("/api/workflows/broken_trigger/poll")
    assert response.status_code == 502
    assert response.get_json() == {"error": {
        "code": "trigger_failed",
        "message": "polling 'broken_trigger' failed: ConnectionRefusedError: server 127.0.0.1:9 refused connection",
    }}


# -- events -----------------------------------------------------------------------------------------------


def test_a_poll_runs_each_event_once(client, runtime):
    QueueTrigger.items.extend([{"n": 1}, {"n": 2}, {"n": 3}])
    response = client.post("/api/workflows/queued_events/poll")
    assert response.status_code == 200
    runs = response.get_json()["runs"]
    assert [run["trigger_data"] for run in runs] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert all(run["source"] == "poll" for run in runs)

    assert client.post("/api/workflows/queued_events/poll").get_json() == {"runs": []}
    done = settle(client, "queued_events")
    assert sorted(run["steps"][0]["result"]["value"] for run in done) == [1, 2, 3]
    assert runtime.store.load_trigger_state("queued_events") == {"seen": 3}


def test_a_started_event_workflow_runs_every_event_exactly_once(client):
    client.post("/api/workflows/queued_events/start")
    QueueTrigger.items.extend([{"n": n} for n in range(5)])
    wait_until(lambda: len(finished_runs(client, "queued_events")) >= 5, message="5 event runs")
    QueueTrigger.items.append({"n": 5})
    wait_until(lambda: len(finished_runs(client, "queued_events")) >= 6, message="a 6th event run")
    client.post("/api/workflows/queued_events/stop")
    values = sorted(run["trigger_data"]["n"] for run in settle(client, "queued_events"))
    assert values == [0, 1, 2, 3, 4, 5]


class HourlyWorkflow(Workflow):
    name = "hourly"
    description = "Fires once an hour (a report)."
    trigger = IntervalTrigger("hourly", seconds=3600)
    actions = [EchoAction("echo", value=1)]


def test_an_interval_fire_whose_run_could_not_be_stored_fires_once_the_store_writes_again(make_app, storage):
    # The store failed as the report was due (a full disk, PostgreSQL restarting): the trigger had moved its
    # last fire time all the same, so that fire was lost and the next came an interval later.
    client = make_app(HourlyWorkflow).test_client()
    keys, moved = storage / "keys", storage / "keys.moved"
    keys.rename(moved)
    keys.write_text("")  # a file where the idempotency keys' folder was: every trigger run's creation fails
    failed = client.post("/api/workflows/hourly/poll")
    assert failed.status_code == 502
    assert "cannot read" in failed.get_json()["error"]["message"]
    keys.unlink()
    moved.rename(keys)
    runs = client.post("/api/workflows/hourly/poll").get_json()["runs"]
    assert [run["workflow"] for run in runs] == ["hourly"]
    assert client.post("/api/workflows/hourly/poll").get_json()["runs"] == [], "then once an hour, as before"


# -- the interval trigger alone -------------------------------------------------------------------------


def test_interval_trigger_fires_at_once_then_once_per_interval():
    trigger = IntervalTrigger("every", seconds=0.2)
    trigger.setup({})
    first = trigger.poll()
    assert len(first) == 1
    assert set(first[0]) == {"scheduled_time", "fired_at"}
    assert first[0]["fired_at"].endswith("Z")
    first_fired = trigger.state["last_fired_at"]
    assert trigger.poll() == []
    wait_until(lambda: time.time() > first_fired + 0.2, message="the next interval")  # the clock is what it waits for
    second = trigger.poll()
    assert len(second) == 1
    # On the grid: the second fire is scheduled one interval after the first, however late the poll came.
    assert abs(parse_time(second[0]["scheduled_time"]) - (first_fired + 0.2)) < 0.002
    assert trigger.poll() == []


def test_interval_trigger_restored_from_state_does_not_fire_early():
    trigger = IntervalTrigger("every", seconds=0.3)
    trigger.setup({})
    trigger.poll()

    restarted = IntervalTrigger("every", seconds=0.3)
    restarted.setup({})
    restarted.state = dict(trigger.state)
    assert restarted.poll() == []
    wait_until(lambda: time.time() > trigger.state["last_fired_at"] + 0.3, message="the interval since the last fire")
    assert len(restarted.poll()) == 1


def test_interval_trigger_after_a_long_outage_fires_once_and_restarts_the_grid_from_now():
    trigger = IntervalTrigger("every", seconds=0.1)
    trigger.setup({})
    trigger.state = {"last_fired_at": time.time() - 3600}
    before = time.time()
    assert len(trigger.poll()) == 1
    assert trigger.poll() == []
    assert trigger.state["last_fired_at"] >= before  # the grid starts from the fire, not from an hour ago


@pytest.mark.parametrize("seconds", [0, -1, "abc", None, "0"])
def test_interval_trigger_refuses_a_bad_interval(seconds):
    with pytest.raises(ValueError, match=r"trigger 'every': seconds must be"):
        IntervalTrigger("every", seconds=seconds)


def test_interval_trigger_takes_a_template_checked_at_setup():
    trigger = IntervalTrigger("every", seconds="{{ settings.UPTIME_INTERVAL }}")
    trigger.seconds = "2.5"  # what rendering the template would leave
    trigger.setup({})
    assert trigger.seconds == 2.5
    assert trigger.default_check_interval == 1.0


# -- crash recovery and retention ------------------------------------------------------------------------


def stored_run(storage, workflow, status: str, finished_steps: int = 0, running_step: bool = False) -> dict:
    """A run as a crashed process left it in the JSON store."""
    steps = [new_step(action.name, action.type) for action in workflow.actions]
    for index in range(finished_steps):
        steps[index].update(status="succeeded", attempts=1, result={"written": workflow.actions[index].name})
    if running_step:
        steps[finished_steps].update(status="running", attempts=1, started_at="2026-01-01T10:00:00.000Z")
    run = new_run(workflow.name, steps, {}, "api")
    run["status"] = status
    store = JsonStore(storage)
    store.create_run(run)
    store.close()  # what its process wrote reaches the files: deferred index lines too
    return run


def test_runs_interrupted_by_a_crash_resume_on_start_up(make_app, storage):
    queued = stored_run(storage, ResumableWorkflow, "queued")
    midway = stored_run(storage, SendOnceWorkflow, "running", finished_steps=1, running_step=True)
    storage.joinpath("resume.txt").write_text("", encoding="utf-8")

    client = make_app(ResumableWorkflow, SendOnceWorkflow).test_client()

    def finished(run_id):
        run = client.get(f"/api/runs/{run_id}").get_json()
        return run if run["status"] in ("succeeded", "failed") else None

    assert wait_until(lambda: finished(queued["id"]))["status"] == "succeeded"
    assert side_effect_lines(storage / "resume.txt") == ["first", "second after first", "third"]
    interrupted = wait_until(lambda: finished(midway["id"]))
    assert interrupted["status"] == "failed"
    assert interrupted["error"] == "step 'send' failed: interrupted by restart"
    assert side_effect_lines(storage / "sent.txt") == []


def test_a_stored_run_of_a_workflow_that_is_gone_fails_on_start_up(make_app, storage):
    orphan = stored_run(storage, ResumableWorkflow, "queued")
    client = make_app().test_client()  # ResumableWorkflow is not registered in this app
    run = client.get(f"/api/runs/{orphan['id']}").get_json()
    assert run["status"] == "failed"
    assert run["error"] == "workflow 'resumable' is no longer registered"
    assert [(entry["from"], entry["to"]) for entry in run["history"]][-1:] == [("queued", "failed")]


def test_finished_runs_older_than_the_retention_are_pruned(make_app):
    app = make_app(WORKFLOW_RETENTION_DAYS=0.5 / 86400)  # half a second
    client = app.test_client()
    old = client.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "old"}}).get_json()
    wait_until(lambda: time.time() > parse_time(old["finished_at"]) + 0.5, message="the retention to pass")
    new = client.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "new"}}).get_json()
    assert app.extensions["pyflow"].maintain() == 1
    assert client.get(f"/api/runs/{old['id']}").status_code == 404
    assert client.get(f"/api/runs/{new['id']}").status_code == 200
    assert [run["id"] for run in client.get("/api/runs?workflow=echo").get_json()["runs"]] == [new["id"]]


def test_attachment_folders_older_than_the_retention_are_pruned(make_app, storage):
    app = make_app(WORKFLOW_RETENTION_DAYS=1)
    old, new = storage / "attachments" / "old-upload", storage / "attachments" / "new-upload"
    for folder in (old, new):
        folder.mkdir(parents=True)
        (folder / "form.pdf").write_bytes(b"%PDF-1.4")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))

    app.extensions["pyflow"].maintain()

    assert not old.exists()
    assert (new / "form.pdf").read_bytes() == b"%PDF-1.4"


def test_run_sync_waits_for_the_run(runtime):
    run = runtime.run_sync("echo", {"text": "cli"}, timeout=5)
    assert run["status"] == "succeeded"
    assert run["source"] == "cli"
    assert run["steps"][1]["result"] == {"value": "CLI"}


# -- storage that cannot be written ----------------------------------------------------------------------


def test_a_storage_folder_below_a_regular_file_stops_start_up_naming_the_path(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("I am a file", encoding="utf-8")
    storage = blocker / "data"
    with pytest.raises(PyFlowError) as caught:
        start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage)}))
    assert isinstance(caught.value, StorageError)
    assert str(storage) in str(caught.value)
    assert "Not a directory" in str(caught.value)


@pytest.mark.parametrize("stored_by", ["this PyFlow", "an older PyFlow"])
def test_a_run_resumed_after_a_restart_still_reads_its_own_upload(make_app, tmp_path, stored_by):
    """Its attachment_folders are in its stored record: the restarted server's steps read its upload still.

    A run stored by an older PyFlow has no such key (an upgrade finds it waiting): it keeps the folders its
    own attachment records name.
    """
    first = make_app().test_client()
    assert first.post("/api/workflows", json={"name": "approve_then_read", "steps": [
        {"name": "approve", "type": "approval", "config": {}},
        {"name": "read", "type": "pdf_text", "config": {"file": "{{ inputs.attachments }}"}}]}).status_code == 201
    pdf = pdf_factory.lines_pdf(tmp_path / "own.pdf", [[f"Stored by {stored_by}"]]).read_bytes()
    posted = first.post("/api/workflows/approve_then_read/runs", content_type="multipart/form-data",
                        data={"form": (io.BytesIO(pdf), "own.pdf", "application/pdf")})
    assert posted.status_code == 202, posted.get_json()
    run_id = posted.get_json()["id"]
    wait_until(lambda: first.get(f"/api/runs/{run_id}").get_json()["status"] == "waiting",
               message="the run waiting for its approval")
    if stored_by == "an older PyFlow":
        store = first.application.extensions["pyflow"].store
        older = store.get_run(run_id)
        del older["attachment_folders"]  # as PyFlow stored a run before it recorded them
        store.save_run(older)
    first.application.extensions["pyflow"].shutdown(timeout=2)

    second = make_app().test_client()
    assert second.post(f"/api/runs/{run_id}/approve", json={}).status_code == 200
    done = wait_until(lambda: (run := second.get(f"/api/runs/{run_id}").get_json())["status"] in (
        "succeeded", "failed") and run, message="the resumed run finished")
    assert done["status"] == "succeeded", done["error"]
    assert f"Stored by {stored_by}" in done["steps"][1]["result"]["text"]
    if stored_by == "this PyFlow":
        assert done["attachment_folders"] == [Path(done["trigger_data"]["attachments"][0]["path"]).parent.name]
