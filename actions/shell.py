"""The shell action: run a command, if the operator allowed commands at all."""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from actions import shell_reaper
from actions.base import ActionError, BaseAction, SettingError, seconds
from actions.limits import capped
from actions.redaction import is_secret_key
from actions.shell_limits import Limits, check, crossed, preexec, rlimits

logger = logging.getLogger(__name__)

# Output kept per stream; the rest is cut with a note (the result goes into the run record).
MAX_OUTPUT_BYTES = 1024 * 1024
# A stream's file past this is cut back to the part kept: the rest is never read, and `yes` would
# otherwise fill the temporary folder (a tmpfs: memory) until its timeout.
MAX_OUTPUT_ON_DISK = 4 * MAX_OUTPUT_BYTES
# How often the wait loop looks at the cancel event and the deadline.
POLL_SECONDS = 0.05
# Time a terminated process group gets to exit before it is killed (a reaper gives its command as much).
KILL_GRACE_SECONDS = shell_reaper.GRACE_SECONDS
# prctl(2): a process that is not dumpable has its /proc/<pid>/environ and memory readable by root only.
_PR_SET_DUMPABLE = 4


def allowed(settings: Mapping[str, Any]) -> bool:
    """Whether WORKFLOW_ALLOW_SHELL lets commands run (true, 1, yes or on)."""
    value = settings.get("WORKFLOW_ALLOW_SHELL")
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "on")


