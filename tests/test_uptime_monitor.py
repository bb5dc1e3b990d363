"""uptime_monitor end to end: a real HTTP target and a real SMTP server (aiosmtpd), both on loopback."""

from __future__ import annotations

import email
from email import policy
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from app import create_app, start_app
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS
from tests.http_server import base_url, serving
from tests.server import free_port
from tests.waiting import wait_until


class Target(BaseHTTPRequestHandler):
    """Answers every GET with the status its server's ``status`` attribute holds."""

    def do_GET(self) -> None:
        status = self.server.status  # type: ignore[attr-defined]
        body = b"fine" if status == 200 else b"broken"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Collector:
    """An aiosmtpd handler that keeps every message."""

    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted"


@pytest.fixture
def target():
    """A healthy HTTP server on loopback; set ``target.status`` to make it answer something else."""
    with serving(Target) as httpd:
        httpd.status = 200  # type: ignore[attr-defined]
        httpd.url = f"{base_url(httpd)}/status"  # type: ignore[attr-defined]
        yield httpd


@pytest.fixture
def smtp():
    """An SMTP server on loopback: (handler with the received envelopes, port)."""
    handler = Collector()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


@pytest.fixture
def mail_app(storage, smtp):
    """The app with outgoing mail going to the aiosmtpd server."""
    _, port = smtp
    app = start_app(create_app({
        **TEST_SETTINGS,
        "WORKFLOW_STORAGE_PATH": str(storage),
        "WORKFLOW_CLASSES": WORKFLOWS,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": port,
        "SMTP_SECURITY": "none",
        "MAIL_FROM": "monitor@example.org",
        "UPTIME_ALERT_TO": "ops@example.org",
    }))
    yield app
    app.extensions["pyflow"].shutdown(timeout=2)


def check_now(client, url: str) -> dict:
    """One uptime_monitor run against ``url``, waited for."""
    response = client.post("/api/workflows/uptime_monitor/runs?wait=10", json={"inputs": {"url": url}})
    assert response.status_code == 200, response.get_json()
    run = response.get_json()
    assert run["status"] == "succeeded", run
    return run


def steps(run: dict) -> dict[str, dict]:
    return {step["name"]: step for step in run["steps"]}


def received(handler: Collector) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(envelope.original_content, policy=policy.default)
            for envelope in handler.envelopes]


def test_a_healthy_target_sends_no_alert(mail_app, smtp, target):
    handler, _ = smtp

    run = check_now(mail_app.test_client(), target.url)

    check, alert = steps(run)["check"], steps(run)["alert"]
    assert check["status"] == "succeeded"
    assert check["result"]["ok"] is True
    assert check["result"]["status_code"] == 200
    assert check["result"]["error"] is None
    assert isinstance(check["result"]["latency_ms"], int) and check["result"]["latency_ms"] >= 0
    assert alert["status"] == "skipped"
    assert alert["result"] is None
    assert handler.envelopes == []


def test_a_failing_target_is_mailed_with_url_status_and_latency(mail_app, smtp, target):
    handler, _ = smtp
    target.status = 500

    run = check_now(mail_app.test_client(), target.url)

    check, alert = steps(run)["check"]["result"], steps(run)["alert"]
    assert check["ok"] is False
    assert check["status_code"] == 500
    assert check["error"] == "expected status 200, got 500"
    assert alert["status"] == "succeeded"
    assert alert["result"]["delivery"] == "smtp"
    assert alert["result"]["recipient"] == "ops@example.org"
    [message] = received(handler)
    assert message["To"] == "ops@example.org"
    assert message["From"] == "monitor@example.org"
    assert target.url in message["Subject"]
    body = message.get_content()
    assert target.url in body
    assert "Status:    500" in body
    assert f"Latency:   {check['latency_ms']} ms" in body
    assert "expected status 200, got 500" in body
    assert run["id"] in body


def test_a_target_that_is_down_is_an_alert_not_a_crash(mail_app, smtp):
    handler, _ = smtp
    port = free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}/status"

    run = check_now(mail_app.test_client(), url)

    check = steps(run)["check"]
    assert check["status"] == "succeeded"
    assert check["attempts"] == 1
    assert check["result"]["ok"] is False
    assert check["result"]["status_code"] is None
    assert check["result"]["error"] == f"connection to 127.0.0.1:{port} refused"
    assert steps(run)["alert"]["result"]["delivery"] == "smtp"
    [message] = received(handler)
    body = message.get_content()
    assert url in body
    assert f"127.0.0.1:{port} refused" in body
    assert "Status:    no answer" in body


def test_without_smtp_host_the_alert_lands_in_the_outbox(client, storage, target):
    target.status = 503

    run = check_now(client, target.url)

    alert = steps(run)["alert"]["result"]
    assert alert["delivery"] == "outbox"
    path = Path(alert["path"])
    assert path.parent == storage / "outbox"
    assert [item.name for item in (storage / "outbox").iterdir()] == [path.name]
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert message["To"] == "pyflow@localhost"
    body = message.get_content()
    assert target.url in body
    assert "Status:    503" in body


def test_bad_inputs_are_refused_before_a_run_starts(client):
    response = client.post("/api/workflows/uptime_monitor/runs", json={"inputs": {"url": "ftp://example.org"}})

    assert response.status_code == 422
    assert "url" in response.get_json()["error"]["message"]
    assert client.get("/api/runs?workflow=uptime_monitor").get_json()["runs"] == []


def test_started_it_checks_uptime_url_every_uptime_interval(storage, target):
    app = start_app(create_app({
        **TEST_SETTINGS,
        "WORKFLOW_STORAGE_PATH": str(storage),
        "UPTIME_INTERVAL": 0.5,
        "UPTIME_URL": target.url,
    }))
    client = app.test_client()
    try:
        summary = client.post("/api/workflows/uptime_monitor/start").get_json()
        assert summary["status"] == "running"

        def listed() -> list[dict]:
            return client.get("/api/runs?workflow=uptime_monitor").get_json()["runs"]

        wait_until(lambda: sum(run["status"] == "succeeded" for run in listed()) >= 3, timeout=10,
                   message="three checks")
        assert client.post("/api/workflows/uptime_monitor/stop").get_json()["status"] == "stopped"
        runtime = app.extensions["pyflow"]
        # A run that a poll started just before the stop still finishes.
        wait_until(lambda: "uptime_monitor" not in runtime.scheduler.polling()
                   and not any(run["status"] in ("queued", "running") for run in listed()),
                   timeout=10, message="the last check finished")
        runs = listed()
        assert len(runs) >= 3
        # No longer scheduled: no run can start after the stop.
        assert "uptime_monitor" not in runtime.scheduler.scheduled()
        assert len(listed()) == len(runs), "a run started after the stop"
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)

    for run in runs:
        assert run["status"] == "succeeded"
        assert run["source"] == "schedule"
        assert steps(run)["check"]["result"]["url"] == target.url
        assert steps(run)["check"]["result"]["ok"] is True
        assert steps(run)["alert"]["status"] == "skipped"
        assert run["trigger_data"]["scheduled_time"].endswith("Z")
    # One check per interval: fire times 0.5 s apart, none twice.
    fired = sorted(run["trigger_data"]["scheduled_time"] for run in runs)
    assert len(fired) == len(set(fired))
