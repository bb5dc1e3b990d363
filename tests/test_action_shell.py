"""ShellAction running real commands."""

from __future__ import annotations

import os
import resource
import shlex
import signal
import sys
import threading
from pathlib import Path

import pytest

from actions.base import ActionError, RunContext
from actions.shell import ShellAction
from tests.waiting import process_alive, wait_until

ALLOWED = {"WORKFLOW_ALLOW_SHELL": True}


def shell(settings=ALLOWED, cancel_event=None, **config) -> ShellAction:
    action = ShellAction("cmd", **config)
    action.context = RunContext(settings=settings, cancel_event=cancel_event or threading.Event())
    return action


@pytest.mark.parametrize("setting", [None, False, "false", "0", ""])
def test_refused_unless_allowed(setting):
    action = shell(settings={} if setting is None else {"WORKFLOW_ALLOW_SHELL": setting}, command="echo hi")
    with pytest.raises(ActionError, match="WORKFLOW_ALLOW_SHELL") as caught:
        action.execute({})
    assert not caught.value.retryable


@pytest.mark.parametrize("setting", [True, "true", "1"])
def test_string_runs_through_the_shell(setting):
    result = shell(settings={"WORKFLOW_ALLOW_SHELL": setting}, command="echo $((1 + 2)); echo oops >&2").execute({})
    assert result == {"exit_code": 0, "stdout": "3\n", "stderr": "oops\n"}


def test_argv_runs_without_a_shell():
    result = shell(command=[sys.executable, "-c", "import sys; print(sys.argv[1])", "$HOME; echo"]).execute({})
    assert result["stdout"] == "$HOME; echo\n"


def test_a_server_with_many_open_files_still_runs_commands():
    # A busy server's descriptors go past 1023, where select() refuses one: every shell step failed, and a
    # command left unwatched (`yes`) ran on, filling the disk.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this process may open at most {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    opened = []
    try:
        while not opened or opened[-1] < 1100:
            opened.append(os.open(os.devnull, os.O_RDONLY))
        assert shell(command=["echo", "hi"]).execute({})["stdout"] == "hi\n"
        with pytest.raises(ActionError, match="timed out after 0.3 s and was killed"):
            shell(command=["sleep", "30"], timeout=0.3).execute({})
    finally:
        for descriptor in opened:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_cwd_and_env(tmp_path):
    result = shell(command="pwd; echo $GREETING; test -n \"$PATH\" && echo path", cwd=str(tmp_path),
                   env={"GREETING": "hello"}).execute({})
    assert result["stdout"].split() == [str(tmp_path), "hello", "path"]


def test_missing_cwd_is_refused(tmp_path):
    with pytest.raises(ActionError, match="is not a directory"):
        shell(command="true", cwd=str(tmp_path / "nope")).execute({})


def test_non_zero_exit_names_code_and_last_stderr_line():
    with pytest.raises(ActionError, match="exited with code 3: second") as caught:
        shell(command="echo first >&2; echo second >&2; exit 3").execute({})
    assert caught.value.retryable


def test_unknown_program_is_not_retried():
    with pytest.raises(ActionError, match="command not found") as caught:
        shell(command=["/nonexistent/program"]).execute({})
    assert not caught.value.retryable


def test_timeout_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    # A background child outlives its shell unless the whole group is killed.
    with pytest.raises(ActionError, match=r"timed out after 0\.3 s"):
        shell(command=f"sleep 30 & echo $! > {pidfile}; wait", timeout="0.3").execute({})
    pid = int(pidfile.read_text())
    wait_until(lambda: not process_alive(pid), timeout=5, message=f"the background child {pid} to die")


def test_cancel_kills_the_command():
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    # Uncancelled, the command would end after 30 s and the step succeed.
    with pytest.raises(ActionError, match="cancelled") as caught:
        shell(command=["sleep", "30"], cancel_event=cancel).execute({})
    assert not caught.value.retryable


# -- what a command starts in another session or process group: killed with it (Linux) -----------------------------

# The escapee writes its pid, then becomes `sleep 300`; the command goes on once the pid is written.
ESCAPEE = "echo $$ > pid.tmp && mv pid.tmp pid && exec sleep 300\n"
UNTIL_ESCAPED = "until [ -s pid ]; do sleep 0.01; done"
DOUBLE_FORK = ("import os; os.fork() and os._exit(0); os.setsid(); os.fork() and os._exit(0); "
               "os.execvp('sh', ['sh', 'escapee.sh'])")
ESCAPES = {
    "setsid": "setsid sh escapee.sh &",
    "setsid in a subshell": "(setsid nohup sh escapee.sh >/dev/null 2>&1 &)",
    "job control": "bash -c 'set -m; sh escapee.sh &'",
    "double fork": f"{shlex.quote(sys.executable)} -c {shlex.quote(DOUBLE_FORK)}",
}
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="elsewhere only the command's process group is killed")


