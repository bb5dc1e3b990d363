"""A trigger that starts a run for each HTTP request posted to the workflow's hook URL."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from actions.base import SettingError
from triggers.base import BaseTrigger
from triggers.signatures import STYLES, Delivery, forget, remember

logger = logging.getLogger(__name__)

RESPONSE_MODES = ("accepted", "result")
DEFAULT_SIGNATURE_HEADERS = {"github": "X-Hub-Signature-256", "stripe": "Stripe-Signature",
                             "slack": "X-Slack-Signature"}
# "{{ settings.NAME }}": the one template a secret may be, resolved from the settings at setup.
_SETTING = re.compile(r"^\s*\{\{\s*settings\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s*$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


class WebhookTrigger(BaseTrigger):
    """Fires on ``POST /api/hooks/<workflow>`` while the workflow is started.

    The trigger data is ``{"body", "headers", "query"}``: the body parsed as
    JSON, as a form (a dict) or as text. With a ``secret``, a request must
    be signed in ``signature_style`` (github, stripe or slack; see
    triggers/signatures.py): others are refused with 401, and a delivery
    accepted before is refused as a replay. For the github style,
    ``signature_header`` names the header (default X-Hub-Signature-256).
    An unsigned webhook refuses file uploads unless ``allow_uploads`` is true.

    ``response``: ``"accepted"`` answers 202 with the run at once;
    ``"result"`` waits for the run and answers with the result of
    ``response_step`` (default: the last step that succeeded).
    """

    type = "webhook"
    # Requests arrive by themselves; there is nothing to poll.
    pollable = False
    secret_fields = ("_secret",)
    config_choices = {"response": RESPONSE_MODES, "signature_style": tuple(STYLES)}

    def __init__(
        self,
        name: str,
        secret: str | None = None,
        signature_header: str | None = None,
        response: str = "accepted",
        response_step: str | None = None,
        signature_style: str = "github",
        allow_uploads: bool = False,
    ):
        super().__init__(name)
        where = f"trigger {name!r}"
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise SettingError("secret", f"{where}: secret must be a non-empty string or None, "
                                         f"got {type(secret).__name__}")
        if signature_style not in STYLES:
            raise SettingError("signature_style", f"{where}: signature_style must be one of {', '.join(STYLES)}, "
                                                  f"got {signature_style!r}")
        if signature_header is not None and signature_style != "github":
            raise ValueError(f"{where}: signature_header applies to signature_style github only; "
                             f"the {signature_style} style has fixed headers")
        if signature_header is None:
            signature_header = DEFAULT_SIGNATURE_HEADERS[signature_style]
        if not isinstance(signature_header, str) or not _HEADER_NAME.match(signature_header):
            raise SettingError("signature_header", f"{where}: signature_header must be an HTTP header name, "
                                                   f"got {signature_header!r}")
        if not isinstance(allow_uploads, bool):
            raise SettingError("allow_uploads", f"{where}: allow_uploads must be true or false, got {allow_uploads!r}")
        if response not in RESPONSE_MODES:
            raise SettingError("response", f"{where}: response must be one of {', '.join(RESPONSE_MODES)}, "
                                           f"got {response!r}")
        if response_step is not None and (not isinstance(response_step, str) or not response_step):
            raise SettingError("response_step", f"{where}: response_step must be a step name or None, "
                                                f"got {response_step!r}")
        # Underscored, so neither templates nor describe() ever touch it; setup() resolves it.
        self._secret = secret
        self._key: bytes | None = None
        self.signature_header = signature_header
        self.signature_style = signature_style
        self.allow_uploads = allow_uploads
        # Held while a delivery is checked against the remembered ones and recorded, so two copies cannot both pass.
        self._replay_lock = threading.Lock()
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
            raise SettingError("secret", f"trigger {self.name!r}: secret may only be a plain string or "
                                         f"'{{{{ settings.NAME }}}}'")
        self._key = secret.encode("utf-8")

    @property
    def signed(self) -> bool:
        """True when requests must carry a valid signature."""
        return self._secret is not None

    @property
    def replay_lock(self) -> threading.Lock:
        """Held while a delivery is checked against the remembered ones and recorded."""
        return self._replay_lock

    @property
    def accepts_uploads(self) -> bool:
        """True when requests may carry files: signed webhooks, or unsigned ones with allow_uploads."""
        return self.signed or self.allow_uploads

    def check(self, body: bytes, headers: Mapping[str, str], now: float | None = None) -> Delivery | None:
        """The verified delivery (None when unsigned); SignatureError saying what is wrong otherwise.

        ``headers`` has lower-case names.
        """
        if self._secret is None:
            return None
        if self._key is None:
            raise RuntimeError(f"trigger {self.name!r}: setup() was not called, so the secret is not resolved")
        now = time.time() if now is None else now
        return STYLES[self.signature_style](self._key, body, headers, self.signature_header, now)

    def remember(self, delivery: Delivery, now: float | None = None) -> None:
        """Record a verified delivery in ``self.state``; ReplayedDelivery when it was accepted before.

        Call with ``replay_lock`` held, and save ``self.state`` before answering.
        """
        remember(self.state, delivery, time.time() if now is None else now)

    def forget(self, delivery: Delivery) -> None:
        """Drop a remembered delivery that started no run, so its sender may send it again."""
        forget(self.state, delivery)

    def is_triggered(self) -> bool:
        """Never by polling: runs come from requests."""
        return False

    def describe(self) -> dict:
        return {**super().describe(), **({"secret": "***"} if self._secret is not None else {})}
