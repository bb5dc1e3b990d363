"""The dispatch interface: the runtime hands queued runs to a Dispatcher, which has an Executor execute them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from app.storage.base import Store


class Executor(Protocol):
    """What executes a run once a dispatcher hands it over: the engine of the process that takes it."""

    def execute_here(self, run_id: str) -> None:
        """Execute the stored, queued run in this process, now or as soon as one of its slots is free."""

    def shutdown(self, timeout: float) -> None:
        """Start no more steps; wait up to ``timeout`` seconds for running ones (the rest resume on restart)."""


class Dispatcher(Protocol):
    """Gets queued runs to an executor: this process's threads, or workers behind a queue (``Queue``)."""

    #: True when runs execute in other processes (``run.py worker``), not on this process's threads.
    remote: bool

    def start(self) -> None:
        """Begin handing runs over; called once by ``Runtime.start``, after recovery has queued what it found."""

    def submit(self, run_id: str) -> None:
        """Have the stored, queued run executed; it returns at once."""

    def shutdown(self, timeout: float) -> None:
        """Hand over no more runs; wait up to ``timeout`` seconds for the ones executing to stop at a step's end."""


class Queue(Dispatcher, Protocol):
    """A dispatcher whose runs execute on ``run.py worker`` processes, through a job queue (procrastinate, celery).

    A job carries nothing but a run id: the run is in the store, and the worker that takes the job
    claims the run's lease first, so a duplicate or redelivered job does nothing (DESIGN section 11).
    """

    def create(self, store: Store, run: dict, idempotency_key: str | None) -> tuple[dict, bool]:
        """Store a new queued run and its job, as ``Store.create_run`` answers.

        procrastinate creates the job in the run's own transaction; celery sends it after the commit.
        """

    def work(self, execute: Callable[[str], None], concurrency: int) -> None:
        """Take jobs and call ``execute(run_id)`` for each, on up to ``concurrency`` threads, until ``stop``.

        ``execute`` returns once the run stopped executing here; a job is acknowledged after it returns.
        """

    def stop(self) -> None:
        """Make ``work`` take no more jobs and return once the ones it holds are done (from another thread)."""

    def recover(self) -> int:
        """Tidy jobs whose worker died (procrastinate's stalled jobs); how many. The leases decide the runs."""
