"""demo_1.py against a real run.py: on a bare machine, without a server, and watching a real mailbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import wait_until
from tests.imap_server import IMAPServer, pdf_message
from tests.server import REPO, Servers, free_port

pytestmark = pytest.mark.slow  # runs the demo against real run.py servers


@pytest.fixture
def servers(tmp_path):
    with Servers(tmp_path) as servers:
        yield servers


def demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run demo_1.py to the end."""
    return subprocess.run(
        [sys.executable, "demo_1.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_demo_uploads_both_samples_and_shows_results_and_the_outbox(servers):
    server = servers.start()

    result = demo({**server.env, "WORKFLOW_API_URL": server.url})

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "IMAP_HOST is not set" in out  # a bare machine: said, not fatal
    assert "Full Name:      Jane Doe" in out and "Policy Type:    car" in out
    assert "validation: success" in out and "validation: failure" in out
    assert "- Date of Birth: must be a date written as YYYY-MM-DD (you wrote 15/03/1985)" in out
    assert '"Application received" to applicant@example.org' in out
    assert '"Application incomplete" to applicant@example.org' in out
    outbox = sorted((server.storage / "outbox").glob("*.eml"))
    assert len(outbox) == 2
    for path in outbox:
        assert f"written to the outbox (no SMTP_HOST set): {path}" in out


def test_demo_explains_how_to_start_the_server_when_none_answers():
    url = f"http://127.0.0.1:{free_port()}"

    result = demo({**os.environ, "WORKFLOW_API_URL": url})

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"PyFlow is not running at {url} — start it with: python run.py\n"


def test_demo_watch_starts_the_workflow_and_ctrl_c_stops_it(servers, tmp_path):
    with IMAPServer() as imap:
        settings = imap.settings(tmp_path)
        env = {key: str(settings[key]) for key in ("IMAP_HOST", "IMAP_PORT", "IMAP_USER", "IMAP_PASSWORD")}
        server = servers.start(env={**env, "IMAP_SSL": "false", "EMAIL_POLL_INTERVAL": "0.5"})
        output = tmp_path / "demo.txt"
        with output.open("w", encoding="utf-8") as handle:
            process = subprocess.Popen(
                [sys.executable, "demo_1.py", "--watch"], cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                env={**server.env, "WORKFLOW_API_URL": server.url, "PYTHONUNBUFFERED": "1"},
            )
        try:
            read = Path(output).read_text
            wait_until(lambda: "Stop with Ctrl-C" in read(), timeout=30, message="the demo watching")
            assert server.get("/api/workflows/insurance_application").json()["status"] == "running"

            imap.append(pdf_message(sender="carol@example.org", attachments=[
                ("form.pdf", (REPO / "samples" / "application_company_a.pdf").read_bytes(), "application/pdf")]))
            wait_until(lambda: "from carol@example.org: succeeded, reply: Application received" in read(),
                       timeout=20, message="the mailed application in the demo's output")

            process.send_signal(signal.SIGINT)
            assert process.wait(15) == 0, read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "Stopped insurance_application" in read() and "status stopped" in read()
    assert server.get("/api/workflows/insurance_application").json()["status"] == "stopped"


def test_demo_starts_the_mailbox_workflow_when_imap_is_configured_and_says_how_to_stop_it(servers, tmp_path):
    with IMAPServer() as imap:
        settings = imap.settings(tmp_path)
        env = {key: str(settings[key]) for key in ("IMAP_HOST", "IMAP_PORT", "IMAP_USER", "IMAP_PASSWORD")}
        server = servers.start(env={**env, "IMAP_SSL": "false", "EMAIL_POLL_INTERVAL": "0.5"})

        result = demo({**server.env, "WORKFLOW_API_URL": server.url})

        assert result.returncode == 0, result.stderr
        assert "insurance_application is now started" in result.stdout
        assert f"curl -X POST {server.url}/api/workflows/insurance_application/stop" in result.stdout
        assert server.get("/api/workflows/insurance_application").json()["status"] == "running"
