"""The procrastinate queue against a real PostgreSQL: runs and jobs together, workers, stop, stalled jobs."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

pytest.importorskip("procrastinate", reason="procrastinate is missing: pip install -r requirements-distributed.txt")

import psycopg  # noqa: E402  (after the skip: both come with requirements-distributed.txt)

from app.dispatch.procrastinate import TASK, ProcrastinateDispatcher  # noqa: E402
from app.errors import ConfigError, StorageError  # noqa: E402
from app.runs import new_run, new_step  # noqa: E402
from app.storage.postgres import PostgresStore  # noqa: E402
from tests.services import POSTGRES_URL  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(postgres_url, tmp_path):
    store = PostgresStore(postgres_url, tmp_path / "data")
    yield store
    store.close()


@pytest.fixture
def dispatcher(postgres_url, store):
    dispatcher = ProcrastinateDispatcher(postgres_url, heartbeat=0.5, stalled_after=5.0)
    dispatcher.start()
    yield dispatcher
    dispatcher.stop()
    dispatcher.shutdown(timeout=2)


def a_run() -> dict:
    return new_run("hello", [new_step("greet", "log")], {}, "test")


def jobs(url: str) -> list[tuple]:
    """(run id, status, task, queue) of every procrastinate job, oldest first."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT args->>'run_id', status::text, task_name, queue_name FROM procrastinate_jobs"
                            " ORDER BY id").fetchall()


