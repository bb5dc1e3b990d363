"""A trigger that fires once for each new file dropped into a folder."""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from pathlib import Path
from stat import S_IFREG, S_IMODE, S_ISREG
from typing import Any

from actions.atomic import new_hidden_file
from actions.base import SettingError
from actions.paths import PathError, files_root, inside
from actions.rooted import SymlinkError, kind_at, open_folder, open_regular_at
from triggers.base import BaseTrigger, TriggerError
from triggers.interval import _iso, parse_seconds

logger = logging.getLogger(__name__)

# Bounds one poll's work; the rest of a large drop comes with the next polls.
MAX_FILES_PER_POLL = 100
# Bytes compared at a time when a copy already in the processed folder may be this file's.
CHUNK = 1024 * 1024


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

    Listing, linking, copying, making the processed folder and removing the
    original reach both folders from WORKFLOW_FILES_ROOT one folder at a time
    without following a symlink (actions.rooted), and name only the file in
    the open folder: a folder that became a symlink after setup() checked it
    is refused (TriggerError naming the field and that folder; the files stay),
    and a file that became one is never followed: it is not placed and not fired.

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
        self._root: Path | None = None  # WORKFLOW_FILES_ROOT, resolved: where every folder walk starts
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
        self._root = root
        self._checked = True

    @property
    def processed(self) -> Path:
        """Where handled files go."""
        return Path(self.processed_folder) if self.processed_folder else Path(self.folder) / "processed"

    # -- polling ------------------------------------------------------------------------------------
    def _start(self, folder: Path) -> Path:
        """Where the walk to ``folder`` starts: the files root, or ``/`` for a trusted workflow's folder outside it."""
        root = self._root
        return root if root is not None and folder.is_relative_to(root) else Path(folder.anchor)

    def _shown(self, path: Path) -> str:
        """``path`` relative to the files root when inside it, as messages name it."""
        root = self._root
        return str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)

    def _open(self, stack: ExitStack, field: str, *, create: bool = False) -> int:
        """A descriptor of the ``field`` folder, reached from the files root without following a symlink.

        Held until ``stack`` closes (actions.rooted.open_folder). A folder on the
        way that became a symlink after setup() checked it is refused: a
        TriggerError naming the field and that folder; other OS errors are raised.
        """
        folder = Path(self.folder) if field == "folder" else self.processed
        try:
            return stack.enter_context(open_folder(self._start(folder), folder, create=create))
        except SymlinkError as error:
            raise TriggerError(f"trigger {self.name!r}: {field} {self._shown(folder)!r}: {self._shown(error.path)!r} "
                               f"became a symlink after the folder was checked; the trigger never follows a "
                               f"symlink to list, link, move or delete files") from None

    def _watched(self, stack: ExitStack) -> int:
        """The watched folder opened; TriggerError naming it when it is missing, not a folder, or became a symlink."""
        if not self._checked:
            raise RuntimeError(f"trigger {self.name!r}: setup() must be called before polling")
        try:
            return self._open(stack, "folder")
        except FileNotFoundError:
            raise TriggerError(f"folder {self.folder} does not exist; create it or fix the trigger's folder") from None
        except NotADirectoryError:
            raise TriggerError(f"folder {self.folder} is not a folder") from None
        except OSError as error:
            raise TriggerError(f"cannot list folder {self.folder}: {error.strerror or error}") from None

    def _listing(self, inbox: int) -> dict[str, os.stat_result]:
        """Regular files matching the pattern in the open watched folder ``inbox``, by name."""
        try:
            entries = list(os.scandir(inbox))
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
        with ExitStack() as stack:
            return bool(self._settled(self._watched(stack)))

    def _settled(self, inbox: int) -> list[tuple[str, os.stat_result]]:
        """Files whose size and mtime held for settle_seconds; notes new and changed files as pending."""
        now = float(self._clock())
        files = self._listing(inbox)
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
        events: list[dict] = []
        with ExitStack() as stack:
            inbox = self._watched(stack)
            settled = self._settled(inbox)
            if not settled:
                return events
            folder = self.processed
            try:
                processed = self._open(stack, "processed_folder", create=True)
            except OSError as error:
                raise TriggerError(f"cannot create processed folder {folder}: {error.strerror or error}") from None
            for name, stat in settled:
                path = self._place(inbox, processed, name)
                if path is None:
                    self.state["pending"].pop(name, None)  # removed meanwhile, or no longer a regular file
                    continue
                events.append({
                    "path": str(path),
                    "filename": name,
                    "size": stat.st_size,
                    "modified_at": _iso(stat.st_mtime_ns / 1e9),
                    "source_path": str(Path(self.folder) / name),
                })
        return events

    @staticmethod
    def _key(source: str | Path, size: int, modified_at: str) -> str:
        return f"file:{source}:{size}:{modified_at}"

    def event_key(self, event: dict) -> str:
        """Path, size and mtime: the same file polled again after a crash starts no second run."""
        return self._key(event["source_path"], event["size"], event["modified_at"])

    # -- moving handled files -----------------------------------------------------------------------------
    # Every name below is looked up in a folder opened by _open, never by path: a symlink swapped in for a folder
    # after setup() checked it is refused there, and one swapped in for a file is acted on itself, never followed.
    def _place(self, inbox: int, processed: int, name: str) -> Path | None:
        """Make ``name`` (in the open ``inbox``) also exist in the open ``processed`` folder; its path there.

        None when it is gone, or is no longer a regular file (a symlink swapped in: it is neither followed nor
        placed, and the listing skips it from then on).
        """
        folder, source = self.processed, Path(self.folder) / name
        stem, suffix = os.path.splitext(name)
        target, copies = name, 0
        copy: str | None = None  # a whole copy of the file in the processed folder, once linking it failed
        try:
            while True:
                try:
                    if copy is None:
                        # A second name for the same file: instant, nothing copied. Not through a symlink (without
                        # follow_symlinks=False, os.link links what one points to).
                        os.link(name, target, src_dir_fd=inbox, dst_dir_fd=processed, follow_symlinks=False)
                    else:
                        _name(processed, copy, target)
                    return self._regular(processed, target, source)
                except FileExistsError:
                    if _same_file(inbox, name, processed, target):
                        return folder / target  # placed by a poll whose run was not stored; this is that poll again
                except FileNotFoundError:
                    return None  # gone meanwhile (or its copy): the next poll looks again
                except OSError:
                    if copy is not None:
                        raise
                    # Another file system, or one without hard links: copy it under a hidden name first, so a
                    # copy cut short (a full disk) never takes the name, then link the copy where it belongs.
                    copy = _copy_into(inbox, name, source, processed)
                    if copy is None:
                        self._skipped(source)
                        return None
                    continue
                copies += 1
                target = f"{stem}-{copies}{suffix}"
        except FileNotFoundError:
            return None
        except OSError as error:
            raise TriggerError(f"cannot place {source} in {folder}: {error.strerror or error}") from None
        finally:
            if copy is not None:
                with suppress(OSError):
                    os.unlink(copy, dir_fd=processed)

    def _regular(self, processed: int, target: str, source: Path) -> Path | None:
        """The path of ``target``, just placed, if a regular file; else (a symlink linked itself) None, removed."""
        if kind_at(processed, target) == S_IFREG:
            return self.processed / target
        with suppress(OSError):
            os.unlink(target, dir_fd=processed)
        self._skipped(source)
        return None

    def _skipped(self, source: Path) -> None:
        """Log that ``source`` is not placed: it stopped being a regular file after it was listed."""
        logger.warning("trigger %r: folder %r: %r is no longer a regular file (a symlink swapped in?); not "
                       "followed, not placed, not fired", self.name, self._shown(Path(self.folder)),
                       self._shown(source))

    def _still_placed(self, inbox: int, name: str, event: dict) -> bool:
        """True when ``name`` is still the file the event placed (False when it is gone or was replaced)."""
        try:
            stat = os.lstat(name, dir_fd=inbox)
        except OSError:
            return False  # gone: nothing to remove
        placed, folder = Path(event["path"]), self.processed
        # The placed file may be gone too (the run moved it on already), or its folder now a symlink: not followed.
        with suppress(OSError, PathError), open_folder(self._start(folder), folder) as processed:
            other = os.lstat(placed.name, dir_fd=processed)
            if (other.st_dev, other.st_ino) == (stat.st_dev, stat.st_ino):
                return True  # linked: the very same file
        # Copied (another file system), or moved on: the same size and modification time as when it was placed.
        return S_ISREG(stat.st_mode) and (stat.st_size, _iso(stat.st_mtime_ns / 1e9)) == (event["size"],
                                                                                         event["modified_at"])

    def acknowledge(self, event: dict, run_id: str) -> None:
        """Remove the original: the run is stored, and the file must not fire again."""
        source = Path(event["source_path"])
        self.state.get("pending", {}).pop(source.name, None)
        with ExitStack() as stack:
            try:
                inbox = self._open(stack, "folder")
            except OSError:
                return  # the folder is gone: nothing to remove
            except TriggerError as error:
                self.state.setdefault("unmoved", {})[source.name] = self.event_key(event)
                raise TriggerError(f"{error}; {self._shown(source)!r} stays (its run {run_id} is stored, and it will "
                                   f"not start another)") from None
            if not self._still_placed(inbox, source.name, event):
                # A new file took the name after this one was placed (a scanner writing scan.pdf again): it has
                # no run yet, so it stays, settles and fires as any new file does.
                return
            try:
                os.unlink(source.name, dir_fd=inbox)  # a symlink swapped in is removed itself, never followed
            except FileNotFoundError:
                return
            except OSError as error:
                self.state.setdefault("unmoved", {})[source.name] = self.event_key(event)
                raise TriggerError(f"cannot remove {source} after its run {run_id} was stored "
                                   f"(it will not start another): {error.strerror or error}") from None


