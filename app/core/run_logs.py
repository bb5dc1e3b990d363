"""Each run's own log lines: the engine's messages and whatever its actions log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from app.core.redaction import Scrubber, swap_scrubber
from app.runs import format_time
from app.storage.base import Store

logger = logging.getLogger(__name__)

_scope = threading.local()


@contextmanager
def run_scope(store: Store, run_id: str, step: str | None, scrubber: Scrubber | None = None) -> Iterator[None]:
    """Log records emitted by this thread inside the block also go to the run's log, secrets scrubbed."""
    previous = getattr(_scope, "current", None)
    scrubber = scrubber or Scrubber()
    _scope.current = (store, run_id, step, scrubber)
    # The console log is scrubbed of the run's secrets too (one generator, not two nested: it runs per step).
    previous_scrubber = swap_scrubber(scrubber)
    try:
        yield
    finally:
        swap_scrubber(previous_scrubber)
        _scope.current = previous


def write(store: Store, run_id: str, level: int, message: str, step: str | None = None,
          scrubber: Scrubber | None = None, *, defer: bool = False) -> None:
    """Add one line to a run's log (``defer``: see Store); errors are logged, not raised: a log must not fail a run."""
    entry = {"at": format_time(time.time()), "level": logging.getLevelName(level).lower(), "step": step,
             "message": scrubber.text(message) if scrubber else message}
    try:
        store.append_log(run_id, entry, defer=defer)
    except Exception:
        logger.warning("cannot write the log of run %s", run_id, exc_info=True)


class RunLogHandler(logging.Handler):
    """Copies records emitted inside a ``run_scope`` into that run's log."""

    def emit(self, record: logging.LogRecord) -> None:
        current = getattr(_scope, "current", None)
        if current is None or record.name.startswith(__name__):
            return
        store, run_id, step, scrubber = current
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        entry = {"at": format_time(record.created), "level": record.levelname.lower(), "step": step,
                 "message": scrubber.text(message)}
        try:
            store.append_log(run_id, entry)
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
