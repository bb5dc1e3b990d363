"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real run.py.

Screenshots of every page land in tests/artifacts/ (ignored by git). Needs
/usr/bin/chromium (``apt-get install chromium``); Playwright's own browser
downloads are never used.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import ARTIFACTS, MARKS, PHONE, SAMPLE_PDF, WIDE, shoot
from tests.fixtures import side_effect_lines, wait_until
from tests.server import Server, Servers

TOKEN = "browser-test-token"

pytestmark = MARKS
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
expect = sync_api.expect


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with Servers(tmp_path_factory.mktemp("dashboard")) as servers:
        yield servers


@pytest.fixture(scope="module")
def server(servers) -> Server:
    """run.py with the test workflows (tests.fixtures.workflows) and a branching definition to draw."""
    server = servers.start("open")
    diamond = {"name": "diamond", "description": "Two branches that meet again.", "steps": [
        {"name": "fetch", "type": "wait", "config": {"seconds": 0.2}},
        {"name": "parse", "type": "log", "config": {"message": "parsed"}},
        {"name": "enrich", "type": "wait", "depends_on": ["fetch"], "config": {"seconds": 0.3}},
        {"name": "store", "type": "log", "depends_on": ["parse", "enrich"], "config": {"message": "stored"}},
    ]}
    assert server.post("/api/workflows", json=diamond).status_code == 201
    return server


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def mark_page(page) -> None:
    """Set a flag a reload would wipe: proves later changes came from polling, not navigation."""
    page.evaluate("window.__noReload = true")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__noReload === true"), "the page was reloaded"


def test_run_now_with_an_uploaded_pdf_to_a_finished_run(server, page):
    page.goto(server.url + "/")
    expect(page.locator('tr[data-workflow="insurance_application"]')).to_be_visible()
    shoot(page, "workflows")
    page.get_by_role("link", name="Run insurance_application now").click()

    expect(page).to_have_url(re.compile(r"/workflows/insurance_application/run$"))
    page.set_input_files("#input-files", str(SAMPLE_PDF))
    shoot(page, "run-form")
    page.get_by_role("button", name="Start run").click()

    expect(page).to_have_url(re.compile(r"/runs/run_[0-9a-f]+$"))
    expect(page.locator("#run-progress .progress-text")).to_have_text("100%", timeout=20_000)
    expect(page.locator("#run-status")).to_have_text("succeeded")
    steps = page.locator("#steps-table tbody tr")
    expect(steps).to_have_count(4)
    expect(page.locator('tr[data-step="extract"] .step-status')).to_have_text("succeeded")
    expect(page.locator('tr[data-step="validate"] .step-status')).to_have_text("succeeded")
    expect(page.locator('tr[data-step="unreadable"] .step-status')).to_have_text("skipped")  # extract's handler
    page.locator('tr[data-step="extract"] details.result summary').click()
    expect(page.locator('tr[data-step="extract"] details.result pre')).to_contain_text('"template": "company_a"')
    expect(page.locator("#logs")).to_contain_text("run started")
    expect(page.locator("#logs")).to_contain_text("run succeeded")
    shoot(page, "run-insurance-application")


def test_progress_and_logs_update_live_until_the_run_finishes(server, page):
    page.goto(server.url + "/workflows/slow/run")
    page.fill("#inputs_json", '{"seconds": 2.5}')
    page.get_by_role("button", name="Start run").click()
    expect(page).to_have_url(re.compile(r"/runs/run_[0-9a-f]+$"))
    mark_page(page)

    expect(page.locator("#run-status")).to_have_text("running")
    expect(page.locator('#run-controls form[action$="/cancel"]')).to_be_visible()
    shoot(page, "run-live")
    expect(page.locator("#run-progress .progress-text")).to_have_text("100%", timeout=10_000)

    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator("#logs")).to_contain_text("run succeeded")
    expect(page.locator('#run-controls form[action$="/cancel"]')).to_be_hidden()
    expect(page.locator("#live-note")).to_have_text("")
    assert_not_reloaded(page)


