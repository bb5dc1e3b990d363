"""Drives persistent workflows' triggers: one APScheduler for all of them."""

from __future__ import annotations

import itertools
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
# A wall clock that went back more than this between two rounds of the scheduler stepped (NTP, an operator),
# rather than drifted: NTP slews a clock by at most 0.5 ms a second.
CLOCK_STEP_SECONDS = 2.0


class _NextPoll:  # an APScheduler BaseTrigger by registration (_background_scheduler), so defined without it
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


class _Job:
    """One ``add`` of a workflow: an APScheduler job of its own, so a poll of the job it replaced is told apart."""

    def __init__(self, name: str, interval: float, number: int):
        self.name = name
        # Not the workflow's name: APScheduler counts running instances per id, and refused (with a warning)
        # the first turn of a job added while the poll of the job it replaced was under way.
        self.id = f"{name}#{number}"
        self.trigger = _NextPoll(interval)
        # Added while a poll of the workflow was under way: paused until that poll returns, then polled at once.
        self.waiting = False


def _background_scheduler(pool_size: int, polled: Callable[[JobExecutionEvent], None],
                          before_round: Callable[[], object]) -> BackgroundScheduler:
    """The APScheduler behind a Scheduler: one thread, a pool of ``pool_size``, ``polled`` told of every poll,
    ``before_round`` called each time the thread wakes, before it looks for due jobs."""
    from apscheduler.events import EVENT_JOB_EXECUTED
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.base import BaseTrigger

    class _Scheduler(BackgroundScheduler):
        def _process_jobs(self):  # APScheduler 3's round (pinned <4): what it waits for next comes from this
            before_round()
            return super()._process_jobs()

    BaseTrigger.register(_NextPoll)  # an ABC: APScheduler takes any registered class for a trigger
    scheduler = _Scheduler(
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
    workflow's turns are skipped (``on_overdue`` is told once per deadline),
    and a workflow added again meanwhile (a stop and a start, a PUT) polls as
    soon as that poll returns.

    APScheduler waits by the wall clock (its issues 351 and 752): ``clock``
    (``time.time``; tests give another) is compared with ``time.monotonic``
    each time its thread wakes, and a step back moves every job back by as
    much, so no poll waits for the clock to catch up.
    """

    def __init__(
        self, poll: Callable[[str], float | None], maintenance: Callable[[], object], pool_size: int = 8,
        poll_timeout: float = 60.0, on_overdue: Callable[[str, float], object] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self._poll = poll
        self._maintenance = maintenance
        self._poll_timeout = poll_timeout
        self._on_overdue = on_overdue
        self._clock = clock
        self._clock_offset = clock() - time.monotonic()
        # name -> Event set when its poll returns (or the scheduler stops): the polls in flight.
        self._in_flight: dict[str, threading.Event] = {}
        # name -> the job polling it. Guarded, with _in_flight, by _flight_lock, which is taken before
        # APScheduler's own locks (never the other way round).
        self._jobs: dict[str, _Job] = {}
        self._numbers = itertools.count(1)
        self._flight_lock = threading.Lock()
        self._pool_size = pool_size
        self._apscheduler: BackgroundScheduler | None = None
        self._made_lock = threading.Lock()

    @property
    def _scheduler(self) -> BackgroundScheduler:
        """The APScheduler, made at its first use."""
        with self._made_lock:
            if self._apscheduler is None:
                self._apscheduler = _background_scheduler(self._pool_size, self._polled, self._follow_clock)
            return self._apscheduler

    def start(self, maintenance_interval: float = 3600.0) -> None:
        """Start the scheduler thread and the periodic maintenance (pruning)."""
        self._clock_offset = self._clock() - time.monotonic()
        self._scheduler.start()
        self._scheduler.add_job(
            self._maintenance, "interval", seconds=maintenance_interval, id=_MAINTENANCE_JOB,
            next_run_time=datetime.now(UTC),
        )

    def add(self, name: str, interval: float) -> None:
        """Poll ``name`` now (once a poll of it under way returned), then when each poll asks, else every
        ``interval`` seconds."""
        from apscheduler.jobstores.base import JobLookupError

        with self._flight_lock:
            job = _Job(name, interval, next(self._numbers))
            old, self._jobs[name] = self._jobs.get(name), job
            if old is not None:
                try:
                    self._scheduler.remove_job(old.id)
                except JobLookupError:
                    pass
            # A stop and a start (or a PUT) during a poll: the new job waits for that poll, so the two never
            # overlap, and polls the moment it returns (_returned) rather than a turn later.
            job.waiting = name in self._in_flight
            self._scheduler.add_job(self._bounded_poll, job.trigger, args=[job], id=job.id,
                                    next_run_time=None if job.waiting else datetime.now(UTC))

    def _bounded_poll(self, job: _Job) -> tuple[_Job, float | None]:
        """Poll ``job``'s workflow in a thread of its own and wait for it until the deadline; the job and what
        the poll returned."""
        name = job.name
        with self._flight_lock:
            if self._jobs.get(name) is not job:
                return job, None  # replaced or removed before its turn came: the new job polls
            if name in self._in_flight:
                return job, None  # its last poll, abandoned at its deadline, has not returned yet
            returned = self._in_flight[name] = threading.Event()
        answer: list[float | None] = [None]

        def poll() -> None:
            try:
                answer[0] = self._poll(name)
            finally:
                self._returned(name)
                returned.set()

        # A daemon: a poll stuck in a read must not keep the process alive after SIGTERM.
        threading.Thread(target=poll, name=f"pyflow-poll-{name}", daemon=True).start()
        if returned.wait(self._poll_timeout):
            return job, answer[0]
        if self._scheduler.running:
            logger.warning("polling %s did not return within %g s (WORKFLOW_POLL_TIMEOUT); its pool thread "
                           "moves on, and %s is not polled again until that poll returns",
                           name, self._poll_timeout, name)
            if self._on_overdue is not None:
                self._on_overdue(name, self._poll_timeout)
        return job, None

    def _returned(self, name: str) -> None:
        """A poll of ``name`` returned: a job added meanwhile (waiting for it) polls now."""
        from apscheduler.jobstores.base import JobLookupError

        with self._flight_lock:
            self._in_flight.pop(name, None)
            job = self._jobs.get(name)
            if job is None or not job.waiting:
                return
            job.waiting = False
            try:
                self._scheduler.modify_job(job.id, next_run_time=datetime.now(UTC))
            except JobLookupError:
                pass  # the scheduler was shut down

    def polling(self) -> set[str]:
        """Names of workflows with a poll in flight."""
        with self._flight_lock:
            return set(self._in_flight)

    def _polled(self, event: JobExecutionEvent) -> None:
        """Move a workflow's next poll to the time its last poll returned."""
        from apscheduler.jobstores.base import JobLookupError

        if not isinstance(event.retval, tuple):
            return  # the maintenance
        job, answer = event.retval
        if answer is None or self._jobs.get(job.name) is not job:
            return  # the interval decides; or a poll of a job since replaced, whose answer is not the new job's
        # Never in the past: the job would run at once anyway, and "now" keeps the wish newer than the poll.
        job.trigger.wish = at = datetime.fromtimestamp(max(float(answer), time.time()), UTC)
        # A poll that finishes before APScheduler has computed its next run gets the wish from the
        # trigger; one that finishes later has already been given the interval, so move it.
        try:
            self._scheduler.modify_job(job.id, next_run_time=at)
        except JobLookupError:
            pass  # stopped (or replaced) while it was being polled

    def _follow_clock(self) -> None:
        """Move every job back by as much as the wall clock went back since the last round (scheduler thread)."""
        # The thread's wait is monotonic (Python 3.11 on glibc 2.30+), so it wakes when the next job was due in
        # real time; APScheduler then looks for due jobs by the wall clock, which a step back made "not yet".
        offset = self._clock() - time.monotonic()
        step, self._clock_offset = self._clock_offset - offset, offset
        if step < CLOCK_STEP_SECONDS:
            return
        logger.warning("the wall clock went back %.1f s: every poll keeps its place in real time", step)
        back = timedelta(seconds=step)
        with self._flight_lock:
            for job in self._jobs.values():
                if job.trigger.wish is not None:
                    job.trigger.wish -= back
            for scheduled in self._scheduler.get_jobs():
                if scheduled.next_run_time is not None:
                    scheduled.modify(next_run_time=scheduled.next_run_time - back)

    def remove(self, name: str) -> None:
        """Stop polling ``name``."""
        with self._flight_lock:
            job = self._jobs.pop(name, None)
            if job is None or self._apscheduler is None:
                return  # nothing was ever polled
            from apscheduler.jobstores.base import JobLookupError

            try:
                self._scheduler.remove_job(job.id)
            except JobLookupError:
                pass

    def next_poll(self, name: str) -> float | None:
        """Epoch seconds of ``name``'s next poll; None when it is not polled (or waits for a poll under way)."""
        job = self._jobs.get(name)
        scheduled = self._apscheduler.get_job(job.id) if job is not None and self._apscheduler is not None else None
        return None if scheduled is None or scheduled.next_run_time is None else scheduled.next_run_time.timestamp()

    def scheduled(self) -> set[str]:
        """Names of workflows being polled."""
        with self._flight_lock:
            return set(self._jobs)

    def polls(self, name: str) -> bool:
        """Whether ``name`` is being polled: ``name in scheduled()`` without copying every name (asked per poll)."""
        with self._flight_lock:
            return name in self._jobs

    def shutdown(self) -> None:
        """Stop the scheduler; polls under way are not waited for (their pool threads end now)."""
        if self._apscheduler is not None and self._apscheduler.running:
            self._apscheduler.shutdown(wait=False)
        with self._flight_lock:
            for returned in self._in_flight.values():
                returned.set()
