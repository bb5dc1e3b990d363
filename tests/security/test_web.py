"""Attacks on the web face of a real run.py: DNS rebinding, open exposure, token guessing, stolen cookies, replays.

Each test replays what an attacker did (issue 12, items 4 and 9) and asserts the property that now holds.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

import pytest
import requests

from tests.server import Servers, run_py, server_env

pytestmark = pytest.mark.slow  # replays attacks on real run.py servers

TOKEN = "s3cret-admin-token"
HOOK_SECRET = "s3cret"  # the literal secret of tests.fixtures' custom_header_hook and stripe_hook
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def servers(tmp_path):
    with Servers(tmp_path) as servers:
        yield servers


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """A server with default settings: loopback, no token."""
    with Servers(tmp_path_factory.mktemp("open")) as servers:
        yield servers.start()


def token_server(servers: Servers):
    return servers.start(env={"WORKFLOW_API_TOKEN": TOKEN, "WORKFLOW_SECRET_KEY": "k" * 32})


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]


# -- DNS rebinding ----------------------------------------------------------------------------------------


def test_a_rebound_host_cannot_start_runs_or_read_the_csrf_token(open_server):
    # The attacker's page at rebind.evil.example:PORT, its name now pointing at 127.0.0.1: same Host and Origin.
    origin = f"rebind.evil.example:{port_of(open_server.url)}"
    evil = {"Host": origin, "Origin": f"http://{origin}"}

    run = open_server.post("/api/workflows/echo/runs", json={"inputs": {"text": "pwned"}}, headers=evil)
    page = open_server.get("/", headers=evil)
    form = open_server.get("/workflows/echo/run", headers=evil)
    health = open_server.get("/api/health", headers=evil)

    assert run.status_code == 400 and health.status_code == 400
    assert run.headers["Content-Type"] == "application/json"
    assert run.json()["error"] == {
        "code": "untrusted_host",
        "message": f"host '{origin}' is not one this server answers to; if it is yours, add it to "
                   f"WORKFLOW_TRUSTED_HOSTS",
    }
    for response in (page, form):
        assert response.status_code == 400
        assert "csrf_token" not in response.text and "session" not in response.cookies
    assert [run for run in open_server.all_runs() if run["trigger_data"] == {"text": "pwned"}] == []
    # The names the server is reached by still work.
    assert open_server.get("/api/health").status_code == 200
    assert open_server.get("/api/health", headers={"Host": f"localhost:{port_of(open_server.url)}"}).status_code == 200


@pytest.mark.parametrize("name", ["localhost.rebind.evil.example", "127.0.0.1.nip.io", "LOCALHOST.evil.example",
                                  "evil.example@localhost", "[::1].evil.example"])
def test_host_names_that_merely_contain_a_trusted_name_are_refused(open_server, name):
    response = open_server.get("/api/workflows", headers={"Host": name})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "untrusted_host"


def test_a_rebound_host_cannot_read_the_login_page_of_a_locked_server(servers):
    server = token_server(servers)
    evil = {"Host": f"rebind.evil.example:{port_of(server.url)}"}
    for path in ("/login", "/"):
        response = server.get(path, headers=evil, allow_redirects=False)
        assert response.status_code == 400 and "csrf_token" not in response.text
    assert server.get("/api/runs", headers={**evil, **auth()}).status_code == 400  # a token does not help


# -- exposure ---------------------------------------------------------------------------------------------


def test_run_py_refuses_a_reachable_host_without_a_token(tmp_path):
    env = server_env(tmp_path / "data", {"HOST": "0.0.0.0"})

    result = run_py(env=env, timeout=30)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "run.py: HOST is '0.0.0.0', which other machines can reach, and WORKFLOW_API_TOKEN is not set, so anyone "
        "there could run workflows; set WORKFLOW_API_TOKEN, or WORKFLOW_ALLOW_OPEN=true to serve it open")
    assert "serving" not in result.stdout
    assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_run_py_refuses_a_trusted_host_that_is_a_url(tmp_path):
    env = server_env(tmp_path / "data", {"WORKFLOW_TRUSTED_HOSTS": "localhost,https://pyflow.example.org"})

    result = run_py(env=env, timeout=30)

    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "run.py: setting WORKFLOW_TRUSTED_HOSTS: 'https://pyflow.example.org' is not a host name")


def test_run_py_serves_a_reachable_host_when_allowed_open(servers):
    server = servers.start(env={"HOST": "0.0.0.0", "WORKFLOW_ALLOW_OPEN": "true"})
    assert server.get("/api/health").status_code == 200
    server.stop()


# -- guessing the token -----------------------------------------------------------------------------------


def test_eleven_wrong_bearer_tokens_lock_the_address_out(servers):
    server = token_server(servers)
    answers = [server.get("/api/runs", headers=auth(f"guess-{n}")).status_code for n in range(11)]
    right = server.get("/api/runs", headers=auth())

    assert answers == [401] * 10 + [429]
    # During the lockout even the right token is refused: a guesser cannot learn that a guess was right.
    assert right.status_code == 429
    assert 1 <= int(right.headers["Retry-After"]) <= 60
    assert right.json()["error"]["code"] == "too_many_failed_authentications"
    assert server.get("/api/health").status_code == 200


def test_a_forged_forwarded_for_header_does_not_escape_the_lockout(servers):
    server = token_server(servers)
    answers = [server.get("/api/runs", headers={**auth(f"guess-{n}"), "X-Forwarded-For": f"198.51.100.{n}",
                                                 "X-Real-IP": f"198.51.100.{n}"}).status_code for n in range(12)]
    assert answers == [401] * 10 + [429] * 2


def test_login_brute_force_is_locked_out_with_a_clear_page(servers):
    server = token_server(servers)
    browser = requests.Session()
    csrf = CSRF_FIELD.search(browser.get(server.url + "/login", timeout=10).text).group(1)

    def attempt(token: str) -> requests.Response:
        return browser.post(server.url + "/login", data={"csrf_token": csrf, "token": token},
                            allow_redirects=False, timeout=10)

    answers = [attempt(f"guess-{n}").status_code for n in range(10)]
    locked = attempt(TOKEN)

    assert answers == [401] * 10
    assert locked.status_code == 429 and 1 <= int(locked.headers["Retry-After"]) <= 60
    assert "Too many failed logins from your address" in locked.text
    assert "session" not in browser.cookies or browser.get(server.url + "/api/runs", timeout=10).status_code == 401


# -- stolen session cookies -------------------------------------------------------------------------------


def test_a_session_cookie_copied_before_logout_is_refused_after_it(servers):
    server = token_server(servers)
    browser = requests.Session()
    csrf = CSRF_FIELD.search(browser.get(server.url + "/login", timeout=10).text).group(1)
    login = browser.post(server.url + "/login", data={"csrf_token": csrf, "token": TOKEN}, allow_redirects=False,
                         timeout=10)
    assert login.status_code == 302
    assert "Expires=" in login.headers["Set-Cookie"]
    stolen = browser.cookies["session"]
    assert requests.get(server.url + "/api/runs", cookies={"session": stolen}, timeout=10).status_code == 200

    page = browser.get(server.url + "/", timeout=10)
    browser.post(server.url + "/logout", data={"csrf_token": CSRF_FIELD.search(page.text).group(1)}, timeout=10)

    assert requests.get(server.url + "/api/runs", cookies={"session": stolen}, timeout=10).status_code == 401
    server.restart()  # the logout is kept on disk: a restart does not bring the cookie back
    assert requests.get(server.url + "/api/runs", cookies={"session": stolen}, timeout=10).status_code == 401


# -- replayed webhook deliveries --------------------------------------------------------------------------


def github_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()


def stripe_signature(body: bytes, at: int) -> str:
    return f"t={at},v1=" + hmac.new(HOOK_SECRET.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()


def hook_runs(server, name: str) -> list[dict]:
    return [run for run in server.all_runs() if run["workflow"] == name]


def test_replayed_github_and_stripe_deliveries_are_refused_also_after_a_restart(servers):
    server = servers.start()
    for name in ("custom_header_hook", "stripe_hook"):
        assert server.post(f"/api/workflows/{name}/start").status_code == 200
    body = b'{"action": "refund", "amount": 5000}'
    github = {"X-Signature": github_signature(body), "X-GitHub-Delivery": "d-1", "Content-Type": "application/json"}
    stripe = {"Stripe-Signature": stripe_signature(body, int(time.time())), "Content-Type": "application/json"}
    assert server.post("/api/hooks/custom_header_hook", data=body, headers=github).status_code == 202
    assert server.post("/api/hooks/stripe_hook", data=body, headers=stripe).status_code == 202

    replays = [
        server.post("/api/hooks/custom_header_hook", data=body, headers=github),
        server.post("/api/hooks/custom_header_hook", data=body, headers={**github, "X-GitHub-Delivery": "d-2"}),
        server.post("/api/hooks/stripe_hook", data=body, headers=stripe),
    ]
    server.restart()
    replays.append(server.post("/api/hooks/stripe_hook", data=body, headers=stripe))
    replays.append(server.post("/api/hooks/custom_header_hook", data=body, headers=github))
    stale = server.post("/api/hooks/stripe_hook", data=body,
                        headers={**stripe, "Stripe-Signature": stripe_signature(body, int(time.time()) - 3600)})

    assert [response.status_code for response in replays] == [409] * 5
    assert {response.json()["error"]["code"] for response in replays} == {"replayed_delivery"}
    assert stale.status_code == 401 and "refused as possible replays" in stale.json()["error"]["message"]
    assert len(hook_runs(server, "custom_header_hook")) == 1 and len(hook_runs(server, "stripe_hook")) == 1


def test_an_unsigned_webhook_does_not_take_uploads(servers):
    server = servers.start()
    assert server.post("/api/workflows/hook/start").status_code == 200

    response = server.post("/api/hooks/hook", files={"file": ("pwn.py", b"import os\nos.system('id')\n")})

    assert response.status_code == 415
    assert "set allow_uploads: true" in response.json()["error"]["message"]
    assert hook_runs(server, "hook") == []
    assert not list(server.storage.rglob("pwn.py"))
