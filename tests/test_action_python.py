"""PythonAction: import paths, arguments and results."""

from __future__ import annotations

import pytest

from actions.base import ActionError, RunContext
from actions.python import PythonAction

# The modules these tests call into; anything else is refused (see test_modules_not_allowed_are_refused).
ALLOWED = {"WORKFLOW_PYTHON_MODULES": ("tests", "json", "no_such_module_xyz")}


def pair(a, b=2):
    """Returns a dict: the result as it is."""
    return {"sum": a + b}


class Box:
    """Holds a static method, to reach it by a dotted attribute path."""

    @staticmethod
    def empty():
        return None


def call(function, settings=ALLOWED, **kwargs) -> dict:
    action = PythonAction("py", function=function, kwargs=kwargs or None)
    action.context = RunContext(settings=settings)
    return action.execute({})


@pytest.mark.parametrize("function", ["subprocess:run", "os:system", "jsonx:f"])
def test_modules_not_allowed_are_refused(function):
    with pytest.raises(ActionError, match="is not allowed; add it to WORKFLOW_PYTHON_MODULES") as caught:
        call(function, settings={}, args=["true"])
    assert not caught.value.retryable


def test_shipped_library_functions_are_always_allowed():
    with pytest.raises(ActionError, match="cannot import 'workflows.library.nope:f'"):
        call("workflows.library.nope:f", settings={})


def test_dict_result_is_the_result():
    assert call("tests.test_action_python:pair", a=1, b=3) == {"sum": 4}


def test_other_results_are_wrapped():
    assert call("json:dumps", obj=[1]) == {"value": "[1]"}
    assert call("tests.test_action_python:Box.empty") == {"value": None}


@pytest.mark.parametrize(("function", "message"), [
    ("no_such_module_xyz:f", r"cannot import 'no_such_module_xyz:f': ModuleNotFoundError"),
    ("json:nope", r"cannot import 'json:nope': AttributeError: module 'json' has no attribute 'nope'"),
    ("json:__doc__", r"'json:__doc__' is not callable"),
])
def test_unusable_paths_are_not_retried(function, message):
    with pytest.raises(ActionError, match=message) as caught:
        call(function)
    assert not caught.value.retryable


def test_errors_of_the_function_fail_the_attempt():
    with pytest.raises(TypeError):
        call("tests.test_action_python:pair", c=1)


@pytest.mark.parametrize("function", ["json.dumps", "json:", ":f", 5])
def test_malformed_path_is_refused_at_definition(function):
    with pytest.raises(ValueError, match="must look like 'package.module:function'"):
        PythonAction("py", function=function)
