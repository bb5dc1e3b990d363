"""Crash recovery of a real run.py: SIGKILL or SIGTERM mid-run, start again on the same storage.

What is promised: a finished step is recorded once and never run again; the step a crash cut
short runs again (at least once) unless it is ``idempotent = False``, which fails with
"interrupted by restart" instead; queued runs wait on disk; a paused run stays paused.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from app.storage.json.store import JsonStore
from tests.fixtures import side_effect_lines, wait_until
from tests.server import Server, Servers

pytestmark = pytest.mark.slow  # starts real run.py servers and kills them mid-run

FINISHED = ("succeeded", "failed", "cancelled")
CRASH_LINES = ["one", "two", "three", "four"]


@pytest.fixture
def servers(tmp_path):
    with Servers(tmp_path) as servers:
        yield servers


def finished(server: Server, run_id: str, timeout: float = 20) -> dict:
    """The run once it is finished."""
    def done():
        run = server.get(f"/api/runs/{run_id}").json()
        return run if run["status"] in FINISHED else None
    return wait_until(done, timeout=timeout, interval=0.05, message=f"run {run_id} finished")


def stored_run(server: Server, run_id: str) -> dict:
    """The run as the dead server left it on disk."""
    assert server.process is None, "read the store only while no server runs"
    return JsonStore(server.storage).get_run(run_id)


def transitions(run: dict) -> list[tuple[str | None, str, str]]:
    return [(entry["from"], entry["to"], entry["by"]) for entry in run["history"]]


def test_a_run_killed_mid_way_finishes_after_a_restart_and_finished_steps_run_once(servers):
    server = servers.start()
    lines = server.storage / "crash.txt"
    run_id = server.post("/api/workflows/crash_steps/runs").json()["id"]
    wait_until(lambda: "two" in side_effect_lines(lines), timeout=20, interval=0.01, message="step two's line")

    server.kill()
    at_kill = stored_run(server, run_id)
    done = {step["name"]: step for step in at_kill["steps"] if step["status"] == "succeeded"}
    cut_short = [step["name"] for step in at_kill["steps"] if step["status"] == "running"]
    assert at_kill["status"] == "running"
    assert "one" in done and len(cut_short) <= 1, at_kill["steps"]

    server.start()
    run = finished(server, run_id)

    assert run["status"] == "succeeded", run["error"]
    assert [step["status"] for step in run["steps"]] == ["succeeded"] * 7
    counts = Counter(side_effect_lines(lines))
    assert set(counts) == set(CRASH_LINES)
    for name in CRASH_LINES:
        if name in cut_short:
            assert 1 <= counts[name] <= 2, (
                f"step {name} was cut short by the kill: it runs again (at-least-once), so its line "
                f"may appear twice but never more, got {counts[name]}")
        else:
            assert counts[name] == 1, f"step {name} must run exactly once, its line appears {counts[name]} times"
    # Finished steps keep the record they had: not re-run, not re-recorded.
    for step in run["steps"]:
        if step["name"] in done:
            assert step == done[step["name"]]
    assert transitions(run) == [
        (None, "queued", "api"),
        ("queued", "running", "engine"),
        ("running", "queued", "restart"),
        ("queued", "running", "engine"),
        ("running", "succeeded", "engine"),
    ]


def test_a_non_idempotent_step_cut_short_by_a_crash_fails_instead_of_running_twice(servers):
    server = servers.start()
    sent = server.storage / "sent.txt"
    run_id = server.post("/api/workflows/send_slowly/runs").json()["id"]
    wait_until(lambda: side_effect_lines(sent), timeout=20, interval=0.01, message="the step started sending")

    server.kill()
    server.start()
    run = finished(server, run_id)

    assert run["status"] == "failed"
    assert run["error"] == "step 'send' failed: interrupted by restart"
    assert [(step["name"], step["status"]) for step in run["steps"]] == [
        ("prepare", "succeeded"), ("send", "failed"), ("after", "pending")]
    assert side_effect_lines(sent) == ["sent"]
    # A person checks whether it was sent and decides: here, skip it and go on.
    skipped = server.post(f"/api/runs/{run_id}/skip", json={"step": "send"})
    assert skipped.status_code == 200, skipped.text
    assert finished(server, run_id)["status"] == "succeeded"
    assert side_effect_lines(sent) == ["sent"]


def test_queued_runs_survive_a_crash_and_then_run_one_at_a_time(servers):
    server = servers.make(env={"WORKFLOW_MAX_CONCURRENT": "1"}).start()
    ids = [server.post("/api/workflows/queued_work/runs").json()["id"] for _ in range(5)]
    wait_until(lambda: server.get(f"/api/runs/{ids[0]}").json()["status"] == "running", timeout=20)

    server.kill()
    at_kill = {run_id: stored_run(server, run_id)["status"] for run_id in ids}
    queued = [run_id for run_id, status in at_kill.items() if status == "queued"]
    assert len(queued) >= 3, at_kill

    server.start()
    runs = [finished(server, run_id) for run_id in ids]

    assert [run["status"] for run in runs] == ["succeeded"] * 5
    counts = Counter(side_effect_lines(server.storage / "queued.txt"))
    assert set(counts) == set(ids)
    for run_id in queued:
        assert counts[run_id] == 1, f"queued run {run_id} recorded {counts[run_id]} times"
    # After the restart, too, WORKFLOW_MAX_CONCURRENT=1 holds: the runs' last executions never overlap.
    spans = sorted((run["history"][-2]["at"], run["history"][-1]["at"]) for run in runs)
    for (_, end), (begin, _) in zip(spans, spans[1:], strict=False):
        assert end <= begin, spans


def test_a_paused_run_stays_paused_across_a_restart_and_resumes_after(servers):
    server = servers.start()
    lines = server.storage / "crash.txt"
    run_id = server.post("/api/workflows/crash_steps/runs").json()["id"]
    wait_until(lambda: side_effect_lines(lines), timeout=20, interval=0.01, message="step one's line")
    paused = server.post(f"/api/runs/{run_id}/pause").json()
    assert paused["status"] == "paused", paused
    written = side_effect_lines(lines)

    server.restart()  # SIGTERM, then a new process on the same storage
    time.sleep(0.7)  # longer than a step: a run that resumed by mistake would have written a line

    run = server.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "paused"
    assert side_effect_lines(lines) == written
    assert server.post(f"/api/runs/{run_id}/resume").status_code == 200
    assert finished(server, run_id)["status"] == "succeeded"
    assert side_effect_lines(lines) == CRASH_LINES


def test_sigterm_lets_the_running_step_finish_and_the_restart_goes_on_from_the_next(servers):
    server = servers.start()
    lines = server.storage / "crash.txt"
    run_id = server.post("/api/workflows/crash_steps/runs").json()["id"]
    wait_until(lambda: side_effect_lines(lines), timeout=20, interval=0.01, message="step one's line")

    server.stop()
    at_stop = stored_run(server, run_id)
    assert at_stop["status"] == "running"
    assert "running" not in [step["status"] for step in at_stop["steps"]], "a clean stop waits for the step"

    server.start()
    run = finished(server, run_id)

    assert run["status"] == "succeeded"
    assert side_effect_lines(lines) == CRASH_LINES
    assert ("running", "queued", "restart") in transitions(run)
