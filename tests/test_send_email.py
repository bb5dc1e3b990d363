"""SendEmailAction against a real SMTP server (aiosmtpd) on loopback, and the outbox."""

from __future__ import annotations

import email
import socket
import ssl
from email import policy
from pathlib import Path

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from actions.base import ActionError, RunContext
from actions.send_email import SendEmailAction

PASSWORD = "s3cret-Pa55"


class Collector:
    """An aiosmtpd handler that keeps every envelope and refuses nobody@example.org."""

    def __init__(self):
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == "nobody@example.org":
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted"


def authenticate(server, session, envelope, mechanism, auth_data):
    """Accepts only bob with PASSWORD."""
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"bob", PASSWORD.encode())
    # handled=False: let aiosmtpd answer "535" itself on failure.
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def server_tls(ca):
    """A server-side SSL context with a certificate for 127.0.0.1 signed by the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def smtp_server():
    """Start an SMTP server with the given aiosmtpd options; yields (handler, port) per call."""
    controllers = []

    def start(**options):
        handler = Collector()
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **options)
        controller.start()
        controllers.append(controller)
        return handler, controller.port

    yield start
    for controller in controllers:
        controller.stop()


def send(tmp_path, settings=None, own: tuple[str, ...] = (), **config) -> dict:
    config.setdefault("to", "alice@example.org")
    config.setdefault("smtp_timeout", 5)
    action = SendEmailAction("mail", **config)
    # The test's folder holds the attachments and CA files: the files root the action may read. ``own``: the
    # run's attachment folders (under tmp_path / "attachments").
    settings = {"WORKFLOW_FILES_ROOT": str(tmp_path), **(settings or {})}
    action.context = RunContext(settings=settings, storage_path=str(tmp_path), attachment_folders=own)
    return action.execute({})


def smtp_settings(port: int, security: str = "none", **extra) -> dict:
    settings = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": port, "SMTP_SECURITY": security, "MAIL_FROM": "flow@example.org"}
    return settings | extra


def test_plain_delivery(smtp_server, tmp_path):
    handler, port = smtp_server()
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 binary \x00\xff")
    notes = tmp_path / "notes.txt"
    notes.write_text("line one\n", encoding="utf-8")
    long_body = "Dear Alice,\n" + "x" * 3000 + "\nümlauts too.\n"

    result = send(
        tmp_path,
        smtp_settings(port),
        to=["Alice Example <alice@example.org>", "carol@example.org"],
        cc="dave@example.org",
        bcc=["hidden@example.org"],
        subject="Application\nreceived",
        body=long_body,
        html="<p>Dear Alice</p>",
        attachments=[str(report), {"path": str(notes), "filename": "notes.txt"}],
    )

    assert result["status"] == "sent"
    assert result["delivery"] == "smtp"
    assert result["recipient"] == "alice@example.org, carol@example.org"
    assert result["recipients"] == ["alice@example.org", "carol@example.org", "dave@example.org", "hidden@example.org"]
    assert result["subject"] == "Application received"
    assert "path" not in result

    [envelope] = handler.envelopes
    assert envelope.mail_from == "flow@example.org"
    assert sorted(envelope.rcpt_tos) == sorted(result["recipients"])
    message = email.message_from_bytes(envelope.original_content, policy=policy.default)
    assert message["Message-ID"] == result["message_id"]
    assert result["message_id"].endswith("@example.org>")
    assert message["Date"].datetime is not None
    assert message["From"] == "flow@example.org"
    assert message["To"] == "Alice Example <alice@example.org>, carol@example.org"
    assert message["Cc"] == "dave@example.org"
    assert message["Bcc"] is None
    assert "hidden@example.org" not in envelope.original_content.decode("ascii", "replace")
    assert message["Subject"] == "Application received"
    # SMTP carries CRLF line endings.
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == long_body
    assert message.get_body(("html",)).get_content().strip() == "<p>Dear Alice</p>"
    attachments = {part.get_filename(): part for part in message.iter_attachments()}
    assert attachments["report.pdf"].get_content_type() == "application/pdf"
    assert attachments["report.pdf"].get_content() == b"%PDF-1.4 binary \x00\xff"
    assert attachments["notes.txt"].get_payload(decode=True) == b"line one\n"


def test_starttls(smtp_server, server_tls, ca_file, tmp_path):
    handler, port = smtp_server(tls_context=server_tls, require_starttls=True)
    result = send(tmp_path, smtp_settings(port, "starttls"), smtp_ca_file=ca_file, subject="over TLS")
    assert result["delivery"] == "smtp"
    [envelope] = handler.envelopes
    assert b"Subject: over TLS" in envelope.original_content


def test_implicit_ssl(smtp_server, server_tls, ca_file, tmp_path):
    handler, port = smtp_server(ssl_context=server_tls)
    # Overrides on the step win over the settings.
    result = send(
        tmp_path, smtp_settings(free_port(), "none"), smtp_port=str(port), smtp_security="ssl", smtp_ca_file=ca_file
    )
    assert result["delivery"] == "smtp"
    assert len(handler.envelopes) == 1


def test_untrusted_certificate_fails_without_retry(smtp_server, server_tls, tmp_path):
    handler, port = smtp_server(tls_context=server_tls, require_starttls=True)
    with pytest.raises(ActionError) as caught:
        send(tmp_path, smtp_settings(port, "starttls"))
    assert str(caught.value).startswith(f"TLS certificate of SMTP server 127.0.0.1:{port} not trusted")
    assert caught.value.retryable is False
    assert handler.envelopes == []


def test_authentication(smtp_server, server_tls, ca_file, tmp_path):
    handler, port = smtp_server(tls_context=server_tls, authenticator=authenticate, auth_require_tls=True)
    settings = smtp_settings(port, "starttls", SMTP_USER="bob", SMTP_PASSWORD=PASSWORD)
    result = send(tmp_path, settings, smtp_ca_file=ca_file)
    assert result["delivery"] == "smtp"
    assert len(handler.envelopes) == 1
    assert PASSWORD not in repr(result)


def test_authentication_failure(smtp_server, server_tls, ca_file, tmp_path):
    handler, port = smtp_server(tls_context=server_tls, authenticator=authenticate, auth_require_tls=True)
    with pytest.raises(ActionError) as caught:
        send(
            tmp_path,
            smtp_settings(port, "starttls"),
            smtp_user="bob",
            smtp_password="wrong-" + PASSWORD,
            smtp_ca_file=ca_file,
        )
    message = str(caught.value)
    assert message.startswith(f"SMTP authentication failed for user bob at 127.0.0.1:{port}: 535")
    assert "\n" not in message
    assert PASSWORD not in message
    assert caught.value.retryable is False
    assert handler.envelopes == []


def test_password_is_not_a_public_attribute():
    action = SendEmailAction("mail", to="a@example.org", smtp_password=PASSWORD)
    assert PASSWORD not in repr(action)
    assert all(PASSWORD != value for key, value in vars(action).items() if not key.startswith("_"))


def test_server_down(tmp_path):
    port = free_port()
    with pytest.raises(ActionError, match=rf"^SMTP server 127\.0\.0\.1:{port} refused connection$") as caught:
        send(tmp_path, smtp_settings(port))
    assert caught.value.retryable is True


def test_server_never_answers(tmp_path):
    # A listening socket nobody accepts from: the connection opens, no greeting comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(ActionError, match=rf"^SMTP server 127\.0\.0\.1:{port} timed out after 0\.2 s$"):
            send(tmp_path, smtp_settings(port), smtp_timeout=0.2)


def test_starttls_not_offered(smtp_server, ca_file, tmp_path):
    handler, port = smtp_server()
    with pytest.raises(ActionError, match=f"^SMTP server 127.0.0.1:{port}: STARTTLS extension not supported") as caught:
        send(tmp_path, smtp_settings(port, "starttls"), smtp_ca_file=ca_file)
    assert caught.value.retryable is False


def test_ssl_against_a_plain_server(smtp_server, ca_file, tmp_path):
    handler, port = smtp_server()
    with pytest.raises(ActionError, match=f"^TLS handshake with SMTP server 127.0.0.1:{port} failed: ") as caught:
        send(tmp_path, smtp_settings(port, "ssl"), smtp_ca_file=ca_file)
    assert caught.value.retryable is False


def test_every_recipient_refused(smtp_server, tmp_path):
    handler, port = smtp_server()
    with pytest.raises(ActionError) as caught:
        send(tmp_path, smtp_settings(port), to="nobody@example.org")
    assert str(caught.value) == (
        f"SMTP server 127.0.0.1:{port} refused every recipient: nobody@example.org (550 5.1.1 no such user)"
    )
    assert caught.value.retryable is False


def test_some_recipients_refused(smtp_server, tmp_path):
    handler, port = smtp_server()
    result = send(tmp_path, smtp_settings(port), to=["alice@example.org", "nobody@example.org"])
    # Alice has her copy; failing the step would retry and mail her twice.
    assert result["status"] == "sent"
    assert result["refused"] == {"nobody@example.org": "550 5.1.1 no such user"}
    assert handler.envelopes[0].rcpt_tos == ["alice@example.org"]


def test_outbox(tmp_path):
    attachment = tmp_path / "form.pdf"
    attachment.write_bytes(b"%PDF-1.4")
    result = send(
        tmp_path,
        {"MAIL_FROM": "PyFlow <flow@example.org>"},
        to="alice@example.org",
        bcc="hidden@example.org",
        subject="Application incomplete",
        body="date_of_birth: must be YYYY-MM-DD",
        attachments=str(attachment),
    )
    assert result["delivery"] == "outbox"
    outbox = tmp_path / "outbox"
    assert [p.name for p in outbox.iterdir()] == [result["path"].rsplit("/", 1)[1]]
    assert result["path"].endswith(".eml")
    with open(result["path"], "rb") as file:
        message = email.message_from_binary_file(file, policy=policy.default)
    assert message["Message-ID"] == result["message_id"]
    assert message["Subject"] == "Application incomplete"
    assert message["From"] == "PyFlow <flow@example.org>"
    assert message["To"] == "alice@example.org"
    # The outbox copy is the only record of who it was meant for.
    assert message["Bcc"] == "hidden@example.org"
    assert message["Date"].datetime is not None
    assert message.get_body(("plain",)).get_content().strip() == "date_of_birth: must be YYYY-MM-DD"
    [part] = message.iter_attachments()
    assert part.get_filename() == "form.pdf"


def test_outbox_names_are_unique(tmp_path):
    paths = {send(tmp_path)["path"] for _ in range(5)}
    assert len(paths) == 5
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == sorted(p.rsplit("/", 1)[1] for p in paths)


def test_missing_attachment(tmp_path):
    missing = tmp_path / "nope.pdf"
    with pytest.raises(ActionError, match=f"attachment {missing} not found") as caught:
        send(tmp_path, attachments=[str(missing)])
    assert caught.value.retryable is False
    assert not (tmp_path / "outbox").exists()


@pytest.mark.parametrize("to", ["", [], ["", " "], None])
def test_no_recipient(tmp_path, to):
    with pytest.raises(ActionError, match="^send_email: no recipient$") as caught:
        send(tmp_path, to=to)
    assert caught.value.retryable is False


@pytest.mark.parametrize("to", ["alice", "alice@", "a b@example.org", ["ok@example.org", "not an address"]])
def test_invalid_address(tmp_path, to):
    with pytest.raises(ActionError, match="invalid to address") as caught:
        send(tmp_path, to=to)
    assert caught.value.retryable is False


def test_bad_security_setting(tmp_path):
    with pytest.raises(ActionError, match="smtp_security must be starttls, ssl or none, got 'tls'"):
        send(tmp_path, smtp_settings(free_port(), "tls"))


def test_not_idempotent():
    assert SendEmailAction.idempotent is False
    assert SendEmailAction.type == "send_email"


# -- a configured credential goes only to the server it was configured for --------------------------------


class Recorder:
    """An aiosmtpd authenticator that accepts anything and keeps every login it was sent."""

    def __init__(self):
        self.logins: list[tuple[bytes, bytes]] = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        self.logins.append(tuple(auth_data))
        return AuthResult(success=True, auth_data=auth_data)


@pytest.mark.parametrize(("override", "field"), [
    ({"smtp_host": "localhost"}, "smtp_host"),  # the impostor listens on 127.0.0.1, reached by another name
    ({"smtp_port": "IMPOSTOR"}, "smtp_port"),
    ({"smtp_user": "mallory"}, "smtp_user"),
    ({"smtp_security": "none"}, "smtp_security"),
])
def test_a_step_naming_its_own_server_does_not_get_the_configured_password(smtp_server, tmp_path, override, field):
    recorder = Recorder()
    handler, impostor = smtp_server(authenticator=recorder, auth_require_tls=False)
    # The settings name the impostor's address with STARTTLS as bob (for smtp_port: another port), so each
    # case differs from them by one field only.
    port = free_port() if field == "smtp_port" else impostor
    configured = smtp_settings(port, "starttls", SMTP_USER="bob", SMTP_PASSWORD=PASSWORD)
    config = {key: (impostor if value == "IMPOSTOR" else value) for key, value in override.items()}
    with pytest.raises(ActionError) as caught:
        send(tmp_path, configured, **config)
    message = str(caught.value)
    assert message.startswith(f"send_email: {field} ")
    assert "must bring its own smtp_password" in message and PASSWORD not in message
    assert not caught.value.retryable
    assert recorder.logins == [] and handler.envelopes == []


def test_a_step_with_its_own_password_uses_it_and_not_the_configured_one(smtp_server, tmp_path):
    recorder = Recorder()
    handler, impostor = smtp_server(authenticator=recorder, auth_require_tls=False)
    configured = smtp_settings(free_port(), "starttls", SMTP_USER="bob", SMTP_PASSWORD=PASSWORD)
    result = send(tmp_path, configured, smtp_host="127.0.0.1", smtp_port=impostor, smtp_security="none",
                  smtp_user="team", smtp_password="their-own")
    assert result["delivery"] == "smtp" and len(handler.envelopes) == 1
    assert recorder.logins == [(b"team", b"their-own")]


def test_a_step_naming_another_server_without_any_configured_credential_sends_without_login(smtp_server, tmp_path):
    recorder = Recorder()
    handler, port = smtp_server(authenticator=recorder, auth_require_tls=False)
    result = send(tmp_path, smtp_settings(free_port(), "starttls"), smtp_port=port, smtp_security="none")
    assert result["delivery"] == "smtp" and len(handler.envelopes) == 1
    assert recorder.logins == []


def test_naming_the_configured_server_or_more_security_keeps_the_configured_password(
        smtp_server, server_tls, ca_file, tmp_path):
    handler, port = smtp_server(tls_context=server_tls, authenticator=authenticate, auth_require_tls=True)
    plain = smtp_settings(port, "none", SMTP_USER="bob", SMTP_PASSWORD=PASSWORD)
    # The same host, port and user written out, in other case; and STARTTLS where the settings have none.
    result = send(tmp_path, plain, smtp_host="127.0.0.1", smtp_port=str(port), smtp_user="bob",
                  smtp_security="STARTTLS", smtp_ca_file=ca_file)
    assert result["delivery"] == "smtp" and len(handler.envelopes) == 1


# -- attachments and CA files: only inside WORKFLOW_FILES_ROOT or the run's own attachments folder ----------


@pytest.mark.parametrize("attachment", [
    "/proc/self/environ", "/etc/passwd", {"path": "/etc/passwd", "filename": "passwd.txt"}, "../outside.txt",
    "~/.bash_history", "a\0b",
])
def test_attachments_outside_the_files_root_are_refused_before_sending(smtp_server, tmp_path, attachment):
    handler, port = smtp_server()
    root = tmp_path / "files"
    root.mkdir()
    (root / "ok.txt").write_text("fine", encoding="utf-8")
    with pytest.raises(ActionError) as caught:
        send(tmp_path, smtp_settings(port, "none", WORKFLOW_FILES_ROOT=str(root)), ("4f2a",),
             attachments=["ok.txt", attachment])
    assert str(caught.value).startswith("send_email: attachments[1] ")
    own = tmp_path / "attachments" / "4f2a"
    assert f"WORKFLOW_FILES_ROOT ({root}) or this run's attachments folder ({own})" in str(caught.value) or (
        "NUL byte" in str(caught.value))
    assert not caught.value.retryable
    assert handler.envelopes == []


def test_an_upload_saved_by_the_server_for_the_run_can_be_attached_and_another_runs_cannot(tmp_path):
    upload = tmp_path / "attachments" / "4f2a" / "form.pdf"  # where the server saves uploads (storage = tmp_path)
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"%PDF-1.4 upload")
    record = {"path": str(upload), "filename": "form.pdf", "content_type": "application/pdf"}
    result = send(tmp_path, {"WORKFLOW_FILES_ROOT": str(tmp_path / "files")}, ("4f2a",), attachments=[record])
    message = email.message_from_bytes(Path(result["path"]).read_bytes(), policy=policy.default)
    [part] = list(message.iter_attachments())
    assert part.get_content() == b"%PDF-1.4 upload"
    with pytest.raises(ActionError, match=r"^send_email: attachments\[0\] .* is not an attachment of this run"):
        send(tmp_path, {"WORKFLOW_FILES_ROOT": str(tmp_path / "files")}, ("5b3c",), attachments=[record])


def test_a_ca_file_outside_the_files_root_is_refused(smtp_server, tmp_path):
    handler, port = smtp_server()
    with pytest.raises(ActionError, match=r"^send_email: smtp_ca_file '/etc/shadow' is outside WORKFLOW_FILES_ROOT"):
        send(tmp_path, smtp_settings(port, "none", WORKFLOW_FILES_ROOT=str(tmp_path / "files")),
             smtp_security="starttls", smtp_ca_file="/etc/shadow")
    assert handler.envelopes == []


def test_a_reply_carries_in_reply_to_and_references_so_it_threads(smtp_server, tmp_path):
    handler, port = smtp_server()

    send(tmp_path, smtp_settings(port), subject="Re: question", in_reply_to="<q1@mail.example>",
         references=["<root@mail.example>", "q0@mail.example"])

    message = email.message_from_bytes(handler.envelopes[0].original_content, policy=policy.default)
    assert message["In-Reply-To"] == "<q1@mail.example>"
    # The parent's references, then the parent itself (RFC 5322 3.6.4).
    assert message["References"] == "<root@mail.example> <q0@mail.example> <q1@mail.example>"


@pytest.mark.parametrize("value", ["", None, "   "])
def test_no_message_id_adds_no_threading_header(tmp_path, value):
    result = send(tmp_path, in_reply_to=value, references=value)  # the outbox: no SMTP_HOST

    message = email.message_from_bytes(Path(result["path"]).read_bytes(), policy=policy.default)
    assert message["In-Reply-To"] is None and message["References"] is None


def test_a_malformed_message_id_is_left_out_and_the_mail_still_goes(tmp_path, caplog):
    result = send(tmp_path, in_reply_to="not an id", references="<ok@mail.example> also-bad")

    message = email.message_from_bytes(Path(result["path"]).read_bytes(), policy=policy.default)
    assert message["In-Reply-To"] is None
    assert message["References"] == "<ok@mail.example>"
    assert "in_reply_to: 'not' is not a Message-ID such as <id@host>; left out" in caplog.text
