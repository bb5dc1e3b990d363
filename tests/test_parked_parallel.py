"""Parallel branches of one run parked at once (approvals, events, timeouts): each step indexed, mailed and woken
on its own, over every store and with a worker (procrastinate; celery on Redis). Mail goes to a real SMTP server
(aiosmtpd)."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest

from actions.approval import ApprovalAction
from app.core.approvals import answered
from app.core.config import load_settings
from app.core.events import parse_event
from app.core.runtime import Runtime
from app.runs import RunStatus, StepStatus
from app.storage.memory import MemoryStore
from tests.conftest import TEST_SETTINGS
from tests.fixtures import GateAction, gate, release_gates, reset_gates
from tests.fixtures.actions import EchoAction
from tests.mailbox import smtp_server
from tests.runtimes import runtimes
from tests.server import Servers, free_port
from tests.services import unique_queue
from tests.test_approval_flow import follow
from tests.waiting import wait_until
from workflows.base import Workflow

LEGAL, FINANCE = "legal@example.org", "finance@example.org"

TWO_APPROVALS = {"name": "two_approvals", "steps": [
    {"name": "legal", "type": "approval", "config": {"to": LEGAL, "timeout": 600}},
    {"name": "finance", "type": "approval", "config": {"to": FINANCE, "timeout": 600}, "depends_on": []},
    {"name": "done", "type": "log", "depends_on": ["legal", "finance"],
     "config": {"message": "{{ steps.legal.by }} and {{ steps.finance.by }}"}}]}
TWO_EVENTS = {"name": "two_orders", "steps": [
    {"name": "a", "type": "wait_for_event", "config": {"event": "order.paid", "key": "A", "timeout": 600}},
    {"name": "b", "type": "wait_for_event", "config": {"event": "order.paid", "key": "B", "timeout": 600},
     "depends_on": []},
    {"name": "done", "type": "log", "depends_on": ["a", "b"],
     "config": {"message": "{{ steps.a.event.data.amount + steps.b.event.data.amount }}"}}]}
APPROVAL_OR_TIMEOUT = {"name": "approval_or_timeout", "steps": [
    {"name": "ok", "type": "approval", "config": {"to": LEGAL, "timeout": 600}},
    {"name": "signal", "type": "wait_for_event", "depends_on": [],
     "config": {"event": "never.comes", "timeout": 1, "on_timeout": "continue"}},
    {"name": "done", "type": "log", "depends_on": ["ok", "signal"],
     "config": {"message": "{{ steps.ok.by }} {{ steps.signal.timed_out }}"}}]}


class BusyBranch(Workflow):
    """After ``legal`` a step holds the run at a gate while ``finance`` still waits for its answer."""

    name = "busy_branch"
    actions = [ApprovalAction("legal", to=LEGAL, timeout=600),
               GateAction("hold", gate="busy-branch", depends_on=["legal"]),
               ApprovalAction("finance", to=FINANCE, timeout=600, depends_on=[]),
               EchoAction("done", value="{{ steps.finance.by }}", depends_on=["hold", "finance"])]


@pytest.fixture
def mailbox():
    with smtp_server() as served:
        yield served


class Setup:
    """A server (and, with procrastinate, a worker) of one mode; ``restart`` stops the server and starts another."""

    def __init__(self, mode: str, make, settings: dict):
        self.mode, self.make, self.settings = mode, make, settings
        self.restarts = 0

    def start(self) -> Runtime:
        self.server = self.make("server")
        self.worker: Runtime | None = None
        return self.server

    def run(self, definition: dict | None, name: str | None = None) -> str:
        """Create ``definition`` (None: a Python workflow), start the worker (it loads the stored definitions), and
        start a run of it; its id."""
        if definition is not None:
            self.server.create_definition(definition)
        if self.mode in ("procrastinate", "celery") and self.worker is None:
            self.worker = self.make("worker", worker=True)
        run, _ = self.server.submit(name or definition["name"], {})
        return run["id"]

    def restart(self) -> Runtime:
        if self.mode == "memory":
            pytest.skip("the memory store keeps nothing across a restart by design")
        self.server.shutdown(timeout=2)
        self.restarts += 1
        self.server = self.make(f"server-{self.restarts}")
        return self.server


@contextmanager
def local_runtimes(tmp_path, mode: str, settings: dict):
    """``make(name)``: a started server on the memory or the JSON store (one folder: a restart finds it)."""
    made: list[Runtime] = []
    memory = MemoryStore(tmp_path / "files") if mode == "memory" else None

    def make(name: str, worker: bool = False) -> Runtime:
        runtime = Runtime({**load_settings({}), **TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                           "WORKFLOW_KEY_FILE": str(tmp_path / "encryption.key"), **settings},
                          store=memory, workflows=[BusyBranch])
        runtime.start()
        made.append(runtime)
        return runtime

    try:
        yield make
    finally:
        for runtime in reversed(made):
            if not runtime.stopping:
                runtime.shutdown(timeout=2)


@pytest.fixture(params=["memory", "json", pytest.param("postgres", marks=pytest.mark.services),
                        pytest.param("procrastinate", marks=pytest.mark.services),
                        pytest.param("celery", marks=pytest.mark.services)])
def setup(request, tmp_path, mailbox):
    reset_gates()
    _, smtp_port = mailbox
    settings = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": smtp_port, "SMTP_SECURITY": "none",
                "MAIL_FROM": "pyflow@example.org"}
    request.addfinalizer(release_gates)  # a step a cancel abandoned at its gate ends
    if request.param in ("memory", "json"):
        with local_runtimes(tmp_path, request.param, settings) as make:
            yield Setup(request.param, make, settings)
        return
    url = request.getfixturevalue("postgres_url")
    if request.param == "procrastinate":
        settings["WORKFLOW_EXECUTOR"] = "procrastinate"
    elif request.param == "celery":
        settings.update(WORKFLOW_EXECUTOR="celery", CELERY_BROKER_URL=request.getfixturevalue("redis_url"),
                        WORKFLOW_QUEUE=unique_queue())
    with runtimes(tmp_path, url, settings, workflows=[BusyBranch]) as make:
        yield Setup(request.param, make, settings)


def steps(run: dict) -> dict[str, dict]:
    return {step["name"]: step for step in run["steps"]}


def parked(server: Runtime, run_id: str, names: list[str], timeout: float = 30) -> dict:
    """The run once stored waiting with exactly ``names`` waiting, each indexed."""
    def check():
        run = server.get_run(run_id)
        waiting = sorted(name for name, step in steps(run).items() if step["status"] == StepStatus.WAITING)
        indexed = sorted(entry["step"] for entry in server.store.parked(run_id))
        check.last = {"status": run["status"], "error": run["error"], "waiting": waiting, "indexed": indexed}
        return run["status"] == RunStatus.WAITING and waiting == indexed == names and run
    try:
        return wait_until(check, timeout, message=f"run {run_id} waiting for {names}")
    except AssertionError as error:
        raise AssertionError(f"{error}: {check.last}") from None


def finished(server: Runtime, run_id: str, status: str = RunStatus.SUCCEEDED, timeout: float = 30) -> dict:
    return wait_until(lambda: (run := server.get_run(run_id))["status"] == status and run, timeout,
                      message=f"run {run_id} {status}")


def publish(server: Runtime, key: str, amount: int) -> dict:
    return server.publish(parse_event({"type": "order.paid", "key": key, "data": {"amount": amount}}))


@pytest.mark.parametrize("first", ["legal", "finance"])
def test_two_parallel_approvals_mail_once_each_and_take_their_answers_in_either_order(setup, mailbox, first):
    handler, _ = mailbox
    server = setup.start()
    run_id = setup.run(TWO_APPROVALS)
    parked(server, run_id, ["finance", "legal"])
    wait_until(lambda: handler.recipients() == [FINANCE, LEGAL], 10, message="one mail to each approver")
    second = "finance" if first == "legal" else "legal"

    server.approvals.answer(run_id, True, "olga", step=first, comment=f"{first} is fine")
    run = parked(server, run_id, [second])  # the other branch keeps waiting: not executed again
    assert steps(run)[first]["status"] == StepStatus.SUCCEEDED
    server.approvals.answer(run_id, True, "vic", step=second)

    done = finished(server, run_id)
    results = {name: step["result"] for name, step in steps(done).items()}
    assert (results[first]["by"], results[first]["comment"]) == ("olga", f"{first} is fine")
    assert (results[second]["by"], results[second]["approved"]) == ("vic", True)
    assert results["done"] == {"message": f"{results['legal']['by']} and {results['finance']['by']}"}
    assert handler.recipients() == [FINANCE, LEGAL]  # each approver mailed once, over both wakes
    assert server.store.parked(run_id) == []


def test_two_approvals_answered_at_the_same_moment_both_count(setup, mailbox):
    handler, _ = mailbox
    server = setup.start()
    run_id = setup.run(TWO_APPROVALS)
    parked(server, run_id, ["finance", "legal"])
    answers: dict[str, dict] = {}
    threads = [threading.Thread(target=lambda name=name: answers.update(
        {name: server.approvals.answer(run_id, True, f"boss of {name}", step=name)})) for name in ("legal", "finance")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(answers) == ["finance", "legal"]  # neither answer refused: the second waits for the run
    done = finished(server, run_id)
    assert steps(done)["done"]["result"] == {"message": "boss of legal and boss of finance"}
    assert handler.recipients() == [FINANCE, LEGAL]


def test_an_answer_while_the_run_is_busy_with_another_branch_is_kept_for_it(setup, mailbox):
    handler, _ = mailbox
    server = setup.start()
    run_id = setup.run(None, BusyBranch.name)
    parked(server, run_id, ["finance", "legal"])
    server.approvals.answer(run_id, True, "olga", step="legal")
    wait_until(lambda: steps(server.get_run(run_id))["hold"]["status"] == StepStatus.RUNNING, 30,
               message="the step after legal holding the run")
    answering = threading.Thread(target=lambda: server.approvals.answer(run_id, True, "vic", step="finance"))
    answering.start()
    # The run executes another branch: the answer waits in finance's index entry (not lost, not refused).
    wait_until(lambda: [entry["outcome"] and entry["outcome"]["result"]["by"]
                        for entry in server.store.parked(run_id)] == ["vic"], 10, message="the answer kept")
    gate("busy-branch").set()
    answering.join(30)
    done = finished(server, run_id)
    assert steps(done)["finance"]["result"]["by"] == "vic" and steps(done)["done"]["result"] == {"value": "vic"}
    assert "approved by vic" in [change["by"] for change in done["history"]]  # whoever woke it with the answer
    assert handler.recipients() == [FINANCE, LEGAL]


def test_an_answer_kept_for_a_busy_run_is_delivered_by_the_waker_once_the_run_halts(setup, mailbox):
    server = setup.start()
    run_id = setup.run(None, BusyBranch.name)
    parked(server, run_id, ["finance", "legal"])
    server.approvals.answer(run_id, True, "olga", step="legal")
    wait_until(lambda: steps(server.get_run(run_id))["hold"]["status"] == StepStatus.RUNNING, 30,
               message="the step after legal holding the run")
    # No patience: the call returns at once with the answer kept; the waker (the leader's) wakes the step later.
    assert server.parking.wake(run_id, "finance", answered(True, "vic", None), "approved by vic") is not None
    assert [entry["outcome"]["by"] for entry in server.store.parked(run_id)] == ["approved by vic"]
    gate("busy-branch").set()
    done = finished(server, run_id)
    assert steps(done)["finance"]["result"]["by"] == "vic" and steps(done)["done"]["result"] == {"value": "vic"}
    assert server.store.parked(run_id) == []


def test_two_parallel_waits_for_events_with_different_keys(setup):
    server = setup.start()
    run_id = setup.run(TWO_EVENTS)
    parked(server, run_id, ["a", "b"])
    assert server.store.parked_for("order.paid", "B") == [(run_id, "b")]
    assert publish(server, "B", 2)["resumed"] == [run_id]
    run = parked(server, run_id, ["a"])
    assert steps(run)["b"]["result"]["event"]["data"] == {"amount": 2}
    assert publish(server, "C", 9)["resumed"] == []  # nobody waits for that key
    assert publish(server, "A", 40)["resumed"] == [run_id]
    done = finished(server, run_id)
    assert steps(done)["a"]["result"]["event"]["key"] == "A"
    assert steps(done)["done"]["result"] == {"message": "42"}


def test_one_branch_times_out_while_the_other_waits_for_its_answer(setup, mailbox):
    handler, _ = mailbox
    server = setup.start()
    run_id = setup.run(APPROVAL_OR_TIMEOUT)
    # The waker ends the one-second wait (on the leader, with PostgreSQL); the approval keeps waiting.
    run = parked(server, run_id, ["ok"], timeout=60)
    assert steps(run)["signal"]["result"] == {"event": None, "timed_out": True}
    server.approvals.answer(run_id, True, "olga", step="ok")
    done = finished(server, run_id)
    assert steps(done)["done"]["result"] == {"message": "olga True"}
    assert handler.recipients() == [LEGAL]


def test_a_rejection_fails_the_run_and_the_other_approval_stops_waiting(setup, mailbox):
    server = setup.start()
    run_id = setup.run(TWO_APPROVALS)
    parked(server, run_id, ["finance", "legal"])
    server.approvals.answer(run_id, False, "olga", step="legal", comment="no budget")
    failed = finished(server, run_id, RunStatus.FAILED)
    assert failed["error"] == "step 'legal' failed: rejected by olga: no budget"
    other = steps(failed)["finance"]
    assert other["status"] == StepStatus.CANCELLED and other["error"] == "no longer waited for: the run failed"
    assert server.store.parked(run_id) == []


def test_a_cancel_ends_every_waiting_branch_also_while_another_executes(setup, mailbox):
    server = setup.start()
    parked_run = setup.run(TWO_APPROVALS)
    busy_run = setup.run(None, BusyBranch.name)
    parked(server, parked_run, ["finance", "legal"])
    cancelled = server.control(parked_run, "cancel", by="api")
    assert [(step["status"], step["error"]) for step in cancelled["steps"][:2]] == [
        ("cancelled", "cancelled while waiting")] * 2
    assert server.store.parked(parked_run) == []

    parked(server, busy_run, ["finance", "legal"])
    server.approvals.answer(busy_run, True, "olga", step="legal")
    wait_until(lambda: steps(server.get_run(busy_run))["hold"]["status"] == StepStatus.RUNNING, 30,
               message="the step after legal holding the run")
    server.control(busy_run, "cancel", by="api")
    done = finished(server, busy_run, RunStatus.CANCELLED)
    assert (steps(done)["finance"]["status"], steps(done)["finance"]["error"]) == (
        "cancelled", "cancelled while waiting")
    assert server.store.parked(busy_run) == []


def test_both_approvals_survive_a_restart_while_parked(setup, mailbox):
    handler, _ = mailbox
    server = setup.start()
    run_id = setup.run(TWO_APPROVALS)
    parked(server, run_id, ["finance", "legal"])
    wait_until(lambda: handler.recipients() == [FINANCE, LEGAL], 10, message="one mail to each approver")
    server = setup.restart()
    parked(server, run_id, ["finance", "legal"])
    server.approvals.answer(run_id, True, "vic", step="finance")
    parked(server, run_id, ["legal"])
    server.approvals.answer(run_id, True, "olga", step="legal")
    done = finished(server, run_id)
    assert steps(done)["done"]["result"] == {"message": "olga and vic"}
    assert handler.recipients() == [FINANCE, LEGAL]


def test_a_killed_server_restarts_with_both_approvals_parked_and_their_links_answer(tmp_path, mailbox):
    """kill -9 of a run.py server on the JSON store while both branches wait; the mails' links answer after."""
    handler, smtp_port = mailbox
    port = free_port()
    env = {"PORT": str(port), "WORKFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}", "SMTP_HOST": "127.0.0.1",
           "SMTP_PORT": str(smtp_port), "SMTP_SECURITY": "none", "MAIL_FROM": "pyflow@example.org"}
    with Servers(tmp_path) as servers:
        server = servers.start(env=env)
        assert server.post("/api/workflows", json=TWO_APPROVALS).status_code == 201
        run_id = server.post("/api/workflows/two_approvals/runs", json={}).json()["id"]
        wait_until(lambda: sorted(name for name, step in steps(server.get(f"/api/runs/{run_id}").json()).items()
                                  if step["status"] == "waiting") == ["finance", "legal"], 20,
                   message="both approvals waiting")
        links = {who: wait_until(lambda who=who: handler.links(to=who), 10, message=f"the mail to {who}")
                 for who in (LEGAL, FINANCE)}
        server.kill()
        server.start()  # on the same folder
        assert follow(links[FINANCE]["approve"], "paid").status_code == 200
        assert follow(links[FINANCE]["approve"]).status_code == 409  # a link works once
        assert follow(links[LEGAL]["approve"], "signed").status_code == 200
        done = wait_until(lambda: (run := server.get(f"/api/runs/{run_id}").json())["status"] == "succeeded" and run,
                          20, message="the run succeeding")
        assert steps(done)["done"]["result"] == {"message": f"{LEGAL} (e-mail link) and {FINANCE} (e-mail link)"}
        assert steps(done)["finance"]["result"]["comment"] == "paid"
        assert handler.recipients() == [FINANCE, LEGAL]  # mailed once each, also across the crash


def test_a_waiting_step_left_unindexed_is_indexed_again_at_start_up(setup, mailbox):
    """As PyFlow before an entry per step left a second parked branch (or a crash between taking and putting back)."""
    handler, _ = mailbox
    server = setup.start()
    run_id = setup.run(TWO_APPROVALS)
    parked(server, run_id, ["finance", "legal"])
    assert server.store.unpark(run_id, "finance") is not None
    server = setup.restart()
    parked(server, run_id, ["finance", "legal"])
    server.approvals.answer(run_id, True, "vic", step="finance")
    server.approvals.answer(run_id, True, "olga", step="legal")
    assert steps(finished(server, run_id))["done"]["result"] == {"message": "olga and vic"}
    assert handler.recipients() == [FINANCE, LEGAL]