def test_runs_list_shows_new_runs_without_reload(server, page):
    page.goto(server.url + "/runs?workflow=echo")
    mark_page(page)

    created = server.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "live"}}).json()

    row = page.locator(f'#runs-table tr[data-run="{created["id"]}"]')
    expect(row).to_be_visible(timeout=5_000)
    expect(row).to_contain_text("succeeded")
    expect(row.locator(".progress-text")).to_have_text("100%")
    assert_not_reloaded(page)
    shoot(page, "runs")
    page.get_by_role("link", name=created["id"]).click()
    expect(page.locator('tr[data-step="shout"]')).to_contain_text("LIVE")


def test_stop_and_start_a_persistent_workflow(server, page):
    ticks = server.storage / "ticks.txt"
    page.goto(server.url + "/")
    row = page.locator('tr[data-workflow="tick"]')
    expect(row).to_contain_text("stopped")

    row.get_by_role("button", name="Start tick").click()
    expect(page.locator(".flash-success")).to_have_text("tick is running.")
    expect(page.locator('tr[data-workflow="tick"]')).to_contain_text("running")
    # An interval trigger says when it fires next, under its status.
    expect(page.locator('tr[data-workflow="tick"] .next-fire time')).to_have_attribute(
        "datetime", re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"))
    wait_until(lambda: len(side_effect_lines(ticks)) >= 2, timeout=5, message="tick runs")  # every 0.2 s
    shoot(page, "workflows-tick-running")
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator('tr[data-workflow="tick"]').screenshot(path=str(ARTIFACTS / "workflows-tick-row.png"))

    page.locator('tr[data-workflow="tick"]').get_by_role("button", name="Stop tick").click()
    expect(page.locator(".flash-success")).to_have_text("tick is stopped.")
    expect(page.locator('tr[data-workflow="tick"]')).to_contain_text("stopped")
    expect(page.locator('tr[data-workflow="tick"] .next-fire')).to_have_count(0)
    expect(page.locator('tr[data-workflow="tick"] td[data-label="Last run"] .badge')).to_be_visible()


def test_every_workflow_button_is_in_view_at_1280(server, page):
    # A startable workflow with a long description: its row has the most to show (Start, Run now, the designer).
    if server.get("/api/workflows/every_minute").status_code == 404:
        assert server.post("/api/workflows", json={
            "name": "every_minute", "description": "Checks the partner feed and files each new invoice. " * 4,
            "trigger": {"type": "interval", "seconds": 60},
            "steps": [{"name": "note", "type": "log", "config": {"message": "checked"}}]}).status_code == 201
    page.goto(server.url + "/")
    table = page.locator(".table-wrap").filter(has=page.locator("#workflows-table"))
    assert table.evaluate("wrap => wrap.scrollWidth <= wrap.clientWidth + 1"), "the workflows table scrolls sideways"
    for button in page.locator('tr[data-workflow="every_minute"] .button-row > *').all():
        box = button.bounding_box()
        assert box is not None and box["x"] + box["width"] <= WIDE["width"], button.inner_text()
    shoot(page, "workflows-wide")


def test_step_graph_failed_run_and_phone_layout(server, browser):
    diamond = server.post("/api/workflows/diamond/runs?wait=10").json()
    failed = server.post("/api/workflows/failing/runs?wait=10").json()
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    try:
        phone = context.new_page()
        pages = {"workflows": "/", "runs": "/runs", "run-graph": f"/runs/{diamond['id']}",
                 "run-failed": f"/runs/{failed['id']}", "run-form": "/workflows/insurance_application/run"}
        for name, path in pages.items():
            phone.goto(server.url + path)
            # Nothing may stick out sideways at phone width (the graph scrolls inside its own box).
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), name
            shoot(phone, f"phone-{name}")
        phone.goto(server.url + f"/runs/{failed['id']}")
        expect(phone.locator('tr[data-step="boom"]').get_by_role("button", name="Skip and continue")).to_be_visible()
        expect(phone.get_by_role("button", name="Retry")).to_be_visible()
    finally:
        context.close()

    wide = browser.new_context(viewport=WIDE)
    try:
        page = wide.new_page()
        page.goto(server.url + f"/runs/{diamond['id']}")
        expect(page.locator("#step-graph g.node")).to_have_count(4)
        expect(page.locator('#step-graph g[data-step="store"]')).to_contain_text("succeeded")
        shoot(page, "run-graph")
        page.goto(server.url + f"/runs/{failed['id']}")
        # Not a full bar in the success colour: the share of steps that succeeded, in the failure colour.
        expect(page.locator("#run-progress .progress-text")).to_have_text("1/3 succeeded")
        bar = page.locator("#run-progress .progress-bar")
        assert bar.evaluate("bar => getComputedStyle(bar).backgroundColor") == "rgb(240, 154, 148)"
        shoot(page, "run-failed")
        page.locator('tr[data-step="boom"]').get_by_role("button", name="Skip and continue").click()
        expect(page.locator("#run-status")).to_have_text("succeeded", timeout=10_000)
        expect(page.locator("#run-progress .progress-text")).to_have_text("100%")
        expect(page.locator('tr[data-step="boom"] .step-status')).to_have_text("skipped")
    finally:
        wide.close()


