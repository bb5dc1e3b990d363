"""Issue 12 item 3, replayed against a real run.py: a configured credential goes only to the server it was
configured for.

The server's SMTP_* and IMAP_* settings name impostors on loopback with TLS (SMTP_SECURITY=starttls,
IMAP_SSL=true); the impostors speak plain text only, so the configured connections fail before any login and
every login an impostor records is a leak. Posted definitions then name the impostors another way (another
host name, another port, another user, no TLS) without bringing a password of their own.
"""

from __future__ import annotations

import base64
import socketserver
import threading
import uuid

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.server import Servers, free_port

pytestmark = pytest.mark.slow  # replays attacks on a real run.py server

SMTP_PASSWORD = "smtp-Pa55-" + uuid.uuid4().hex
IMAP_PASSWORD = "imap-Pa55-" + uuid.uuid4().hex


class SmtpImpostor:
    """An SMTP server that accepts any login without TLS and keeps what it was sent."""

    def __init__(self):
        self.logins: list[tuple] = []
        self.messages: list[bytes] = []
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port(), authenticator=self,
                                     auth_require_tls=False)

    def __call__(self, server, session, envelope, mechanism, auth_data):
        self.logins.append(tuple(auth_data))
        return AuthResult(success=True, auth_data=auth_data)

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        return "250 Message accepted"

    @property
    def port(self) -> int:
        return self.controller.port


