"""Files and folders only their owner may read: what PyFlow writes under WORKFLOW_STORAGE_PATH.

Run records, definitions, trigger state, uploads and mail hold inputs and
credentials, so other users of the machine must not read them, whatever the
process's umask says: modes are set explicitly once a file or folder exists.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_private_dir(path: Path | str) -> Path:
    """``mkdir -p`` where every folder it creates is 0700 (folders that existed keep their mode)."""
    path = Path(path)
    missing = []
    current = path
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):  # below a regular file, the first mkdir fails "Not a directory"
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # made by another thread or process meanwhile: it sets the mode
        os.chmod(folder, DIR_MODE)  # mkdir's mode is filtered by the umask
    if not path.is_dir():
        raise FileExistsError(errno.EEXIST, f"{os.strerror(errno.EEXIST)} and is not a folder", str(path))
    return path


def open_private(path: Path | str, flags: int) -> int:
    """``os.open``; with O_CREAT the file ends up 0600 whatever the umask (an older, wider file is narrowed too)."""
    fd = os.open(path, flags, FILE_MODE)
    if flags & os.O_CREAT:
        try:
            if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
        except OSError:
            os.close(fd)
            raise
    return fd
