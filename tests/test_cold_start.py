"""Cold start: `run.py list` and `run.py run` import only what they use (bench/cold_start.py measures the time)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.server import REPO, server_env

# Packages only the server (Flask, its dashboard, the scheduler that polls) or a PDF or HTTP step needs.
NOT_NEEDED = {"flask", "werkzeug", "waitress", "pypdf", "requests", "apscheduler", "app.dashboard", "app.api.routes",
              "psycopg", "psycopg_pool",  # the PostgreSQL store loads only with WORKFLOW_DATABASE_URL
              "apprise",  # a notify step imports it when it sends
              "pypdfium2",  # drawn pages for OCR, only when a scanned page is read
              "opentelemetry"}  # traces: only with OTEL_EXPORTER_OTLP_ENDPOINT set


def imported_modules(*args: str, env: dict[str, str]) -> set[str]:
    """Every module ``python run.py ARGS`` imported, read from ``-X importtime``; fails unless it exits 0."""
    done = subprocess.run([sys.executable, "-X", "importtime", "run.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[-1].strip() for line in lines}


def _packages(modules: set[str]) -> set[str]:
    return {name for name in NOT_NEEDED if any(module == name or module.startswith(name + ".") for module in modules)}


@pytest.mark.parametrize("args", [["list"], ["run", "three_noops"]], ids=["list", "run"])
def test_listing_and_running_a_workflow_that_reads_no_pdf_import_neither_flask_nor_pypdf(tmp_path, args):
    env = server_env(tmp_path / "data", {"WORKFLOW_MODULES": "bench.noop_workflows"})
    modules = imported_modules(*args, env=env)
    assert "app.core.runtime" in modules  # the command did its work
    assert _packages(modules) == set()


def test_the_pdf_action_imports_pypdf_only_to_read_a_pdf(tmp_path):
    # Reading PDFs (and so importing pypdf there) is what tests/test_extract_pdf_data.py checks.
    checked = subprocess.run(
        [sys.executable, "-c", "import sys, actions.extract_pdf_data; print('pypdf' in sys.modules)"],
        cwd=REPO, env=server_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert checked.stdout.strip() == "False", checked.stderr


def test_the_catalog_imports_the_module_of_the_type_a_definition_names_and_all_of_them_to_list(tmp_path):
    script = (
        "import json, sys\n"
        "from workflows.catalog import action_types\n"
        "found = action_types().get('log').__module__\n"
        "before = 'actions.send_email' in sys.modules\n"
        "names = action_types().names()\n"
        "print(json.dumps([found, before, 'send_email' in names, 'actions.send_email' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=server_env(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '["actions.log", false, true, true]'
