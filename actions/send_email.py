"""The send_email action: one message over SMTP, or into the outbox folder."""

from __future__ import annotations

import logging
import mimetypes
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, formatdate, getaddresses, make_msgid
from pathlib import Path
from typing import Any

from actions.atomic import write_atomic
from actions.base import ActionError, BaseAction, SettingError, seconds
from actions.paths import PathError, open_regular, readable, readable_folders
from actions.private_files import make_private_dir

logger = logging.getLogger(__name__)

# Mirrors app/core/config.py, for actions run without the app's settings.
_DEFAULTS = {
    "SMTP_HOST": "",
    "SMTP_PORT": 587,
    "SMTP_USER": "",
    "SMTP_PASSWORD": "",
    "SMTP_SECURITY": "starttls",
    "MAIL_FROM": "pyflow@localhost",
}
_SECURITY = ("starttls", "ssl", "none")
_ADDRESS = re.compile(r"[^@\s<>,;]+@[^@\s<>,;]+")
# A Message-ID as RFC 5322 writes it (<left@right>), angle brackets optional on input.
_MESSAGE_ID = re.compile(r"<?([^<>\s@]+@[^<>\s@]+)>?")

Recipients = str | Sequence[str] | None


class SendEmailAction(BaseAction):
    """Sends one e-mail; without an SMTP host, writes it to ``<storage>/outbox/`` as ``.eml``.

    ``to``, ``cc`` and ``bcc`` take an address, a comma-separated string or a
    list. ``attachments`` takes file paths (or upload records with a ``path``).
    SMTP settings come from SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_PASSWORD and
    SMTP_SECURITY (starttls, ssl or none) unless overridden per step.
    TLS always verifies the server's certificate: against the system's CAs,
    or only against the PEM bundle ``smtp_ca_file`` names (a private CA or a
    self-signed server); there is deliberately no switch to turn checks off.
    The outbox copy keeps the Bcc header, as a mail client's "Sent" copy does;
    over SMTP, Bcc addresses go only into the envelope. ``in_reply_to`` (one
    Message-ID) and ``references`` (Message-IDs, a list or space-separated) make
    the message a reply that mail clients thread with the one it answers; empty
    values add no header.
    """

    type = "send_email"
    result_keys = ("status", "recipient", "recipients", "subject", "message_id", "delivery", "refused")
    path_fields = {"attachments": "attachments", "smtp_ca_file": "path"}
    secret_fields = ("_smtp_password",)
    config_choices = {"smtp_security": _SECURITY}
    # Re-running an attempt cut short by a crash could mail the recipients twice.
    idempotent = False

    def __init__(
        self,
        name: str,
        *,
        to: Recipients,
        subject: str = "",
        body: str = "",
        cc: Recipients = None,
        bcc: Recipients = None,
        html: str | None = None,
        attachments: Sequence[str | Mapping[str, Any]] | str | None = None,
        from_addr: str | None = None,
        smtp_host: str | None = None,
        smtp_port: int | str | None = None,
        smtp_user: str | None = None,
        smtp_password: str | None = None,
        smtp_security: str | None = None,
        smtp_ca_file: str | None = None,
        smtp_timeout: float = 30,
        in_reply_to: str | None = None,
        references: str | Sequence[str] | None = None,
        **options: Any,
    ):
        super().__init__(name, **options)
        for field, value in (("to", to), ("cc", cc), ("bcc", bcc)):
            if value is not None and not isinstance(value, str | list | tuple):
                raise SettingError(field, f"action {name!r}: {field} must be an address or a list of addresses, "
                                          f"got {value!r}")
        self.to = to
        self.cc = cc
        self.bcc = bcc
        self.subject = subject
        self.body = body
        self.html = html
        self.attachments = attachments
        self.in_reply_to = in_reply_to
        self.references = references
        self.from_addr = from_addr
        self.smtp_host = smtp_host
        self.smtp_port = smtp_port
        self.smtp_user = smtp_user
        # Private, so the engine neither renders it as a template (an error there
        # could quote it) nor shows it anywhere it lists public attributes.
        self._smtp_password = smtp_password
        self.smtp_security = smtp_security
        self.smtp_ca_file = smtp_ca_file
        self.smtp_timeout = smtp_timeout

    def execute(self, data_store: dict) -> dict:
        """Build the message, then deliver it over SMTP or into the outbox."""
        sender = self._setting(self.from_addr, "MAIL_FROM")
        sender_addr = _addresses(sender, "from_addr")[:1]
        if not sender_addr:
            raise ActionError("send_email: no sender address (from_addr or MAIL_FROM)", retryable=False)
        to = _addresses(self.to, "to")
        if not to:
            raise ActionError("send_email: no recipient", retryable=False)
        cc = _addresses(self.cc, "cc")
        bcc = _addresses(self.bcc, "bcc")
        recipients = list(dict.fromkeys(addr for _, addr in to + cc + bcc))

        message = EmailMessage()
        # Header values may not hold line breaks; a subject rendered from a form
        # or an error message easily does.
        message["Subject"] = " ".join(str(self.subject or "").split())
        message["From"] = formataddr(sender_addr[0])
        message["To"] = ", ".join(formataddr(pair) for pair in to)
        if cc:
            message["Cc"] = ", ".join(formataddr(pair) for pair in cc)
        if bcc:
            message["Bcc"] = ", ".join(formataddr(pair) for pair in bcc)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        # An explicit domain: the default asks the resolver for this host's FQDN.
        message["Message-ID"] = make_msgid(domain=sender_addr[0][1].rpartition("@")[2])
        in_reply_to = _message_ids(self.in_reply_to, "in_reply_to")[:1]  # a reply answers one message
        if in_reply_to:
            message["In-Reply-To"] = in_reply_to[0]
        # RFC 5322 3.6.4: the parent's references, then the parent itself; given only the parent, that is all.
        references = list(dict.fromkeys(_message_ids(self.references, "references") + in_reply_to))
        if references:
            message["References"] = " ".join(references)
        message.set_content(str(self.body or ""))
        if self.html:
            message.add_alternative(str(self.html), subtype="html")
        for content, filename, content_type in self._attachment_files():
            maintype, _, subtype = content_type.partition("/")
            message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)

        result = {
            "status": "sent",
            "recipient": ", ".join(addr for _, addr in to),
            "recipients": recipients,
            "subject": message["Subject"],
            "message_id": message["Message-ID"],
        }
        host = str(self._setting(self.smtp_host, "SMTP_HOST") or "").strip()
        if host:
            refused = self._send_smtp(message, sender_addr[0][1], recipients, host)
            result["delivery"] = "smtp"
            if refused:
                # The others already got the message: failing the step would retry and mail them twice.
                result["refused"] = refused
        else:
            result["delivery"] = "outbox"
            result["path"] = _write_outbox(message, Path(self.context.storage_path) / "outbox")
        logger.info("send_email %s: %s to %s", self.name, result["delivery"], ", ".join(recipients))
        return result

    def _setting(self, override: Any, name: str) -> Any:
        """The step's override when given, else the setting, else its default."""
        if override is not None and override != "":
            return override
        return self.context.settings.get(name, _DEFAULTS[name])

    def _credentials(self, host: str, port: int, security: str) -> tuple[str, str]:
        """User and password to log in with: SMTP_USER and SMTP_PASSWORD go only to the server they were set for.

        A step that names its own host, port, user or security (one that differs
        from the settings; TLS where they have none is no difference) brings its
        own smtp_password, else it fails here, before anything is sent anywhere.
        """
        own_user = str(self.smtp_user or "")
        own_password = str(self._smtp_password or "")
        setting = self._setting
        differs = [
            (field, value) for field, value, named, configured in (
                ("smtp_host", host, self.smtp_host, str(setting(None, "SMTP_HOST") or "").strip().lower()),
                ("smtp_port", port, self.smtp_port, _int(setting(None, "SMTP_PORT"), "SMTP_PORT")),
                ("smtp_user", own_user, self.smtp_user, str(setting(None, "SMTP_USER") or "")),
                ("smtp_security", security, self.smtp_security, str(setting(None, "SMTP_SECURITY")).strip().lower()),
            )
            if named not in (None, "") and (value.lower() if field == "smtp_host" else value) != configured
            # TLS where the settings have none still sends the password only to SMTP_HOST:SMTP_PORT.
            and not (field == "smtp_security" and configured == "none")
        ]
        if not differs:
            user = setting(self.smtp_user, "SMTP_USER")
            return str(user or ""), str(setting(self._smtp_password, "SMTP_PASSWORD") or "")
        if own_password or not (setting(None, "SMTP_USER") or setting(None, "SMTP_PASSWORD")):
            return own_user, own_password  # nothing configured could leak
        field, value = differs[0]
        raise ActionError(
            f"send_email: {field} {value!r} differs from the settings; a step that names its own smtp_host, smtp_port, "
            f"smtp_user or smtp_security must bring its own smtp_password (SMTP_USER and SMTP_PASSWORD are sent only "
            f"to SMTP_HOST:SMTP_PORT with SMTP_SECURITY)", retryable=False)

    def _attachment_files(self) -> list[tuple[bytes, str, str]]:
        """(content, filename, content type) of every attachment; ActionError naming a missing file."""
        items = self.attachments
        if not items:
            return []
        if isinstance(items, str | Mapping):
            items = [items]
        files = []
        for index, item in enumerate(items):
            record = item if isinstance(item, Mapping) else {"path": item}
            if not record.get("path"):
                raise ActionError(f"send_email: attachment without a path: {item!r}", retryable=False)
            try:
                # A path from a run's inputs is trusted only when the server made it (an upload, an e-mail).
                path = readable(self.context.settings, self.context.storage_path, record["path"],
                                f"attachments[{index}]", self.context.attachment_folders)
            except PathError as error:
                raise ActionError(f"send_email: {error}", retryable=False) from None
            try:
                # Only a regular file: a FIFO would hold the step's thread until a writer came.
                with open_regular(path, f"attachments[{index}] {str(record['path'])!r}",
                                  readable_folders(self.context.settings, self.context.storage_path,
                                                   self.context.attachment_folders)) as file:
                    content = file.read()
            except PathError as error:
                raise ActionError(f"send_email: {error}", retryable=False) from None
            except FileNotFoundError:
                raise ActionError(f"send_email: attachment {path} not found", retryable=False)
            except OSError as error:
                reason = error.strerror or error
                raise ActionError(f"send_email: cannot read attachment {path}: {reason}", retryable=False)
            filename = str(record.get("filename") or path.name)
            content_type = record.get("content_type") or mimetypes.guess_type(filename)[0]
            if not content_type or "/" not in content_type:
                content_type = "application/octet-stream"
            files.append((content, filename, content_type))
        return files

    def _send_smtp(self, message: EmailMessage, sender: str, recipients: list[str], host: str) -> dict[str, str]:
        """Deliver over SMTP; returns the recipients the server refused (when others were accepted)."""
        port = _int(self._setting(self.smtp_port, "SMTP_PORT"), "smtp_port")
        security = str(self._setting(self.smtp_security, "SMTP_SECURITY")).strip().lower()
        if security not in _SECURITY:
            raise ActionError(
                f"send_email: smtp_security must be starttls, ssl or none, got {security!r}", retryable=False
            )
        user, password = self._credentials(host, port, security)
        timeout = seconds(self.smtp_timeout, "smtp_timeout", "send_email")
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            ca_file = readable(self.context.settings, self.context.storage_path, self.smtp_ca_file,
                               "smtp_ca_file", self.context.attachment_folders) if self.smtp_ca_file else None
        except PathError as error:
            raise ActionError(f"send_email: {error}", retryable=False) from None
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except OSError as error:
            message_text = f"send_email: cannot read smtp_ca_file {self.smtp_ca_file}: {error.strerror or error}"
            raise ActionError(message_text, retryable=False)

        try:
            if security == "ssl":
                client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
            else:
                client = smtplib.SMTP(host, port, timeout=timeout)
            with client:
                if security == "starttls":
                    client.starttls(context=context)
                if user:
                    client.login(user, password)
                refused = client.send_message(message, from_addr=sender, to_addrs=recipients)
        except Exception as error:  # every failure becomes one line naming the server
            message_text, retryable = _describe_smtp_error(error, where, user, sender, timeout)
            if password:
                message_text = message_text.replace(password, "***")
            logger.warning("send_email %s: %s", self.name, message_text, exc_info=True)
            raise ActionError(message_text, retryable=retryable) from None
        return {addr: _reply(code, text) for addr, (code, text) in refused.items()}


