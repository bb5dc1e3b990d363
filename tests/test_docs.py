"""README.md and docs/: every relative link leads somewhere, and the settings table lists every setting."""

from __future__ import annotations

import importlib
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

# Pages written on other branches of issue 13; a link to one is checked once it exists.

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[(?:[^\]\n]|\][^(])*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The page without fenced code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """Every anchor a page's headings make (a repeated heading gets -1, -2...)."""
    anchors: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = base = _slug(heading)
        count = 0
        while slug in anchors:
            count += 1
            slug = f"{base}-{count}"
        anchors.add(slug)
    return anchors


def _broken_links(page: Path) -> list[str]:
    """Each relative link of ``page`` whose file or heading does not exist, with the reason."""
    problems = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        where = destination.relative_to(ROOT).as_posix() if destination.is_relative_to(ROOT) else str(destination)
        if not destination.exists():
            problems.append(f"{target}: no file {where}")
            continue
        if anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
            problems.append(f"{target}: no heading #{anchor} in {where}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    """A reader who follows a link in README.md or docs/ lands on an existing file and heading."""
    assert _broken_links(page) == []


def test_readme_fits_in_20_kb():
    """README stays the first steps; the manual is in docs/."""
    assert (ROOT / "README.md").stat().st_size <= 20 * 1024


def test_settings_table_lists_every_setting():
    """docs/settings.md is the reference: every setting PyFlow reads is in its table; README links to it."""
    settings = importlib.import_module("app.core.config").SETTINGS
    table = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*\b", table))
    assert sorted(set(settings) - documented) == []
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/settings.md)" in readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]


def test_readme_tour_starts_one_server_and_stops_it():
    """The tour starts one server in the background and says how to stop it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tour = readme.split("\n## A five-minute tour\n", 1)[1].split("\n## ", 1)[0]
    commands = "\n".join(re.findall(r"```sh\n(.*?)```", tour, re.S))
    # A server is `python run.py` with no command after it (only redirections, `&` or a comment).
    servers = re.findall(r"python run\.py(?: serve)?[ \t]*(?:[>&#][^\n]*)?$", commands, re.M)
    assert len(servers) == 1
    assert servers[0].rstrip().split("#")[0].rstrip().endswith("&")
    assert "kill %1" in commands


def test_ci_runs_the_readme_test_command():
    """.ci/run runs the test command README gives, so what a newcomer types is what CI checks."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pip install -r requirements-dev.txt && python -m pytest" in readme
    assert re.search(r"python -m pip install( --quiet)? -r requirements-dev\.txt && python -m pytest", ci)


def test_python_workflows_page_lists_every_workflow_attribute_and_step_option():
    """docs/python-workflows.md's table has a row per Workflow setting; its BaseAction line names every option."""
    import inspect

    from actions.base import BaseAction
    from workflows.base import Workflow

    page = (ROOT / "docs" / "python-workflows.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `(\w+)` \|", page, re.M))
    # origin, source, version and definition are set by the loader, not by the class's author.
    settable = {name for name in Workflow.__annotations__ if name not in ("origin", "source", "version", "definition")}
    assert sorted(settable - rows) == []
    signature = re.search(r"`BaseAction\((.*?)\)`", page, re.S).group(1)
    options = [name for name in inspect.signature(BaseAction.__init__).parameters if name not in ("self", "name")]
    assert [name for name in options if f"{name}=" not in signature] == []


@pytest.mark.parametrize("page", ["docs/settings.md", "README.md"])
def test_settings_page_names_every_secret_setting(page):
    """The sentence on secrets in docs/settings.md and README names each setting kept out of answers and logs."""
    from app.core.config import SECRET_SETTINGS

    text = (ROOT / page).read_text(encoding="utf-8")
    sentence = text.split("Passwords, tokens and keys", 1)[1].split("\n\n", 1)[0]
    assert sorted(name for name in SECRET_SETTINGS if f"`{name}`" not in sentence) == []


