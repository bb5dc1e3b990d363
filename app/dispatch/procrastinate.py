"""The procrastinate queue: a run's job is a row in the store's database, created in the run's own transaction."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import procrastinate
import psycopg
import psycopg_pool
from procrastinate import exceptions as procrastinate_errors
from procrastinate.jobs import Status
from procrastinate.schema import SchemaManager

from app.errors import ConfigError, StorageError
from app.storage.postgres import PostgresStore, _alive, _cause, where

if TYPE_CHECKING:
    from app.storage.base import Store

# Its schema, upgrades and what a stalled job is: docs/procrastinate.md.

logger = logging.getLogger(__name__)

TASK = "pyflow.execute_run"
_CONNECT_TIMEOUT = 10
# pg_advisory_xact_lock's key ("PyFlowPq" as 8 bytes): one process at a time creates procrastinate's schema.
_SCHEMA_LOCK = int.from_bytes(b"PyFlowPq", "big", signed=True)
# The objects of procrastinate's schema.sql: a database lacking one has an older schema.
_OBJECT = re.compile(r"CREATE (?:UNIQUE )?(?:TABLE|INDEX|FUNCTION|TYPE|TRIGGER) ((?:idx_)?procrastinate_\w+)")
_RESTART_DELAY, _RESTART_MAX = 1.0, 30.0  # seconds before a worker that lost the database starts again


class _ExecuteFailed(Exception):
    """execute(run_id) raised: the job is marked failed; the reason was logged on one line already."""


class _OneLine(logging.Filter):
    """Drops the traceback procrastinate logs for a job that failed with _ExecuteFailed (already said in one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], _ExecuteFailed):
            record.exc_info, record.exc_text = None, None
        return True


