"""The workflow designer (issue 18) in a real browser: Debian's Chromium driven by Playwright against a real run.py.

The page is driven through tests/fixtures/designer_page.py: the designer's data-testid hooks
(docs/designer.md) and React Flow's own classes only. Screenshots of each stage land in
tests/artifacts/designer-*.png (ignored by git). Needs /usr/bin/chromium, as test_dashboard_browser.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from tests.browser import MARKS, PHONE, SAMPLE_PDF, WIDE, shoot
from tests.server import Server, Servers

REPO = Path(__file__).resolve().parent.parent
ADMIN = "designer-admin-token"

pytestmark = MARKS
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
expect = sync_api.expect

from tests.fixtures.designer_page import (  # noqa: E402  (needs playwright, checked just above)
    EDGES,
    FIRST_RENDER_MS,
    NODES,
    centre,
    chain,
    connect,
    create,
    definition,
    drag,
    drop_step,
    explicit_steps,
    fill,
    flow_node,
    in_view,
    node,
    open_advanced,
    open_designer,
    position,
    rename,
    save,
    select,
    show_inputs,
    versions,
    yaml_lines,
)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with Servers(tmp_path_factory.mktemp("designer")) as servers:
        yield servers


@pytest.fixture(scope="module")
def server(servers) -> Server:
    """An open run.py (no token: every visitor is an admin and may save)."""
    return servers.start("open")


@pytest.fixture
def errors() -> list[str]:
    """Uncaught script errors of the test's pages: a designer that throws is broken even if it looks right."""
    return []


@pytest.fixture
def page(browser, errors):
    context = browser.new_context(viewport=WIDE)
    page = watch(context.new_page(), errors)
    yield page
    context.close()


def watch(page, errors: list[str]):
    """Collect the page's uncaught errors; accept its confirm dialogs (restore, leave with unsaved changes)."""
    page.set_default_timeout(15_000)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    return page


# -- 1. build document_processing from an empty canvas -----------------------------------------------------------
DOCUMENT_STEPS = [  # name, palette type, drop point on the canvas
    ("extract", "pdf_text", 120, 60),
    ("analyse", "python", 120, 200),
    ("has_words", "condition", 560, 230),
    ("store", "python", 120, 340),
    ("report", "log", 560, 420),
]
STORE_KWARGS = """db_path: documents.sqlite3
source: "{{ steps.extract.source }}"
pages: "{{ steps.extract.pages }}"
text: "{{ steps.extract.text }}"
analysis: "{{ steps.analyse }}"
"""


