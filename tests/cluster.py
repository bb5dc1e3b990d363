"""Separate run.py processes as the hosts of one PyFlow installation: servers and workers on one database.

    cluster = Cluster(tmp_path, {"WORKFLOW_DATABASE_URL": url, "WORKFLOW_EXECUTOR": "procrastinate"})
    a, b = cluster.server("a"), cluster.server("b")   # started: GET /api/health answers 200
    w1 = cluster.worker("w1")                          # started: `python run.py worker` says it takes jobs
    w1.kill()                                          # kill -9 of its process group: a host that died
    w1.freeze(); w1.thaw()                             # SIGSTOP, SIGCONT: a host paused past its lease
    cluster.worker_of(pid)                             # the worker whose process group holds a pid
    cluster.report()                                   # every process's output, for a failure message
    cluster.close()                                    # kills whatever still runs

Every process has a storage folder of its own (hosts share no disk), its own port and its own
log files, and runs in a process group of its own, so a kill -9 also takes any child it made.
``cluster_report`` puts ``report()`` into the report of a test that failed (tests/conftest.py
imports the hook). Nothing here sleeps a fixed time: every wait is for a condition.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.server import REPO, LatestOutput, Server, free_port, server_env
from tests.waiting import wait_until

# What `run.py worker` logs as it starts taking jobs.
WORKER_READY = re.compile(r"worker \S+: up to \d+ runs at once")
# Settings every process of a cluster starts from: short leases, so a takeover takes seconds, not minutes.
CLUSTER_ENV = {
    "WORKFLOW_MODULES": "tests.fixtures.cluster_workflows",
    "WORKFLOW_LEASE_SECONDS": "2",
    "WORKFLOW_WORKER_CONCURRENCY": "2",
}
START_TIMEOUT = 30.0
REPORT_LINES = 80

# The report callables of a test's clusters (see cluster_report).
REPORTS = pytest.StashKey[list]()


def _spawn(argv: list[str], env: dict[str, str], logs: Path, start: int) -> subprocess.Popen:
    """Start ``python run.py ARGV`` in a session (process group) of its own, output to log files."""
    stdout = (logs / f"stdout-{start}.txt").open("w", encoding="utf-8")
    stderr = (logs / f"stderr-{start}.txt").open("w", encoding="utf-8")
    with stdout, stderr:
        return subprocess.Popen([sys.executable, "run.py", *argv], cwd=REPO, env=env, stdout=stdout, stderr=stderr,
                                start_new_session=True)


def _kill_group(process: subprocess.Popen | None) -> None:
    """SIGKILL to the process and every process of its group, then reap it."""
    if process is None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return "(no file)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    cut = f"... {len(text) - lines} lines before ...\n" if len(text) > lines else ""
    return cut + "\n".join(text[-lines:])


def _wait_started(node: ClusterServer | Worker, ready: Callable[[], bool], what: str, timeout: float) -> None:
    """Wait until ``ready()``; fail with the process's output if it exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not ready():
        process = node.process
        assert process is not None
        if process.poll() is not None:
            node.process = None
            raise AssertionError(f"{node.name} exited with {process.returncode} while starting:\n{node.stderr}")
        if time.monotonic() > deadline:
            node.kill()
            raise AssertionError(f"{node.name} did not {what} within {timeout:g} s:\n{node.stderr}")
        time.sleep(0.05)


