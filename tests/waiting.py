"""Waiting in tests: for a condition, never for a fixed time."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path


def wait_until(condition, timeout: float = 3.0, interval: float = 0.02, message: str = "condition"):
    """Poll ``condition()`` until it returns something truthy, and return that; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not met within {timeout} s (last value: {value!r})")
        time.sleep(interval)



def process_alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a killed orphan may stay a zombie until init reaps it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def threads_in(qualname: str, name_prefix: str = "") -> list[threading.Thread]:
    """Live threads (named ``name_prefix...``) with a call of ``qualname`` (e.g. "GateAction.execute") under way."""
    frames = sys._current_frames()
    found = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident) if thread.name.startswith(name_prefix) else None
        if frame is not None and any(_qualname(entry) == qualname for entry in _frames(frame)):
            found.append(thread)
    return found


def _frames(frame):
    while frame is not None:
        yield frame
        frame = frame.f_back


def _qualname(frame) -> str:
    return frame.f_code.co_qualname