def test_build_document_processing_from_an_empty_canvas_save_and_run_it(server, page, errors):
    open_designer(page, server)
    expect(page.locator(f"{NODES}:not([data-testid='node-@trigger'])")).to_have_count(0)
    show_inputs(page)
    page.get_by_test_id("field-workflow-name").fill("designed_documents")
    page.get_by_test_id("field-workflow-description").fill("Read a PDF, analyse its text, keep it in SQLite.")
    # `file`: a path inside WORKFLOW_FILES_ROOT; `attachments`: the run form's file field (uploads land there).
    for index, (input_name, input_type) in enumerate((("file", "string"), ("attachments", "array"))):
        page.get_by_test_id("add-input").click()
        fill(page, f"input-name-{index}", input_name)
        fill(page, f"input-type-{index}", input_type)
    shoot(page, "designer-new-empty")

    page.get_by_test_id("palette-search").fill("pdf")
    expect(page.get_by_test_id("palette-item-pdf_text")).to_be_visible()
    expect(page.get_by_test_id("palette-item-log")).to_have_count(0)
    page.get_by_test_id("palette-search").fill("")
    expect(page.get_by_test_id("palette-group-messaging")).to_be_visible()
    for name, step_type, x, y in DOCUMENT_STEPS:
        rename(page, drop_step(page, step_type, x, y), name)
    shoot(page, "designer-new-dropped")
    for source, target in (("extract", "analyse"), ("analyse", "has_words"), ("has_words", "store"),
                           ("store", "report")):
        edges = page.locator(EDGES).count()
        connect(page, source, target)
        expect(page.locator(EDGES)).to_have_count(edges + 1)

    # The trigger block: like the shipped document_processing, it also reads PDFs dropped into a folder.
    node(page, "@trigger").click()
    fill(page, "field-trigger-type", "file")
    fill(page, "field-trigger-folder", "documents/inbox")
    fill(page, "field-trigger-pattern", "*.pdf")
    expect(node(page, "@trigger")).to_contain_text("documents/inbox")

    select(page, "extract")
    fill(page, "field-config-file", "{{ inputs.file or inputs.attachments }}")
    select(page, "analyse")
    expect(page.get_by_test_id("required-function")).to_be_visible()
    expect(page.get_by_test_id("template-names")).to_contain_text("steps.extract.text")
    expect(page.get_by_test_id("template-names")).to_contain_text("inputs.file")
    expect(page.get_by_test_id("template-names")).to_contain_text("secrets.")
    expect(page.get_by_test_id("template-names")).not_to_contain_text("steps.store")  # a later step
    fill(page, "field-config-function", "workflows.library.analysis:analyse_text")
    fill(page, "field-config-kwargs", 'text: "{{ steps.extract.text }}"')
    select(page, "has_words")
    fill(page, "field-config-condition", '{type: gt, left: "{{ steps.analyse.word_count }}", right: 0}')
    select(page, "store")
    fill(page, "field-config-function", "workflows.library.sqlite_store:insert_document")
    fill(page, "field-config-kwargs", STORE_KWARGS)
    open_advanced(page)
    fill(page, "field-when", "{{ steps.has_words.result }}")
    select(page, "report")
    expect(page.get_by_test_id("required-message")).to_be_visible()
    level = page.get_by_test_id("field-config-level")  # an enum: offered as choices
    assert level.evaluate("field => field.tagName") == "SELECT"
    assert {"debug", "info", "warning", "error"} <= set(level.locator("option").all_inner_texts())
    fill(page, "field-config-level", "info")  # the message, required, is left out for now

    # Validation as you go points at the node, the field and the path of what is missing.
    expect(page.get_by_test_id("validate-status")).to_have_text("1 problem")
    expect(node(page, "report")).to_have_class(re.compile(r"\bnode-error\b"))
    expect(node(page, "report").get_by_test_id("node-problem")).to_contain_text("is required")
    problem = page.get_by_test_id("problems").get_by_test_id("problem")
    expect(problem).to_have_count(1)
    expect(problem).to_contain_text("steps[4].config.message")
    expect(problem).to_contain_text("is required")
    for name in ("extract", "analyse", "has_words", "store"):
        expect(node(page, name)).not_to_have_class(re.compile(r"\bnode-error\b"))
    shoot(page, "designer-new-problem")
    select(page, "analyse")
    problem.click()
    expect(page.get_by_test_id("field-name")).to_have_value("report")
    expect(page.get_by_test_id("field-error-message")).to_contain_text("is required")
    expect(page.get_by_test_id("field-config-message")).to_be_focused()

    fill(page, "field-config-message", "stored document {{ steps.store.id }} ({{ steps.analyse.word_count }} words)")
    expect(page.get_by_test_id("validate-status")).to_have_text("valid")
    expect(node(page, "report")).not_to_have_class(re.compile(r"\bnode-error\b"))
    expect(page.get_by_test_id("problems").get_by_test_id("problem")).to_have_count(0)
    save(page, 1)
    shoot(page, "designer-new-saved")

    saved = definition(server, "designed_documents")
    assert [step["name"] for step in saved["steps"]] == [name for name, *_ in DOCUMENT_STEPS]
    assert {step["name"]: step["depends_on"] for step in saved["steps"]} == {
        "extract": [], "analyse": ["extract"], "has_words": ["analyse"], "store": ["has_words"], "report": ["store"]}
    steps = {step["name"]: step for step in saved["steps"]}
    assert steps["analyse"]["config"] == {"function": "workflows.library.analysis:analyse_text",
                                          "kwargs": {"text": "{{ steps.extract.text }}"}}
    assert steps["has_words"]["config"]["condition"] == {"type": "gt", "left": "{{ steps.analyse.word_count }}",
                                                         "right": 0}
    assert steps["store"]["when"] == "{{ steps.has_words.result }}"
    assert steps["store"]["config"]["kwargs"]["analysis"] == "{{ steps.analyse }}"
    assert set(saved["inputs"]["properties"]) == {"file", "attachments"}
    assert saved["trigger"] == {"type": "file", "folder": "documents/inbox", "pattern": "*.pdf"}
    assert set(saved["layout"]) >= {name for name, *_ in DOCUMENT_STEPS}
    for name, x_y in saved["layout"].items():
        assert len(x_y) == 2 and all(isinstance(value, (int, float)) for value in x_y), name

    # Run now: the run form with an uploaded PDF, then the run page.
    run_now = page.get_by_test_id("run-now")
    if run_now.get_attribute("target") == "_blank":
        with page.context.expect_page() as opened:
            run_now.click()
        form = watch(opened.value, errors)
    else:
        run_now.click()
        form = page
    expect(form).to_have_url(re.compile(r"/workflows/designed_documents/run$"))
    form.set_input_files("#input-files", str(SAMPLE_PDF))
    shoot(form, "designer-new-run-form")
    form.get_by_role("button", name="Start run").click()
    expect(form).to_have_url(re.compile(r"/runs/run_[0-9a-f]+$"))
    expect(form.locator("#run-status")).to_have_text("succeeded", timeout=30_000)
    for name, *_ in DOCUMENT_STEPS:
        expect(form.locator(f'tr[data-step="{name}"] .step-status')).to_have_text("succeeded")
    expect(form.locator("#step-graph g.node")).to_have_count(len(DOCUMENT_STEPS))
    # The run page draws the designer's picture: the boxes stand as the nodes stood on the canvas.
    boxes = {name: form.locator(f'#step-graph g.node[data-step="{name}"]').bounding_box()
             for name, *_ in DOCUMENT_STEPS}
    assert boxes["has_words"]["x"] > boxes["analyse"]["x"] + boxes["analyse"]["width"] / 2
    assert boxes["report"]["x"] > boxes["store"]["x"] + boxes["store"]["width"] / 2
    assert boxes["extract"]["y"] < boxes["analyse"]["y"] < boxes["store"]["y"] < boxes["report"]["y"]
    expect(form.locator('#step-graph g.node[data-step="report"]')).to_contain_text("succeeded")
    expect(form.locator("#logs")).to_contain_text("stored document 1")
    shoot(form, "designer-new-run")
    assert not errors