def _addresses(value: Recipients, field: str) -> list[tuple[str, str]]:
    """(display name, address) pairs from a string or list; ActionError on a malformed one."""
    if not value:
        return []
    if isinstance(value, str):
        value = [value]
    pairs = []
    for raw in value:
        if not str(raw).strip():
            continue
        # getaddresses splits "a@x, B <b@y>" and keeps display names.
        for display, addr in getaddresses([str(raw)]):
            if not _ADDRESS.fullmatch(addr):
                raise ActionError(f"send_email: invalid {field} address {str(raw).strip()!r}", retryable=False)
            # Line breaks in a display name would break the header.
            pairs.append((" ".join(display.split()), addr))
    return pairs


def _message_ids(value: str | Sequence[str] | None, field: str) -> list[str]:
    """Message-IDs from a string (space- or comma-separated) or a list, each as ``<left@right>``; [] for none.

    The ids usually come from a received mail, whose sender wrote them: one that is
    not a Message-ID is left out with a warning, since the reply matters more than its threading.
    """
    if value is None:
        return []
    parts = value.replace(",", " ").split() if isinstance(value, str) else [str(part).strip() for part in value]
    ids = []
    for part in parts:
        found = _MESSAGE_ID.fullmatch(part) if part else None
        if found is None:
            if part:
                logger.warning("send_email: %s: %r is not a Message-ID such as <id@host>; left out", field, part)
            continue
        ids.append(f"<{found.group(1)}>")
    return ids


