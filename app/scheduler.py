"""Drives persistent workflows' triggers: one APScheduler for all of them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

logger = logging.getLogger(__name__)

_MAINTENANCE_JOB = "pyflow:maintenance"


class Scheduler:
    """Calls ``poll(name)`` every ``interval`` seconds for each started workflow.

    One scheduler thread plus a small pool runs every poll, so a thousand
    started workflows cost no thousand threads, and a slow mailbox does not
    delay the others. A poll never overlaps itself (``max_instances=1``).
    """

    def __init__(self, poll: Callable[[str], object], maintenance: Callable[[], object], pool_size: int = 8):
        self._poll = poll
        self._maintenance = maintenance
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=pool_size)},
            # A poll that was late (busy pool, suspended laptop) runs once, not once per missed beat.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    def start(self, maintenance_interval: float = 3600.0) -> None:
        """Start the scheduler thread and the periodic maintenance (pruning)."""
        self._scheduler.start()
        self._scheduler.add_job(
            self._maintenance, "interval", seconds=maintenance_interval, id=_MAINTENANCE_JOB,
            next_run_time=datetime.now(UTC),
        )

    def add(self, name: str, interval: float) -> None:
        """Poll ``name`` now and every ``interval`` seconds after."""
        self._scheduler.add_job(
            self._poll, "interval", args=[name], seconds=interval, id=name, replace_existing=True,
            next_run_time=datetime.now(UTC),
        )

    def remove(self, name: str) -> None:
        """Stop polling ``name``."""
        if self._scheduler.get_job(name) is not None:
            self._scheduler.remove_job(name)

    def scheduled(self) -> set[str]:
        """Names of workflows being polled."""
        return {job.id for job in self._scheduler.get_jobs() if job.id != _MAINTENANCE_JOB}

    def shutdown(self) -> None:
        """Stop the scheduler; polls under way are not waited for."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
