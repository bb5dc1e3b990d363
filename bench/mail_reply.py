"""Benchmark: seconds from a mail's APPEND into the mailbox to the reply's arrival at the SMTP server.

Run as ``python bench/mail_reply.py``; prints one JSON object. The insurance_application workflow runs started
in-process against pymap (tests/imap_server.py) and aiosmtpd, polling every POLL_INTERVAL seconds; a reply
should arrive within one poll interval plus a second (``target_s``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root (app/, tests/) goes first on sys.path when run as a script.
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent), *(entry for entry in sys.path if Path(entry or ".").resolve() != HERE)]

import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from aiosmtpd.controller import Controller  # noqa: E402

from app import create_app, start_app  # noqa: E402
from tests.imap_server import IMAPServer, free_port, pdf_message  # noqa: E402
from tests.pdf_factory import text_pdf  # noqa: E402

logger = logging.getLogger(__name__)

POLL_INTERVAL = 2.0
MESSAGES = 5
TIMEOUT = 30.0


class Arrivals:
    """An aiosmtpd handler that notes when each reply arrives, by recipient."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.event = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        with self.event:
            for recipient in envelope.rcpt_tos:
                self.at[recipient] = time.monotonic()
            self.event.notify_all()
        return "250 Message accepted"

    def wait(self, recipient: str, timeout: float) -> float:
        """When the reply to ``recipient`` arrived; RuntimeError after ``timeout`` seconds."""
        with self.event:
            if not self.event.wait_for(lambda: recipient in self.at, timeout):
                raise RuntimeError(f"no reply to {recipient} within {timeout:g} s")
            return self.at[recipient]


def main() -> None:
    """Start the servers and the workflow, mail MESSAGES applications one by one, print the latencies."""
    arrivals = Arrivals()
    smtp = Controller(arrivals, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        with IMAPServer() as imap, tempfile.TemporaryDirectory() as folder:
            pdf = text_pdf(Path(folder) / "application.pdf").read_bytes()
            app = start_app(create_app({
                **imap.settings(Path(folder) / "data"),
                "EMAIL_POLL_INTERVAL": POLL_INTERVAL,
                "SMTP_HOST": "127.0.0.1", "SMTP_PORT": smtp.port, "SMTP_SECURITY": "none",
            }))
            runtime = app.extensions["pyflow"]
            try:
                runtime.start_workflow("insurance_application")
                latencies = []
                for number in range(MESSAGES):
                    recipient = f"applicant{number}@example.org"
                    message = pdf_message(sender=recipient, attachments=[("form.pdf", pdf, "application/pdf")])
                    # Each reply arrives just after a poll; mailing at once would always wait a whole interval.
                    # Real mail comes at any moment: spread the messages evenly over the poll cycle instead.
                    time.sleep(POLL_INTERVAL * number / MESSAGES)
                    # Measured from before the APPEND: its login and upload are part of a real sender's wait.
                    sent = time.monotonic()
                    imap.append(message)
                    latencies.append(arrivals.wait(recipient, TIMEOUT) - sent)
            finally:
                runtime.shutdown(timeout=5)
    finally:
        smtp.stop()
    target = POLL_INTERVAL + 1
    print(json.dumps({
        "benchmark": "email_reply_latency",
        "messages": MESSAGES,
        "poll_interval_s": POLL_INTERVAL,
        "median_s": round(statistics.median(latencies), 3),
        "max_s": round(max(latencies), 3),
        "latencies_s": [round(latency, 3) for latency in latencies],
        "arrival": "spread evenly over the poll cycle",
        "target_s": target,
        "ok": max(latencies) <= target,
    }))


if __name__ == "__main__":
    main()