def test_the_trigger_block_stays_in_view_when_the_first_step_is_dropped(server, page, errors):
    open_designer(page, server)
    assert in_view(page, "@trigger")
    name = drop_step(page, "log", 120, 40)  # near the top left, where a first step often goes
    assert in_view(page, name)
    shoot(page, "designer-first-drop")
    assert in_view(page, "@trigger"), "the trigger block left the visible canvas when the first step was dropped"
    assert not errors


# -- 2. a shipped template: move, edit as YAML, version, history, restore -----------------------------------------
@pytest.fixture(scope="module")
def template(server) -> str:
    """An API-made copy of the shipped data_pipeline definition (file-defined workflows open read-only)."""
    text = (REPO / "workflows" / "definitions" / "data_pipeline.yaml").read_text(encoding="utf-8")
    create(server, text.replace("name: data_pipeline", "name: pipeline_template", 1))
    return "pipeline_template"


PIPELINE = ["fetch", "normalise", "dedupe", "validate", "split", "load", "report"]


def test_a_template_moved_edited_as_yaml_versioned_and_restored(server, page, template, errors):
    first = definition(server, template, 1)
    open_designer(page, server, template)
    for name in PIPELINE:
        expect(node(page, name)).to_be_visible()
    expect(page.locator(EDGES)).to_have_count(len(PIPELINE) - 1)  # "the step before", drawn as edges
    expect(page.get_by_test_id("yaml-editor")).to_contain_text(f"name: {template}")
    shoot(page, "designer-template-opened")

    # Move a node by hand.
    before = position(page, "report")
    start = centre(node(page, "report"))
    drag(page, start, (start[0] + 160, start[1] + 40))
    moved = position(page, "report")
    assert moved[0] - before[0] > 80 and moved[1] - before[1] > 20, (before, moved)

    # Change a field in the YAML view: the inspector follows.
    line = yaml_lines(page).filter(has_text=re.compile(r"^\s*by: id\s*$"))
    expect(line).to_have_count(1)
    line.click()
    page.keyboard.press("End")
    page.keyboard.press("Backspace")
    page.keyboard.press("Backspace")
    page.keyboard.type("email")
    expect(page.get_by_test_id("yaml-error")).to_be_hidden()
    select(page, "dedupe")
    expect(page.get_by_test_id("field-config-by")).to_have_value(re.compile(r"^\s*email\s*$"))
    expect(node(page, "dedupe")).to_be_visible()
    shoot(page, "designer-template-edited")

    save(page, 2)
    second = definition(server, template)
    assert {step["name"]: step for step in second["steps"]}["dedupe"]["config"]["by"] == "email"
    assert second["layout"]["report"] == pytest.approx(list(moved), abs=1)
    assert [step["depends_on"] for step in second["steps"]] == [[], *[[name] for name in PIPELINE[:-1]]]
    open_designer(page, server, template)  # opened again: the positions the user set are kept
    assert position(page, "report") == pytest.approx(moved, abs=1)

    page.get_by_test_id("history").click()
    expect(page.get_by_test_id("version-1")).to_be_visible()
    expect(page.get_by_test_id("version-2")).to_be_visible()
    page.get_by_test_id("version-2").click()
    diff = page.get_by_test_id("version-diff")
    expect(diff).to_contain_text(re.compile(r"-\s*by: id"))
    expect(diff).to_contain_text(re.compile(r"\+\s*by: email"))
    shoot(page, "designer-template-history")

    page.get_by_test_id("restore-1").click()
    expect(page.get_by_test_id("save-status")).to_contain_text("Saved version 3")
    select(page, "dedupe")
    expect(page.get_by_test_id("field-config-by")).to_have_value(re.compile(r"^\s*id\s*$"))
    shoot(page, "designer-template-restored")
    assert versions(server, template) == [3, 2, 1]
    assert explicit_steps(definition(server, template, 3)["steps"]) == explicit_steps(first["steps"])
    assert not errors


