"""The JSON store's index of runs: a JSON line per creation and status change, kept in memory by each process."""

from __future__ import annotations

import bisect
import errno
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from actions.private_files import open_private
from app.errors import storage_error
from app.runs import FINISHED_RUN
from app.storage.json.files import Mutex, dumps, fsync_file, fsync_folder, parse_lines, write_atomic

logger = logging.getLogger(__name__)

#: What the index keeps of each run; the status fields change after creation.
INDEX_FIELDS = ("workflow", "status", "created_at", "started_at", "finished_at")
STATUS_FIELDS = ("status", "started_at", "finished_at")
_FINISHED = frozenset(status.value for status in FINISHED_RUN)
_MAX_NOTED = 10_000


class RunIndex:
    """``index.jsonl``: listing and recovery read it instead of the run files.

    Lines are appended (not fsync'd: the store's checkpoints and replays see
    to that) under ``mutex``; each process reads only what was appended since
    its last read, and ``rewrite`` compacts the file to a line per run.
    ``entries`` (id -> fields) and ``ids`` (sorted, so by creation time) are
    guarded by ``lock``.
    """

    def __init__(self, path: Path, mutex: Mutex, on_defer: Callable[[], None] = lambda: None):
        self.path = path
        self._mutex = mutex
        self.lock = threading.Lock()
        self.entries: dict[str, dict] = {}
        self.ids: list[str] = []
        self._inode = -1
        self._offset = 0
        self._lines = 0
        self._fd = -1  # kept open for appends, reopened once a rewrite replaced the file
        self._noted: dict[str, dict] = {}  # run id -> the index fields this process last wrote for it
        # Deferred lines: in ``entries`` at once, in the file with the next append or flush.
        self._pending: list[dict] = []
        self._pending_lock = threading.Lock()
        self._on_defer = on_defer  # called with each deferred line: whoever owns the index schedules a flush

    def needs_rewrite(self) -> bool:
        """Whether the file has more lines than runs (status lines, pruned runs). Call with ``lock`` held."""
        return self._lines > len(self.entries)

    def sync(self) -> None:
        """Write the deferred lines, then fsync the index and its folder."""
        self.flush()
        try:
            fsync_file(self.path)
        except FileNotFoundError:
            return
        fsync_folder(self.path.parent)

    def close(self) -> None:
        """Write the deferred lines and close the append descriptor."""
        self.flush()
        with self._mutex:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def note(self, run_id: str, changes: dict, key: str | None = None, *, defer: bool = False) -> None:
        """Append an index line when the run's status or finished_at differ from the index's (see ``append``)."""
        # What this process last wrote for the run, else what the index says: no read of the index per change.
        # (Another process changing the same run may make a line go missing; the run's own file decides.)
        entry = self._noted.get(run_id)
        if entry is None:
            with self.lock:
                self.refresh()
                entry = self.entries.get(run_id)
        if entry is None:
            if "workflow" not in changes:
                logger.warning("run %s is missing from %s", run_id, self.path)
                return
            line = {field: changes.get(field) for field in INDEX_FIELDS}
            if key is not None:
                line["key"] = key
        else:
            line = {field: changes[field] for field in STATUS_FIELDS if field in changes}
            if all(entry.get(field) == value for field, value in line.items()):
                return
        self.append({"id": run_id, **line}, defer=defer)

    def append(self, entry: dict, *, defer: bool = False) -> None:
        """Append a line to the index, not fsync'd: a checkpoint does, and a replay restores lost creations.

        ``defer``: this process lists it at once; the file gets it with the next append or ``flush``.
        """
        if defer:
            with self.lock:
                self._merge(dict(entry))
                with self._pending_lock:
                    self._pending.append(entry)
            self._on_defer()
        else:
            self._write(entry)
        # Remember what this process wrote while the run goes (bounded: forgotten when it finishes).
        if entry.get("status") in _FINISHED:
            self._noted.pop(entry["id"], None)
        else:
            if len(self._noted) >= _MAX_NOTED:
                self._noted.clear()
            self._noted[entry["id"]] = {**self._noted.get(entry["id"], {}), **entry}

    def withdraw(self, run_id: str) -> None:
        """Forget a run whose creation failed: its line is dropped if still deferred, and listed no more here."""
        with self.lock:
            with self._pending_lock:
                self._pending = [line for line in self._pending if line["id"] != run_id]
            if self.entries.pop(run_id, None) is not None:
                self.ids.remove(run_id)
        self._noted.pop(run_id, None)
        # A line the flush timer wrote already stays in the file: listing skips a run that has no record.

    def flush(self) -> None:
        """Write the deferred lines."""
        if self._pending:
            self._write(None)

    def _write(self, entry: dict | None) -> None:
        """Append the deferred lines and ``entry`` with one write."""
        path = self.path
        with self._mutex:
            with self._pending_lock:
                pending, self._pending = self._pending, []
            data = b"".join(dumps(line) + b"\n" for line in [*pending, *([entry] if entry else [])])
            if not data:
                return
            try:
                fd = self._fd
                if fd < 0 or not os.fstat(fd).st_nlink:  # first append, or the index was rewritten since
                    if fd >= 0:
                        os.close(fd)
                    self._fd = -1
                    fd = open_private(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC)
                    self._fd = fd
                    size = os.fstat(fd).st_size
                    # A line torn by a crash must not swallow ours. Live writers write whole lines, so once is enough.
                    if size and os.pread(fd, 1, size - 1) != b"\n":
                        data = b"\n" + data
                if os.write(fd, data) < len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as exc:
                if self._fd >= 0:  # reopened by the next append, which then starts on a new line
                    os.close(self._fd)
                    self._fd = -1
                with self._pending_lock:
                    self._pending[:0] = pending  # written by the next append, or lost with the process
                raise storage_error("write", path, exc) from exc

    def refresh(self) -> None:
        """Read what was appended to the index since the last call. Call with ``lock`` held."""
        if self._read() and self._lines > 3 * len(self.entries) + 100:
            self.rewrite(drop=set())

    def _read(self) -> bool:
        """Read the index's new bytes, or all of it when it was replaced; True when it was read from the start."""
        path = self.path
        try:
            with open(path, "rb") as file:
                stat = os.fstat(file.fileno())
                reloaded = stat.st_ino != self._inode or stat.st_size < self._offset
                if reloaded:
                    # Another process compacted it (or this is the first read): start over.
                    self.entries, self.ids = {}, []
                    self._inode, self._offset, self._lines = stat.st_ino, 0, 0
                if stat.st_size == self._offset:
                    return reloaded
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise storage_error("read", path, exc) from exc
        lines, end = parse_lines(data, path)
        self._offset += end
        self._lines += len(lines)
        for line in lines:
            self._merge(line)
        # Our deferred lines stay on top of the older lines just read (a line being written while we read
        # may show its older state until the next read).
        with self._pending_lock:
            pending = list(self._pending)
        for line in pending:
            self._merge(dict(line))
        return reloaded

    def _merge(self, line: dict) -> None:
        run_id = line.pop("id", None)
        for field in ("workflow", "status"):
            if isinstance(line.get(field), str):
                line[field] = sys.intern(line[field])  # 100,000 entries share a few names
        entry = self.entries.get(run_id)
        if entry is not None:
            entry.update(line)
        elif isinstance(run_id, str) and "workflow" in line:  # else a status line of a run pruned since
            self.entries[run_id] = line
            if not self.ids or run_id > self.ids[-1]:
                self.ids.append(run_id)
            else:
                bisect.insort(self.ids, run_id)

    def rewrite(self, drop: set[str]) -> None:
        """Replace the index with one line per run, leaving out ``drop``. Call with ``lock`` held."""
        with self._mutex:
            self._read()  # no one appends while we hold the mutex, so this is all of it
            for run_id in drop:
                self.entries.pop(run_id, None)
            if drop:
                self.ids = [run_id for run_id in self.ids if run_id in self.entries]
            data = b"".join(dumps({"id": run_id, **self.entries[run_id]}) + b"\n" for run_id in self.ids)
            write_atomic(self.path, data)
            if self._fd >= 0:  # appends go to the new file; the old one's space is freed now
                os.close(self._fd)
                self._fd = -1
            try:
                self._inode = os.stat(self.path).st_ino
            except OSError as exc:
                raise storage_error("read", self.path, exc) from exc
            self._offset, self._lines = len(data), len(self.ids)
