"""The one check that text from outside prints as it reads: no control or format characters.

An event's type, key and id (app/core/events.py) and a waiting step's key (actions/wait_for_event.py)
ask here, so a key one side refuses is never one the other side waits for. Imports nothing of app/.
"""

from __future__ import annotations

import unicodedata

# Controls (a line break forges a log line, a NUL stops PostgreSQL), format characters (a right-to-left
# override shows text reversed), lone surrogates (no UTF-8 writer takes them) and line separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def unprintable(text: str) -> str | None:
    """The first character of ``text`` that does not print, as ``got U+000A at position 5``; None when none."""
    for index, char in enumerate(text):
        if unicodedata.category(char) in _UNPRINTABLE:
            return f"got U+{ord(char):04X} at position {index}"
    return None
