"""The celery queue (app/dispatch/celery.py) against real Redis, RabbitMQ and PostgreSQL."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.errors import ConfigError
from app.runs import new_run, new_step
from tests.services import unique_queue
from tests.waiting import wait_until

celery_dispatch = pytest.importorskip("app.dispatch.celery", reason="celery is missing: pip install -r "
                                      "requirements-distributed.txt")
CeleryDispatcher = celery_dispatch.CeleryDispatcher
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["redis", "amqp"])
def broker(request) -> str:
    """Each test over both brokers: Redis and RabbitMQ."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def dispatchers():
    """Make CeleryDispatchers on one fresh queue; afterwards stop their workers, close them, delete the queue."""
    made: list[tuple[CeleryDispatcher, threading.Thread | None]] = []
    queue = unique_queue()

    def make(url: str, *, execute=None, concurrency: int = 1) -> CeleryDispatcher:
        dispatcher = CeleryDispatcher(url, queue=queue)
        thread = None
        if execute is not None:
            thread = threading.Thread(target=dispatcher.work, args=(execute, concurrency), daemon=True)
            thread.start()
        made.append((dispatcher, thread))
        return dispatcher

    yield make
    for dispatcher, thread in made:
        dispatcher.stop()
        if thread is not None:
            thread.join(30)
            assert not thread.is_alive(), "work() did not return after stop()"
    if made:
        with made[0][0].app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
            if conn.transport_cls == "redis":  # kombu keeps the queue's bindings in keys of their own
                conn.default_channel.client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        for dispatcher, _ in made:
            dispatcher.shutdown(5)


@pytest.fixture
def store(postgres_url, tmp_path):
    from app.storage.postgres import PostgresStore

    store = PostgresStore(postgres_url, tmp_path)
    yield store
    store.close()


def a_run() -> dict:
    return new_run("greet", [new_step("hello", "log")], {"who": "world"}, "manual")


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_created_runs_are_each_executed_once_and_the_password_never_logged(broker, dispatchers, store, caplog):
    caplog.set_level(logging.DEBUG)
    sender = dispatchers(broker)
    sender.start()
    runs = [sender.create(store, a_run(), f"key-{n}") for n in range(3)]
    assert [created for _, created in runs] == [True, True, True]
    again, created = sender.create(store, a_run(), "key-0")  # the same idempotency key: no new run, no message
    assert (again["id"], created) == (runs[0][0]["id"], False)
    sender.submit("run_sentinel")

    executed = []
    dispatchers(broker, execute=executed.append, concurrency=1)
    # One thread takes the messages in the order they were sent: once the sentinel is done, all before it are.
    wait_until(lambda: "run_sentinel" in executed, timeout=15, message="the sentinel executed")
    assert Counter(executed) == Counter([run["id"] for run, _ in runs] + ["run_sentinel"])
    assert all(store.get_run(run["id"])["status"] == "queued" for run, _ in runs)  # the worker's execute decides
    password = urlsplit(broker).password
    if password:
        assert f":{password}@" not in caplog.text


def test_a_worker_executes_up_to_concurrency_runs_at_once(broker, dispatchers):
    barrier = threading.Barrier(3, timeout=15)
    passed = []

    def execute(run_id: str) -> None:
        barrier.wait()  # only passes when three runs execute at the same time
        passed.append(run_id)

    sender = dispatchers(broker)
    for n in range(3):
        sender.submit(f"run_{n}")
    dispatchers(broker, execute=execute, concurrency=3)
    wait_until(lambda: len(passed) == 3, timeout=20, message="three runs through the barrier")
    assert sorted(passed) == ["run_0", "run_1", "run_2"]


def test_stop_lets_executing_runs_finish_then_work_returns_and_their_messages_are_acknowledged(broker, dispatchers):
    started, release, executed = threading.Event(), threading.Event(), []

    def execute(run_id: str) -> None:
        started.set()
        release.wait(30)
        executed.append(run_id)

    sender = dispatchers(broker)
    sender.submit("run_long")
    worker = CeleryDispatcher(broker, queue=sender.queue)
    thread = threading.Thread(target=worker.work, args=(execute, 2), daemon=True)
    thread.start()
    assert started.wait(15)
    worker.stop()  # returns at once
    assert thread.is_alive()  # work() still waits for the run it executes
    release.set()
    wait_until(lambda: not thread.is_alive(), timeout=15, message="work() returned")
    assert executed == ["run_long"]

    # Acknowledged: a second worker gets only what is sent afterwards.
    sender.submit("run_after")
    later = []
    dispatchers(broker, execute=later.append)
    wait_until(lambda: "run_after" in later, timeout=15, message="the next run executed")
    assert later == ["run_after"]


def test_an_exception_in_execute_is_logged_once_and_the_worker_goes_on(broker, dispatchers, caplog):
    executed = []

    def execute(run_id: str) -> None:
        executed.append(run_id)
        if run_id == "run_bad":
            raise RuntimeError("the engine broke")

    sender = dispatchers(broker)
    sender.submit("run_bad")
    sender.submit("run_good")
    dispatchers(broker, execute=execute)
    wait_until(lambda: "run_good" in executed, timeout=15, message="the next run executed")
    assert executed == ["run_bad", "run_good"]  # not retried
    errors = [r.getMessage() for r in caplog.records if r.name == "app.dispatch.celery" and r.levelno >= logging.ERROR]
    assert errors == ["celery: executing run run_bad failed: RuntimeError: the engine broke"]


