"""Regular expressions from definitions and inputs, run with a time limit (the ``regex`` module).

A pattern such as ``^(a|a)*$`` backtracks for ages on 30 characters; Python's ``re``
cannot be stopped and holds the GIL meanwhile, so one such pattern stalls the whole
server. ``regex`` takes a ``timeout`` and, with ``concurrent=True``, releases the GIL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import regex

# WORKFLOW_REGEX_TIMEOUT's default, for callers without settings (an action run on its own).
DEFAULT_TIMEOUT = 1.0
SETTING = "WORKFLOW_REGEX_TIMEOUT"


# The budget of the searches under way on this thread: (monotonic deadline, seconds), or None.
_budget = threading.local()


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


@contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Every search in the block (on this thread) shares ``seconds``; a nested budget keeps the outer one.

    A schema with a pattern for each of 1,000 items, or a filter over 10,000 rows,
    would otherwise take up to ``seconds`` per search.
    """
    outer = getattr(_budget, "limit", None)
    if outer is None:
        _budget.limit = (time.monotonic() + seconds, seconds)
    try:
        yield
    finally:
        if outer is None:
            _budget.limit = None


def search(pattern: str, text: str, timeout: float = DEFAULT_TIMEOUT) -> regex.Match | None:
    """``re.search(pattern, text)``; PatternTimeout after ``timeout`` seconds or the rest of the budget."""
    compiled = compile_pattern(pattern)
    limit = getattr(_budget, "limit", None)
    total = timeout
    if limit is not None:
        timeout, total = min(timeout, limit[0] - time.monotonic()), limit[1]
    try:
        if timeout <= 0:
            raise TimeoutError
        return compiled.search(text, timeout=timeout, concurrent=True)
    except TimeoutError:
        raise PatternTimeout(f"regular expression {_short(pattern)} did not finish within {total:g} s "
                             f"on a text of {len(text)} characters ({SETTING})") from None