def test_the_settings_table_gives_each_numeric_default_as_the_code_has_it():
    """A row of docs/settings.md naming one setting states the default load_settings() gives it."""
    from app.core.config import SETTINGS

    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    wrong = []
    for name, default in re.findall(r"^\| ([A-Z][A-Z0-9_]+) \| ([^|]+?) \|", page, re.M):
        code = SETTINGS[name][0]
        if isinstance(code, bool):
            expected = str(code).lower()
        elif isinstance(code, (int, float)):
            expected = str(int(code)) if float(code).is_integer() else str(code)
        elif isinstance(code, str) and code and " " not in default:
            expected = code.strip("`")
        else:
            continue  # (none), a path, a list: said in words
        if default.strip("`") != expected:
            wrong.append(f"{name}: the page says {default}, the code {code!r}")
    assert wrong == []


def test_the_shipped_templates_are_counted_and_named_where_the_docs_list_them():
    """Every definition in workflows/definitions is described, and the pages that count them say how many."""
    names = sorted(path.stem for path in (ROOT / "workflows" / "definitions").glob("*.y*ml"))
    count = ("one two three four five six seven eight nine ten".split())[len(names) - 1]
    shipped = (ROOT / "docs" / "shipped-workflows.md").read_text(encoding="utf-8")
    assert f"and {count}\ndeclarative templates" in shipped
    assert [name for name in names if f"- **{name}**" not in shipped] == []
    library = (ROOT / "docs" / "task-library.md").read_text(encoding="utf-8")
    sentence = library.split("shipped definitions to copy", 1)
    assert sentence[0].rsplit("\n", 1)[-1].strip().lower() == count
    assert [name for name in names if name not in sentence[1].split(") are described", 1)[0]] == []
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    assert f"the {count} templates to copy" in index


@pytest.mark.parametrize(("page", "section"), [("task-library.md", "The task library"),
                                                ("task-library.md", "Triggers")])
def test_a_pages_contents_line_links_every_heading_of_its_section(page, section):
    """The contents line of a section (its bullet at the top of the page) links each of its sub-headings."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    contents = next(line for line in text.splitlines() if line.startswith(f"- [{section}]("))
    body = FENCE.sub("", text).split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    # Cron, webhook and file drop are listed; the headings that group them (####'s parents) need not be.
    headings = [h for h in re.findall(r"^#{3,4} (.+)$", body, re.M) if h != "Schedules and event triggers"
                and not h.startswith("Interval and cron")]
    assert [h for h in headings if f"(#{_slug(h)})" not in contents] == []


def test_the_run_record_page_lists_every_run_and_step_status():
    """docs/durability.md, where api.md sends a reader for the Run, names each status a run or step can have."""
    from app.runs import RunStatus, StepStatus

    page = (ROOT / "docs" / "durability.md").read_text(encoding="utf-8")
    runs, steps = page.split("- Run statuses: ", 1)[1].split(". ", 1)[0].split("; step statuses: ")
    assert [status.value for status in RunStatus if f"`{status.value}`" not in runs] == []
    assert [status.value for status in StepStatus if f"`{status.value}`" not in steps] == []


def test_the_dashboard_page_lists_every_page_of_the_dashboard(app):
    """docs/dashboard.md's Pages section names the path of every page the dashboard serves."""
    page = (ROOT / "docs" / "dashboard.md").read_text(encoding="utf-8")
    pages = page.split("\n## Pages\n", 1)[1].split("\n## ", 1)[0]
    # The login page and an approval link's page are reached by being sent there, not from the menu.
    unlisted = {"/favicon.ico", "/login", "/approvals/<token>", "/static/dashboard/<filename>"}
    served = {re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", rule.rule) for rule in app.url_map.iter_rules()
              if rule.endpoint.startswith("dashboard.") and "GET" in rule.methods}
    served = {path.replace("<run_id>", "<id>") for path in served - unlisted}
    assert sorted(path for path in served if f"`{path}`" not in pages) == []


