"""Distributed settings that cannot work stop start-up with one line naming the setting and the cause."""

from __future__ import annotations

import pytest

from app.core.config import load_settings
from app.core.runtime import Runtime
from app.errors import ConfigError
from tests.conftest import TEST_SETTINGS
from tests.server import run_py, server_env


def runtime_error(tmp_path, worker: bool = False, **settings) -> str:
    with pytest.raises(ConfigError) as raised:
        Runtime({**load_settings({}), **TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"), **settings},
                worker=worker)
    return str(raised.value)


def test_a_queue_executor_needs_the_database(tmp_path):
    message = runtime_error(tmp_path, WORKFLOW_EXECUTOR="procrastinate")
    assert message.startswith("WORKFLOW_EXECUTOR=procrastinate needs WORKFLOW_DATABASE_URL")


def test_celery_needs_its_broker(tmp_path):
    message = runtime_error(tmp_path, WORKFLOW_EXECUTOR="celery",
                            WORKFLOW_DATABASE_URL="postgresql://pyflow:s3cret-pw@127.0.0.1:1/pyflow")
    assert message.startswith("WORKFLOW_EXECUTOR=celery needs CELERY_BROKER_URL")
    assert "s3cret-pw" not in message


def test_a_worker_needs_a_queue_executor(tmp_path):
    message = runtime_error(tmp_path, worker=True)
    assert "run.py worker needs WORKFLOW_EXECUTOR=procrastinate or celery" in message


@pytest.mark.parametrize(("env", "expected"), [
    ({"WORKFLOW_EXECUTOR": "kafka"}, "setting WORKFLOW_EXECUTOR must be local, procrastinate or celery, got 'kafka'"),
    ({}, "run.py worker needs WORKFLOW_EXECUTOR=procrastinate or celery"),
    ({"WORKFLOW_EXECUTOR": "celery", "WORKFLOW_DATABASE_URL": "postgresql://u:topsecret@127.0.0.1:1/db"},
     "WORKFLOW_EXECUTOR=celery needs CELERY_BROKER_URL"),
])
def test_run_py_worker_refuses_a_setting_that_cannot_work_in_one_line(tmp_path, env, expected):
    finished = run_py("worker", env=server_env(tmp_path / "data", env))
    assert finished.returncode == 2
    assert expected in finished.stderr
    assert len(finished.stderr.strip().splitlines()) == 1, finished.stderr
    assert "topsecret" not in finished.stderr + finished.stdout
