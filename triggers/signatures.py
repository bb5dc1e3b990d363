"""Webhook signature styles (GitHub, Stripe, Slack) and the memory that refuses replayed deliveries.

Every style signs with HMAC-SHA256 and the webhook's secret:

- ``github``: ``X-Hub-Signature-256: sha256=<hex of HMAC(body)>`` (the header
  name is configurable, the ``sha256=`` prefix optional). The signature holds
  no time, so an accepted signature and ``X-GitHub-Delivery`` id are
  remembered for ``GITHUB_MEMORY`` seconds and a repeat is a replay.
- ``stripe``: ``Stripe-Signature: t=<unix time>,v1=<hex of HMAC("<t>.<body>")>``
  (several ``v1`` entries allowed, as while Stripe rolls a secret).
- ``slack``: ``X-Slack-Request-Timestamp: <unix time>`` and
  ``X-Slack-Signature: v0=<hex of HMAC("v0:<t>:<body>")>``.

A timestamp more than ``TOLERANCE`` seconds from now (past or future) is
refused; an accepted timestamped signature is remembered until its timestamp
leaves that window, so within it a replay is refused and after it the
timestamp is.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TOLERANCE = 300.0
GITHUB_MEMORY = 24 * 3600.0
# The most deliveries one webhook remembers; past it, the ones that would be forgotten soonest go first.
MAX_REMEMBERED = 10_000
STATE_KEY = "seen_deliveries"


class SignatureError(ValueError):
    """A delivery whose signature is missing, wrong or stale; the message says which and how to sign."""


class ReplayedDelivery(ValueError):
    """A delivery whose signature (or delivery id) was accepted before."""


@dataclass(frozen=True)
class Delivery:
    """What a verified delivery leaves behind: the keys a replay would repeat, and until when they matter."""

    keys: tuple[str, ...]
    remember_until: float


_UNIX_TIME = re.compile(r"[0-9]{1,15}")


def _hmac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _matches(expected: str, candidates: list[str]) -> str | None:
    """The candidate equal to ``expected`` (compared in constant time), or None."""
    found = None
    for candidate in candidates:
        # Constant time, so the answer's timing does not reveal how much of a guess was right.
        if hmac.compare_digest(expected.encode("ascii"), candidate.lower().encode("utf-8", "replace")):
            found = expected
    return found


def _timestamp(raw: str | None, header: str, now: float) -> int:
    # ASCII digits only, and few: str.isdigit() also takes "²" (which int() refuses) and 5,000 digits (which it
    # refuses too), and either was a 500 for anyone who posts to a signed hook.
    if not raw or not _UNIX_TIME.fullmatch(raw.strip()):
        raise SignatureError(f"{header} must carry the delivery's unix time in seconds, got {raw!r}")
    at = int(raw.strip())
    age = now - at
    if abs(age) > TOLERANCE:
        when = f"{age:.0f} s old" if age > 0 else f"{-age:.0f} s in the future"
        raise SignatureError(f"the timestamp in {header} is {when}; deliveries more than {TOLERANCE:g} s "
                             f"from the server's clock are refused as possible replays")
    return at


def check_github(key: bytes, body: bytes, headers: Mapping[str, str], header: str, now: float) -> Delivery:
    """Verify ``<header>: sha256=<hex>`` over the raw body."""
    sent = (headers.get(header.lower()) or "").strip()
    if not sent:
        raise SignatureError(f"signature header {header} is missing; sign the raw body with HMAC-SHA256 "
                             f"and the workflow's secret")
    if sent[:7].lower() == "sha256=":
        sent = sent[7:]
    signature = _matches(_hmac(key, body), [sent])
    if signature is None:
        raise SignatureError(f"signature header {header} does not match the body; sign the raw body with "
                             f"HMAC-SHA256 and the workflow's secret")
    keys = [f"sig:{signature[:32]}"]
    delivery = (headers.get("x-github-delivery") or "").strip()
    if delivery:
        keys.append(f"id:{delivery[:128]}")
    return Delivery(tuple(keys), now + GITHUB_MEMORY)


def check_stripe(key: bytes, body: bytes, headers: Mapping[str, str], header: str, now: float) -> Delivery:
    """Verify ``Stripe-Signature: t=<unix>,v1=<hex>`` over ``"<t>.<body>"``."""
    sent = (headers.get("stripe-signature") or "").strip()
    if not sent:
        raise SignatureError("signature header Stripe-Signature is missing; send t=<unix time>,v1=<hex of "
                             "HMAC-SHA256 of \"<t>.<body>\" with the workflow's secret>")
    fields: dict[str, list[str]] = {}
    for part in sent.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name.strip(), []).append(value.strip())
    raw_time = fields.get("t", [None])[0]
    at = _timestamp(raw_time, "Stripe-Signature's t=", now)
    signature = _matches(_hmac(key, f"{at}.".encode() + body), fields.get("v1", []))
    if signature is None:
        raise SignatureError("no v1= signature in Stripe-Signature matches; sign \"<t>.<body>\" with "
                             "HMAC-SHA256 and the workflow's secret")
    return Delivery((f"sig:{signature[:32]}",), at + TOLERANCE + 1)


def check_slack(key: bytes, body: bytes, headers: Mapping[str, str], header: str, now: float) -> Delivery:
    """Verify ``X-Slack-Signature: v0=<hex>`` over ``"v0:<X-Slack-Request-Timestamp>:<body>"``."""
    sent = (headers.get("x-slack-signature") or "").strip()
    if not sent:
        raise SignatureError("signature header X-Slack-Signature is missing; send v0=<hex of HMAC-SHA256 of "
                             "\"v0:<X-Slack-Request-Timestamp>:<body>\" with the workflow's secret>")
    at = _timestamp(headers.get("x-slack-request-timestamp"), "X-Slack-Request-Timestamp", now)
    version, _, value = sent.partition("=")
    signature = _matches(_hmac(key, f"v0:{at}:".encode() + body), [value] if version == "v0" else [])
    if signature is None:
        raise SignatureError("X-Slack-Signature does not match; sign \"v0:<timestamp>:<body>\" with "
                             "HMAC-SHA256 and the workflow's secret and send v0=<hex>")
    return Delivery((f"sig:{signature[:32]}",), at + TOLERANCE + 1)


STYLES = {"github": check_github, "stripe": check_stripe, "slack": check_slack}


def remember(state: dict[str, Any], delivery: Delivery, now: float) -> None:
    """Record ``delivery`` in a trigger's ``state``; ReplayedDelivery when one of its keys is remembered."""
    seen = state.get(STATE_KEY)
    if not isinstance(seen, dict):
        seen = {}
    seen = {key: until for key, until in seen.items() if isinstance(until, (int, float)) and until > now}
    for key in delivery.keys:
        if key in seen:
            what = "delivery id" if key.startswith("id:") else "signature"
            raise ReplayedDelivery(f"this {what} was accepted before; a replayed delivery is refused")
    for key in delivery.keys:
        seen[key] = round(delivery.remember_until)
    if len(seen) > MAX_REMEMBERED:
        seen = dict(sorted(seen.items(), key=lambda item: item[1])[-MAX_REMEMBERED:])
    state[STATE_KEY] = seen


def forget(state: dict[str, Any], delivery: Delivery) -> None:
    """Drop ``delivery`` from a trigger's ``state``: it was remembered, but no run came of it."""
    seen = state.get(STATE_KEY)
    if isinstance(seen, dict):
        for key in delivery.keys:
            seen.pop(key, None)
