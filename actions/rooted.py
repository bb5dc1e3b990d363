"""Acting on a path inside a root through folder descriptors: no symlink inside the root is ever followed.

A path checked by ``actions.paths.inside`` may change before it is used: a
folder on the way, or the file itself, can be swapped for a symlink that
points out of the root. So the folder a file step writes, moves or deletes
in is opened from the root one component at a time (``O_NOFOLLOW``,
``O_DIRECTORY``), and the operation then names only the last component,
relative to that open folder (``dir_fd``). A component that has become a
symlink is refused (SymlinkError); a last component that has become one is
acted on itself (renamed over, unlinked), never followed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from actions.paths import PathError, check_regular

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


class SymlinkError(PathError):
    """A component of a checked path was a symlink when the path was used; ``path`` is that component."""

    def __init__(self, path: Path):
        super().__init__(f"{path} is a symlink")
        self.path = path


@contextmanager
def about(path: Path) -> Iterator[None]:
    """Within the block, an OS error names ``path``: one relative to a folder descriptor names only its last part."""
    try:
        yield
    except OSError as error:
        if error.filename is not None and os.path.isabs(error.filename):
            raise
        raise OSError(error.errno, error.strerror, str(path)) from None


@contextmanager
def open_folder(root: Path, folder: Path, *, create: bool = False) -> Iterator[int]:
    """A descriptor of ``folder`` (inside ``root``, resolved), opened from ``root`` without following a symlink.

    With ``create``, missing folders are made on the way (as ``mkdir -p``).
    Raises SymlinkError when a component is a symlink, FileNotFoundError or
    NotADirectoryError naming the component's full path otherwise.
    """
    parts = folder.relative_to(root).parts
    with about(root):
        fd = os.open(root, _FOLDER)
    try:
        for count, name in enumerate(parts, 1):
            child = _open_child(fd, name, root.joinpath(*parts[:count]), create)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _open_child(fd: int, name: str, path: Path, create: bool) -> int:
    """The folder ``name`` in the folder ``fd`` opened, made first when missing and ``create``."""
    with about(path):
        try:
            return os.open(name, _FOLDER, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
        except (NotADirectoryError, OSError) as error:
            if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            _refuse_link(fd, name, path)
            raise
        try:
            os.mkdir(name, 0o777, dir_fd=fd)
        except FileExistsError:
            pass  # made meanwhile (another step of another run): used if it is a real folder
        try:
            return os.open(name, _FOLDER, dir_fd=fd)
        except OSError as error:
            if error.errno in (errno.ENOTDIR, errno.ELOOP):
                _refuse_link(fd, name, path)
            raise


def _refuse_link(fd: int, name: str, path: Path) -> None:
    """SymlinkError when ``name`` in the folder ``fd`` is a symlink."""
    try:
        if stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode):
            raise SymlinkError(path)
    except FileNotFoundError:
        pass


def open_regular_at(fd: int, name: str, path: Path, shown: str) -> IO[bytes]:
    """``name`` in the folder ``fd`` opened to read; PathError unless a regular file, SymlinkError if a symlink.

    Opened without blocking (a FIFO is refused, not waited on) and without
    following a symlink. ``shown`` names the path in messages.
    """
    try:
        file = os.open(name, _READ, dir_fd=fd)
    except OSError as error:
        if error.errno == errno.ELOOP:
            _refuse_link(fd, name, path)
        raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        check_regular(file, shown)
        return os.fdopen(file, "rb")
    except BaseException:
        os.close(file)
        raise


def kind_at(fd: int, name: str) -> int | None:
    """The file type bits of ``name`` in the folder ``fd`` (a symlink is itself); None when there is none."""
    try:
        return stat.S_IFMT(os.lstat(name, dir_fd=fd).st_mode)
    except FileNotFoundError:
        return None
