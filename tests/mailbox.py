"""A real SMTP server on loopback (aiosmtpd) that keeps every message, for tests that read what PyFlow mailed."""

from __future__ import annotations

import email
import re
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy

from aiosmtpd.controller import Controller

from tests.server import free_port


class Mailbox:
    """An aiosmtpd handler keeping every message."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted"

    def recipients(self) -> list[str]:
        return sorted(message["To"] for message in self.messages)

    def links(self, *, to: str | None = None, mentioning: str | None = None) -> dict[str, str]:
        """The approve and reject links of the first mail to ``to`` whose text mentions ``mentioning``; {} if none."""
        for message in self.messages:
            text = message.get_body(("plain",)).get_content()
            if (to is None or message["To"] == to) and (mentioning is None or mentioning in text):
                return {decision: re.search(rf"{decision.capitalize()}: (\S+)", text).group(1)
                        for decision in ("approve", "reject")}
        return {}


@contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    """A Mailbox served on a free loopback port: (the mailbox, its port)."""
    handler = Mailbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()
