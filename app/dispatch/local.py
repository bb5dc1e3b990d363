"""In-process dispatch: every run executes on threads of this process, in the engine's slots."""

from __future__ import annotations

from app.dispatch.base import Executor


class LocalDispatcher:
    """Hands each run straight to this process's executor (the engine), which keeps the slots and the queue.

    Threads are made per run, when one is submitted, so there is nothing to start: ``run.py run``
    executes runs on a runtime it never starts.
    """

    remote = False

    def __init__(self, executor: Executor):
        self.executor = executor
        self.started = False

    def start(self) -> None:
        self.started = True

    def submit(self, run_id: str) -> None:
        self.executor.execute_here(run_id)

    def shutdown(self, timeout: float) -> None:
        self.executor.shutdown(timeout)
