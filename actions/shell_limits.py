"""A shell step's ``limits``: checked, applied with setrlimit in the child, and recognised once crossed.

``cpu_seconds`` (RLIMIT_CPU) and ``memory_mb`` (RLIMIT_AS, the address space) bind each process
of the command on its own: a child it starts gets its own allowance. ``processes`` (RLIMIT_NPROC)
is counted by the kernel per user, over every process and thread of the user that runs PyFlow;
so the child's limit is that user's count when the command starts (its reaper, on Linux, counted
apart) plus ``processes``, which lets the command and its descendants number about ``processes``
(other work of the same user that starts or ends meanwhile moves the bound). Root and holders of
CAP_SYS_RESOURCE or CAP_SYS_ADMIN are never bound by RLIMIT_NPROC, so ``processes`` is refused for
them. ``output_kb`` needs no rlimit: the step watches what the command wrote to stdout and stderr
together.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

try:  # POSIX only; where it is missing the limits that need it are refused.
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

NAMES = ("cpu_seconds", "memory_mb", "output_kb", "processes")
UNITS = {"cpu_seconds": "s", "memory_mb": "MB", "output_kb": "KB", "processes": ""}
# Linux capability bits that lift RLIMIT_NPROC (linux/capability.h).
_CAP_SYS_ADMIN, _CAP_SYS_RESOURCE = 21, 24
# What a command tends to print when the kernel refused it memory or a new process.
_MEMORY_SIGNS = re.compile(r"MemoryError|Cannot allocate memory|out of memory|bad_alloc|memory exhausted", re.I)
_PROCESS_SIGNS = re.compile(r"fork|Resource temporarily unavailable|can't start new thread", re.I)


@dataclass(frozen=True)
class Limits:
    """The limits of one command; None means unlimited."""

    cpu_seconds: int | None = None
    memory_mb: float | None = None
    output_kb: float | None = None
    processes: int | None = None

    def describe(self, name: str) -> str:
        """``cpu_seconds limit of 2 s``."""
        unit = UNITS[name]
        return f"{name} limit of {getattr(self, name):g}" + (f" {unit}" if unit else "")

    @property
    def output_bytes(self) -> int | None:
        return None if self.output_kb is None else int(self.output_kb * 1024)


def unsupported(name: str) -> str | None:
    """Why this platform (or this user) cannot apply limit ``name``, else None."""
    if name == "output_kb":
        return None  # watched by the step itself, everywhere
    if resource is None:
        return f"{name} needs the resource module, which {sys.platform} lacks"
    if name == "cpu_seconds":
        return None if hasattr(resource, "RLIMIT_CPU") else f"cpu_seconds needs RLIMIT_CPU, which {sys.platform} lacks"
    if not sys.platform.startswith("linux"):
        # macOS has RLIMIT_AS but does not enforce it; the processes count reads /proc.
        return f"{name} is only applied on Linux, not on {sys.platform}"
    if name == "memory_mb":
        return None if hasattr(resource, "RLIMIT_AS") else "memory_mb needs RLIMIT_AS, which this Python lacks"
    if not hasattr(resource, "RLIMIT_NPROC"):
        return "processes needs RLIMIT_NPROC, which this Python lacks"
    if _nproc_exempt():
        return ("processes cannot be applied: PyFlow runs as root (or with CAP_SYS_RESOURCE/CAP_SYS_ADMIN), "
                "whom the kernel's RLIMIT_NPROC never binds; run PyFlow as an ordinary user")
    return None


def _nproc_exempt() -> bool:
    """Whether the kernel ignores RLIMIT_NPROC for this process (real uid 0 or the capabilities)."""
    if os.getuid() == 0:
        return True
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            caps = next((int(line.split()[1], 16) for line in status if line.startswith("CapEff:")), 0)
    except OSError:
        return False
    return bool(caps & (1 << _CAP_SYS_ADMIN | 1 << _CAP_SYS_RESOURCE))


def check(value: Any, *, allow_templates: bool) -> Limits:
    """``limits`` from a definition; ValueError naming the limit for a bad or inapplicable one.

    With ``allow_templates`` (definition time) a value holding ``{{`` is left for run time, but
    the limit must still be one this platform can apply.
    """
    if value is None:
        return Limits()
    if not isinstance(value, Mapping):
        raise ValueError(f"limits must be a mapping of {', '.join(NAMES)}, got {value!r}")
    unknown = sorted(str(key) for key in value if key not in NAMES)
    if unknown:
        raise ValueError(f"limits.{unknown[0]} is not a limit; known: {', '.join(NAMES)}")
    numbers: dict[str, Any] = {}
    for name, raw in value.items():
        if raw is None:
            continue
        why = unsupported(name)
        if why:
            raise ValueError(f"limits.{name} refused: {why}")
        if allow_templates and isinstance(raw, str) and "{{" in raw:
            continue
        numbers[name] = _number(name, raw)
    return Limits(**numbers)


def _number(name: str, raw: Any) -> float | int:
    try:
        number = math.nan if isinstance(raw, bool) else float(str(raw).strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"limits.{name} must be a number > 0, got {raw!r}")
    if name in ("cpu_seconds", "processes"):
        # The kernel counts whole seconds and whole processes; rounding up never cuts a command short.
        return math.ceil(number)
    return number


def user_tasks() -> int:
    """The processes and threads of this real user, as RLIMIT_NPROC counts them (Linux /proc)."""
    uid, total = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="utf-8", errors="replace") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue  # gone meanwhile
        if int(fields.get("Uid", "-1 0").split()[0]) == uid:
            total += int(fields.get("Threads", "1"))
    return total


def rlimits(limits: Limits, *, others: int = 0) -> list[tuple[int, tuple[int, int]]]:
    """The (resource, (soft, hard)) pairs that apply ``limits`` to a command, computed before it starts.

    ``others``: processes of the user that start with the command and are not its own (its reaper,
    actions/shell_reaper.py), which RLIMIT_NPROC counts too.
    """
    settings: list[tuple[int, tuple[int, int]]] = []
    if limits.cpu_seconds is not None:
        # SIGXCPU at the soft limit, SIGKILL a second later for a command that ignores it; no core file.
        settings.append((resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1)))
        settings.append((resource.RLIMIT_CORE, (0, 0)))
    if limits.memory_mb is not None:
        size = int(limits.memory_mb * 1024 * 1024)
        settings.append((resource.RLIMIT_AS, (size, size)))
    if limits.processes is not None:
        # The kernel compares the user's whole count (the server's threads too) with the limit.
        allowed = user_tasks() + others + limits.processes
        settings.append((resource.RLIMIT_NPROC, (allowed, allowed)))
    return settings


def preexec(limits: Limits) -> Callable[[], None] | None:
    """The function the child runs between fork and exec to set its rlimits; None when there are none.

    Every number is computed here, in the parent: the child only calls setrlimit, takes no lock,
    imports nothing and logs nothing, which keeps preexec_fn safe in this threaded server.
    """
    settings = rlimits(limits)
    if not settings:
        return None
    setrlimit = resource.setrlimit

    def apply() -> None:
        for which, pair in settings:
            setrlimit(which, pair)

    return apply


def crossed(limits: Limits, exit_code: int, last_line: str) -> str | None:
    """The limit a command that ended with ``exit_code`` crossed, judged by how it died; else None."""
    # A shell (``/bin/sh -c``, a script) reports a child killed by signal N as exit code 128 + N.
    # SIGKILL counts only when it hit the command itself: the hard limit, a second after SIGXCPU.
    if limits.cpu_seconds is not None and (-exit_code in (signal.SIGXCPU, signal.SIGKILL)
                                           or exit_code == 128 + signal.SIGXCPU):
        return "cpu_seconds"
    if exit_code == 0:
        return None
    if limits.memory_mb is not None and _MEMORY_SIGNS.search(last_line):
        return "memory_mb"
    if limits.processes is not None and _PROCESS_SIGNS.search(last_line):
        return "processes"
    return None
