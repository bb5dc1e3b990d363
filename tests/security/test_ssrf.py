"""Attack replays (issue 12, item 8): WORKFLOW_HTTP_DENY holds after DNS resolution and on every redirect.

Against a real ``python run.py``: a posted definition (or the uptime monitor's ``url``
input) points at a host that redirects to the cloud metadata address, or at a name
that resolves to a denied address. The step fails naming the URL, the address and
the setting; the denied address receives nothing.
"""

from __future__ import annotations

import pytest

from tests.http_server import base_url, recording, redirecting, serving
from tests.server import Server, Servers

pytestmark = pytest.mark.slow  # replays attacks on a real run.py server

WAIT = {"wait": "30"}
DENY_LOCAL = "169.254.0.0/16,fe80::/10,127.0.0.2/32"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Servers(tmp_path_factory.mktemp("ssrf")) as servers:
        yield servers.start(env={"WORKFLOW_HTTP_DENY": DENY_LOCAL, "WORKFLOW_RETRY_COUNT": "0"})


def fetch(server: Server, name: str, url: str, step_type: str = "http_request") -> dict:
    """Create a one-step workflow fetching ``url`` and run it to its end."""
    answer = server.post("/api/workflows", json={"name": name, "steps": [
        {"name": "fetch", "type": step_type, "config": {"url": url}}]})
    assert answer.status_code == 201, answer.text
    answer = server.post(f"/api/workflows/{name}/runs", params=WAIT, json={})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_redirect_to_the_metadata_address_is_refused(server):
    with serving(redirecting("http://169.254.169.254/latest/meta-data/iam/security-credentials/")) as httpd:
        run = fetch(server, "metadata_redirect", f"{base_url(httpd)}/innocent")
    assert run["status"] == "failed"
    assert run["steps"][0]["error"] == ("http_request: http://169.254.169.254/latest/meta-data/iam/security-credentials/"
                                        " resolves to 169.254.169.254, which WORKFLOW_HTTP_DENY refuses")
    assert run["steps"][0]["attempts"] == 1  # a refusal is not retried


@pytest.mark.parametrize("step_type", ["http_request", "http_check"])
def test_a_redirect_to_a_denied_address_sends_it_nothing(server, step_type):
    with recording("127.0.0.2") as target, serving(redirecting(f"http://127.0.0.2:{target.port}/admin")) as httpd:
        run = fetch(server, f"redirect_{step_type}", f"{base_url(httpd)}/start", step_type)
    assert run["status"] == "failed"
    assert run["steps"][0]["error"] == (f"{step_type}: http://127.0.0.2:{target.port}/admin resolves to 127.0.0.2, "
                                        "which WORKFLOW_HTTP_DENY refuses")
    assert target.received == []


def test_the_uptime_monitor_cannot_probe_a_denied_address(server):
    with recording("127.0.0.2") as target:
        answer = server.post("/api/workflows/uptime_monitor/runs", params=WAIT,
                             json={"inputs": {"url": f"http://127.0.0.2:{target.port}/"}})
    assert answer.status_code == 200, answer.text
    check = answer.json()["steps"][0]
    assert check["status"] == "failed"
    assert check["error"].endswith("resolves to 127.0.0.2, which WORKFLOW_HTTP_DENY refuses")
    assert target.received == []


def test_loopback_stays_allowed_by_default(server):
    """PyFlow's own uptime monitor checks 127.0.0.1: the default list leaves loopback alone."""
    with recording("127.0.0.1") as target:
        run = fetch(server, "loopback", f"http://127.0.0.1:{target.port}/health")
    assert run["status"] == "succeeded", run
    assert target.received[0].startswith(b"GET /health ")


def test_a_name_resolving_to_a_denied_address_is_refused_after_dns(tmp_path):
    """``localhost`` is a name: the check applies to the address it resolves to."""
    env = {"WORKFLOW_HTTP_DENY": "127.0.0.0/8,::1/128", "WORKFLOW_RETRY_COUNT": "0"}
    with Servers(tmp_path) as servers, recording("127.0.0.1") as target:
        server = servers.start(env=env)
        run = fetch(server, "by_name", f"http://localhost:{target.port}/private")
        assert run["status"] == "failed"
        error = run["steps"][0]["error"]
        assert error.startswith(f"http_request: http://localhost:{target.port}/private resolves to ")
        assert error.endswith(", which WORKFLOW_HTTP_DENY refuses")
        assert target.received == []
