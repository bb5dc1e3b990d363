"""Workflow registration and discovery: duplicates, broken modules and bad classes stop start-up, naming the file."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

from actions.base import BaseAction
from app import create_app, start_app
from app.errors import ConfigError
from tests.conftest import TEST_SETTINGS
from tests.fixtures import EchoAction, EchoWorkflow, FailingWorkflow
from triggers.manual import ManualTrigger
from workflows.base import Workflow
from workflows.registry import WorkflowLoadError, WorkflowRegistry, discover, module_names, workflows_in

HEADER = """\
from tests.fixtures import EchoAction
from workflows.base import Workflow
"""


@pytest.fixture
def package(tmp_path, monkeypatch):
    """Make a uniquely named package of workflow modules under tmp_path; returns a function files -> package name."""
    name = f"wfpkg_{uuid.uuid4().hex[:10]}"

    def make(files: dict[str, str]) -> str:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "__init__.py").write_text("", encoding="utf-8")
        for module, source in files.items():
            (folder / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        monkeypatch.syspath_prepend(str(tmp_path))
        return name

    yield make
    for module in [module for module in sys.modules if module == name or module.startswith(f"{name}.")]:
        del sys.modules[module]


def workflow_module(workflow_name: str, class_name: str = "Generated") -> str:
    return HEADER + textwrap.dedent(f"""
        class {class_name}(Workflow):
            name = "{workflow_name}"
            description = "generated for a test"
            actions = [EchoAction("echo", value=1)]
        """)


def make_workflow(**attributes) -> type[Workflow]:
    attributes = {"name": "ok_name", "actions": [EchoAction("echo", value=1)], **attributes}
    return type("Generated", (Workflow,), attributes)


# -- the registry -----------------------------------------------------------------------------------


def test_register_get_iterate_and_source():
    registry = WorkflowRegistry()
    registry.register(FailingWorkflow)
    registry.register(EchoWorkflow)
    assert "echo" in registry and "nope" not in registry
    assert registry.get("echo") is EchoWorkflow
    assert registry.get("nope") is None
    assert [workflow.name for workflow in registry] == ["echo", "failing"]
    assert len(registry) == 2
    assert registry.source("echo").endswith("tests/fixtures/workflows.py")
    registry.unregister("echo")
    assert "echo" not in registry


def test_a_duplicate_name_is_refused_naming_both_files(package):
    name = package({"first": workflow_module("dup"), "second": workflow_module("dup")})
    with pytest.raises(WorkflowLoadError) as caught:
        discover(WorkflowRegistry(), [f"{name}.first", f"{name}.second"])
    message = str(caught.value)
    assert f"{name}/second.py" in message
    assert f"{name}/first.py" in message
    assert "'dup' is already used" in message


def test_a_duplicate_of_a_class_registered_in_code_is_refused():
    registry = WorkflowRegistry()
    registry.register(EchoWorkflow)
    twin = make_workflow(name="echo")
    with pytest.raises(WorkflowLoadError,
                       match=r"workflow name 'echo' is already used by .*tests/fixtures/workflows\.py"):
        registry.register(twin)
    assert registry.get("echo") is EchoWorkflow


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (HEADER + "\n\nraise RuntimeError('boom at import')\n", r"broken\.py: line 5: RuntimeError: boom at import"),
        (HEADER + "\nclass Oops(Workflow)\n    name = 'x'\n", r"broken\.py: SyntaxError: .*line 4"),
        ("import a_module_that_is_not_installed\n", r"broken\.py: line 1: ModuleNotFoundError: .*a_module_that_is"),
        (HEADER + "\nx = {}['missing']\n", r"broken\.py: line 4: KeyError: 'missing'"),
        # A workflow whose action refuses its arguments fails while the class body runs.
        (
            HEADER + "\nclass W(Workflow):\n    name = 'w'\n    actions = [EchoAction('')]\n",
            r"broken\.py: line 6: ValueError: action name must be a non-empty string",
        ),
    ],
    ids=["raises", "syntax-error", "missing-dependency", "key-error", "bad-action"],
)
def test_a_module_that_fails_to_import_is_named_with_its_line(package, source, expected):
    name = package({"broken": source})
    with pytest.raises(WorkflowLoadError, match=rf"^cannot load {name}/{expected}"):
        discover(WorkflowRegistry(), [f"{name}.broken"])


def test_a_missing_module_is_named(package):
    name = package({})
    with pytest.raises(WorkflowLoadError, match=rf"cannot load {name}/missing\.py: ModuleNotFoundError"):
        discover(WorkflowRegistry(), [f"{name}.missing"])


@pytest.mark.parametrize("bad_name", ["Bad-Name", "UPPER", "with space", "", "ünïcode", "dots.in.name", 42, None])
def test_a_bad_workflow_name_is_refused(bad_name):
    with pytest.raises(WorkflowLoadError, match=r"name must match \[a-z0-9_\]\+, got"):
        WorkflowRegistry().register(make_workflow(name=bad_name), source="somewhere.py")


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"trigger": "manual"}, "trigger must be a BaseTrigger"),
        ({"actions": EchoAction("a")}, "actions must be a list"),
        ({"actions": [EchoAction("a"), "not an action"]}, r"actions\[1\] must be a BaseAction"),
        ({"actions": [EchoAction("a"), EchoAction("a")]}, r"actions\[1\]: duplicate or reserved step name 'a'"),
        ({"actions": [EchoAction("trigger_data")]}, r"actions\[0\]: duplicate or reserved step name 'trigger_data'"),
        ({"max_retries": -1}, "max_retries must be a number >= 0"),
        ({"retry_delay": "5"}, "retry_delay must be a number >= 0"),
        ({"step_timeout": True}, "step_timeout must be a number >= 0"),
        ({"check_interval": -0.5}, "check_interval must be a number >= 0"),
    ],
)
def test_a_misconfigured_workflow_is_refused_naming_the_attribute(attributes, expected):
    with pytest.raises(WorkflowLoadError, match=rf"^wf\.py: workflow Generated: {expected}"):
        WorkflowRegistry().register(make_workflow(**attributes), source="wf.py")


def test_discovery_registers_defined_workflows_only(package):
    """Imported workflows and nameless base classes are not registered (again)."""
    source = HEADER + textwrap.dedent("""
        from tests.fixtures import EchoWorkflow  # imported, not defined here


        class Base(Workflow):
            description = "a base class without a name"


        class Child(Base):
            name = "child"
            actions = [EchoAction("echo", value=1)]
        """)
    name = package({"several": source, "_private": workflow_module("private"), "other": workflow_module("other")})
    registry = discover(WorkflowRegistry(), [f"{name}.several"])
    assert [workflow.name for workflow in registry] == ["child"]
    assert [workflow.name for workflow in workflows_in(sys.modules[f"{name}.several"])] == ["child"]
    # Modules starting with "_" are not workflow modules.
    assert module_names(name) == [f"{name}.other", f"{name}.several"] or sorted(module_names(name)) == [
        f"{name}.other",
        f"{name}.several",
    ]


def test_the_shipped_workflows_package_loads():
    registry = discover(WorkflowRegistry(), module_names("workflows"))
    assert "uptime_monitor" in registry
    assert all("registry" not in name and "base" not in name for name in module_names("workflows"))


# -- start-up -----------------------------------------------------------------------------------------


def app_config(tmp_path, **settings) -> dict:
    return {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"), **settings}


def test_create_app_with_a_broken_workflow_module_stops_naming_the_file(tmp_path, package):
    name = package({"good": workflow_module("good"), "broken": HEADER + "\n\nraise RuntimeError('boom')\n"})
    with pytest.raises(ConfigError, match=rf"cannot load {name}/broken\.py: line 5: RuntimeError: boom"):
        start_app(create_app(app_config(tmp_path, WORKFLOW_MODULES=(f"{name}.good", f"{name}.broken"))))


def test_create_app_reads_workflow_modules_from_the_environment(tmp_path, package, monkeypatch):
    name = package({"broken": "raise ImportError('cannot find libfoo')\n"})
    monkeypatch.setenv("WORKFLOW_MODULES", f"{name}.broken")
    config = app_config(tmp_path)
    del config["WORKFLOW_MODULES"]
    with pytest.raises(ConfigError, match=rf"{name}/broken\.py: line 1: ImportError: cannot find libfoo"):
        start_app(create_app(config))


@pytest.mark.parametrize("listed", ["a_module_nobody_wrote", "a_package_nobody_wrote.flows", "{package}.missing"])
def test_a_module_workflow_modules_lists_that_is_not_there_names_the_setting(tmp_path, package, listed):
    """No file to name: the message says which setting lists it, instead of 'cannot load missing.py'."""
    listed = listed.format(package=package({}))
    with pytest.raises(ConfigError) as caught:
        start_app(create_app(app_config(tmp_path, WORKFLOW_MODULES=(listed,))))
    assert str(caught.value).startswith(f"WORKFLOW_MODULES lists {listed!r}, which cannot be imported: no module named")
    assert "PYTHONPATH" in str(caught.value)


def test_create_app_with_a_duplicate_name_across_modules_and_classes_stops(tmp_path, package):
    name = package({"echo_twin": workflow_module("echo", "EchoTwin")})
    with pytest.raises(ConfigError) as caught:
        start_app(create_app(
            app_config(tmp_path, WORKFLOW_MODULES=(f"{name}.echo_twin",), WORKFLOW_CLASSES=[EchoWorkflow])
        ))
    message = str(caught.value)
    assert "workflow name 'echo' is already used" in message
    assert f"{name}/echo_twin.py" in message
    assert "tests/fixtures/workflows.py" in message


def test_create_app_registers_workflows_of_extra_modules(tmp_path, package):
    name = package({"extra": workflow_module("extra_one")})
    app = start_app(create_app(app_config(tmp_path, WORKFLOW_MODULES=(f"{name}.extra",))))
    try:
        response = app.test_client().get("/api/workflows/extra_one")
        assert response.status_code == 200
        assert response.get_json()["description"] == "generated for a test"
    finally:
        app.extensions["pyflow"].shutdown(timeout=1)


def test_a_workflow_with_a_bad_trigger_template_stops_start_up(tmp_path):
    from triggers.interval import IntervalTrigger

    class BadInterval(Workflow):
        name = "bad_interval"
        trigger = IntervalTrigger("every", seconds="{{ settings.NO_SUCH | nope }}")
        actions = [EchoAction("echo", value=1)]

    with pytest.raises(ConfigError, match=r"workflow 'bad_interval': .*trigger.*nope"):
        start_app(create_app(app_config(tmp_path, WORKFLOW_CLASSES=[BadInterval])))


def test_a_manual_workflow_and_a_base_action_are_valid_defaults():
    class Minimal(Workflow):
        name = "minimal"

    registry = WorkflowRegistry()
    registry.register(Minimal, source="minimal.py")
    assert isinstance(Minimal.trigger, ManualTrigger)
    with pytest.raises(NotImplementedError):
        BaseAction("bare").execute({})