class ShellAction(BaseAction):
    """Runs ``command``: a string through ``/bin/sh -c``, a list as argv without a shell.

    A string command holds no template (the shell would read what a run input says); values go in
    ``env`` and the command quotes them (``"$WHO"``), or the command is a list, one argument per item.

    Refused unless the setting WORKFLOW_ALLOW_SHELL is true (a posted definition's step when it is
    saved, every step when it runs). The command gets
    the server's environment without any variable whose name looks secret
    (every secret setting among them: SMTP_PASSWORD, WORKFLOW_API_TOKEN...),
    then ``env`` on top; ``cwd`` is the working directory. On
    ``timeout`` (seconds; else the step's ``step_timeout`` when set) or when the
    run is cancelled, the command's whole process group is terminated, then
    killed, and on Linux every other process it started too, whatever session
    or group it moved to (actions/shell_reaper.py); when the command ends, what
    it left running is killed. A non-zero exit fails the step, naming the code
    and the last line of stderr. Result: ``{"exit_code", "stdout", "stderr"}``,
    each stream cut to 1 MB. ``limits`` (``cpu_seconds``, ``memory_mb``,
    ``output_kb``, ``processes``; actions/shell_limits.py says what each binds)
    are set with setrlimit in the command; one that crosses one is killed as on
    timeout and the step fails naming the limit. A limit this platform
    cannot apply is refused when the step is defined.
    """

    type = "shell"
    result_keys = ("exit_code", "stdout", "stderr")
    # A command may not be safe to repeat after a crash cut it short.
    idempotent = False

    def __init__(
        self,
        name: str,
        *,
        command: str | list[str],
        cwd: str | None = None,
        env: Mapping[str, Any] | None = None,
        timeout: float | str | None = None,
        limits: Mapping[str, Any] | None = None,
        **options: Any,
    ):
        super().__init__(name, **options)
        if not isinstance(command, (str, list, tuple)) or not command:
            raise SettingError("command", f"action {name!r}: command must be a string or a list of arguments, "
                                          f"got {command!r}")
        if isinstance(command, str) and ("{{" in command or "{%" in command):
            # The shell would read what the template makes: an input "x; rm -rf ~" runs rm.
            raise SettingError("command", f"action {name!r}: a string command cannot hold a template (the shell "
                                          f"would run what a value says: 'x; rm -rf ~'): pass values in env and "
                                          f"quote them in the command (command: 'echo \"$WHO\"', env: {{WHO: "
                                          f"'{{{{ inputs.who }}}}'}}), or give the command as a list, one "
                                          f"argument per item")
        self.command = command
        self.cwd = cwd
        self.env = env
        # The command's own limit; BaseAction.step_timeout is the engine's.
        self.timeout = timeout
        try:
            check(limits, allow_templates=True)
        except ValueError as error:
            raise SettingError("limits", f"action {name!r}: {error}") from None
        # Rendered per run (a value may be a template), then checked again in execute.
        self.limits = dict(limits) if limits is not None else None

    @classmethod
    def refusals(cls, config: Mapping[str, Any], settings: Mapping[str, Any],
                 storage_path: str | None = None) -> list[tuple[str, str]]:
        """A posted definition's shell step is refused when it is saved on a server that runs no commands."""
        if allowed(settings):
            return []
        return [("", "shell commands are disabled on this server; set WORKFLOW_ALLOW_SHELL=true to allow them")]

    def execute(self, data_store: dict) -> dict:
        """Run the command to its end, its timeout or the run's cancellation."""
        # Checked here as well: a workflow written in Python is not refused when it is loaded.
        if not allowed(self.context.settings):
            raise ActionError("shell: commands are disabled; set WORKFLOW_ALLOW_SHELL=true to allow them",
                              retryable=False)
        argv = self._argv()
        env = self._env()
        cwd = None if self.cwd in (None, "") else str(self.cwd)
        if cwd is not None and not Path(cwd).is_dir():
            raise ActionError(f"shell: cwd {cwd!r} is not a directory", retryable=False)
        limit = self._timeout()
        try:
            limits = check(self.limits, allow_templates=False)
        except ValueError as error:
            raise ActionError(f"shell: {error}", retryable=False) from None
        _hide_server_environment()

        started = time.monotonic()
        # Files, not pipes: a chatty command can't fill a pipe and hang, and memory stays flat.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                process = _start(argv, limits, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            except FileNotFoundError:
                raise ActionError(f"shell: command not found: {argv[0]!r}", retryable=False)
            except PermissionError:
                raise ActionError(f"shell: permission denied: {argv[0]!r}", retryable=False)
            cut: dict[int, int] = {}  # a stream's file descriptor -> its length when cut back (_drop_past_kept)
            stopped = self._wait(process, started, limit, limits, (out, err), cut)
            exit_code = process.returncode
            crossing = stopped if stopped == "output_kb" else None
            if stopped is None:
                # A quick command may have ended before the wait loop looked at its output.
                crossing = crossed(limits, exit_code, _last_line(err)) or (
                    "output_kb" if _over(limits.output_bytes, (out, err), cut) else None)
                if crossing:
                    # Whatever the command started must not outlive the step.
                    _kill_group(process)
            stdout, stderr = _output(out, cut), _output(err, cut)
            last_line = _last_line(err)

        elapsed = time.monotonic() - started
        if stopped == "cancelled":
            raise ActionError(f"shell: cancelled after {elapsed:.1f} s; the command was killed", retryable=False)
        if stopped == "timeout":
            raise ActionError(f"shell: command timed out after {limit:g} s and was killed")
        if crossing:
            # Another attempt would cross the same limit.
            raise ActionError(f"shell: killed: {limits.describe(crossing)} exceeded"
                              + (f": {last_line}" if last_line and crossing != "output_kb" else ""), retryable=False)
        logger.info("shell %s: exit code %d after %.1f s", self.name, exit_code, elapsed)
        if exit_code != 0:
            how = (f"was killed by signal {_signal_name(-exit_code)}" if exit_code < 0
                   else f"exited with code {exit_code}")
            raise ActionError(f"shell: command {how}" + (f": {last_line}" if last_line else ""))
        return {"exit_code": exit_code, "stdout": stdout, "stderr": stderr}

    def _argv(self) -> list[str]:
        command = self.command
        if isinstance(command, str):
            if not command.strip():
                raise ActionError("shell: command is empty", retryable=False)
            return ["/bin/sh", "-c", command]
        if isinstance(command, (list, tuple)) and command and all(
            isinstance(part, (str, int, float)) and not isinstance(part, bool) for part in command
        ):
            return [str(part) for part in command]
        raise ActionError(f"shell: command must be a string or a list of arguments, got {command!r}",
                          retryable=False)

    def _env(self) -> dict[str, str]:
        if self.env is not None and not isinstance(self.env, Mapping):
            raise ActionError(f"shell: env must be a mapping of names to values, got {self.env!r}", retryable=False)
        # The secret settings all have secret-looking names (tests/test_redaction.py holds it), so
        # the key rule removes them with any other credential the server was started with.
        inherited = {name: value for name, value in os.environ.items() if not is_secret_key(name)}
        own = {str(key): "" if value is None else str(value) for key, value in (self.env or {}).items()}
        return {**inherited, **own}

    def _timeout(self) -> float | None:
        """The command's own timeout, else the step timeout: the engine gives up on a step but cannot kill it."""
        value = self.timeout if self.timeout not in (None, "") else self.context.step_timeout
        if value is None:
            return None
        return capped(seconds(value, "timeout", "shell"), "WORKFLOW_MAX_STEP_TIMEOUT", self.context.settings,
                      "shell: timeout")

    def _wait(self, process: subprocess.Popen, started: float, limit: float | None, limits: Limits,
              streams: tuple[IO[bytes], IO[bytes]], cut: dict[int, int]) -> str | None:
        """Wait for the process; "timeout", "cancelled" or "output_kb" when it had to be killed."""
        cancel = self.context.cancel_event
        with _ExitWatch(process) as ended:
            try:
                return self._watch(process, ended, cancel, started, limit, limits, streams, cut)
            except BaseException:
                _kill_group(process)  # whatever went wrong here, the command must not outlive its step
                raise

    def _watch(self, process: subprocess.Popen, ended: _ExitWatch, cancel: Any, started: float,
               limit: float | None, limits: Limits, streams: tuple[IO[bytes], IO[bytes]],
               cut: dict[int, int]) -> str | None:
        """_wait's loop: every POLL_SECONDS, or at once when the command ends."""
        while True:
            if ended.wait(0):
                # What the command left running in its group (``daemon &``) must not outlive the step.
                _kill_leftovers(process)
                process.wait()
                return None
            if ended.wait(POLL_SECONDS):
                continue  # ended meanwhile: reaped above at once, not after the rest of the interval
            _drop_past_kept(streams, cut)
            if cancel.is_set():
                reason = "cancelled"
            elif limit is not None and time.monotonic() - started >= limit:
                reason = "timeout"
            elif _over(limits.output_bytes, streams, cut):
                # Checked every POLL_SECONDS: a fast writer gets somewhat past it before it is killed.
                reason = "output_kb"
            else:
                continue
            logger.warning("shell %s: %s; killing process group %d", self.name, reason, process.pid)
            _kill_group(process)
            return reason


