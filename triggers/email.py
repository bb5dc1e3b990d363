"""A trigger that turns e-mails with matching attachments in an IMAP folder into events."""

from __future__ import annotations

import base64
import email
import email.policy
import fnmatch
import hashlib
import imaplib
import logging
import mimetypes
import os
import re
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from datetime import UTC
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar

from actions.atomic import write_atomic
from actions.base import SettingError
from actions.paths import PathError, attachments_folder, readable
from actions.private_files import make_private_dir
from triggers.base import BaseTrigger, TriggerError
from triggers.interval import parse_seconds

logger = logging.getLogger(__name__)

SECURITY_MODES = ("ssl", "starttls", "none")
# Every socket operation gives up after this, so a hung server cannot hang the poller.
TIMEOUT = 30.0
# How long closing waits for the answer to LOGOUT, a courtesy: a server gone silent must not hold a stop or a shutdown.
LOGOUT_TIMEOUT = 5.0
# Bounds one poll's time and memory (each message is downloaded whole); the rest come next poll.
MAX_MESSAGES_PER_POLL = 100
# Polls in a row a message's FETCH may be refused (NO) before it is passed by, left unread.
FETCH_REFUSALS = 3
# The largest message read, unless EMAIL_MAX_MB says otherwise: the sender decides a message's size, and it
# is read whole into memory (a 50 MB message is a 36 MB attachment once decoded).
DEFAULT_MAX_MB = 50.0
# How many acknowledged Message-IDs are kept to recognise messages after a UIDVALIDITY change.
RECENT_IDS = 200

T = TypeVar("T")


class EmailTriggerError(TriggerError):
    """A one-line, user-facing failure of the email trigger (names host:port and the cause)."""


class _FetchRefused(EmailTriggerError):
    """The server answered NO to fetching one message (it cannot read it, or not now)."""


class _ConnectionLost(EmailTriggerError):
    pass


