"""Text for people, shared by every layer: one-line error messages, type names, paths in messages."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def one_line(error: BaseException, plain: tuple[type[BaseException], ...] = (), limit: int | None = None) -> str:
    """A one-line message for ``error``, no traceback; cut to ``limit`` characters.

    ``plain`` errors (an ActionError, a timeout) are shown by their message alone, which says it all;
    any other exception is unexpected, so its class name is part of the story.
    """
    try:
        message = " ".join(str(error).split())
    except Exception:  # a broken __str__ must not stop a failure from being recorded
        message = ""
    if not isinstance(error, plain):
        message = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return message if limit is None or len(message) <= limit else message[: limit - 1] + "…"


def snake(name: str, suffix: str = "") -> str:
    """A class name as a type name: ``snake("SendEmailAction", "Action")`` is ``send_email``."""
    if suffix:
        name = name.removesuffix(suffix) or name
    return _WORD_START.sub("_", name).lower()


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the working folder when it lies below it, else as given: short names in messages."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def shown_url(url: str) -> str:
    """The URL for messages: no user:password, query or fragment, which may hold secrets."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else url.split("?", 1)[0]
