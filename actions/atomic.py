"""One atomic file write for everything PyFlow saves: a reader sees the old file or the new one, never a part."""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from actions.private_files import FILE_MODE

CHUNK = 1024 * 1024
# Names tried for a temporary file before giving up (tempfile's TMP_MAX): a clash means another writer's file.
_TRIES = 100
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_atomic(path: Path, data: bytes | BinaryIO, *, mode: int = FILE_MODE, keep_mode: bool = False) -> int:
    """Replace ``path`` with ``data`` (bytes, or a binary file read to its end); the number of bytes written.

    The data goes to a hidden temporary file beside ``path`` (``.name.XXXX.tmp``), is fsync'd, then
    renamed over ``path``; on any failure the temporary file is removed and the error raised. The new
    file gets ``mode`` whatever the umask, or with ``keep_mode`` the mode of the file it replaces.
    The folder must exist and is not fsync'd: a caller that needs the rename durable syncs it.
    """
    if keep_mode:
        with suppress(FileNotFoundError):
            mode = path.stat().st_mode & 0o7777
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        size = _fill(fd, data, mode)
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    return size


def write_atomic_at(folder: int, name: str, data: bytes | BinaryIO, *, mode: int = FILE_MODE,
                    keep_mode: bool = False) -> int:
    """``write_atomic`` of the file ``name`` in the open folder ``folder``: nothing is looked up by path.

    The temporary file is made in that folder without following a symlink, and renamed over ``name``
    there: a symlink at ``name`` is replaced itself, never followed. ``keep_mode`` keeps the mode of a
    regular file that ``name`` was.
    """
    if keep_mode:
        with suppress(FileNotFoundError):
            status = os.lstat(name, dir_fd=folder)
            if stat.S_ISREG(status.st_mode):
                mode = status.st_mode & 0o7777
    temp, fd = new_hidden_file(folder, name, "tmp")
    try:
        size = _fill(fd, data, mode)
        os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp, dir_fd=folder)
        raise
    return size


def new_hidden_file(folder: int, name: str, suffix: str) -> tuple[str, int]:
    """A new file ``.<name>.<random>.<suffix>`` (0600) in the open ``folder``, never through a symlink: name, fd."""
    for _ in range(_TRIES):
        hidden = f".{name}.{secrets.token_hex(4)}.{suffix}"
        try:
            return hidden, os.open(hidden, _CREATE, 0o600, dir_fd=folder)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free name for a .{suffix} file", hidden)


def _fill(fd: int, data: bytes | BinaryIO, mode: int) -> int:
    """Write ``data`` to the new file ``fd`` with ``mode`` and fsync it; closes ``fd``; the bytes written."""
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), mode)
        if isinstance(data, bytes | bytearray | memoryview):
            file.write(data)
            size = len(data)
        else:
            size = 0
            while chunk := data.read(CHUNK):
                file.write(chunk)
                size += len(chunk)
        file.flush()
        os.fsync(file.fileno())
    return size
