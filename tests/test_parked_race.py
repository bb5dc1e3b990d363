"""An event that arrives while its run halts into ``waiting`` (indexed, not yet stored waiting) is not lost."""

from __future__ import annotations

import logging
import threading

from app.core.config import load_settings
from app.core.events import parse_event
from app.core.runtime import Runtime
from app.runs import RunStatus
from app.storage.base import Durability
from tests.conftest import TEST_SETTINGS
from tests.waiting import wait_until

WAITS = {
    "name": "waits_for_payment",
    "steps": [
        {"name": "paid", "type": "wait_for_event", "config": {"event": "order.paid", "key": "{{ inputs.order }}",
                                                               "timeout": 600}},
        {"name": "ship", "type": "log", "config": {"message": "ship {{ inputs.order }}"}},
    ],
}


def test_an_event_during_the_halt_into_waiting_waits_for_it_and_wakes_the_run(tmp_path, key_file, caplog):
    caplog.set_level(logging.DEBUG, logger="app.core.parking")
    runtime = Runtime({**load_settings({}), **TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                       "WORKFLOW_KEY_FILE": str(key_file)})
    runtime.start()
    try:
        runtime.create_definition(WAITS)
        run, _ = runtime.submit("waits_for_payment", {"order": "A-1"})
        wait_until(lambda: runtime.get_run(run["id"])["status"] == RunStatus.WAITING, message="the run parking")
        # The moment between indexing the parked step and storing the run waiting, held open on purpose.
        runtime.store.update_run(run["id"], {"status": RunStatus.RUNNING.value}, mode=Durability.SYNC)
        answers: list[dict] = []
        publishing = threading.Thread(target=lambda: answers.append(
            runtime.publish(parse_event({"type": "order.paid", "key": "A-1", "data": {}}))))
        publishing.start()
        wait_until(lambda: any("is halting into waiting" in record.getMessage() for record in caplog.records),
                   message="the event finding the run still halting")
        runtime.store.update_run(run["id"], {"status": RunStatus.WAITING.value}, mode=Durability.SYNC)
        publishing.join(10)
        assert answers and answers[0]["resumed"] == [run["id"]]
        done = wait_until(lambda: (stored := runtime.get_run(run["id"]))["status"] == RunStatus.SUCCEEDED and stored,
                          message="the woken run finishing")
        assert done["steps"][1]["result"] == {"message": "ship A-1"}
    finally:
        runtime.shutdown(timeout=2)
