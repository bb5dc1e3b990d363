"""On the leading server: runs whose worker died or whose job was lost are sent to be executed again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from app.core.execution import one_line
from app.core.periodic import Periodic
from app.storage.base import Store

logger = logging.getLogger(__name__)

# A run sent again and still not taken waits twice as long before the next send, up to this.
MAX_RESEND_SECONDS = 600.0


class Sweeper:
    """Every third of a lease, re-sends runs with no live lease: their worker died (the lease expired),
    or their job never arrived (sent after the commit and lost, a broker restarted without its queue).

    A queued run waits two leases before it counts as lost, and each further send doubles the wait,
    so a long backlog is not sent again and again. A duplicate job is harmless: the lease decides.
    """

    def __init__(self, store: Store, lease_seconds: float, resend: Callable[[str], None],
                 tidy: Callable[[], int] | None = None):
        self.store = store
        self.lease_seconds = float(lease_seconds)
        self._resend = resend
        self._tidy = tidy
        self._sent: dict[str, tuple[float, float]] = {}  # run id -> (when sent again, wait before the next)
        self._periodic = Periodic("pyflow-sweeper", max(self.lease_seconds / 3, 0.5), self.sweep,
                                  "sweeping runs without a worker")

    def start(self) -> None:
        """Sweep on a thread until ``stop`` (when this server becomes the leader)."""
        self._periodic.start()

    def stop(self) -> None:
        """Stop sweeping (this server stopped leading, or shuts down)."""
        self._periodic.stop()

    def sweep(self, now: float | None = None) -> list[str]:
        """Send again the runs that need it now; their ids."""
        now = time.time() if now is None else now
        expired = set(self.store.expired_leases())  # sets: a backlog of n runs costs n look-ups, not n squared
        lost = self.store.unleased_runs(older_than=now - 2 * self.lease_seconds)
        candidates = list(dict.fromkeys([*sorted(expired), *lost]))
        pending = set(candidates)
        self._sent = {run_id: sent for run_id, sent in self._sent.items() if run_id in pending}
        resent = []
        for run_id in candidates:
            at, wait = self._sent.get(run_id, (0.0, 2 * self.lease_seconds))
            if now - at < wait:
                continue
            self._sent[run_id] = (now, min(wait * 2, MAX_RESEND_SECONDS) if at else wait)
            why = "its worker stopped renewing its lease" if run_id in expired else "no worker took it"
            logger.warning("run %s: %s; sending it to be executed again", run_id, why)
            try:
                self._resend(run_id)
            except Exception as error:
                logger.warning("run %s could not be sent again: %s", run_id, one_line(error))
                continue
            resent.append(run_id)
        if self._tidy is not None:
            self._tidy()
        return resent