def _step_examples(page: Path) -> list[tuple[int, Any]]:
    """Each YAML example of steps on ``page`` (a fenced block, or a one-line `- {name: ...}` span): line, steps."""
    import yaml

    text = page.read_text(encoding="utf-8")
    examples = []
    for match in re.finditer(r"```yaml\n(.*?)```|`(- \{name: [^`]*\})`", text, re.S):
        parsed = yaml.safe_load(match.group(1) or match.group(2))
        steps = parsed if isinstance(parsed, list) else parsed.get("steps") if isinstance(parsed, dict) else None
        if steps and all(isinstance(step, dict) and "type" in step for step in steps):
            examples.append((text.count("\n", 0, match.start()) + 1, parsed))
    return examples


@pytest.mark.parametrize("page", [page.relative_to(ROOT).as_posix() for page in PAGES if _step_examples(page)])
def test_every_step_example_of_a_page_is_a_valid_definition(page, tmp_path):
    """A reader who copies a step from the docs gets one the definition check accepts (no field it refuses)."""
    from app.core.config import load_settings
    from app.core.definitions import checked
    from app.core.secrets import Placeholders
    from app.core.templating import Renderer
    from workflows.declarative import DefinitionError

    # The python step's example calls mypkg.scoring, a module the reader lists in WORKFLOW_PYTHON_MODULES.
    settings = {**load_settings({}), "WORKFLOW_STORAGE_PATH": str(tmp_path), "WORKFLOW_ALLOW_SHELL": True,
                "WORKFLOW_PYTHON_MODULES": ("mypkg",)}
    renderer = Renderer(2.0)
    renderer.provide("secrets", Placeholders())
    examples = _step_examples(ROOT / page)
    assert examples
    problems = []
    for line, example in examples:
        definition = dict(example) if isinstance(example, dict) else {"steps": example}
        definition.setdefault("name", "example")
        # An example shows the steps it is about; a step it refers to (on_failure: alert) may be elsewhere.
        names = {step["name"] for step in definition["steps"] if "name" in step}
        for step in definition["steps"]:
            if os.geteuid() == 0 and isinstance(step.get("limits"), dict):
                step["limits"].pop("processes", None)  # refused under root, as the page says
            if isinstance(step.get("on_failure"), str) and step["on_failure"] not in ("fail", "continue", *names):
                step["on_failure"] = "fail"
        try:
            checked(definition, f"{page}:{line}", settings, renderer)
        except DefinitionError as error:
            problems += [f"{page}:{line}: {problem['path']}: {problem['message']}" for problem in error.problems]
    assert problems == []


def test_readme_names_every_shipped_trigger_and_workflow_attribute():
    """README's short version of the extension API names each trigger type and (table or line) each attribute."""
    from triggers.base import BaseTrigger
    from workflows.base import Workflow

    importlib.import_module("triggers")
    for module in ("cron", "email", "event", "file", "interval", "manual", "poll", "webhook"):
        importlib.import_module(f"triggers.{module}")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Writing a workflow\n", 1)[1].split("\n## ", 1)[0]
    shipped = section.split("Shipped: ", 1)[1].split(".", 1)[0]
    spelled = {"email": "e-mail", "file": "file drop"}
    types = {cls.type for cls in BaseTrigger.__subclasses__() if cls.__module__.startswith("triggers.")}
    assert sorted(kind for kind in types if spelled.get(kind, kind) not in shipped) == []
    settable = {name for name in Workflow.__annotations__ if name not in ("origin", "source", "version", "definition")}
    assert sorted(name for name in settable if f"`{name}`" not in section) == []


def test_the_dashboard_page_names_every_step_type_that_gives_the_run_form_a_file_field():
    """The Run now form takes files for these first steps; docs/dashboard.md says which."""
    from app.dashboard.forms import FILE_STEP_TYPES

    page = (ROOT / "docs" / "dashboard.md").read_text(encoding="utf-8")
    sentence = page.split("Workflows that read files", 1)[1].split("also get a file field", 1)[0]
    assert sorted(kind for kind in FILE_STEP_TYPES if f"`{kind}`" not in sentence) == []


