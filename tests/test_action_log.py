"""LogAction: messages reach the pyflow.workflow logger."""

from __future__ import annotations

import logging

import pytest

from actions.log import LogAction


def test_logs_at_the_level(caplog):
    caplog.set_level(logging.DEBUG, logger="pyflow.workflow")
    assert LogAction("note", message="disk at 91%", level="warning").execute({}) == {"message": "disk at 91%"}
    LogAction("note", message={"a": 1}, level="debug").execute({})
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("pyflow.workflow", "WARNING", "disk at 91%"), ("pyflow.workflow", "DEBUG", '{"a": 1}')]


def test_bad_level():
    with pytest.raises(ValueError, match="level must be one of debug, info, warning, error"):
        LogAction("note", message="x", level="loud")
