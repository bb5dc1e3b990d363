"""Run journals open for appending, each locked against other processes for as long as it stays open."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import lock_descriptor

from actions.private_files import open_private
from app.errors import StorageError, storage_error

#: Seconds to wait for a journal another process holds (a run executing there) before giving up.
WAIT_SECONDS = 30.0
# Journals kept open between appends: about the runs executing at once, with room to spare.
_MAX_OPEN = 32
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


class JournalFiles:
    """The append descriptors of ``folder/<run id>.journal``, kept open (the most recent few) and locked.

    A journal is its own lock file: whoever appends holds its ``filelock``
    lock, and this process keeps the lock with the descriptor, so the
    appends of a run it executes need no lock, unlock or check each (no one
    else can have written meanwhile). Closing a descriptor hands the run to
    other processes. Callers serialise a run's calls (the store's run locks).
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self._kept: dict[str, int] = {}  # run id -> descriptor, oldest first
        self._lock = threading.Lock()

    def take(self, run_id: str) -> tuple[int, os.stat_result | None]:
        """The journal open for appending and locked: the kept one (stat None) or a newly opened one; ``keep`` it."""
        with self._lock:
            fd = self._kept.pop(run_id, -1)
        if fd >= 0:
            return fd, None
        return self.open(run_id, create=True)

    def keep(self, run_id: str, fd: int) -> None:
        """Keep ``fd`` (and its lock) for the run's next append; the oldest kept one is closed past the limit."""
        with self._lock:
            self._kept[run_id] = fd
            oldest = next(iter(self._kept)) if len(self._kept) > _MAX_OPEN else None
            if oldest is not None:
                os.close(self._kept.pop(oldest))

    def close(self, run_id: str, fd: int = -1) -> None:
        """Close the run's kept descriptor (and ``fd``), which lets other processes have it."""
        with self._lock:
            kept = self._kept.pop(run_id, -1)
        for descriptor in {fd, kept} - {-1}:
            with suppress(OSError):
                os.close(descriptor)

    def close_all(self) -> None:
        with self._lock:
            descriptors, self._kept = list(self._kept.values()), {}
        for fd in descriptors:
            with suppress(OSError):
                os.close(fd)

    @contextmanager
    def locked(
        self, run_id: str, *, create: bool = False, wait: float = WAIT_SECONDS
    ) -> Iterator[tuple[int, os.stat_result | None]]:
        """The journal locked for work beside the appends (compaction, pruning, replay), as ``open`` gives it.

        This process's kept descriptor is closed first (a second one of ours would wait for it); the
        journal is closed, and let go, at the end.
        """
        self.close(run_id)
        fd, stat = self.open(run_id, create=create, wait=wait)
        try:
            yield fd, stat
        finally:
            if fd >= 0:
                os.close(fd)

    def open(self, run_id: str, *, create: bool, wait: float = WAIT_SECONDS) -> tuple[int, os.stat_result | None]:
        """Open the run's journal and take its lock, held until the descriptor is closed.

        (-1, None) when it has none, or when another process held it for
        ``wait`` s with ``wait`` 0 (else that is a StorageError). Call with no
        descriptor of this process open on the journal (``close`` it first).
        """
        path = self.folder / f"{run_id}.journal"
        flags = _APPEND if create else _APPEND & ~os.O_CREAT
        while True:
            try:
                fd = open_private(path, flags)
            except FileNotFoundError as exc:
                if create:  # its folder is gone
                    raise storage_error("write", path, exc) from exc
                return -1, None
            except OSError as exc:
                raise storage_error("write", path, exc) from exc
            try:
                locked = lock(fd, path, wait)
                stat = os.fstat(fd) if locked else None
            except BaseException:
                os.close(fd)
                raise
            if stat is not None and stat.st_nlink:
                return fd, stat
            os.close(fd)
            if not locked:
                if wait:
                    raise StorageError(f"cannot lock {path}: another process has held it for {wait:g} s")
                return -1, None
            # Unlinked (folded or pruned by another process) while we waited: the live file is another one.


def lock(fd: int, path: Path, wait: float = WAIT_SECONDS) -> bool:
    """Take a journal's lock on ``fd``; False when another process held it for ``wait`` s."""
    deadline = time.monotonic() + wait
    try:
        while not lock_descriptor(fd, blocking=False):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
    except OSError as exc:
        raise storage_error("lock", path, exc) from exc
    return True
