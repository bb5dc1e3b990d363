"""The JSON store's audit log: ``audit.jsonl``, one entry per line, appended durably under a lock.

An append holds ``locks/audit.lock`` (threads, then processes), reads the last whole line for the
previous id and hash, cuts off a line torn by a crash, appends the new line in one ``write`` and
fsyncs the file (and the folder when it was new), so an entry that was answered survives a power loss.
Listing reads the file backwards from its end, a chunk at a time: the newest page costs the same
however long the log is. Nothing ever rewrites or removes a line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from actions.private_files import open_private
from app.errors import StorageError, storage_error
from app.runs import utcnow
from app.storage.audit_chain import GENESIS, check_entry, check_page, matches, seal
from app.storage.json.files import Mutex, dumps, fsync_dir, write_all

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16


def _lines_backwards(fd: int, size: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of each whole line of the first ``size`` bytes, last first; a torn last line is skipped."""
    position, tail, torn_skipped = size, b"", False
    while position > 0:
        step = min(_CHUNK, position)
        position -= step
        parts = (os.pread(fd, step, position) + tail).split(b"\n")
        tail = parts[0]
        whole = parts[1:]
        if whole and not torn_skipped:
            whole, torn_skipped = whole[:-1], True  # after the last newline: empty, or an append torn by a crash
        offset = position + len(tail) + 1
        starts = []
        for line in whole:
            starts.append(offset)
            offset += len(line) + 1
        yield from reversed(list(zip(starts, whole, strict=True)))
    if torn_skipped:
        yield 0, tail


class AuditFile:
    """An append-only, hash-chained log in one JSON-lines file; thread- and process-safe."""

    def __init__(self, path: Path, mutex: Mutex):
        self.path = path
        self._mutex = mutex

    def _open(self, flags: int) -> int | None:
        try:
            return open_private(self.path, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error("open", self.path, exc) from exc

    def append(self, actor: str, action: str, target: str, details: dict | None) -> dict:
        """Append an entry after the last one; the entry."""
        check_entry(actor, action, target)
        with self._mutex:
            existed = self.path.exists()
            try:
                fd = open_private(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC)
            except OSError as exc:
                raise storage_error("open", self.path, exc) from exc
            try:
                size = os.fstat(fd).st_size
                last, end = self._last(fd, size)
                entry = seal(last["id"] + 1 if last else 1, utcnow(), actor, action, target, details,
                             last["hash"] if last else GENESIS)
                if end < size:
                    os.ftruncate(fd, end)  # a line torn by a crash must not swallow the new one
                write_all(fd, dumps(entry) + b"\n", self.path, end)
                os.fsync(fd)
            except OSError as exc:
                raise storage_error("write", self.path, exc) from exc
            finally:
                os.close(fd)
            if not existed:
                fsync_dir(self.path.parent)
        return entry

    def _last(self, fd: int, size: int) -> tuple[dict | None, int]:
        """The last whole entry (None when there is none) and where the whole lines end."""
        for offset, line in _lines_backwards(fd, size):
            end = offset + len(line) + 1
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not (isinstance(entry, dict) and isinstance(entry.get("id"), int)
                    and isinstance(entry.get("hash"), str)):
                # Appending after it would hide it: say what to do instead of writing on.
                raise StorageError(f"cannot append to {self.path}: its last line is not an audit entry; "
                                   "run: python run.py audit verify")
            return entry, end
        return None, 0

    def entries_backwards(self) -> Iterator[dict]:
        """Each readable entry, newest first (an unreadable line is logged and skipped)."""
        fd = self._open(os.O_RDONLY)
        if fd is None:
            return
        try:
            for offset, line in _lines_backwards(fd, os.fstat(fd).st_size):
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = None
                if isinstance(entry, dict) and isinstance(entry.get("id"), int):
                    yield entry
                else:
                    logger.warning("skipping an unreadable audit line at byte %d of %s", offset, self.path)
        finally:
            os.close(fd)

    def page(self, filters: dict[str, str | None], limit: int, before: int | None) -> tuple[list[dict], int | None]:
        """Entries newest first below id ``before`` matching ``filters``, and the next page's cursor."""
        check_page(limit, before)
        found: list[dict] = []
        for entry in self.entries_backwards():
            if (before is not None and entry["id"] >= before) or not matches(entry, filters):
                continue
            if len(found) == limit:
                return found, found[-1]["id"]
            found.append(entry)
        return found, None

    def entries(self) -> Iterator[dict]:
        """Every whole line as stored, oldest first; an unreadable one as ``{"unreadable": "line N of <path>"}``."""
        fd = self._open(os.O_RDONLY)
        if fd is None:
            return
        with os.fdopen(fd, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.endswith(b"\n"):
                    return  # an append torn by a crash: never answered, so not part of the log
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = None
                yield entry if isinstance(entry, dict) else {"unreadable": f"line {number} of {self.path}"}
