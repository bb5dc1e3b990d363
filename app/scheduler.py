"""Drives persistent workflows' triggers: one APScheduler for all of them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

logger = logging.getLogger(__name__)

_MAINTENANCE_JOB = "pyflow:maintenance"


class _NextPoll(BaseTrigger):
    """An APScheduler trigger: the time the last poll asked for, else ``interval`` after the previous poll."""

    def __init__(self, interval: float):
        self.interval = timedelta(seconds=interval)
        # Set by the scheduler when a poll returns; only a wish later than the poll that made it counts.
        self.wish: datetime | None = None

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        if previous_fire_time is None:
            return now
        wish = self.wish
        if wish is not None and wish > previous_fire_time:
            return wish
        # Far behind (a suspended laptop): once now, not one step per missed interval.
        return max(previous_fire_time + self.interval, now)

    def __str__(self) -> str:  # APScheduler's log lines name the trigger
        return f"when due, else every {self.interval.total_seconds():g} s"


class Scheduler:
    """Polls each started workflow when its trigger is next due, else every ``interval`` seconds.

    ``poll(name)`` returns the epoch time at which it wants to be called next
    (or None for "after the interval"), so a trigger that knows its schedule
    is polled at that moment instead of up to an interval late. One scheduler
    thread plus a small pool runs every poll, so a thousand started workflows
    cost no thousand threads, and a slow mailbox does not delay the others.
    A poll never overlaps itself (``max_instances=1``).
    """

    def __init__(
        self, poll: Callable[[str], float | None], maintenance: Callable[[], object], pool_size: int = 8
    ):
        self._poll = poll
        self._maintenance = maintenance
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=pool_size)},
            # A poll that was late (busy pool, suspended laptop) runs once, not once per missed beat.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        # Listeners run after the executor has counted the poll as finished, so moving the job
        # to a time that is already due cannot be refused as a second instance.
        self._scheduler.add_listener(self._polled, EVENT_JOB_EXECUTED)
        self._triggers: dict[str, _NextPoll] = {}

    def start(self, maintenance_interval: float = 3600.0) -> None:
        """Start the scheduler thread and the periodic maintenance (pruning)."""
        self._scheduler.start()
        self._scheduler.add_job(
            self._maintenance, "interval", seconds=maintenance_interval, id=_MAINTENANCE_JOB,
            next_run_time=datetime.now(UTC),
        )

    def add(self, name: str, interval: float) -> None:
        """Poll ``name`` now, then when each poll asks, else every ``interval`` seconds."""
        trigger = self._triggers[name] = _NextPoll(interval)
        self._scheduler.add_job(
            self._poll, trigger, args=[name], id=name, replace_existing=True, next_run_time=datetime.now(UTC),
        )

    def _polled(self, event: JobExecutionEvent) -> None:
        """Move a workflow's next poll to the time its last poll returned."""
        trigger = self._triggers.get(event.job_id)
        if trigger is None or event.retval is None:
            return
        # Never in the past: the job would run at once anyway, and "now" keeps the wish newer than the poll.
        trigger.wish = at = datetime.fromtimestamp(max(float(event.retval), time.time()), UTC)
        # A poll that finishes before APScheduler has computed its next run gets the wish from the
        # trigger; one that finishes later has already been given the interval, so move it.
        try:
            self._scheduler.modify_job(event.job_id, next_run_time=at)
        except JobLookupError:
            pass  # stopped while it was being polled

    def remove(self, name: str) -> None:
        """Stop polling ``name``."""
        self._triggers.pop(name, None)
        try:
            self._scheduler.remove_job(name)
        except JobLookupError:
            pass

    def next_poll(self, name: str) -> float | None:
        """Epoch seconds of ``name``'s next poll; None when it is not polled."""
        job = self._scheduler.get_job(name)
        return None if job is None or job.next_run_time is None else job.next_run_time.timestamp()

    def scheduled(self) -> set[str]:
        """Names of workflows being polled."""
        return {job.id for job in self._scheduler.get_jobs() if job.id != _MAINTENANCE_JOB}

    def shutdown(self) -> None:
        """Stop the scheduler; polls under way are not waited for."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
