"""The celery queue: runs created in the store, then sent to ``run.py worker`` processes through Redis or RabbitMQ."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from celery import Celery
from celery.concurrency.thread import TaskPool
from celery.exceptions import WorkerShutdown

from app.errors import ConfigError

if TYPE_CHECKING:
    from app.storage.base import Store

log = logging.getLogger(__name__)

TASK = "pyflow.execute_run"
SCHEMES = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671}
_TIMEOUT = 3.0  # seconds to reach the broker, at start and for each send

# With Redis a task taken but not acknowledged is handed out again after the visibility timeout (celery#2599), even
# while its worker still executes it. Runs may last hours, so it is a day: longer than any run. A worker that died
# needs no broker help anyway: PyFlow's sweeper re-sends its runs once their lease expires (DESIGN section 11).
VISIBILITY_TIMEOUT = 24 * 3600


class CeleryDispatcher:
    """The ``Queue`` over celery 5: one task, ``pyflow.execute_run(run_id)``, acknowledged once the run stopped here.

    A message is sent after the run's commit, never before (n8n#24274); one lost in between (broker down) leaves
    the run queued in the store, where the sweeper finds it and calls ``submit`` again. Duplicates are harmless:
    the worker that takes one claims the run's lease first.
    """

    remote = True

    def __init__(self, broker_url: str, *, queue: str = "pyflow"):
        self.where = where(broker_url)
        self.queue = queue
        self._url = broker_url
        self._execute: Callable[[str], None] | None = None
        self._stop = threading.Event()
        self.app = self._make_app()

    def _make_app(self) -> Celery:
        """A celery app of this dispatcher's own (not the global one): broker settings as issue 14 asks."""
        app = Celery("pyflow", broker=self._url, set_as_current=False)
        app.conf.update(
            task_default_queue=self.queue,
            task_serializer="json",
            accept_content=["json"],
            task_ignore_result=True,  # the run's outcome is in the store; no result backend
            task_acks_late=True,  # acknowledged when execute returns: a worker lost mid-run leaves the message
            task_reject_on_worker_lost=True,
            worker_prefetch_multiplier=1,  # a worker holds no more messages than it has free threads
            # RabbitMQ has its own limit: it closes the channel of a consumer that holds a message unacknowledged
            # longer than its consumer_timeout (30 min by default); runs that long need it raised in rabbitmq.conf.
            broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
            broker_connection_timeout=_TIMEOUT,
            broker_connection_retry_on_startup=True,  # a worker started before its broker waits for it
            # A send tries briefly, then gives up: the run is committed and the sweeper sends it again,
            # so a request never hangs on a broker that is down.
            task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2,
                                       "interval_max": 0.5},
            # A worker that loses its connection lets its runs finish: the broker hands their messages to
            # another worker, whose execute finds the lease held and does nothing.
            worker_cancel_long_running_tasks_on_connection_loss=False,
            worker_enable_remote_control=False,  # no pidbox queues: PyFlow controls runs through the store
            worker_hijack_root_logger=False,
            worker_redirect_stdouts=False,
        )

        # shared=False: a shared task would be added to every celery app made later, each dispatcher's its own.
        @app.task(name=TASK, ignore_result=True, shared=False)
        def execute_run(run_id: str) -> None:
            self._execute_one(run_id)

        return app

    # -- sending --------------------------------------------------------------
    def start(self) -> None:
        """Check that the broker answers within a few seconds; a ConfigError naming it if not."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=0, timeout=_TIMEOUT)  # one try: start-up says why at once
        except Exception as error:  # kombu, amqp, redis and socket errors alike: all mean "cannot use it"
            raise ConfigError(f"CELERY_BROKER_URL: cannot use the broker at {self.where}: "
                              f"{cause(error, self._url)}") from None

    def create(self, store: Store, run: dict, idempotency_key: str | None) -> tuple[dict, bool]:
        """Store the run, then (only once it is committed, and only if it is new) send its message."""
        stored, created = store.create_run(run, idempotency_key)
        if created:
            self.submit(stored["id"])
        return stored, created

    def submit(self, run_id: str) -> None:
        """Send a message for the stored, queued run; a failed send is logged and left to the sweeper."""
        try:
            self.app.send_task(TASK, args=[run_id], queue=self.queue)
        except Exception as error:  # whatever failed, the run is safe in the store: it must not fail the caller
            log.warning("celery: run %s not sent to the broker at %s (%s); it stays queued for the sweeper",
                        run_id, self.where, cause(error, self._url))

    def shutdown(self, timeout: float) -> None:
        """Close the connections to the broker that sending opened."""
        self.app.close()

    # -- working --------------------------------------------------------------
    def work(self, execute: Callable[[str], None], concurrency: int) -> None:
        """Run a celery worker in this process (``concurrency`` threads) calling ``execute``, until ``stop``."""
        self._execute = execute
        if self._stop.is_set():
            return
        worker = self.app.WorkController(
            pool_cls=_Threads,
            concurrency=concurrency,
            queues=[self.queue],
            hostname=f"pyflow-{os.getpid()}@{socket.gethostname()}",
            # Workers need not know each other: no gossip, mingle (start-up sync) or heartbeat events.
            without_gossip=True, without_mingle=True, without_heartbeat=True,
            beat=False,
        )
        # The worker must stop on its own thread: its AMQP connection is not thread-safe, and stopping it from
        # another one raced for the broker's answers (hung). So its event loop looks for stop() twice a
        # second and leaves as on a signal, by WorkerShutdown; celery's warm shutdown then waits for the threads.
        worker.timer.call_repeatedly(0.5, self._maybe_stop)
        worker.start()

    def stop(self) -> None:
        """Make ``work`` take no more messages and return once the runs it executes stopped; returns at once."""
        self._stop.set()

    def _maybe_stop(self) -> None:
        """On the worker's event loop: leave it, as celery does on SIGTERM, once stop() was called."""
        if self._stop.is_set():
            raise WorkerShutdown()

    def recover(self) -> int:
        """Nothing to tidy: 0.

        With acks_late a dead worker's messages go back to the queue (RabbitMQ when its connection drops, Redis
        after the visibility timeout), and a redelivered run is harmless: its lease decides who executes it.
        """
        return 0

    def _execute_one(self, run_id: str) -> None:
        """The task's body: execute the run; a failure is logged in one line and acknowledged, never retried."""
        try:
            self._execute(run_id)
        except Exception as error:
            log.error("celery: executing run %s failed: %s: %s", run_id, type(error).__name__, error)


class _Threads(TaskPool):
    """celery's thread pool, whose threads see this dispatcher's app as current.

    A pool thread looks the task up in celery's *current* app, and this app is not the process-wide one
    (two dispatchers, as in the tests, must not share a task): without this it finds no such task.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.executor = ThreadPoolExecutor(max_workers=self.limit, initializer=self.app.set_current)


def where(url: str) -> str:
    """``host:port`` of a broker URL, never its password; a ConfigError for a URL celery cannot use here."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError("CELERY_BROKER_URL: not a URL (expected redis://host:port/db or "
                          "amqp://user:password@host:port/vhost)") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ConfigError(f"CELERY_BROKER_URL: expected a redis://, rediss://, amqp:// or amqps:// URL, "
                          f"got {parts.scheme + '://...' if parts.scheme else 'no scheme'}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port or SCHEMES[parts.scheme]}"


def cause(error: BaseException, url: str) -> str:
    """The first line of a broker error, the password (if any) masked."""
    text = (str(error).strip() or type(error).__name__).splitlines()[0]
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text
