"""What counts as a secret, by key and by value: shared by the runtime (app/) and actions that must not leak one."""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import quote

REDACTED = "***"
# Shorter values are not scrubbed by value: "on" or "123" would blank out ordinary text everywhere.
MIN_SCRUB_LENGTH = 4
# With more values than this, one regular expression scans a text once instead of once per value.
_MANY_VALUES = 16

# Key names are compared in snake_case (camelCase split, "-", "." and spaces read as "_", lower-cased).
# A key names a secret when its last word (or words) is one of these; Slack's and most webhook URLs
# carry their credential in the path, and database URLs and DSNs carry a password.
_LAST_WORDS = (
    r"secrets?|token|bearer|authorization|credentials?|cookie|pin|pin_?code|dsn|passwd|pwd"
    r"|(?:api|private|secret|access|client|signing|encryption|auth)_?keys?"
    r"|webhook_?url|(?:database|db|broker)_?url|connection_?string"
)
# ...or when a word starts with "password" or "passphrase" anywhere: password2, password_confirm,
# passwordHash, passphrase_file (but not "passwords_changed", a count).
_ANY_WORD = r"pass(?:word|phrase)(?!s)"
_SECRET_KEY = re.compile(rf"(?:^|_)(?:(?:{_LAST_WORDS})$|{_ANY_WORD})")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[-.\s]+")
# "Bearer abc", "Basic dXNl...": the credential alone may be echoed without its scheme.
_AUTH_SCHEME = re.compile(r"^\s*(?:bearer|basic|token|bot|digest)\s+(\S+)\s*$", re.IGNORECASE)


def is_secret_key(key: Any) -> bool:
    """True for keys such as ``password2``, ``SMTP_PASSWORD``, ``accessToken``, ``X-Api-Key``, ``database_url``."""
    return isinstance(key, str) and _is_secret_name(key)


# Every step's config and result are walked, and their keys repeat run after run: three regex passes
# per key cost more than the rest of a no-op step. Bounded, so a flood of distinct keys cannot grow it.
@lru_cache(maxsize=8192)
def _is_secret_name(key: str) -> bool:
    words = _SEPARATORS.sub("_", _CAMEL_BOUNDARY.sub("_", key)).lower()
    return bool(_SECRET_KEY.search(words))


def redact(value: Any) -> Any:
    """``value`` with every secret-named key's value replaced by ``"***"``.

    Returns the same object when nothing needed redacting, so the common case
    costs one walk and no copy.
    """
    if isinstance(value, dict):
        changed = False
        result = {}
        for key, item in value.items():
            if is_secret_key(key) and item not in (None, ""):
                new = REDACTED
            else:
                new = redact(item)
            changed = changed or new is not item
            result[key] = new
        return result if changed else value
    if isinstance(value, (list, tuple)):  # a tuple is a JSON array too
        items = [redact(item) for item in value]
        return items if any(new is not old for new, old in zip(items, value, strict=True)) else value
    return value


def secret_values(value: Any) -> set[str]:
    """The values ``redact`` would hide in ``value`` (every text or number under a secret-named key)."""
    found: set[str] = set()

    def collect(item: Any, hidden: bool) -> None:
        if isinstance(item, dict):
            for key, inner in item.items():
                collect(inner, hidden or is_secret_key(key))
        elif isinstance(item, (list, tuple)):
            for inner in item:
                collect(inner, hidden)
        elif hidden and isinstance(item, (str, int, float)) and not isinstance(item, bool):
            text = str(item)
            if text and text != REDACTED:
                found.add(text)

    collect(value, False)
    return found


def _variants(value: str) -> set[str]:
    """``value`` as echoed: itself, its credential without an auth scheme, URL-quoted, JSON- or HTML-escaped."""
    variants = {value}
    scheme = _AUTH_SCHEME.match(value)
    if scheme:
        variants.add(scheme.group(1))
    for text in list(variants):
        variants.add(quote(text, safe=""))
        variants.add(json.dumps(text)[1:-1])
        variants.add(json.dumps(text, ensure_ascii=False)[1:-1])
        variants.add(html.escape(text))
    return {text for text in variants if len(text) >= MIN_SCRUB_LENGTH and text != REDACTED}


class Scrubber:
    """Replaces known secret values with ``***`` wherever they appear in text, at any depth.

    Values shorter than MIN_SCRUB_LENGTH characters are not scrubbed. ``add``
    may be called while other threads scrub: the value list is replaced, never edited.
    """

    def __init__(self, values: Iterable[Any] = ()):
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def add(self, values: Iterable[Any]) -> None:
        """Also scrub ``values`` (texts; empty and short ones are ignored)."""
        new: set[str] = set()
        for value in values:
            if value is not None and not isinstance(value, bool) and str(value):
                new |= _variants(str(value))
        if not new:
            return  # the common case, once per step: nothing secret in its config or result
        with self._lock:
            new -= set(self._values)
            if new:
                # Longest first, so a secret that contains another is replaced whole.
                values = tuple(sorted({*self._values, *new}, key=len, reverse=True))
                # An alternation takes the first alternative that matches: longest first replaces a secret whole.
                self._pattern = re.compile("|".join(map(re.escape, values))) if len(values) > _MANY_VALUES else None
                self._values = values

    def extended(self, values: Iterable[Any]) -> Scrubber:
        """A new scrubber with this one's values and ``values``."""
        scrubber = Scrubber()
        scrubber._values, scrubber._pattern = self._values, self._pattern
        scrubber.add(values)
        return scrubber

    def found(self, text: str) -> set[str]:
        """The known values (and their escaped forms) that occur in ``text``."""
        return {value for value in self._values if value in text}

    def without(self, values: Iterable[str]) -> Scrubber:
        """A new scrubber with this one's values but ``values``."""
        dropped = set(values)
        scrubber = Scrubber()
        kept = tuple(value for value in self._values if value not in dropped)
        scrubber._values = kept
        scrubber._pattern = re.compile("|".join(map(re.escape, kept))) if len(kept) > _MANY_VALUES else None
        return scrubber

    def text(self, text: str) -> str:
        """``text`` with every known secret value replaced by ``***``."""
        pattern = self._pattern
        if pattern is not None:
            scrubbed = pattern.sub(REDACTED, text)
            return text if scrubbed == text else scrubbed
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def scrub(self, value: Any) -> Any:
        """``value`` with secrets replaced in every text (dict keys too); the same object when nothing changed."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            result = {self.scrub(key): self.scrub(item) for key, item in value.items()}
            same = len(result) == len(value) and all(
                key in value and result[key] is value[key] for key in result)
            return value if same else result
        if isinstance(value, (list, tuple)):
            items = [self.scrub(item) for item in value]
            return items if any(new is not old for new, old in zip(items, value, strict=True)) else value
        return value