class ClusterServer(Server):
    """A `python run.py` server of a cluster: tests/server.py's Server on a port and process group of its own."""

    def __init__(self, name: str, storage: Path, logs: Path, env: dict[str, str]):
        super().__init__(storage, logs, env)
        self.name = name

    def start(self, timeout: float = START_TIMEOUT) -> ClusterServer:
        """Start run.py and wait until GET /api/health answers 200."""
        assert self.process is None, f"{self.name} is already started"
        self.starts += 1
        self.url = f"http://127.0.0.1:{self.env['PORT']}"
        self.process = _spawn([], self.env, self.logs, self.starts)
        _wait_started(self, self._healthy, "answer /api/health", timeout)
        return self

    def _healthy(self) -> bool:
        # A server still starting on a busy machine may take longer than the check's second to answer.
        try:
            return requests.get(f"{self.url}/api/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """kill -9 of its process group: the crash case; nothing gets a chance to clean up."""
        _kill_group(self.process)
        self.process = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    def summary(self, workflow: str) -> dict:
        """GET /api/workflows/<workflow>: its Summary as this server sees it."""
        response = self.get(f"/api/workflows/{workflow}")
        assert response.status_code == 200, f"{self.name}: {response.status_code} {response.text}"
        return response.json()

    def polls(self, workflow: str) -> bool:
        """True when this server polls the workflow's trigger (it leads); False also when it does not answer."""
        try:
            return bool(self.summary(workflow).get("polled_here"))
        except (requests.RequestException, AssertionError):
            return False


class Worker(LatestOutput):
    """A `python run.py worker` of a cluster: it takes jobs and executes runs."""

    def __init__(self, name: str, storage: Path, logs: Path, env: dict[str, str]):
        self.name = name
        self.storage = storage
        self.logs = logs
        self.env = env
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = START_TIMEOUT) -> Worker:
        """Start the worker and wait until it says it takes jobs."""
        assert self.process is None, f"{self.name} is already started"
        self.starts += 1
        self.process = _spawn(["worker"], self.env, self.logs, self.starts)
        _wait_started(self, lambda: bool(WORKER_READY.search(self.stdout + self.stderr)), "take jobs", timeout)
        return self

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM; its exit code (it finishes what it holds first)."""
        process = self.process
        assert process is not None, f"{self.name} is not running"
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within {timeout:g} s of SIGTERM") from None
        finally:
            self.process = None

    def kill(self) -> None:
        """kill -9 of its process group: a worker host that died mid-step."""
        _kill_group(self.process)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP to its process group: a host paused (a VM suspended, a long GC pause, a partition)."""
        os.killpg(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT to its process group: the paused host goes on where it stopped."""
        os.killpg(self.pid, signal.SIGCONT)

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    @property
    def worker_id(self) -> str:
        """How run records name this worker: ``host:pid``."""
        return f"{socket.gethostname()}:{self.pid}"


class Cluster:
    """The servers and workers of one installation (one database), each its own process, folder and logs."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root = root
        self.env = {**CLUSTER_ENV, **env}
        self.servers: list[ClusterServer] = []
        self.workers: list[Worker] = []

    def _folder(self, name: str) -> tuple[Path, Path]:
        folder = self.root / name
        assert not folder.exists(), f"a process called {name!r} already exists in this cluster"
        storage = folder / "data"
        storage.mkdir(parents=True)
        return storage, folder

    def server(self, name: str, env: dict[str, str] | None = None, *, start: bool = True) -> ClusterServer:
        """A server on a free port with its own storage folder; started unless ``start=False``."""
        storage, folder = self._folder(name)
        extra = {**self.env, "PORT": str(free_port()), **(env or {})}
        server = ClusterServer(name, storage, folder, server_env(storage, extra))
        self.servers.append(server)
        return server.start() if start else server

    def worker(self, name: str, env: dict[str, str] | None = None, *, start: bool = True) -> Worker:
        """A worker with its own storage folder; started unless ``start=False``."""
        storage, folder = self._folder(name)
        worker = Worker(name, storage, folder, server_env(storage, {**self.env, **(env or {})}))
        self.workers.append(worker)
        return worker.start() if start else worker

    def worker_of(self, pid: int, pgid: int | None = None) -> Worker:
        """The running worker that is process ``pid``, or whose process group is ``pgid``."""
        for worker in self.workers:
            if worker.process is not None and worker.pid in (pid, pgid):
                return worker
        raise AssertionError(f"no running worker of this cluster is process {pid} (group {pgid})")

    def leader(self, workflow: str, timeout: float = 20.0) -> ClusterServer:
        """The one running server that polls ``workflow``, once exactly one says so (``polled_here``)."""
        def leading() -> list[ClusterServer] | None:
            found = [server for server in self.servers if server.process is not None and server.polls(workflow)]
            return found or None

        found = wait_until(leading, timeout=timeout, interval=0.1, message=f"a server polling {workflow}")
        assert len(found) == 1, f"{len(found)} servers poll {workflow} at once: {[s.name for s in found]}"
        return found[0]

    def report(self) -> str:
        """The tail of every process's output, newest start of each."""
        parts = []
        for node in [*self.servers, *self.workers]:
            state = "running" if node.process is not None else "not running"
            for stream in ("stdout", "stderr"):
                path = node.logs / f"{stream}-{node.starts}.txt"
                parts.append(f"----- {node.name} ({state}, start {node.starts}) {stream}\n{_tail(path, REPORT_LINES)}")
        return "\n".join(parts)

    def close(self) -> None:
        """Kill every process still running (kill -9 of each group)."""
        for node in [*self.workers, *self.servers]:
            node.kill()


def cluster_report(item: pytest.Item, report: Callable[[], str]) -> None:
    """Have ``report()`` shown in the failure report of the test ``item`` (see pytest_runtest_makereport)."""
    item.stash.setdefault(REPORTS, []).append(report)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test that ran a cluster shows its processes' output beside the assertion."""
    report = yield
    if report.failed:
        for describe in item.stash.get(REPORTS, []):
            try:
                report.sections.append(("cluster processes' output", describe()))
            except Exception as error:  # a report must never hide the failure it explains
                report.sections.append(("cluster processes' output", f"(unavailable: {error!r})"))
    return report