def _write_outbox(message: EmailMessage, outbox: Path) -> str:
    """Write the message atomically as a uniquely named .eml file; returns its path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", message["Message-ID"]).strip("-")[:80]
    path = outbox / f"{stamp}-{slug}.eml"
    try:
        make_private_dir(outbox)  # the message is 0600; the folder is the owner's only too
        write_atomic(path, bytes(message))  # readers of *.eml never see a partial message
    except OSError as error:
        raise ActionError(f"send_email: cannot write {path}: {error.strerror or error}")
    return str(path)


def _describe_smtp_error(error: Exception, where: str, user: str, sender: str, timeout: float) -> tuple[str, bool]:
    """A one-line message naming the server, and whether another attempt may help."""
    if isinstance(error, smtplib.SMTPAuthenticationError):
        reply = _reply(error.smtp_code, error.smtp_error)
        return f"SMTP authentication failed for user {user} at {where}: {reply}", False
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        refused = "; ".join(f"{addr} ({_reply(code, text)})" for addr, (code, text) in error.recipients.items())
        temporary = any(400 <= code < 500 for code, _ in error.recipients.values())
        return f"SMTP server {where} refused every recipient: {refused}", temporary
    if isinstance(error, smtplib.SMTPSenderRefused):
        reply = _reply(error.smtp_code, error.smtp_error)
        return f"SMTP server {where} refused sender {sender}: {reply}", 400 <= error.smtp_code < 500
    if isinstance(error, smtplib.SMTPConnectError):
        return f"SMTP server {where} refused connection: {_reply(error.smtp_code, error.smtp_error)}", True
    if isinstance(error, smtplib.SMTPResponseException):
        reply = _reply(error.smtp_code, error.smtp_error)
        return f"SMTP server {where} answered {reply}", 400 <= error.smtp_code < 500
    if isinstance(error, smtplib.SMTPNotSupportedError):
        # Raised for STARTTLS or AUTH the server does not offer: a configuration problem.
        return f"SMTP server {where}: {str(error).rstrip('.')}", False
    if isinstance(error, smtplib.SMTPServerDisconnected):
        # smtplib reports a read timeout as a disconnect; the timeout is the real cause.
        if isinstance(error.__context__, TimeoutError):
            return f"SMTP server {where} timed out after {timeout:g} s", True
        return f"SMTP server {where} closed the connection unexpectedly", True
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate of SMTP server {where} not trusted: {error.verify_message or error.reason}", False
    if isinstance(error, ssl.SSLError):
        hint = " (a plain SMTP port? check SMTP_SECURITY)" if error.reason == "WRONG_VERSION_NUMBER" else ""
        return f"TLS handshake with SMTP server {where} failed: {error.reason or error}{hint}", False
    if isinstance(error, ConnectionRefusedError):
        return f"SMTP server {where} refused connection", True
    if isinstance(error, TimeoutError):
        return f"SMTP server {where} timed out after {timeout:g} s", True
    if isinstance(error, socket.gaierror):
        return f"SMTP server {where}: cannot resolve host ({error.strerror})", True
    if isinstance(error, OSError):
        return f"SMTP server {where} unreachable: {error.strerror or error}", True
    return f"SMTP delivery to {where} failed: {type(error).__name__}: {error}", True


def _reply(code: int, text: bytes | str) -> str:
    """An SMTP reply as one line: ``550 no such user``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(str(text).split())}".strip()


def _int(value: Any, field: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ActionError(f"send_email: {field} must be an integer, got {value!r}", retryable=False)
