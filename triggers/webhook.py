"""A trigger that starts a run for each HTTP request posted to the workflow's hook URL."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from typing import Any

from triggers.base import BaseTrigger

logger = logging.getLogger(__name__)

RESPONSE_MODES = ("accepted", "result")
# "{{ settings.NAME }}": the one template a secret may be, resolved from the settings at setup.
_SETTING = re.compile(r"^\s*\{\{\s*settings\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s*$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class WebhookTrigger(BaseTrigger):
    """Fires on ``POST /api/hooks/<workflow>`` while the workflow is started.

    The trigger data is ``{"body", "headers", "query"}``: the body parsed as
    JSON, as a form (a dict) or as text. With a ``secret``, a request must
    carry the HMAC-SHA256 of its raw body in ``signature_header`` (hex, with or
    without GitHub's ``sha256=`` prefix); others are refused with 401.

    ``response``: ``"accepted"`` answers 202 with the run at once;
    ``"result"`` waits for the run and answers with the result of
    ``response_step`` (default: the last step that succeeded).
    """

    type = "webhook"
    # Requests arrive by themselves; there is nothing to poll.
    pollable = False

    def __init__(
        self,
        name: str,
        secret: str | None = None,
        signature_header: str = "X-Hub-Signature-256",
        response: str = "accepted",
        response_step: str | None = None,
    ):
        super().__init__(name)
        where = f"trigger {name!r}"
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise ValueError(f"{where}: secret must be a non-empty string or None, got {type(secret).__name__}")
        if not isinstance(signature_header, str) or not _HEADER_NAME.match(signature_header):
            raise ValueError(f"{where}: signature_header must be an HTTP header name, got {signature_header!r}")
        if response not in RESPONSE_MODES:
            raise ValueError(f"{where}: response must be one of {', '.join(RESPONSE_MODES)}, got {response!r}")
        if response_step is not None and (not isinstance(response_step, str) or not response_step):
            raise ValueError(f"{where}: response_step must be a step name or None, got {response_step!r}")
        # Underscored, so neither templates nor describe() ever touch it; setup() resolves it.
        self._secret = secret
        self._key: bytes | None = None
        self.signature_header = signature_header
        self.response = response
        self.response_step = response_step

    def setup(self, settings: Mapping[str, Any]) -> None:
        """Resolve a ``{{ settings.NAME }}`` secret; ValueError when that setting is empty."""
        secret = self._secret
        if secret is None:
            self._key = None
            return
        match = _SETTING.match(secret)
        if match:
            secret = settings.get(match.group(1))
            if not secret:
                raise ValueError(f"trigger {self.name!r}: secret refers to setting {match.group(1)}, which is not set")
            secret = str(secret)
        elif "{{" in secret or "{%" in secret:
            raise ValueError(f"trigger {self.name!r}: secret may only be a plain string or '{{{{ settings.NAME }}}}'")
        self._key = secret.encode("utf-8")

    @property
    def signed(self) -> bool:
        """True when requests must carry a valid signature."""
        return self._secret is not None

    def verify(self, body: bytes, signature: str | None) -> bool:
        """True when ``signature`` is the HMAC-SHA256 of ``body`` (or no secret is set)."""
        if self._secret is None:
            return True
        if self._key is None:
            raise RuntimeError(f"trigger {self.name!r}: setup() was not called, so the secret is not resolved")
        if not signature:
            return False
        signature = signature.strip()
        if signature[:7].lower() == "sha256=":
            signature = signature[7:]
        expected = hmac.new(self._key, body, hashlib.sha256).hexdigest()
        # Constant time, so the answer's timing does not reveal how much of a guess was right.
        return hmac.compare_digest(expected.encode("ascii"), signature.lower().encode("utf-8", "replace"))

    def is_triggered(self) -> bool:
        """Never by polling: runs come from requests."""
        return False

    def describe(self) -> dict:
        return {**super().describe(), **({"secret": "***"} if self._secret is not None else {})}
