"""A real IMAP server on loopback for tests: pymap's in-memory ``dict`` backend in a subprocess.

Usage::

    from tests.imap_server import IMAPServer, pdf_message

    @pytest.fixture
    def imap_server():
        with IMAPServer() as server:
            yield server

    def test_x(imap_server, tmp_path):
        uid = imap_server.append(pdf_message(subject="Hello"))
        settings = imap_server.settings(tmp_path)   # IMAP_* + WORKFLOW_STORAGE_PATH

A subprocess rather than a thread: pymap owns an asyncio loop, thread pools and
signal handlers, and keeping them out of the test process keeps pytest's
``filterwarnings = error`` away from their ResourceWarnings. Start-up takes ~0.3 s.
Every helper opens its own short IMAP connection, so helpers never disturb the
connection of the code under test.
"""

from __future__ import annotations

import imaplib
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Self

import pytest

HOST = "127.0.0.1"
PDF_BYTES = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"

# pymap's console script, with a cheap password hash: its default (500,000 PBKDF2 rounds) costs
# ~0.2 s per LOGIN, which the helpers below and the code under test do a lot.
_PYMAP = """
from pymap.config import IMAPConfig
from pymap.main import main
from pysasl.hashing import BuiltinHash

IMAPConfig._get_hash_context = classmethod(lambda cls, passlib_cfg: BuiltinHash(rounds=1))
main()
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def pdf_message(
    subject: str = "Application",
    sender: str = "alice@example.org",
    text: str = "Please find my application attached.",
    attachments: Iterable[tuple[str, bytes, str]] = (("application.pdf", PDF_BYTES, "application/pdf"),),
    message_id: str | None = None,
    date: str | None = "Thu, 01 Jan 2026 10:00:00 +0100",
) -> EmailMessage:
    """A message with ``attachments`` as (filename, bytes, content type); pass ``()`` for none."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = "bob@example.org"
    message["Subject"] = subject
    if date is not None:
        message["Date"] = date
    message["Message-ID"] = message_id or f"<{time.time_ns()}.{os.getpid()}@test.example>"
    message.set_content(text)
    for filename, data, content_type in attachments:
        maintype, subtype = content_type.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message


