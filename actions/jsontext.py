"""JSON text from outside (request bodies, form fields, inputs), parsed with bounds.

``json.loads`` recurses once per nesting level (depth 100,000 is a RecursionError,
depth 900 passes and breaks later code), turns a 5,000-digit integer into a
ValueError about Python's limit, accepts ``NaN`` and ``Infinity``, which no
JSON reader takes back, and a lone surrogate escape (``"\\ud800"``), which no
UTF-8 writer (the stores) takes. Here each is refused with a message for the sender.
"""

from __future__ import annotations

import json
import math
import re
import sys
from array import array
from itertools import accumulate
from typing import Any

# WORKFLOW_MAX_JSON_DEPTH's default, for callers without settings.
DEFAULT_MAX_DEPTH = 64
SETTING = "WORKFLOW_MAX_JSON_DEPTH"
# A JSON string, quotes and escapes included (the unrolled form: linear, no backtracking).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# An escape of half a UTF-16 surrogate pair: the parsed value is checked only when one is in the text.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Opening brackets as +1, closing ones as -1 (a signed byte).
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


class JSONLimitError(ValueError):
    """JSON text that is well-formed but beyond what PyFlow accepts; the message says which bound."""


def nesting(text: str) -> int:
    """How deep ``text`` nests arrays and objects (brackets inside strings do not count); never recurses.

    Strings are taken out and the brackets mapped to +1/-1 at C speed; the depth
    is the largest running sum (12 MB of brackets take about 0.2 s).
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    steps = array("b", brackets.encode("ascii").translate(_STEPS))
    return max(accumulate(steps), default=0)


def _constant(name: str) -> Any:
    raise JSONLimitError(f"{name} is not a JSON number; send a finite number or null")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise JSONLimitError(f"an integer of {len(text.lstrip('-'))} digits is too long "
                             f"(at most {_max_digits()} digits)") from None


def _float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise JSONLimitError(f"the number {text[:40]} is too large for a JSON number (it would be Infinity)")
    return number


def _max_digits() -> int:
    return sys.get_int_max_str_digits() or 4300


def load_json(raw: str | bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse JSON text; JSONDecodeError when malformed, JSONLimitError past a bound (both ValueError).

    Bytes are decoded as ``json.loads`` does (UTF-8, -16 or -32); UnicodeDecodeError otherwise.
    """
    text = raw.decode(json.detect_encoding(raw)) if isinstance(raw, (bytes, bytearray)) else raw
    # Counting first keeps the common small body off the scan.
    if text.count("[") + text.count("{") > max_depth and nesting(text) > max_depth:
        raise JSONLimitError(f"JSON nested deeper than {max_depth} levels ({SETTING})")
    value = json.loads(text, parse_constant=_constant, parse_int=_integer, parse_float=_float)
    if _SURROGATE_ESCAPE.search(text):
        _check_surrogates(value)
    return value


def _check_surrogates(value: Any) -> None:
    """JSONLimitError when ``value`` holds half a surrogate pair (a pair is one character once parsed)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(error.object[error.start])
        raise JSONLimitError(f"the escape \\u{code:04x} is half of a UTF-16 surrogate pair, not a character; "
                             f"send the whole pair or the character itself") from None
