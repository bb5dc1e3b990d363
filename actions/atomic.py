"""One atomic file write for everything PyFlow saves: a reader sees the old file or the new one, never a part."""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from actions.private_files import FILE_MODE

CHUNK = 1024 * 1024


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
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    return size
