"""A trigger that fires once for each new file dropped into a folder."""

from __future__ import annotations

import filecmp
import fnmatch
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from stat import S_ISREG
from typing import Any

from actions.base import SettingError
from actions.paths import PathError, files_root, inside
from triggers.base import BaseTrigger, TriggerError
from triggers.interval import _iso, parse_seconds

logger = logging.getLogger(__name__)

# Bounds one poll's work; the rest of a large drop comes with the next polls.
MAX_FILES_PER_POLL = 100


class FileTrigger(BaseTrigger):
    """One event per file matching ``pattern`` in ``folder``, once it stopped changing.

    The folder is polled every ``poll_interval`` seconds. A file fires when its
    size and modification time have stayed the same for ``settle_seconds``, so
    a file still being written does not. Once its run is stored, the file is
    moved into ``processed_folder`` (default ``<folder>/processed``; a name
    already taken there gets a ``-1``, ``-2``... suffix), so it is not seen
    again. A relative folder is taken under WORKFLOW_FILES_ROOT; in a
    definition both folders must be inside it, since the trigger removes what
    it finds (a workflow class written in Python may name any). Like the shell,
    ``*`` does not match names that start with a dot, which writers often use
    for partial files.

    The event's ``path`` is where the file is while its run works on it: the
    file is linked into the processed folder before the run is created (copied
    when that folder is on another file system: under a hidden name until the copy
    is whole, and a poll repeated before the run was stored finds that copy
    again rather than making a ``-1``), and the original is removed
    once the run is stored, so an action never finds it gone.

    ``state``: ``pending`` (file name -> size, mtime_ns and since when it has
    not changed), so settling survives restarts, and ``unmoved`` (files whose
    original could not be removed -> their event key), so they do not fire twice.
    """

    type = "file"
    run_source = "file"
    # Set by the runtime for a workflow class written in Python (trusted code, DESIGN section 10): its
    # folders may lie outside WORKFLOW_FILES_ROOT. A definition's trigger never has it.
    _trusted_code = False

    def __init__(
        self,
        name: str,
        folder: str | os.PathLike,
        pattern: str = "*",
        settle_seconds: float | str = 2.0,
        processed_folder: str | os.PathLike | None = None,
        poll_interval: float | str = 1.0,
        clock: Callable[[], float] | None = None,
    ):
        super().__init__(name)
        where = f"trigger {name!r}"
        if not isinstance(folder, (str, os.PathLike)) or not str(folder):
            raise SettingError("folder", f"{where}: folder must be a path, got {folder!r}")
        if not isinstance(pattern, str) or not pattern or "/" in pattern:
            raise SettingError("pattern", f"{where}: pattern must be a file name pattern such as '*.pdf', "
                                          f"got {pattern!r}")
        self.folder = str(folder)
        self.pattern = pattern
        self.settle_seconds = settle_seconds
        self.processed_folder = None if processed_folder is None else str(processed_folder)
        self.poll_interval = poll_interval
        # Tests pass a fake clock (epoch seconds) to settle files without sleeping.
        self._clock = clock or time.time
        # Set by setup(), which confines both folders to WORKFLOW_FILES_ROOT: no poll before that.
        self._checked = False
        if not any(isinstance(value, str) and "{" in value for value in (settle_seconds, poll_interval)):
            self._check_numbers()

    def _check_numbers(self) -> None:
        where = f"trigger {self.name!r}"
        raw = self.settle_seconds
        try:
            settle = float(raw)
        except (TypeError, ValueError):
            raise SettingError("settle_seconds", f"{where}: settle_seconds must be a number of seconds, "
                                                 f"got {raw!r}") from None
        if not settle >= 0:
            raise SettingError("settle_seconds", f"{where}: settle_seconds must be 0 or more, got {raw!r}")
        self.settle_seconds = settle
        self.poll_interval = parse_seconds(self.poll_interval, f"{where}: poll_interval", "poll_interval")

    @property
    def default_check_interval(self) -> float:  # type: ignore[override]
        return float(self.poll_interval)

    def setup(self, settings: Mapping[str, Any]) -> None:
        """Check the numbers; resolve both folders inside WORKFLOW_FILES_ROOT (ValueError naming the field)."""
        self._check_numbers()
        where = f"trigger {self.name!r}"
        # The trigger deletes what it finds and links it elsewhere: both folders must be the files root's.
        root = files_root(settings)
        confine = not self._trusted_code
        try:
            folder = inside(root, self.folder, "folder", confine=confine)
            processed = inside(root, self.processed_folder or folder / "processed", "processed_folder",
                               confine=confine)
        except PathError as error:
            raise PathError(f"{where}: {error}") from None  # a PathError: the definition is refused, not stored
        if processed == folder:
            raise ValueError(f"{where}: processed_folder must differ from folder, got {self.processed_folder!r}")
        self.folder, self.processed_folder = str(folder), str(processed)
        self._checked = True

    @property
    def processed(self) -> Path:
        """Where handled files go."""
        return Path(self.processed_folder) if self.processed_folder else Path(self.folder) / "processed"

    # -- polling ------------------------------------------------------------------------------------
    def _listing(self) -> dict[str, os.stat_result]:
        """Regular files matching the pattern, by name; TriggerError naming the folder when it is missing."""
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            raise TriggerError(f"folder {self.folder} does not exist; create it or fix the trigger's folder") from None
        except NotADirectoryError:
            raise TriggerError(f"folder {self.folder} is not a folder") from None
        except OSError as error:
            raise TriggerError(f"cannot list folder {self.folder}: {error.strerror or error}") from None
        found = {}
        for entry in entries:
            if entry.name.startswith(".") or not fnmatch.fnmatch(entry.name, self.pattern):
                continue
            try:
                if entry.is_file(follow_symlinks=False):
                    found[entry.name] = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed between listing and stat
        return found

    def is_triggered(self) -> bool:
        """True when a file has settled (changes the pending state, like a poll)."""
        return bool(self._settled())

    def _settled(self) -> list[tuple[str, os.stat_result]]:
        """Files whose size and mtime held for settle_seconds; notes new and changed files as pending."""
        if not self._checked:
            raise RuntimeError(f"trigger {self.name!r}: setup() must be called before polling")
        now = float(self._clock())
        files = self._listing()
        pending: dict = self.state.setdefault("pending", {})
        unmoved: dict = self.state.setdefault("unmoved", {})
        for name in [name for name in pending if name not in files]:
            del pending[name]  # gone before it settled (or moved by hand)
        for name in list(unmoved):
            stat = files.get(name)
            if stat is None or unmoved[name] != self._key(Path(self.folder) / name, stat.st_size,
                                                          _iso(stat.st_mtime_ns / 1e9)):
                del unmoved[name]  # gone, or a new file under that name
        settled = []
        for name, stat in files.items():
            if name in unmoved:
                continue
            seen = pending.get(name)
            if seen is None or (seen["size"], seen["mtime_ns"]) != (stat.st_size, stat.st_mtime_ns):
                pending[name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "since": now}
                seen = pending[name]
            if now - seen["since"] >= float(self.settle_seconds):
                settled.append((name, stat))
        settled.sort(key=lambda item: (item[1].st_mtime_ns, item[0]))  # oldest first
        return settled[:MAX_FILES_PER_POLL]

    def poll(self) -> list[dict]:
        events = []
        for name, stat in self._settled():
            source = Path(self.folder) / name
            path = self._place(source)
            if path is None:
                self.state["pending"].pop(name, None)  # removed meanwhile
                continue
            events.append({
                "path": str(path),
                "filename": name,
                "size": stat.st_size,
                "modified_at": _iso(stat.st_mtime_ns / 1e9),
                "source_path": str(source),
            })
        return events

    @staticmethod
    def _key(source: str | Path, size: int, modified_at: str) -> str:
        return f"file:{source}:{size}:{modified_at}"

    def event_key(self, event: dict) -> str:
        """Path, size and mtime: the same file polled again after a crash starts no second run."""
        return self._key(event["source_path"], event["size"], event["modified_at"])

    # -- moving handled files -----------------------------------------------------------------------------
    def _place(self, source: Path) -> Path | None:
        """Make ``source`` also exist in the processed folder and return that path; None when it is gone."""
        folder = self.processed
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TriggerError(f"cannot create processed folder {folder}: {error.strerror or error}") from None
        stem, suffix = os.path.splitext(source.name)
        target, copies = folder / source.name, 0
        copy: Path | None = None  # a whole copy of the file in the processed folder, once linking it failed
        try:
            while True:
                try:
                    if copy is None:
                        os.link(source, target)  # a second name for the same file: instant, nothing copied
                    else:
                        _name(copy, target)
                    return target
                except FileExistsError:
                    if _same_file(source, target):
                        return target  # placed by a poll whose run was not stored; this is that poll again
                except FileNotFoundError:
                    return None  # gone meanwhile (or its copy): the next poll looks again
                except OSError:
                    if copy is not None:
                        raise
                    # Another file system, or one without hard links: copy it under a hidden name first, so a
                    # copy cut short (a full disk) never takes the name, then link the copy where it belongs.
                    copy = _copy_into(source, folder)
                    continue
                copies += 1
                target = folder / f"{stem}-{copies}{suffix}"
        except FileNotFoundError:
            return None
        except OSError as error:
            raise TriggerError(f"cannot place {source} in {folder}: {error.strerror or error}") from None
        finally:
            if copy is not None:
                with suppress(OSError):
                    copy.unlink()

    @staticmethod
    def _still_placed(source: Path, event: dict) -> bool:
        """True when ``source`` is still the file the event placed (False when it is gone or was replaced)."""
        try:
            stat = source.stat(follow_symlinks=False)
        except OSError:
            return False  # gone: nothing to remove
        with suppress(OSError):  # the placed file may be gone too: the run moved it on already
            if os.path.samefile(source, event["path"]):
                return True  # linked: the very same file
        # Copied (another file system), or moved on: the same size and modification time as when it was placed.
        return (stat.st_size, _iso(stat.st_mtime_ns / 1e9)) == (event["size"], event["modified_at"])

    def acknowledge(self, event: dict, run_id: str) -> None:
        """Remove the original: the run is stored, and the file must not fire again."""
        source = Path(event["source_path"])
        self.state.get("pending", {}).pop(source.name, None)
        if not self._still_placed(source, event):
            # A new file took the name after this one was placed (a scanner writing scan.pdf again): it has
            # no run yet, so it stays, settles and fires as any new file does.
            return
        try:
            source.unlink(missing_ok=True)
        except OSError as error:
            self.state.setdefault("unmoved", {})[source.name] = self.event_key(event)
            raise TriggerError(f"cannot remove {source} after its run {run_id} was stored "
                               f"(it will not start another): {error.strerror or error}") from None


