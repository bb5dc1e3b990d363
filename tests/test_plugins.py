"""Plugins (entry points) and GET /api/catalog: the example package installed for real, broken plugins skipped.

Plugins register into process-wide type registries, so every test that loads one does it in a
child process: the rest of the suite never sees a test plugin's types.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from actions.schemas import check_schema, errors_of, make_validator
from workflows.catalog import action_types, trigger_types
from workflows.declarative import read_definition
from workflows.type_schemas import config_schema

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pyflow-hello-plugin"
SHIPPED = sorted((ROOT / "workflows" / "definitions").glob("*.yaml"))


def _steps(steps):
    """Every step of a definition, a loop's nested steps included."""
    for step in steps:
        yield step
        if step["type"] == "loop":
            yield from _steps(step["config"]["steps"])


def test_every_builtin_type_has_a_valid_schema_that_accepts_the_shipped_definitions():
    schemas = {}
    for kind, registry in (("action", action_types()), ("trigger", trigger_types())):
        for name in registry.names():
            schema = config_schema(registry.get(name))
            check_schema(schema)  # a JSON Schema PyFlow itself accepts (patterns bounded, no remote $ref)
            assert schema["type"] == "object" and schema["additionalProperties"] is False
            schemas[kind, name] = schema
    assert {"shell", "http_request", "loop", "notify", "llm"} <= {name for kind, name in schemas if kind == "action"}

    checked = 0
    for path in SHIPPED:
        definition = read_definition(path)
        trigger = dict(definition.get("trigger") or {"type": "manual"})
        config = {key: value for key, value in trigger.items() if key != "type"}
        assert errors_of(make_validator(schemas["trigger", trigger["type"]]), config) == [], path
        for step in _steps(definition["steps"]):
            config = {**step.get("config", {}), **({"limits": step["limits"]} if "limits" in step else {})}
            errors = errors_of(make_validator(schemas["action", step["type"]]), config)
            assert errors == [], f"{path.name} step {step['name']}: {[error.message for error in errors]}"
            checked += 1
    assert checked >= 10


def test_a_schema_says_required_types_enums_defaults_and_templates():
    log = config_schema(action_types().get("log"))
    assert log["required"] == ["message"]
    level = log["properties"]["level"]
    assert level["default"] == "info" and level["x-pyflow-template"] is True
    assert level["anyOf"][0] == {"type": "string", "enum": ["debug", "info", "warning", "error"]}
    validator = make_validator(log)
    assert errors_of(validator, {"message": "hi", "level": "{{ inputs.level }}"}) == []
    assert [error.message for error in errors_of(validator, {"message": "hi", "level": "loud"})]
    assert errors_of(validator, {"level": "info"})[0].message == "'message' is a required property"
    assert "'colour' was unexpected" in errors_of(validator, {"message": "hi", "colour": "red"})[0].message

    webhook = config_schema(trigger_types().get("webhook"))
    assert webhook["properties"]["secret"]["x-pyflow-secret"] is True
    loop = config_schema(action_types().get("loop"))
    assert loop["properties"]["steps"]["x-pyflow-template"] is False  # rendered per item by the loop
    poll = config_schema(trigger_types().get("poll"))
    assert poll["x-pyflow-python-only"] is True  # its condition is a Python callable
    # An optional callable (cron's and file's test clock) is a Python-only field, not a template a form offers.
    for kind in ("cron", "file"):
        schema = config_schema(trigger_types().get(kind))
        assert schema["properties"]["clock"] == {"x-pyflow-python-only": True, "default": None}
        assert "x-pyflow-python-only" not in schema  # the type itself is usable from a definition


def test_catalog_endpoint_lists_builtin_types_for_a_viewer(client):
    body = client.get("/api/catalog").get_json()
    assert body["problems"] == []
    actions = {row["type"]: row for row in body["actions"]}
    assert set(actions) == set(action_types().names())
    assert {row["type"] for row in body["triggers"]} == set(trigger_types().names())
    shell = actions["shell"]
    assert shell["origin"] == "builtin" and shell["description"]
    assert shell["config_schema"]["required"] == ["command"]


def _child_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WORKFLOW_", "PYTHONPATH"))}
    return {**env, **extra}


