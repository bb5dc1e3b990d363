"""The plugin's own test: run it from a PyFlow checkout (PYTHONPATH=/path/to/pyflow pytest tests)."""

import pytest
from pyflow_hello.actions import HelloAction

from actions.base import ActionError


def test_greets_and_refuses_nobody():
    assert HelloAction("greet", who="Ada", greeting="Hi").execute({}) == {"message": "Hi, Ada!"}
    with pytest.raises(ActionError, match="who is empty"):
        HelloAction("greet", who=" ").execute({})
    with pytest.raises(ValueError, match="punctuation must be one of"):
        HelloAction("greet", who="Ada", punctuation=";")
