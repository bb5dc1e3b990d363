"""demo_2.py against a real run.py whose uptime monitor checks the server's own /api/health."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.server import REPO, Servers, free_port

pytestmark = pytest.mark.slow  # runs the demo against real run.py servers


@pytest.fixture
def servers(tmp_path):
    with Servers(tmp_path) as servers:
        yield servers


def demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run demo_2.py to the end."""
    return subprocess.run(
        [sys.executable, "demo_2.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )


def test_demo_checks_once_then_shows_scheduled_checks_and_stops(servers):
    port = free_port()  # UPTIME_URL must name the port before the server starts
    server = servers.make(env={
        "PORT": str(port),
        "UPTIME_INTERVAL": "0.5",
        "UPTIME_URL": f"http://127.0.0.1:{port}/api/health",
    }).start()

    result = demo({**server.env, "WORKFLOW_API_URL": server.url}, "--wait", "2")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "Workflow uptime_monitor" in out
    assert "UPTIME_URL" in out and "UPTIME_INTERVAL" in out
    assert f"url:     http://127.0.0.1:{port}/api/health" in out
    assert "check:   status 200" in out and "ok=True" in out
    assert "alert:   skipped" in out
    scheduled = re.findall(r"^  \d\d:\d\d:\d\d  succeeded +200 +\d+ ms  skipped$", out, flags=re.MULTILINE)
    assert len(scheduled) >= 2, out
    assert "Stopped uptime_monitor" in out and "status stopped" in out

    summary = server.get("/api/workflows/uptime_monitor").json()
    assert summary["status"] == "stopped"
    runs = server.all_runs(workflow="uptime_monitor")
    assert len(runs) >= 1 + len(scheduled)
    assert {run["source"] for run in runs} == {"api", "schedule"}


def test_demo_explains_how_to_start_the_server_when_none_answers():
    url = f"http://127.0.0.1:{free_port()}"

    result = demo({**os.environ, "WORKFLOW_API_URL": url}, "--wait", "0")

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"PyFlow is not running at {url} — start it with: python run.py\n"
