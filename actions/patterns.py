"""Regular expressions from definitions and inputs, run with a time limit (the ``regex`` module).

A pattern such as ``^(a|a)*$`` backtracks for ages on 30 characters; Python's ``re``
cannot be stopped and holds the GIL meanwhile, so one such pattern stalls the whole
server. ``regex`` takes a ``timeout`` and, with ``concurrent=True``, releases the GIL.
"""

from __future__ import annotations

from functools import lru_cache

import regex

# WORKFLOW_REGEX_TIMEOUT's default, for callers without settings (an action run on its own).
DEFAULT_TIMEOUT = 1.0
SETTING = "WORKFLOW_REGEX_TIMEOUT"


class PatternError(ValueError):
    """A regular expression that does not compile."""


class PatternTimeout(TimeoutError):
    """A regular expression that ran past its time limit; the message names the setting."""


def _short(pattern: str) -> str:
    return repr(pattern) if len(pattern) <= 80 else repr(pattern[:77] + "...")


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> regex.Pattern:
    """``pattern`` compiled (cached); PatternError naming it when it is not a regular expression."""
    try:
        return regex.compile(pattern)
    except (regex.error, OverflowError, RecursionError) as error:
        raise PatternError(f"invalid regular expression {_short(pattern)}: {error}") from None


def search(pattern: str, text: str, timeout: float = DEFAULT_TIMEOUT) -> regex.Match | None:
    """``re.search(pattern, text)`` that gives up after ``timeout`` seconds with PatternTimeout."""
    compiled = compile_pattern(pattern)
    try:
        return compiled.search(text, timeout=timeout, concurrent=True)
    except TimeoutError:
        raise PatternTimeout(f"regular expression {_short(pattern)} did not finish within {timeout:g} s "
                             f"on a text of {len(text)} characters ({SETTING})") from None
