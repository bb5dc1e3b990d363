"""Durable file primitives of the JSON store: atomic replaces, shared directory fsyncs, locks, JSON lines."""

from __future__ import annotations

import json
import logging
import os
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

from filelock import lock_descriptor, unlock_descriptor

from actions import atomic
from actions.private_files import open_private
from app.errors import StorageError, storage_error

logger = logging.getLogger(__name__)


# One encoder for every line (it keeps no state between calls): json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return _ENCODER.encode(value).encode()


class DirectorySync:
    """fsync of a directory, shared: threads that ask while one is under way ride on the next one.

    A new or renamed file is durable only once its directory entry is. Many
    triggers saving their state at once all replace files in triggers/ (and
    compaction in runs/), so one fsync can serve them all: an fsync that
    starts after a thread asked covers its entry.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._asked: dict[Path, int] = {}
        self._done: dict[Path, int] = {}
        self._busy: set[Path] = set()

    def sync(self, folder: Path) -> None:
        """Return once an fsync of ``folder`` that started after this call has finished."""
        with self._changed:
            ticket = self._asked[folder] = self._asked.get(folder, 0) + 1
            while self._done.get(folder, 0) < ticket:
                if folder in self._busy:
                    self._changed.wait()
                    continue
                self._busy.add(folder)
                covered = self._asked[folder]
                self._changed.release()
                try:
                    fsync_folder(folder)
                finally:
                    self._changed.acquire()
                    self._busy.discard(folder)
                    self._changed.notify_all()
                self._done[folder] = max(self._done.get(folder, 0), covered)


def fsync_file(path: Path) -> None:
    """fsync a file by name (FileNotFoundError when it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise storage_error("sync", path, exc) from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise storage_error("sync", path, exc) from exc
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    """fsync a directory, so the names created or renamed in it are durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise storage_error("sync", folder, exc) from exc


# One per process: the directories are the process's, whichever store writes into them.
_directories = DirectorySync()
fsync_dir = _directories.sync


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` durably (its folder fsync'd too); the owner's only: records hold inputs."""
    try:
        atomic.write_atomic(path, data)  # 0600 whatever the umask
    except OSError as exc:
        raise storage_error("write", path, exc) from exc
    fsync_dir(path.parent)


def write_all(fd: int, data: bytes, path: Path, size: int) -> None:
    """Append ``data`` to ``fd`` (of ``size`` bytes) in one call; on failure cut the file back to ``size``."""
    try:
        written = os.write(fd, data)
        # A short write means the disk filled up; the next call reports why.
        while written < len(data):
            written += os.write(fd, data[written:])
    except OSError as exc:
        with suppress(OSError):
            os.ftruncate(fd, size)
        raise storage_error("write", path, exc) from exc


def read_file(path: Path) -> bytes:
    """The bytes of a file, with four system calls where ``Path.read_bytes`` makes seven."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)  # one byte more than the size: a short read is the end
        if len(data) <= size:
            return data
        chunks = [data]  # it grew since the fstat
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(read_file(path))
    except FileNotFoundError:
        return default
    except OSError as exc:
        raise storage_error("read", path, exc) from exc
    except ValueError as exc:
        raise StorageError(f"cannot read {path}: invalid JSON ({exc})") from exc


def parse_lines(data: bytes, path: Path) -> tuple[list[dict], int]:
    """The valid JSON lines of ``data`` and the length of its newline-terminated part."""
    # A line without its newline is an append in flight or torn by a crash: it does not count yet.
    end = data.rfind(b"\n") + 1
    if not end:
        return [], 0
    with suppress(ValueError):
        # One parse of all lines as an array is several times faster than a parse per line.
        entries = json.loads(b"[" + data[: end - 1].replace(b"\n", b",") + b"]")
        if all(isinstance(entry, dict) for entry in entries):
            return entries, end
    entries = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        try:
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
                continue
        except ValueError:
            pass
        logger.warning("skipping invalid line %d of %s", number, path)
    return entries, end


class Mutex:
    """Held by one thread of one process at a time: a threading.Lock, then filelock's lock on a lock file.

    The lock file stays open (close-on-exec, so commands a step runs do not
    inherit it): opening it for every hold cost more than the lock itself.
    """

    def __init__(self, path: Path):
        self.path = path
        self._thread_lock = threading.Lock()  # threads wait here instead of polling the file lock
        self._fd = -1

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            if self._fd < 0:
                self._fd = open_private(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
            lock_descriptor(self._fd, poll_interval=0.001)
        except BaseException as exc:
            self._thread_lock.release()
            if isinstance(exc, OSError):
                raise storage_error("lock", self.path, exc) from exc
            raise

    def __exit__(self, *exc_info: object) -> None:
        try:
            unlock_descriptor(self._fd)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        """Close the lock file."""
        with self._thread_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
