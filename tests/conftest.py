"""Shared fixtures: an app with its store under tmp_path, its client, and a run.py server."""

from __future__ import annotations

import pytest

from app import create_app, start_app
from tests.cluster import pytest_runtest_makereport  # noqa: F401  (a hook: cluster logs in failure reports)
from tests.fixtures import WORKFLOWS

# Fixtures: a PostgreSQL database of the test's own; the test brokers (Redis, RabbitMQ) for celery, shared
# (tests keep apart by queue name) or a Redis database and a RabbitMQ vhost of the test's own (for run.py workers);
# the tesseract program for OCR.
from tests.services import (  # noqa: F401
    amqp_url,
    amqp_vhost_url,
    postgres_url,
    redis_database_url,
    redis_url,
    tesseract,
)

# Settings every test starts from, whatever the developer's environment says.
TEST_SETTINGS = {
    "WORKFLOW_RETRY_DELAY": 0.01,
    "WORKFLOW_STEP_TIMEOUT": 5.0,
    "SMTP_HOST": "",
    "IMAP_HOST": "",
    "WORKFLOW_MODULES": (),
}


@pytest.fixture
def storage(tmp_path):
    """The store's folder for this test."""
    return tmp_path / "data"


@pytest.fixture
def key_file(tmp_path):
    """The secrets' key file of this test (beside the store, never in the developer's home)."""
    return tmp_path / "encryption.key"


@pytest.fixture
def app(storage, key_file):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_KEY_FILE": str(key_file), "WORKFLOW_CLASSES": WORKFLOWS}))
    yield app
    app.extensions["pyflow"].shutdown(timeout=2)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runtime(app):
    return app.extensions["pyflow"]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (tests/browser.py), for one test module."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    from tests.browser import CHROMIUM, LAUNCH_ARGS

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()
