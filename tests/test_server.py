"""run.py as users run it: a real waitress server process, restarts, crashes and concurrency."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import requests

from tests.disks import tmpfs
from tests.server import Server, Servers, free_port, run_py, server_env

pytestmark = pytest.mark.slow  # starts real run.py servers, restarts and kills them

FINISHED = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def servers(tmp_path):
    with Servers(tmp_path) as servers:
        yield servers


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One server for the tests that only add runs of their own."""
    with Servers(tmp_path_factory.mktemp("shared")) as servers:
        yield servers.start()


def wait_for(predicate, timeout: float, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; that value, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def tick_count(server: Server) -> int:
    path = server.storage / "ticks.txt"
    return len(path.read_text(encoding="utf-8").splitlines()) if path.exists() else 0


def test_serves_with_waitress_not_the_dev_server(shared):
    response = shared.get("/api/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    # run.py hands waitress ident="PyFlow"; Werkzeug's dev server would say "Werkzeug/x.y".
    assert response.headers["Server"] == "PyFlow"
    assert "development server" not in shared.stderr
    assert "Traceback" not in shared.stderr
    assert shared.stdout.startswith("PyFlow serving ")
    names = {summary["name"] for summary in shared.get("/api/workflows").json()["workflows"]}
    assert {"echo", "slow", "tick", "uptime_monitor"} <= names


def test_unknown_api_path_is_json_from_waitress_too(shared):
    response = shared.get("/api/nope")

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"


def test_sigterm_stops_cleanly(servers):
    server = servers.start()
    response = server.post("/api/workflows/echo/runs?wait=10", json={"inputs": {"text": "bye"}})
    assert response.status_code == 200

    assert server.stop() == 0

    assert server.stdout.rstrip().endswith("PyFlow stopped")
    assert "Traceback" not in server.stderr
    with pytest.raises(requests.ConnectionError):
        server.get("/api/health", timeout=2)


def test_runs_survive_a_restart(servers):
    server = servers.start()
    created = []
    for text in ("one", "two", "three"):
        response = server.post("/api/workflows/echo/runs?wait=10", json={"inputs": {"text": text}})
        assert response.status_code == 200
        created.append(response.json())
    failed = server.post("/api/workflows/failing/runs?wait=10").json()

    server.restart()

    listed = server.all_runs()
    assert [run["id"] for run in listed] == [failed["id"], *reversed([run["id"] for run in created])]
    for before in [*created, failed]:
        after = server.get(f"/api/runs/{before['id']}")
        assert after.status_code == 200
        assert after.json() == before
    assert server.get(f"/api/runs/{created[1]['id']}").json()["steps"][1]["result"] == {"value": "TWO"}


def test_kill_9_loses_no_answered_run_and_resumes_unfinished_ones(servers):
    # Few slots and slow runs, so a queue is building up when the process dies.
    server = servers.make(env={"WORKFLOW_MAX_CONCURRENT": "3"}).start()
    answered: dict[str, str] = {}
    refused: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def post_runs(worker: int) -> None:
        with requests.Session() as session:
            for number in range(10_000):
                if stop.is_set():
                    return
                workflow, inputs = (
                    ("slow", {"seconds": 0.3}) if number % 2 else ("echo", {"text": f"{worker}-{number}"})
                )
                try:
                    response = session.post(
                        f"{server.url}/api/workflows/{workflow}/runs", json={"inputs": inputs}, timeout=5
                    )
                except requests.RequestException as error:
                    errors.append(repr(error))
                    return  # the server died before or while answering: not an answered POST
                with lock:
                    if response.status_code in (200, 202):
                        answered[response.json()["id"]] = workflow
                    else:
                        refused.append(response.text)

    threads = [threading.Thread(target=post_runs, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: len(answered) >= 40, timeout=15, interval=0.01), (answered, errors, server.stderr)
        server.kill()  # while POSTs are in flight
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)

    assert refused == []
    server.start()

    # Every answered POST is a run on disk, and every stored run can be read.
    stored = server.all_runs(page=25)
    ids = [run["id"] for run in stored]
    assert len(ids) == len(set(ids))
    assert set(answered) <= set(ids)
    for run in stored:
        response = server.get(f"/api/runs/{run['id']}")
        assert response.status_code == 200
        assert response.json()["workflow"] == answered.get(run["id"], run["workflow"])
    unfinished_at_kill = [run["id"] for run in stored if run["status"] not in FINISHED]
    assert unfinished_at_kill, "expected runs queued or running when the server was killed"

    def all_finished() -> list[dict] | None:
        runs = server.all_runs(page=100)
        return runs if all(run["status"] in FINISHED for run in runs) else None

    finished = wait_for(all_finished, timeout=20, interval=0.2)
    assert finished, "runs interrupted by kill -9 were not finished after the restart"
    assert Counter(run["status"] for run in finished) == {"succeeded": len(ids)}
    assert {run["id"] for run in finished} == set(ids)
    for run in finished:
        assert [step["status"] for step in run["steps"]] == ["succeeded"] * len(run["steps"])


def test_concurrent_posts_each_get_their_own_run(shared):
    results: list[list[tuple[int, dict]]] = [[] for _ in range(8)]

    def post_many(worker: int) -> None:
        with requests.Session() as session:
            for number in range(25):
                response = session.post(
                    f"{shared.url}/api/workflows/echo/runs?wait=10",
                    json={"inputs": {"text": f"w{worker}-{number}"}},
                    timeout=20,
                )
                results[worker].append((response.status_code, response.json()))

    threads = [threading.Thread(target=post_many, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    runs = [run for worker in results for _, run in worker]
    assert len(runs) == 200
    assert {status for worker in results for status, _ in worker} == {200}
    assert {run["status"] for run in runs} == {"succeeded"}
    for run in runs:
        text = run["trigger_data"]["text"]
        assert [step["result"]["value"] for step in run["steps"]] == [text, text.upper()]
    ids = [run["id"] for run in runs]
    assert len(set(ids)) == 200

    listed = shared.get("/api/runs", params={"workflow": "echo", "limit": "500"}).json()
    assert sorted(run["id"] for run in listed["runs"]) == sorted(ids)
    assert listed["next"] is None


def test_started_workflow_stays_started_across_restarts_and_stopped_stays_stopped(servers):
    server = servers.start()
    assert server.post("/api/workflows/tick/start").json()["status"] == "running"
    assert wait_for(lambda: tick_count(server) >= 3, timeout=5)

    server.restart()

    assert server.get("/api/workflows/tick").json()["status"] == "running"
    before = tick_count(server)
    assert wait_for(lambda: tick_count(server) >= before + 3, timeout=5), "ticks stopped after the restart"

    assert server.post("/api/workflows/tick/stop").json()["status"] == "stopped"
    # A run that had started before the stop may still append its line.
    assert wait_for(lambda: all(run["status"] not in ("queued", "running") for run in server.all_runs(workflow="tick")),
                    timeout=10), "tick runs still unfinished after the stop"
    stopped_at = tick_count(server)
    time.sleep(0.6)  # an absence, which no event marks: three intervals in which no tick may come
    assert tick_count(server) == stopped_at

    server.restart()

    assert server.get("/api/workflows/tick").json()["status"] == "stopped"
    time.sleep(0.6)  # an absence, which no event marks: three intervals in which no tick may come
    assert tick_count(server) == stopped_at
    # Every line is one succeeded run, and no run wrote twice.
    lines = (server.storage / "ticks.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(set(lines))
    runs = server.all_runs(workflow="tick")
    assert sorted(run["id"] for run in runs) == sorted(lines)


def test_a_workflow_module_that_fails_to_import_stops_start_up_with_one_line(servers, tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "broken_flows.py").write_text('import os\n\nraise RuntimeError("no config here")\n', encoding="utf-8")
    server = servers.make(env={"WORKFLOW_MODULES": "tests.fixtures.workflows,broken_flows"}, pythonpath=(str(modules),))

    with pytest.raises(AssertionError, match="run.py exited with 2 while starting"):
        server.start()  # it exits on its own (a start-up that hung would time out instead)
    error = server.stderr
    assert "broken_flows.py" in error
    assert "line 3" in error
    assert "RuntimeError: no config here" in error
    assert "Traceback" not in error
    assert error.strip().count("\n") == 0, error


@pytest.mark.parametrize("args", [("--port",), ("serve", "--host", "127.0.0.1", "--port")])
def test_the_address_given_on_the_command_line_wins_over_the_settings(servers, args):
    port, setting = free_port(), free_port()
    server = servers.make(env={"PORT": str(setting)})
    server.args = (*args, str(port))
    server.start()
    try:
        assert server.url == f"http://127.0.0.1:{port}"
        assert server.get("/api/health").status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize(("args", "message"), [
    (("--port", "http"), "run.py: --port: setting PORT must be a port number 0-65535, got 'http'"),
    (("--port", "8000", "list"), "run.py: --host and --port are options of serve, not of list"),
])
def test_a_wrong_address_option_is_one_line(tmp_path, args, message):
    done = run_py(*args, env=server_env(tmp_path / "data"))
    assert done.returncode == 2 and done.stderr.strip() == message, done.stderr


# -- under load and at shutdown --------------------------------------------------------------------------------

def test_two_hundred_concurrent_clients_all_get_an_answer(servers):
    server = servers.start()
    answers: list[int] = []
    failures: list[str] = []
    start = threading.Barrier(200)

    def client(number: int) -> None:
        start.wait(30)
        try:
            # A fresh connection each: 200 connections open at once (waitress's default limit was 100).
            response = requests.post(f"{server.url}/api/workflows/echo/runs?wait=60",
                                     json={"inputs": {"text": f"c{number}"}}, timeout=120,
                                     headers={"Connection": "close"})
            answers.append(response.status_code)
        except requests.RequestException as error:
            failures.append(f"client {number}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=client, args=(number,)) for number in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)  # a generous overall deadline, not a timing assertion

    assert failures == []
    assert Counter(answers) == {200: 200}
    # Queued requests are not one warning line each: at most one per busy period.
    assert server.stderr.count("Task queue depth") <= 1


def test_sigterm_answers_a_waiting_request_with_the_run_as_it_stands_and_exits_0(servers):
    server = servers.make(env={"WORKFLOW_SHUTDOWN_GRACE": "5"}).start()
    answer: list[requests.Response] = []
    waiting = threading.Thread(target=lambda: answer.append(requests.post(
        f"{server.url}/api/workflows/slow/runs?wait=30", json={"inputs": {"seconds": 20}}, timeout=60)))
    waiting.start()

    def running() -> list[dict]:
        return [run for run in server.get("/api/runs", params={"workflow": "slow"}).json()["runs"]
                if run["status"] == "running"]

    assert wait_for(running, 10), "the slow run never started"
    assert server.stop(timeout=15) == 0  # asserts exit 0 and "PyFlow stopped"
    waiting.join(15)

    assert len(answer) == 1
    assert answer[0].status_code == 202
    assert answer[0].headers["Content-Type"] == "application/json"
    assert answer[0].json()["status"] == "running"
    assert "Traceback" not in server.stderr

    # The run was left as stored; the next start resumes it.
    run_id = answer[0].json()["id"]
    server.start()
    assert server.get(f"/api/runs/{run_id}").json()["status"] in {"queued", "running", "succeeded"}


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of its own: it can be filled or remounted read-only."""
    with tmpfs(tmp_path / "disk", "8m", "the storage-fault tests") as mount:
        yield mount


def test_sigterm_on_read_only_storage_exits_0(servers, small_disk):
    import subprocess

    server = servers.make(env={"WORKFLOW_STORAGE_PATH": str(small_disk / "data"), "WORKFLOW_SHUTDOWN_GRACE": "5"})
    server.storage = small_disk / "data"
    server.start()
    done = server.post("/api/workflows/echo/runs?wait=10", json={"inputs": {"text": "before"}}).json()
    server.stop()
    # A disk that turned read-only (remounted after an error, as ext4 does): the server starts and reads.
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    server.start()
    assert server.get(f"/api/runs/{done['id']}").json()["status"] == "succeeded"
    refused = server.post("/api/workflows/echo/runs", json={"inputs": {"text": "late"}})
    assert refused.status_code == 503, refused.text

    assert server.stop(timeout=15) == 0  # exit 0 within the grace period, "PyFlow stopped" printed
    assert "Traceback" not in server.stderr


# -- app/api/server.py's parts --------------------------------------------------------------------------------------

def test_listen_on_a_busy_port_is_one_line_naming_host_and_port():
    from app.api.server import listen
    from app.errors import ConfigError

    taken = listen("127.0.0.1", 0, backlog=8)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as refused:
            listen("127.0.0.1", port, backlog=8)
        assert refused.value.message == (f"cannot listen on 127.0.0.1:{port}: the address is already in use "
                                         f"(another server listens there); stop it or set PORT")
        with pytest.raises(ConfigError, match=r"^cannot listen on no-such-host\.invalid:5001: HOST "):
            listen("no-such-host.invalid", 5001, backlog=8)
    finally:
        taken.close()


def test_the_queue_depth_warning_is_one_line_per_busy_period(caplog):
    import logging

    from app.api.server import QueueDepthLog

    log = logging.getLogger("waitress.queue.test")
    quiet = QueueDepthLog(quiet_seconds=3600)
    log.addFilter(quiet)
    try:
        with caplog.at_level(logging.WARNING, logger="waitress.queue.test"):
            for depth in range(1, 500):
                log.warning("Task queue depth is %d", depth)
        assert [record.getMessage().split(" (")[0] for record in caplog.records] == ["Task queue depth is 1"]
        assert quiet.dropped == 498
        quiet.quiet_seconds = 0  # a period without any: the next busy period gets its line
        with caplog.at_level(logging.WARNING, logger="waitress.queue.test"):
            log.warning("Task queue depth is %d", 7)
        assert caplog.records[-1].getMessage().startswith("Task queue depth is 7")
    finally:
        log.removeFilter(quiet)


def test_a_run_stopped_by_a_full_disk_finishes_by_itself_once_there_is_room(servers, small_disk):
    server = servers.make(env={"WORKFLOW_STORAGE_PATH": str(small_disk / "data")})
    server.storage = small_disk / "data"
    server.start()
    # Its inputs make the final record larger than what is left of a journal's last page.
    run = server.post("/api/workflows/slow/runs", json={"inputs": {"seconds": 1.5, "padding": "x" * 65536}}).json()
    filler = small_disk / "filler.bin"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass  # the disk is full

    assert wait_for(lambda: "could not record it" in server.stderr, 20), "the full disk never stopped the run"
    assert server.get(f"/api/runs/{run['id']}").json()["status"] in {"queued", "running"}
    filler.unlink()  # room again; nobody restarts anything

    finished = wait_for(lambda: (got := server.get(f"/api/runs/{run['id']}").json())["status"] in FINISHED and got, 60)
    assert finished, "the run did not resume once the disk had room"
    assert finished["status"] == "succeeded"
    assert {listed["id"]: listed["status"] for listed in server.all_runs()}[run["id"]] == "succeeded"
    assert server.stop() == 0
