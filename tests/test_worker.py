"""A server whose runs execute on a worker (procrastinate; celery on Redis and RabbitMQ), both in this process.

The worker is a ``Runtime(worker=True)`` working on a thread, as ``run.py worker`` runs one; each has its
own storage folder and lease owner. tests/test_cluster.py does the same with separate processes.
"""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from actions.base import BaseAction
from app import create_app, start_app
from app.core.config import load_settings
from app.core.runtime import Runtime
from app.runs import RunStatus
from app.storage.postgres import PostgresStore
from tests.conftest import TEST_SETTINGS
from tests.fixtures.gates import arrivals, gate, release_gates, reset_gates
from tests.fixtures.workflows import EchoWorkflow, GatedWorkflow
from tests.runtimes import runtimes
from tests.services import unique_queue
from tests.waiting import wait_until
from workflows.base import Workflow

pytestmark = pytest.mark.services

WORKFLOWS = [EchoWorkflow, GatedWorkflow]


@pytest.fixture(params=["procrastinate", "celery-redis", "celery-amqp"])
def executor(request) -> dict:
    """The settings of one executor: procrastinate, or celery on Redis or RabbitMQ (a queue of the test's own)."""
    if request.param == "procrastinate":
        return {"WORKFLOW_EXECUTOR": "procrastinate"}
    broker = request.getfixturevalue("redis_url" if request.param == "celery-redis" else "amqp_url")
    return {"WORKFLOW_EXECUTOR": "celery", "CELERY_BROKER_URL": broker, "WORKFLOW_QUEUE": unique_queue()}


@pytest.fixture
def cluster(postgres_url, tmp_path, executor):
    """``make(name, worker=False)``: a started server or a working worker on the test's database."""
    reset_gates()
    with runtimes(tmp_path, postgres_url, {**executor, "WORKFLOW_STEP_TIMEOUT": 60.0}, WORKFLOWS) as make:
        yield make
        release_gates()
    reset_gates()

def test_a_run_created_on_the_server_executes_on_the_worker(cluster):
    server, worker = cluster("server"), cluster("worker", worker=True)
    run, created = server.submit("echo", {"text": "hi"}, awaited=True)
    assert created and run["status"] == RunStatus.QUEUED
    done = server.outcome(run, 30)  # ?wait for a run executing elsewhere
    assert done["status"] == RunStatus.SUCCEEDED, done
    assert done["steps"][1]["result"] == {"value": "HI"}
    assert done["worker"] == worker.engine.leases.owner
    assert not server.engine.executes(run["id"])


def test_a_definition_made_through_the_server_after_the_worker_started_runs_there(cluster):
    server, worker = cluster("server"), cluster("worker", worker=True)
    # docs/distributed.md: definitions made through the API are in the database and reach every process.
    server.create_definition({"name": "made_later", "steps": [
        {"name": "say", "type": "log", "config": {"message": "hello {{ inputs.who }}"}}]})
    run, _ = server.submit("made_later", {"who": "worker"})
    done = server.outcome(run, 30)
    assert done["status"] == RunStatus.SUCCEEDED, done
    assert done["steps"][0]["result"] == {"message": "hello worker"}
    assert done["worker"] == worker.engine.leases.owner


def test_an_idempotency_key_makes_one_run_and_one_execution(cluster):
    server, _ = cluster("server"), cluster("worker", worker=True)
    first, created = server.submit("gated", {"text": "once"}, idempotency_key="k-1")
    again, created_again = server.submit("gated", {"text": "once"}, idempotency_key="k-1")
    assert (created, created_again) == (True, False) and again["id"] == first["id"]
    gate("gated").set()
    assert server.outcome(first, 30)["status"] == RunStatus.SUCCEEDED
    assert arrivals("gated") == 1


def test_cancel_through_the_server_reaches_the_run_on_the_worker(cluster):
    server, worker = cluster("server"), cluster("worker", worker=True)
    run, _ = server.submit("gated", {"text": "x"})
    wait_until(lambda: arrivals("gated") == 1, timeout=30, message="the worker reaching the gate")
    answered = server.control(run["id"], "cancel", by="api")
    assert answered["status"] == RunStatus.CANCELLED
    wait_until(lambda: not worker.engine.executes(run["id"]), timeout=2, message="the worker letting the run go")