def _same_file(inbox: int, name: str, processed: int, target: str) -> bool:
    """True when ``target`` is ``name`` placed already: linked, or copied whole (same size, time and bytes).

    Never a symbolic link: one to the original would dangle once the original is removed.
    """
    first, second = os.lstat(name, dir_fd=inbox), os.lstat(target, dir_fd=processed)
    if not S_ISREG(second.st_mode):
        return False
    if (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino):
        return True
    # A copy keeps the time; the bytes decide, so another file is never taken for this one.
    if (first.st_size, first.st_mtime_ns) != (second.st_size, second.st_mtime_ns):
        return False
    try:
        with open_regular_at(inbox, name, Path(name), repr(name)) as one, \
                open_regular_at(processed, target, Path(target), repr(target)) as two:
            while (chunk := one.read(CHUNK)) == two.read(CHUNK):
                if not chunk:
                    return True
            return False
    except PathError:
        return False  # one of them became a symlink (not followed) or no regular file


def _name(folder: int, copy: str, target: str) -> None:
    """Give a copy its name in the open processed ``folder``: linked, never over another file; renamed where the
    file system has no links (FileExistsError when the name is taken)."""
    try:
        os.link(copy, target, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        if kind_at(folder, target) is not None:  # never over another file, nor over a link
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target) from None
        os.replace(copy, target, src_dir_fd=folder, dst_dir_fd=folder)


def _copy_into(inbox: int, name: str, source: Path, folder: int) -> str | None:
    """A whole copy of ``name`` (contents, times, mode) under a new hidden name in the open ``folder``; that name.

    None when ``name`` is not a regular file (a symlink is not followed); the copy is removed on failure.
    """
    try:
        data = open_regular_at(inbox, name, source, repr(str(source)))
    except PathError:
        return None
    with data:
        status = os.fstat(data.fileno())
        copy, handle = new_hidden_file(folder, name, "part")
        try:
            with os.fdopen(handle, "wb") as out:
                shutil.copyfileobj(data, out)
                out.flush()
                os.fchmod(out.fileno(), S_IMODE(status.st_mode))
                os.utime(out.fileno(), ns=(status.st_atime_ns, status.st_mtime_ns))  # the time _same_file compares
        except BaseException:
            with suppress(OSError):
                os.unlink(copy, dir_fd=folder)
            raise
    return copy
