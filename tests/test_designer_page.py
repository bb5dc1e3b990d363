"""The designer's pages (/designer, /designer/<name>), their links and roles, and the run page's graph from a layout."""

from __future__ import annotations

import re

import pytest

from app import create_app, start_app
from app.storage.json.store import JsonStore
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS

ADMIN = "admin-t0ken-for-designer-tests"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
ROOT = re.compile(r'<div id="designer-root"([^>]*)>')

BRANCHED = {
    "name": "branched",
    "steps": [{"name": "start", "type": "log", "depends_on": [], "config": {"message": "a"}},
              {"name": "left", "type": "log", "depends_on": ["start"], "config": {"message": "b"}},
              {"name": "right", "type": "log", "depends_on": ["start"], "config": {"message": "c"}}],
}


def root_attributes(html: str) -> dict[str, str]:
    """The data- attributes of the page's #designer-root."""
    found = ROOT.search(html)
    assert found, "no #designer-root on the page"
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', found.group(1)))


@pytest.fixture
def locked(storage, key_file):
    """An app with WORKFLOW_API_TOKEN set (an admin), so tokens with roles log in."""
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS,
                                "WORKFLOW_KEY_FILE": str(key_file), "WORKFLOW_API_TOKEN": ADMIN,
                                "WORKFLOW_SECRET_KEY": "k" * 32}))
    yield app
    app.extensions["pyflow"].shutdown(timeout=2)


def logged_in(app, role: str):
    """A test client whose session logged in with a new token of ``role`` (the admin token for admin)."""
    client = app.test_client()
    token = ADMIN
    if role != "admin":
        made = client.post("/api/tokens", json={"name": f"a_{role}", "role": role},
                           headers={"Authorization": f"Bearer {ADMIN}"})
        assert made.status_code == 201, made.get_json()
        token = made.get_json()["token"]
    csrf = CSRF_FIELD.search(client.get("/login").text).group(1)
    response = client.post("/login", data={"csrf_token": csrf, "token": token, "next": "/"})
    assert response.status_code == 302
    return client


def test_the_new_workflow_page_has_the_root_and_the_bundle(client):
    response = client.get("/designer")
    assert response.status_code == 200
    html = response.text
    attributes = root_attributes(html)
    assert attributes["workflow"] == ""
    assert attributes["can-save"] == "true"  # open access: everyone is the admin
    assert attributes["api"] == "/api" and attributes["dashboard"] == ""
    assert len(attributes["csrf"]) >= 32
    assert '<link rel="stylesheet" href="/static/dashboard/designer/designer.css">' in html
    assert '<script type="module" src="/static/dashboard/designer/designer.js"></script>' in html
    assert 'aria-current="page">Designer</a>' in html


def test_opening_a_workflow_names_it_and_an_unknown_one_is_404(client):
    assert client.post("/api/workflows", json=BRANCHED).status_code == 201
    attributes = root_attributes(client.get("/designer/branched").text)
    assert (attributes["workflow"], attributes["origin"], attributes["version"]) == ("branched", "api", "1")
    assert root_attributes(client.get("/designer/notification_flow").text)["origin"] == "file"
    missing = client.get("/designer/nope")
    assert missing.status_code == 404
    assert "nope" in missing.text and 'id="designer-root"' not in missing.text


def test_the_csrf_token_of_the_page_lets_the_session_write_through_the_api(locked):
    client = logged_in(locked, "admin")
    csrf = root_attributes(client.get("/designer").text)["csrf"]
    assert client.post("/api/workflows/validate", json=BRANCHED).status_code == 401  # no header: not the session's
    assert client.post("/api/workflows/validate", json=BRANCHED, headers={"X-CSRF-Token": csrf}).status_code == 200
    created = client.post("/api/workflows", json=BRANCHED, headers={"X-CSRF-Token": csrf})
    assert created.status_code == 201


@pytest.mark.parametrize(("role", "can_save"), [("viewer", "false"), ("operator", "false"), ("admin", "true")])
def test_every_role_sees_the_designer_and_only_an_admin_saves(locked, role, can_save):
    client = logged_in(locked, role)
    page = client.get("/designer")
    assert page.status_code == 200
    assert root_attributes(page.text)["can-save"] == can_save
    assert ">Designer</a>" in client.get("/").text
    csrf = root_attributes(page.text)["csrf"]
    # What the page's script may do with that session: read; validate and save only as an admin.
    headers = {"X-CSRF-Token": csrf}
    assert client.get("/api/workflows/notification_flow/versions").status_code == 200
    expected = (200, 201) if role == "admin" else (403, 403)
    assert client.post("/api/workflows/validate", json=BRANCHED, headers=headers).status_code == expected[0]
    assert client.post("/api/workflows", json=BRANCHED, headers=headers).status_code == expected[1]


def test_the_designer_needs_a_login_when_a_token_is_set(locked):
    response = locked.test_client().get("/designer/echo")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/designer/echo"


