"""The JSON store's event ids and wake index: one small file per event id, one per parked run.

Creating a file with O_EXCL and removing one are atomic across processes, so of two callers
recording one event id, or unparking one run, exactly one succeeds, without a lock.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from actions.private_files import make_private_dir, open_private
from app.errors import StorageError, storage_error
from app.storage.json.files import dumps, fsync_dir, read_json, write_atomic

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


class EventIds:
    """events/<sha256 of the id>: the ids seen, their file's mtime saying when (for pruning)."""

    def __init__(self, folder: Path):
        self.folder = folder
        make_private_dir(folder)

    def record(self, event_id: str, event_type: str) -> bool:
        """True when the id is new (its file created now), False when recorded before."""
        path = self.folder / hashlib.sha256(event_id.encode()).hexdigest()
        try:
            fd = open_private(path, _CREATE)
        except FileExistsError:
            return False
        except OSError as exc:
            raise storage_error("create", path, exc) from exc
        try:
            os.write(fd, dumps({"id": event_id, "type": event_type}))
            os.fsync(fd)
        except OSError as exc:
            raise storage_error("write", path, exc) from exc
        finally:
            os.close(fd)
        fsync_dir(self.folder)
        return True

    def prune(self, older_than: float) -> int:
        """Remove the ids recorded before epoch ``older_than``; how many."""
        removed = 0
        try:
            with os.scandir(self.folder) as entries:
                old = [entry.path for entry in entries if entry.stat().st_mtime < older_than]
        except OSError as exc:
            raise storage_error("read", self.folder, exc) from exc
        for path in old:
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise storage_error("remove", Path(path), exc) from exc
        return removed


class WakeIndex:
    """parked/<run id>.json, each the run's entry; read again only when the folder changed (its mtime)."""

    def __init__(self, folder: Path):
        self.folder = folder
        make_private_dir(folder)
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None  # the folder's (mtime_ns, inode) when ``_entries`` was read
        self._entries: dict[str, dict] = {}

    def _path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.json"

    def put(self, entry: dict) -> None:
        write_atomic(self._path(entry["run_id"]), dumps(entry))

    def take(self, run_id: str) -> dict | None:
        """The entry for the one caller whose unlink removed it; None for everyone else."""
        path = self._path(run_id)
        entry = read_json(path, None)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error("remove", path, exc) from exc
        fsync_dir(self.folder)
        return entry if isinstance(entry, dict) else {"run_id": run_id, "step": None, "due": None,
                                                      "event": None, "key": None}

    def get(self, run_id: str) -> dict | None:
        entry = read_json(self._path(run_id), None)
        if entry is not None and not isinstance(entry, dict):
            raise StorageError(f"cannot read {self._path(run_id)}: not a wake index entry")
        return entry

    def entries(self) -> list[dict]:
        """Every entry; the waker asks each second, so the files are read again only after a change."""
        try:
            info = os.stat(self.folder)
        except OSError as exc:
            raise storage_error("read", self.folder, exc) from exc
        stamp = (info.st_mtime_ns, info.st_ino)
        with self._lock:
            # A change within the same clock tick as the last read may leave the mtime unchanged: read again
            # while the folder is that young.
            if stamp == self._seen and time.time_ns() - info.st_mtime_ns > 2_000_000_000:
                return list(self._entries.values())
            entries: dict[str, dict] = {}
            try:
                with os.scandir(self.folder) as found:
                    names = [entry.name for entry in found if entry.name.endswith(".json")]
            except OSError as exc:
                raise storage_error("read", self.folder, exc) from exc
            for name in names:
                entry = read_json(self.folder / name, None)
                if isinstance(entry, dict) and entry.get("run_id"):
                    entries[entry["run_id"]] = entry
            self._seen, self._entries = stamp, entries
            return list(entries.values())

    def drop(self, run_ids: set[str]) -> None:
        """Forget the entries of pruned runs."""
        for run_id in run_ids:
            try:
                self._path(run_id).unlink(missing_ok=True)
            except OSError as exc:
                raise storage_error("remove", self._path(run_id), exc) from exc
