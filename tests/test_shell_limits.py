"""A shell step's limits: applied to real commands, refused where they cannot be applied."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from actions import shell_limits
from actions.base import ActionError, RunContext
from actions.shell import ShellAction
from app import create_app, start_app
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS
from tests.waiting import process_alive, wait_until
from workflows.declarative import DefinitionError, build_workflow

REPO = Path(__file__).resolve().parent.parent
ALLOWED = {"WORKFLOW_ALLOW_SHELL": True}
BUSY = [sys.executable, "-c", "while True: pass"]
ROOT = os.getuid() == 0


def shell(**config) -> ShellAction:
    action = ShellAction("cmd", **config)
    action.context = RunContext(settings=ALLOWED, cancel_event=threading.Event())
    return action


# -- cpu_seconds ------------------------------------------------------------------------------------

def test_cpu_seconds_kills_a_busy_loop():
    with pytest.raises(ActionError, match=r"^shell: killed: cpu_seconds limit of 1 s exceeded$") as caught:
        shell(command=BUSY, limits={"cpu_seconds": 1}).execute({})
    assert not caught.value.retryable


def test_cpu_seconds_through_the_shell_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    # The loop dies of SIGXCPU; the sleeping sibling in its group must not outlive the step.
    command = f"sleep 30 & echo $! > {pidfile}; {sys.executable} -c 'while True: pass'"
    with pytest.raises(ActionError, match=r"^shell: killed: cpu_seconds limit of 2 s exceeded"):
        shell(command=command, limits={"cpu_seconds": 1.5}).execute({})
    pid = int(pidfile.read_text())
    wait_until(lambda: not process_alive(pid), timeout=5, message=f"the background child {pid} to die")


def test_cpu_seconds_in_a_script_run_without_a_shell(tmp_path):
    script = tmp_path / "busy.sh"
    script.write_text(f"#!/bin/sh\n{sys.executable} -c 'while True: pass'\n")
    script.chmod(0o755)
    with pytest.raises(ActionError, match=r"^shell: killed: cpu_seconds limit of 1 s exceeded"):
        shell(command=[str(script)], limits={"cpu_seconds": 1}).execute({})


def test_a_command_within_its_limits_succeeds():
    result = shell(command=[sys.executable, "-c", "print(sum(range(1000)))"],
                   limits={"cpu_seconds": 30, "memory_mb": 512, "output_kb": 4}).execute({})
    assert result["stdout"] == "499500\n"


# -- memory_mb --------------------------------------------------------------------------------------

def test_memory_mb_refuses_a_large_allocation():
    command = [sys.executable, "-c", "data = bytearray(1024 * 1024 * 1024)"]
    with pytest.raises(ActionError, match=r"^shell: killed: memory_mb limit of 200 MB exceeded: MemoryError$"):
        shell(command=command, limits={"memory_mb": 200}).execute({})


def test_memory_mb_through_the_shell():
    command = f"echo start; {sys.executable} -c 'data = bytearray(1024 * 1024 * 1024)'"
    with pytest.raises(ActionError, match=r"memory_mb limit of 200 MB exceeded: MemoryError"):
        shell(command=command, limits={"memory_mb": 200}).execute({})


def test_a_failure_without_sign_of_memory_is_reported_as_itself():
    with pytest.raises(ActionError, match=r"^shell: command exited with code 3: plain failure$"):
        shell(command="echo plain failure >&2; exit 3", limits={"memory_mb": 200}).execute({})


# -- output_kb --------------------------------------------------------------------------------------

def test_output_kb_kills_an_endless_writer():
    with pytest.raises(ActionError, match=r"^shell: killed: output_kb limit of 64 KB exceeded$") as caught:
        shell(command="yes", limits={"output_kb": 64}).execute({})
    assert not caught.value.retryable


def test_output_kb_counts_stdout_and_stderr_together():
    # 40 KB on each stream: neither alone is over 64 KB, both together are.
    command = "head -c 40960 /dev/zero; head -c 40960 /dev/zero >&2; sleep 30"
    with pytest.raises(ActionError, match="output_kb limit of 64 KB exceeded"):
        shell(command=command, limits={"output_kb": 64}).execute({})


def test_output_kb_fails_a_command_that_ended_before_it_was_watched():
    with pytest.raises(ActionError, match="output_kb limit of 1 KB exceeded"):
        shell(command="head -c 5000 /dev/zero", limits={"output_kb": 1}).execute({})


def test_output_within_output_kb_is_the_result():
    assert shell(command="head -c 1000 /dev/zero | tr '\\0' x", limits={"output_kb": 1})\
        .execute({})["stdout"] == "x" * 1000


# -- processes --------------------------------------------------------------------------------------

@pytest.mark.skipif(not ROOT, reason="as an ordinary user RLIMIT_NPROC binds; the next test shows it")
def test_processes_is_refused_for_root():
    # The kernel never applies RLIMIT_NPROC to root: a limit that cannot bind is refused, not ignored.
    with pytest.raises(ValueError, match=r"limits.processes refused: .*runs as root"):
        ShellAction("cmd", command="true", limits={"processes": 5})


FORK_MANY = "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait"
# Runs as an ordinary user; prints the step's result or error as JSON.
AS_USER = """
import json, sys, threading
sys.path.insert(0, sys.argv[1])
from actions.base import ActionError, RunContext
from actions.shell import ShellAction
action = ShellAction("cmd", command=sys.argv[2], limits=json.loads(sys.argv[3]))
action.context = RunContext(settings={"WORKFLOW_ALLOW_SHELL": True}, cancel_event=threading.Event())
try:
    print(json.dumps({"result": action.execute({})}))
