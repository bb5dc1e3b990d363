"""An event or an answer that arrives while its run halts into ``waiting`` is not lost, nor refused."""

from __future__ import annotations

import asyncio
import logging
import threading

from aiosmtpd.controller import Controller

from app.core.config import load_settings
from app.core.events import parse_event
from app.core.runtime import Runtime
from app.runs import RunStatus
from app.storage.base import Durability
from tests.conftest import TEST_SETTINGS
from tests.server import free_port
from tests.waiting import threads_in, wait_until

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


class HeldMailbox:
    """An SMTP server that takes a message and answers it only once the test lets go (``release``)."""

    def __init__(self):
        self.messages: list[bytes] = []
        self.release = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        return "250 Message accepted"


def test_an_answer_right_after_the_mail_went_out_waits_for_the_step_to_park(tmp_path, key_file):
    mailbox = HeldMailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    runtime = Runtime({**load_settings({}), **TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                       "WORKFLOW_KEY_FILE": str(key_file), "SMTP_HOST": "127.0.0.1", "SMTP_PORT": smtp.port,
                       "SMTP_SECURITY": "none"})
    runtime.start()
    try:
        runtime.create_definition({"name": "asks", "steps": [
            {"name": "ok", "type": "approval", "config": {"to": "boss@example.org", "timeout": 600}}]})
        run, _ = runtime.submit("asks", {})
        # The mail is out (its links with it): the step still executes, not yet recorded waiting.
        wait_until(lambda: mailbox.messages, 10, message="the approval mail")
        assert runtime.get_run(run["id"])["steps"][0]["status"] == "running"
        answers: list[dict] = []
        answering = threading.Thread(target=lambda: answers.append(
            runtime.approvals.answer(run["id"], True, "olga", comment="quick")))
        answering.start()
        wait_until(lambda: threads_in("Approvals._waiting_step"), 5, message="the answer waiting for the step")
        mailbox.release.set()
        answering.join(10)
        assert answers, "the answer was refused"
        done = wait_until(lambda: (stored := runtime.get_run(run["id"]))["status"] == RunStatus.SUCCEEDED and stored,
                          message="the answered run finishing")
        assert (done["steps"][0]["result"]["by"], done["steps"][0]["result"]["comment"]) == ("olga", "quick")
        assert len(mailbox.messages) == 1
    finally:
        mailbox.release.set()
        runtime.shutdown(timeout=2)
        smtp.stop()