def test_login_then_live_updates_through_the_session(servers, browser):
    server = servers.start("locked", env={"WORKFLOW_API_TOKEN": TOKEN})
    context = browser.new_context(viewport=WIDE)
    try:
        page = context.new_page()
        page.goto(server.url + "/workflows/slow/run")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.fill("#token", "wrong")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator(".flash-error")).to_have_text("That token is not right.")
        shoot(page, "login")
        page.fill("#token", TOKEN)
        page.get_by_role("button", name="Log in").click()

        expect(page).to_have_url(re.compile(r"/workflows/slow/run$"))
        page.fill("#inputs_json", '{"seconds": 1}')
        page.get_by_role("button", name="Start run").click()
        mark_page(page)
        expect(page.locator("#run-progress .progress-text")).to_have_text("100%", timeout=10_000)
        assert_not_reloaded(page)
        assert server.get("/api/runs").status_code == 401  # the API itself still wants the bearer token

        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(re.compile(r"/login$"))
    finally:
        context.close()


def define(server: Server, name: str, steps: list[dict]) -> dict:
    """Create a definition (once per server) and run it to its end; the run."""
    if server.get(f"/api/workflows/{name}").status_code == 404:
        assert server.post("/api/workflows", json={"name": name, "steps": steps}).status_code == 201
    return server.post(f"/api/workflows/{name}/runs?wait=10").json()


def test_a_long_error_wraps_at_phone_width(server, browser):
    # One unbroken 500-character token, as a URL or a path in an error would be.
    run = define(server, "long_error", [{"name": "check", "type": "validate_data",
                                         "config": {"data": {}, "template": "no_such_template_" + "x" * 480}}])
    assert run["status"] == "failed" and len(run["error"]) >= 500
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    try:
        phone = context.new_page()
        for name, path in (("run-long-error", f"/runs/{run['id']}"), ("runs-long-error", "/runs?workflow=long_error")):
            phone.goto(server.url + path)
            expect(phone.locator(".error-text").first).to_contain_text("no_such_template_xxx")
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390, name
            shoot(phone, f"phone-{name}")
    finally:
        context.close()


def log_steps(names: list[str], depends: dict[str, list[str]]) -> list[dict]:
    return [{"name": name, "type": "log", "config": {"message": f"{name} ran"},
             **({"depends_on": depends[name]} if name in depends else {})} for name in names]