except ActionError as error:
    print(json.dumps({"error": str(error)}))
"""


def _as_ordinary_user(command: str, limits: dict) -> dict:
    """The step run by an ordinary user: this process when it is one, else a child as ``nobody``."""
    if not ROOT:
        action = shell(command=command, limits=limits)
        try:
            return {"result": action.execute({})}
        except ActionError as error:
            return {"error": str(error)}
    # This venv's interpreter may sit in /root, out of nobody's reach; the system one runs the
    # action's code (the standard library is all it needs).
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no user nobody to show RLIMIT_NPROC binding")
    if python is None:
        pytest.skip("running as root and no system python3 that user nobody can run")
    done = subprocess.run([python, "-c", AS_USER, str(REPO), command, json.dumps(limits)], user="nobody",
                          group="nogroup" if _has_group("nogroup") else None, env={"PATH": "/usr/bin:/bin"},
                          cwd="/", capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "Permission denied" in done.stderr:
        pytest.skip(f"user nobody cannot read the project at {REPO}: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _has_group(name: str) -> bool:
    import grp
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_processes_stops_a_command_that_forks_too_many():
    answer = _as_ordinary_user(FORK_MANY, {"processes": 3})
    assert answer.get("error", "").startswith("shell: killed: processes limit of 3 exceeded"), answer


def test_processes_leaves_a_command_within_it_alone():
    answer = _as_ordinary_user("sleep 0 & sleep 0 & wait; echo done", {"processes": 10})
    assert answer == {"result": {"exit_code": 0, "stdout": "done\n", "stderr": ""}}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="elsewhere only the command's process group is killed")
def test_an_ordinary_users_command_loses_what_left_its_session():
    # The reaper holds it as an ordinary user too, under a processes limit that counts the reaper apart.
    # The command ends once sleep is in a session of its own (field 6 of its stat): not before, while its group's.
    command = "setsid sleep 300 & until [ \"$(cut -d' ' -f6 /proc/$!/stat)\" = $! ]; do sleep 0.01; done; echo $!"
    answer = _as_ordinary_user(command, {"processes": 10})
    pid = int(answer["result"]["stdout"])
    try:
        wait_until(lambda: not process_alive(pid), timeout=5, message=f"the escaped sleep {pid} to die")
    finally:
        if process_alive(pid) and Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\0" + b"300\0":
            os.kill(pid, signal.SIGKILL)


# -- definition time --------------------------------------------------------------------------------

@pytest.mark.parametrize(("limits", "message"), [
    ("lots", "limits must be a mapping"),
    ({"threads": 2}, "limits.threads is not a limit; known: cpu_seconds, memory_mb, output_kb, processes"),
    ({"cpu_seconds": 0}, r"limits.cpu_seconds must be a number > 0, got 0"),
    ({"memory_mb": "lots"}, r"limits.memory_mb must be a number > 0, got 'lots'"),
    ({"output_kb": True}, r"limits.output_kb must be a number > 0, got True"),
])
def test_bad_limits_are_refused_naming_the_limit(limits, message):
    with pytest.raises(ValueError, match=message):
        ShellAction("cmd", command="true", limits=limits)


def test_a_template_is_checked_when_the_step_runs():
    action = shell(command="true", limits={"cpu_seconds": "{{ inputs.cpu }}"})
    action.limits = {"cpu_seconds": "many"}  # what the engine would have rendered
    with pytest.raises(ActionError, match=r"shell: limits.cpu_seconds must be a number > 0, got 'many'"):
        action.execute({})


@pytest.mark.parametrize("name", ["cpu_seconds", "memory_mb", "processes"])
def test_limits_need_the_resource_module(monkeypatch, name):
    monkeypatch.setattr(shell_limits, "resource", None)
    with pytest.raises(ValueError, match=rf"limits.{name} refused: {name} needs the resource module"):
        ShellAction("cmd", command="true", limits={name: 5})


def test_output_kb_needs_no_rlimit(monkeypatch):
    monkeypatch.setattr(shell_limits, "resource", None)
    assert ShellAction("cmd", command="true", limits={"output_kb": 5}).limits == {"output_kb": 5}


@pytest.mark.parametrize("name", ["memory_mb", "processes"])
def test_memory_and_processes_are_linux_only(monkeypatch, name):
    # macOS has RLIMIT_AS but does not enforce it; processes counts through /proc.
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(ValueError, match=rf"limits.{name} refused: {name} is only applied on Linux, not on darwin"):
        ShellAction("cmd", command="true", limits={name: 5})


def _definition(step: dict) -> dict:
    return {"name": "limited", "steps": [{"name": "cmd", **step}]}


def test_a_definition_carries_limits_on_the_step():
    workflow = build_workflow(_definition({"type": "shell", "config": {"command": "true"},
                                           "limits": {"cpu_seconds": 2}}), "test")
    assert workflow().actions[0].limits == {"cpu_seconds": 2}


@pytest.mark.parametrize(("step", "path", "message"), [
    ({"type": "log", "config": {"message": "hi"}, "limits": {"cpu_seconds": 2}}, "steps[0].limits",
     "only shell steps take limits, not type 'log'"),
    ({"type": "shell", "config": {"command": "true", "limits": {"output_kb": 1}}, "limits": {"output_kb": 2}},
     "steps[0].limits", "given both on the step and in its config"),
    ({"type": "shell", "config": {"command": "true"}, "limits": {"memory_mb": -1}}, "steps[0].limits",
     "limits.memory_mb must be a number > 0, got -1"),
])
def test_a_definition_with_bad_limits_names_them(step, path, message):
    with pytest.raises(DefinitionError) as caught:
        build_workflow(_definition(step), "test")
    assert [problem["path"] for problem in caught.value.problems] == [path]
    assert message in caught.value.problems[0]["message"]


def test_a_run_fails_naming_the_limit(tmp_path):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                                "WORKFLOW_CLASSES": WORKFLOWS, "WORKFLOW_ALLOW_SHELL": True}))
    try:
        client = app.test_client()
        created = client.post("/api/workflows", json=_definition(
            {"type": "shell", "config": {"command": "yes"}, "limits": {"output_kb": "{{ inputs.kb }}"}}))
        assert created.status_code == 201, created.get_json()
        response = client.post("/api/workflows/limited/runs?wait=20", json={"inputs": {"kb": 8}})
        run = response.get_json()
        assert run["status"] == "failed", run
        assert run["steps"][0]["error"] == "shell: killed: output_kb limit of 8 KB exceeded"
        assert run["steps"][0]["attempts"] == 1
    finally:
        app.extensions["pyflow"].shutdown(timeout=5)
