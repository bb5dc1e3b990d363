"""Access control: trusted Host names, the exposure check, the failed-authentication lockout and login sessions."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import pytest

import app.api.auth
from app import create_app, start_app
from app.api.auth import exposure_problem
from app.api.hosts import host_is_trusted, is_loopback, trusted_hosts
from app.api.sessions import FILENAME, LoginRegistry
from app.api.throttle import FailureLimiter, client_key
from app.errors import ConfigError
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS

TOKEN = "t0ken-for-tests"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def locked(storage):
    """An app with WORKFLOW_API_TOKEN and a fixed secret key."""
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS,
                      "WORKFLOW_API_TOKEN": TOKEN, "WORKFLOW_SECRET_KEY": "k" * 32}))
    yield app
    app.extensions["pyflow"].shutdown(timeout=2)


def log_in(client, token: str = TOKEN, **kwargs):
    page = client.get("/login", **kwargs)
    csrf = CSRF_FIELD.search(page.text).group(1)
    return client.post("/login", data={"csrf_token": csrf, "token": token}, **kwargs)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# -- trusted hosts -------------------------------------------------------------------------------------


def test_the_default_trusted_hosts_are_the_loopback_names_and_host():
    assert trusted_hosts({"HOST": "127.0.0.1", "WORKFLOW_TRUSTED_HOSTS": ()}) == ("localhost", "127.0.0.1", "::1")
    assert trusted_hosts({"HOST": "pyflow.internal"})[-1] == "pyflow.internal"
    assert trusted_hosts({"HOST": "0.0.0.0", "WORKFLOW_TRUSTED_HOSTS": ("Flow.Example.org:443", ".corp.example",
                                                                        "[::1]")}) == (
        "flow.example.org", ".corp.example", "::1")


@pytest.mark.parametrize("entry", ["http://pyflow.example.org", "*", "pyflow.example.org/api", "a b", "..", "."])
def test_a_trusted_host_that_is_not_a_host_name_stops_start_up_naming_it(entry):
    with pytest.raises(ConfigError, match=rf"setting WORKFLOW_TRUSTED_HOSTS: {re.escape(repr(entry))} is not a host"):
        trusted_hosts({"HOST": "127.0.0.1", "WORKFLOW_TRUSTED_HOSTS": ("localhost", entry)})


@pytest.mark.parametrize("header, trusted", [
    ("localhost:5001", True), ("LOCALHOST", True), ("127.0.0.1:80", True), ("[::1]:5001", True), ("[::1]", True),
    ("localhost.", True), ("a.corp.example", True), ("corp.example:8443", True), ("x.a.corp.example", True),
    ("rebind.evil.example:5001", False), ("127.0.0.2", False), ("evilcorp.example", False), ("", False),
    ("localhost:99999", False), ("local host", False), ("localhost@evil.example", False),
    ("evil.example@localhost", False), ("localhost:5001/x", False), ("localhost:0", False),
])
def test_host_headers_are_matched_without_port_case_or_brackets(header, trusted):
    assert host_is_trusted(header, ("localhost", "127.0.0.1", "::1", ".corp.example")) is trusted


def test_an_untrusted_host_is_400_json_under_api_and_plain_text_elsewhere(client):
    evil = {"Host": "rebind.evil.example:5001", "Origin": "http://rebind.evil.example:5001"}

    for response in (client.get("/api/health", headers=evil),
                     client.post("/api/workflows/echo/runs", json={"inputs": {"text": "x"}}, headers=evil)):
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["code"] == "untrusted_host"
        assert error["message"] == ("host 'rebind.evil.example:5001' is not one this server answers to; "
                                    "if it is yours, add it to WORKFLOW_TRUSTED_HOSTS")
    page = client.get("/", headers=evil)
    assert page.status_code == 400 and page.mimetype == "text/plain"
    assert "WORKFLOW_TRUSTED_HOSTS" in page.text and "csrf" not in page.text
    assert "Set-Cookie" not in page.headers
    assert client.get("/api/runs").get_json()["runs"] == []
    assert client.get("/api/health", headers={"Host": "127.0.0.1:5001"}).status_code == 200


def test_trusted_hosts_can_be_configured_with_a_wildcard(storage):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                      "WORKFLOW_TRUSTED_HOSTS": ("pyflow.example.org", ".corp.example")}))
    try:
        client = app.test_client()
        assert client.get("/api/health", headers={"Host": "pyflow.example.org"}).status_code == 200
        assert client.get("/api/health", headers={"Host": "ci.corp.example:8443"}).status_code == 200
        # The list replaces the default: loopback names are no longer answered.
        assert client.get("/api/health", headers={"Host": "localhost"}).status_code == 400
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


# -- exposure check -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.53"])
def test_a_loopback_host_needs_no_token(host):
    assert is_loopback(host)
    assert exposure_problem({"HOST": host, "WORKFLOW_API_TOKEN": "", "WORKFLOW_ALLOW_OPEN": False}) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "pyflow.example.org"])
def test_a_reachable_host_needs_a_token_or_allow_open(host):
    problem = exposure_problem({"HOST": host, "WORKFLOW_API_TOKEN": "", "WORKFLOW_ALLOW_OPEN": False})
    assert problem == (f"HOST is {host!r}, which other machines can reach, and WORKFLOW_API_TOKEN is not set, so "
                       f"anyone there could run workflows; set WORKFLOW_API_TOKEN, or WORKFLOW_ALLOW_OPEN=true "
                       f"to serve it open")
    assert exposure_problem({"HOST": host, "WORKFLOW_API_TOKEN": "t", "WORKFLOW_ALLOW_OPEN": False}) is None
    assert exposure_problem({"HOST": host, "WORKFLOW_API_TOKEN": "", "WORKFLOW_ALLOW_OPEN": True}) is None


# -- failed authentications -----------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limiter_locks_out_after_the_limit_until_the_window_passes():
    clock = Clock()
    limiter = FailureLimiter(limit=3, window=60, clock=clock)
    for _ in range(2):
        limiter.failed("10.0.0.1")
        clock.now += 10
    assert limiter.retry_after("10.0.0.1") is None
    limiter.failed("10.0.0.1")  # three failures at 1000, 1010, 1020
    assert limiter.retry_after("10.0.0.1") == 40
    assert limiter.retry_after("10.0.0.2") is None
    clock.now = 1059.5
    assert limiter.retry_after("10.0.0.1") == 1
    clock.now = 1060
    assert limiter.retry_after("10.0.0.1") is None  # the first failure left the window: one more try


def test_the_limiter_is_bounded_and_counts_ipv6_per_64():
    limiter = FailureLimiter(limit=2, window=60, max_addresses=100, clock=Clock())
    for n in range(1000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 100
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    limiter.failed("2001:db8::1")
    limiter.failed("2001:db8::2")
    assert limiter.retry_after("2001:db8::99") is not None


def test_eleven_wrong_bearer_tokens_lock_the_address_out_even_for_the_right_token(locked):
    client = locked.test_client()
    for _ in range(10):
        assert client.get("/api/runs", headers=bearer("guess")).status_code == 401

    refused = client.get("/api/runs", headers=bearer("guess"))
    right = client.get("/api/runs", headers=bearer(TOKEN))

    for response in (refused, right):
        assert response.status_code == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        error = response.get_json()["error"]
        assert error["code"] == "too_many_failed_authentications"
        assert error["message"].startswith("too many failed authentications from 127.0.0.1: more than 9 within 60 s")
    other = locked.test_client()
    assert other.get("/api/runs", headers=bearer(TOKEN), environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 200
    assert client.get("/api/health").status_code == 200  # liveness is never locked


def test_a_session_logged_in_before_the_lockout_keeps_working(locked):
    client = locked.test_client()
    log_in(client)
    for _ in range(11):
        client.get("/api/runs", headers=bearer("guess"))
    assert client.get("/api/runs", headers=bearer(TOKEN)).status_code == 429
    assert client.get("/api/runs").status_code == 200  # the session presents no token to guess with
    assert client.get("/").status_code == 200


def test_the_lockout_ends_when_the_minute_has_passed(locked, monkeypatch):
    client = locked.test_client()
    clock = Clock()
    monkeypatch.setattr(locked.extensions[app.api.auth.LIMITER_KEY], "_clock", clock)
    for _ in range(10):
        client.get("/api/runs", headers=bearer("guess"))
    assert client.get("/api/runs", headers=bearer(TOKEN)).status_code == 429
    clock.now += 60
    assert client.get("/api/runs", headers=bearer(TOKEN)).status_code == 200


def test_login_guessing_gets_a_clear_429_page(locked):
    client = locked.test_client()
    for _ in range(10):
        assert log_in(client, "guess").status_code == 401

    response = log_in(client, TOKEN)

    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "Too many failed logins from your address. Try again in" in response.text
    assert 'type="password"' in response.text  # still the login page
    assert client.get("/").status_code == 302  # not logged in
    # The two ways in share one count: bearer guesses are refused too.
    assert client.get("/api/runs", headers=bearer(TOKEN)).status_code == 429


# -- sessions -------------------------------------------------------------------------------------------


def test_a_session_cookie_copied_before_logout_is_refused_after_it(locked):
    client = locked.test_client()
    assert log_in(client).status_code == 302
    cookie = client.get_cookie("session").value
    thief = locked.test_client()
    thief.set_cookie("session", cookie)
    assert thief.get("/api/runs").status_code == 200

    page = client.get("/")
    client.post("/logout", data={"csrf_token": CSRF_FIELD.search(page.text).group(1)})

    assert thief.get("/api/runs").status_code == 401
    assert thief.get("/").status_code == 302


def test_a_logout_holds_across_a_restart_and_a_login_survives_it(storage):
    settings = {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_API_TOKEN": TOKEN,
                "WORKFLOW_SECRET_KEY": "s" * 32}
    first = start_app(create_app(settings))
    try:
        stays, leaves = first.test_client(), first.test_client()
        log_in(stays), log_in(leaves)
        kept, ended = stays.get_cookie("session").value, leaves.get_cookie("session").value
        leaves.post("/logout", data={"csrf_token": CSRF_FIELD.search(leaves.get("/").text).group(1)})
    finally:
        first.extensions["pyflow"].shutdown(timeout=2)
    assert (storage / FILENAME).exists() and TOKEN not in (storage / FILENAME).read_text()
    second = start_app(create_app(settings))
    try:
        client = second.test_client()
        client.set_cookie("session", kept)
        assert client.get("/api/runs").status_code == 200
        client.set_cookie("session", ended)
        assert client.get("/api/runs").status_code == 401
    finally:
        second.extensions["pyflow"].shutdown(timeout=2)


def test_the_session_cookie_has_a_finite_lifetime_and_is_secure_over_tls(locked):
    plain = locked.test_client()
    cookie = log_in(plain).headers["Set-Cookie"]
    assert "Expires=" in cookie and "Secure" not in cookie

    tls = locked.test_client()
    cookie = log_in(tls, base_url="https://localhost").headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_login_older_than_the_session_hours_is_refused_on_the_server(locked, monkeypatch):
    client = locked.test_client()
    log_in(client)
    assert client.get("/api/runs").status_code == 200
    later = time.time() + 12 * 3600 + 1
    monkeypatch.setattr(app.api.auth, "time", SimpleNamespace(time=lambda: later))
    assert client.get("/api/runs").status_code == 401


def test_the_login_registry_expires_closes_and_stays_bounded(tmp_path, monkeypatch):
    clock = Clock()
    registry = LoginRegistry(tmp_path / FILENAME, lifetime=60, clock=clock)
    first = registry.open()
    assert registry.is_live(first)
    assert first not in (tmp_path / FILENAME).read_text()  # only digests are written
    clock.now += 61
    assert not registry.is_live(first)
    second = registry.open()
    registry.close(second)
    assert not registry.is_live(second) and not registry.is_live(None) and not registry.is_live("")
    assert not LoginRegistry(tmp_path / FILENAME, lifetime=60, clock=clock).is_live(second)
    monkeypatch.setattr("app.api.sessions.MAX_LOGINS", 3)
    ids = [registry.open() for _ in range(5)]
    assert len(registry) == 3 and registry.is_live(ids[-1])


def test_serving_on_all_interfaces_without_trusted_hosts_warns_naming_the_setting(storage, caplog):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "HOST": "0.0.0.0",
                      "WORKFLOW_API_TOKEN": TOKEN}))
    try:
        assert "HOST is 0.0.0.0 but WORKFLOW_TRUSTED_HOSTS is not set" in caplog.text
        assert app.test_client().get("/api/health", headers={"Host": "myserver.lan:5001"}).status_code == 400
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)