class ProcrastinateDispatcher:
    """The ``Queue`` over procrastinate: one task, ``pyflow.execute_run(run_id)``, in queue ``queue``.

    ``heartbeat`` is how often a worker tells the database it lives; ``stalled_after`` how long
    without one makes its jobs stalled (``recover``) and its row prunable by the next worker.
    """

    remote = True

    def __init__(self, database_url: str, *, queue: str = "pyflow", heartbeat: float = 10.0,
                 stalled_after: float = 30.0):
        if not queue:
            raise ValueError(f"queue must be a non-empty name, got {queue!r}")
        if not 0 < heartbeat < stalled_after:
            raise ValueError(f"need 0 < heartbeat < stalled_after, got {heartbeat!r} and {stalled_after!r}")
        self.queue = queue
        self.where = where(database_url)
        self._url = database_url
        self._heartbeat = heartbeat
        self._stalled_after = stalled_after
        # The server's side (create, submit) is synchronous: procrastinate's sync connector and its pool.
        self._app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(
            conninfo=database_url, min_size=1, max_size=4, timeout=_CONNECT_TIMEOUT, name="pyflow-procrastinate",
            reconnect_timeout=float("inf"),  # as the store's pool: a database that went away is tried until it is back
            kwargs={"connect_timeout": _CONNECT_TIMEOUT}))
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._worker: tuple[asyncio.AbstractEventLoop, asyncio.Task] | None = None
        self._opened = False  # whether work()'s last attempt reached the database
        # recover()'s app, made once: procrastinate logs a line at INFO for every App made, and the
        # leader's sweeper recovers every third of a lease.
        self._recover_app: procrastinate.App | None = None

    # -- the server's side ------------------------------------------------------
    def start(self) -> None:
        """Create procrastinate's schema when missing (refuse an older one), then open the pool."""
        self._connect(self._ensure_schema)
        try:
            self._app.open()
        except procrastinate_errors.ConnectorException as error:
            raise ConfigError(f"WORKFLOW_DATABASE_URL: cannot use the database at {self.where}: "
                              f"{_cause(error.__cause__ or error, self._url)}") from None

    def _connect(self, then: Callable[[psycopg.Connection], None] = lambda conn: None) -> None:
        """Connect once and call ``then(conn)``; a database that cannot be reached is a one-line ConfigError."""
        try:
            with psycopg.connect(self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT) as conn:
                then(conn)
        except psycopg.Error as error:
            raise ConfigError(f"WORKFLOW_DATABASE_URL: cannot use the database at {self.where}: "
                              f"{_cause(error, self._url)}") from None

    def _ensure_schema(self, conn: psycopg.Connection) -> None:
        schema = SchemaManager.get_schema()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:
                conn.execute(schema)  # no parameters: psycopg sends it as is, all statements in this transaction
                logger.info("created procrastinate's schema in the database at %s", self.where)
                return
            missing = [row[0] for row in conn.execute(
                "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NULL"
                " AND NOT EXISTS (SELECT FROM pg_proc WHERE proname = name)"
                " AND NOT EXISTS (SELECT FROM pg_type WHERE typname = name)"
                " AND NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = name)",
                (sorted(set(_OBJECT.findall(schema))),))]
        if missing:
            raise ConfigError(
                f"WORKFLOW_EXECUTOR=procrastinate: the procrastinate schema in the database at {self.where} is older"
                f" than procrastinate {procrastinate.__version__}'s (it lacks {', '.join(missing[:3])}"
                f"{' and more' if len(missing) > 3 else ''}): apply procrastinate's migrations first"
                " (docs/procrastinate.md, 'Upgrading')")

    def create(self, store: Store, run: dict, idempotency_key: str | None) -> tuple[dict, bool]:
        """Store the run and its job in one transaction (a used key stores neither)."""
        if not isinstance(store, PostgresStore):
            raise ConfigError(f"WORKFLOW_EXECUTOR=procrastinate needs WORKFLOW_DATABASE_URL (the PostgreSQL store),"
                              f" got {type(store).__name__}")
        return store.create_run(run, idempotency_key, also=lambda conn: self._defer(run["id"], conn))

    def submit(self, run_id: str) -> None:
        """Queue a job for a stored queued run; one already waiting for it is enough."""
        try:
            self._defer(run_id, None)
        except procrastinate_errors.AppNotOpen:
            raise RuntimeError("ProcrastinateDispatcher.submit before start()") from None

    def _defer(self, run_id: str, conn: psycopg.Connection | None) -> None:
        # queueing_lock = the run id: at most one waiting job per run, so a sweeper re-submitting a run that
        # waits in a backlog adds nothing. A job being executed does not count: a takeover can always queue.
        deferrer = self._app.configure_task(TASK, queue=self.queue, queueing_lock=run_id, connection=conn)
        try:
            deferrer.defer(run_id=run_id)
        except procrastinate_errors.AlreadyEnqueued:
            if conn is not None:  # impossible for a new run id; never commit a run whose job is in doubt
                raise StorageError(f"cannot queue run {run_id}: a job for it already waits") from None
        except procrastinate_errors.ConnectorException as error:
            raise StorageError(f"cannot queue run {run_id} in the database at {self.where}: "
                               f"{_cause(error.__cause__ or error, self._url)}") from None

    def recover(self) -> int:
        """Abort the jobs left "doing" by workers that stopped heart-beating; how many (the sweeper re-submits)."""
        try:
            return asyncio.run(self._recover())
        except (psycopg.Error, procrastinate_errors.ConnectorException) as error:
            raise StorageError(f"cannot recover stalled jobs in the database at {self.where}: "
                               f"{_cause(error.__cause__ or error, self._url)}") from None

    async def _recover(self) -> int:
        # get_stalled_jobs and finish_job are async only: an async connector whose pool lives for this call.
        if self._recover_app is None:
            self._recover_app = procrastinate.App(connector=self._async_connector(max_size=1))
        app = self._recover_app
        aborted = 0
        async with app.open_async():
            for job in await app.job_manager.get_stalled_jobs(queue=self.queue, task_name=TASK,
                                                              seconds_since_heartbeat=self._stalled_after):
                try:
                    await app.job_manager.finish_job(job, status=Status.ABORTED, delete_job=False)
                except procrastinate_errors.ConnectorException:
                    continue  # it finished in between: its worker was slow, not dead
                logger.warning("aborted job %s of run %s: its worker stopped heart-beating",
                               job.id, job.task_kwargs.get("run_id"))
                aborted += 1
        return aborted

    def shutdown(self, timeout: float) -> None:
        """Close the server's pool (workers stop through ``stop``)."""
        self._app.close()

    # -- the worker's side ------------------------------------------------------
    def work(self, execute: Callable[[str], None], concurrency: int) -> None:
        """Run a procrastinate worker calling ``execute(run_id)`` on up to ``concurrency`` threads, until ``stop``."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        one_line = _OneLine()
        logging.getLogger("procrastinate.worker").addFilter(one_line)
        delay = _RESTART_DELAY
        try:
            self._connect()  # a wrong setting says so at once; later losses of the database are waited out
            while not self._stopping.is_set():
                self._opened = False
                try:
                    asyncio.run(self._work(execute, concurrency))
                except (OSError, procrastinate_errors.ProcrastinateException, psycopg.Error) as error:
                    logger.warning("the procrastinate worker on %s stopped (%s)", self.where,
                                   _cause(error.__cause__ or error, self._url))
                else:
                    if not self._stopping.is_set():  # procrastinate stopped it: a side task lost the database
                        logger.warning("the procrastinate worker on %s stopped", self.where)
                # Started again at once after a loss, then less and less often while the database stays away.
                delay = _RESTART_DELAY if self._opened else min(delay * 2, _RESTART_MAX)
                self._stopping.wait(delay)
        finally:
            logging.getLogger("procrastinate.worker").removeFilter(one_line)
            self._stopping.clear()

    async def _work(self, execute: Callable[[str], None], concurrency: int) -> None:
        # procrastinate runs a sync task on the loop's default executor: make room for every job at once.
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(concurrency + 2, thread_name_prefix="pyflow-job"))
        app = procrastinate.App(connector=self._async_connector(max_size=concurrency + 2))

        @app.task(name=TASK, queue=self.queue)  # retry=False: the store and the lease decide what happens next
        def execute_run(run_id: str) -> None:
            try:
                execute(run_id)
            except Exception as error:
                logger.error("run %s: its job failed: %s: %s", run_id, type(error).__name__,
                             _cause(error, self._url))
                raise _ExecuteFailed(run_id) from None

        async with app.open_async():
            self._opened = True
            task = asyncio.create_task(app.run_worker_async(
                queues=[self.queue], concurrency=concurrency, install_signal_handlers=False,
                update_heartbeat_interval=self._heartbeat, stalled_worker_timeout=self._stalled_after,
                delete_jobs="successful",  # failed and aborted jobs stay, to be looked at
            ))
            with self._lock:
                self._worker = (loop, task)
                if self._stopping.is_set():
                    task.cancel()
            try:
                await task  # cancelling it is procrastinate's graceful stop: the jobs it holds finish first
            except asyncio.CancelledError:
                if not self._stopping.is_set():
                    raise
            finally:
                with self._lock:
                    self._worker = None

    def stop(self) -> None:
        """Make ``work`` take no more jobs and return once the ones it holds are done (from another thread)."""
        with self._lock:
            self._stopping.set()
            if self._worker is not None:
                loop, task = self._worker
                loop.call_soon_threadsafe(task.cancel)

    def _async_connector(self, max_size: int) -> procrastinate.PsycopgConnector:
        return procrastinate.PsycopgConnector(
            conninfo=self._url, min_size=1, max_size=max_size, timeout=_CONNECT_TIMEOUT,
            name="pyflow-procrastinate-worker", reconnect_timeout=float("inf"),
            kwargs={"connect_timeout": _CONNECT_TIMEOUT}, pool_factory=_worker_pool)


def _worker_pool(**kwargs: object) -> psycopg_pool.AsyncConnectionPool:
    """procrastinate's pool for a worker, its connections in autocommit and checked without a round trip.

    Each of procrastinate's calls is one statement (a fetch, a finish: SQL functions, atomic on their own);
    in a transaction each also cost a BEGIN and a COMMIT, and the pool's check (an empty query) one more:
    four round trips where one does. The check is the store's (app/storage/postgres.py): a connection the
    server closed is still replaced before it is handed out.
    """
    kwargs["check"] = _alive_async  # in place of procrastinate's AsyncConnectionPool.check_connection
    kwargs["configure"] = _autocommit
    return psycopg_pool.AsyncConnectionPool(**kwargs)  # type: ignore[arg-type]


async def _alive_async(conn: psycopg.AsyncConnection) -> None:
    _alive(conn)  # type: ignore[arg-type]  # it only polls the socket: nothing to wait for


async def _autocommit(conn: psycopg.AsyncConnection) -> None:
    # Not the pool's kwargs: procrastinate opens its LISTEN connection with them and autocommit=True besides.
    await conn.set_autocommit(True)