class ImapImpostor(socketserver.ThreadingTCPServer):
    """A raw IMAP server on loopback: greets, offers AUTH=PLAIN, records every line, refuses every login."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.lines: list[bytes] = []
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _ImapHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def received(self) -> bytes:
        return b"\n".join(self.lines)


class _ImapHandler(socketserver.StreamRequestHandler):
    timeout = 10

    def handle(self) -> None:
        server: ImapImpostor = self.server  # type: ignore[assignment]
        server.connections += 1
        self.wfile.write(b"* OK IMAP4rev1 impostor ready\r\n")
        while line := self.rfile.readline(65536):
            server.lines.append(line.rstrip(b"\r\n"))
            tag, _, rest = line.decode("latin-1").strip().partition(" ")
            command = rest.split(" ")[0].upper()
            if command == "CAPABILITY":
                self.wfile.write(f"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n".encode())
            elif command == "AUTHENTICATE":
                self.wfile.write(b"+ \r\n")
                server.lines.append(self.rfile.readline(65536).rstrip(b"\r\n"))
                self.wfile.write(f"{tag} NO refused\r\n".encode())
            elif command == "LOGOUT":
                self.wfile.write(f"* BYE\r\n{tag} OK bye\r\n".encode())
                return
            else:
                self.wfile.write(f"{tag} NO refused\r\n".encode())


def leaked(data: bytes, password: str) -> bool:
    """Whether ``data`` holds the password in clear or in an AUTH PLAIN / LOGIN base64 form."""
    forms = [password.encode(), base64.b64encode(password.encode())]
    forms += [base64.b64encode(f"\0{user}\0{password}".encode()) for user in ("bob", "mallory", "team")]
    return any(form in data for form in forms)


@pytest.fixture(scope="module")
def impostors():
    smtp, smtp_other = SmtpImpostor(), SmtpImpostor()
    smtp.controller.start()
    smtp_other.controller.start()
    imap, imap_other = ImapImpostor(), ImapImpostor()
    yield {"smtp": smtp, "smtp_other": smtp_other, "imap": imap, "imap_other": imap_other}
    for server in (smtp, smtp_other):
        server.controller.stop()
    for server in (imap, imap_other):
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, impostors):
    env = {
        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(impostors["smtp"].port), "SMTP_SECURITY": "starttls",
        "SMTP_USER": "bob", "SMTP_PASSWORD": SMTP_PASSWORD,
        "IMAP_HOST": "127.0.0.1", "IMAP_PORT": str(impostors["imap"].port), "IMAP_SSL": "true",
        "IMAP_USER": "bob", "IMAP_PASSWORD": IMAP_PASSWORD, "WORKFLOW_RETRY_COUNT": "0",
    }
    with Servers(tmp_path_factory.mktemp("credentials")) as servers:
        server = servers.start(env=env)
        yield server
        logs = server.stdout + server.stderr
        assert SMTP_PASSWORD not in logs and IMAP_PASSWORD not in logs


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def mail(server, **config) -> dict:
    """Post a definition with one send_email step configured so, run it; the finished run."""
    name = unique("mail")
    definition = {"name": name, "steps": [{"name": "mail", "type": "send_email", "config": {
        "to": "someone@example.org", "subject": "hello", "body": "hi", "smtp_timeout": 5, **config}}]}
    assert server.post("/api/workflows", json=definition).status_code == 201
    response = server.post(f"/api/workflows/{name}/runs?wait=30", json={})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("config", "field"), [
    ({"smtp_host": "localhost", "smtp_security": "none"}, "smtp_host"),
    ({"smtp_port": "OTHER", "smtp_security": "none"}, "smtp_port"),
    ({"smtp_user": "mallory", "smtp_security": "none"}, "smtp_user"),
    ({"smtp_security": "none"}, "smtp_security"),  # the configured server, but in clear text for all to read
])
def test_send_email_naming_its_own_server_gets_no_configured_password(server, impostors, config, field):
    config = {key: (impostors["smtp_other"].port if value == "OTHER" else value) for key, value in config.items()}
    result = mail(server, **config)
    assert result["status"] == "failed"
    [step] = result["steps"]
    assert step["error"].startswith(f"send_email: {field} ")
    assert "must bring its own smtp_password" in step["error"]
    for impostor in (impostors["smtp"], impostors["smtp_other"]):
        assert impostor.logins == [] and impostor.messages == []
    assert SMTP_PASSWORD not in str(result)


def test_send_email_with_its_own_password_sends_that_one(server, impostors):
    impostor = impostors["smtp_other"]
    result = mail(server, smtp_host="localhost", smtp_port=impostor.port, smtp_security="none",
                  smtp_user="team", smtp_password="their-own-password")
    assert result["status"] == "succeeded", result["error"]
    assert impostor.logins == [(b"team", b"their-own-password")]
    assert len(impostor.messages) == 1
    assert not leaked(b"".join(impostor.messages), SMTP_PASSWORD)
    impostor.logins.clear()  # the other tests count on an impostor that heard nothing
    impostor.messages.clear()


@pytest.mark.parametrize(("trigger", "field"), [
    ({"host": "localhost", "security": "none"}, "host"),
    ({"port": "OTHER", "security": "none"}, "port"),
    ({"user": "mallory", "security": "none"}, "user"),
    ({"security": "none"}, "security"),  # the configured server, but in clear text for all to read
])
def test_an_email_trigger_naming_its_own_server_gets_no_configured_password(server, impostors, trigger, field):
    trigger = {key: (impostors["imap_other"].port if value == "OTHER" else value) for key, value in trigger.items()}
    name = unique("inbox")
    definition = {"name": name, "trigger": {"type": "email", **trigger},
                  "steps": [{"name": "log", "type": "log", "config": {"message": "{{ trigger_data.subject }}"}}]}
    created = server.post("/api/workflows", json=definition)
    if created.status_code != 422:  # stored, but it cannot be polled
        assert created.status_code == 201, created.text
        for action in ("start", "poll"):
            answer = server.post(f"/api/workflows/{name}/{action}")
            assert answer.status_code == 409, answer.text
            message = answer.json()["error"]["message"]
            assert f"email trigger {name!r}: {field} " in message, message
            assert "must bring its own password" in message
    for impostor in (impostors["imap"], impostors["imap_other"]):
        assert impostor.connections == 0, impostor.lines
        assert not leaked(impostor.received(), IMAP_PASSWORD)


def test_an_email_trigger_with_its_own_password_sends_that_one(server, impostors):
    impostor = impostors["imap_other"]
    name = unique("inbox")
    definition = {"name": name, "trigger": {
        "type": "email", "host": "localhost", "port": impostor.port, "security": "none", "user": "mallory",
        "password": "mallorys-own"}, "steps": [{"name": "log", "type": "log", "config": {"message": "x"}}]}
    assert server.post("/api/workflows", json=definition).status_code == 201
    answer = server.post(f"/api/workflows/{name}/poll")
    assert answer.status_code >= 400  # the impostor refuses the login
    assert "mallory" in answer.json()["error"]["message"]
    received = impostor.received()
    assert b"mallorys-own" in received or base64.b64encode(b"\0mallory\0mallorys-own") in received
    assert not leaked(received, IMAP_PASSWORD)
    assert IMAP_PASSWORD not in answer.text
