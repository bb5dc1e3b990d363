"""HttpRequestAction against a real HTTP server on loopback."""

from __future__ import annotations

import base64
import json
import socket
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import pytest

from actions.base import ActionError, RunContext
from actions.http_request import HttpRequestAction
from tests.http_server import base_url, recording, redirecting, serving

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"


class Handler(BaseHTTPRequestHandler):
    """/echo answers what it got as JSON; /text, /bytes, /slow, /status/<code> as their names say."""

    def handle_any(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, content_type, payload = 200, "application/json", b""
        if url.path == "/echo":
            payload = json.dumps({
                "method": self.command, "query": parse_qs(url.query), "body": body.decode(),
                "x_token": self.headers.get("X-Token"), "content_type": self.headers.get("Content-Type"),
            }).encode()
        elif url.path == "/text":
            content_type, payload = "text/plain; charset=utf-8", "grüße".encode()
        elif url.path == "/bytes":
            content_type, payload = "image/png", PNG
        elif url.path == "/slow":
            time.sleep(1)  # the behaviour under test: a server slower than the request's timeout
        elif url.path == "/deep":  # a hostile server: JSON 100,000 levels deep, and NaN
            payload = b"[" * 100000 + b"]" * 100000
        elif url.path == "/nan":
            payload = b'{"n": NaN}'
        elif url.path.startswith("/status/"):
            status, content_type, payload = int(url.path[8:]), "text/plain", b"nope"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    """Base URL of a threaded HTTP server on a free loopback port."""
    with serving(Handler) as httpd:
        yield base_url(httpd)


def run(**config) -> dict:
    action = HttpRequestAction("call", **config)
    action.context = RunContext()
    return action.execute({})


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_reaches_the_server(server, method):
    result = run(url=f"{server}/echo", method=method.lower())
    assert result["status_code"] == 200
    assert result["json"]["method"] == method


def test_head_has_no_body(server):
    result = run(url=f"{server}/echo", method="HEAD")
    assert (result["status_code"], result["text"]) == (200, "")


def test_headers_params_and_json_body_are_sent(server):
    result = run(url=f"{server}/echo?a=1", method="POST", headers={"X-Token": "t0k"}, params={"team": "ops"},
                 json={"n": 1})
    sent = result["json"]
    assert sent["query"] == {"a": ["1"], "team": ["ops"]}
    assert sent["x_token"] == "t0k"
    assert (json.loads(sent["body"]), sent["content_type"]) == ({"n": 1}, "application/json")
    assert result["headers"]["Content-Type"] == "application/json"
    assert isinstance(result["elapsed_ms"], int)


def test_form_data_is_sent(server):
    sent = run(url=f"{server}/echo", method="POST", data={"a": "b c"})["json"]
    assert (sent["body"], sent["content_type"]) == ("a=b+c", "application/x-www-form-urlencoded")


def test_text_body_is_sent_as_utf8(server):
    sent = run(url=f"{server}/echo", method="PUT", data="grüße", headers={"Content-Type": "text/plain"})["json"]
    assert (sent["body"], sent["content_type"]) == ("grüße", "text/plain")


def test_text_response(server):
    result = run(url=f"{server}/text")
    assert (result["text"], result["json"]) == ("grüße", None)
    assert "body_base64" not in result


def test_binary_response_comes_as_base64(server):
    result = run(url=f"{server}/bytes")
    assert result["text"] is None
    assert base64.b64decode(result["body_base64"]) == PNG


def test_timeout_is_a_retryable_error(server):
    # /slow answers after 1 s: a request that waited for it would not fail.
    with pytest.raises(ActionError, match=r"no response from 127\.0\.0\.1:\d+ within 0\.2 s") as caught:
        run(url=f"{server}/slow", timeout="0.2")
    assert caught.value.retryable


@pytest.mark.parametrize(("status", "retryable"), [(404, False), (503, True), (429, True)])
def test_unexpected_status_fails_without_the_query(server, status, retryable):
    with pytest.raises(ActionError) as caught:
        run(url=f"{server}/status/{status}?token=secret")
    message = str(caught.value)
    assert f"GET {server}/status/{status} answered {status}" in message and "nope" in message
    assert "secret" not in message
    assert caught.value.retryable is retryable


def test_expect_status_accepts_listed_codes(server):
    assert run(url=f"{server}/status/404", expect_status=["404", 410])["status_code"] == 404
    with pytest.raises(ActionError, match="answered 200"):
        run(url=f"{server}/echo", expect_status=[201])


def test_refused_connection_names_host_and_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ActionError, match=rf"connection to 127\.0\.0\.1:{port} refused") as caught:
        run(url=f"http://127.0.0.1:{port}/x")
    assert caught.value.retryable


@pytest.mark.parametrize(("config", "message"), [
    ({"url": "ftp://example.org/x"}, "url must be an http"),
    ({"url": "http://127.0.0.1:1/", "method": "GE T"}, "method must be"),
    ({"url": "http://127.0.0.1:1/", "timeout": "soon"}, "timeout must be"),
    ({"url": "http://127.0.0.1:1/", "expect_status": ["ok"]}, "expect_status must"),
    ({"url": "http://127.0.0.1:1/", "expect_status": ["²"]}, "expect_status must"),  # isdigit, not int()
    ({"url": "http://127.0.0.1:1/", "expect_status": "2" * 5000}, "expect_status must"),  # past int()'s 4,300
    ({"url": "http://127.0.0.1:1/", "headers": ["X: y"]}, "headers must be a mapping"),
])
def test_bad_config_is_not_retried(config, message):
    with pytest.raises(ActionError, match=message) as caught:
        run(**config)
    assert not caught.value.retryable