def paused_at_the_gate(server) -> dict:
    """A ``gated`` run paused by ``server`` while a worker's step waits at the gate (then opened); paused now."""
    run, _ = server.submit("gated", {"text": "x"})
    wait_until(lambda: arrivals("gated") == 1, timeout=30, message="the worker reaching the gate")
    threading.Timer(0.5, gate("gated").set).start()
    server.control(run["id"], "pause", by="api")
    wait_until(lambda: server.get_run(run["id"])["status"] == RunStatus.PAUSED, message="the run pausing")
    return run


def test_a_paused_run_resumed_through_the_server_continues_on_a_worker(cluster):
    server, _ = cluster("server"), cluster("worker", worker=True)
    run = paused_at_the_gate(server)
    server.control(run["id"], "resume", by="api")  # a new job
    done = server.outcome(run, 30)
    assert done["status"] == RunStatus.SUCCEEDED
    assert [step["attempts"] for step in done["steps"]] == [1, 1, 1]


class ReadingStore(PostgresStore):
    """A worker's store noting the runs whose log lines it read, and each read of the started workflows."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logs_read: list[str] = []
        self.started_read = 0

    def get_logs(self, run_id):
        self.logs_read.append(run_id)
        return super().get_logs(run_id)

    def started_workflows(self):
        self.started_read += 1
        return super().started_workflows()


@pytest.mark.parametrize("executor", ["procrastinate"], indirect=True)  # the store's reads: one executor will do
def test_a_new_run_costs_its_worker_no_read_of_its_log_nor_of_the_started_workflows(cluster):
    server, worker = cluster("server"), cluster("worker", worker=True, store_class=ReadingStore)
    run, _ = server.submit("echo", {"text": "hi"})
    assert server.outcome(run, 30)["status"] == RunStatus.SUCCEEDED
    # Never started: no line to count for the log's cap. No event trigger served: no started workflow to look up.
    assert (worker.store.logs_read, worker.store.started_read) == ([], 0)
    # A run that executed before has lines the cap counts: resumed on the worker, it reads them.
    run = paused_at_the_gate(server)
    server.control(run["id"], "resume", by="api")
    assert server.outcome(run, 30)["status"] == RunStatus.SUCCEEDED
    assert worker.store.logs_read == [run["id"]]


def waiting_jobs(url: str) -> int:
    """Jobs no worker took yet (procrastinate's table)."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'").fetchone()[0]


@pytest.mark.parametrize("executor", ["procrastinate"], indirect=True)  # reads procrastinate's job table
def test_a_cancel_of_a_queued_run_no_worker_took_is_made_by_the_server(cluster, postgres_url):
    server = cluster("server")  # no worker yet: the job waits
    run, _ = server.submit("echo", {"text": "never"})
    assert server.control(run["id"], "cancel", by="api")["status"] == RunStatus.CANCELLED
    cluster("worker", worker=True)
    # The job reaches the worker, which finds the run cancelled and leaves it so.
    wait_until(lambda: waiting_jobs(postgres_url) == 0, timeout=30, message="the worker taking the job")
    assert server.get_run(run["id"])["status"] == RunStatus.CANCELLED
    assert server.get_run(run["id"])["steps"][0]["attempts"] == 0


# A Celery worker's shutdown stops every Celery worker of its process: tests/test_cluster.py stops
# Celery workers in processes of their own.
@pytest.mark.parametrize("executor", ["procrastinate"], indirect=True)
def test_a_stopping_worker_hands_its_run_to_another(cluster):
    server, first = cluster("server"), cluster("first", worker=True)
    run, _ = server.submit("gated", {"text": "x"})
    wait_until(lambda: arrivals("gated") == 1, timeout=30, message="the first worker reaching the gate")
    stopping = threading.Thread(target=first.stop_work, args=(10,))
    stopping.start()  # the step under way finishes first; then the run is sent on
    wait_until(lambda: first.stopping, message="the first worker stopping")
    gate("gated").set()
    stopping.join(15)
    second = cluster("second", worker=True)
    done = server.outcome(run, 30)
    assert done["status"] == RunStatus.SUCCEEDED, done
    assert done["worker"] == second.engine.leases.owner
    assert [step["attempts"] for step in done["steps"]] == [1, 1, 1]
    # An orderly hand-off, as the history says it: not a worker lost with the run running.
    moves = [(change["from"], change["to"], change["by"]) for change in done["history"]]
    assert ("running", "queued", "shutdown") in moves and all(by != "worker loss" for _, _, by in moves), moves


class ReadUpload(BaseAction):
    """Returns the text of the run's first attachment, read where ``path`` says on the host executing it."""

    def execute(self, data_store: dict) -> dict:
        attachment = data_store["trigger_data"]["attachments"][0]
        return {"text": Path(attachment["path"]).read_text(encoding="utf-8"), "path": attachment["path"]}


class ReadUploadWorkflow(Workflow):
    name = "read_upload"
    description = "Reads its uploaded file."
    actions = [ReadUpload("read")]


@pytest.mark.parametrize("executor", ["procrastinate"], indirect=True)
def test_an_upload_to_the_server_reaches_a_worker_with_another_disk(postgres_url, tmp_path, executor):
    settings = {**TEST_SETTINGS, "WORKFLOW_DATABASE_URL": postgres_url, "WORKFLOW_LEASE_SECONDS": 2.0, **executor}
    server_storage, worker_storage = tmp_path / "server", tmp_path / "worker"
    app = start_app(create_app({**settings, "WORKFLOW_STORAGE_PATH": str(server_storage),
                                "WORKFLOW_CLASSES": [ReadUploadWorkflow]}))
    worker = Runtime({**load_settings({}), **settings, "WORKFLOW_STORAGE_PATH": str(worker_storage)},
                     workflows=[ReadUploadWorkflow], worker=True)
    thread = threading.Thread(target=worker.work, daemon=True)
    try:
        posted = app.test_client().post("/api/workflows/read_upload/runs",
                                        data={"file": (io.BytesIO(b"across hosts"), "note.txt")})
        assert posted.status_code == 202, posted.text
        shutil.rmtree(server_storage / "attachments")  # nothing on the server's disk helps the worker
        thread.start()
        done = app.extensions["pyflow"].outcome(posted.get_json(), 30)
        assert done["status"] == RunStatus.SUCCEEDED, done
        assert done["steps"][0]["result"]["text"] == "across hosts"
        assert Path(done["steps"][0]["result"]["path"]).is_relative_to(worker_storage.resolve())
    finally:
        worker.stop_work(2)
        thread.join(10)
        worker.shutdown(timeout=2)
        app.extensions["pyflow"].shutdown(timeout=2)


@pytest.mark.parametrize("executor", ["procrastinate"], indirect=True)  # the observer is the executor's business
def test_a_run_paused_and_resumed_on_a_worker_is_traced_there_in_one_trace(cluster):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from app.core.tracing import SpanObserver, make_provider, trace_id_of

    server, worker = cluster("server"), cluster("worker", worker=True)
    exporter = InMemorySpanExporter()
    worker.engine.observer = SpanObserver(make_provider(SimpleSpanProcessor(exporter)))  # what the setting sets up
    run = paused_at_the_gate(server)
    server.control(run["id"], "resume", by="api")
    assert server.outcome(run, 30)["status"] == RunStatus.SUCCEEDED

    def runs():
        found = [span for span in exporter.get_finished_spans() if span.name == "run gated"]
        return found if len(found) == 2 else None

    first, second = sorted(wait_until(runs, message="two run spans on the worker"), key=lambda span: span.start_time)
    assert {first.context.trace_id, second.context.trace_id} == {trace_id_of(run["id"])}
    assert (first.attributes["pyflow.status"], first.attributes["pyflow.resumed"]) == ("paused", False)
    assert (second.attributes["pyflow.status"], second.attributes["pyflow.resumed"]) == ("succeeded", True)
    steps = [span for span in exporter.get_finished_spans() if span.name.startswith("step ")]
    assert {span.attributes["pyflow.status"] for span in steps} == {"succeeded"}
    assert {span.parent.span_id for span in steps} <= {first.context.span_id, second.context.span_id}