class EmailTrigger(BaseTrigger):
    """One event per e-mail in an IMAP folder that carries an attachment of ``attachment_types``.

    The first start takes the unread messages; after that every new message (by
    UID), read or not. Messages are fetched with BODY.PEEK[], so fetching leaves
    them unread; acknowledge() moves the cursor and marks the message \\Seen once
    its run is stored. Messages without a matching attachment are passed over
    and left unread, for a human to see.

    ``state``: ``mailbox`` (user@host:port/folder), ``uidvalidity``, ``last_uid``
    (every UID up to it is handled, except those in ``pending``), ``pending``
    (UIDs still owed a run: unread mail found at the first start, or an event
    whose run was not stored while a later one was) and ``recent_ids`` (the last
    Message-IDs acknowledged).
    """

    type = "email"
    run_source = "email"
    secret_fields = ("_password",)
    config_choices = {"security": SECURITY_MODES}
    # Set by the runtime for a workflow class written in Python (trusted code): its ca_file may lie anywhere.
    _trusted_code = False

    def __init__(
        self,
        name: str,
        host: str | None = None,
        port: int | str | None = None,
        user: str | None = None,
        password: str | None = None,
        folder: str | None = None,
        security: str | None = None,
        poll_interval: float | str | None = None,
        attachment_types: Iterable[str] = ("application/pdf",),
        ca_file: str | None = None,
    ):
        super().__init__(name)
        if isinstance(security, str) and "{" not in security:
            _check_security(security, self._where)
        if port is not None and not (isinstance(port, str) and "{" in port):
            try:
                _port_number(port, self._where)
            except ValueError as error:
                raise SettingError("port", str(error)) from None
        if poll_interval is not None and not (isinstance(poll_interval, str) and "{" in poll_interval):
            parse_seconds(poll_interval, f"{self._where}: poll_interval", "poll_interval")
        if isinstance(attachment_types, str):
            attachment_types = [attachment_types]
        self.host = host
        self.port = port
        self.user = user
        self.folder = folder
        self.security = security
        self.poll_interval = poll_interval
        self.attachment_types = list(attachment_types)
        self.ca_file = ca_file  # a PEM bundle to trust instead of the system's (a private CA), as send_email's
        # Private, so describe() and the API never show it.
        self._password = password
        self._default_interval = 30.0
        self._timeout = TIMEOUT
        self._max_mb = DEFAULT_MAX_MB
        self._attachments_root: Path | None = None
        self._conn: imaplib.IMAP4 | None = None
        self._selected_uidvalidity: int | None = None
        # UIDs of the last poll's events whose runs are not stored yet.
        self._unacked: list[int] = []
        # False once flagging one of the last poll's messages failed: the server is unwell, and each further
        # try would wait out its own timeout.
        self._flagging = True

    @property
    def _where(self) -> str:
        return f"email trigger {self.name!r}"

    @property
    def _address(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"{host}:{self.port}"

    @property
    def _mailbox(self) -> str:
        return f"{self.user}@{self._address}/{self.folder}"

    @property
    def default_check_interval(self) -> float:  # type: ignore[override]
        if self.poll_interval is None:
            return self._default_interval
        return parse_seconds(self.poll_interval, f"{self._where}: poll_interval", "poll_interval")

    def setup(self, settings: Mapping[str, Any]) -> None:
        """Fill unset options from the IMAP_* settings; ValueError names a missing or wrong one."""
        named = {field: _given(getattr(self, field)) for field in ("host", "port", "user", "security")}
        self.host = _given(self.host) or settings.get("IMAP_HOST")
        if not self.host:
            raise ValueError(f"{self._where}: IMAP_HOST is not set")
        self.user = _given(self.user) or settings.get("IMAP_USER")
        if not self.user:
            raise ValueError(f"{self._where}: IMAP_USER is not set")
        self.port = _port_number(_given(self.port) or settings.get("IMAP_PORT", 993), self._where)
        self.folder = _given(self.folder) or settings.get("IMAP_FOLDER") or "INBOX"
        if _given(self.security) is None:
            self.security = "ssl" if _true(settings.get("IMAP_SSL", True)) else "none"
        self.security = _check_security(self.security, self._where)
        self._password = self._credential(named, settings)
        if _given(self.ca_file) is not None and not self._trusted_code:
            try:
                self.ca_file = str(readable(settings, None, self.ca_file, "ca_file"))
            except PathError as error:
                raise PathError(f"{self._where}: {error}") from None  # the definition is refused, not stored
        if self.poll_interval is not None:
            self.poll_interval = self.default_check_interval
        self._default_interval = parse_seconds(settings.get("EMAIL_POLL_INTERVAL", 30), "EMAIL_POLL_INTERVAL")
        # The poll's deadline bounds each socket operation too, so an abandoned poll ends about then.
        self._timeout = float(settings.get("WORKFLOW_POLL_TIMEOUT") or TIMEOUT)
        self._max_mb = float(settings.get("EMAIL_MAX_MB") or DEFAULT_MAX_MB)
        self._attachments_root = attachments_folder(settings)

    def _credential(self, named: dict[str, Any], settings: Mapping[str, Any]) -> str:
        """The password to log in with: IMAP_PASSWORD only for the mailbox it was set for.

        A trigger that names its own host, port, user or security (one that
        differs from the IMAP_* settings; TLS where they have none is no
        difference) brings its own ``password``.
        """
        if _given(self._password) is not None:
            return str(self._password)
        try:
            configured_port = int(settings.get("IMAP_PORT", 993))
        except (TypeError, ValueError):
            configured_port = None
        configured = {
            "host": str(settings.get("IMAP_HOST") or "").strip().lower(),
            "port": configured_port,
            "user": settings.get("IMAP_USER") or "",
            "security": "ssl" if _true(settings.get("IMAP_SSL", True)) else "none",
        }
        actual = {"host": str(self.host).strip().lower(), "port": self.port, "user": self.user,
                  "security": self.security}
        # TLS where the settings have none still sends the password only to IMAP_HOST:IMAP_PORT; "none" where
        # they have TLS would show it to the network.
        differs = [field for field, value in named.items() if value is not None and actual[field] != configured[field]
                   and not (field == "security" and configured["security"] == "none")]
        if not differs:
            return settings.get("IMAP_PASSWORD") or ""
        if settings.get("IMAP_PASSWORD"):
            field = differs[0]
            raise ValueError(
                f"{self._where}: {field} {getattr(self, field)!r} differs from the IMAP_* settings; a trigger that "
                f"names its own host, port, user or security must bring its own password (IMAP_PASSWORD is sent "
                f"only to IMAP_HOST:IMAP_PORT as IMAP_USER)")
        return ""

    def poll(self) -> list[dict]:
        """Events for the messages not handled yet; the cursor moves only in acknowledge()."""
        if self._attachments_root is None:
            raise RuntimeError(f"{self._where}: setup() must be called before poll()")
        return self._with_connection(self._scan)

    def event_key(self, event: dict) -> str:
        """``imap:<folder>:<uidvalidity>:<uid>``: the same message gives the same key."""
        imap = event["imap"]
        return f"imap:{imap['folder']}:{imap['uidvalidity']}:{imap['uid']}"

    def acknowledge(self, event: dict, run_id: str) -> None:
        """Move the cursor past the event's message and mark it \\Seen (that is logged, never raised)."""
        uid, uidvalidity = event["imap"]["uid"], event["imap"]["uidvalidity"]
        if event.get("message_id"):
            recent = [mid for mid in self.state.get("recent_ids", []) if mid != event["message_id"]]
            self.state["recent_ids"] = [*recent, event["message_id"]][-RECENT_IDS:]
        if uidvalidity != self.state.get("uidvalidity"):
            # The folder was rebuilt since the fetch: its UIDs mean other messages now.
            # The rescan recognises this one by its Message-ID.
            logger.warning("%s: run %s is for UIDVALIDITY %s, the folder now has %s; cursor left alone",
                           self._where, run_id, uidvalidity, self.state.get("uidvalidity"))
            return
        with suppress(ValueError):
            self._unacked.remove(uid)
        self._mark_handled(uid)
        if not self._flagging:
            return
        try:
            self._with_connection(lambda conn: self._mark_seen(conn, uid, uidvalidity))
        except EmailTriggerError as exc:
            # The cursor, not the flag, decides what is handled: a failed flag only leaves the mail unread.
            self._flagging = False
            logger.warning("%s: could not mark UID %s as read: %s; the rest of this poll's messages stay unread",
                           self._where, uid, exc)

    def close(self) -> None:
        """Log out and release the connection; a later poll connects again."""
        conn, self._conn, self._selected_uidvalidity = self._conn, None, None
        if conn is not None:
            _disconnect(conn, logout=True)

    # -- the cursor ---------------------------------------------------------

    def _scan(self, conn: imaplib.IMAP4) -> list[dict]:
        self._unacked = []
        self._flagging = True
        uidvalidity, uidnext = self._select(conn)
        state = self.state
        if (state.get("uidvalidity") != uidvalidity or "last_uid" not in state
                or state.get("mailbox", self._mailbox) != self._mailbox):
            self._reset_cursor(conn, uidvalidity, uidnext)
        state.setdefault("pending", [])
        last_uid = state["last_uid"]
        # "UID n:*" always matches the highest UID, even when that is below n.
        new = [uid for uid in self._search(conn, f"UID {last_uid + 1}:*") if uid > last_uid]
        events = []
        uids = sorted({*state["pending"], *new})[:MAX_MESSAGES_PER_POLL]
        sizes = self._sizes(conn, uids)
        for uid in uids:
            if sizes.get(uid, 0) > self._max_mb * 2**20:
                # Never fetched: a message is read whole into memory. Passed by, left unread.
                logger.warning("%s: skipped UID %s in %s: %.1f MB, larger than EMAIL_MAX_MB (%g); left unread",
                               self._where, uid, self.folder, sizes[uid] / 2**20, self._max_mb)
                self._mark_handled(uid)
                continue
            try:
                event = self._read(conn, uid, uidvalidity)
            except _FetchRefused as refused:
                if self._refused(uid, refused):
                    self._mark_handled(uid)
                continue
            if event is None:
                self._mark_handled(uid)
            else:
                events.append(event)
                self._unacked.append(uid)
        return events

    def _reset_cursor(self, conn: imaplib.IMAP4, uidvalidity: int, uidnext: int | None) -> None:
        """Start over from the folder's unread messages (first start, new folder or new UIDVALIDITY)."""
        state = self.state
        if state.get("uidvalidity") is None:
            logger.info("%s: first poll of %s; taking its unread messages", self._where, self._mailbox)
        elif state.get("mailbox", self._mailbox) != self._mailbox:
            logger.info("%s: now watching %s instead of %s; taking its unread messages",
                        self._where, self._mailbox, state["mailbox"])
        else:
            logger.warning("%s: UIDVALIDITY of %s changed from %s to %s (folder rebuilt?); rescanning its unread"
                           " messages, skipping the %d acknowledged recently", self._where, self._mailbox,
                           state["uidvalidity"], uidvalidity, len(state.get("recent_ids", [])))
        if uidnext is None:
            uidnext = max(self._search(conn, "ALL"), default=0) + 1
        # Messages arriving from now on get UIDs >= uidnext: the range search finds them.
        pending = [uid for uid in self._search(conn, "UNSEEN") if uid < uidnext]
        state.update(mailbox=self._mailbox, uidvalidity=uidvalidity, last_uid=uidnext - 1, pending=pending)
        state.setdefault("recent_ids", [])

    def _mark_handled(self, uid: int) -> None:
        # New lists, never in-place changes: the runtime detects a changed state against a shallow copy.
        state = self.state
        if uid in state["pending"]:
            state["pending"] = [other for other in state["pending"] if other != uid]
        if uid > state["last_uid"]:
            # Events below it whose runs are not stored yet stay owed (a refused one is pending already).
            owed = [other for other in self._unacked
                    if state["last_uid"] < other < uid and other not in state["pending"]]
            state["pending"] = state["pending"] + owed
            state["last_uid"] = uid
        if str(uid) in state.get("refused", {}):
            state["refused"] = {key: count for key, count in state["refused"].items() if key != str(uid)}

    def _refused(self, uid: int, error: EmailTriggerError) -> bool:
        """Count a refused FETCH of ``uid``; True when it has been refused FETCH_REFUSALS times and is passed by.

        Until then it stays pending, tried again at the next poll (a server may refuse for a moment), while the
        messages after it go on: one message the server cannot read must not stop the mailbox for good.
        """
        state = self.state
        count = state.get("refused", {}).get(str(uid), 0) + 1
        if count >= FETCH_REFUSALS:
            logger.error("%s: %s, %d polls in a row; passed by, left unread", self._where, error, count)
            return True
        state["refused"] = {**state.get("refused", {}), str(uid): count}
        if uid not in state["pending"]:
            state["pending"] = state["pending"] + [uid]
        logger.warning("%s: %s; tried again at the next poll (%d of %d)", self._where, error, count, FETCH_REFUSALS)
        return False

    # -- messages -------------------------------------------------------------

    def _read(self, conn: imaplib.IMAP4, uid: int, uidvalidity: int) -> dict | None:
        """The event for one message, or None when it is gone, handled already or has no matching attachment."""
        raw = self._fetch(conn, uid)
        if raw is None:
            logger.info("%s: UID %s is gone from %s", self._where, uid, self.folder)
            return None
        described = f"UID {uid} in {self.folder}"
        try:
            message = email.message_from_bytes(raw, policy=email.policy.default)
            described += f" ({_header(message, 'Subject')!r} from {_header(message, 'From')})"
            event = {
                "from": _header(message, "From"),
                # Where the sender wants answers: the insurance workflow's reply_to input reads it.
                "reply_to": _header(message, "Reply-To") or None,
                "subject": _header(message, "Subject"),
                "date": _iso_date(message),
                "message_id": _header(message, "Message-ID") or None,
                "text": _body_text(message),
            }
            parts = list(self._attachments(message))
        except Exception:
            # The sender controls every byte: one malformed message must not block the mailbox for good.
            logger.error("%s: cannot read %s; skipped, left unread", self._where, described, exc_info=True)
            return None
        if event["message_id"] in self.state.get("recent_ids", []):
            # Same message under a new UID (rebuilt folder, double delivery): it has had its run.
            logger.info("%s: skipped %s: Message-ID %s was handled already", self._where, described,
                        event["message_id"])
            try:
                self._mark_seen(conn, uid, uidvalidity)
            except EmailTriggerError as exc:
                logger.warning("%s: could not mark UID %s as read: %s", self._where, uid, exc)
            return None
        if not parts:
            logger.info("%s: skipped %s: no %s attachment; left unread",
                        self._where, described, " or ".join(self.attachment_types))
            return None
        # One folder per message, named by its UID: a refetch rewrites the same files.
        folder = self._attachments_root / self._folder_name(uidvalidity, uid)
        event["attachments"] = self._save(folder, parts)
        event["imap"] = {"uid": uid, "uidvalidity": uidvalidity, "folder": self.folder}
        return event

    def _folder_name(self, uidvalidity: int, uid: int) -> str:
        digest = hashlib.sha256(self._mailbox.encode()).hexdigest()[:10]
        return f"email-{digest}-{uidvalidity}-{uid}"

    def attachment_folders(self, event: dict) -> list[str]:
        """The folder ``_read`` saved the message's attachments in (this trigger's own event names its UID)."""
        imap = event.get("imap")
        if not isinstance(imap, dict) or "attachments" not in event:
            return []
        return [self._folder_name(imap["uidvalidity"], imap["uid"])]

    def _attachments(self, message: EmailMessage) -> Iterator[tuple[str | None, str, bytes]]:
        """(filename, content type, bytes) of each attachment whose type is in attachment_types."""
        patterns = [pattern.strip().lower() for pattern in self.attachment_types]
        for part in message.walk():
            if part.is_multipart():
                continue
            filename = part.get_filename()
            if not filename and part.get_content_disposition() != "attachment":
                continue
            content_type = part.get_content_type()
            if content_type == "application/octet-stream" and filename:
                # Many mailers send every file as octet-stream; its name tells what it is.
                content_type = mimetypes.guess_type(filename)[0] or content_type
            if any(fnmatch.fnmatchcase(content_type, pattern) for pattern in patterns):
                yield filename, content_type, part.get_payload(decode=True) or b""

    def _save(self, folder: Path, parts: list[tuple[str | None, str, bytes]]) -> list[dict]:
        saved: list[dict] = []
        try:
            make_private_dir(folder)  # mail attachments: readable by the owner only
            for index, (filename, content_type, data) in enumerate(parts, 1):
                name = _safe_filename(filename, index, content_type, {item["filename"] for item in saved})
                path = folder / name
                write_atomic(path, data)  # 0600, and no reader sees half a file
                saved.append({"filename": name, "content_type": content_type, "size": len(data), "path": str(path)})
        except OSError as exc:
            raise EmailTriggerError(f"{self._where}: cannot save attachments in {folder}: {exc}") from exc
        return saved

    # -- IMAP -----------------------------------------------------------------

    def _with_connection(self, operation: Callable[[imaplib.IMAP4], T]) -> T:
        # The connection stays open between polls: logging in every EMAIL_POLL_INTERVAL is needless
        # load, and servers keep idle sessions for 30 minutes (RFC 3501). One the server dropped
        # meanwhile is replaced once, transparently; a timeout is not retried, so a hung server costs
        # one TIMEOUT per poll and not two.
        reused = self._conn is not None
        try:
            return self._call(operation)
        except _ConnectionLost as exc:
            if not reused or isinstance(exc.__cause__, TimeoutError):
                raise
            logger.info("%s: %s; reconnecting", self._where, exc)
            return self._call(operation)

    def _call(self, operation: Callable[[imaplib.IMAP4], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        try:
            return operation(self._conn)
        except imaplib.IMAP4.abort as exc:
            self._drop()
            raise _ConnectionLost(f"IMAP server {self._address} closed the connection: {_text(exc)}") from exc
        except OSError as exc:
            self._drop()
            raise _ConnectionLost(f"IMAP server {self._address} connection lost: {_text(exc)}") from exc
        except imaplib.IMAP4.error as exc:
            # After an unexpected answer the session's state is unknown: start the next one afresh.
            self._drop()
            raise EmailTriggerError(f"IMAP server {self._address} failed: {_text(exc)}") from exc

    def _tls(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=self.ca_file or None)
        except OSError as exc:
            raise EmailTriggerError(f"{self._where}: cannot read ca_file {self.ca_file}: {_text(exc)}") from exc

    def _connect(self) -> imaplib.IMAP4:
        context = self._tls() if self.security != "none" else None
        try:
            if self.security == "ssl":
                conn = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=context, timeout=self._timeout)
            else:
                conn = imaplib.IMAP4(self.host, self.port, timeout=self._timeout)
        except ssl.SSLError as exc:
            raise EmailTriggerError(f"TLS with IMAP server {self._address} failed: {_text(exc)}") from exc
        except OSError as exc:
            raise EmailTriggerError(f"IMAP server {self._address} unreachable: {_text(exc)}") from exc
        except imaplib.IMAP4.error as exc:
            raise EmailTriggerError(f"IMAP server {self._address} sent no IMAP greeting: {_text(exc)}") from exc
        try:
            if self.security == "starttls":
                try:
                    conn.starttls(context)
                except (imaplib.IMAP4.error, ssl.SSLError) as exc:
                    raise EmailTriggerError(f"STARTTLS with IMAP server {self._address} failed: {_text(exc)}") from exc
            try:
                if (self.user + self._password).isascii():
                    conn.login(_quote(self.user), self._password)
                else:
                    # imaplib's LOGIN is ASCII-only; AUTHENTICATE PLAIN carries UTF-8 (RFC 4616).
                    conn.authenticate("PLAIN", lambda _: f"\0{self.user}\0{self._password}".encode())
            except imaplib.IMAP4.error as exc:
                raise EmailTriggerError(f"IMAP login failed for {self.user} at {self._address}: {_text(exc)}") from exc
        except OSError as exc:
            _disconnect(conn, logout=False)
            raise EmailTriggerError(f"IMAP server {self._address} connection lost: {_text(exc)}") from exc
        except BaseException:
            _disconnect(conn, logout=False)
            raise
        return conn

    def _drop(self) -> None:
        conn, self._conn, self._selected_uidvalidity = self._conn, None, None
        if conn is not None:
            _disconnect(conn, logout=False)

    def _select(self, conn: imaplib.IMAP4) -> tuple[int, int | None]:
        """SELECT the folder (every poll, so new mail and a new UIDVALIDITY show); (UIDVALIDITY, UIDNEXT)."""
        typ, data = conn.select(_mailbox_name(self.folder))
        if typ != "OK":
            raise EmailTriggerError(f"cannot open IMAP folder {self.folder!r} at {self._address}: {_text(data)}")
        uidvalidity = conn.response("UIDVALIDITY")[1][-1]
        uidnext = conn.response("UIDNEXT")[1][-1]
        if uidvalidity is None:
            raise EmailTriggerError(f"IMAP server {self._address} sent no UIDVALIDITY for folder {self.folder!r}")
        self._selected_uidvalidity = int(uidvalidity)
        return int(uidvalidity), int(uidnext) if uidnext is not None else None

    def _search(self, conn: imaplib.IMAP4, criteria: str) -> list[int]:
        typ, data = conn.uid("SEARCH", criteria)
        if typ != "OK":
            raise EmailTriggerError(f"IMAP server {self._address} refused SEARCH {criteria}: {_text(data)}")
        return sorted(int(uid) for line in data if line for uid in line.split())

    def _sizes(self, conn: imaplib.IMAP4, uids: list[int]) -> dict[int, int]:
        """Each message's size in bytes (RFC822.SIZE), asked for all of ``uids`` at once."""
        if not uids:
            return {}
        typ, data = conn.uid("FETCH", ",".join(map(str, uids)), "(RFC822.SIZE)")
        if typ != "OK":
            raise EmailTriggerError(f"IMAP server {self._address} refused to give message sizes in "
                                    f"{self.folder!r}: {_text(data)}")
        sizes = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            uid, size = re.search(rb"\bUID (\d+)", line or b""), re.search(rb"RFC822\.SIZE (\d+)", line or b"")
            if uid and size:
                sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    def _fetch(self, conn: imaplib.IMAP4, uid: int) -> bytes | None:
        typ, data = conn.uid("FETCH", str(uid), "(BODY.PEEK[])")
        if typ != "OK":
            raise _FetchRefused(
                f"IMAP server {self._address} refused to fetch UID {uid} in {self.folder!r}: {_text(data)}")
        # imaplib splits "* 2 FETCH (BODY[] {709}<literal> UID 102)" into a (head, literal) tuple and the
        # tail; the UID may be in either. Unsolicited FETCH responses (flag changes) may be mixed in.
        for index, item in enumerate(data):
            if isinstance(item, tuple) and b"BODY[" in item[0]:
                tail = data[index + 1] if index + 1 < len(data) and isinstance(data[index + 1], bytes) else b""
                if re.search(rb"\bUID %d\b" % uid, item[0] + tail):
                    return item[1]
        return None

    def _mark_seen(self, conn: imaplib.IMAP4, uid: int, uidvalidity: int) -> None:
        if self._selected_uidvalidity is None:
            self._select(conn)
        if self._selected_uidvalidity != uidvalidity:
            return  # UID {uid} names another message in the rebuilt folder
        typ, data = conn.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Seen)")
        if typ != "OK":
            raise EmailTriggerError(f"IMAP server {self._address} refused to flag UID {uid}: {_text(data)}")


# -- helpers ------------------------------------------------------------------


def _given(value: Any) -> Any:
    """None for an unset option (None or an empty rendered template), else the value."""
    return None if value is None or value == "" else value


def _true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _port_number(value: Any, where: str) -> int:
    """``value`` as a TCP port number; ValueError naming ``where`` otherwise."""
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        raise ValueError(f"{where}: port must be a port number, got {value!r}")
    return int(text)


def _check_security(value: Any, where: str) -> str:
    security = str(value).strip().lower()
    if security not in SECURITY_MODES:
        raise SettingError("security", f"{where}: security must be one of {', '.join(SECURITY_MODES)}, got {value!r}")
    return security


def _text(value: Any) -> str:
    """A one-line message from an exception or an imaplib answer (which carries bytes)."""
    if isinstance(value, imaplib.IMAP4.error) and value.args:
        value = value.args[0]
    elif isinstance(value, list):
        value = value[-1] if value else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox_name(folder: str) -> str:
    """``folder`` as an IMAP quoted string, non-ASCII in modified UTF-7 (RFC 3501 5.1.3)."""

    def utf7(match: re.Match) -> str:
        return "&" + base64.b64encode(match.group().encode("utf-16-be")).decode().rstrip("=").replace("/", ",") + "-"

    return _quote(re.sub(r"[^\x20-\x7e]+", utf7, folder.replace("&", "&-")))


def _disconnect(conn: imaplib.IMAP4, logout: bool) -> None:
    """Close a connection; errors are ignored (it may be dead already)."""
    if logout:
        try:
            conn.sock.settimeout(min(conn.sock.gettimeout() or LOGOUT_TIMEOUT, LOGOUT_TIMEOUT))
            conn.logout()  # also closes the socket, unless LOGOUT itself failed
            return
        except (imaplib.IMAP4.error, OSError):
            pass
    with suppress(OSError):
        conn.shutdown()


def _header(message: EmailMessage, name: str) -> str:
    value = message.get(name)
    return " ".join(str(value).split()) if value is not None else ""


def _iso_date(message: EmailMessage) -> str | None:
    """The Date header in ISO 8601 UTC with Z, or as written when it does not parse."""
    header = message.get("Date")
    if header is None:
        return None
    moment = getattr(header, "datetime", None)
    if moment is None:
        return str(header)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # "-0000": no zone given; RFC 5322 reads it as UTC
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _body_text(message: EmailMessage) -> str:
    """The plain-text body, else the HTML body without its tags."""
    part = message.get_body(preferencelist=("plain",))
    if part is not None:
        return _part_text(part)
    part = message.get_body(preferencelist=("html",))
    if part is None:
        return ""
    extractor = _TextExtractor()
    extractor.feed(_part_text(part))
    extractor.close()
    text = re.sub(r"[ \t\r\f\v]+", " ", "".join(extractor.parts))
    return re.sub(r"\s*\n\s*", "\n", text).strip()


def _part_text(part: EmailMessage) -> str:
    try:
        text = part.get_content()
    except (LookupError, UnicodeError):  # unknown or wrong charset
        text = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    return text.replace("\r\n", "\n")  # mail travels with CRLF line ends


class _TextExtractor(HTMLParser):
    """Collects an HTML document's text, without scripts and styles."""

    _BLOCKS = {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style"):
            self._hidden += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def _safe_filename(filename: str | None, index: int, content_type: str, taken: set[str]) -> str:
    """A plain file name from a sender-chosen one: no directories, no hidden or reserved names, unique."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r'[\x00-\x1f\x7f<>:"|?*]', "_", name).strip().lstrip(".").strip()
    if not name:
        name = f"attachment-{index}{mimetypes.guess_extension(content_type) or ''}"
    stem, extension = os.path.splitext(name)
    stem, extension = stem[:100], extension[:16]
    name, number = stem + extension, 1
    while name in taken:
        number += 1
        name = f"{stem}-{number}{extension}"
    return name