def test_a_file_defined_workflow_opens_as_a_copy_saved_under_a_new_name(server, page, errors):
    page.goto(server.url + "/")
    page.get_by_role("link", name="Open data_pipeline in the designer").click()
    expect(page).to_have_url(re.compile(r"/designer/data_pipeline$"))
    expect(page.get_by_test_id("canvas")).to_be_visible(timeout=FIRST_RENDER_MS)
    for name in PIPELINE:
        expect(node(page, name)).to_be_visible()
    expect(page.get_by_test_id("copy-notice")).to_be_visible()
    page.get_by_test_id("save").click()
    expect(page.get_by_test_id("save-status")).to_contain_text("Not saved")
    expect(page.get_by_test_id("save-status")).to_contain_text("new name")
    shoot(page, "designer-file-copy")

    show_inputs(page)
    page.get_by_test_id("field-workflow-name").fill("pipeline_copy")
    save(page, 1)
    copy = server.get("/api/workflows/pipeline_copy").json()
    assert copy["origin"] == "api" and copy["version"] == 1
    shipped = server.get("/api/workflows/data_pipeline").json()
    assert shipped["origin"] == "file"
    assert explicit_steps(copy["definition"]["steps"]) == explicit_steps(shipped["definition"]["steps"])
    page.goto(server.url + "/")
    expect(page.get_by_role("link", name="Edit pipeline_copy in the designer")).to_be_visible()
    assert not errors


