"""Start-up is explicit: create_app builds the app and starts nothing; start_app resumes runs and polls."""

from __future__ import annotations

import subprocess
import sys
import threading

from app import create_app, start_app
from app.runs import new_run, new_step
from app.storage.json.store import JsonStore
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS, wait_until
from tests.server import REPO, server_env


def interrupted_run(storage) -> str:
    """A run of ``echo`` left queued on disk, as a killed server leaves it; its id."""
    store = JsonStore(storage)
    run = new_run("echo", [new_step("echo", "echo")], {"text": "left over"}, "api")
    store.create_run(run)
    store.close()
    return run["id"]


def test_creating_the_app_and_showing_a_page_starts_no_thread_and_recovers_nothing(tmp_path):
    storage = tmp_path / "data"
    run_id = interrupted_run(storage)
    threads = threading.active_count()
    app = create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS})
    try:
        page = app.test_client().get("/")
        assert page.status_code == 200
        assert threading.active_count() == threads
        assert app.extensions["pyflow"].store.get_run(run_id)["status"] == "queued"

        start_app(app)
        done = wait_until(lambda: app.extensions["pyflow"].store.get_run(run_id)["status"] == "succeeded",
                          timeout=10, message="the interrupted run resumed by start_app")
        assert done
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


def test_flask_routes_lists_the_endpoints_and_leaves_runs_alone(tmp_path):
    storage = tmp_path / "data"
    run_id = interrupted_run(storage)
    env = server_env(storage)
    listed = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "routes"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "/api/health" in listed.stdout
    assert JsonStore(storage).get_run(run_id)["status"] == "queued"