def test_the_workflows_page_links_each_workflow_to_the_designer(client):
    assert client.post("/api/workflows", json=BRANCHED).status_code == 201
    html = client.get("/").text
    assert 'href="/designer/branched"' in html and ">Edit in designer</a>" in html  # made through the API
    assert 'href="/designer/notification_flow"' in html and ">Open in designer</a>" in html  # a file
    assert 'href="/designer/echo"' not in html  # a Python class: code, which the designer cannot show
    run_form = client.get("/workflows/branched/run").text
    assert '<a class="designer-link" href="/designer/branched">Edit in designer</a>' in run_form
    assert ">Open in designer</a>" in client.get("/workflows/notification_flow/run").text
    assert "designer-link" not in client.get("/workflows/echo/run").text


def graph_boxes(html: str) -> dict[str, tuple[int, int]]:
    """Step name -> (x, y) of each box of the run page's step graph."""
    return {name: (int(x), int(y)) for name, x, y in
            re.findall(r'data-step="([a-z0-9_]+)" transform="translate\((-?\d+) (-?\d+)\)"', html)}


def run_page(client, name: str) -> str:
    run = client.post(f"/api/workflows/{name}/runs?wait=10", json={}).get_json()
    assert run["status"] == "succeeded", run
    return client.get(f"/runs/{run['id']}").text


def test_the_run_page_graph_stands_where_the_designer_put_the_steps(client):
    placed = {**BRANCHED, "layout": {"start": [300, 40], "left": [100, 240], "right": [520, 240],
                                     "@trigger": [300, -100]}}
    assert client.post("/api/workflows", json=placed).status_code == 201
    html = run_page(client, "branched")
    # Moved so the leftmost and topmost box sit at the margin (8 px); distances kept.
    assert graph_boxes(html) == {"start": (208, 8), "left": (8, 208), "right": (428, 208)}
    assert "(as laid out in the designer)" in html
    # Arrows leave the bottom of a box and enter the top of the next one, as in the designer.
    assert 'd="M 283 46 C 283 74, 83 180, 83 206"' in html


def test_a_chain_with_a_layout_shows_its_graph_and_one_without_a_layout_is_layered(client):
    chain = {"name": "chain", "steps": [{"name": "a", "type": "log", "config": {"message": "a"}},
                                        {"name": "b", "type": "log", "config": {"message": "b"}}],
             "layout": {"a": [0, 0], "b": [0, 120]}}
    assert client.post("/api/workflows", json=chain).status_code == 201
    assert graph_boxes(run_page(client, "chain")) == {"a": (8, 8), "b": (8, 128)}
    assert client.post("/api/workflows", json=BRANCHED).status_code == 201
    html = run_page(client, "branched")
    assert "(as laid out in the designer)" not in html
    boxes = graph_boxes(html)
    assert boxes["left"][0] > boxes["start"][0] and boxes["left"][1] == boxes["start"][1]  # layered: left to right


def test_a_run_keeps_the_picture_of_the_version_it_ran(client):
    placed = {**BRANCHED, "layout": {"start": [0, 0], "left": [0, 100], "right": [200, 100]}}
    assert client.post("/api/workflows", json=placed).status_code == 201
    first = client.post("/api/workflows/branched/runs?wait=10", json={}).get_json()
    moved = {**placed, "layout": {"start": [0, 0], "left": [400, 100], "right": [200, 100]}}
    assert client.put("/api/workflows/branched", json=moved).status_code == 200
    assert graph_boxes(client.get(f"/runs/{first['id']}").text)["left"] == (8, 108)
    assert graph_boxes(run_page(client, "branched"))["left"] == (408, 108)


def test_a_stray_node_far_away_does_not_make_the_page_a_million_pixels_wide(client):
    placed = {**BRANCHED, "layout": {"start": [0, 0], "left": [0, 100], "right": [1_000_000, 100]}}
    assert client.post("/api/workflows", json=placed).status_code == 201
    html = run_page(client, "branched")
    boxes = graph_boxes(html)
    assert boxes["right"][0] == 8 + 4000 and boxes["start"] == (8, 8)
    width = int(re.search(r'id="step-graph" viewBox="0 0 (\d+) ', html).group(1))
    assert width == 8 + 4000 + 150 + 8


def test_the_workflows_page_lists_a_definition_that_no_longer_loads_with_a_link_to_fix_it(storage, key_file):
    store = JsonStore(storage)
    store.save_definition("loud", {"name": "loud", "steps": [{"name": "shout", "type": "shout", "config": {}}]})
    store.close()
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_KEY_FILE": str(key_file), "WORKFLOW_CLASSES": WORKFLOWS}))
    try:
        html = app.test_client().get("/").text
        section = html[html.index('id="unloaded"'):html.index('id="workflows-table"')]
        assert 'data-workflow="loud"' in section and "unknown step type &#39;shout&#39;" in section
        assert '<a href="/designer/loud">Fix in designer</a>' in section
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)
