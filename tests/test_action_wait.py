"""WaitAction: waits, and stops waiting when the run is cancelled."""

from __future__ import annotations

import threading

import pytest

from actions.base import ActionError, RunContext
from actions.wait import WaitAction


def test_waits():
    action = WaitAction("pause", seconds="0.05")
    assert action.execute({})["waited_s"] >= 0.05


def test_cancel_interrupts():
    action = WaitAction("pause", seconds=30)
    action.context = RunContext(cancel_event=threading.Event())
    threading.Timer(0.1, action.context.cancel_event.set).start()
    # Uncancelled, it would return after 30 s without raising.
    with pytest.raises(ActionError, match="cancelled") as caught:
        action.execute({})
    assert not caught.value.retryable


@pytest.mark.parametrize("seconds", ["soon", -1, "nan", True])
def test_bad_seconds(seconds):
    with pytest.raises(ValueError, match="seconds must be a number >= 0"):
        WaitAction("pause", seconds=seconds)


def test_a_wait_past_the_cap_fails_naming_the_setting():
    action = WaitAction("pause", seconds="{{ inputs.s }}")
    action.seconds = "1e12"  # as the template rendered it
    action.context = RunContext(settings={"WORKFLOW_MAX_WAIT": 3600.0})
    with pytest.raises(ActionError) as caught:
        action.execute({})
    assert str(caught.value) == "wait: seconds 1000000000000.0 is more than WORKFLOW_MAX_WAIT (3600)"
    assert not caught.value.retryable