@pytest.mark.parametrize("scheme", ["redis://:s3cret-pw@127.0.0.1:{port}/0", "amqp://guest:s3cret-pw@127.0.0.1:{port}//"])
def test_a_send_to_a_stopped_broker_keeps_the_run_queued_and_logs_one_line(scheme, store, caplog):
    caplog.set_level(logging.DEBUG)
    port = closed_port()
    dispatcher = CeleryDispatcher(scheme.format(port=port), queue=unique_queue())
    run, created = dispatcher.create(store, a_run(), None)
    dispatcher.shutdown(5)
    assert created and store.get_run(run["id"])["status"] == "queued"  # the sweeper sends it again later
    lines = [r.getMessage() for r in caplog.records if r.name == "app.dispatch.celery"]
    assert len(lines) == 1
    assert lines[0].startswith(f"celery: run {run['id']} not sent to the broker at 127.0.0.1:{port} (")
    assert "s3cret-pw" not in caplog.text


def test_a_killed_worker_leaves_its_message_to_another_worker(amqp_url, dispatchers, store, tmp_path):
    """RabbitMQ hands an unacknowledged message to another consumer as soon as the connection that held it drops."""
    sender = dispatchers(amqp_url)
    run, _ = sender.create(store, a_run(), None)
    started = tmp_path / "started"
    script = (
        "import sys, threading\n"
        "from pathlib import Path\n"
        "from app.dispatch.celery import CeleryDispatcher\n"
        "def execute(run_id):\n"
        "    Path(sys.argv[3]).write_text(run_id)\n"
        "    threading.Event().wait()\n"
        "CeleryDispatcher(sys.argv[1], queue=sys.argv[2]).work(execute, 1)\n"
    )
    victim = subprocess.Popen([sys.executable, "-c", script, amqp_url, sender.queue, str(started)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: started.exists() or victim.poll() is not None, timeout=30, message="the worker started")
        assert started.read_text() == run["id"], victim.stderr.read().decode() if victim.poll() is not None else ""
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.stderr.close()
    executed = []
    dispatchers(amqp_url, execute=executed.append)
    wait_until(lambda: executed, timeout=15, message="the message redelivered")
    assert executed == [run["id"]]


@pytest.mark.parametrize(("url", "expected"), [
    ("http://user:s3cret-pw@example.com/", "CELERY_BROKER_URL: expected a redis://, rediss://, amqp:// or amqps:// "
                                           "URL, got http://..."),
    ("127.0.0.1:6379", "CELERY_BROKER_URL: expected a redis://, rediss://, amqp:// or amqps:// URL, got no scheme"),
    ("redis://", "CELERY_BROKER_URL: expected a redis://, rediss://, amqp:// or amqps:// URL, got redis://..."),
    ("redis://:s3cret-pw@127.0.0.1:99999/0", "CELERY_BROKER_URL: not a URL (expected redis://host:port/db or "
                                              "amqp://user:password@host:port/vhost)"),
])
def test_a_url_celery_cannot_use_is_a_config_error(url, expected):
    with pytest.raises(ConfigError) as caught:
        CeleryDispatcher(url)
    assert str(caught.value) == expected


@pytest.mark.parametrize("scheme", ["redis://:s3cret-pw@127.0.0.1:{port}/0", "amqp://guest:s3cret-pw@127.0.0.1:{port}//"])
def test_start_with_an_unreachable_broker_is_a_config_error_naming_it(scheme):
    port = closed_port()
    dispatcher = CeleryDispatcher(scheme.format(port=port))
    with pytest.raises(ConfigError) as caught:
        dispatcher.start()
    message = str(caught.value)
    assert message.startswith(f"CELERY_BROKER_URL: cannot use the broker at 127.0.0.1:{port}: ")
    assert "refused" in message.lower() and "s3cret-pw" not in message and "\n" not in message


def test_start_with_a_wrong_password_is_a_config_error(amqp_url):
    parts = urlsplit(amqp_url)
    wrong = amqp_url.replace(f":{parts.password}@", ":s3cret-pw@")
    with pytest.raises(ConfigError) as caught:
        CeleryDispatcher(wrong).start()
    message = str(caught.value)
    assert message.startswith(f"CELERY_BROKER_URL: cannot use the broker at {parts.hostname}:{parts.port}: ")
    assert "ACCESS_REFUSED" in message and "s3cret-pw" not in message


def test_runs_submitted_from_many_threads_at_once_all_arrive(broker, dispatchers):
    """The server sends from its request threads: celery's producer pool must keep their sends apart."""
    sender = dispatchers(broker)
    ids = [f"run_{n:02d}" for n in range(40)]
    senders = [threading.Thread(target=lambda chunk=ids[n::4]: [sender.submit(i) for i in chunk]) for n in range(4)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(30)
    executed = []
    dispatchers(broker, execute=executed.append, concurrency=4)
    wait_until(lambda: len(executed) >= len(ids), timeout=20, message="every run executed")
    assert sorted(executed) == ids