def test_a_14_step_graph_fits_at_1280_or_scrolls_inside_its_box_with_a_hint(server, browser):
    names = [f"step_{index:02d}" for index in range(14)]
    # Deep: a chain of 13 with a side branch: 13 columns, wider than any window.
    deep = define(server, "deep14", log_steps(names, {names[13]: [names[0]], names[1]: [names[0]]}))
    # Wide: one root, twelve branches, one join: three columns.
    wide = define(server, "wide14", log_steps(names, {**{name: [names[0]] for name in names[1:13]},
                                                      names[13]: names[1:13]}))
    context = browser.new_context(viewport=WIDE)
    try:
        page = context.new_page()
        page.goto(server.url + f"/runs/{deep['id']}")
        expect(page.locator("#step-graph g.node")).to_have_count(14)
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDE["width"], "the page never scrolls"
        assert page.evaluate("(w => w.scrollWidth > w.clientWidth)(document.getElementById('graph-wrap'))")
        expect(page.locator("#graph-hint")).to_be_visible()
        expect(page.locator("#graph-hint")).to_contain_text("scroll sideways to see all 14 steps")
        shoot(page, "run-graph-deep14")

        page.goto(server.url + f"/runs/{wide['id']}")
        expect(page.locator("#step-graph g.node")).to_have_count(14)
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDE["width"]
        assert page.evaluate("(w => w.scrollWidth <= w.clientWidth)(document.getElementById('graph-wrap'))")
        expect(page.locator("#graph-hint")).to_be_hidden()
        shoot(page, "run-graph-wide14")
    finally:
        context.close()


def test_a_paused_waiting_run_on_the_waiting_page_at_phone_width(server, browser):
    if server.get("/api/workflows/asks_on_phone").status_code == 404:
        steps = [{"name": "ok", "type": "approval", "config": {"message": "Go on?", "timeout": 600}},
                 {"name": "done", "type": "log", "config": {"message": "approved by {{ steps.ok.by }}"}}]
        assert server.post("/api/workflows", json={"name": "asks_on_phone", "steps": steps}).status_code == 201
    run_id = server.post("/api/workflows/asks_on_phone/runs").json()["id"]
    wait_until(lambda: server.get(f"/api/runs/{run_id}").json()["status"] == "waiting", 10, message="run waiting")
    assert server.post(f"/api/runs/{run_id}/pause").json()["status"] == "paused"
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    try:
        phone = context.new_page()
        phone.goto(server.url + "/waiting")
        row = phone.locator(f'tr[data-run="{run_id}"]')
        expect(row.locator(".badge.status-paused")).to_be_visible()
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert row.evaluate("card => card.scrollWidth <= card.clientWidth + 1")  # the long run id wraps in its card
        shoot(phone, "phone-waiting-paused")
        # A page further on (its cursor newer than every run, so it holds them all): its count and links fit too.
        phone.goto(server.url + "/waiting?cursor=run_" + "f" * 22)
        expect(phone.locator("#waiting-count")).to_have_text(re.compile(r"^Runs 1–\d+ of \d+, newest first\.$"),
                                                             timeout=15_000)
        expect(row.locator(".badge.status-paused")).to_be_visible()
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        shoot(phone, "phone-waiting-pager")
        phone.get_by_role("link", name="← Newest").click()
        expect(phone).to_have_url(server.url + "/waiting", timeout=15_000)  # a busy machine may take over 5 s
        row.get_by_role("button", name="Approve").click()
        expect(row.locator(".kept")).to_have_text("answered, applied on resume")
        assert server.get(f"/api/runs/{run_id}").json()["status"] == "paused"
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        row.get_by_role("button", name="Resume").click()
        # Back on the Waiting page it was resumed from; the run goes on with the kept answer.
        expect(phone.locator(".flash-success")).to_have_text(f"Resumed run {run_id}.", timeout=10_000)
        expect(phone).to_have_url(server.url + "/waiting")
        wait_until(lambda: server.get(f"/api/runs/{run_id}").json()["status"] == "succeeded", 10,
                   message="the resumed run to finish")
    finally:
        context.close()
