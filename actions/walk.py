"""A glob matched from an open folder descriptor: no symlinked folder is followed out of the root.

pathlib.Path.glob names every folder by path while it walks, so a folder
swapped for a symlink meanwhile takes the walk wherever the link points. Here
every folder is opened relative to the one it is in with ``O_NOFOLLOW |
O_DIRECTORY`` and listed through its descriptor, so the names found are names
inside the root. The matches are those of pathlib.Path.glob in Python 3.11:

- a part holding ``*``, ``?`` or ``[`` is matched with fnmatch, case
  sensitive, hidden names included; another part names one entry;
- ``**`` is zero or more folders, never a symlinked one;
- a trailing ``/`` keeps folders only;
- a symlinked folder that a plain or wildcard part names is descended into
  only when it resolves inside the root, and then reached again from the root
  without following a symlink (actions.rooted); a symlink matched last is kept
  only when it resolves inside the root (a loop or a link out is left out).

A folder that changes while it is walked (removed, swapped for a symlink) is
taken as it is when reached: a symlink is not descended into, a missing
folder has nothing to match. The walk is bounded by MAX_ENTRIES and MAX_DEPTH.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path, PurePosixPath

from actions.rooted import SymlinkError, about, open_folder

# A glob's result is one step's result: past this many entries looked at, the tree is a job for a shell step.
MAX_ENTRIES = 100_000
# One descriptor is held open per folder of the current branch: this many is far deeper than a real tree.
MAX_DEPTH = 200

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WILDCARDS = frozenset("*?[")
# An entry that is not a folder any more, is gone, or may not be read: nothing below it to match.
_NOT_A_FOLDER = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG)


class WalkLimit(Exception):
    """The walk passed MAX_ENTRIES or MAX_DEPTH; the message says which and where."""


def parse(pattern: str) -> tuple[str, ...]:
    """The parts of a relative ``pattern`` as Path.glob reads them ('' last for a trailing '/'); ValueError if bad."""
    parts = PurePosixPath(pattern).parts if pattern else ()
    if pattern.endswith("/"):
        parts += ("",)
    if not parts or not parts[0]:  # "", "." and "./" name no entry below the folder
        raise ValueError(f"Unacceptable pattern: {pattern!r}")
    if any(part != "**" and "**" in part for part in parts):
        raise ValueError("Invalid pattern: '**' can only be an entire path component")
    return parts


def glob_at(root: Path, folder: Path, fd: int, parts: tuple[str, ...]) -> set[Path]:
    """The paths below ``folder`` (open as ``fd``, inside ``root``) that ``parts`` match, named as reached."""
    walk = _Walk(root, folder, parts)
    walk.select(fd, folder, 0)
    return walk.found


class _Walk:
    """One glob's state: the pattern, what it found, how many entries it looked at, how deep it stands."""

    def __init__(self, root: Path, folder: Path, parts: tuple[str, ...]):
        self.root, self.folder, self.parts = root, folder, parts
        self.found: set[Path] = set()
        self.seen = 0
        self.depth = 0

    def select(self, fd: int, where: Path, index: int, entries: list[os.DirEntry] | None = None) -> None:
        """Match ``parts[index:]`` below the folder ``fd``, named ``where``; ``entries``: its listing, if made."""
        if index == len(self.parts) or not self.parts[index]:  # all matched, or a trailing '/' after a folder
            self.found.add(where)
            return
        part = self.parts[index]
        if part == "**":
            self._recursive(fd, where, index + 1)
        elif _WILDCARDS.intersection(part):
            for entry in self._scan(fd, where) if entries is None else entries:
                if fnmatch.fnmatchcase(entry.name, part):
                    self._reach(fd, where, entry.name, index + 1, entry)
        else:
            self._count(1)
            self._reach(fd, where, part, index + 1, None)

    def _recursive(self, fd: int, where: Path, index: int) -> None:
        """``**``: ``parts[index:]`` matched here and below every real folder under here, no symlink followed."""
        entries = self._scan(fd, where)
        self.select(fd, where, index, entries)
        for entry in entries:
            if _is_folder(entry):
                with self._child(fd, where, entry.name, follow=False) as child:
                    if child is not None:
                        self._recursive(child, where / entry.name, index)

    def _reach(self, fd: int, where: Path, name: str, index: int, entry: os.DirEntry | None) -> None:
        """``name`` in the folder ``fd`` matched the part before ``index``: kept when last, else entered."""
        path = where / name
        if index < len(self.parts):
            if entry is not None and not (_is_folder(entry) or _is_link(fd, name, entry)):
                return  # a file: nothing below it (known from the listing, no call made)
            with self._child(fd, where, name, follow=True) as child:
                if child is not None:
                    self.select(child, path, index)
            return
        link = _is_link(fd, name, entry)
        if link is None:
            return  # no such entry
        if link:
            # Only a name inside the root is ever listed; where a link points decides whether it is kept.
            if not _resolves_inside(path, self.root) or (entry is None and not os.path.exists(path)):
                return  # a named link must lead somewhere, as Path.exists follows it
        self.found.add(path)

    @contextmanager
    def _child(self, fd: int, where: Path, name: str, *, follow: bool) -> Iterator[int | None]:
        """The folder ``name`` in ``fd`` opened without following a symlink; None when it is no folder.

        With ``follow``, a symlink that resolves to a folder inside the root is
        reached again from the root, one folder at a time without following one.
        """
        if self.depth >= MAX_DEPTH:
            raise WalkLimit(f"reached folders more than {MAX_DEPTH} deep below {self._shown(self.folder)}")
        with ExitStack() as stack:
            child = self._open(fd, where, name)
            if child is not None:
                stack.callback(os.close, child)
            elif follow and _is_link(fd, name, None):
                child = self._linked(where / name, stack)
            self.depth += 1
            try:
                yield child
            finally:
                self.depth -= 1

    @staticmethod
    def _open(fd: int, where: Path, name: str) -> int | None:
        """The folder ``name`` in ``fd`` opened with O_NOFOLLOW; None when it is a symlink or no folder (any more)."""
        try:
            return os.open(name, _FOLDER, dir_fd=fd)
        except ValueError:  # a NUL byte in a name the pattern gave: no such entry
            return None
        except OSError as error:
            if error.errno in _NOT_A_FOLDER:
                return None
            raise OSError(error.errno, error.strerror, str(where / name)) from None

    def _linked(self, path: Path, stack: ExitStack) -> int | None:
        """The folder the symlink ``path`` leads to, opened from the root (closed with ``stack``); None if outside."""
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
            return None
        if not target.is_relative_to(self.root):
            return None
        try:
            return stack.enter_context(open_folder(self.root, target))
        except (SymlinkError, OSError):  # changed meanwhile: taken as it is now, no folder to enter
            return None

    def _scan(self, fd: int, where: Path) -> list[os.DirEntry]:
        """The entries of the folder ``fd``, counted against MAX_ENTRIES."""
        entries = []
        with about(where), os.scandir(fd) as listing:
            for entry in listing:
                self._count(1)
                entries.append(entry)
        return entries

    def _count(self, entries: int) -> None:
        self.seen += entries
        if self.seen > MAX_ENTRIES:
            raise WalkLimit(f"looked at more than {MAX_ENTRIES:,} entries below {self._shown(self.folder)}")

    def _shown(self, path: Path) -> str:
        """``path`` relative to the root, quoted."""
        return repr(str(path.relative_to(self.root)))


def _is_folder(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a folder itself, not a symlink to one."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_link(fd: int, name: str, entry: os.DirEntry | None) -> bool | None:
    """Whether ``name`` in the folder ``fd`` is a symlink; None when there is no such entry."""
    if entry is not None:
        try:
            return entry.is_symlink()
        except OSError:
            return None
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode)
    except (OSError, ValueError):
        return None


def _resolves_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` resolves inside ``root``; a symlink loop or a broken entry leads nowhere."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        return False
