"""The dispatch interface: the runtime hands queued runs to a Dispatcher, which has an Executor execute them."""

from __future__ import annotations

from typing import Protocol


class Executor(Protocol):
    """What executes a run once a dispatcher hands it over: the engine of the process that takes it."""

    def execute_here(self, run_id: str) -> None:
        """Execute the stored, queued run in this process, now or as soon as one of its slots is free."""

    def shutdown(self, timeout: float) -> None:
        """Start no more steps; wait up to ``timeout`` seconds for running ones (the rest resume on restart)."""


class Dispatcher(Protocol):
    """Gets queued runs to an executor: this process's threads, or (later) workers behind a queue."""

    def start(self) -> None:
        """Begin handing runs over; called once by ``Runtime.start``, after recovery has queued what it found."""

    def submit(self, run_id: str) -> None:
        """Have the stored, queued run executed; it returns at once."""

    def shutdown(self, timeout: float) -> None:
        """Hand over no more runs; wait up to ``timeout`` seconds for the ones executing to stop at a step's end."""
