"""Servers and ``run.py worker``-like workers as runtimes of the test process, sharing one PostgreSQL database.

Each has its own storage folder and lease owner; a worker works on a thread as ``run.py worker`` does.
tests/cluster.py does the same with separate processes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.core.config import load_settings
from app.core.runtime import Runtime
from tests.conftest import TEST_SETTINGS
from workflows.base import Workflow


@contextmanager
def runtimes(root: Path, postgres_url: str, settings: Mapping[str, Any], workflows: Iterable[type[Workflow]] = ()
             ) -> Iterator:
    """``make(name, worker=False, store_class=None)``: a started server or a working worker; all stopped after."""
    made: list[tuple[Runtime, threading.Thread | None]] = []
    workflows = list(workflows)

    def make(name: str, worker: bool = False, store_class: type | None = None) -> Runtime:
        """``store_class``: the store to open (``store_class(postgres_url, storage)``), else the settings' own."""
        storage = root / name
        storage.mkdir()
        store = None if store_class is None else store_class(postgres_url, storage)
        runtime = Runtime({**load_settings({}), **TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                           "WORKFLOW_KEY_FILE": str(root / "encryption.key"), "WORKFLOW_DATABASE_URL": postgres_url,
                           "WORKFLOW_LEASE_SECONDS": 2.0, "WORKFLOW_WORKER_CONCURRENCY": 2, **settings},
                          store=store, workflows=workflows, worker=worker)
        thread = None
        if worker:
            thread = threading.Thread(target=runtime.work, name=f"worker-{name}", daemon=True)
            thread.start()
        else:
            runtime.start()
        made.append((runtime, thread))
        return runtime

    try:
        yield make
    finally:
        for runtime, thread in reversed(made):
            if thread is not None:
                runtime.stop_work(2)
                thread.join(10)
            if thread is not None or not runtime.stopping:  # a test may have shut a server down itself
                runtime.shutdown(timeout=2)
