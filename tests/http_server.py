"""A threaded HTTP server on a free loopback port, for tests that need a real one."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler],
    *,
    daemon_threads: bool = True,
    wrap_socket: Callable[[socket.socket], socket.socket] | None = None,
) -> Iterator[ThreadingHTTPServer]:
    """Serve ``handler`` on 127.0.0.1 until the block ends, then stop and close the server."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # False makes shutdown wait for slow handler threads, so none outlives its test.
    httpd.daemon_threads = daemon_threads
    if wrap_socket is not None:
        httpd.socket = wrap_socket(httpd.socket)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def base_url(httpd: ThreadingHTTPServer, scheme: str = "http") -> str:
    """The server's base URL."""
    return f"{scheme}://127.0.0.1:{httpd.server_address[1]}"


class Recorder:
    """A raw TCP listener that records what each client sends (and answers nothing useful)."""

    def __init__(self, host: str):
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.05)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received.append(conn.recv(65536))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@contextmanager
def recording(host: str = "127.0.0.1") -> Iterator[Recorder]:
    """A Recorder on ``host`` (any loopback address such as 127.0.0.2) until the block ends."""
    recorder = Recorder(host)
    try:
        yield recorder
    finally:
        recorder.close()


def redirecting(location: str) -> type[BaseHTTPRequestHandler]:
    """A handler that answers every GET with 302 to ``location``."""

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Redirect
