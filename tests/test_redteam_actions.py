"""Red-team findings on actions and triggers (DESIGN section 10): what a posted definition or a run's inputs
could make a step do to the host, each now refused. The attacks run against the real actions and servers."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import stat
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

import actions.file as file_module
from actions.base import ActionError, RunContext
from actions.file import FileAction
from actions.notify import NotifyAction
from actions.shell import ShellAction
from app import create_app, start_app
from app.core.events import MAX_CHAIN_RUNS, MAX_EVENT_DEPTH
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS
from tests.http_server import serving
from tests.server import Servers, free_port
from tests.waiting import process_alive, wait_until

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def make_app_client(tmp_path):
    """An in-process server with extra settings (as tests/conftest.py's ``app``), its test client; shut down after."""
    apps = []

    def make(**settings):
        app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / f"data{len(apps)}"),
                                    "WORKFLOW_KEY_FILE": str(tmp_path / "encryption.key"),
                                    "WORKFLOW_CLASSES": WORKFLOWS, **settings}))
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["pyflow"].shutdown(timeout=2)


def file_step(tmp_path, **config) -> dict:
    """One file step with WORKFLOW_FILES_ROOT's default, ``<tmp_path>/files``."""
    action = FileAction("f", **config)
    action.context = RunContext(settings={}, storage_path=str(tmp_path))
    return action.execute({})


