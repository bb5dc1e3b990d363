"""A folder or a file swapped for a symlink at a chosen file-system call, as another process could (DESIGN section 10).

The race is made deterministic with a Python audit hook (sys.addaudithook), a hook point of the runtime
that every file-system call passes: at a chosen call of the code under test, the hook swaps a folder, or
a file, of a checked path for a symlink pointing out of the root. PyFlow's code runs as it is.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The audited calls through which PyFlow touches the file system (os.open, builtin open, mkdir, rename, link, listing).
EVENTS = {"open", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.link", "shutil.rmtree", "tempfile.mkstemp",
          "os.listdir", "os.scandir"}
WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT
# 'first': the first file-system call after the check; 'use': the first call that writes, links or removes.
MOMENTS = ("first", "use")


class Swap:
    """Replace ``root/name`` by a symlink to ``target`` at the chosen moment, once, in the thread that made it."""

    def __init__(self, base: Path, root: Path, name: str, target: Path, moment: str):
        self.base, self.root, self.name, self.target, self.moment = base, root, name, target, moment
        self.thread = threading.get_ident()
        self.done = False

    def consider(self, event: str, args: tuple) -> None:
        """Swap when ``event`` is the moment: a call on a path below ``base`` other than the root itself."""
        if self.done or threading.get_ident() != self.thread or event not in EVENTS:
            return
        path = args[0]
        if isinstance(path, int):
            return  # a descriptor wrapped in a file object: not a path
        path = os.fsdecode(path)
        if path == str(self.root) or (os.path.isabs(path) and not Path(path).is_relative_to(self.base)):
            return  # the root made or opened before any checked path is used; the interpreter's own files
        if self.moment == "use" and event == "open" and not (args[2] or 0) & WRITING:
            return
        self.done = True
        os.rename(self.root / self.name, self.root / f"{self.name}.old")
        os.symlink(self.target, self.root / self.name)


class Trail:
    """Where the audited file-system calls of the thread that made it really landed, as far as known."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.places: list[str] = []

    def record(self, event: str, args: tuple) -> None:
        """The real path of the call's folder or file: an absolute path resolved, a descriptor read back from /proc."""
        if threading.get_ident() != self.thread or event not in EVENTS or not args:
            return
        path = args[0]
        if isinstance(path, int):
            if path >= 0:
                self.places.append(os.readlink(f"/proc/self/fd/{path}"))
            return
        path = os.fsdecode(path)
        if os.path.isabs(path):  # a name relative to a descriptor: its folder shows when that is listed
            self.places.append(os.path.realpath(path))

    def reached(self, folder: Path) -> list[str]:
        """The recorded places inside ``folder``."""
        return [place for place in self.places if Path(place).is_relative_to(folder)]


_armed: list[Swap] = []
_trails: list[Trail] = []
_installed: list[bool] = []


def _hook(event: str, args: tuple) -> None:
    if _armed:
        _armed[0].consider(event, args)  # an error here would abort the audited call: the swap cannot fail quietly
    if _trails:
        _trails[0].record(event, args)  # after the swap: the call lands where the swap made its path lead


def _install() -> None:
    if not _installed:
        sys.addaudithook(_hook)  # for the rest of the process; idle unless armed or traced
        _installed.append(True)


@contextmanager
def armed(swap: Swap) -> Iterator[Swap]:
    """``swap`` armed for the block."""
    _install()
    _armed.append(swap)
    try:
        yield swap
    finally:
        _armed.clear()


@contextmanager
def traced() -> Iterator[Trail]:
    """A Trail of the block's file-system calls."""
    _install()
    trail = Trail()
    _trails.append(trail)
    try:
        yield trail
    finally:
        _trails.clear()


def snapshot(folder: Path) -> dict[str, object]:
    """Every entry below ``folder``: a file's bytes, 'folder' or a link's target."""
    entries: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        entries[key] = (os.readlink(path) if path.is_symlink() else "folder" if path.is_dir() else path.read_bytes())
    return entries
