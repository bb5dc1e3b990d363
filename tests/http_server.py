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
