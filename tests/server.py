"""A real ``python run.py`` process for integration tests: start it, wait for health, stop it.

    with Servers(tmp_path) as servers:
        server = servers.start()          # PORT=0: the port run.py prints is used
        requests.get(server.url + "/api/health", timeout=5)
        server.restart()                  # SIGTERM (must exit 0), then start again on the same storage

Every process is stopped when the ``with`` block ends, whatever happened.
Output goes to files (a pipe nobody reads would block the server once full).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from app.core.config import SETTINGS

REPO = Path(__file__).resolve().parent.parent
SERVING = re.compile(r"serving .* on (http://\S+:\d+)")

# Settings every server starts from, whatever the developer's environment says.
BASE_ENV = {
    "HOST": "127.0.0.1",
    "PORT": "0",
    "WORKFLOW_MODULES": "tests.fixtures.workflows",
    "WORKFLOW_RETRY_DELAY": "0.01",
    "WORKFLOW_STEP_TIMEOUT": "10",
    "SMTP_HOST": "",
    "IMAP_HOST": "",
}


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(storage: Path, extra: dict[str, str] | None = None, pythonpath: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of a run.py process: no PyFlow setting leaks in from the developer's shell."""
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS}
    env.update(BASE_ENV)
    env["WORKFLOW_STORAGE_PATH"] = str(storage)
    env["WORKFLOW_KEY_FILE"] = str(storage.parent / "encryption.key")  # beside the store, never in the home folder
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *pythonpath])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_py(*args: str, env: dict[str, str], timeout: float = 30, stdin: str | None = None
           ) -> subprocess.CompletedProcess:
    """Run ``python run.py ARGS`` to the end (``stdin``: text for its standard input); stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
        input=stdin,
    )


class LatestOutput:
    """stdout and stderr of a process's latest start, kept as ``<logs>/<stream>-<starts>.txt``."""

    logs: Path
    starts: int

    @property
    def stdout(self) -> str:
        return self._read("stdout")

    @property
    def stderr(self) -> str:
        return self._read("stderr")

    def _read(self, stream: str) -> str:
        path = self.logs / f"{stream}-{self.starts}.txt"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


class Server(LatestOutput):
    """One run.py serving on loopback; ``url`` is its base URL once started."""

    def __init__(self, storage: Path, logs: Path, env: dict[str, str]):
        self.storage = storage
        self.logs = logs
        self.env = env
        self.url = ""
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.args: tuple[str, ...] = ()  # run.py's command line (none: serve, as settings say)

    # -- life cycle -----------------------------------------------------------
    def start(self, timeout: float = 20) -> Server:
        """Start run.py and wait until GET /api/health answers 200."""
        assert self.process is None, "already started"
        self.starts += 1
        stdout = (self.logs / f"stdout-{self.starts}.txt").open("w", encoding="utf-8")
        stderr = (self.logs / f"stderr-{self.starts}.txt").open("w", encoding="utf-8")
        with stdout, stderr:
            self.process = subprocess.Popen(
                [sys.executable, "run.py", *self.args], cwd=REPO, env=self.env, stdout=stdout, stderr=stderr
            )
        # With PORT=0 every start gets a new port: read it from what run.py prints.
        self.url = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                raise AssertionError(f"run.py exited with {code} while starting:\n{self.stderr}")
            if not self.url:
                found = SERVING.search(self.stdout)
                self.url = found.group(1) if found else ""
            if self.url and self._healthy():
                return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"run.py did not answer /api/health within {timeout:g} s:\n{self.stderr}")

    def _healthy(self) -> bool:
        try:
            response = requests.get(f"{self.url}/api/health", timeout=1)
        except requests.ConnectionError:
            return False
        return response.status_code == 200

    def stop(self, timeout: float = 8) -> int:
        """SIGTERM; the exit code, after checking run.py exited 0 and said "PyFlow stopped"."""
        process = self.process
        assert process is not None, "not started"
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"run.py did not stop within {timeout:g} s of SIGTERM") from None
        self.process = None
        assert code == 0, f"run.py exited with {code} after SIGTERM:\n{self.stderr}"
        assert "PyFlow stopped" in self.stdout
        return code

    def kill(self) -> None:
        """SIGKILL: the crash case; nothing gets a chance to clean up."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> Server:
        """Stop cleanly, then start again on the same storage."""
        self.stop()
        return self.start()

    # -- HTTP -----------------------------------------------------------------
    def get(self, path: str, **kwargs) -> requests.Response:
        """GET ``path`` (starting with /api) from this server."""
        kwargs.setdefault("timeout", 10)
        return requests.get(self.url + path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        """POST to ``path`` (starting with /api) on this server."""
        kwargs.setdefault("timeout", 15)
        return requests.post(self.url + path, **kwargs)

    def put(self, path: str, **kwargs) -> requests.Response:
        """PUT to ``path`` (starting with /api) on this server."""
        kwargs.setdefault("timeout", 15)
        return requests.put(self.url + path, **kwargs)

    def all_runs(self, page: int = 100, **query: str) -> list[dict]:
        """Every run the server lists, following ``next`` from page to page."""
        runs: list[dict] = []
        cursor = None
        while True:
            params = {"limit": str(page), **query, **({"cursor": cursor} if cursor else {})}
            response = self.get("/api/runs", params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            runs.extend(body["runs"])
            cursor = body["next"]
            if not cursor:
                return runs


class Servers:
    """Makes run.py servers under one folder and kills whatever still runs at the end."""

    def __init__(self, root: Path):
        self.root = root
        self.servers: list[Server] = []

    def make(self, name: str = "server", env: dict[str, str] | None = None, pythonpath: tuple[str, ...] = ()) -> Server:
        """A server (not started) with its storage at ``<root>/<name>/data``."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        storage = folder / "data"
        server = Server(storage, folder, server_env(storage, env, pythonpath))
        self.servers.append(server)
        return server

    def start(self, name: str = "server", env: dict[str, str] | None = None) -> Server:
        """A started server."""
        return self.make(name, env).start()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for server in self.servers:
            server.kill()