def _hide_server_environment() -> None:
    """Make this server non-dumpable (Linux), so no command it runs reads its environment or memory.

    The command runs as the server's user, which may read ``/proc/<server>/environ`` and find every
    secret setting the server was started with there (WORKFLOW_API_TOKEN, SMTP_PASSWORD...), however
    clean the command's own environment is. A command starts dumpable again (execve resets the flag).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):  # no C library to ask: nothing more can be done
        logger.warning("shell: cannot make the server non-dumpable; commands may read its environment")


class _ExitWatch:
    """Waits for a command to end without reaping it (its zombie keeps the group's id from being reused).

    On Linux a pidfd becomes readable when the process ends, so the wait returns at once; elsewhere the
    process is looked at after each interval.
    """

    def __init__(self, process: subprocess.Popen):
        self._process = process
        self._pidfd: int | None = None
        self._poller: select.poll | None = None

    def __enter__(self) -> _ExitWatch:
        try:
            self._pidfd = os.pidfd_open(self._process.pid)
        except (AttributeError, OSError):  # not Linux 5.3+: looked at every interval instead
            return self
        # poll, not select: select refuses a descriptor past 1023, which a busy server's may well be.
        self._poller = select.poll()
        self._poller.register(self._pidfd, select.POLLIN)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)

    def wait(self, seconds: float) -> bool:
        """True once the command ended, waiting up to ``seconds`` for it."""
        if self._poller is not None and seconds > 0:
            self._poller.poll(seconds * 1000)
        elif seconds > 0 and not _ended(self._process):
            time.sleep(seconds)
        return _ended(self._process)


def _ended(process: subprocess.Popen) -> bool:
    """Whether the command ended, leaving it unreaped: its zombie keeps the group's id from being reused."""
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _start(argv: list[str], limits: Limits, **options: Any) -> subprocess.Popen:
    """Start the command in a session of its own, so a timeout can kill its children too.

    On Linux it runs under a reaper (actions/shell_reaper.py), alone in that session's group, which
    also holds and kills what leaves the session; the Popen is the reaper's. Raises OSError as
    Popen does when the command cannot start.
    """
    if not _reaped():
        # preexec_fn sets the rlimits in the child before exec (see shell_limits.preexec).
        return subprocess.Popen(argv, start_new_session=True, preexec_fn=preexec(limits), **options)
    read, write = os.pipe()
    with open(read, "rb") as failure:
        try:
            # The reaper is one more process of the user, which RLIMIT_NPROC counts.
            process = subprocess.Popen(shell_reaper.argv(write, rlimits(limits, others=1), argv), pass_fds=(write,),
                                       start_new_session=True, **options)
        finally:
            os.close(write)
        # Empty once the command runs: its copy closes when it execs, the reaper's after the fork.
        code = failure.read()
    if code:
        process.wait()
        raise OSError(int(code), os.strerror(int(code)), argv[0])
    return process


def _reaped() -> bool:
    """Whether commands run under a reaper: it needs Linux (a child subreaper, /proc) and a Python to run it."""
    return sys.platform.startswith("linux") and bool(sys.executable)


def _kill_leftovers(process: subprocess.Popen) -> None:
    """SIGKILL what is left of the command's process group once the command itself ended.

    Under a reaper that group is the reaper alone, which killed every process the command left before it ended.
    """
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left: the usual case


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL whatever is left after a grace period.

    Under a reaper the group is the reaper alone: it passes SIGTERM on to every process of the command
    and SIGKILLs those left itself, so it gets the time that takes; SIGKILL would leave them to init.
    """
    term_wait = shell_reaper.LONGEST_SECONDS if _reaped() else KILL_GRACE_SECONDS
    for sig, grace in ((signal.SIGTERM, term_wait), (signal.SIGKILL, KILL_GRACE_SECONDS)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # the group is already gone
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue


def _drop_past_kept(streams: tuple[IO[bytes], ...], cut: dict[int, int]) -> None:
    """Cut a stream's file back to the MAX_OUTPUT_BYTES kept once it holds more than MAX_OUTPUT_ON_DISK.

    The command goes on writing at its own offset, leaving a hole where the cut part was; ``cut``
    keeps how long the file was, for the truncation note and output_kb.
    """
    for stream in streams:
        info = os.fstat(stream.fileno())
        if info.st_blocks * 512 > MAX_OUTPUT_ON_DISK:
            cut[stream.fileno()] = max(cut.get(stream.fileno(), 0), info.st_size)
            os.ftruncate(stream.fileno(), MAX_OUTPUT_BYTES)


def _size(stream: IO[bytes], cut: dict[int, int]) -> int:
    """All a command wrote to ``stream``, the part cut back included."""
    return max(os.fstat(stream.fileno()).st_size, cut.get(stream.fileno(), 0))


def _over(most: int | None, streams: tuple[IO[bytes], ...], cut: dict[int, int]) -> bool:
    """Whether the command wrote more than ``most`` bytes to the streams together."""
    return most is not None and sum(_size(stream, cut) for stream in streams) > most


def _output(file: IO[bytes], cut: dict[int, int]) -> str:
    """The first MAX_OUTPUT_BYTES of a stream as text, with a note when more was cut."""
    size = _size(file, cut)
    file.seek(0)
    text = file.read(MAX_OUTPUT_BYTES).decode("utf-8", "replace")
    if size > MAX_OUTPUT_BYTES:
        text += f"\n[output truncated: {size} bytes, first {MAX_OUTPUT_BYTES} kept]"
    return text


def _last_line(file: IO[bytes]) -> str:
    """The last non-empty line of a stream, for the error message."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - 4096))
    lines = [line.strip() for line in file.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
