"""PythonAction: import paths, arguments and results."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import pytest

from actions.base import ActionError, RunContext
from actions.python import PythonAction

# The modules these tests call into; anything else is refused (see test_modules_not_allowed_are_refused).
ALLOWED = {"WORKFLOW_PYTHON_MODULES": ("tests", "json", "no_such_module_xyz")}


def pair(a, b=2):
    """Returns a dict: the result as it is."""
    return {"sum": a + b}


class Box:
    """Holds a static method and a method: neither is a plain function of this module."""

    @staticmethod
    def empty():
        return None

    def method(self):
        return {"called": True}


bound_method = Box().method
builtin_len = len
imported_function = json.dumps  # a function, but json's, not this module's


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


@pytest.mark.parametrize(("function", "message"), [
    ("no_such_module_xyz:f", r"cannot import 'no_such_module_xyz:f': ModuleNotFoundError"),
    ("json:nope", r"cannot import 'json:nope': module 'json' has no function 'nope'"),
])
def test_unusable_paths_are_not_retried(function, message):
    with pytest.raises(ActionError, match=message) as caught:
        call(function)
    assert not caught.value.retryable


def test_errors_of_the_function_fail_the_attempt():
    with pytest.raises(TypeError):
        call("tests.test_action_python:pair", c=1)


@pytest.mark.parametrize("function", [
    "json.dumps", "json:", ":f", 5,
    # An attribute path after the colon reached any object: builtins.open truncated files, __import__ any module.
    "workflows.library.sqlite_store:json.codecs.builtins.open",
    "workflows.library.sqlite_store:json.codecs.builtins.__import__",
    "tests.test_action_python:Box.empty",
    "json:__doc__", "workflows.library.sqlite_store:_connect", "workflows.library._private:f", "__main__:f",
])
def test_malformed_path_is_refused_at_definition(function):
    with pytest.raises(ValueError, match=r"function must look like 'package.module:function' \(one public function"):
        PythonAction("py", function=function)


def test_a_templated_path_is_checked_when_it_runs():
    """A definition may render the path from inputs; the rendered text meets the same rule."""
    action = PythonAction("py", function="{{ inputs.f }}")
    action.function = "workflows.library.sqlite_store:json.codecs.builtins.open"  # what the template rendered
    action.context = RunContext(settings={})
    with pytest.raises(ActionError, match=r"^python: function must look like 'package.module:function'") as caught:
        action.execute({})
    assert not caught.value.retryable


@pytest.mark.parametrize(("function", "what"), [
    ("tests.test_action_python:Box", "a class"),
    ("tests.test_action_python:bound_method", "a method"),
    ("tests.test_action_python:builtin_len", "a builtin"),
    ("tests.test_action_python:imported_function", "a function of json"),
    ("json:JSONDecoder", "a class"),
    ("workflows.library.sqlite_store:contextmanager", "a function of contextlib"),
    ("workflows.library.sqlite_store:closing", "a class"),
])
def test_only_plain_functions_defined_in_the_named_module_are_called(function, what):
    with pytest.raises(ActionError, match=rf"python: function '{function}' is {what}, not a plain function defined "
                                          rf"in {function.partition(':')[0]}") as caught:
        call(function)
    assert not caught.value.retryable


def test_a_library_function_writes_only_inside_the_files_root(tmp_path):
    root = tmp_path / "files"
    settings = {"WORKFLOW_FILES_ROOT": str(root)}
    rows = [{"id": 1, "name": "Ann"}]
    loaded = call("workflows.library.sqlite_store:load_rows", settings=settings, db_path="db/people.sqlite3",
                  table="people", rows=rows)
    assert loaded["inserted"] == 1
    with closing(sqlite3.connect(root / "db" / "people.sqlite3")) as connection:
        assert connection.execute("SELECT id, name FROM people").fetchall() == [(1, "Ann")]

    outside = tmp_path / "outside.sqlite3"
    for db_path in (str(outside), "../outside.sqlite3", "~/pyflow-test.sqlite3"):
        with pytest.raises(ActionError, match=r"python: workflows.library.sqlite_store:load_rows: db_path '.*' is "
                                              r"outside WORKFLOW_FILES_ROOT \(") as caught:
            call("workflows.library.sqlite_store:load_rows", settings=settings, db_path=db_path, table="t", rows=rows)
        assert not caught.value.retryable
    assert not outside.exists()
