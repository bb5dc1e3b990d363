"""A shell step's reaper (Linux): the process between the server and a command, holding all it starts.

ShellAction runs ``python -I -S shell_reaper.py FD [WHICH:SOFT:HARD ...] -- COMMAND...`` in a session of
its own (``argv`` below). The reaper makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so a
process the command starts stays the reaper's descendant whatever session or process group it moves to
(``setsid daemon &``, ``set -m``, a double fork) instead of going to init when its parent ends. The
server cannot be that subreaper itself: the orphans of every command, and of any other child it has,
would all become its children, and nothing would tell which command's each was.

The reaper starts the command in a process group of its own with the rlimits given, then:

- when the command ends, SIGKILLs every descendant left, again until none is left (they may fork
  meanwhile), and exits as the command did: with its exit code, or killed by its signal;
- on SIGTERM (the step timed out, was cancelled or crossed a limit), sends SIGTERM to every descendant,
  then SIGKILL to all that are left once the command ended or GRACE_SECONDS later.

A command that cannot start has its errno written to FD; FD is closed once the command runs. The
reaper uses the standard library only (isolated mode gives it no path to PyFlow's code). A command
that kills the reaper itself (``kill -9 $PPID``) leaves its processes to init: only a cgroup or a PID
namespace could hold that one.
"""

from __future__ import annotations

# Each import adds to every command's start: no typing, no collections, and _signal, the functions of
# signal without its enums (which import enum, 3 ms of a 10 ms start).
import _signal as signal
import ctypes
import os
import sys
import time

# Time the command and its descendants get between SIGTERM and SIGKILL.
GRACE_SECONDS = 1.0
# How long the reaper goes on killing descendants that do not die (stuck in the kernel, another user's).
GIVE_UP_SECONDS = 5.0
# The longest a reaper takes to end after SIGTERM; the server SIGKILLs it only past this.
LONGEST_SECONDS = GRACE_SECONDS + GIVE_UP_SECONDS + 2.0
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
# Blocked, and taken with sigwaitinfo: no handler runs in the middle of a fork or a kill.
_WATCHED = {signal.SIGTERM, signal.SIGCHLD}


def argv(status_fd: int, rlimits: list[tuple[int, tuple[int, int]]], command: list[str]) -> list[str]:
    """The reaper's command line: run ``command`` with ``rlimits`` ((resource, (soft, hard)) pairs)."""
    limits = [f"{which}:{soft}:{hard}" for which, (soft, hard) in rlimits]
    # -I -S: no PYTHON* variable of the command's env, no site-packages; nothing but the standard library.
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(status_fd), *limits, "--", *command]


def main(args: list[str]) -> None:
    """Run the command ``args`` name, reap every process it starts, then exit as the command did."""
    status_fd, split = int(args[0]), args.index("--")
    rlimits = [(int(which), (int(soft), int(hard))) for which, soft, hard in
               (item.split(":") for item in args[1:split])]
    command = args[split + 1:]
    # Without it (a kernel before 3.4) orphans go to init, as they would with no reaper.
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
    environment = _environment()
    os.set_inheritable(status_fd, False)  # the command's copy closes when it execs
    pid = os.fork()
    if pid == 0:
        _exec(command, rlimits, environment, status_fd)
    os.close(status_fd)
    reaper = _Reaper(pid)
    reaper.wait()
    reaper.kill_all()
    reaper.exit()


def _exec(command: list[str], rlimits: list[tuple[int, tuple[int, int]]], environment: dict[bytes, bytes],
          status_fd: int) -> None:
    """In the forked child: a process group of its own, the rlimits, signals as a new process has them, exec."""
    try:
        os.setpgid(0, 0)
        if rlimits:
            import resource  # only here: the reaper starts faster without it
            for which, pair in rlimits:
                resource.setrlimit(which, pair)
        for number in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(number, signal.SIG_DFL)  # Python ignores them; subprocess restores them too
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
    except BaseException as error:  # a limit out of reach: said on the command's stderr, exit code 127
        os.write(2, f"shell: cannot start the command: {error}\n".encode())
        os._exit(127)
    try:
        os.execvpe(command[0], command, environment)
    except OSError as error:
        os.write(status_fd, str(error.errno or 0).encode())
    os._exit(127)


class _Reaper:
    """The command's pid and, once it ended, its wait status."""

    def __init__(self, pid: int):
        self.pid = pid
        self.status: int | None = None

    def reap(self) -> bool:
        """Reap every child that ended, keeping the command's status; whether any child is left."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.pid:
                self.status = status

    def wait(self) -> None:
        """Until the command ended; after a SIGTERM, which every descendant gets too, GRACE_SECONDS at most."""
        until = None
        while self.reap() and self.status is None:
            if until is None:
                number = signal.sigwaitinfo(_WATCHED).si_signo
            else:
                left = until - time.monotonic()
                if left <= 0:
                    return
                info = signal.sigtimedwait(_WATCHED, left)
                number = info.si_signo if info is not None else 0
            if number == signal.SIGTERM and until is None:
                _signal_descendants(signal.SIGTERM)
                until = time.monotonic() + GRACE_SECONDS

    def kill_all(self) -> None:
        """SIGKILL every descendant until none is left (they may fork meanwhile), GIVE_UP_SECONDS at most."""
        # With no child left there is no descendant either: an orphan is reparented to this process.
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while self.reap() and time.monotonic() < deadline:
            _signal_descendants(signal.SIGKILL)
            signal.sigtimedwait({signal.SIGCHLD}, 0.05)  # a child's end, or another look

    def exit(self) -> None:
        """End as the command did: with its exit code, or killed by the signal that killed it."""
        if self.status is not None and os.WIFEXITED(self.status):
            os._exit(os.WEXITSTATUS(self.status))
        # Still running after GIVE_UP_SECONDS: reported as killed.
        number = os.WTERMSIG(self.status) if self.status is not None else signal.SIGKILL
        _prctl(_PR_SET_DUMPABLE, 0)  # no core file of the reaper beside the command's own
        try:
            signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL: cannot be caught anyway
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {number})
        os.kill(os.getpid(), number)
        os._exit(128 + number)  # a signal whose default is not to end the process


def _signal_descendants(number: int) -> None:
    """Send signal ``number`` to every descendant of this process."""
    for pid in _descendants(os.getpid()):
        try:
            os.kill(pid, number)
        except OSError:
            pass  # ended meanwhile, or another user's (a setuid program): out of reach


def _descendants(root: int) -> list[int]:
    """The pids below ``root``, by the parent each /proc/<pid>/stat names (whatever its session or group)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses, the last ")" ends it.
                parent = int(stat.read().rpartition(b")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        children.setdefault(parent, []).append(int(name))
    found, queue = [], [root]
    while queue:
        for child in children.get(queue.pop(), ()):
            found.append(child)
            queue.append(child)
    return found


def _environment() -> dict[bytes, bytes]:
    """The environment this process was started with, byte for byte, for the command.

    Not os.environ: Python coerces a C locale at start-up by adding LC_CTYPE=C.UTF-8, which the
    command must not get when the step did not give it.
    """
    try:
        with open("/proc/self/environ", "rb") as environ:
            entries = environ.read().split(b"\0")
    except OSError:
        return dict(os.environb)
    return dict(entry.split(b"=", 1) for entry in entries if b"=" in entry[1:])


def _prctl(option: int, value: int) -> None:
    """prctl(2) through the C library; nothing when there is none to ask."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
