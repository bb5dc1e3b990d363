"""The approval action: ask people to approve or reject, by e-mail links and on the dashboard, and park meanwhile."""

from __future__ import annotations

import secrets
import time
from typing import Any

from actions.base import ActionError, BaseAction, Park, SettingError, check_timeout
from actions.base import seconds as parse_seconds
from actions.send_email import SendEmailAction

ON_TIMEOUT = ("reject", "approve")
DEFAULT_TIMEOUT = 86400.0


class ApprovalAction(BaseAction):
    """Waits for an answer: ``POST /api/runs/{id}/approve`` or ``/reject``, the dashboard, or a link in the e-mail
    sent to ``to`` (through send_email: SMTP_HOST, else the outbox). Links are signed and valid until the timeout.

    Returns ``{"approved": true, "by", "comment", "at"}``; a rejection fails the step with
    "rejected by <who>: <comment>". After ``timeout`` seconds, ``on_timeout`` rejects (default) or approves.
    """

    type = "approval"
    # It waits without a thread, for hours; a loop holds its thread for each item: never among its steps.
    parks_only = True
    result_keys = ("approved", "by", "comment", "at")
    config_choices = {"on_timeout": ON_TIMEOUT}
    # Executed again after a crash it would mail the approvers twice; a person decides.
    idempotent = False

    def __init__(self, name: str, *, to: Any = None, subject: str = "", message: str = "",
                 timeout: float | str = DEFAULT_TIMEOUT, on_timeout: str = "reject", **options: Any):
        super().__init__(name, **options)
        if to is not None and not isinstance(to, str | list | tuple):
            raise SettingError("to", f"action {name!r}: to must be an address or a list of addresses, got {to!r}")
        check_timeout("approval", name, timeout, on_timeout, ON_TIMEOUT)
        self.to = to
        self.subject = subject
        self.message = message
        self.timeout = timeout
        self.on_timeout = on_timeout

    def execute(self, data_store: dict) -> dict:
        """Send the request (first time only), then park until the answer or the timeout."""
        context = self.context
        if not context.can_park:
            raise ActionError("approval can only wait in a step of a run on a server (not in a loop's steps, "
                              "a sub-workflow, or python run.py run)", retryable=False)
        timeout = parse_seconds(self.timeout, "timeout", "approval")
        parked = context.parked or {}
        if parked.get("for") == "approval" and parked.get("nonce"):  # executed again: the mail went already
            until, nonce, notified = float(parked["until_epoch"]), str(parked["nonce"]), parked.get("notified")
        else:
            until, nonce = time.time() + timeout, secrets.token_urlsafe(12)
            notified = self._notify(data_store, until, nonce)
        subject = self.subject or f"Approval needed: {context.workflow} / {self.name}"
        raise Park("approval", until=until, on_timeout=self.on_timeout,
                   details={"timeout_s": timeout, "until_epoch": until, "nonce": nonce, "subject": subject,
                            "message": str(self.message or ""), "to": self._recipients(), "notified": notified})

    def _recipients(self) -> list[str]:
        if not self.to:
            return []
        return [self.to] if isinstance(self.to, str) else [str(address) for address in self.to]

    def _notify(self, data_store: dict, until: float, nonce: str) -> dict | None:
        """Mail the approvers the request with its approve and reject links; the delivery, None without ``to``."""
        if not self._recipients():
            return None
        if self.context.approval_links is None:
            raise ActionError("approval: this runtime cannot sign approval links", retryable=False)
        links = self.context.approval_links(until, nonce)
        subject = self.subject or f"Approval needed: {self.context.workflow} / {self.name}"
        expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(until))
        body = (f"{self.message or 'Your approval is requested.'}\n\n"
                f"Workflow: {self.context.workflow}\nRun: {self.context.run_id}\nStep: {self.name}\n\n"
                f"Approve: {links['approve']}\n\nReject: {links['reject']}\n\n"
                f"The links work once, until {expires}. You can also answer on the dashboard.\n")
        mail = SendEmailAction(f"{self.name}.notify", to=self._recipients(), subject=subject, body=body)
        mail.context = self.context
        sent = mail.execute(data_store)
        return {"delivery": sent.get("delivery"), "message_id": sent.get("message_id")}
