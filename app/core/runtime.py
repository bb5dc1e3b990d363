"""One PyFlow process: catalog, store, engine and scheduler, without Flask."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from actions import paths, text
from actions.schemas import SchemaFailure, errors_of, make_validator, message_of
from app.core import files
from app.core.approvals import Approvals
from app.core.binding import BoundWorkflow
from app.core.catalog import Catalog
from app.core.engine import Engine
from app.core.events import Events, run_ended
from app.core.execution import RunStateError, one_line
from app.core.leader import Leadership
from app.core.parking import Parking, waker
from app.core.periodic import Periodic
from app.core.plugins import load_plugins
from app.core.redaction import redact, redact_credentials
from app.core.scheduler import Scheduler
from app.core.secrets import Secrets
from app.core.sweeper import Sweeper
from app.core.templating import Renderer
from app.core.tracing import observer_for
from app.dispatch.queues import open_queue
from app.errors import ConfigError, Conflict, InvalidInput, NotFound, StorageError, TriggerFailed
from app.runs import FINISHED_RUN, RunStatus, StepStatus, format_time, snapshot
from app.storage.base import Durability, Store
from app.storage.json.store import JsonStore
from triggers.base import TriggerError
from workflows.base import Workflow

logger = logging.getLogger(__name__)

MAX_POLL_BACKOFF_SECONDS = 300.0
# Longest wait between two polls of a trigger that said when it is next due.
MAX_IDLE_SECONDS = 60.0
# How often a server sharing a database reads which definitions the other servers made, changed or deleted.
FOLLOW_SECONDS = 2.0


def check_files_root(settings: Mapping[str, Any]) -> None:
    """ConfigError unless WORKFLOW_FILES_ROOT is apart from the code and does not hold the store (DESIGN 10)."""
    modules = [*settings.get("WORKFLOW_MODULES", ()), *settings.get("WORKFLOW_PYTHON_MODULES", ())]
    try:
        paths.check_root_apart(paths.files_root(settings), paths.code_paths(modules),
                               settings.get("WORKFLOW_STORAGE_PATH") or "./data")
    except paths.PathError as error:
        raise ConfigError(str(error)) from None


def open_store(settings: Mapping[str, Any]) -> Store:
    """The store the settings name: PostgreSQL when WORKFLOW_DATABASE_URL is set, else the JSON store."""
    url = settings.get("WORKFLOW_DATABASE_URL")
    if not url:
        return JsonStore(settings["WORKFLOW_STORAGE_PATH"])
    if not str(url).startswith(("postgresql://", "postgres://")):
        raise ConfigError("setting WORKFLOW_DATABASE_URL must be a postgresql://user@host:port/database URL")
    try:  # psycopg only then: the embedded install runs without it
        from app.storage.postgres import PostgresStore
    except ImportError as error:
        raise ConfigError(f"WORKFLOW_DATABASE_URL is set but {error.name or 'psycopg'} is not installed: "
                          "pip install -r requirements-distributed.txt") from None
    # Uploads and e-mail attachments are saved under WORKFLOW_STORAGE_PATH and shared through the store (files.py).
    return PostgresStore(url, settings["WORKFLOW_STORAGE_PATH"])


class Runtime:
    """Everything a PyFlow process runs; the Flask app and the CLI both drive one."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        *,
        store: Store | None = None,
        workflows: Iterable[type[Workflow]] = (),
        worker: bool = False,
    ):
        """``worker``: a ``run.py worker`` process, which executes the runs of a queue's jobs (``work``)."""
        self.settings = dict(settings)
        self.worker = worker
        if worker:
            self.settings["WORKFLOW_MAX_CONCURRENT"] = self.settings["WORKFLOW_WORKER_CONCURRENCY"]
        check_files_root(self.settings)
        # Checked before the store opens: a typo in the executor's settings is one line, not a connection.
        self.queue = open_queue(self.settings)
        observer = observer_for(self.settings)  # OpenTelemetry, only when OTEL_EXPORTER_OTLP_ENDPOINT is set
        if worker and self.queue is None:
            raise ConfigError("run.py worker needs WORKFLOW_EXECUTOR=procrastinate or celery (and "
                              "WORKFLOW_DATABASE_URL); with WORKFLOW_EXECUTOR=local the server executes its runs")
        self.store = store or open_store(self.settings)
        self.renderer = Renderer(self.settings["WORKFLOW_TEMPLATE_TIMEOUT"])
        self.secrets = Secrets(self.store, self.settings)
        try:
            self.secrets.check()  # a wrong or missing key stops start-up here, in one line naming it
        except ConfigError:
            if store is None:
                self.store.close()
            raise
        self.renderer.provide("secrets", self.secrets.view())  # triggers' settings: {{ secrets.NAME }}
        self.catalog = Catalog(self.store, self.settings, self.renderer)
        # Installed plugins' types and workflows; a broken one is logged and listed, never fatal.
        self.plugins = load_plugins()
        self.catalog.load(workflows, self.plugins)
        self.engine = Engine(self.store, self.settings, self.renderer)
        self.engine.secrets = self.secrets
        self.engine.run_child = self.run_child
        self.engine.bound_for = self._bound_of
        self.engine.observer = observer
        self.dispatcher = self.engine.dispatcher
        # Processes sharing a database execute a run only while holding its lease (DESIGN section 11).
        self.shared = bool(self.settings.get("WORKFLOW_DATABASE_URL"))
        self.sweeper: Sweeper | None = None
        if self.shared:
            self.engine.use_leases(float(self.settings["WORKFLOW_LEASE_SECONDS"]))
            self.sweeper = Sweeper(self.store, float(self.settings["WORKFLOW_LEASE_SECONDS"]), self._resend,
                                   tidy=self.queue.recover if self.queue is not None else None)
        if self.queue is not None and not worker:
            self.engine.queue = self.queue  # this server creates and controls runs; workers execute them
        # Events and parked runs (DESIGN section 12): a run's end publishes run.<status>; the polling
        # server's waker continues parked runs whose time came.
        self.parking = Parking(self)
        self.events = Events(self)
        self.waker = waker(self.parking)
        self.engine.on_finished = self._run_ended
        self.approvals = Approvals(self)
        self.engine.approval_links = self.approvals.links
        self._stopping = threading.Event()
        self.scheduler = Scheduler(self.poll_scheduled, self.maintain,
                                   poll_timeout=float(self.settings["WORKFLOW_POLL_TIMEOUT"]),
                                   on_overdue=self._poll_overdue)
        self._started = False
        # With several servers on one database only the leader polls triggers (app/core/leader.py);
        # the JSON store has one server per folder, which always polls.
        self._leadership: Leadership | None = None
        self._leading = not self.settings.get("WORKFLOW_DATABASE_URL")
        self._lock = threading.Lock()
        # Re-entrant: a cancel publishes run.cancelled, whose delivery may wake another run under it.
        self._control_lock = threading.RLock()
        # One maintenance at a time: the scheduler's (at start, then hourly) and a direct call must not
        # remove the same folders at once (one gives up on a file the other removed and returns first).
        self._maintenance_lock = threading.Lock()
        # A definition's change and the scheduler's follow-up happen together: two PUTs must not cross.
        self._definitions_lock = threading.Lock()
        # Several servers on one database: each serves the definitions the others make through the API.
        self._definitions_follower = Periodic("pyflow-definitions", FOLLOW_SECONDS, self._follow_definitions,
                                              "following the definitions made through other servers")
        self._validators: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def bound(self) -> Mapping[str, BoundWorkflow]:
        """The bound workflow of every served name (the catalog's read-only view)."""
        return self.catalog.bound

    # -- life cycle -------------------------------------------------------------
    def start(self) -> None:
        """Resume interrupted runs, then poll the workflows that were started."""
        with self._lock:
            if self._started:
                return
            self._started = True
        if self.worker:
            raise RuntimeError("a worker's runtime runs with work(), not start()")
        self.engine.parking = True  # a server: its waker (or the leader's) continues parked runs
        if self.queue is not None:
            self.queue.start()
        self.dispatcher.start()
        self.recover()
        self.scheduler.start()
        if self._leading:
            self._poll_started()
            self._wake_parked()
        else:
            self._leadership = Leadership(self.settings["WORKFLOW_DATABASE_URL"], self._lead, self._follow,
                                          on_check=self._follow_started)
            self._leadership.start()
            self._definitions_follower.start()

    @property
    def polling(self) -> bool:
        """True when this server polls triggers: always on the JSON store, when leader on PostgreSQL."""
        return self._leading

    def _poll_started(self) -> None:
        """Poll every started workflow (at start, or when this server becomes the leader)."""
        # Read under the lock that start and stop hold: a stop meanwhile must not be scheduled again.
        with self._definitions_lock:
            for name in sorted(self.store.started_workflows()):
                bound = self.bound.get(name)
                if bound is None:
                    logger.warning("workflow %s was started but is no longer registered", name)
                elif bound.error:
                    logger.warning("workflow %s cannot be polled: %s", name, bound.error)
                elif bound.trigger.pollable:
                    self._schedule(bound)

    def _lead(self) -> None:
        """This server became the leader: poll the started workflows, from the cursors in the store."""
        self._leading = True
        self._poll_started()
        if self.sweeper is not None:
            self.sweeper.start()
        self._wake_parked()

    def _follow(self) -> None:
        """This server is no longer the leader: stop polling (a poll under way ends; event keys stop a twin)."""
        self._leading = False
        if self.sweeper is not None:
            self.sweeper.stop()
        self.waker.stop()
        with self._definitions_lock:
            for name in self.scheduler.scheduled():
                self._unschedule(name)

    def _follow_started(self) -> None:
        """The leader follows starts and stops made through the other servers (they share the store)."""
        # A first look without the lock: most rounds change nothing, and a PUT need not wait for the database.
        if not any(self._follow_changes(self.store.started_workflows())):
            return
        with self._definitions_lock:
            # Read again under the lock that start and stop hold: a stop made here since the first look must
            # not be scheduled again (a poll after the user's stop), nor a start made here unscheduled.
            to_schedule, to_unschedule = self._follow_changes(self.store.started_workflows())
            for bound in to_schedule:
                self._schedule(bound)
            for name in to_unschedule:
                self._unschedule(name)

    def _follow_changes(self, started: set[str]) -> tuple[list[BoundWorkflow], set[str]]:
        """What following ``started`` takes: the workflows to schedule here, the names to unschedule."""
        scheduled = self.scheduler.scheduled()
        to_schedule = []
        for name in sorted(started - scheduled):
            bound = self.bound.get(name)
            if self._leading and bound is not None and not bound.error and bound.trigger.pollable:
                to_schedule.append(bound)
        return to_schedule, scheduled - started

    def _follow_definitions(self) -> None:
        """Serve the definitions other servers on the database made, changed or deleted; re-schedule their triggers."""
        with self._definitions_lock:
            for name, old, new in self.catalog.follow():
                if not self.scheduler.polls(name):
                    continue  # a started one the leader does not poll yet: _follow_started schedules it
                if old is not None:
                    self._close_trigger(old)
                if new is not None and new.trigger.pollable and not new.error:
                    self._schedule(new)
                else:
                    self.scheduler.remove(name)

    def _unschedule(self, name: str) -> None:
        """Stop polling ``name`` here and close its trigger (an IMAP connection); it stays started in the store."""
        self.scheduler.remove(name)
        bound = self.bound.get(name)
        if bound is not None:
            self._close_trigger(bound)

    def release_waiters(self) -> None:
        """Requests waiting for a run (``?wait``, a webhook's result) answer now with the run as it stands."""
        self._stopping.set()
        self.engine.release_waiters()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop polling, let running steps finish for up to ``timeout`` seconds."""
        self._stopping.set()
        self.waker.stop()
        self._definitions_follower.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        if self._leadership is not None:
            self._leadership.stop()  # another server takes over the triggers now
        self.scheduler.shutdown()
        self.dispatcher.shutdown(timeout)
        if self.queue is not None:
            self.queue.shutdown(timeout)
        for bound in self.bound.values():
            self._close_trigger(bound)
        if self.engine.observer is not None:
            self.engine.observer.shutdown()  # the spans still buffered are sent
        self.store.close()

    def recover(self) -> int:
        """Resume runs that were queued or running when the last process stopped.

        With a queue, workers execute them: the leader's sweeper sends on those no worker holds.
        On a shared database only runs no other live process holds a lease on are taken.
        """
        if self.queue is not None:
            return 0
        ids = self.store.find_run_ids({RunStatus.QUEUED.value, RunStatus.RUNNING.value})
        for run_id in ids:
            if self.shared:
                self.take_run(run_id, "restart")
                continue
            run = self.store.get_run(run_id)
            if run is None or run["status"] not in (RunStatus.QUEUED, RunStatus.RUNNING):
                continue  # the index's status lines are hints; the run's own file decides
            bound = self._bound_for(run)
            if bound is not None:
                self.engine.resume(bound, run)
        return len(ids)

    def _bound_of(self, run: dict) -> BoundWorkflow | None:
        """The workflow version the run started with (or the current one), None when it is gone; no side effect."""
        return self.catalog.version(run["workflow"], run.get("version")) or self.bound.get(run["workflow"])

    def _wake_parked(self) -> None:
        """On the polling server: index waiting runs a crash left unindexed, then wake parked runs when due."""
        try:
            self.parking.reindex()
        except StorageError as error:
            logger.warning("indexing waiting runs failed (the waker tries the indexed ones): %s", error)
        self.waker.start()

    @property
    def control_lock(self) -> threading.RLock:
        """Held while a run is controlled or woken in this process: one change of a run at a time."""
        return self._control_lock

    def bound_for(self, run: dict) -> BoundWorkflow | None:
        """The workflow version the run started with; None after failing the run when it is gone."""
        return self._bound_for(run)

    # -- events (app/core/events.py) ----------------------------------------------------
    def publish(self, event: dict) -> dict:
        """Publish an event (parsed by app.core.events.parse_event): runs started, waiting runs resumed.

        Trusted: nothing here refuses a ``run.*`` type; a caller's event must come through parse_event.
        """
        return self.events.publish(event)

    def submit_event_run(self, bound: BoundWorkflow, event: dict) -> tuple[dict, bool]:
        """Start a run of ``bound`` with ``event`` as its trigger data (once per event id and workflow)."""
        # A worker publishing a run's end sends the runs it starts to the queue, as a server would.
        queue = self.queue if self.worker else None
        return self.engine.submit(bound, event, source="event", idempotency_key=f"event:{event['id']}", queue=queue)

    def _run_ended(self, run: dict) -> None:
        """The engine's word that a run ended: publish run.<status> (its runs and wakes happen here and now)."""
        event = run_ended(run)
        if self.events.heard(event):
            self.events.publish(event)

    def _bound_for(self, run: dict) -> BoundWorkflow | None:
        """The workflow version the run started with; None after failing the run when it is gone."""
        bound = self.catalog.version(run["workflow"], run.get("version"))
        if bound is None:
            self._fail_run(run, f"workflow {run['workflow']!r} is no longer registered"
                           + (f" (version {run['version']})" if run.get("version") else ""))
        return bound

    def _fail_run(self, run: dict, error: str) -> None:
        """End a run that cannot execute here or anywhere, saying why (its history records the change)."""
        at = format_time(time.time())
        run.setdefault("history", []).append({"at": at, "from": run["status"], "to": RunStatus.FAILED.value,
                                              "by": "engine"})
        run.update(status=RunStatus.FAILED.value, finished_at=at, error=error)
        self.store.save_run(run)

    # -- shared databases: leases, workers and the sweeper (DESIGN section 11) ------------------
    def take_run(self, run_id: str, by: str = "worker") -> bool:
        """Claim a queued or running run's lease and execute it here from its first unfinished step.

        False, doing nothing, when another live process holds the lease (a duplicate or redelivered
        job) or the run no longer waits to be executed. A run that was running when its lease was
        taken over lost its worker: its interrupted non-idempotent step fails "interrupted by worker loss".
        """
        leases = self.engine.leases
        # A second job for a run this process holds or is taking already (a duplicate, a redelivery) must not
        # start it again here: take() says so, where claim() would renew the lease.
        if leases is None or self._stopping.is_set() or not leases.take(run_id):
            return False
        try:
            run = self.store.get_run(run_id)
            bound = None
            if run is not None and run["status"] in (RunStatus.QUEUED, RunStatus.RUNNING):
                bound = self._bound_for(run)
            if bound is None:
                leases.release(run_id)
                return False
            # The run's own "running" may still be deferred (app/core/engine.py): a step stored running says it too.
            lost = run["status"] == RunStatus.RUNNING or any(step["status"] == StepStatus.RUNNING
                                                               for step in run["steps"])
            # Uploads and mail attachments saved on another host come through the store (docs/files.md).
            try:
                inputs = None if self.store.local_files else files.fetch(
                    self.store, run["trigger_data"], paths.attachments_folder(self.settings),
                    folders=files.own_folders(run))
            except (NotFound, ValueError) as error:  # pruned, or a forged key: no host can run it
                self._fail_run(run, f"its attachments cannot be read: {text.one_line(error, (NotFound, ValueError))}")
                leases.release(run_id)
                return False
            self.engine.resume(bound, run, "worker loss" if lost and by == "worker" else by, inputs)
        except BaseException:
            leases.release(run_id)
            raise
        return self.engine.executes(run_id)

    def execute_job(self, run_id: str) -> None:
        """A queue's job: execute the run here, returning once it stopped executing here (``run.py worker``)."""
        if self._stopping.is_set():
            # A job taken while this worker stops (celery looks for the stop twice a second): pass it on.
            self.queue.submit(run_id)
            return
        if not self.take_run(run_id):
            return
        self.engine.wait(run_id, None)  # type: ignore[arg-type]
        if self._stopping.is_set() and self.queue is not None:
            # This worker stops: its runs halted at a step's end; another worker continues them now.
            run = self.store.get_run(run_id)
            if run is not None and run["status"] in (RunStatus.QUEUED, RunStatus.RUNNING):
                self.queue.submit(run_id)

    @property
    def stopping(self) -> bool:
        """True once this process began to stop (it takes no more runs)."""
        return self._stopping.is_set()

    def work(self) -> None:
        """Execute the runs of the queue's jobs until ``stop_work`` (``run.py worker``)."""
        self.engine.parking = True  # the leading server's waker continues the runs parked here
        self.queue.start()
        self.scheduler.start()  # no trigger: the hourly maintenance only (its copies of attachments)
        try:
            self.queue.work(self.execute_job, int(self.settings["WORKFLOW_WORKER_CONCURRENCY"]))
        finally:
            self.scheduler.shutdown()

    def stop_work(self, timeout: float) -> None:
        """Take no more jobs; halt runs at their step's end within ``timeout`` (others take them), then close."""
        self._stopping.set()
        self.queue.stop()  # first: no new job while the runs under way halt
        self.engine.shutdown(timeout)  # each run halts; its job returns and the run is sent on

    def _resend(self, run_id: str) -> None:
        """The sweeper's way to get a run without a live lease executed: a new job, or this server's threads."""
        if self.queue is not None:
            self.queue.submit(run_id)
        else:
            self.take_run(run_id, "worker")

    def maintain(self) -> int:
        """Prune runs and attachments older than WORKFLOW_RETENTION_DAYS and expired cache entries; compact the store.

        A worker prunes only its own copies of attachments: the servers prune the shared store.
        """
        with self._maintenance_lock:
            return self._maintain()

    def _maintain(self) -> int:
        cutoff = time.time() - float(self.settings["WORKFLOW_RETENTION_DAYS"]) * 86400
        if self.worker:
            self._prune_attachments(cutoff)
            return 0
        try:
            pruned = self.store.prune(cutoff)
            self.store.prune_events(cutoff)  # an event id is remembered as long as runs are
            self.store.prune_chains(cutoff)  # and the runs each event chain started (MAX_CHAIN_RUNS)
            self.store.prune_files(cutoff)  # the store's copies of attachments (PostgreSQL); local ones below
            self.store.prune_cache()  # step cache entries past their ttl (docs/step-cache.md)
            self.store.compact()
        except StorageError as error:  # a full or read-only disk: one line, and the next round tries again
            logger.warning("maintenance skipped: %s", error)
            return 0
        self._prune_attachments(cutoff)
        if pruned:
            logger.info("pruned %d runs older than %s days", pruned, self.settings["WORKFLOW_RETENTION_DAYS"])
        return pruned

    def _prune_attachments(self, cutoff: float) -> None:
        """Remove upload and e-mail attachment folders last written before ``cutoff``.

        Each run's files sit in a folder of their own, written once when the run
        starts, so a folder older than the retention belongs to a pruned run.
        Errors are logged, never raised: pruning must not stop the server.
        """
        root = self.store.root / "attachments"
        try:
            with os.scandir(root) as entries:
                old = [entry.path for entry in entries if entry.is_dir() and entry.stat().st_mtime < cutoff]
        except FileNotFoundError:
            return
        except OSError:
            logger.warning("cannot list %s", root, exc_info=True)
            return
        for path in old:
            try:
                shutil.rmtree(path)
            except OSError:
                logger.warning("cannot remove %s", path, exc_info=True)

    # -- workflows --------------------------------------------------------------
    def get(self, name: str) -> BoundWorkflow:
        """The bound workflow called ``name``; NotFound otherwise."""
        return self.catalog.get(name)

    def is_started(self, name: str) -> bool:
        """True when ``name`` is polled persistently."""
        return name in self.store.started_workflows()

    def summary(self, name: str, started: set[str] | None = None) -> dict:
        """The Summary of a workflow, secrets redacted."""
        bound = self.get(name)
        started = self.store.started_workflows() if started is None else started
        summary = bound.workflow.describe()
        # The bound trigger shows the settings it really uses; str() keeps odd values (a Path) JSON.
        summary["trigger"] = redact_credentials(json.loads(json.dumps(bound.trigger.describe(), default=str)))
        summary["status"] = "running" if name in started else "stopped"
        summary["check_interval"] = bound.check_interval
        summary["inputs_schema"] = bound.workflow.inputs_schema
        summary["error"] = bound.error
        summary["last_poll"] = bound.last_poll or None
        summary["next_fire_time"] = self._next_fire_time(bound) if name in started else None
        # With several servers on one database only the leader polls (docs/postgres.md).
        summary["polled_here"] = self.scheduler.polls(name)
        summary["origin"] = bound.workflow.origin
        summary["source"] = self.catalog.source(name)
        summary["version"] = bound.workflow.version
        return summary

    def _next_fire_time(self, bound: BoundWorkflow) -> str | None:
        """When a started workflow's schedule (cron, interval) fires next, UTC ISO; None for other triggers."""
        if bound.error or not bound.trigger.pollable:
            return None
        trigger = bound.trigger
        if not self._leading:  # the leader polls it: its cursor is in the store, not in this process
            trigger = copy.copy(trigger)
            trigger.state = self.store.load_trigger_state(bound.name)
        try:
            at = trigger.next_fire_time()
        except Exception:  # the Summary must answer; the scheduler logs the same failure when it polls
            return None
        return None if at is None else format_time(float(at))

    def summaries(self) -> list[dict]:
        """Summaries of all workflows, by name."""
        started = self.store.started_workflows()
        return [self.summary(name, started) for name in sorted(self.bound)]

    def create_definition(self, definition: Any) -> dict:
        """Store and serve a definition posted to the API; its Summary (Conflict: name taken, InvalidInput)."""
        with self._definitions_lock:
            bound = self.catalog.create(definition)
        return self.summary(bound.name)

    def update_definition(self, name: str, definition: Any, base: int | None = None) -> dict:
        """A new version of an API-made definition; runs under way keep theirs, a polled trigger is re-scheduled.

        ``base``: the version the client edited; Conflict (nothing stored) when it is no longer the newest.
        """
        with self._definitions_lock:
            old, new = self.catalog.replace(name, definition, base)
            if old is not None and self.scheduler.polls(name):
                self._close_trigger(old)
                if new.trigger.pollable and not new.error:
                    self._schedule(new)
                else:
                    self.scheduler.remove(name)
            elif (old is None and self._started and self._leading and new.trigger.pollable and not new.error
                  and self.is_started(name)):
                self._schedule(new)  # a started definition that had stopped loading, fixed
        return self.summary(name)

    def delete_definition(self, name: str) -> None:
        """Stop and forget an API-made definition and every version of it (also one that no longer loads)."""
        with self._definitions_lock:
            bound = self.catalog.remove(name)
            if bound is not None:
                self._stop(bound)

    def start_workflow(self, name: str) -> dict:
        """Start ``name`` (its trigger is polled, or its webhook accepted), also after restarts."""
        bound = self._able(name, "started")
        # Under the lock the leader's follower reads under: it sees the start and its scheduling together.
        with self._definitions_lock:
            self.store.set_started(name, True)
            # Not the leader: the leader picks it up from the store within a few seconds (_follow_started).
            if self._started and self._leading and bound.trigger.pollable:
                self._schedule(bound)
        return self.summary(name)

    def stop_workflow(self, name: str) -> dict:
        """Stop polling ``name``."""
        bound = self.get(name)
        with self._definitions_lock:
            self._stop(bound)
        return self.summary(name)

    def _stop(self, bound: BoundWorkflow) -> None:
        """Stop ``bound`` in the store and here; the caller holds the definitions lock."""
        self.store.set_started(bound.name, False)
        self.scheduler.remove(bound.name)
        self._close_trigger(bound)

    def _close_trigger(self, bound: BoundWorkflow) -> None:
        """Close a trigger no longer polled here (an IMAP connection); a poll under way closes it as it ends.

        Never under a poll: the e-mail trigger's poll would reconnect, and the stopped workflow would
        keep a logged-in session until the server stops.
        """
        if not bound.poll_lock.acquire(blocking=False):
            return  # _poll's end sees that it is no longer polled here and closes it
        try:
            bound.trigger.close()
        except Exception:
            logger.warning("closing the trigger of %s failed", bound.name, exc_info=True)
        finally:
            bound.poll_lock.release()

    def _polled_here(self, bound: BoundWorkflow) -> bool:
        """True while this server's scheduler polls this binding of the workflow (not a replaced version's)."""
        return (not self._stopping.is_set() and self.bound.get(bound.name) is bound
                and self.scheduler.polls(bound.name))

    def _able(self, name: str, what: str) -> BoundWorkflow:
        """The workflow when its trigger can be ``what`` ("started" or "polled"); Conflict saying why not."""
        bound = self.get(name)
        able = bound.trigger.startable if what == "started" else bound.trigger.pollable
        if not able:
            raise Conflict(
                f"workflow {name!r} has a {bound.trigger.type} trigger, which cannot be {what}; "
                f"start runs with POST /api/workflows/{name}/runs"
            )
        if bound.error:
            raise Conflict(f"workflow {name!r} cannot be {what}: {bound.error}")
        return bound

    def _schedule(self, bound: BoundWorkflow) -> None:
        # The stored state, unless a poll here is under way: that poll holds a newer one (a cursor moved past
        # the runs it stored) and saves it as it ends; reading the store's back would offer those events again.
        if bound.poll_lock.acquire(blocking=False):
            try:
                bound.trigger.state = self.store.load_trigger_state(bound.name)
            finally:
                bound.poll_lock.release()
        # A start polls now, as at start-up and as POST /poll does: the backoff of a failure before a stop would
        # have skipped the first poll after the start for up to MAX_POLL_BACKOFF_SECONDS. A failure now backs off
        # from where it was (``failures`` stays).
        with bound.backoff_lock:
            bound.retry_at = 0.0
            # A poll still under way (of the job this one replaces) must not undo that when it ends: _poll compares.
            bound.schedules += 1
        self.scheduler.add(bound.name, bound.check_interval)

    # -- runs -------------------------------------------------------------------
    def submit(
        self, name: str, inputs: dict, *, source: str = "api", idempotency_key: str | None = None,
        awaited: bool = False, attachment_folders: Sequence[str] = (),
    ) -> tuple[dict, bool]:
        """Check the inputs and start a run; with a used key, the first run and False (``awaited``: see Engine).

        ``attachment_folders``: the folders the server just saved the run's uploads in (Engine.submit).
        """
        bound = self.get(name)
        self.check_inputs(bound, inputs)
        return self.engine.submit(bound, inputs, source=source, idempotency_key=idempotency_key, awaited=awaited,
                                  attachment_folders=attachment_folders)

    def outcome(self, run: dict, timeout: float) -> dict:
        """A run submitted ``awaited``: as it ended within ``timeout``, else as it stands in the store."""
        deadline = time.monotonic() + timeout
        ended = self.engine.outcome(run["id"], timeout)
        if ended is not None:
            return ended
        if not self.shared:
            return self.store.get_run(run["id"]) or run
        return self._watch(run, deadline)

    def _watch(self, run: dict, deadline: float) -> dict:
        """The run once it ended or paused in whichever process executes it, or as it stands at ``deadline``."""
        delay = 0.01
        while True:
            stored = self.store.get_run(run["id"]) or run
            if stored["status"] in FINISHED_RUN or stored["status"] in (RunStatus.PAUSED, RunStatus.WAITING):
                return stored
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.wait(min(delay, remaining)):
                return stored
            delay = min(delay * 2, 0.2)  # quick for short runs, a few reads a second for long ones

    def check_inputs(self, bound: BoundWorkflow, inputs: dict, only: set[str] | None = None) -> None:
        """Fill in the schema's top-level defaults; InvalidInput listing every problem otherwise.

        ``only``: judge just these top-level inputs (and the object as a whole), as a paused run's new variables.
        """
        schema = bound.workflow.inputs_schema
        if not schema:
            return
        validator = self._validators.get(bound.workflow)
        if validator is None:  # compiled once per workflow (version), not per run
            # The schema's draft and that draft's formats: the ones check_schema let through when it loaded.
            validator = make_validator(schema, timeout=self.settings["WORKFLOW_REGEX_TIMEOUT"])
            self._validators[bound.workflow] = validator
        try:
            errors = sorted(errors_of(validator, inputs, self.settings["WORKFLOW_REGEX_TIMEOUT"]),
                            key=lambda error: list(map(str, error.path)))
        except SchemaFailure as error:  # a pattern that runs away is the inputs' problem here
            raise InvalidInput(f"invalid inputs for {bound.name!r}: {error}",
                               details=[{"path": "inputs", "message": str(error)}]) from None
        problems = [
            {"path": ".".join(str(part) for part in error.absolute_path) or "inputs", "message": message_of(error)}
            for error in errors
            if only is None or not error.absolute_path or str(error.absolute_path[0]) in only
        ]
        if problems:
            listed = "; ".join(f"{problem['path']}: {problem['message']}" for problem in problems)
            raise InvalidInput(f"invalid inputs for {bound.name!r}: {listed}", details=problems)
        # As n8n and JSON-Schema-driven forms do: an input left out takes its documented default.
        for key, spec in (schema.get("properties") or {}).items():
            if key not in inputs and isinstance(spec, dict) and "default" in spec:
                inputs[key] = copy.deepcopy(spec["default"])

    def run_child(self, name: str, inputs: dict, timeout: float, call_stack: tuple[str, ...],
                  serial: bool = False, lineage: dict | None = None, attachment_folders: Sequence[str] = ()) -> dict:
        """Run a sub-workflow to its end for a parent step; the child takes no concurrency slot.

        ``serial``: its steps and loop items run one at a time (its parent step runs beside others).
        ``lineage``: the parent's event chain, which the child's end continues. ``attachment_folders``:
        the parent's, which the child may read as the parent may.
        """
        bound = self.get(name)
        self.check_inputs(bound, inputs)
        run, _ = self.engine.submit(bound, inputs, source="workflow", call_stack=call_stack, serial=serial,
                                    lineage=lineage, attachment_folders=attachment_folders)
        if not self.engine.wait(run["id"], timeout):  # a child runs in its parent's process, whatever the executor
            raise TimeoutError(f"sub-workflow {name!r} (run {run['id']}) did not finish within {timeout:g} s")
        return self.store.get_run(run["id"]) or run

    def run_sync(self, name: str, inputs: dict, *, source: str = "cli", timeout: float | None = None) -> dict:
        """Start a run and wait for it to finish (the CLI's ``run``)."""
        run, _ = self.submit(name, inputs, source=source)
        # None waits until it finishes: Event.wait(float("inf")) overflows time_t.
        self.engine.wait(run["id"], timeout)  # type: ignore[arg-type]
        return self.store.get_run(run["id"]) or run

    # -- run control ------------------------------------------------------------
    def get_run(self, run_id: str) -> dict:
        """A stored run; NotFound otherwise."""
        run = self.store.get_run(run_id)
        if run is None:
            raise NotFound(f"no run with id {run_id!r}")
        return run

    def control(self, run_id: str, operation: str, *, by: str = "api", step: str | None = None) -> dict:
        """cancel, pause, resume, retry or skip (a failed ``step``) a run; Conflict when it makes no sense now."""
        with self._control_lock:  # two resumes at once must not start two executions
            return self._control(run_id, operation, by, step)

    def _control(self, run_id: str, operation: str, by: str, step: str | None) -> dict:
        run = self.get_run(run_id)
        try:
            if operation == "cancel":
                return self.engine.cancel(run, by)
            if operation == "pause":
                return self.engine.pause(run, by)
            # A run keeps the definition version it started with, also after a PUT made a newer one.
            bound = self.catalog.version(run["workflow"], run.get("version")) or self.get(run["workflow"])
            if operation == "resume":
                if run["status"] != RunStatus.PAUSED:
                    raise RunStateError(run, "resumed (only a paused run can be)")
                self.engine.resume(bound, run, by)
                return snapshot(run)  # the run thread changes ``run`` from now on
            if operation == "retry":
                return self.engine.retry(bound, run, by)
            if operation == "skip":
                if not step:
                    raise InvalidInput("skip needs the failed step's name: {\"step\": \"<name>\"}",
                                       details=[{"path": "step", "message": "is required"}])
                return self.engine.skip(bound, run, step, by)
        except RunStateError as error:
            raise Conflict(str(error)) from None
        raise ValueError(f"unknown run operation {operation!r}")

    def set_variables(self, run_id: str, variables: dict) -> dict:
        """Merge ``variables`` into a paused run's inputs (trigger_data) for the steps still to run."""
        run = self.get_run(run_id)
        if run["status"] != RunStatus.PAUSED:
            raise Conflict(f"run {run_id} is {run['status']}; only a paused run's variables can change")
        # Checked like a new run's inputs against the schema of the version the run started with: an operator may not
        # patch a run past what the author allowed (an enum of hosts, a pattern). Only what the patch names is judged:
        # the stored inputs are redacted ("***"), and passed the check when the run started.
        bound = self.catalog.version(run["workflow"], run.get("version"))
        if bound is not None:
            self.check_inputs(bound, {**run["trigger_data"], **variables}, only=set(variables))
        # Stored and answered like a run's inputs: secrets redacted (a Run never shows one).
        run["trigger_data"].update(redact(variables))
        self.store.update_run(run_id, {"trigger_data": run["trigger_data"]}, mode=Durability.SYNC)
        return run

    def poll(self, name: str, *, source: str = "poll") -> list[dict]:
        """Poll the trigger once now (asked through the API); one durable run per event, then the cursor moves."""
        return self._poll(self._able(name, "polled"), source, scheduled=False)

    def poll_scheduled(self, name: str) -> float | None:
        """The scheduler's poll: errors are recorded on the workflow, never raised; returns when to poll next."""
        bound = self.bound.get(name)
        if bound is None:
            return None
        if time.monotonic() >= bound.retry_at:
            try:
                self._poll(bound, bound.trigger.run_source, scheduled=True)
            except Exception:
                pass  # _poll recorded it; the scheduler must keep going
        return self._next_poll_at(bound)

    def _next_poll_at(self, bound: BoundWorkflow) -> float | None:
        """Epoch seconds of the next poll: after a failure's backoff, else when the trigger is due.

        None leaves it to the scheduler's interval (``check_interval``).
        """
        now = time.time()
        backoff = bound.retry_at - time.monotonic()
        if backoff > 0:
            return now + backoff
        try:
            at = bound.trigger.next_fire_time()
        except Exception:
            logger.warning("the trigger of %s cannot say when it is due; polling every %g s",
                           bound.name, bound.check_interval, exc_info=True)
            return None
        if at is None:
            return None
        # A wall-clock jump (NTP, a suspended laptop) delays a far-off fire by at most this much.
        return min(float(at), now + MAX_IDLE_SECONDS)

    def _poll(self, bound: BoundWorkflow, source: str, *, scheduled: bool) -> list[dict]:
        runs: list[dict] = []
        schedules = bound.schedules  # scheduled again before this poll ends: its outcome sets no backoff
        # One poll of a workflow at a time; a request must not queue behind a hung one for ever.
        if not bound.poll_lock.acquire(timeout=float(self.settings["WORKFLOW_POLL_TIMEOUT"])):
            raise Conflict(f"workflow {bound.name!r}: a poll has been under way for more than "
                           f"{self.settings['WORKFLOW_POLL_TIMEOUT']:g} s (WORKFLOW_POLL_TIMEOUT); try again later")
        try:
            with _held(bound.poll_lock):
                before = copy.deepcopy(bound.trigger.state)  # triggers may change nested lists in place
                # The state as of the last event whose run is stored: a cursor never moves past an event
                # without one (DESIGN section 8), also when the trigger moved it as it fetched (interval).
                acknowledged = before
                failure: Exception | None = None
                try:
                    for event in bound.trigger.poll():
                        if scheduled and not self.scheduler.polls(bound.name):
                            # Stopped (or no longer led here) while its poll was under way: no run after the stop.
                            # Not acknowledged: a trigger with a cursor offers the event again once started.
                            logger.info("%s: stopped during its poll; its event starts no run", bound.name)
                            break
                        if scheduled and self._overlaps(bound):
                            # Not acknowledged: a trigger with a cursor offers the event again later.
                            logger.info("%s: skipped an event, %d runs already running or queued (overlap=skip)",
                                        bound.name, self._unfinished(bound.name, bound.workflow.max_concurrent_runs))
                            continue
                        try:
                            files.share(self.store, event, max_bytes=files.limit(self.settings))  # e-mail attachments
                            run, _ = self.engine.submit(
                                bound, event, source=source, idempotency_key=bound.trigger.event_key(event),
                                attachment_folders=bound.trigger.attachment_folders(event),
                            )
                        except Exception:
                            bound.trigger.state = copy.deepcopy(acknowledged)  # offered again by the next poll
                            raise
                        bound.trigger.acknowledge(event, run["id"])
                        acknowledged = copy.deepcopy(bound.trigger.state)
                        runs.append(run)
                except Exception as error:
                    failure = error
                try:
                    if bound.state_unsaved or bound.trigger.state != before:
                        bound.state_unsaved = True
                        self.store.save_trigger_state(bound.name, bound.trigger.state)
                        bound.state_unsaved = False
                except StorageError as error:
                    # The runs are stored (their event keys stop a second one), but a restart would poll from
                    # the older cursor: a failed poll, shown and retried like any other.
                    if failure is not None:
                        logger.warning("%s: saving its trigger's state failed too: %s", bound.name, one_line(error))
                    failure = failure or error
                if failure is not None:
                    self._poll_failed(bound, failure, schedules)
                    raise TriggerFailed(f"polling {bound.name!r} failed: {one_line(failure)}") from None
                with bound.backoff_lock:
                    if bound.schedules == schedules:
                        bound.failures, bound.retry_at = 0, 0.0
                bound.last_poll = {"at": format_time(time.time()), "error": None, "events": len(runs)}
        finally:
            # After the lock is released: a stop that found it held, and so left the closing to this poll,
            # unscheduled the workflow before it tried, so this check sees that.
            if not self._polled_here(bound):
                self._close_trigger(bound)
        return runs

    def _overlaps(self, bound: BoundWorkflow) -> bool:
        """True when a scheduled event must be skipped: overlap="skip" and the workflow is at its limit."""
        workflow = bound.workflow
        return (workflow.overlap == "skip" and workflow.max_concurrent_runs is not None
                and self._unfinished(bound.name, workflow.max_concurrent_runs) >= workflow.max_concurrent_runs)

    def _unfinished(self, name: str, up_to: int | None) -> int:
        """Runs of ``name`` queued or running (paused ones excluded), counted up to ``up_to``.

        On a shared database they may execute in any process, so the store counts them, not this engine.
        """
        if not self.shared:
            return self.engine.unfinished_count(name)
        limit = max(up_to or 1, 1)
        return sum(len(self.store.list_runs(workflow=name, status=status, limit=limit)[0])
                   for status in (RunStatus.QUEUED.value, RunStatus.RUNNING.value))

    def _poll_overdue(self, name: str, seconds: float) -> None:
        """The scheduler gave up waiting for a poll: say so on the workflow (the poll may still return)."""
        bound = self.bound.get(name)
        if bound is not None:
            bound.last_poll = {"at": format_time(time.time()), "events": 0,
                               "error": f"poll did not return within {seconds:g} s (WORKFLOW_POLL_TIMEOUT)"}

    def _poll_failed(self, bound: BoundWorkflow, error: Exception, schedules: int) -> None:
        """Record and log a failed poll begun when ``bound`` had been scheduled ``schedules`` times.

        It backs off unless the workflow was scheduled again (started) since: that start reset the backoff
        and polls as soon as this poll returns, and the failure of the replaced job's poll must not put it off.
        """
        message = one_line(error)
        quiet = isinstance(error, (TriggerError, OSError, ValueError, StorageError))
        with bound.backoff_lock:
            if bound.schedules != schedules:
                failures = None
            else:
                failures = bound.failures = bound.failures + 1
                delay = min(bound.check_interval * 2 ** (failures - 1), MAX_POLL_BACKOFF_SECONDS)
                bound.retry_at = time.monotonic() + delay
        if failures is None:
            bound.last_poll = {"at": format_time(time.time()), "error": message, "events": 0}
            logger.warning("polling %s failed (a poll begun before its latest start, which polls now "
                           "without a backoff): %s", bound.name, message, exc_info=not quiet)
            return
        bound.last_poll = {"at": format_time(time.time()), "error": message, "events": 0,
                           "failures": failures, "retry_in_s": round(delay, 1)}
        logger.warning("polling %s failed (%d in a row, next try in %.0f s): %s",
                       bound.name, failures, delay, message, exc_info=not quiet)


@contextlib.contextmanager
def _held(lock: threading.Lock) -> Iterator[None]:
    """Release a lock acquired with a timeout at the end of the block."""
    try:
        yield
    finally:
        lock.release()