class IMAPServer:
    """pymap's in-memory IMAP server on 127.0.0.1, with one user and helpers to fill its mailboxes."""

    def __init__(
        self, user: str = "bob", password: str = "secret", port: int | None = None, tls: tuple[str, str] | None = None
    ):
        self.host = HOST
        self.tls = tls  # (certificate chain, key) PEM files: the server then offers STARTTLS
        self.port = port or free_port()
        self.user = user
        self.password = password
        self._process: subprocess.Popen | None = None
        self._stderr: Any = None

    # -- life cycle -------------------------------------------------------

    def start(self) -> IMAPServer:
        """Start the server (empty mailboxes) and wait until it greets."""
        self._stderr = tempfile.TemporaryFile()
        args = [
            sys.executable,
            "-c",
            _PYMAP,
            "--host",
            self.host,
            "--port",
            str(self.port),
            *(["--cert", self.tls[0], "--key", self.tls[1]] if self.tls else ["--no-tls"]),
            "dict",
            "--demo-user",
            self.user,
            "--demo-password",
            self.password,
        ]
        # FQDN: pymap's greeting otherwise calls socket.getfqdn(), a DNS lookup that can stall.
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=self._stderr, env={**os.environ, "FQDN": "localhost"}
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._stderr.seek(0)
                output = self._stderr.read().decode(errors="replace")
                self.stop()
                raise RuntimeError(f"pymap exited at start-up on port {self.port}:\n{output}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pymap did not listen on {self.host}:{self.port} within 10 s")

    def stop(self) -> None:
        """Stop the server; all mail is gone."""
        if self._process is not None:
            self._process.terminate()  # pymap exits cleanly on SIGTERM
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def restart(self) -> None:
        """Stop and start on the same port: every mailbox is new, with a new UIDVALIDITY."""
        self.stop()
        self.start()

    def __enter__(self) -> IMAPServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def settings(self, storage_path: str | Path, folder: str = "INBOX") -> dict[str, Any]:
        """Runtime settings (app/core/config.py names) pointing at this server."""
        return {
            "IMAP_HOST": self.host,
            "IMAP_PORT": self.port,
            "IMAP_USER": self.user,
            "IMAP_PASSWORD": self.password,
            "IMAP_FOLDER": folder,
            "IMAP_SSL": False,
            "EMAIL_POLL_INTERVAL": 30.0,
            "WORKFLOW_STORAGE_PATH": str(storage_path),
        }

    # -- mailbox helpers --------------------------------------------------

    @contextmanager
    def connect(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in client connection, logged out afterwards."""
        client = imaplib.IMAP4(self.host, self.port, timeout=5)
        try:
            if (self.user + self.password).isascii():
                client.login(self.user, self.password)
            else:  # imaplib's LOGIN is ASCII-only
                client.authenticate("PLAIN", lambda _: f"\0{self.user}\0{self.password}".encode())
            yield client
        finally:
            try:
                client.logout()
            except (imaplib.IMAP4.error, OSError):
                client.shutdown()

    def append(self, message: EmailMessage | bytes, folder: str = "INBOX", seen: bool = False) -> int:
        """APPEND a message; returns its UID."""
        data = message if isinstance(message, bytes) else message.as_bytes()
        with self.connect() as client:
            typ, answer = client.append(_quote(folder), r"(\Seen)" if seen else None, None, data)
        match = re.search(rb"APPENDUID \d+ (\d+)", answer[-1] or b"")
        if typ != "OK" or not match:
            raise RuntimeError(f"APPEND to {folder} failed: {answer!r}")
        return int(match.group(1))

    def create_folder(self, folder: str) -> None:
        """CREATE a mailbox."""
        with self.connect() as client:
            typ, answer = client.create(_quote(folder))
        if typ != "OK":
            raise RuntimeError(f"CREATE {folder} failed: {answer!r}")

    def uidvalidity(self, folder: str = "INBOX") -> int:
        """The folder's current UIDVALIDITY."""
        with self.connect() as client:
            typ, answer = client.status(_quote(folder), "(UIDVALIDITY)")
        return int(re.search(rb"UIDVALIDITY (\d+)", answer[0]).group(1))

    def recreate_folder(self, folder: str) -> int:
        """DELETE and CREATE a (non-INBOX) folder, so it is empty with a new UIDVALIDITY; returns it."""
        old = self.uidvalidity(folder)
        # pymap's UIDVALIDITY has 16 random bits: a same-second repeat is rare, but possible.
        for _ in range(5):
            with self.connect() as client:
                client.delete(_quote(folder))
                client.create(_quote(folder))
            new = self.uidvalidity(folder)
            if new != old:
                return new
        raise RuntimeError(f"UIDVALIDITY of {folder} did not change")

    def flags(self, uid: int, folder: str = "INBOX") -> set[str]:
        """The flags of one message, e.g. ``{"\\\\Seen"}``."""
        with self.connect() as client:
            client.select(_quote(folder), readonly=True)
            typ, answer = client.uid("FETCH", str(uid), "(FLAGS)")
        for item in answer:
            line = item[0] if isinstance(item, tuple) else item
            match = re.search(rb"UID %d\b.*FLAGS \(([^)]*)\)|FLAGS \(([^)]*)\).*UID %d\b" % (uid, uid), line or b"")
            if match:
                return set((match.group(1) or match.group(2)).decode().split())
        raise KeyError(f"no message with UID {uid} in {folder}")


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def imap_server() -> Iterator[IMAPServer]:
    """A fresh server per test (reuse with ``pytest_plugins = ["tests.imap_server"]`` in a conftest)."""
    with IMAPServer() as server:
        yield server


class _Proxy:
    """A TCP proxy on its own loopback port in front of ``target_port``: each client gets ``_serve`` on a thread;
    on exit every socket it made is shut and closed and its threads joined."""

    def __init__(self, target_port: int):
        self._target = target_port
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Self:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _keep(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        while True:
            try:
                client = self._keep(self._listener.accept()[0])
            except OSError:
                return  # closed
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        upstream = self._keep(socket.create_connection((HOST, self._target)))
        self._spawn(self._pump, upstream, client)
        self._pump(client, upstream)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class TLSProxy(_Proxy):
    """Implicit TLS (IMAPS, port 993 style) on its own port in front of a plain server, which pymap lacks."""

    def __init__(self, target_port: int, context: ssl.SSLContext):
        super().__init__(target_port)
        self._context = context

    def _serve(self, client: socket.socket) -> None:
        try:
            secure = self._keep(self._context.wrap_socket(client, server_side=True))
        except (OSError, ssl.SSLError):
            return  # the client did not trust us: its error is what the test looks at
        super()._serve(secure)


class StallingProxy(_Proxy):
    """A plain TCP proxy to a local port that can go silent: ``stall()`` drops what either side sends from
    then on and keeps every connection open, as a host that vanished without closing them (a NAT that
    forgot the flow, a server powered off)."""

    def __init__(self, target_port: int):
        super().__init__(target_port)
        self._stalled = threading.Event()

    def stall(self) -> None:
        """From now on nothing passes, and nothing is closed."""
        self._stalled.set()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self._stalled.is_set():
                    sink.sendall(data)
        except OSError:
            pass


class RefusingProxy(_Proxy):
    """A TCP proxy that answers ``NO`` itself to ``UID FETCH`` of a message's body while ``refuse(uid)`` says so,
    as a server does for a message it cannot read (Dovecot's ``NO [SERVERBUG]``); ``refused`` counts them."""

    def __init__(self, target_port: int, refuse: Callable[[int], bool]):
        super().__init__(target_port)
        self._refuse = refuse
        self.refused: list[int] = []

    def _serve(self, client: socket.socket) -> None:
        upstream = self._keep(socket.create_connection((HOST, self._target)))
        self._spawn(self._pump, upstream, client)
        self._commands(client, upstream)

    def _commands(self, client: socket.socket, upstream: socket.socket) -> None:
        """The client's command lines, passed on except the refused fetches (imaplib waits for each answer)."""
        pending = b""
        try:
            while data := client.recv(65536):
                pending += data
                while b"\r\n" in pending:
                    line, pending = pending.split(b"\r\n", 1)
                    fetch = re.match(rb"(\S+) UID FETCH (\d+) \(BODY\.PEEK\[\]\)$", line)
                    if fetch and self._refuse(int(fetch.group(2))):
                        self.refused.append(int(fetch.group(2)))
                        client.sendall(fetch.group(1) + b" NO [SERVERBUG] Internal error occurred\r\n")
                    else:
                        upstream.sendall(line + b"\r\n")
        except OSError:
            pass
