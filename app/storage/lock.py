"""One process executes runs over a store: an exclusive lock on ``<storage>/server.lock`` naming its holder."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from app.errors import ConfigError, storage_error

LOCK_NAME = "server.lock"


class StoreLocked(ConfigError):
    """Another process (a server, or ``run.py run``) holds the store."""

    def __init__(self, folder: Path, pid: int | None):
        holder = f"pid {pid}" if pid else "pid unknown"
        super().__init__(
            f"{folder} is in use by another PyFlow process ({holder}, lock file {folder / LOCK_NAME}); "
            f"stop it first, or set WORKFLOW_STORAGE_PATH to another folder"
        )
        self.folder = folder
        self.pid = pid


class StoreLock:
    """Held by one process at a time; the file holds the holder's pid for the message of the next one.

    The kernel drops the lock when the holder dies (kill -9 included), so a
    stale file never blocks a restart. The descriptor is close-on-exec: a
    command a step runs must not keep the store locked after the server died.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).resolve()
        self.path = self.folder / LOCK_NAME
        self._fd = -1

    def acquire(self) -> None:
        """Take the lock; StoreLocked naming the holder's pid when another process has it."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error("create", self.folder, exc) from exc
        fd = self._open()
        try:
            locked = lock_descriptor(fd, blocking=False)
        except OSError as exc:
            os.close(fd)
            raise storage_error("lock", self.path, exc) from exc
        if not locked:
            pid = _read_pid(fd)
            os.close(fd)
            raise StoreLocked(self.folder, pid)
        self._fd = fd
        try:  # best effort: a read-only store can still be locked, only not labelled
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass

    def release(self) -> None:
        """Let the next process take the store."""
        if self._fd >= 0:
            try:
                unlock_descriptor(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1

    def _open(self) -> int:
        flags = os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            return os.open(self.path, flags | os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES):
                raise storage_error("open", self.path, exc) from exc
        try:  # flock works on a descriptor opened for reading: a read-only store is still one server's
            return os.open(self.path, flags | os.O_RDONLY)
        except OSError as exc:
            raise storage_error("open", self.path, exc) from exc

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None

