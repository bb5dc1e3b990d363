"""One server per store, replayed: a second run.py on a live server's storage must not touch its runs."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.server import REPO, Servers, free_port, run_py

pytestmark = pytest.mark.slow  # starts real run.py servers

FINISHED = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def servers(tmp_path):
    with Servers(tmp_path) as servers:
        yield servers


def wait_for(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def second_server(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    """``python run.py`` on the same storage, to its end (it must end by itself)."""
    return subprocess.run([sys.executable, "run.py"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_second_server_on_the_same_storage_exits_2_and_leaves_the_first_servers_runs_alone(servers):
    first = servers.start()
    running = first.post("/api/workflows/slow/runs", json={"inputs": {"seconds": 3}}).json()
    parked = first.post("/api/workflows/slow/runs", json={"inputs": {"seconds": 60}}).json()
    assert wait_for(lambda: first.get(f"/api/runs/{parked['id']}").json()["status"] == "running", 10)

    # The attack: start another server on the live server's storage (a second port, so only the store is shared).
    second = second_server({**first.env, "PORT": str(free_port())})

    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert str(first.storage.resolve()) in lines[0]
    assert f"pid {first.process.pid}" in lines[0]
    assert "Traceback" not in second.stderr and "serving" not in second.stdout

    # The first server's runs went on as if nothing happened: each step ran once, no "restart" in its history.
    done = wait_for(lambda: (run := first.get(f"/api/runs/{running['id']}").json())["status"] in FINISHED and run, 15)
    assert done["status"] == "succeeded"
    assert [step["attempts"] for step in done["steps"]] == [1]
    assert "restart" not in [entry["by"] for entry in done["history"]]
    listed = {run["id"]: run["status"] for run in first.all_runs()}
    assert listed[running["id"]] == "succeeded"

    # A finished run cannot be cancelled into "cancelled"; the one still running can, and is.
    assert first.post(f"/api/runs/{running['id']}/cancel").status_code == 409
    assert first.get(f"/api/runs/{running['id']}").json()["status"] == "succeeded"
    cancelled = first.post(f"/api/runs/{parked['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert {run["id"]: run["status"] for run in first.all_runs()}[parked["id"]] == "cancelled"

    # And after a restart of the first server, nothing is resumed twice or changed.
    first.restart()
    assert first.get(f"/api/runs/{running['id']}").json()["status"] == "succeeded"
    assert first.get(f"/api/runs/{parked['id']}").json()["status"] == "cancelled"


def test_a_second_server_on_the_same_port_exits_2_in_one_line_naming_host_and_port(servers):
    first = servers.start()
    port = first.url.rsplit(":", 1)[1]
    other = servers.make("other")

    second = second_server({**other.env, "PORT": port})

    assert second.returncode == 2
    assert second.stderr.strip() == (f"run.py: cannot listen on 127.0.0.1:{port}: the address is already in use "
                                     f"(another server listens there); stop it or set PORT")
    # It failed before recovering anything: its own storage holds no run, and the lock is free again.
    assert sorted(path.name for path in other.storage.iterdir()) == ["server.lock"]
    other.env["PORT"] = "0"
    other.start()


def test_run_beside_a_live_server_is_refused_and_read_only_commands_work(servers):
    first = servers.start()
    running = first.post("/api/workflows/slow/runs", json={"inputs": {"seconds": 60}}).json()

    refused = run_py("run", "echo", "--input", '{"text": "hi"}', env=first.env)
    assert refused.returncode == 2
    assert f"pid {first.process.pid}" in refused.stderr
    assert "POST /api/workflows/echo/runs" in refused.stderr
    assert refused.stdout == ""

    listed = run_py("list", env=first.env)
    assert listed.returncode == 0 and "echo" in listed.stdout
    definition = first.storage.parent / "hello.yaml"
    definition.write_text("name: hello\nsteps:\n  - {name: say, type: log, config: {message: hi}}\n")
    validated = run_py("validate", str(definition), env=first.env)
    assert validated.returncode == 0, validated.stdout + validated.stderr

    assert first.get(f"/api/runs/{running['id']}").json()["status"] == "running"
    assert first.post(f"/api/runs/{running['id']}/cancel").json()["status"] == "cancelled"


class HungServer:
    """A TCP server that accepts connections and never says a word (a hung IMAP server)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)  # kept open, never answered

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def hung_imap():
    server = HungServer()
    yield server
    server.close()


def test_nine_hung_mail_servers_neither_stop_other_triggers_nor_sigterm(servers, hung_imap):
    server = servers.make(env={"WORKFLOW_POLL_TIMEOUT": "2", "WORKFLOW_SHUTDOWN_GRACE": "5"}).start()
    log = [{"name": "note", "type": "log", "config": {"message": "polled"}}]
    for number in range(9):  # more than the scheduler's 8 pool threads
        trigger = {"type": "email", "host": "127.0.0.1", "port": hung_imap.port, "user": "pyflow",
                   "password": "imap-pass", "security": "none", "poll_interval": 1}
        assert server.post("/api/workflows", json={"name": f"mail{number}", "trigger": trigger,
                                                   "steps": log}).status_code == 201
        assert server.post(f"/api/workflows/mail{number}/start").status_code == 200
    assert server.post("/api/workflows", json={"name": "ticker", "trigger": {"type": "interval", "seconds": 1},
                                               "steps": log}).status_code == 201
    assert server.post("/api/workflows/ticker/start").status_code == 200

    def ticks() -> int:
        return len(server.get("/api/runs", params={"workflow": "ticker", "limit": "200"}).json()["runs"])

    # Every mail poll hangs; the ticker keeps firing (once the hung polls pass their 2 s deadline at worst).
    assert wait_for(lambda: len(hung_imap.accepted) >= 9, 20), "the nine mail polls never connected"
    first = wait_for(ticks, 10)
    assert wait_for(lambda: ticks() >= first + 5, 20), "the interval trigger stopped firing"
    summary = server.get("/api/workflows/mail0").json()
    # Whichever came first, the socket timeout or the poll's deadline, the workflow says why.
    error = (summary["last_poll"] or {}).get("error") or ""
    assert "timed out" in error or "WORKFLOW_POLL_TIMEOUT" in error, summary["last_poll"]
    assert server.get("/api/health", timeout=5).status_code == 200

    # SIGTERM ends the process, exit 0, within the grace period (stop() asserts both).
    server.stop(timeout=15)
