"""An OpenAI-compatible chat completions server on loopback that records what it receives and answers from a script."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.http_server import base_url, serving

# One scripted answer: (status, content type, body bytes), or a callable of the request giving one.
Answer = tuple[int, str, bytes]


def completion(content: str, model: str = "test-model", usage: dict | None = None) -> Answer:
    """A 200 chat completion whose message is ``content``."""
    body = {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage or {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
    return 200, "application/json", json.dumps(body).encode()


def error(status: int, message: str) -> Answer:
    """An OpenAI-style error answer."""
    return status, "application/json", json.dumps({"error": {"message": message, "type": "server_error"}}).encode()


def html(status: int, title: str) -> Answer:
    """An HTML page, as a proxy in front of a model server answers when the model server is down."""
    page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return status, "text/html", page.encode()


class LlmServer:
    """Answers POST /v1/chat/completions with ``answers`` in order (the last one repeats); records each request.

    ``hang`` answers nothing until the server stops: a model slower than any timeout.
    """

    def __init__(self, *answers: Answer | Callable[[dict], Answer], hang: bool = False):
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []
        self.hang = hang
        self._released = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = {"path": self.path, "headers": dict(self.headers), "json": json.loads(raw or b"null")}
                with server._lock:
                    server.requests.append(request)
                    index = min(len(server.requests), len(server.answers)) - 1
                if server.hang:
                    server._released.wait(30)
                    return
                answer = server.answers[index]
                status, content_type, body = answer(request) if callable(answer) else answer
                if self.path != "/v1/chat/completions":
                    status, content_type, body = error(404, f"no route {self.path}")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._handler = Handler

    @contextmanager
    def running(self) -> Iterator[LlmServer]:
        """Serve until the block ends; ``url`` is the base URL with /v1, as clients configure it."""
        with serving(self._handler) as httpd:
            self.host = f"127.0.0.1:{httpd.server_address[1]}"
            self.url = base_url(httpd) + "/v1"
            try:
                yield self
            finally:
                self._released.set()
