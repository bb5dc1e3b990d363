"""A write-ahead log with group commit: the durable changes of many threads share one fsync."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from filelock import lock_descriptor

from actions.private_files import make_private_dir, open_private
from app.errors import storage_error
from app.storage.json.files import fsync_folder, parse_lines

logger = logging.getLogger(__name__)

# fdatasync skips the timestamps, which a replay does not need; macOS has only fsync.
_datasync = getattr(os, "fdatasync", os.fsync)
_OPEN = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


@dataclass
class Segment:
    """One log file and the keys (run ids) whose changes it holds."""

    path: Path
    fd: int
    size: int = 0
    keys: set[str] = field(default_factory=set)


class WriteAheadLog:
    """This process's redo log of durable changes, in a file of its own under ``folder``.

    The store writes a change to its run's journal without an fsync, then
    here: one fdatasync of this file makes every change written before it
    durable, so threads that commit while an fsync runs share the next one
    (group commit) instead of each fsyncing a journal of its own. A
    checkpoint fsyncs the journals a segment names and deletes the segment.
    The file is locked while its process lives: a log whose lock is free
    belongs to a process that died, and the next store to open replays it.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        lock = threading.Lock()
        self._changed = threading.Condition(lock)  # an fsync finished
        self._quiet = threading.Condition(lock)  # no write or fsync under way (what a rotation waits for)
        self._segment: Segment | None = None
        self._written = 0  # bytes written since this object was made, across segments
        self._synced = 0  # of which this many are known durable
        self._syncing = False
        self._writing = 0  # writes under way outside the lock, into the current segment

    @property
    def size(self) -> int:
        """Bytes in the current segment."""
        segment = self._segment
        return segment.size if segment else 0

    def write(self, data: bytes, key: str, then: Callable[[], None] | None = None) -> int:
        """Append ``data`` (whole lines) for ``key``; returns the ticket to pass to ``commit``.

        ``then`` runs once the data is written and before a rotation can take its segment: what it
        keeps in memory for a checkpoint to write (an index line) cannot miss that checkpoint.
        """
        with self._changed:
            segment = self._segment or self._open()
            segment.keys.add(key)
            self._writing += 1
        # The write outside the lock (one O_APPEND write is whole): threads holding a lock across a
        # system call queue up behind each other, each handing the GIL back and forth.
        written = 0
        try:
            try:
                written = os.write(segment.fd, data)
                if written < len(data):  # the disk is full: end the torn line, so the next one stays whole
                    with suppress(OSError):
                        os.write(segment.fd, b"\n")
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as exc:
                raise storage_error("write", segment.path, exc) from exc
            if then is not None:
                then()
        finally:
            with self._changed:
                self._writing -= 1
                segment.size += written
                self._written += written
                ticket = self._written
                if not self._writing:
                    self._quiet.notify_all()
        return ticket

    def commit(self, ticket: int) -> None:
        """Return once everything written up to ``ticket`` is on disk."""
        with self._changed:
            while self._synced < ticket:
                if self._syncing:
                    self._changed.wait()
                    continue
                # Whoever finds no fsync under way runs one for everybody written so far.
                segment, covered = self._segment, self._written
                self._syncing = True
                self._changed.release()
                try:
                    _datasync(segment.fd)
                except OSError as exc:
                    raise storage_error("sync", segment.path, exc) from exc
                finally:
                    self._changed.acquire()
                    self._syncing = False
                    self._changed.notify_all()
                    self._quiet.notify_all()
                self._synced = max(self._synced, covered)

    def rotate(self) -> Segment | None:
        """Make the current segment durable and start a new one on the next write; the old one, if any."""
        with self._changed:
            while self._syncing or self._writing:
                self._quiet.wait()
            segment, self._segment = self._segment, None
            if segment is None:
                return None
            if self._synced < self._written:
                try:
                    _datasync(segment.fd)
                except OSError as exc:
                    self._segment = segment
                    raise storage_error("sync", segment.path, exc) from exc
                self._synced = self._written
                self._changed.notify_all()
            return segment

    @staticmethod
    def drop(segment: Segment) -> None:
        """Delete a segment whose changes are durable elsewhere."""
        try:
            segment.path.unlink(missing_ok=True)
        except OSError as exc:
            # Harmless: a replay of a change already in its journal finds nothing to add.
            logger.warning("cannot remove %s: %s", segment.path, exc)
        finally:
            os.close(segment.fd)  # and with it the lock

    def _open(self) -> Segment:
        try:
            make_private_dir(self.folder)
            # Named by creation time, so replaying a dead process's logs in name order replays them in order.
            path = self.folder / f"{time.time_ns():020d}-{os.getpid()}.wal"
            fd = open_private(path, _OPEN)
        except OSError as exc:
            raise storage_error("write", self.folder, exc) from exc
        try:
            lock_descriptor(fd)  # uncontended: the file is new
            fsync_folder(self.folder)  # a segment a power loss forgot would take its commits with it
        except BaseException:
            os.close(fd)
            with suppress(OSError):
                path.unlink()
            raise
        self._segment = Segment(path, fd)
        return self._segment


def replay_orphans(folder: Path, replay: Callable[[list[dict]], None]) -> int:
    """Pass the lines of every log under ``folder`` whose process is gone to ``replay``, then delete it.

    Returns how many logs were replayed. A log whose lock is held belongs to a
    live process (this one's included) and is left alone.
    """
    try:
        paths = sorted(folder.glob("*.wal"))
    except OSError as exc:
        raise storage_error("read", folder, exc) from exc
    replayed = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # replayed by another process meanwhile
        except OSError as exc:
            raise storage_error("read", path, exc) from exc
        try:
            if not lock_descriptor(fd, blocking=False) or os.fstat(fd).st_nlink == 0:
                continue  # alive, or replayed and deleted between our listing and our lock
            lines, _ = parse_lines(path.read_bytes(), path)  # a torn last line was never committed
            replay(lines)
            path.unlink()
            replayed += 1
        except OSError as exc:
            raise storage_error("replay", path, exc) from exc
        finally:
            os.close(fd)
    if replayed:
        fsync_folder(folder)
    return replayed
