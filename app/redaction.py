"""Keeps secrets out of run records, summaries and logs."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"

# A key names a secret when it is, or ends in, one of these words. Webhook URLs count: Slack's
# and most others' carry their credential in the path.
_SECRET_KEY = re.compile(
    r"(?:^|[_\-.])(?:password|passwd|pwd|secret|token|(?:api|private|secret|access)[_\-]?key|authorization"
    r"|credentials?|cookie|webhook[_\-]?url)$",
    re.IGNORECASE,
)
# camelCase keys (accessToken, clientSecret) are split into words first.
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def is_secret_key(key: Any) -> bool:
    """True for keys such as ``password``, ``SMTP_PASSWORD``, ``access_token``, ``accessToken``."""
    return isinstance(key, str) and bool(_SECRET_KEY.search(_CAMEL_BOUNDARY.sub("_", key)))


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