class Worker:
    """``dispatcher.work(execute, concurrency)`` on a thread of the test."""

    def __init__(self, dispatcher: ProcrastinateDispatcher, execute, concurrency: int):
        self.dispatcher = dispatcher
        self.thread = threading.Thread(target=dispatcher.work, args=(execute, concurrency), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.dispatcher.stop()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "work() did not return after stop()"


# -- the schema -------------------------------------------------------------------
def test_dispatchers_starting_together_create_the_schema_once(postgres_url):
    dispatchers = [ProcrastinateDispatcher(postgres_url) for _ in range(3)]
    errors = []

    def start(dispatcher):
        try:
            dispatcher.start()
        except Exception as error:  # noqa: BLE001  (collected, asserted below)
            errors.append(error)

    threads = [threading.Thread(target=start, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert jobs(postgres_url) == []
    for dispatcher in dispatchers:
        dispatcher.shutdown(timeout=1)


def test_an_older_schema_stops_start_up_saying_what_to_do(postgres_url, dispatcher):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP FUNCTION procrastinate_retry_job_v2")  # what the 3.4.0 migration adds
    with pytest.raises(ConfigError) as raised:
        ProcrastinateDispatcher(postgres_url).start()
    message = str(raised.value)
    assert "older" in message and "procrastinate_retry_job_v2" in message and "migrations" in message
    assert "\n" not in message


def test_a_database_that_cannot_be_reached_is_one_line_without_the_password():
    with pytest.raises(ConfigError) as raised:
        ProcrastinateDispatcher("postgresql://pyflow:s3cret@127.0.0.1:1/pyflow").start()
    message = str(raised.value)
    assert message.startswith("WORKFLOW_DATABASE_URL: cannot use the database at 127.0.0.1:1/pyflow: ")
    assert "s3cret" not in message and "\n" not in message


# -- creating and submitting --------------------------------------------------------
def test_create_stores_the_run_and_its_job_together(postgres_url, store, dispatcher):
    run = a_run()
    stored, created = dispatcher.create(store, run, None)
    assert created and stored["id"] == run["id"]
    assert store.get_run(run["id"])["status"] == "queued"
    assert jobs(postgres_url) == [(run["id"], "todo", TASK, "pyflow")]


def test_a_used_idempotency_key_stores_no_second_run_nor_job(postgres_url, store, dispatcher):
    first, created = dispatcher.create(store, a_run(), "order-1")
    again, created_again = dispatcher.create(store, a_run(), "order-1")
    assert created and not created_again and again["id"] == first["id"]
    assert jobs(postgres_url) == [(first["id"], "todo", TASK, "pyflow")]


def test_a_job_that_cannot_be_inserted_leaves_no_run(postgres_url, store, dispatcher):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP FUNCTION procrastinate_defer_jobs_v1")
    run = a_run()
    with pytest.raises(StorageError) as raised:
        dispatcher.create(store, run, "order-2")
    assert run["id"] in str(raised.value) and "\n" not in str(raised.value)
    assert store.get_run(run["id"]) is None
    assert store.list_runs()[0] == []
    assert jobs(postgres_url) == []


def test_create_needs_the_postgresql_store(tmp_path, dispatcher):
    from app.storage.memory import MemoryStore

    with pytest.raises(ConfigError, match="WORKFLOW_DATABASE_URL"):
        dispatcher.create(MemoryStore(), a_run(), None)


def test_submit_queues_at_most_one_waiting_job_per_run(postgres_url, store, dispatcher):
    run, _ = dispatcher.create(store, a_run(), None)
    dispatcher.submit(run["id"])  # the sweeper, while the first job still waits: nothing more to queue
    other = store.create_run(a_run())[0]
    dispatcher.submit(other["id"])
    assert jobs(postgres_url) == [(run["id"], "todo", TASK, "pyflow"), (other["id"], "todo", TASK, "pyflow")]


def test_a_queue_name_keeps_jobs_apart(postgres_url, store, dispatcher):
    other_queue = ProcrastinateDispatcher(postgres_url, queue="elsewhere")
    other_queue.start()
    run, _ = other_queue.create(store, a_run(), None)
    assert jobs(postgres_url) == [(run["id"], "todo", TASK, "elsewhere")]
    other_queue.shutdown(timeout=1)


# -- working ----------------------------------------------------------------------
def test_work_executes_each_run_with_concurrency_runs_at_once(postgres_url, store, dispatcher):
    first = [dispatcher.create(store, a_run(), None)[0]["id"] for _ in range(3)]
    together = threading.Barrier(3, timeout=20)  # passes only when three executes are under way at once
    lock, active, most, done = threading.Lock(), [0], [0], []

    def execute(run_id):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        if run_id in first:
            together.wait()
        with lock:
            active[0] -= 1
            done.append(run_id)

    worker = Worker(dispatcher, execute, concurrency=3)
    wait_until(lambda: len(done) == 3, timeout=20, message="three runs executed")
    later = store.create_run(a_run())[0]["id"]
    dispatcher.submit(later)
    wait_until(lambda: later in done, timeout=20, message="a submitted run executed")
    worker.stop()
    assert sorted(done) == sorted([*first, later])
    assert most[0] == 3
    assert jobs(postgres_url) == []  # succeeded jobs are deleted


def test_stop_returns_once_the_jobs_it_holds_are_done(postgres_url, store, dispatcher):
    run_id = dispatcher.create(store, a_run(), None)[0]["id"]
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    held = []

    def execute(run_id):
        held.append(run_id)
        started.set()
        release.wait(20)
        finished.set()

    worker = Worker(dispatcher, execute, concurrency=2)
    assert started.wait(20)
    dispatcher.stop()
    assert worker.thread.is_alive() and not finished.is_set()  # it waits for the run it holds
    release.set()
    worker.stop()
    assert finished.is_set()
    assert held == [run_id]
    assert jobs(postgres_url) == []  # the job finished (succeeded, deleted), not aborted


def test_stop_before_work_starts_makes_work_return(dispatcher):
    dispatcher.stop()
    worker = Worker(dispatcher, lambda run_id: None, concurrency=1)
    worker.stop()


def test_an_execute_that_raises_fails_its_job_and_the_worker_goes_on(postgres_url, store, dispatcher, caplog):
    bad = dispatcher.create(store, a_run(), None)[0]["id"]
    good = dispatcher.create(store, a_run(), None)[0]["id"]
    done = []

    def execute(run_id):
        if run_id == bad:
            raise RuntimeError("the store went away")
        done.append(run_id)

    caplog.set_level(logging.INFO)
    worker = Worker(dispatcher, execute, concurrency=1)
    wait_until(lambda: done == [good] and jobs(postgres_url) == [(bad, "failed", TASK, "pyflow")], timeout=20,
               message="the good run executed and the bad run's job failed")
    worker.stop()
    ours = [r for r in caplog.records if r.name == "app.dispatch.procrastinate" and bad in r.getMessage()]
    assert len(ours) == 1 and "the store went away" in ours[0].getMessage() and ours[0].exc_info is None
    assert all(not r.exc_info for r in caplog.records if r.name.startswith("procrastinate"))
    with psycopg.connect(postgres_url) as conn:  # not retried by procrastinate: the store and the lease decide
        assert conn.execute("SELECT attempts FROM procrastinate_jobs").fetchall() == [(1,)]


def test_work_on_a_database_that_cannot_be_reached_is_one_line_without_the_password():
    dispatcher = ProcrastinateDispatcher("postgresql://pyflow:s3cret@127.0.0.1:1/pyflow")
    with pytest.raises(ConfigError) as raised:
        dispatcher.work(lambda run_id: None, 1)
    message = str(raised.value)
    assert message.startswith("WORKFLOW_DATABASE_URL: cannot use the database at 127.0.0.1:1/pyflow: ")
    assert "s3cret" not in message and "\n" not in message


@pytest.mark.slow
def test_a_worker_that_loses_its_connections_takes_jobs_again(postgres_url, store, dispatcher):
    done = []
    worker = Worker(dispatcher, done.append, concurrency=2)
    first = dispatcher.create(store, a_run(), None)[0]["id"]
    wait_until(lambda: done == [first], timeout=20, message="a run executed")
    cut_connections(postgres_url)  # what a PostgreSQL restart does to a worker
    second = dispatcher.create(store, a_run(), None)[0]["id"]
    wait_until(lambda: done == [first, second], timeout=30, message="a run executed after the connections were cut")
    worker.stop()


def test_the_workers_pool_sends_each_call_alone_and_replaces_a_connection_the_server_closed(postgres_url, dispatcher):
    async def use() -> None:
        connector = dispatcher._async_connector(max_size=1)
        await connector.open_async()
        try:
            async with connector.pool.connection() as conn:
                # Each of procrastinate's calls one round trip: no BEGIN and COMMIT around it.
                assert conn.autocommit
                first = conn.info.backend_pid
            cut_connections(postgres_url)
            wait_until(lambda: not backend_alive(first), timeout=10, message="the server closing the connection")
            # The check reads the server's goodbye (no query): the closed connection is not handed out.
            async with connector.pool.connection() as conn:
                assert conn.info.backend_pid != first
                assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
        finally:
            await connector.close_async()

    asyncio.run(use())


@pytest.mark.slow
def test_a_worker_whose_database_stays_away_starts_again_when_it_is_back(postgres_url, store, dispatcher, caplog):
    done = []
    worker = Worker(dispatcher, done.append, concurrency=1)
    wait_until(lambda: workers(postgres_url) == 1, timeout=20, message="the worker registered")
    name = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        cut_connections(postgres_url)
        wait_until(lambda: any("procrastinate worker" in r.getMessage() and "stopped" in r.getMessage()
                               for r in caplog.records), timeout=60, message="the worker noticed")
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    run_id = dispatcher.create(store, a_run(), None)[0]["id"]
    wait_until(lambda: done == [run_id], timeout=60, message="a run executed once the database was back")
    worker.stop()


def workers(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0]


def cut_connections(url: str) -> None:
    """Terminate every connection to the test's database (from the server's admin database)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                      (url.rsplit("/", 1)[1],))


def backend_alive(pid: int) -> bool:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        return admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is not None


# -- stalled jobs -----------------------------------------------------------------
WORKER_PROCESS = textwrap.dedent("""
    import sys, threading
    from app.dispatch.procrastinate import ProcrastinateDispatcher

    def execute(run_id):
        print(run_id, flush=True)
        threading.Event().wait()  # holds its job until the process is killed

    ProcrastinateDispatcher(sys.argv[1], heartbeat=0.5, stalled_after=5.0).work(execute, 1)
""")


def test_recovering_again_and_again_keeps_the_server_log_quiet(dispatcher, caplog):
    # The leader's sweeper recovers every third of a lease: nothing stalled must log nothing.
    dispatcher.recover()
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert [dispatcher.recover() for _ in range(3)] == [0, 0, 0]
    assert [record.getMessage() for record in caplog.records] == []


@pytest.mark.slow
def test_recover_aborts_the_job_of_a_worker_killed_mid_run(postgres_url, store, dispatcher):
    run_id = dispatcher.create(store, a_run(), None)[0]["id"]
    process = subprocess.Popen([sys.executable, "-c", WORKER_PROCESS, postgres_url], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert process.stdout.readline().strip() == run_id
        assert jobs(postgres_url) == [(run_id, "doing", TASK, "pyflow")]
        assert dispatcher.recover() == 0  # its worker heart-beats: not stalled
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        process.stdout.close()
    assert wait_until(dispatcher.recover, timeout=30, interval=0.5, message="the stalled job recovered") == 1
    assert jobs(postgres_url) == [(run_id, "aborted", TASK, "pyflow")]
    assert dispatcher.recover() == 0
    dispatcher.submit(run_id)  # what the sweeper does next: a new job for the run
    assert jobs(postgres_url)[-1] == (run_id, "todo", TASK, "pyflow")
