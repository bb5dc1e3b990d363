"""Each run's own log lines: the engine's messages and whatever its actions log, repeats folded, capped."""

from __future__ import annotations

import logging
import threading
import time

from app.core.redaction import Scrubber, swap_scrubber
from app.runs import format_time
from app.storage.base import Durability, Store

logger = logging.getLogger(__name__)

# Lines one run keeps when WORKFLOW_RUN_LOG_LINES is not set.
DEFAULT_MAX_LINES = 1000
# The longest line kept: 500 log steps of 10,000,000 characters wrote 5 GB of one run's log.
MAX_LINE_CHARS = 16384

_scope = threading.local()

#: ``extra=`` of a record about the process, not the run it happens under (the secrets' key file made or read
#: on a step's thread): it goes to the server's log only, so no run record names the server's files.
PROCESS_WIDE = {"pyflow_process_wide": True}


class RunLog:
    """One run's log as it is written: consecutive repeats become one line, at most ``max_lines`` are kept.

    A step that logs the same warning for every object of a PDF writes it once,
    then "... repeated 312 more times" when another line comes (or the run ends).
    Past ``max_lines`` an action's lines are counted, not kept, and ``close()``
    says how many were dropped; the engine's own lines (``keep``) are always kept,
    so a run's log still ends with how it ended. Errors are logged, never raised:
    a log must not fail a run.
    """

    def __init__(self, store: Store, run_id: str, scrubber: Scrubber | None = None,
                 max_lines: int = DEFAULT_MAX_LINES, kept: int = 0):
        self.store = store
        self.run_id = run_id
        # Not ``scrubber or Scrubber()``: an empty scrubber is falsy, and the run's secrets are added to it later.
        self.scrubber = scrubber if scrubber is not None else Scrubber()
        self.max_lines = max_lines
        self.kept = kept  # lines in the store, also those of an earlier process (a resumed run)
        self.dropped = 0
        self._lock = threading.Lock()  # a loop's worker threads log into the same run
        self._last: tuple[str, str | None, str] | None = None
        self._last_mode = Durability.WRITTEN
        self._repeats = 0
        self._repeated_at = 0.0

    def write(self, level: int | str, message: str, step: str | None = None, *, at: float | None = None,
              mode: Durability = Durability.WRITTEN, keep: bool = False) -> None:
        """Add one line (``mode``: see Durability; ``keep``: also past the cap), or count it as a repeat."""
        name = (logging.getLevelName(level) if isinstance(level, int) else level).lower()
        text = self.scrubber.text(message)  # scrubbed whole, then cut: a secret cut in two would show its start
        if len(text) > MAX_LINE_CHARS:
            text = f"{text[:MAX_LINE_CHARS]} ... ({len(text) - MAX_LINE_CHARS:,} more characters)"
        key = (name, step, text)
        at = time.time() if at is None else at
        with self._lock:
            if key == self._last:
                self._repeats += 1
                self._repeated_at = at
                return
            self._flush_repeats()
            self._last, self._last_mode = key, mode
            self._append(key, at, mode, keep)

    def close(self) -> None:
        """At the run's end (or halt): write a pending repeat count and how many lines were dropped."""
        with self._lock:
            self._flush_repeats()
            self._last = None
            if self.dropped:
                message = (f"{self.dropped} more log lines of this run were dropped: a run keeps at most "
                           f"{self.max_lines} (WORKFLOW_RUN_LOG_LINES)")
                self._append(("warning", None, message), time.time(), Durability.WRITTEN, True)
                self.dropped = 0

    def _flush_repeats(self) -> None:
        if self._repeats and self._last is not None:
            level, step, _ = self._last
            times = "once more" if self._repeats == 1 else f"{self._repeats} more times"
            self._append((level, step, f"... repeated {times}"), self._repeated_at, self._last_mode, False)
        self._repeats = 0

    def _append(self, key: tuple[str, str | None, str], at: float, mode: Durability, keep: bool) -> None:
        if not keep and self.kept >= self.max_lines:
            if not self.dropped:  # said at once, for whoever watches the run live; close() gives the count
                self._append(("warning", None, f"the log reached {self.max_lines} lines (WORKFLOW_RUN_LOG_LINES): "
                                               "later lines of this run's steps are counted, not kept"),
                             at, Durability.WRITTEN, True)
            self.dropped += 1
            return
        self.kept += 1
        level, step, message = key
        entry = {"at": format_time(at), "level": level, "step": step, "message": message}
        try:
            self.store.append_log(self.run_id, entry, mode=mode)
        except Exception:
            logger.warning("cannot write the log of run %s", self.run_id, exc_info=True)


class RunScope:
    """Log records emitted by this thread inside the block also go to the run's log, secrets scrubbed.

    A class rather than a @contextmanager generator: it runs for every step, and costs half as much.
    """

    __slots__ = ("_current", "_previous", "_previous_scrubber")

    def __init__(self, log: RunLog, step: str | None):
        self._current = (log, step)

    def __enter__(self) -> None:
        self._previous = getattr(_scope, "current", None)
        _scope.current = self._current
        # The console log is scrubbed of the run's secrets too.
        self._previous_scrubber = swap_scrubber(self._current[0].scrubber)

    def __exit__(self, *exc_info: object) -> None:
        swap_scrubber(self._previous_scrubber)
        _scope.current = self._previous


def run_scope(log: RunLog, step: str | None) -> RunScope:
    """Inside ``with run_scope(log, step):`` this thread's log records also go to the run's log (see RunScope)."""
    return RunScope(log, step)


class RunLogHandler(logging.Handler):
    """Copies records emitted inside a ``run_scope`` into that run's log."""

    def emit(self, record: logging.LogRecord) -> None:
        current = getattr(_scope, "current", None)
        if current is None or record.name.startswith(__name__) or getattr(record, "pyflow_process_wide", False):
            return
        log, step = current
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        try:
            # Kept through a kill -9 of PyFlow, as the JSON store's WRITTEN lines are; on PostgreSQL without
            # waiting for the WAL's flush: a crash of the database server can only take lines, never a step's state.
            log.write(record.levelname, message, step, at=record.created, mode=Durability.REPEATABLE)
        except Exception:
            self.handleError(record)


_installed = threading.Lock()


def install() -> None:
    """Attach the one RunLogHandler to the root logger (idempotent)."""
    with _installed:
        root = logging.getLogger()
        if not any(isinstance(handler, RunLogHandler) for handler in root.handlers):
            root.addHandler(RunLogHandler())
        # The log action's messages must reach run logs even when the root logger shows only warnings.
        workflow_logger = logging.getLogger("pyflow.workflow")
        if workflow_logger.level == logging.NOTSET:
            workflow_logger.setLevel(logging.INFO)
