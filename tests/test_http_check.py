"""HttpCheckAction against a real HTTP server on loopback."""

from __future__ import annotations

import socket
import ssl
import time
from http.server import BaseHTTPRequestHandler

import pytest
import trustme

from actions.base import ActionError, RunContext
from actions.http_check import HttpCheckAction
from tests.http_server import base_url, recording, redirecting, serving


class Handler(BaseHTTPRequestHandler):
    """/ok answers 200, /down 503, /slow 200 after 300 ms."""

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(0.3)  # the behaviour under test: a server slower than the check's latency limit
        status = 503 if self.path == "/down" else 200
        body = b"fine" if status == 200 else b"unavailable"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server():
    """Base URL of a threaded HTTP server on a free loopback port."""
    with serving(Handler, daemon_threads=False) as httpd:
        yield base_url(httpd)


@pytest.fixture
def https_server():
    """Base URL of an HTTPS server whose certificate no system CA trusts."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    with serving(Handler, wrap_socket=lambda sock: context.wrap_socket(sock, server_side=True)) as httpd:
        yield base_url(httpd, "https")


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    # requests honours proxy variables; the probe must go straight to loopback.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def check(tmp_path, **config) -> dict:
    action = HttpCheckAction("check", **config)
    action.context = RunContext(settings={}, storage_path=str(tmp_path))
    return action.execute({})


def test_ok(server, tmp_path):
    result = check(tmp_path, url=f"{server}/ok")
    assert result["ok"] is True
    assert result["status_code"] == 200
    assert result["error"] is None
    assert result["url"] == f"{server}/ok"
    assert isinstance(result["latency_ms"], int) and result["latency_ms"] >= 0  # how fast: bench/, not here


def test_unexpected_status(server, tmp_path):
    result = check(tmp_path, url=f"{server}/down")
    assert result["ok"] is False
    assert result["status_code"] == 503
    assert result["error"] == "expected status 200, got 503"


def test_expected_non_200_status(server, tmp_path):
    result = check(tmp_path, url=f"{server}/down", expected_status=503)
    assert result["ok"] is True


def test_slow_response(server, tmp_path):
    result = check(tmp_path, url=f"{server}/slow", max_latency_ms=100)
    assert result["ok"] is False
    assert result["status_code"] == 200
    assert result["latency_ms"] >= 300
    assert result["error"] == f"latency {result['latency_ms']} ms over the 100 ms limit"


def test_read_timeout_is_a_result(server, tmp_path):
    result = check(tmp_path, url=f"{server}/slow", request_timeout=0.1)
    assert result["ok"] is False
    assert result["status_code"] is None
    assert result["error"].startswith(f"no response from 127.0.0.1:{server.rsplit(':', 1)[1]} within 0.1 s")


def test_connection_refused_is_a_result(tmp_path):
    # A port that was just free: bound, then closed, so nothing listens on it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = check(tmp_path, url=f"http://127.0.0.1:{port}/")
    assert result == {
        "url": f"http://127.0.0.1:{port}/",
        "status_code": None,
        "latency_ms": result["latency_ms"],
        "ok": False,
        "error": f"connection to 127.0.0.1:{port} refused",
    }


def test_untrusted_certificate_is_a_result(https_server, tmp_path):
    result = check(tmp_path, url=f"{https_server}/ok")
    assert result["ok"] is False
    assert result["status_code"] is None
    port = https_server.rsplit(":", 1)[1]
    assert result["error"] == f"TLS certificate of 127.0.0.1:{port} not trusted: unable to get local issuer certificate"


def test_head_method(server, tmp_path):
    # The handler has no do_HEAD, so http.server answers 501.
    result = check(tmp_path, url=f"{server}/ok", method="head")
    assert (result["status_code"], result["error"]) == (501, "expected status 200, got 501")


def test_rendered_strings_are_coerced(server, tmp_path):
    result = check(
        tmp_path, url=f" {server}/down ", expected_status="503", max_latency_ms="1500.5", request_timeout="5"
    )
    assert result["ok"] is True
    assert result["status_code"] == 503


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("expected_status", "two hundred"),
        ("expected_status", "99"),
        ("max_latency_ms", "fast"),
        ("max_latency_ms", "-1"),
        ("request_timeout", "0"),
    ],
)
def test_bad_number_after_rendering(tmp_path, field, value):
    action = HttpCheckAction("check", url="http://127.0.0.1:9/", **{field: "{{ x }}"})
    # What the engine does on its per-run copy: the template rendered to text.
    setattr(action, field, value)
    action.context = RunContext(storage_path=str(tmp_path))
    with pytest.raises(ActionError, match=field) as caught:
        action.execute({})
    assert caught.value.retryable is False


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:8080", "http://", "file:///etc/passwd"])
def test_bad_url(tmp_path, url):
    with pytest.raises(ValueError, match="http:// or https://"):
        HttpCheckAction("check", url=url)
    action = HttpCheckAction("check", url="{{ trigger_data.url }}")
    action.url = url
    action.context = RunContext(storage_path=str(tmp_path))
    with pytest.raises(ActionError, match="http:// or https://") as caught:
        action.execute({})
    assert caught.value.retryable is False


@pytest.mark.parametrize("method", ["G ET", "GET\r\nX: 1", "ge-t"])
def test_bad_method(method):
    with pytest.raises(ValueError, match="method must be an HTTP method"):
        HttpCheckAction("check", url="http://127.0.0.1/", method=method)


def test_bad_number_in_constructor():
    with pytest.raises(ValueError, match="max_latency_ms must be a number > 0, got 'soon'"):
        HttpCheckAction("check", url="http://127.0.0.1/", max_latency_ms="soon")


def test_step_options_pass_through():
    action = HttpCheckAction("check", url="http://127.0.0.1/", step_timeout=5, retries=0)
    assert (action.step_timeout, action.retries, action.type) == (5, 0, "http_check")


def test_a_redirect_to_a_denied_address_fails_the_check_without_connecting():
    with recording("127.0.0.2") as target, serving(redirecting(f"http://127.0.0.2:{target.port}/")) as httpd:
        action = HttpCheckAction("check", url=f"{base_url(httpd)}/health")
        action.context = RunContext(settings={"WORKFLOW_HTTP_DENY": ("169.254.0.0/16", "127.0.0.2/32")})
        with pytest.raises(ActionError) as caught:
            action.execute({})
    assert str(caught.value) == (f"http_check: http://127.0.0.2:{target.port}/ resolves to 127.0.0.2, "
                                 "which WORKFLOW_HTTP_DENY refuses")
    assert not caught.value.retryable and target.received == []


def test_the_metadata_address_is_refused_by_default():
    action = HttpCheckAction("check", url="http://169.254.169.254/")
    action.context = RunContext()
    with pytest.raises(ActionError, match="169.254.169.254, which WORKFLOW_HTTP_DENY refuses"):
        action.execute({})
