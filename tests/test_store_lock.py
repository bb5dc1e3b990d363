"""The store's lock: one process at a time, naming its holder, freed when the holder dies."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import pytest

from app.storage.lock import StoreLock, StoreLocked
from tests.server import REPO
from tests.waiting import wait_until

HOLD = """
import sys, time
from app.storage.lock import StoreLock
StoreLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)  # holds the lock until the test kills it
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock on ``tmp_path / "data"``."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "data")], cwd=REPO,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        yield process
    finally:
        process.kill()
        process.wait(10)
        process.stdout.close()


def test_the_lock_file_holds_the_pid_and_only_its_owner_may_read_it(tmp_path):
    with StoreLock(tmp_path / "data") as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(lock.path.parent.stat().st_mode) == 0o700


def test_a_second_process_is_refused_naming_the_folder_and_the_holders_pid(tmp_path, holder):
    with pytest.raises(StoreLocked) as refused:
        StoreLock(tmp_path / "data").acquire()
    assert refused.value.pid == holder.pid
    assert refused.value.folder == (tmp_path / "data").resolve()
    assert str((tmp_path / "data").resolve()) in refused.value.message
    assert f"pid {holder.pid}" in refused.value.message


def test_the_lock_is_free_again_once_its_holder_is_killed(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    lock = StoreLock(tmp_path / "data")

    def acquired() -> bool:
        try:
            lock.acquire()
        except StoreLocked:
            return False
        return True

    wait_until(acquired, timeout=5, interval=0.05, message="the lock of a killed process released")
    assert lock.path.read_text() == f"{os.getpid()}\n"
    lock.release()


def test_released_it_can_be_taken_again(tmp_path):
    first = StoreLock(tmp_path / "data")
    first.acquire()
    with pytest.raises(StoreLocked):
        StoreLock(tmp_path / "data").acquire()  # another descriptor is another holder, even in one process
    first.release()
    with StoreLock(tmp_path / "data"):
        pass


def test_a_read_only_lock_file_can_still_be_locked(tmp_path):
    with StoreLock(tmp_path / "data") as lock:
        path = lock.path
    path.chmod(0o400)
    if os.geteuid() == 0:
        pytest.skip("root opens a read-only file for writing anyway")
    with StoreLock(tmp_path / "data"):
        with pytest.raises(StoreLocked):
            StoreLock(tmp_path / "data").acquire()