def test_json_and_data_together_are_refused():
    with pytest.raises(ValueError, match="json or data"):
        HttpRequestAction("call", url="http://x", json={}, data="a")


@pytest.mark.parametrize(("method", "idempotent"), [
    ("GET", True), ("put", True), ("DELETE", True), ("POST", False), ("PATCH", False), ("{{ inputs.method }}", False),
])
def test_only_idempotent_methods_are_repeated_after_a_crash(method, idempotent):
    assert HttpRequestAction("call", url="http://127.0.0.1/", method=method).idempotent is idempotent


# -- WORKFLOW_HTTP_DENY: checked after DNS and on every redirect ---------------------
def guarded(deny, **config) -> HttpRequestAction:
    action = HttpRequestAction("call", **config)
    action.context = RunContext(settings={"WORKFLOW_HTTP_DENY": deny})
    return action


def test_a_redirect_to_the_metadata_address_is_refused_without_connecting():
    with serving(redirecting("http://169.254.169.254/latest/meta-data/?x=1")) as httpd:
        with pytest.raises(ActionError) as caught:
            run(url=f"{base_url(httpd)}/start")
    assert str(caught.value) == ("http_request: http://169.254.169.254/latest/meta-data/ resolves to "
                                 "169.254.169.254, which WORKFLOW_HTTP_DENY refuses")
    assert not caught.value.retryable


def test_a_denied_address_receives_nothing_even_through_a_redirect():
    with recording("127.0.0.2") as target, serving(redirecting(f"http://127.0.0.2:{target.port}/x")) as httpd:
        with pytest.raises(ActionError, match="resolves to 127.0.0.2, which WORKFLOW_HTTP_DENY refuses"):
            guarded(("127.0.0.2/32",), url=f"{base_url(httpd)}/start").execute({})
        with pytest.raises(ActionError, match=rf"^http_request: http://127.0.0.2:{target.port}/ resolves"):
            guarded("127.0.0.2/32", url=f"http://127.0.0.2:{target.port}/?token=t").execute({})
    assert target.received == []


def test_an_allowed_address_is_reached_when_the_deny_list_is_empty():
    with recording("127.0.0.2") as target:
        result = guarded((), url=f"http://127.0.0.2:{target.port}/hello").execute({})
    assert result["text"] == "ok" and target.received[0].startswith(b"GET /hello ")


def test_a_host_name_is_checked_after_dns_and_resolved_once(monkeypatch):
    with recording("127.0.0.1") as target:
        with pytest.raises(ActionError, match=r"http://localhost:\d+/ resolves to (127\.0\.0\.1|::1), which"):
            guarded(("127.0.0.0/8", "::1/128"), url=f"http://localhost:{target.port}/").execute({})
        assert target.received == []
        lookups = []
        real = socket.getaddrinfo

        def counting(host, *args, **kwargs):
            lookups.append(host)
            return real(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", counting)
        guarded((), url=f"http://localhost:{target.port}/").execute({})
    # The name is looked up once; the connection goes to the address that was checked (a literal).
    assert lookups.count("localhost") == 1
    assert target.received and target.received[0].startswith(b"GET / ")


@pytest.mark.parametrize(
    ("address", "refused"),
    [("169.254.169.254", True), ("::ffff:169.254.169.254", True), ("fe80::1%eth0", True),
     ("100.100.100.200", True), ("127.0.0.1", False), ("10.0.0.1", False), ("::1", False), ("8.8.8.8", False)],
)
def test_default_deny_list(address, refused):
    from actions.http_policy import denied, networks

    assert denied(address, networks(None)) is refused


def test_a_json_answer_keeps_no_secret_in_its_text(server):
    result = run(url=f"{server}/echo", headers={"X-Token": "tok-abcdef"})
    assert result["json"]["x_token"] == "tok-abcdef"  # templates of later steps still see it
    assert "tok-abcdef" not in result["text"] and json.loads(result["text"])["x_token"] == "***"


def test_through_a_proxy_the_proxys_address_is_checked(monkeypatch):
    with recording("127.0.0.2") as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.2:{proxy.port}")
        with pytest.raises(ActionError, match="resolves to 127.0.0.2, which WORKFLOW_HTTP_DENY refuses"):
            guarded(("127.0.0.2/32",), url="http://example.invalid/").execute({})
        assert proxy.received == []
        guarded((), url="http://example.invalid/").execute({})
    assert proxy.received[0].startswith(b"GET http://example.invalid/ ")


def test_an_ipv4_mapped_ipv6_literal_is_refused_like_its_ipv4_address():
    with pytest.raises(ActionError) as caught:
        run(url="http://[::ffff:169.254.169.254]/latest")
    assert str(caught.value) == ("http_request: http://[::ffff:169.254.169.254]/latest resolves to "
                                 "::ffff:169.254.169.254, which WORKFLOW_HTTP_DENY refuses")


@pytest.mark.parametrize("path", ["/deep", "/nan"])
def test_json_a_server_should_not_send_is_kept_as_text_only(server, path):
    result = HttpRequestAction("get", url=server + path).execute({})
    assert result["status_code"] == 200
    assert result["json"] is None
    assert result["text"].startswith("[[[" if path == "/deep" else '{"n": NaN}')
    json.dumps(result, allow_nan=False)  # storable and answerable as it is