CATALOG_SCRIPT = textwrap.dedent("""
    import json, sys
    from app import create_app, start_app
    app = start_app(create_app({"WORKFLOW_STORAGE_PATH": sys.argv[1], "WORKFLOW_KEY_FILE": sys.argv[2],
                                "WORKFLOW_MODULES": (), "SMTP_HOST": "", "IMAP_HOST": ""}))
    try:
        body = app.test_client().get("/api/catalog").get_json()
        workflows = [summary["name"] for summary in app.test_client().get("/api/workflows").get_json()["workflows"]]
        print(json.dumps({"catalog": body, "workflows": workflows}))
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)
""")


def _write_distribution(folder: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata reads one: a .dist-info folder beside its modules."""
    info = folder / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, text in modules.items():
        (folder / f"{module}.py").write_text(textwrap.dedent(text))


def test_broken_plugins_are_named_in_the_catalog_and_the_log_and_start_up_goes_on(tmp_path):
    plugins = tmp_path / "site"
    _write_distribution(plugins, "mixed-plugins", """
        [pyflow.actions]
        shout = shout_plugin:ShoutAction
        raises = raising_plugin:Anything
        notaclass = shout_plugin:helper
        log = shout_plugin:LogTwin

        [pyflow.triggers]
        never = shout_plugin:NeverTrigger

        [pyflow.workflows]
        shouting = shout_workflows
        missing = no_such_module_here
    """, {
        "shout_plugin": """
            from actions.base import BaseAction
            from triggers.base import BaseTrigger

            class ShoutAction(BaseAction):
                '''Upper-cases a text.'''
                type = "shout"

                def __init__(self, name, *, text: str, times: int = 1, **options):
                    super().__init__(name, **options)
                    self.text, self.times = text, times

                def execute(self, data_store):
                    return {"text": self.text.upper() * int(self.times)}

            class LogTwin(BaseAction):
                type = "log"

            class NeverTrigger(BaseTrigger):
                '''Never fires.'''
                type = "never"

                def is_triggered(self):
                    return False

            def helper():
                pass
        """,
        "raising_plugin": """
            raise RuntimeError("the plugin's settings file is missing")
        """,
        "shout_workflows": """
            from actions.log import LogAction
            from workflows.base import Workflow

            class Shouting(Workflow):
                name = "shouting"
                actions = [LogAction("say", message="HELLO")]
        """,
    })
    result = subprocess.run([sys.executable, "-c", CATALOG_SCRIPT, str(tmp_path / "data"), str(tmp_path / "key")],
                            cwd=ROOT, env=_child_env(PYTHONPATH=f"{plugins}{os.pathsep}{ROOT}"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    catalog = answer["catalog"]
    problems = {problem["plugin"]: problem["error"] for problem in catalog["problems"]}
    assert problems == {
        "pyflow.actions log (mixed-plugins 0.1)": "action type 'log' is built in; a plugin cannot replace it",
        "pyflow.actions notaclass (mixed-plugins 0.1)": "shout_plugin:helper is not a BaseAction subclass",
        "pyflow.actions raises (mixed-plugins 0.1)": "RuntimeError: the plugin's settings file is missing",
        "pyflow.workflows missing (mixed-plugins 0.1)": "ModuleNotFoundError: No module named 'no_such_module_here'",
    }
    for plugin, error in problems.items():
        assert f"plugin {plugin} is not loaded: {error}" in result.stderr
    assert "Traceback" not in result.stderr
    shout = next(row for row in catalog["actions"] if row["type"] == "shout")
    assert shout["origin"] == "mixed-plugins 0.1" and shout["description"] == "Upper-cases a text."
    assert shout["config_schema"]["required"] == ["text"]
    assert shout["config_schema"]["properties"]["times"]["default"] == 1
    assert next(row for row in catalog["actions"] if row["type"] == "log")["origin"] == "builtin"
    assert next(row for row in catalog["triggers"] if row["type"] == "never")["origin"] == "mixed-plugins 0.1"
    assert "shouting" in answer["workflows"]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> Path:
    """A virtualenv with examples/pyflow-hello-plugin installed (pip, no index, no build isolation)."""
    folder = tmp_path_factory.mktemp("plugin-venv")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)
    python = venv / "bin" / "python"
    # When the suite itself runs in a virtualenv, --system-site-packages reaches only the base
    # interpreter's packages: this environment's (PyFlow's requirements, pip, setuptools) are added.
    target = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    (target / "pyflow_parent.pth").write_text("\n".join([*site.getsitepackages(), sysconfig.get_path("purelib")]))
    source = folder / "pyflow-hello-plugin"
    shutil.copytree(EXAMPLE, source)  # the build writes into its source folder: not into the checkout
    installed = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                                "--disable-pip-version-check", "-q", str(source)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return python


@pytest.mark.slow
def test_the_example_plugin_installs_and_its_action_runs_from_a_definition(plugin_env, tmp_path):
    env = _child_env(WORKFLOW_STORAGE_PATH=str(tmp_path / "data"), WORKFLOW_KEY_FILE=str(tmp_path / "key"),
                     WORKFLOW_DEFINITIONS_PATH=str(EXAMPLE), WORKFLOW_FILES_ROOT=str(tmp_path / "files"))
    validated = subprocess.run([plugin_env, "run.py", "validate", str(EXAMPLE / "hello.yaml")], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=60)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "hello.yaml: ok (hello_plugin: 2 steps, manual trigger)" in validated.stdout

    ran = subprocess.run([plugin_env, "run.py", "run", "hello_plugin", "--input", '{"who": "Ada"}'], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run = json.loads(ran.stdout)
    assert run["status"] == "succeeded"
    greet = next(step for step in run["steps"] if step["name"] == "greet")
    assert (greet["type"], greet["result"]) == ("hello", {"message": "Hello, Ada!"})

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad_hello\nsteps: [{name: greet, type: hello, config: {who: Ada, punctuation: ';'}}]\n")
    refused = subprocess.run([plugin_env, "run.py", "validate", str(bad)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "punctuation must be one of ! . ?" in refused.stdout
    # At the field, so the designer marks it (docs/plugins.md: SettingError).
    assert "  steps[0].config.punctuation: action 'greet': punctuation must be one of" in refused.stdout

    listed = subprocess.run([plugin_env, "-c", CATALOG_SCRIPT, str(tmp_path / "data2"), str(tmp_path / "key2")],
                            cwd=ROOT, env=_child_env(), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    hello = next(row for row in json.loads(listed.stdout)["catalog"]["actions"] if row["type"] == "hello")
    assert hello["origin"] == "pyflow-hello-plugin 1.0.0"
    assert hello["config_schema"]["properties"]["punctuation"]["anyOf"][0]["enum"] == ["!", ".", "?"]


@pytest.mark.slow
def test_the_example_plugins_own_test_passes(plugin_env):
    result = subprocess.run([plugin_env, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(EXAMPLE / "tests")], cwd=ROOT, env=_child_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_run_py_list_shows_a_plugins_workflows(tmp_path):
    """docs/plugins.md: `run.py list` reads the entry points as a server does."""
    plugins = tmp_path / "site"
    _write_distribution(plugins, "listed-plugin", """
        [pyflow.workflows]
        flows = listed_flows
    """, {"listed_flows": """
        from actions.log import LogAction
        from workflows.base import Workflow

        class Listed(Workflow):
            name = "from_a_plugin"
            description = "A workflow an installed package adds."
            actions = [LogAction("say", message="hi")]
    """})
    result = subprocess.run([sys.executable, "run.py", "list"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=_child_env(PYTHONPATH=f"{plugins}{os.pathsep}{ROOT}",
                                           WORKFLOW_STORAGE_PATH=str(tmp_path / "data")))
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:2] == ["from_a_plugin", "manual"] for line in result.stdout.splitlines())


@pytest.mark.slow
def test_installing_the_example_plugin_leaves_git_status_clean(plugin_env):
    """What pip builds in the plugin's folder (build/, *.egg-info) is ignored, as a user installs it in the checkout."""
    built = plugin_env.parent.parent.parent / "pyflow-hello-plugin"
    made = [path.relative_to(built) for path in built.rglob("*")
            if path.is_file() and not (EXAMPLE / path.relative_to(built)).exists()]
    assert made  # the fixture's install built in the copy
    names = [str(Path("examples") / EXAMPLE.name / path) for path in made]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=ROOT, capture_output=True, text=True)
    assert sorted(set(names) - set(ignored.stdout.split())) == []
