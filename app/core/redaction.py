"""Keeps secrets out of run records, summaries, answers and logs (the rules live in actions/redaction.py)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from actions.redaction import MIN_SCRUB_LENGTH, REDACTED, Scrubber, is_secret_key, redact, secret_values
from app.core.config import SECRET_SETTINGS

__all__ = ["MIN_SCRUB_LENGTH", "REDACTED", "Scrubber", "is_secret_key", "redact", "secret_values",
           "settings_scrubber", "KNOWN_SECRETS", "keep_redacted", "redact_definition", "redact_credentials", "mask_url",
           "ScrubFilter", "LOG_FILTER", "install_log_filter", "scrubbing"]

_local = threading.local()

#: Values of the secrets store (app/core/secrets.py) this process decrypted or stored: scrubbed from every
#: log line (ScrubFilter) and answer (app/__init__.py), whichever run or request they came through.
KNOWN_SECRETS = Scrubber()


def settings_scrubber(settings: Mapping[str, Any]) -> Scrubber:
    """A scrubber holding the value of every secret setting (SECRET_SETTINGS) that is set."""
    values = [settings.get(name) for name in sorted(SECRET_SETTINGS)]
    # The database URL's password alone too: a driver's message may quote it without the rest of the URL.
    values.append(_url_password(settings.get("WORKFLOW_DATABASE_URL")))
    # Each key of a list (new,old) alone too: a message may quote one of them.
    values.extend(str(settings.get("WORKFLOW_ENCRYPTION_KEY") or "").split(","))
    return Scrubber(values)


def _url_password(url: Any) -> str | None:
    try:
        return urlsplit(url).password if isinstance(url, str) and url else None
    except ValueError:  # a malformed port: no password to find
        return None


# A string that is one URL (an http step's url, an Apprise URL of a notify step), whatever its scheme.
_URL = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://\S+\s*")


def mask_url(text: str) -> str:
    """``text`` with the credentials of the URL it is (its password, the tokens Apprise masks) read as "***".

    A definition may write a credential into a URL rather than under a secret-named key
    (``https://bob:pw@host/``, ``tgram://<bot token>/<chat>``); the engine scrubs those from runs
    (``config_secrets``), and a definition shown to a viewer hides them too. Other text is returned as is.
    """
    if "://" not in text or not _URL.fullmatch(text):
        return text
    from actions.notify import url_secrets  # Apprise is imported only for a URL it may know

    try:
        netloc = urlsplit(text.strip()).netloc
    except ValueError:
        netloc = ""
    masked = text
    userinfo, at, host = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if at and colon and password:  # by place, so a short password is hidden too
        masked = masked.replace(f"://{netloc}", f"://{user}:{REDACTED}@{host}", 1)
    found = url_secrets(text) - {password}
    return Scrubber(found).text(masked) if found else masked


def redact_credentials(value: Any) -> Any:
    """``value`` (part of a definition, a trigger's settings) as answered: redacted by key, URL credentials masked."""
    value = redact(value)
    if isinstance(value, dict):
        return {key: redact_credentials(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_credentials(item) for item in value]
    return mask_url(value) if isinstance(value, str) else value


def redact_definition(definition: Any) -> Any:
    """A workflow definition as answered: secrets and URL credentials as ``"***"``, except in its ``inputs`` schema.

    The schema is shown whole as the Summary's ``inputs_schema`` anyway, and a property named like a secret
    (``webhook_url: {type: string, format: uri}``) is a schema: masked, a copy of the definition was refused.
    """
    if not isinstance(definition, dict) or "inputs" not in definition:
        return redact_credentials(definition)
    return {key: value if key == "inputs" else redact_credentials(value) for key, value in definition.items()}


def keep_redacted(new: Any, old: Any) -> Any:
    """``new`` with every secret-named field that reads ``"***"`` given its value in ``old``.

    A client that edits a definition it read back (where secrets show as
    ``***``) and PUTs it keeps the stored secrets, as n8n does with credentials.
    A ``***`` with nothing stored at that place stays as it is.
    """
    if isinstance(new, dict) and isinstance(old, dict):
        result = {}
        for key, item in new.items():
            if item == REDACTED and is_secret_key(key) and key in old:
                result[key] = old[key]
            else:
                result[key] = keep_redacted(item, old.get(key))
        return result
    if isinstance(new, list) and isinstance(old, list):
        # Named items (steps, loop steps) by name: a PUT that moved a step keeps that step's secrets, not those
        # of the step that was at its place. Others by place.
        named = {item["name"]: item for item in old if _named(item)}

        def counterpart(index: int, item: Any) -> Any:
            if named and _named(item):
                return named.get(item["name"])
            return old[index] if index < len(old) else None

        return [keep_redacted(item, counterpart(index, item)) for index, item in enumerate(new)]
    if isinstance(new, str) and REDACTED in new and isinstance(old, str) and new != old and mask_url(old) == new:
        return old  # a URL read back with its credentials masked, sent back unchanged
    return new


def _named(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("name"), str)


def swap_scrubber(scrubber: Scrubber | None) -> Scrubber | None:
    """Make ``scrubber`` this thread's run scrubber (see ``scrubbing``); the previous one, to put back."""
    previous = getattr(_local, "scrubber", None)
    _local.scrubber = scrubber
    return previous


@contextmanager
def scrubbing(scrubber: Scrubber) -> Iterator[None]:
    """Inside the block, log records this thread emits are also scrubbed of ``scrubber``'s values (a run's own)."""
    previous = swap_scrubber(scrubber)
    try:
        yield
    finally:
        swap_scrubber(previous)


class ScrubFilter(logging.Filter):
    """Replaces secret settings' values (and the current run's, see ``scrubbing``) in a record's message and traceback.

    Installed on handlers, so records of every logger that reach them are scrubbed.
    """

    def __init__(self, scrubber: Scrubber | None = None):
        super().__init__()
        self.scrubber = scrubber or Scrubber()

    def filter(self, record: logging.LogRecord) -> bool:
        scrubbers = [scrubber for scrubber in (self.scrubber, getattr(_local, "scrubber", None), KNOWN_SECRETS)
                     if scrubber]
        if not scrubbers:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format: logging reports it; keep what it would show scrubbed
            message = str(record.msg)
        scrubbed = message
        for scrubber in scrubbers:
            scrubbed = scrubber.text(scrubbed)
        if scrubbed is not message or record.args:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for scrubber in scrubbers:
            if record.exc_text:
                record.exc_text = scrubber.text(record.exc_text)
            if record.stack_info:
                record.stack_info = scrubber.text(record.stack_info)
        return True


# One filter per process: run.py installs it on the console, create_app on the root logger's handlers.
LOG_FILTER = ScrubFilter()


def install_log_filter(settings: Mapping[str, Any]) -> None:
    """Scrub the secret settings' values from every record the root logger's handlers emit (idempotent)."""
    LOG_FILTER.scrubber = settings_scrubber(settings)
    for handler in logging.getLogger().handlers:
        if LOG_FILTER not in handler.filters:
            handler.addFilter(LOG_FILTER)