@pytest.fixture
def escapee(tmp_path):
    """A folder holding escapee.sh; the pid file it leaves is read by ``escapee_pid``. Kills a survivor at the end."""
    (tmp_path / "escapee.sh").write_text(ESCAPEE)
    yield tmp_path
    pidfile = tmp_path / "pid"
    if pidfile.exists():
        pid = int(pidfile.read_text())
        # Only our own sleep: after a failure it runs on for 300 s; a reused pid is someone else's.
        if process_alive(pid) and _cmdline(pid) == b"sleep\0" + b"300\0":
            os.kill(pid, signal.SIGKILL)


def escapee_pid(folder: Path) -> int:
    return int((folder / "pid").read_text())


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@linux_only
@pytest.mark.parametrize("escape", ESCAPES.values(), ids=ESCAPES.keys())
def test_what_left_the_group_is_killed_when_the_command_ends(escapee, escape):
    result = shell(command=f"{escape}\n{UNTIL_ESCAPED}; echo done", cwd=str(escapee)).execute({})
    assert result["stdout"] == "done\n"
    pid = escapee_pid(escapee)
    wait_until(lambda: not process_alive(pid), timeout=5, message=f"the escaped process {pid} to die")


@linux_only
def test_what_left_the_group_is_killed_on_timeout(escapee):
    command = f"{ESCAPES['setsid']}\n{UNTIL_ESCAPED}; sleep 30"
    # The escape takes milliseconds; the timeout leaves it ample time.
    with pytest.raises(ActionError, match=r"timed out after 1\.5 s"):
        shell(command=command, cwd=str(escapee), timeout=1.5).execute({})
    pid = escapee_pid(escapee)
    wait_until(lambda: not process_alive(pid), timeout=5, message=f"the escaped process {pid} to die")


@linux_only
def test_what_left_the_group_is_killed_on_cancel(escapee):
    cancel = threading.Event()

    def cancel_once_escaped():
        wait_until(lambda: (escapee / "pid").exists(), timeout=30, message="the escapee's pid")
        cancel.set()

    threading.Thread(target=cancel_once_escaped, daemon=True).start()
    command = f"{ESCAPES['double fork']}\n{UNTIL_ESCAPED}; sleep 30"
    with pytest.raises(ActionError, match="cancelled"):
        shell(command=command, cwd=str(escapee), cancel_event=cancel).execute({})
    pid = escapee_pid(escapee)
    wait_until(lambda: not process_alive(pid), timeout=5, message=f"the escaped process {pid} to die")


@linux_only
def test_what_left_the_group_is_killed_when_a_limit_is_crossed(escapee):
    command = f"{ESCAPES['setsid']}\n{UNTIL_ESCAPED}; yes"
    with pytest.raises(ActionError, match="output_kb limit of 64 KB exceeded"):
        shell(command=command, cwd=str(escapee), limits={"output_kb": 64}).execute({})
    pid = escapee_pid(escapee)
    wait_until(lambda: not process_alive(pid), timeout=5, message=f"the escaped process {pid} to die")


def test_output_is_truncated(monkeypatch):
    monkeypatch.setattr("actions.shell.MAX_OUTPUT_BYTES", 10)
    result = shell(command="printf '%s' 0123456789abcdef").execute({})
    assert result["stdout"].startswith("0123456789\n[output truncated: 16 bytes")


@pytest.mark.parametrize("command", [[], "", 5])
def test_bad_command_is_refused_at_definition(command):
    with pytest.raises(ValueError, match="command must be"):
        ShellAction("cmd", command=command)


def test_the_child_gets_no_secret_setting_nor_secret_looking_variable(monkeypatch):
    secrets = {"SMTP_PASSWORD": "smtp-pw-1", "IMAP_PASSWORD": "imap-pw-2", "WORKFLOW_API_TOKEN": "api-tok-3",
               "WORKFLOW_SECRET_KEY": "sess-key-4", "AWS_SECRET_ACCESS_KEY": "aws-5", "DATABASE_URL": "pg://u:p@h/db"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PLAIN_SETTING", "visible")
    result = shell(command="env").execute({})
    for name, value in secrets.items():
        assert name not in result["stdout"] and value not in result["stdout"]
    assert "PLAIN_SETTING=visible" in result["stdout"]


def test_a_step_may_hand_its_own_secret_to_the_child(monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", "server-pw")
    result = shell(command="echo $API_TOKEN $SMTP_PASSWORD", env={"API_TOKEN": "mine"}).execute({})
    assert result["stdout"] == "mine\n"
