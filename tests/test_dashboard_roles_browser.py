"""Roles in the dashboard, in a real browser: each token's role sees only what it may do; logins are rate limited.

Debian's Chromium driven by Playwright against a real run.py with WORKFLOW_API_TOKEN (as
tests/test_dashboard_browser.py). Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import MARKS, WIDE, shoot
from tests.server import Server, Servers

ADMIN = "browser-admin-token"

pytestmark = MARKS
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
expect = sync_api.expect


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Servers(tmp_path_factory.mktemp("roles")) as servers:
        yield servers.start("locked", {"WORKFLOW_API_TOKEN": ADMIN})


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def admin(server: Server) -> dict:
    return {"Authorization": f"Bearer {ADMIN}"}


def make_token(server: Server, name: str, role: str) -> str:
    response = server.post("/api/tokens", json={"name": name, "role": role}, headers=admin(server))
    assert response.status_code == 201, response.text
    return response.json()["token"]


def log_in(page, server: Server, token: str) -> None:
    page.goto(server.url + "/login")
    page.fill("#token", token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(server.url + "/")


def test_a_viewer_sees_no_run_or_control_buttons(server, page):
    failed = server.post("/api/workflows/failing/runs?wait=10", headers=admin(server)).json()
    log_in(page, server, make_token(server, "grafana", "viewer"))

    expect(page.locator('tr[data-workflow="tick"]')).to_be_visible()
    expect(page.locator(".who")).to_have_text("grafana · viewer")
    expect(page.get_by_role("link", name=re.compile(r"^Run .* now$"))).to_have_count(0)
    expect(page.get_by_role("button", name="Start tick")).to_have_count(0)
    expect(page.get_by_role("link", name="Tokens")).to_have_count(0)
    expect(page.get_by_role("link", name="Audit log")).to_have_count(0)
    shoot(page, "roles-viewer-workflows")

    page.goto(server.url + f"/runs/{failed['id']}")
    expect(page.locator("#run-status")).to_have_text("failed")
    expect(page.locator("#run-controls form")).to_have_count(0)
    expect(page.get_by_role("button", name="Skip and continue")).to_have_count(0)
    shoot(page, "roles-viewer-run")
    assert page.goto(server.url + "/tokens").status == 403
    expect(page.locator("body")).to_contain_text("needs the admin role")


def test_an_operator_sees_run_controls_and_no_admin_pages(server, page):
    failed = server.post("/api/workflows/failing/runs?wait=10", headers=admin(server)).json()
    log_in(page, server, make_token(server, "ops", "operator"))

    expect(page.get_by_role("button", name="Start tick")).to_be_visible()
    expect(page.get_by_role("link", name="Run echo now")).to_be_visible()
    expect(page.get_by_role("link", name="Tokens")).to_have_count(0)
    page.goto(server.url + f"/runs/{failed['id']}")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".flash-success")).to_contain_text(f"Retrying run {failed['id']}")


def test_an_admin_makes_a_token_sees_it_once_and_reads_the_audit_log(server, page):
    log_in(page, server, ADMIN)
    page.get_by_role("link", name="Tokens").click()
    page.fill('#token-form input[name="name"]', "deploy")
    page.select_option('#token-form select[name="role"]', "operator")
    page.get_by_role("button", name="Create token").click()

    shown = page.locator("#new-token")
    expect(shown).to_be_visible()
    token = shown.inner_text().strip()
    assert server.get("/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    shoot(page, "roles-admin-token-made")
    page.goto(server.url + "/tokens")
    expect(page.locator('tr[data-token="deploy"]')).to_contain_text("operator")
    expect(page.locator("#new-token")).to_have_count(0)
    assert token not in page.content()

    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("#audit-table")).to_contain_text("token.create")
    expect(page.locator("#audit-table")).to_contain_text("login.success")
    shoot(page, "roles-admin-audit")


def test_guessed_logins_are_locked_out(tmp_path, browser):
    # A server of its own: the lockout counts per client address, and every test here calls from 127.0.0.1.
    with Servers(tmp_path) as servers:
        server = servers.start("lockout", {"WORKFLOW_API_TOKEN": ADMIN})
        context = browser.new_context(viewport=WIDE)
        try:
            page = context.new_page()
            for _ in range(10):
                page.goto(server.url + "/login")
                page.fill("#token", "guess")
                page.get_by_role("button", name="Log in").click()
                expect(page.locator(".flash-error")).to_have_text("That token is not right.")
            page.fill("#token", ADMIN)
            page.get_by_role("button", name="Log in").click()
            expect(page.locator(".flash-error")).to_contain_text("Too many failed logins from your address")
            shoot(page, "roles-login-locked-out")
        finally:
            context.close()
