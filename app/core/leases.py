"""This process's leases on the runs it executes, when processes share a store (DESIGN section 11)."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
from collections.abc import Callable

from app.core.execution import one_line
from app.errors import NotFound, StorageError
from app.storage.base import Store

logger = logging.getLogger(__name__)

# How often control requests (cancel, pause) made through another process are looked for: within 2 s.
CONTROL_INTERVAL = 0.5


def process_owner() -> str:
    """``host:pid``: how a lease and a run record name the process executing a run."""
    return f"{socket.gethostname()}:{os.getpid()}"


_instances = itertools.count(1)


def _new_owner() -> str:
    """``host:pid``; ``host:pid#2`` and on for further runtimes of one process (tests), which must not share leases."""
    number = next(_instances)
    return process_owner() if number == 1 else f"{process_owner()}#{number}"


class Leases:
    """Claims, renews and releases this process's leases, and hands it the control requests made elsewhere.

    A lease is renewed every third of its length, so two renewals may fail (a slow database) before
    another process may take the run over. One thread does both jobs, started at the first claim.
    """

    def __init__(
        self,
        store: Store,
        seconds: float,
        *,
        on_lost: Callable[[str], None],
        on_control: Callable[[str, str, str], None],
        owner: str | None = None,
    ):
        self.store = store
        self.seconds = float(seconds)
        self.owner = owner or _new_owner()
        self._on_lost = on_lost
        self._on_control = on_control
        self._held: set[str] = set()
        self._taking: set[str] = set()  # runs a thread of this process is taking (take) at this moment
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def create(self, run: dict, idempotency_key: str | None) -> tuple[dict, bool]:
        """Store a new run that this process executes, its lease claimed with it (Store.create_leased)."""
        stored, created = self.store.create_leased(run, idempotency_key, self.owner, self.seconds)
        if created:
            self._hold(run["id"])
        return stored, created

    def claim(self, run_id: str) -> bool:
        """Take (or renew) the run's lease; False when another live process holds it or the run is gone."""
        try:
            claimed = self.store.claim_run(run_id, self.owner, self.seconds)
        except NotFound:
            return False
        if claimed:
            self._hold(run_id)
        return claimed

    def _hold(self, run_id: str) -> None:
        """Note a lease this process got, and keep it renewed (the keeper starts with the first)."""
        with self._lock:
            self._held.add(run_id)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._keep, name="pyflow-leases", daemon=True)
                self._thread.start()

    def take(self, run_id: str) -> bool:
        """Claim a run for a job; False when this process holds it or takes it on another thread, or another does."""
        # claim() alone renews a lease this process holds: two jobs for one run at the same instant (a duplicate,
        # a redelivery) would both get it. Here only the first thread does.
        with self._lock:
            if run_id in self._held or run_id in self._taking:
                return False
            self._taking.add(run_id)
        try:
            return self.claim(run_id)
        finally:
            with self._lock:
                self._taking.discard(run_id)

    def let_go(self, run_id: str) -> bool:
        """Stop holding the run's lease here, its release going with the run's last save; True when it was held."""
        with self._lock:
            held = run_id in self._held
            self._held.discard(run_id)
        return held

    def holds(self, run_id: str) -> bool:
        """True while this process holds the run's lease (as far as it knows)."""
        with self._lock:
            return run_id in self._held

    def release(self, run_id: str) -> None:
        """Give the lease up, so another process may take the run at once; a failure lets it expire instead."""
        with self._lock:
            if run_id not in self._held:
                return
            self._held.discard(run_id)
        try:
            self.store.release_run(run_id, self.owner)
        except StorageError as error:
            logger.warning("run %s: its lease could not be released (%s); it ends in %g s",
                           run_id, one_line(error), self.seconds)

    def stop(self) -> None:
        """Stop renewing (at shutdown, after the runs were halted and released)."""
        self._stop.set()

    def _keep(self) -> None:
        """Take control requests every CONTROL_INTERVAL; renew every lease every third of its length."""
        renew_every = max(self.seconds / 3, CONTROL_INTERVAL)
        ticks = max(int(renew_every / CONTROL_INTERVAL), 1)
        tick = 0
        while not self._stop.wait(CONTROL_INTERVAL):
            tick += 1
            with self._lock:
                held = sorted(self._held)
            if not held:
                continue
            if tick % ticks == 0:
                self._guarded("renew", self._renew, held)
            self._guarded("take control requests", self._take_controls)

    def _guarded(self, what: str, work: Callable, *args: object) -> None:
        """Run one of the keeper's jobs; a failure is logged, and the next tick tries again."""
        try:
            work(*args)
        except StorageError as error:  # the database went away
            logger.warning("leases of %s: cannot %s: %s", self.owner, what, one_line(error))
        except Exception:
            logger.exception("leases of %s: cannot %s", self.owner, what)

    def _take_controls(self) -> None:
        for run_id, operation, by in self.store.take_controls(self.owner):
            self._on_control(run_id, operation, by)

    def _renew(self, held: list[str]) -> None:
        for run_id in held:
            if self.store.renew_lease(run_id, self.owner, self.seconds) or not self.holds(run_id):
                continue
            with self._lock:
                self._held.discard(run_id)
            logger.error("run %s: its lease was lost (this process could not renew it in time); "
                         "another process may have taken it over, so this one stops executing it", run_id)
            self._on_lost(run_id)
