"""An event or an answer that arrives while its run halts into ``waiting`` is not lost, nor refused."""

from __future__ import annotations

import asyncio
import logging
import re
import threading

from aiosmtpd.controller import Controller

from app import create_app, start_app
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


def test_a_link_of_an_earlier_park_never_answers_the_step_parked_again_after_a_retry(tmp_path, key_file):
    # A link was read (its step waiting for it), then the step was answered through another way, failed, and
    # was retried: parked again, with a new nonce and new links. The old link's answer, arriving only then,
    # approved the new park, which nobody had answered.
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                                "WORKFLOW_KEY_FILE": str(key_file)}))
    runtime = app.extensions["pyflow"]
    client = app.test_client()
    held = False
    try:
        runtime.create_definition({"name": "asks", "steps": [
            {"name": "ok", "type": "approval", "config": {"to": "boss@example.org", "timeout": 600}}]})
        run, _ = runtime.submit("asks", {})
        first = wait_until(lambda: waiting_park(runtime, run["id"]), message="the step's first park")
        old_link = "/approvals/" + runtime.approvals.links(run["id"], "ok", first["until_epoch"],
                                                           first["nonce"])["approve"].rsplit("/", 1)[1]
        page = client.get(old_link)
        assert page.status_code == 200
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)

        runtime.control_lock.acquire()  # the old link's answer is held between reading the link and the step
        held = True
        answers = []
        answering = threading.Thread(target=lambda: answers.append(
            client.post(old_link, data={"csrf_token": csrf, "comment": "from the old mail"})))
        answering.start()
        wait_until(lambda: threads_in("Parking._wake_once"), message="the old link's answer reaching the step")
        # Meanwhile (this thread holds the lock, which is re-entrant): rejected on the dashboard, then retried.
        runtime.approvals.answer(run["id"], False, "olga", comment="not like this")
        wait_until(lambda: runtime.get_run(run["id"])["status"] == RunStatus.FAILED, message="the rejected run")
        runtime.control(run["id"], "retry")
        second = wait_until(lambda: (park := waiting_park(runtime, run["id"])) and park["nonce"] != first["nonce"]
                            and park, message="the retried step parked again")
        runtime.control_lock.release()
        held = False
        answering.join(10)

        assert answers and answers[0].status_code == 409
        assert "Already answered" in answers[0].get_data(as_text=True)
        stored = runtime.get_run(run["id"])
        assert stored["status"] == RunStatus.WAITING and stored["steps"][0]["wait"]["nonce"] == second["nonce"]
        assert [entry["step"] for entry in runtime.store.parked(run["id"])] == ["ok"]  # still answerable
        done = runtime.approvals.answer(run["id"], True, "olga", nonce=second["nonce"])
        done = wait_until(lambda: (stored := runtime.get_run(run["id"]))["status"] == RunStatus.SUCCEEDED and stored,
                          message="the run answered through its new park")
        assert done["steps"][0]["result"]["by"] == "olga"
    finally:
        if held:
            runtime.control_lock.release()
        runtime.shutdown(timeout=2)


def waiting_park(runtime: Runtime, run_id: str) -> dict | None:
    """The approval step's park record while the run waits for it, else None."""
    run = runtime.get_run(run_id)
    step = run["steps"][0]
    return step["wait"] if run["status"] == RunStatus.WAITING and step["status"] == "waiting" else None