# -- 3. bad input ------------------------------------------------------------------------------------------------
def test_yaml_that_does_not_parse_keeps_the_canvas(server, page, errors):
    create(server, chain("broken_yaml", "first", "second", "third"))
    open_designer(page, server, "broken_yaml")
    expect(page.locator(EDGES)).to_have_count(2)
    editor = page.get_by_test_id("yaml-editor").locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    # Line 3 opens a flow map that never closes: the parser notices at the start of line 4.
    page.keyboard.insert_text("name: broken_yaml\nsteps:\n  - {name: first, type: log\n")
    error = page.get_by_test_id("yaml-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("line 4, column 1: ")
    for name in ("first", "second", "third"):
        expect(node(page, name)).to_be_visible()
    expect(page.locator(EDGES)).to_have_count(2)
    shoot(page, "designer-yaml-error")
    assert not errors


def test_an_edge_that_makes_a_cycle_is_refused(server, page, errors):
    create(server, chain("cyclic", "first", "second", "third"))
    open_designer(page, server, "cyclic")
    expect(page.locator(EDGES)).to_have_count(2)
    mentions = yaml_lines(page).filter(has_text="third")  # its name and its message: no depends_on names it
    expect(mentions).to_have_count(2)
    connect(page, "third", "first")
    expect(page.get_by_test_id("toast")).to_contain_text("cycle")
    expect(page.locator(EDGES)).to_have_count(2)
    expect(mentions).to_have_count(2)
    expect(page.get_by_test_id("validate-status")).to_have_text("valid")
    shoot(page, "designer-cycle-refused")
    assert not errors


def test_saving_a_stale_copy_shows_the_conflict_and_loses_nothing(server, page, errors):
    create(server, chain("contested", "first", "second"))
    open_designer(page, server, "contested")
    expect(node(page, "second")).to_be_visible()

    # Someone else changes the definition through the API meanwhile.
    theirs = chain("contested", "first", "second")
    theirs["steps"][0]["config"]["message"] = "changed by someone else"
    assert requests.put(server.url + "/api/workflows/contested", json=theirs, timeout=10).status_code == 200

    select(page, "second")
    fill(page, "field-config-message", "my edit")
    expect(page.get_by_test_id("validate-status")).to_have_text("valid")
    page.get_by_test_id("save").click()
    conflict = page.get_by_test_id("conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("version 2")
    expect(conflict).to_contain_text(re.compile(r"-\s*message: first ran"))  # the diff: version 1 -> 2
    expect(conflict).to_contain_text(re.compile(r"\+\s*message: changed by someone else"))
    expect(page.get_by_test_id("field-config-message")).to_have_value("my edit")  # the draft is kept
    shoot(page, "designer-conflict")
    assert versions(server, "contested") == [2, 1]  # nothing stored
    assert definition(server, "contested")["steps"][1]["config"]["message"] == "second ran"

    page.get_by_test_id("conflict-overwrite").click()
    expect(conflict).to_be_hidden()
    expect(page.get_by_test_id("save-status")).to_contain_text("Saved version 3")
    assert versions(server, "contested") == [3, 2, 1]
    assert definition(server, "contested")["steps"][1]["config"]["message"] == "my edit"
    assert definition(server, "contested", 2)["steps"][0]["config"]["message"] == "changed by someone else"

    # Again, and this time take the stored version: undo brings the draft back.
    theirs["steps"][0]["config"]["message"] = "changed again"
    assert requests.put(server.url + "/api/workflows/contested", json=theirs, timeout=10).status_code == 200
    select(page, "second")
    fill(page, "field-config-message", "my second edit")
    page.get_by_test_id("save").click()
    expect(conflict).to_contain_text(re.compile(r"\+\s*message: changed again"))
    page.get_by_test_id("conflict-reload").click()
    expect(conflict).to_be_hidden()
    select(page, "first")
    expect(page.get_by_test_id("field-config-message")).to_have_value("changed again")
    page.get_by_test_id("undo").click()
    select(page, "second")
    expect(page.get_by_test_id("field-config-message")).to_have_value("my second edit")
    save(page, 5)  # on top of version 4, the one reloaded
    assert definition(server, "contested")["steps"][1]["config"]["message"] == "my second edit"
    assert versions(server, "contested") == [5, 4, 3, 2, 1]
    assert not errors


SHOUT_PLUGIN = {  # an installed distribution as importlib.metadata reads one: a .dist-info folder beside its module
    "designer_shout-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: designer-shout\nVersion: 0.1\n",
    "designer_shout-0.1.dist-info/entry_points.txt": "[pyflow.actions]\nshout = designer_shout:ShoutAction\n",
    "designer_shout.py": (
        "from actions.base import BaseAction\n\n\n"
        "class ShoutAction(BaseAction):\n"
        "    type = 'shout'\n\n"
        "    def __init__(self, name, *, text, **options):\n"
        "        super().__init__(name, **options)\n"
        "        self.text = text\n\n"
        "    def execute(self, data_store):\n"
        "        return {'text': self.text.upper()}\n"),
}


def test_a_step_whose_plugin_is_gone_is_marked_and_the_rest_stays_editable(servers, page, tmp_path, errors):
    plugin = tmp_path / "site"
    for relative, text in SHOUT_PLUGIN.items():
        (plugin / relative).parent.mkdir(parents=True, exist_ok=True)
        (plugin / relative).write_text(text, encoding="utf-8")
    server = servers.make("plugin", pythonpath=(str(plugin),)).start()
    create(server, {"name": "loud", "steps": [
        {"name": "shout", "type": "shout", "depends_on": [], "config": {"text": "hello"}},
        {"name": "after", "type": "log", "depends_on": ["shout"], "config": {"message": "{{ steps.shout.text }}"}}]})
    server.env["PYTHONPATH"] = str(REPO)  # the plugin is uninstalled
    server.restart()

    open_designer(page, server, "loud")
    expect(node(page, "shout")).to_have_class(re.compile(r"\bnode-error\b"))
    expect(node(page, "shout").get_by_test_id("node-problem")).to_contain_text("shout")
    expect(node(page, "after")).not_to_have_class(re.compile(r"\bnode-error\b"))
    select(page, "after")
    fill(page, "field-config-message", "still editable")
    expect(page.get_by_test_id("yaml-editor")).to_contain_text("message: still editable")
    expect(page.get_by_test_id("yaml-editor")).to_contain_text("text: hello")  # the unknown step is kept as it is
    shoot(page, "designer-plugin-gone")
    assert not errors


def test_a_definition_over_the_size_limit_is_refused_with_the_limit(servers, page, errors):
    server = servers.start("small", {"WORKFLOW_MAX_DEFINITION_KB": "3"})  # the shipped definitions are under 3 KB
    open_designer(page, server)
    page.get_by_test_id("yaml-editor").locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text("name: bulky_draft\ndescription: " + "y" * 3500 + "\nsteps:\n"
                              "  - {name: say, type: log, depends_on: [], config: {message: hi}}\n")
    expect(page.get_by_test_id("yaml-error")).to_contain_text("over the limit of 3072 bytes")
    expect(node(page, "say")).to_have_count(0)  # the model keeps its last good state
    shoot(page, "designer-too-large")

    # The same through the form: saving is refused before anything is sent.
    open_designer(page, server)
    page.get_by_test_id("field-workflow-name").fill("bulky_form")
    page.get_by_test_id("field-workflow-description").fill("z" * 3500)
    page.get_by_test_id("palette-item-log").press("Enter")
    fill(page, "field-config-message", "hi")
    page.get_by_test_id("save").click()
    expect(page.get_by_test_id("save-status")).to_contain_text("Not saved")
    expect(page.get_by_test_id("save-status")).to_contain_text("over the limit of 3072 bytes")
    for name in ("bulky_draft", "bulky_form"):
        assert server.get(f"/api/workflows/{name}").status_code == 404
    assert not errors


# -- 4. roles and phone width ------------------------------------------------------------------------------------
def log_in(page, server: Server, token: str) -> None:
    page.goto(server.url + "/login")
    page.fill("#token", token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(server.url + "/")


def test_a_viewer_sees_the_designer_read_only_and_an_admin_may_save(servers, browser, errors):
    locked = servers.start("locked", {"WORKFLOW_API_TOKEN": ADMIN})
    admin = {"Authorization": f"Bearer {ADMIN}"}
    create(locked, chain("watched", "first", "second"), headers=admin)
    response = locked.post("/api/tokens", json={"name": "viewer", "role": "viewer"}, headers=admin)
    assert response.status_code == 201, response.text
    for token, role in ((response.json()["token"], "viewer"), (ADMIN, "admin")):
        context = browser.new_context(viewport=WIDE)
        try:
            page = watch(context.new_page(), errors)
            log_in(page, locked, token)
            open_designer(page, locked, "watched")
            expect(node(page, "second")).to_be_visible()
            save_button = page.get_by_test_id("save")
            if role == "viewer":
                expect(page.get_by_test_id("readonly-notice")).to_be_visible()
                assert save_button.count() == 0 or not save_button.is_visible() or save_button.is_disabled()
                node(page, "second").click()
                page.keyboard.press("Delete")
                expect(page.get_by_test_id("field-name")).to_be_disabled()
                expect(node(page, "second")).to_be_visible()  # nothing to delete for a viewer
                shoot(page, "designer-viewer")
            else:
                expect(page.get_by_test_id("readonly-notice")).to_be_hidden()
                expect(save_button).to_be_enabled()
        finally:
            context.close()
    assert not errors


def test_at_phone_width_the_designer_offers_the_yaml_view(server, browser, errors):
    create(server, chain("pocket", "first", "second"))
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    try:
        phone = watch(context.new_page(), errors)
        phone.goto(server.url + "/designer/pocket")
        expect(phone.get_by_test_id("narrow-notice")).to_contain_text("The designer needs a wider screen",
                                                                      timeout=FIRST_RENDER_MS)
        expect(phone.get_by_test_id("yaml-editor")).to_be_visible()
        expect(phone.get_by_test_id("yaml-editor")).to_contain_text("name: pocket")
        expect(phone.get_by_test_id("canvas")).to_be_hidden()
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        shoot(phone, "designer-phone")
    finally:
        context.close()
    assert not errors


# -- 5. undo, redo and the Delete key ----------------------------------------------------------------------------
def test_delete_a_node_with_the_keyboard_then_undo_and_redo(server, page, errors):
    create(server, chain("undoable", "first", "second", "third"))
    open_designer(page, server, "undoable")
    expect(page.locator(EDGES)).to_have_count(2)
    yaml = page.get_by_test_id("yaml-editor")
    node(page, "second").click()
    page.keyboard.press("Delete")
    expect(node(page, "second")).to_have_count(0)
    expect(yaml).not_to_contain_text("name: second")
    shoot(page, "designer-deleted")

    page.get_by_test_id("undo").click()
    expect(node(page, "second")).to_be_visible()
    expect(page.locator(EDGES)).to_have_count(2)
    expect(yaml).to_contain_text("name: second")
    page.get_by_test_id("redo").click()
    expect(node(page, "second")).to_have_count(0)
    expect(yaml).not_to_contain_text("name: second")
    page.get_by_test_id("undo").click()
    expect(node(page, "second")).to_be_visible()

    # Enter on a palette item adds a step at a free spot; undo takes it away again.
    page.get_by_test_id("palette-item-wait").press("Enter")
    expect(node(page, "wait")).to_be_visible()
    expect(yaml).to_contain_text("name: wait")
    page.get_by_test_id("undo").click()
    expect(node(page, "wait")).to_have_count(0)
    expect(page.locator(NODES)).to_have_count(4)  # the trigger and the three steps
    page.keyboard.press("Control+Shift+Z")  # the same from the keyboard
    expect(node(page, "wait")).to_be_visible()
    page.keyboard.press("Control+Z")
    expect(node(page, "wait")).to_have_count(0)

    # An edge too: select it, press Delete, and the step no longer depends on the other.
    (x1, y1), (x2, y2) = (centre(flow_node(page, "first").locator(".react-flow__handle.source")),
                          centre(flow_node(page, "second").locator(".react-flow__handle.target")))
    page.mouse.click((x1 + x2) / 2, (y1 + y2) / 2)  # the middle of the arrow from first to second
    expect(page.get_by_test_id("delete-edge")).to_be_visible()
    page.keyboard.press("Delete")
    expect(page.locator(EDGES)).to_have_count(1)
    expect(yaml).to_contain_text(re.compile(r"name: second\s+type: log\s+depends_on: \[\]"))
    page.keyboard.press("Control+Z")
    expect(page.locator(EDGES)).to_have_count(2)
    assert not errors
