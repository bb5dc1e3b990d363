"""The JSON store's event ids and wake index: one small file per event id, one per parked step.

Creating a file with O_EXCL and removing one are atomic across processes, so of two callers
recording one event id, or unparking one step, exactly one succeeds. The wake index's changes are also
taken one at a time in the process (the only one: the store's lock): replacing an entry depends on the one held.
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
    """parked/<run id>.<step's digest>.json, each a step's entry; read again only when the folder changed (its mtime).

    A file is replaced whole (written aside, then renamed) and taken by one unlink: a kill -9 leaves the
    entry or not, never half of one.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        make_private_dir(folder)
        self._lock = threading.Lock()  # a change that depends on the entry held (put, take)
        self._cache_lock = threading.Lock()  # ``_entries``, read again after a change
        self._seen: tuple[int, int] | None = None  # the folder's (mtime_ns, inode) when ``_entries`` was read
        self._entries: list[dict] = []
        self._upgrade()

    def _path(self, run_id: str, step: str) -> Path:
        return self.folder / f"{run_id}.{hashlib.sha256(step.encode()).hexdigest()[:32]}.json"

    def _upgrade(self) -> None:
        """Name the entries of a store made when one run had one entry (parked/<run id>.json) by their step."""
        for path in self.folder.glob("*.json"):
            if "." in path.stem:
                continue
            entry = read_json(path, None)
            if isinstance(entry, dict) and isinstance(entry.get("step"), str) and entry["step"]:
                write_atomic(self._path(path.stem, entry["step"]), dumps({"outcome": None, **entry}))
            try:
                path.unlink()
            except OSError as exc:
                raise storage_error("remove", path, exc) from exc
            fsync_dir(self.folder)

    def put(self, entry: dict) -> None:
        """Write ``entry``, unless the step's entry holds an outcome and ``entry`` does not."""
        path = self._path(entry["run_id"], entry["step"])
        with self._lock:
            if entry.get("outcome") is None:
                held = read_json(path, None)
                if isinstance(held, dict) and held.get("outcome") is not None:
                    return
            write_atomic(path, dumps(entry))

    def take(self, run_id: str, step: str) -> dict | None:
        """The entry for the one caller whose unlink removed it; None for everyone else."""
        path = self._path(run_id, step)
        with self._lock:
            entry = read_json(path, None)
            try:
                os.unlink(path)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise storage_error("remove", path, exc) from exc
        fsync_dir(self.folder)
        if isinstance(entry, dict):
            return entry
        return {"run_id": run_id, "step": step, "due": None, "event": None, "key": None, "outcome": None}

    def take_run(self, run_id: str) -> list[dict]:
        """Take every entry of the run."""
        taken = []
        for entry in self.of_run(run_id):
            found = self.take(run_id, entry["step"])
            if found is not None:
                taken.append(found)
        return taken

    def of_run(self, run_id: str) -> list[dict]:
        """The run's entries, by step name."""
        found = []
        for path in self.folder.glob(f"{run_id}.*.json"):
            entry = read_json(path, None)
            if entry is not None and not isinstance(entry, dict):
                raise StorageError(f"cannot read {path}: not a wake index entry")
            if entry is not None and entry.get("run_id") == run_id:
                found.append(entry)
        return sorted(found, key=lambda entry: str(entry.get("step")))

    def entries(self) -> list[dict]:
        """Every entry; the waker asks each second, so the files are read again only after a change."""
        try:
            info = os.stat(self.folder)
        except OSError as exc:
            raise storage_error("read", self.folder, exc) from exc
        stamp = (info.st_mtime_ns, info.st_ino)
        with self._cache_lock:
            # A change within the same clock tick as the last read may leave the mtime unchanged: read again
            # while the folder is that young.
            if stamp == self._seen and time.time_ns() - info.st_mtime_ns > 2_000_000_000:
                return list(self._entries)
            entries: list[dict] = []
            try:
                with os.scandir(self.folder) as found:
                    names = [entry.name for entry in found if entry.name.endswith(".json")]
            except OSError as exc:
                raise storage_error("read", self.folder, exc) from exc
            for name in names:
                entry = read_json(self.folder / name, None)
                if isinstance(entry, dict) and entry.get("run_id") and entry.get("step"):
                    entries.append(entry)
            self._seen, self._entries = stamp, entries
            return list(entries)

    def drop(self, run_ids: set[str]) -> None:
        """Forget the entries of pruned runs."""
        for run_id in run_ids:
            for path in self.folder.glob(f"{run_id}.*.json"):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise storage_error("remove", path, exc) from exc
