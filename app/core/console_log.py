"""The console log's format: one record starts one line, whatever the text it quotes holds."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Continuation lines start with this, so no text a record quotes can start a line of its own.
INDENT = "    "


class ConsoleFormatter(logging.Formatter):
    """FORMAT, with every line after a record's first indented (its message's, its traceback's).

    A record quotes untrusted text (a file name, an event type, a log step's message): a line break in it
    would otherwise begin a line that reads as another record, ``... CRITICAL app.audit: ...``.
    """

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        # splitlines: \r, \v, \f, \x1c-\x1e, \x85 and \u2028-9 end a line for some readers too.
        return f"\n{INDENT}".join(super().format(record).splitlines())