def test_every_endpoint_the_docs_name_is_served(app):
    """Each `METHOD /api/...` written in README.md or docs/ is a route that takes that method."""
    adapter = app.url_map.bind("localhost")
    wrong = []
    for page in PAGES:
        for method, path in re.findall(r"\b(GET|POST|PUT|PATCH|DELETE) (/api/[\w{}<>/.-]*\w[}>]?)",
                                       page.read_text(encoding="utf-8")):
            concrete = re.sub(r"\{[^}]+\}|<[^>]+>", "x1", path).replace("/versions/x1", "/versions/1")
            try:
                adapter.match(concrete, method=method)
            except Exception as error:  # NotFound, MethodNotAllowed
                wrong.append(f"{page.relative_to(ROOT)}: {method} {path}: {type(error).__name__}")
    assert wrong == []


def test_the_docs_index_says_what_readme_lists_of_the_settings():
    """docs/README.md may say README lists every setting only while README's table has every one."""
    settings = importlib.import_module("app.core.config").SETTINGS
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*\b", table)) & set(settings)
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    claims_all = "lists every setting" in index.split("\n\n", 2)[1]
    assert claims_all == (listed == set(settings))


def test_the_storage_page_shows_every_file_and_folder_the_json_store_keeps_in_its_folder():
    """docs/storage.md's layout names each entry the JSON store makes under WORKFLOW_STORAGE_PATH."""
    source = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "app" / "storage" / "json").glob("*.py"))
    made = set(re.findall(r'self\.root / "([\w.]+)"', source))
    assert {"runs", "controls", "secrets.json", "audit.jsonl"} <= made  # the pattern still finds them
    page = (ROOT / "docs" / "storage.md").read_text(encoding="utf-8")
    layout = page.split("\n## Layout on disk\n", 1)[1].split("```", 2)[1]
    listed = {re.split(r"[/\s]", line.strip(), maxsplit=1)[0] for line in layout.splitlines()[2:] if line.strip()}
    assert sorted(made - listed) == []


def test_the_architecture_page_names_every_module_of_app_and_every_command_of_run_py():
    """docs/architecture.md's tree shows where each module of app/ lives (the dashboard's pages aside)."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = page.split("```", 2)[1]
    modules = [path for path in (ROOT / "app").rglob("*.py")
               if path.name != "__init__.py" and "dashboard" not in path.parts]
    assert [path.relative_to(ROOT).as_posix() for path in modules if not re.search(rf"\b{path.stem}\b", tree)] == []
    run_py = tree.split("\napp/", 1)[0]
    commands = set(re.findall(r'\bcommands\.add_parser\("([a-z-]+)"', (ROOT / "run.py").read_text(encoding="utf-8")))
    assert {"serve", "worker", "run"} <= commands  # the pattern still finds them
    assert sorted(name for name in commands if name not in run_py) == []


def test_the_postgres_page_describes_every_migration_and_the_tables_it_makes():
    """docs/postgres.md's schema section names each file of app/storage/migrations and each table it creates."""
    page = (ROOT / "docs" / "postgres.md").read_text(encoding="utf-8")
    schema = page.split("\n## The schema\n", 1)[1].split("\n## ", 1)[0]
    missing = []
    for migration in sorted((ROOT / "app" / "storage" / "migrations").glob("*.sql")):
        if f"`app/storage/migrations/{migration.name}`" not in schema:
            missing.append(migration.name)
        tables = re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", migration.read_text(encoding="utf-8"), re.I)
        missing += [f"{migration.name}: {table}" for table in tables if f"`{table}`" not in schema]
    assert missing == []


@pytest.mark.parametrize("action", ["condition", "file", "llm", "loop", "notify", "python", "shell", "transform",
                                    "wait_for_event", "approval", "workflow"])
def test_the_task_library_names_every_setting_of_an_action(client, action):
    """A reader of an action's section in docs/task-library.md learns of each config key it takes."""
    schema = next(entry["config_schema"] for entry in client.get("/api/catalog").get_json()["actions"]
                  if entry["type"] == action)
    page = (ROOT / "docs" / "task-library.md").read_text(encoding="utf-8")
    section = page.split(f"\n### {action}\n", 1)[1].split("\n### ", 1)[0]  # its prose and its example
    assert [key for key in schema["properties"] if f"`{key}`" not in section and f"{key}:" not in section] == []
