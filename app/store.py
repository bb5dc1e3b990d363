"""The store interface and the durable JSON store."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


class Store(ABC):
    """Where runs, trigger state and started workflows live.

    Every method is safe to call from several threads at once. Records are
    plain JSON dicts (see app/runs.py); the store never interprets a run
    beyond its id, workflow, status and timestamps.
    """

    #: Folder for files that belong to runs (attachments, outbox).
    root: Path

    # -- runs ---------------------------------------------------------------
    @abstractmethod
    def create_run(self, run: dict, idempotency_key: str | None = None) -> tuple[dict, bool]:
        """Store a new run before it is answered.

        With an ``idempotency_key`` already used for the run's workflow, store
        nothing and return ``(first_run, False)``; else ``(run, True)``.
        """

    @abstractmethod
    def update_run(self, run_id: str, fields: dict, *, durable: bool = True) -> None:
        """Record changed run-level fields (status, started_at, error, progress...)."""

    @abstractmethod
    def update_step(self, run_id: str, index: int, step: dict, *, durable: bool = True) -> None:
        """Record the whole record of the step at ``index``; cost does not grow with the run."""

    @abstractmethod
    def save_run(self, run: dict) -> None:
        """Replace the whole record (used when a run finishes)."""

    @abstractmethod
    def get_run(self, run_id: str) -> dict | None:
        """One run, or None."""

    @abstractmethod
    def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> tuple[list[dict], str | None]:
        """Runs newest first and the cursor of the next page (None on the last)."""

    @abstractmethod
    def find_run_ids(self, statuses: set[str]) -> list[str]:
        """Ids of runs in any of ``statuses``, oldest first (crash recovery)."""

    @abstractmethod
    def prune(self, older_than: float) -> int:
        """Delete finished runs that finished before the epoch ``older_than``."""

    # -- trigger state and started workflows --------------------------------
    @abstractmethod
    def load_trigger_state(self, workflow: str) -> dict:
        """The trigger state saved for ``workflow`` ({} when none)."""

    @abstractmethod
    def save_trigger_state(self, workflow: str, state: dict) -> None:
        """Durably replace the trigger state of ``workflow``."""

    @abstractmethod
    def started_workflows(self) -> set[str]:
        """Names of workflows that were started and not stopped."""

    @abstractmethod
    def set_started(self, workflow: str, started: bool) -> None:
        """Durably remember that ``workflow`` is started (or no longer)."""

    # -- files ----------------------------------------------------------------
    def files_path(self, *parts: str) -> Path:
        """A folder under the store's root, created when missing."""
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path
