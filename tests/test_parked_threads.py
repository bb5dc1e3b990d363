"""1,000 runs waiting at once hold no thread each (DESIGN section 12): parked runs live in the store only."""

from __future__ import annotations

import threading

from app.runs import RunStatus
from tests.waiting import wait_until

WAITING_RUNS = 1000


def test_a_thousand_waiting_runs_hold_no_thread_and_one_event_wakes_them(runtime):
    runtime.create_definition({"name": "parks", "steps": [
        {"name": "signal", "type": "wait_for_event", "config": {"event": "go", "timeout": 3600}},
        {"name": "after", "type": "log", "config": {"message": "went"}}]})
    before = threading.active_count()
    ids = [runtime.submit("parks", {})[0]["id"] for _ in range(WAITING_RUNS)]
    wait_until(lambda: len(runtime.store.find_run_ids({RunStatus.WAITING.value})) == WAITING_RUNS, 120,
               message=f"{WAITING_RUNS} runs waiting")
    # At most the engine's idle slot threads linger (WORKFLOW_MAX_CONCURRENT), whatever the number of waiting runs.
    slots = int(runtime.settings["WORKFLOW_MAX_CONCURRENT"])
    assert threading.active_count() <= before + slots + 2
    assert not any(runtime.engine.executes(run_id) for run_id in ids)
    assert len(runtime.store.parked_for("go", None)) == WAITING_RUNS

    answer = runtime.publish({"id": "go-1", "type": "go", "data": {}, "key": None, "at": "", "depth": 0})
    assert sorted(answer["resumed"]) == sorted(ids)
    wait_until(lambda: len(runtime.store.find_run_ids({RunStatus.SUCCEEDED.value})) == WAITING_RUNS, 120,
               message=f"{WAITING_RUNS} runs succeeded")
