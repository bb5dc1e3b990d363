"""The file action: read, write and organise files inside one folder, WORKFLOW_FILES_ROOT."""

from __future__ import annotations

import base64
import binascii
import errno
import fnmatch
import json
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from actions import walk
from actions.atomic import write_atomic_at
from actions.base import ActionError, BaseAction, SettingError
from actions.paths import ROOT_SETTING, PathError, files_root, inside, open_regular
from actions.rooted import SymlinkError, about, kind_at, open_folder, open_regular_at

logger = logging.getLogger(__name__)

# operation -> the keys it needs besides ``operation``.
REQUIRED: dict[str, tuple[str, ...]] = {
    "read": ("path",),
    "write": ("path", "content"),
    "append": ("path", "content"),
    "copy": ("path", "destination"),
    "move": ("path", "destination"),
    "delete": ("path",),
    "list": (),
    "glob": ("pattern",),
}
# A read's content goes into the run record; bigger files should be handled by path.
MAX_READ_BYTES = 10 * 1024 * 1024
# Each ``**`` walks the whole tree below where the one before it stands: two cost the tree's size squared,
# ten a tree 30 folders deep more than a lifetime of CPU. One finds everything at any depth already.
MAX_RECURSIVE_WILDCARDS = 1


class FileAction(BaseAction):
    """Does one file ``operation`` inside WORKFLOW_FILES_ROOT (default ``<storage>/files``).

    Relative paths are resolved under the root; a path that leads outside it
    (``..``, an absolute path elsewhere, a symlink pointing out) is refused.
    Writes, moves and deletes then reach the checked path from the root one
    folder at a time without following a symlink (actions.rooted), so a
    symlink swapped in after the check leads nowhere outside; list and glob
    read folders through such descriptors too (actions.walk), so they never
    show a name from outside the root.
    Operations and results:

    - ``read`` path -> ``{"content", "path", "size"}``
    - ``write`` / ``append`` path, content (text; a mapping or list is written as JSON) -> ``{"path"}``
    - ``copy`` / ``move`` path, destination (an existing folder receives the file under its name) -> ``{"path"}``
    - ``delete`` path (a file or a whole folder) -> ``{"path", "deleted"}``
    - ``list`` path (default the root), pattern (optional name filter such as ``*.csv``) -> ``{"paths"}``
    - ``glob`` pattern (such as ``**/*.csv``), path (the folder to search, default the root) -> ``{"paths"}``

    ``path`` in results is absolute, so a later step (send_email attachments)
    can use it; ``paths`` are relative to the root, sorted. ``encoding`` is a
    text encoding, or ``base64`` to read and write bytes as base64 text.
    Writes are atomic: readers see the old file or the new one, never half.
    """

    type = "file"
    result_keys = ("content", "path", "size", "deleted", "paths")
    path_fields = {"path": "path", "destination": "path"}
    config_choices = {"operation": tuple(REQUIRED)}

    def __init__(
        self,
        name: str,
        *,
        operation: str,
        path: str | None = None,
        destination: str | None = None,
        content: Any = None,
        pattern: str | None = None,
        encoding: str = "utf-8",
        **options: Any,
    ):
        super().__init__(name, **options)
        self.operation = operation
        self.path = path
        self.destination = destination
        self.content = content
        self.pattern = pattern
        self.encoding = encoding
        if isinstance(operation, str) and "{{" not in operation:
            problem = self._problem()
            if problem is not None:
                raise SettingError(problem[0], f"action {name!r}: {problem[1]}")
            # Appending or moving again after a crash cut the step short would not be harmless.
            self.idempotent = operation.strip().lower() not in ("append", "move")

    def execute(self, data_store: dict) -> dict:
        """Do the operation; file problems are one-line errors naming the path."""
        operation = self._check()
        handler: Callable[[Path], dict] = getattr(self, f"_{operation}")
        root = self._root()
        try:
            result = handler(root)
        except FileNotFoundError as error:
            raise ActionError(f"file {operation}: {self._shown(error, root)} not found", retryable=False)
        except (IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError) as error:
            raise ActionError(f"file {operation}: {self._shown(error, root)}: {error.strerror}", retryable=False)
        except OSError as error:
            raise ActionError(f"file {operation}: {self._shown(error, root)}: {error.strerror or error}")
        logger.info("file %s: %s %s", self.name, operation, self.path or self.pattern or ".")
        return result

    def _check(self) -> str:
        """The operation, lower-cased; a non-retryable ActionError when a setting is wrong."""
        problem = self._problem()
        if problem is not None:
            raise ActionError(problem[1], retryable=False)
        return str(self.operation).strip().lower()

    def _problem(self) -> tuple[str, str] | None:
        """The setting that is wrong and why, as (key, message); None when the operation has what it needs."""
        operation = str(self.operation).strip().lower()
        if operation not in REQUIRED:
            return "operation", f"file: operation must be one of {', '.join(REQUIRED)}, got {self.operation!r}"
        for key in REQUIRED[operation]:
            value = getattr(self, key)
            if value is None or (value == "" and key != "content"):  # writing "" is fine, a path "" is not
                return key, f"file {operation}: {key!r} is required"
        return None

    def _root(self) -> Path:
        """The resolved sandbox folder, created when missing."""
        root = files_root(self.context.settings, self.context.storage_path)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ActionError(f"file: cannot create WORKFLOW_FILES_ROOT {root}: {error.strerror or error}")
        return root

    def _inside(self, root: Path, value: Any, key: str) -> Path:
        """``value`` resolved under ``root`` (symlinks followed); ActionError when that leads outside."""
        try:
            return inside(root, value, key)
        except PathError as error:
            raise ActionError(f"file: {error}", retryable=False) from None

    def _shown(self, error: OSError, root: Path) -> str:
        """The path an OS error is about, relative to the root when inside it."""
        filename = error.filename or self.path or ""
        try:
            return repr(str(Path(filename).relative_to(root)))
        except ValueError:
            return repr(str(filename))

    # -- operations ---------------------------------------------------------------
    def _read(self, root: Path) -> dict:
        path = self._inside(root, self.path, "path")
        with self._open(root, path, "read") as file:
            size = os.fstat(file.fileno()).st_size
            if size > MAX_READ_BYTES:
                raise ActionError(f"file read: {self.path!r} is {size} bytes, over the {MAX_READ_BYTES // 2**20} MB "
                                  f"a step result may hold", retryable=False)
            data = file.read(MAX_READ_BYTES + 1)  # a file still growing stops at the bound too
        if len(data) > MAX_READ_BYTES:
            raise ActionError(f"file read: {self.path!r} grew past the {MAX_READ_BYTES // 2**20} MB a step result "
                              f"may hold while it was read", retryable=False)
        size = len(data)
        if self._base64():
            content = base64.b64encode(data).decode("ascii")
        else:
            try:
                content = data.decode(self._encoding())
            except UnicodeDecodeError:
                raise ActionError(f"file read: {self.path!r} is not {self.encoding} text (use encoding: base64 for "
                                  f"binary files)", retryable=False)
        return {"content": content, "path": str(path), "size": size}

    def _write(self, root: Path) -> dict:
        path = self._file(root, "write")
        data = self._bytes()
        with self._folder(root, path.parent, "path", create=True) as folder, about(path):
            write_atomic_at(folder, path.name, data, mode=0o644, keep_mode=True)
        return {"path": str(path)}

    def _append(self, root: Path) -> dict:
        path = self._file(root, "append")
        added = self._bytes()
        with self._folder(root, path.parent, "path", create=True) as folder:
            try:
                file = self._open_at(folder, path, "append")
            except FileNotFoundError:
                with about(path):
                    write_atomic_at(folder, path.name, added, mode=0o644)
                return {"path": str(path)}
            with file, about(path):
                # Streamed: the file as it was, then the new content; a big file is never held in memory.
                write_atomic_at(folder, path.name, _Joined(file, added), mode=_mode(file))
        return {"path": str(path)}

    def _copy(self, root: Path) -> dict:
        source = self._inside(root, self.path, "path")
        target = self._target(root, source)
        if source.is_dir():
            raise ActionError(f"file copy: {self.path!r} is a folder; only files can be copied", retryable=False)
        with self._open(root, source, "copy") as file:
            with self._folder(root, target.parent, "destination", create=True) as folder, about(target):
                # Streamed: a copy costs no more memory for a big file than for a small one.
                write_atomic_at(folder, target.name, file, mode=_mode(file))
        return {"path": str(target)}

    def _move(self, root: Path) -> dict:
        source = self._inside(root, self.path, "path")
        if source == root:
            raise ActionError("file move: cannot move WORKFLOW_FILES_ROOT itself", retryable=False)
        target = self._target(root, source)
        if target.is_relative_to(source):
            raise ActionError(f"file move: destination {self.destination!r} is inside {self.path!r}, the folder "
                              f"being moved", retryable=False)
        with self._folder(root, source.parent, "path") as origin:
            if kind_at(origin, source.name) is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(source))
            with self._folder(root, target.parent, "destination", create=True) as folder:
                self._rename(origin, folder, source, target)
        return {"path": str(target)}

    def _delete(self, root: Path) -> dict:
        path = self._link(root) or self._inside(root, self.path, "path")
        if path == root:
            raise ActionError("file delete: refusing to delete WORKFLOW_FILES_ROOT itself", retryable=False)
        with ExitStack() as stack:
            try:
                folder = stack.enter_context(self._folder(root, path.parent, "path"))
            except (FileNotFoundError, NotADirectoryError):  # no folder there, or a file: nothing to delete
                return {"path": str(path), "deleted": False}
            kind = kind_at(folder, path.name)
            if kind is None:
                return {"path": str(path), "deleted": False}
            with about(path):
                if kind == stat.S_IFDIR:
                    # The fd-based rmtree: it never follows a symlink inside the folder, nor one swapped in for it.
                    shutil.rmtree(path.name, dir_fd=folder)
                else:
                    os.unlink(path.name, dir_fd=folder)  # a symlink is deleted itself, not what it points to
        return {"path": str(path), "deleted": True}

    def _list(self, root: Path) -> dict:
        folder = self._inside(root, self.path, "path")
        pattern = str(self.pattern) if self.pattern else "*"
        # Listed through the descriptor opened from the root: a folder swapped for a symlink is not followed.
        with self._folder(root, folder, "path") as fd, about(folder), os.scandir(fd) as entries:
            names = [entry.name for entry in entries if fnmatch.fnmatch(entry.name, pattern)]
        return {"paths": sorted(str((folder / name).relative_to(root)) for name in names)}

    def _glob(self, root: Path) -> dict:
        folder = self._inside(root, self.path, "path")
        pattern = str(self.pattern).strip()
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise ActionError(f"file glob: pattern {pattern!r} must be relative and stay inside the folder",
                              retryable=False)
        if Path(pattern).parts.count("**") > MAX_RECURSIVE_WILDCARDS:
            raise ActionError(f"file glob: pattern {pattern!r} has more than one '**'; one already matches at any "
                              f"depth, and each more walks the whole tree again", retryable=False)
        try:
            parts = walk.parse(pattern)
        except ValueError as error:
            raise ActionError(f"file glob: invalid pattern {pattern!r}: {error}", retryable=False)
        with ExitStack() as stack:
            try:
                fd = stack.enter_context(self._folder(root, folder, "path"))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                return {"paths": []}  # as Path.glob: no folder to search there, nothing matches
            try:
                # Walked through descriptors: no symlinked folder leads the walk out of the root (actions.walk).
                found = walk.glob_at(root, folder, fd, parts)
            except walk.WalkLimit as error:
                raise ActionError(f"file glob: pattern {pattern!r} {error}; narrow the pattern or the path",
                                  retryable=False) from None
        return {"paths": sorted(str(match.relative_to(root)) for match in found)}

    # -- helpers ------------------------------------------------------------------
    def _file(self, root: Path, operation: str) -> Path:
        """``path`` checked as a file to write: inside the root and not the root itself."""
        path = self._inside(root, self.path, "path")
        if path == root:
            raise ActionError(f"file {operation}: path {self.path!r} is WORKFLOW_FILES_ROOT itself, a folder",
                              retryable=False)
        return path

    def _link(self, root: Path) -> Path | None:
        """For delete: the symlink ``path`` names, in its folder resolved inside the root; None when no symlink."""
        link = Path(os.path.normpath(root / str(self.path).strip()))
        if link == root or not link.is_symlink():
            return None
        try:
            return inside(root, link.parent, "path") / link.name
        except PathError:
            return None  # a link whose folder is outside: refused by the check of the path itself

    @contextmanager
    def _folder(self, root: Path, folder: Path, key: str, *, create: bool = False) -> Iterator[int]:
        """A descriptor of ``folder`` reached from the root without following a symlink (actions.rooted).

        A folder on the way, or the file acted on, that became a symlink after
        the check is refused, naming ``key`` and the path relative to the root.
        """
        try:
            with open_folder(root, folder, create=create) as fd:
                yield fd
        except SymlinkError as error:
            operation = str(self.operation).strip().lower()
            value = getattr(self, key)
            link = str(error.path.relative_to(root))
            never = ("a list or glob never follows a symlinked folder" if operation in ("list", "glob")
                     else "a write, move or delete never follows a symlink")
            raise ActionError(f"file {operation}: {key} {value!r}: {link!r} became a symlink after the path was "
                              f"checked; {never} inside {ROOT_SETTING}", retryable=False) from None

    def _open_at(self, folder: int, path: Path, operation: str) -> IO[bytes]:
        """``path``, whose folder is open as ``folder``, opened to read: a regular file, not through a symlink."""
        try:
            return open_regular_at(folder, path.name, path, repr(str(self.path)))
        except SymlinkError:
            raise  # named by _folder
        except PathError as error:
            raise ActionError(f"file {operation}: {error}", retryable=False) from None

    def _rename(self, origin: int, folder: int, source: Path, target: Path) -> None:
        """Rename ``source`` (open folder ``origin``) to ``target`` (open ``folder``); a symlink is moved itself."""
        try:
            with about(source):
                os.rename(source.name, target.name, src_dir_fd=origin, dst_dir_fd=folder)
            return
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
        # A mount point inside the root: a file is copied, then removed; a folder would need a copy of a tree.
        if kind_at(origin, source.name) == stat.S_IFDIR:
            raise ActionError(f"file move: {self.path!r} is a folder on another file system than destination "
                              f"{self.destination!r}; only files can be moved across file systems", retryable=False)
        with self._open_at(origin, source, "move") as file, about(target):
            write_atomic_at(folder, target.name, file, mode=_mode(file))
        with about(source):
            os.unlink(source.name, dir_fd=origin)

    def _open(self, root: Path, path: Path, operation: str) -> IO[bytes]:
        """``path`` opened to read: a regular file that still lies inside the root once open (paths.open_regular)."""
        try:
            return open_regular(path, repr(str(self.path)), (root,))
        except PathError as error:
            raise ActionError(f"file {operation}: {error}", retryable=False) from None

    def _target(self, root: Path, source: Path) -> Path:
        """Where copy and move put the file: into ``destination`` when it is a folder."""
        target = self._inside(root, self.destination, "destination")
        if target.is_dir():
            target = self._inside(root, target / source.name, "destination")
        if target == source:
            raise ActionError(f"file: destination {self.destination!r} is the source itself", retryable=False)
        return target

    def _base64(self) -> bool:
        return str(self.encoding).strip().lower() == "base64"

    def _encoding(self) -> str:
        encoding = str(self.encoding or "utf-8").strip()
        try:
            "".encode(encoding)
        except LookupError:
            raise ActionError(f"file: unknown encoding {self.encoding!r}", retryable=False)
        return encoding

    def _bytes(self) -> bytes:
        """``content`` as bytes: text encoded, mappings and lists as JSON, base64 decoded."""
        content = self.content
        if isinstance(content, (dict, list)):
            content = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
        elif content is None:
            content = ""
        elif not isinstance(content, str):
            content = str(content)
        if self._base64():
            try:
                return base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise ActionError("file: content is not valid base64", retryable=False)
        try:
            return content.encode(self._encoding())
        except UnicodeEncodeError as error:
            raise ActionError(f"file: content cannot be written as {self.encoding}: {error.reason}", retryable=False)


class _Joined:
    """A binary file's content, then ``tail``: what write_atomic_at reads to write an appended file."""

    def __init__(self, file: IO[bytes], tail: bytes):
        self._file, self._tail = file, tail

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        if data:
            return data
        data, self._tail = self._tail, b""
        return data


def _mode(file: IO[bytes]) -> int:
    """The permission bits of an open file: a copy, a move or an appended file keeps them."""
    return stat.S_IMODE(os.fstat(file.fileno()).st_mode)