# -- file: a FIFO inside the root held a read (and the step's thread) for ever ---------------------------------
@pytest.mark.parametrize("operation", ["read", "copy", "append"])
def test_a_fifo_in_the_files_root_is_refused_not_read_for_ever(tmp_path, operation):
    root = tmp_path / "files"
    root.mkdir()
    os.mkfifo(root / "pipe")  # anyone who may drop files in the root (a shared inbox) can make one
    config = {"destination": "copy.txt"} if operation == "copy" else {"content": "x"} if operation == "append" else {}
    outcome: dict = {}

    def attempt() -> None:
        try:
            outcome["result"] = file_step(tmp_path, operation=operation, path="pipe", **config)
        except Exception as error:  # noqa: BLE001 (the outcome is asserted below)
            outcome["error"] = error

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # the old behaviour: free the thread (a writer's end of file) before failing
        os.close(os.open(root / "pipe", os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=30)
        pytest.fail(f"file {operation} of a FIFO blocked until a writer came")
    error = outcome.get("error")
    assert isinstance(error, ActionError), outcome
    assert str(error) == f"file {operation}: 'pipe' is a FIFO; only regular files can be read"
    assert not error.retryable


# -- file: a folder swapped for a symlink between the path check and the open -----------------------------------
def test_a_symlink_swapped_in_after_the_check_does_not_lead_out(tmp_path, monkeypatch):
    root, outside = tmp_path / "files", tmp_path / "outside"
    (root / "box").mkdir(parents=True)
    (root / "box" / "a.txt").write_text("harmless")
    outside.mkdir()
    (outside / "a.txt").write_text("TOP SECRET")
    checked = file_module.inside

    def check_then_swap(*args, **kwargs):
        # The real check passes; then the attacker (a local user of a shared root) swaps the folder for a link.
        path = checked(*args, **kwargs)
        if (root / "box").is_dir() and not (root / "box").is_symlink():
            os.rename(root / "box", root / "box.old")
            (root / "box").symlink_to(outside)
        return path

    monkeypatch.setattr(file_module, "inside", check_then_swap)
    with pytest.raises(ActionError, match=r"^file read: 'box/a.txt' led outside WORKFLOW_FILES_ROOT \(.*\) when "
                                          r"opened \(a symlink changed after the check\)$") as caught:
        file_step(tmp_path, operation="read", path="box/a.txt")
    assert "TOP SECRET" not in str(caught.value)
    assert not caught.value.retryable


def test_a_file_read_stays_bounded_and_a_copy_is_streamed(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    (root / "a.bin").write_bytes(b"\x00" * 1000)
    os.chmod(root / "a.bin", 0o640)
    assert file_step(tmp_path, operation="copy", path="a.bin", destination="b.bin") == {"path": str(root / "b.bin")}
    assert (root / "b.bin").read_bytes() == b"\x00" * 1000
    assert (root / "b.bin").stat().st_mode & 0o777 == 0o640


# -- file: glob patterns with several '**' walked the tree once per '**' nested in the one before -----------------
def test_a_glob_with_more_than_one_recursive_wildcard_is_refused(tmp_path):
    # Thirty nested folders a definition can make with one write; "**/" * 10 over them ran for ever.
    file_step(tmp_path, operation="write", path="/".join(["a"] * 30) + "/x", content="")
    with pytest.raises(ActionError, match=r"^file glob: pattern '\*\*/\*\*/x' has more than one '\*\*'") as caught:
        file_step(tmp_path, operation="glob", pattern="**/**/x")
    assert not caught.value.retryable
    assert file_step(tmp_path, operation="glob", pattern="**/x") == {"paths": ["/".join(["a"] * 30) + "/x"]}


# -- shell: what a command leaves behind, and what it can read of the server ------------------------------------
def shell_step(command, **config) -> ShellAction:
    action = ShellAction("cmd", command=command, **config)
    action.context = RunContext(settings={"WORKFLOW_ALLOW_SHELL": True}, cancel_event=threading.Event())
    return action


def test_a_command_that_succeeded_leaves_nothing_running(tmp_path):
    pidfile = tmp_path / "pid"
    # The step succeeds at once; its background child used to run on for ever, past every timeout.
    result = shell_step(f"sleep 300 & echo $! > {pidfile}").execute({})
    assert result["exit_code"] == 0
    pid = int(pidfile.read_text())
    try:
        wait_until(lambda: not process_alive(pid), timeout=10, message=f"the background child {pid} to be killed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# A server that runs one shell step, whose command reads the server's environment as the kernel shows it. The
# server is not the command's parent on Linux (a reaper is, holding the command's own environment): it says its pid.
SERVER = """
import os
import threading
import tracemalloc
from actions.base import ActionError, RunContext
from actions.shell import ShellAction
action = ShellAction("peek", command="cat /proc/$SERVER_PID/environ", env={"SERVER_PID": str(os.getpid())})
action.context = RunContext(settings={"WORKFLOW_ALLOW_SHELL": True}, cancel_event=threading.Event())
try:
    print(action.execute({})["stdout"].replace("\\0", "\\n"))
except ActionError as error:
    print("refused:", error)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/<pid>/environ is Linux's")
def test_a_command_cannot_read_the_servers_environment_through_proc():
    # The server's own environment, as run.py gets it from systemd or a container: the token is in it.
    env = {**os.environ, "WORKFLOW_API_TOKEN": "tok-server-environ-41", "SMTP_PASSWORD": "smtp-environ-42"}
    # As root the server drops every capability first, as a server run by an ordinary user has none: root's
    # CAP_SYS_PTRACE reads any process's environment, dumpable or not.
    unprivileged = ["setpriv", "--bounding-set", "-all", "--"] if os.geteuid() == 0 else []
    answer = subprocess.run([*unprivileged, sys.executable, "-c", SERVER], env=env, cwd=PROJECT,
                            capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stderr
    assert "tok-server-environ-41" not in answer.stdout and "smtp-environ-42" not in answer.stdout
    assert answer.stdout.startswith("refused: shell: command exited with code 1: "), answer.stdout
    assert "Permission denied" in answer.stdout


# -- events: runs' ends that each start several runs branched into thousands within MAX_EVENT_DEPTH ---------------
def test_one_chain_of_runs_ends_starts_a_bounded_number_of_runs(client, caplog):
    # Three posted workflows that each follow every run's end: each end started the two others, 3 * (2**8 - 1)
    # runs from one manual run (with six of them, 6 * (5**8 - 1) / 4, nearly 600,000).
    for name in ("echo_a", "echo_b", "echo_c"):
        definition = {"name": name, "trigger": {"type": "event", "event": "run.*"},
                      "steps": [{"name": "note", "type": "log", "config": {"message": "{{ inputs.type }}"}}]}
        assert client.post("/api/workflows", json=definition).status_code == 201
        assert client.post(f"/api/workflows/{name}/start").status_code == 200
    first = client.post("/api/workflows", json={"name": "kick", "steps": [
        {"name": "note", "type": "log", "config": {"message": "go"}}]})
    assert first.status_code == 201
    assert client.post("/api/workflows/kick/runs?wait=30", json={"inputs": {}}).status_code == 200

    def runs() -> list[dict]:
        return [run for name in ("echo_a", "echo_b", "echo_c")
                for run in client.get(f"/api/runs?workflow={name}&limit=500").get_json()["runs"]]

    def settled() -> bool:
        found = runs()
        return len(found) >= MAX_CHAIN_RUNS and all(run["status"] == "succeeded" for run in found)

    wait_until(settled, timeout=120, message=f"{MAX_CHAIN_RUNS} runs of the chain to finish")
    wait_until(lambda: "already started 100 runs (at most 100): not started" in caplog.text, timeout=60,
               message="the chain to be cut")
    assert len(runs()) == MAX_CHAIN_RUNS


# -- the console log: a line break in a file name or an event type forged a record of its own ---------------------
FORGED = "2026-01-01 00:00:00,000 CRITICAL app.audit: token admin deleted"


def test_a_line_break_in_quoted_text_cannot_forge_a_console_log_record(tmp_path):
    with Servers(tmp_path) as servers:
        server = servers.start()
        step = {"name": "save", "type": "file", "config": {"operation": "write", "path": "{{ inputs.name }}",
                                                           "content": "x"}}
        assert server.post("/api/workflows", json={"name": "saver", "steps": [step]}).status_code == 201
        started = server.post("/api/workflows/saver/runs?wait=30", json={"inputs": {"name": f"a.txt\n{FORGED}"}})
        assert started.status_code == 200 and started.json()["status"] == "succeeded", started.text
        # An event type with a line break no longer reaches the log: it is refused at the door (docs/events.md).
        event = server.post("/api/events", json={"type": f"ticket\r{FORGED}"})
        assert event.status_code == 422 and event.json()["error"]["details"][0]["path"] == "type", event.text
        wait_until(lambda: FORGED in server.stderr, timeout=15, message="the file's record in the console log")
        lines = server.stderr.splitlines()
        assert not [line for line in lines if line.startswith(FORGED)], server.stderr
        assert f"file save: write a.txt\n    {FORGED}" in server.stderr


# -- events: a follower that calls the workflow it follows looped for ever (each sub-run's end began a new chain) ---
def test_a_follower_that_calls_the_workflow_it_follows_stops_at_the_depth_bound(client, caplog):
    definitions = [
        {"name": "leaf", "steps": [{"name": "note", "type": "log", "config": {"message": "leaf"}}]},
        {"name": "follower", "trigger": {"type": "event", "event": "run.succeeded",
                                         "filter": "{{ event.data.workflow == 'leaf' }}"},
         "steps": [{"name": "again", "type": "workflow", "config": {"workflow": "leaf"}}]},
    ]
    for definition in definitions:
        assert client.post("/api/workflows", json=definition).status_code == 201
    assert client.post("/api/workflows/follower/start").status_code == 200
    assert client.post("/api/workflows/leaf/runs?wait=30", json={"inputs": {}}).status_code == 200

    def followers() -> list[dict]:
        return client.get("/api/runs?workflow=follower&limit=500").get_json()["runs"]

    wait_until(lambda: "runs' ends led to it (at most 8): not started" in caplog.text, timeout=60,
               message="the chain to stop at MAX_EVENT_DEPTH")
    wait_until(lambda: all(run["status"] == "succeeded" for run in followers()), timeout=60,
               message="the followers to finish")
    assert len(followers()) == MAX_EVENT_DEPTH


# -- notify: an Apprise URL option that reads a local file sent it to the URL's owner ------------------------------
def test_a_notify_url_cannot_make_apprise_send_a_file_outside_the_root(tmp_path, monkeypatch):
    from apprise.plugins.slack import NotifySlack

    secret = tmp_path / "data" / "state.json"  # what a store, a key or any JSON of the host holds
    secret.parent.mkdir()
    secret.write_text('{"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "TOP-SECRET-STATE"}}]}')
    received: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    token = "T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7"
    with serving(Handler) as server:
        # Apprise posts Slack webhooks to hooks.slack.com only: its fixed base points at the local server.
        monkeypatch.setattr(NotifySlack, "webhook_url", f"http://127.0.0.1:{server.server_address[1]}/services")
        for template, message in [
            (str(secret), r"urls\[0\] option 'template' '.*state.json' is outside WORKFLOW_FILES_ROOT"),
            (f"file://{secret}", r"urls\[0\] option 'template' '/.*state.json' is outside"),
            ("state.json", "must be an absolute path inside WORKFLOW_FILES_ROOT"),
            (f"{tmp_path}/data/files/ok.json&template={secret}", r"'.*state.json' is outside"),
            ("http://169.254.169.254/latest", "is not a file inside WORKFLOW_FILES_ROOT"),
        ]:
            action = NotifyAction("tell", urls=f"slack://{token}/?template={template}", body="hi")
            action.context = RunContext(settings={}, storage_path=str(tmp_path / "data"))
            with pytest.raises(ActionError, match=message) as caught:
                action.execute({})
            assert not caught.value.retryable
        # Inside the root a template is still the user's to use.
        inside = tmp_path / "data" / "files" / "slack.json"
        inside.parent.mkdir()
        inside.write_text('{"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "{{app_body}}!"}}]}')
        action = NotifyAction("tell", urls=f"slack://{token}/?template={inside}", body="hi")
        action.context = RunContext(settings={}, storage_path=str(tmp_path / "data"))
        assert len(action.execute({})["sent"]) == 1
    assert len(received) == 1 and b"TOP-SECRET" not in received[0]
    assert b"hi!" in received[0], received


def test_a_symlink_loop_in_the_root_is_left_out_of_a_glob(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    (root / "loop").symlink_to("loop")  # made on the host; Path.resolve raised RuntimeError, a traceback
    (root / "a.txt").write_text("a")
    assert file_step(tmp_path, operation="glob", pattern="*") == {"paths": ["a.txt"]}


# -- shell: a run input written into a string command was read by the shell ------------------------------------
def test_a_string_command_holding_a_template_is_refused_and_env_carries_inputs_safely(make_app_client, tmp_path):
    client = make_app_client(WORKFLOW_ALLOW_SHELL=True)
    proof = tmp_path / "injected"
    injected = {"name": "greet", "steps": [{"name": "say", "type": "shell",
                                            "config": {"command": "echo hello {{ inputs.who }}"}}]}
    refused = client.post("/api/workflows", json=injected)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert refused.get_json()["error"]["details"][0]["path"] == "steps[0].config.command", refused.get_json()
    assert "a string command cannot hold a template" in refused.get_json()["error"]["details"][0]["message"]
    # The safe way: the input goes into the environment, and the shell reads it as one word.
    safe = {"name": "greet", "steps": [{"name": "say", "type": "shell", "config": {
        "command": 'echo "hello $WHO"', "env": {"WHO": "{{ inputs.who }}"}}}]}
    assert client.post("/api/workflows", json=safe).status_code == 201
    answer = client.post("/api/workflows/greet/runs?wait=30", json={"inputs": {"who": f"x; touch {proof}"}})
    run = answer.get_json()
    assert run["status"] == "succeeded", run
    assert run["steps"][0]["result"]["stdout"] == f"hello x; touch {proof}\n"
    assert not proof.exists()


def _open_files_on_disk() -> dict[tuple[int, int], int]:
    """The regular files this process holds open, by (device, inode): the disk each takes (holes cost nothing)."""
    found = {}
    for entry in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            info = os.stat(entry)
            if stat.S_ISREG(info.st_mode):
                found[info.st_dev, info.st_ino] = info.st_blocks * 512
    return found


def _largest_new_open_file(before: set[tuple[int, int]]) -> int:
    """The most disk a file opened since ``before`` takes (files other tests left open are not the step's)."""
    return max((size for key, size in _open_files_on_disk().items() if key not in before), default=0)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
def test_a_chatty_command_does_not_fill_the_temporary_folder(tmp_path):
    written, stop = tmp_path / "written", tmp_path / "stop"
    # 40 MB on stdout, of which the step keeps 1 MB; then it waits, as `yes` would go on writing.
    command = (f"head -c 40000000 /dev/zero; touch {written}; "
               f"while [ ! -e {stop} ]; do sleep 0.05; done")
    outcome: dict = {}
    before = set(_open_files_on_disk())
    worker = threading.Thread(target=lambda: outcome.update(result=shell_step(command).execute({})), daemon=True)
    worker.start()
    try:
        wait_until(written.exists, timeout=60, message="the command to write its 40 MB")
        wait_until(lambda: _largest_new_open_file(before) <= 8 * 2**20, timeout=10,
                   message="the output past what is kept to leave the disk")
    finally:
        stop.touch()
        worker.join(timeout=60)
    stdout = outcome["result"]["stdout"]
    assert stdout.endswith("\n[output truncated: 40000000 bytes, first 1048576 kept]")
    assert stdout.startswith("\0" * 1048576)


# -- file: an append read the whole file into memory (a loop of appends grows it by 10 MB a step) -----------------
def test_an_append_to_a_big_file_is_streamed_not_held_in_memory(tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    with open(root / "log.txt", "wb") as log:
        log.truncate(64 * 2**20)  # 64 MB (a hole: quick to make)
    tracemalloc.start()
    try:
        file_step(tmp_path, operation="append", path="log.txt", content="one more line\n")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"the append held {peak / 2**20:.0f} MB"
    assert (root / "log.txt").stat().st_size == 64 * 2**20 + len("one more line\n")
    with open(root / "log.txt", "rb") as log:
        log.seek(64 * 2**20 - 1)
        assert log.read() == b"\0one more line\n"


# -- send_email and pdf_text: a FIFO as an attachment or a PDF held the step's thread for ever ---------------------
def _outcome_without_blocking(fifo: Path, call) -> Exception | None:
    """What ``call`` raised; the test fails (after freeing the reader) when it blocked on ``fifo``."""
    outcome: dict = {}

    def attempt() -> None:
        try:
            call()
        except Exception as error:  # noqa: BLE001 (the outcome is asserted by the caller)
            outcome["error"] = error

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the old behaviour: a writer's end frees it
        worker.join(timeout=30)
        pytest.fail(f"reading {fifo.name} blocked until a writer came")
    return outcome.get("error")


def test_a_fifo_as_a_mail_attachment_or_a_pdf_is_refused_not_read_for_ever(tmp_path):
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    from actions.pdf_text import PdfTextAction
    from actions.send_email import SendEmailAction

    root = tmp_path / "data" / "files"
    root.mkdir(parents=True)
    os.mkfifo(root / "pipe")
    controller = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        settings = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": controller.port,
                    "SMTP_SECURITY": "none", "MAIL_FROM": "flow@example.org"}
        mail = SendEmailAction("mail", to="alice@example.org", subject="s", body="b", attachments=["pipe"])
        mail.context = RunContext(settings=settings, storage_path=str(tmp_path / "data"))
        error = _outcome_without_blocking(root / "pipe", lambda: mail.execute({}))
    finally:
        controller.stop()
    assert isinstance(error, ActionError) and not error.retryable, error
    assert str(error) == "send_email: attachments[0] 'pipe' is a FIFO; only regular files can be read"

    pdf = PdfTextAction("text", file="pipe")
    pdf.context = RunContext(settings={}, storage_path=str(tmp_path / "data"))
    error = _outcome_without_blocking(root / "pipe", lambda: pdf.execute({}))
    assert isinstance(error, ActionError) and not error.retryable, error
    assert str(error) == "pdf_text: file 'pipe' is a FIFO; only regular files can be read"