def _same_file(source: Path, target: Path) -> bool:
    """True when ``target`` is ``source`` placed already: linked, or copied whole (same size, time and bytes).

    Never a symbolic link: one to the original would dangle once the original is removed.
    """
    first, second = source.stat(follow_symlinks=False), target.stat(follow_symlinks=False)
    if not S_ISREG(second.st_mode):
        return False
    if (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino):
        return True
    # A copy keeps the time (copystat); the bytes decide, so another file is never taken for this one.
    return ((first.st_size, first.st_mtime_ns) == (second.st_size, second.st_mtime_ns)
            and filecmp.cmp(source, target, shallow=False))


def _name(copy: Path, target: Path) -> None:
    """Give a copy its name in the processed folder: linked, never over another file; renamed where the file
    system has no links (FileExistsError when the name is taken)."""
    try:
        os.link(copy, target)
    except FileExistsError:
        raise
    except OSError:
        if target.exists() or target.is_symlink():  # never over another file, nor through a link
            raise FileExistsError(target) from None
        os.replace(copy, target)


def _copy_into(source: Path, folder: Path) -> Path:
    """A whole copy of ``source`` (contents, times, mode) under a new hidden name in ``folder``; removed on failure."""
    handle, name = tempfile.mkstemp(prefix=f".{source.name}.", suffix=".part", dir=folder)
    copy = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, open(source, "rb") as data:
            shutil.copyfileobj(data, out)
        shutil.copystat(source, copy)
    except BaseException:
        with suppress(OSError):
            copy.unlink()
        raise
    return copy
