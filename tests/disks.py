"""A file system of a test's own: a tmpfs that fills up, is remounted read-only, or is another device."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(folder: Path, size: str, tests: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (such as "2m") at the new ``folder``; ``tests`` skip unless run as root."""
    if os.geteuid() != 0:
        pytest.skip(f"mounting a tmpfs needs root: {tests} run as root (CI container)")
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
