"""A run's own log: repeated lines folded as they are written, and a cap on the lines one run keeps."""

from __future__ import annotations

import logging

import pytest

from actions.base import BaseAction
from app import create_app
from app.core.run_logs import RunLog
from app.storage.memory import MemoryStore
from tests.conftest import TEST_SETTINGS
from workflows.base import Workflow

logger = logging.getLogger("tests.pdf_reader")


class WarnAction(BaseAction):
    """Logs a warning ``times`` times, as a PDF reader does for each damaged object of a file."""

    def __init__(self, name: str, times: int = 2000, distinct: bool = False, **options):
        super().__init__(name, **options)
        self.times = times
        self.distinct = distinct

    def execute(self, data_store: dict) -> dict:
        for number in range(self.times):
            if self.distinct:
                logger.warning("Ignoring wrong pointing object %d 0 (offset 0)", number)
            else:
                logger.warning("Ignoring wrong pointing object 6 0 (offset 0)")
        return {"warned": self.times}


class NoisyPdfWorkflow(Workflow):
    name = "noisy_pdf"
    description = "One step logs the same warning 2,000 times."
    actions = [WarnAction("read")]


class DistinctWarningsWorkflow(Workflow):
    name = "distinct_warnings"
    description = "One step logs 2,000 different warnings."
    actions = [WarnAction("read", distinct=True)]


@pytest.fixture
def client(storage):
    app = create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_RUN_LOG_LINES": 50,
                      "WORKFLOW_CLASSES": [NoisyPdfWorkflow, DistinctWarningsWorkflow]})
    yield app.test_client()
    app.extensions["pyflow"].shutdown(timeout=2)


def run_logs_of(client, workflow: str) -> tuple[dict, list[dict]]:
    response = client.post(f"/api/workflows/{workflow}/runs?wait=30")
    assert response.status_code == 200, response.get_json()
    run = response.get_json()
    assert run["status"] == "succeeded"
    return run, client.get(f"/api/runs/{run['id']}/logs").get_json()["logs"]


def test_a_warning_logged_2000_times_is_one_line_and_a_count(client):
    run, logs = run_logs_of(client, "noisy_pdf")

    assert [(line["level"], line["step"], line["message"]) for line in logs] == [
        ("info", None, "run started (api), 1 step"),
        ("warning", "read", "Ignoring wrong pointing object 6 0 (offset 0)"),
        ("warning", "read", "... repeated 1999 more times"),
        ("info", None, "run succeeded"),
    ]
    page = client.get(f"/runs/{run['id']}")
    assert "... repeated 1999 more times" in page.text
    assert len(page.data) < 30_000, "the run page stays small"


def test_a_run_keeps_at_most_the_cap_and_says_how_many_lines_it_dropped(client):
    run, logs = run_logs_of(client, "distinct_warnings")

    messages = [line["message"] for line in logs]
    warnings = [message for message in messages if message.startswith("Ignoring")]
    assert messages[0] == "run started (api), 1 step" and messages[-1] == "run succeeded"
    assert warnings[0] == "Ignoring wrong pointing object 0 0 (offset 0)", "the first lines are kept"
    assert len(warnings) == 49, "50 lines with run started"
    assert messages[-4] == "Ignoring wrong pointing object 48 0 (offset 0)"
    assert messages[-3:-1] == [
        "the log reached 50 lines (WORKFLOW_RUN_LOG_LINES): later lines of this run's steps are counted, not kept",
        "1951 more log lines of this run were dropped: a run keeps at most 50 (WORKFLOW_RUN_LOG_LINES)",
    ]
    assert len(logs) == 53
    assert len(client.get(f"/runs/{run['id']}").data) < 30_000


def test_only_consecutive_repeats_fold_and_the_count_comes_before_the_next_line():
    store = MemoryStore()
    log = RunLog(store, "run_1")
    for message in ("a", "a", "b", "b", "b", "a"):
        log.write(logging.INFO, message, "step")
    log.write(logging.WARNING, "a", "step")  # another level is another line
    log.write(logging.WARNING, "a", "other")  # and so is another step
    log.close()

    assert [(line["level"], line["step"], line["message"]) for line in store.get_logs("run_1")] == [
        ("info", "step", "a"), ("info", "step", "... repeated once more"),
        ("info", "step", "b"), ("info", "step", "... repeated 2 more times"),
        ("info", "step", "a"), ("warning", "step", "a"), ("warning", "other", "a"),
    ]


def test_a_repeat_at_the_end_of_a_run_is_counted_when_the_log_closes():
    store = MemoryStore()
    log = RunLog(store, "run_1")
    for _ in range(5):
        log.write("WARNING", "same", "read")
    assert [line["message"] for line in store.get_logs("run_1")] == ["same"]
    log.close()
    assert [line["message"] for line in store.get_logs("run_1")] == ["same", "... repeated 4 more times"]
