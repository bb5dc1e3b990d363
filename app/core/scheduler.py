"""Drives persistent workflows' triggers: one APScheduler for all of them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

# APScheduler is imported when polling starts (_background_scheduler), not by every process that
# builds a runtime: `run.py list` and `run.py run` never poll.
if TYPE_CHECKING:
    from apscheduler.events import JobExecutionEvent
    from apscheduler.schedulers.background import BackgroundScheduler

logger = logging.getLogger(__name__)

_MAINTENANCE_JOB = "pyflow:maintenance"


class _NextPoll:  # an APScheduler BaseTrigger by registration (_background_scheduler), so defined without it
    """An APScheduler trigger: the time the last poll asked for, else ``interval`` after the previous poll."""

    def __init__(self, interval: float):
        self.interval = timedelta(seconds=interval)
        # Set by the scheduler when a poll returns; only a wish later than the poll that made it counts.
        self.wish: datetime | None = None
        # Set when a poll of this job (not of one it replaced) got under way.
        self.polled = False

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


def _background_scheduler(pool_size: int, polled: Callable[[JobExecutionEvent], None]) -> BackgroundScheduler:
    """The APScheduler behind a Scheduler: one thread, a pool of ``pool_size``, ``polled`` told of every poll."""
    from apscheduler.events import EVENT_JOB_EXECUTED
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.base import BaseTrigger

    BaseTrigger.register(_NextPoll)  # an ABC: APScheduler takes any registered class for a trigger
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=pool_size)},
        # A poll that was late (busy pool, suspended laptop) runs once, not once per missed beat.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=UTC,
    )
    # Listeners run after the executor has counted the poll as finished, so moving the job
    # to a time that is already due cannot be refused as a second instance.
    scheduler.add_listener(polled, EVENT_JOB_EXECUTED)
    return scheduler


class Scheduler:
    """Polls each started workflow when its trigger is next due, else every ``interval`` seconds.

    ``poll(name)`` returns the epoch time at which it wants to be called next
    (or None for "after the interval"), so a trigger that knows its schedule
    is polled at that moment instead of up to an interval late. One scheduler
    thread plus a small pool runs every poll, so a thousand started workflows
    cost no thousand threads, and a slow mailbox does not delay the others.

    A poll has a deadline (``poll_timeout``): it runs in a thread of its own,
    and the pool thread waiting for it gives up at the deadline, so a hung
    mail server holds a pool thread for at most that long. A workflow has at
    most one poll in flight: while an abandoned poll has not returned, the
    workflow's turns are skipped (``on_overdue`` is told once per deadline).
    """

    def __init__(
        self, poll: Callable[[str], float | None], maintenance: Callable[[], object], pool_size: int = 8,
        poll_timeout: float = 60.0, on_overdue: Callable[[str, float], object] | None = None,
    ):
        self._poll = poll
        self._maintenance = maintenance
        self._poll_timeout = poll_timeout
        self._on_overdue = on_overdue
        # name -> Event set when its poll returns (or the scheduler stops): the polls in flight.
        self._in_flight: dict[str, threading.Event] = {}
        self._flight_lock = threading.Lock()
        self._pool_size = pool_size
        self._apscheduler: BackgroundScheduler | None = None
        self._made_lock = threading.Lock()
        self._triggers: dict[str, _NextPoll] = {}

    @property
    def _scheduler(self) -> BackgroundScheduler:
        """The APScheduler, made at its first use."""
        with self._made_lock:
            if self._apscheduler is None:
                self._apscheduler = _background_scheduler(self._pool_size, self._polled)
            return self._apscheduler

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
        # The job's trigger goes with each poll: the answer of a poll of a job this one replaced (a stop and a
        # start, a PUT) is told from this job's own.
        self._scheduler.add_job(
            self._bounded_poll, trigger, args=[name, trigger], id=name, replace_existing=True,
            next_run_time=datetime.now(UTC),
        )

    def _bounded_poll(self, name: str, trigger: _NextPoll) -> tuple[_NextPoll, float | None]:
        """Poll ``name`` in a thread of its own and wait for it until the deadline; the job's trigger and what
        the poll returned."""
        with self._flight_lock:
            if name in self._in_flight:
                return trigger, None  # its last poll, abandoned at its deadline, has not returned yet
            returned = self._in_flight[name] = threading.Event()
            trigger.polled = True
        answer: list[float | None] = [None]

        def poll() -> None:
            try:
                answer[0] = self._poll(name)
            finally:
                with self._flight_lock:
                    self._in_flight.pop(name, None)
                returned.set()

        # A daemon: a poll stuck in a read must not keep the process alive after SIGTERM.
        threading.Thread(target=poll, name=f"pyflow-poll-{name}", daemon=True).start()
        if returned.wait(self._poll_timeout):
            return trigger, answer[0]
        if self._scheduler.running:
            logger.warning("polling %s did not return within %g s (WORKFLOW_POLL_TIMEOUT); its pool thread "
                           "moves on, and %s is not polled again until that poll returns",
                           name, self._poll_timeout, name)
            if self._on_overdue is not None:
                self._on_overdue(name, self._poll_timeout)
        return trigger, None

    def polling(self) -> set[str]:
        """Names of workflows with a poll in flight."""
        with self._flight_lock:
            return set(self._in_flight)

    def _polled(self, event: JobExecutionEvent) -> None:
        """Move a workflow's next poll to the time its last poll returned."""
        from apscheduler.jobstores.base import JobLookupError

        trigger = self._triggers.get(event.job_id)
        if trigger is None or not isinstance(event.retval, tuple):
            return
        polled_for, answer = event.retval
        if polled_for is not trigger:
            # A poll of a job this one replaced, under way at the stop (or the PUT): its answer is not this
            # job's. The new job's first turn was refused while that poll ran (one poll of a workflow at a
            # time), so it polls now, as a job just added does, rather than an interval later.
            at = None if trigger.polled else datetime.now(UTC)
        elif answer is None:
            return
        else:
            # Never in the past: the job would run at once anyway, and "now" keeps the wish newer than the poll.
            trigger.wish = at = datetime.fromtimestamp(max(float(answer), time.time()), UTC)
        if at is None:
            return
        # A poll that finishes before APScheduler has computed its next run gets the wish from the
        # trigger; one that finishes later has already been given the interval, so move it.
        try:
            self._scheduler.modify_job(event.job_id, next_run_time=at)
        except JobLookupError:
            pass  # stopped while it was being polled

    def remove(self, name: str) -> None:
        """Stop polling ``name``."""
        self._triggers.pop(name, None)
        if self._apscheduler is None:
            return  # nothing was ever polled
        from apscheduler.jobstores.base import JobLookupError

        try:
            self._scheduler.remove_job(name)
        except JobLookupError:
            pass

    def next_poll(self, name: str) -> float | None:
        """Epoch seconds of ``name``'s next poll; None when it is not polled."""
        job = self._apscheduler.get_job(name) if self._apscheduler is not None else None
        return None if job is None or job.next_run_time is None else job.next_run_time.timestamp()

    def scheduled(self) -> set[str]:
        """Names of workflows being polled."""
        jobs = self._apscheduler.get_jobs() if self._apscheduler is not None else []
        return {job.id for job in jobs if job.id != _MAINTENANCE_JOB}

    def shutdown(self) -> None:
        """Stop the scheduler; polls under way are not waited for (their pool threads end now)."""
        if self._apscheduler is not None and self._apscheduler.running:
            self._apscheduler.shutdown(wait=False)
        with self._flight_lock:
            for returned in self._in_flight.values():
                returned.set()
