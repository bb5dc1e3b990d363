"""Answering approvals through the API and the dashboard, against a real ``run.py`` server with tokens and roles;
and the Waiting page's listing, page by page, over every store."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
import requests

from app import create_app, start_app
from app.dashboard.approvals import waiting_ids, waiting_runs
from app.runs import new_run, new_step
from app.storage.json.store import JsonStore
from app.storage.memory import MemoryStore
from tests.conftest import TEST_SETTINGS
from tests.server import Servers
from tests.waiting import wait_until

ADMIN = "admin-token-for-approvals"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def server(tmp_path):
    with Servers(tmp_path) as servers:
        server = servers.start(env={"WORKFLOW_API_TOKEN": ADMIN})
        server.tokens = {}
        for name, role in (("olga", "operator"), ("vic", "viewer")):
            response = server.post("/api/tokens", json={"name": name, "role": role}, headers=bearer(ADMIN))
            assert response.status_code == 201, response.text
            server.tokens[name] = response.json()["token"]
        definition = {"name": "asks", "steps": [
            {"name": "first", "type": "approval", "config": {"message": "Go on?", "timeout": 600}},
            {"name": "after", "type": "log", "config": {"message": "{{ steps.first.by }}: {{ steps.first.comment }}"}}]}
        assert server.post("/api/workflows", json=definition, headers=bearer(ADMIN)).status_code == 201
        timed = {"name": "asks_briefly", "steps": [
            {"name": "first", "type": "approval", "config": {"timeout": 1, "on_timeout": "approve"}}]}
        assert server.post("/api/workflows", json=timed, headers=bearer(ADMIN)).status_code == 201
        yield server


def start(server, name: str = "asks") -> str:
    response = server.post(f"/api/workflows/{name}/runs", json={}, headers=bearer(ADMIN))
    assert response.status_code == 202, response.text
    return response.json()["id"]


def status(server, run_id: str, wanted: str, timeout: float = 15) -> dict:
    return wait_until(lambda: (run := server.get(f"/api/runs/{run_id}", headers=bearer(ADMIN)).json())["status"]
                      == wanted and run, timeout, message=f"run {run_id} {wanted}")


def test_an_operator_approves_once_and_the_run_records_who_when_and_the_comment(server):
    run_id = start(server)
    status(server, run_id, "waiting")
    refused = server.post(f"/api/runs/{run_id}/approve", json={}, headers=bearer(server.tokens["vic"]))
    assert refused.status_code == 403  # a viewer may not answer
    answer = server.post(f"/api/runs/{run_id}/approve", json={"comment": "ship it"},
                         headers=bearer(server.tokens["olga"]))
    assert answer.status_code == 200, answer.text
    run = status(server, run_id, "succeeded")
    result = run["steps"][0]["result"]
    assert result["approved"] is True and result["by"] == "olga" and result["comment"] == "ship it" and result["at"]
    assert run["steps"][1]["result"] == {"message": "olga: ship it"}
    twice = server.post(f"/api/runs/{run_id}/approve", json={}, headers=bearer(server.tokens["olga"]))
    assert twice.status_code == 409 and "not waiting" in twice.json()["error"]["message"]
    audit = server.get("/api/audit", params={"action": "approval.approve"}, headers=bearer(ADMIN)).json()["entries"]
    assert [(entry["actor"], entry["target"], entry["details"]["comment"]) for entry in audit] == [
        ("olga", run_id, "ship it")]


def test_a_rejection_fails_the_step_naming_who_and_why(server):
    run_id = start(server)
    status(server, run_id, "waiting")
    wrong_step = server.post(f"/api/runs/{run_id}/reject", json={"step": "after"}, headers=bearer(ADMIN))
    assert wrong_step.status_code == 409
    answer = server.post(f"/api/runs/{run_id}/reject", json={"step": "first", "comment": "not now"},
                         headers=bearer(server.tokens["olga"]))
    assert answer.status_code == 200
    run = status(server, run_id, "failed")
    assert run["steps"][0]["error"] == "rejected by olga: not now"
    assert run["steps"][0]["result"]["approved"] is False
    assert run["error"] == "step 'first' failed: rejected by olga: not now"
    assert server.post(f"/api/runs/{run_id}/approve", json={}, headers=bearer(ADMIN)).status_code == 409


def test_nothing_to_answer_is_a_409_and_bad_bodies_are_refused(server):
    run_id = start(server)
    status(server, run_id, "waiting")
    bad = server.post(f"/api/runs/{run_id}/approve", json={"comment": 5}, headers=bearer(ADMIN))
    assert bad.status_code == 422
    assert server.post("/api/runs/run_0123/approve", json={}, headers=bearer(ADMIN)).status_code == 404
    cancelled = server.post(f"/api/runs/{run_id}/cancel", headers=bearer(ADMIN)).json()
    assert cancelled["status"] == "cancelled" and cancelled["steps"][0]["error"] == "cancelled while waiting"
    assert server.post(f"/api/runs/{run_id}/approve", json={}, headers=bearer(ADMIN)).status_code == 409


def test_a_timeout_follows_on_timeout_approve(server):
    run = status(server, start(server, "asks_briefly"), "succeeded")
    assert run["steps"][0]["result"]["approved"] is True and run["steps"][0]["result"]["by"] == "timeout"


def test_the_dashboard_lists_waiting_runs_and_answers_with_approve_and_reject(server):
    approved, rejected = start(server), start(server)
    status(server, approved, "waiting")
    status(server, rejected, "waiting")
    browser = requests.Session()
    login = browser.get(server.url + "/login", timeout=10)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
    assert browser.post(server.url + "/login", data={"csrf_token": csrf, "token": server.tokens["olga"]},
                        timeout=10).status_code == 200
    page = browser.get(server.url + "/waiting", timeout=10)
    assert page.status_code == 200 and approved in page.text and rejected in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    for run_id, decision in ((approved, "approve"), (rejected, "reject")):
        answer = browser.post(f"{server.url}/runs/{run_id}/{decision}",
                              data={"csrf_token": csrf, "step": "first", "comment": "from the dashboard"}, timeout=10)
        assert answer.status_code == 200
    assert status(server, approved, "succeeded")["steps"][0]["result"]["by"] == "olga"
    assert status(server, rejected, "failed")["steps"][0]["error"] == "rejected by olga: from the dashboard"
    forged = browser.post(f"{server.url}/runs/{approved}/approve", data={"step": "first"}, timeout=10)
    assert forged.status_code == 400  # no CSRF token
    assert "No run is waiting" in browser.get(server.url + "/waiting", timeout=10).text


def logged_in(server, who: str) -> requests.Session:
    """A browser session logged in to the dashboard with ``who``'s token."""
    browser = requests.Session()
    login = browser.get(server.url + "/login", timeout=10)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
    assert browser.post(server.url + "/login", data={"csrf_token": csrf, "token": server.tokens[who]},
                        timeout=10).status_code == 200
    return browser


def row_of(html: str, run_id: str) -> str:
    """The waiting page's table row of ``run_id`` (its HTML)."""
    found = re.search(rf'<tr data-run="{run_id}".*?</tr>', html, re.S)
    assert found, f"run {run_id} is not listed"
    return found.group(0)


def test_the_dashboard_lists_a_paused_waiting_run_keeps_its_answer_and_resume_applies_it(server):
    run_id = start(server)
    status(server, run_id, "waiting")
    assert server.post(f"/api/runs/{run_id}/pause", headers=bearer(ADMIN)).status_code == 200
    status(server, run_id, "paused")

    viewer = logged_in(server, "vic").get(server.url + "/waiting", timeout=10).text
    row = row_of(viewer, run_id)  # a viewer sees it, paused, but has nothing to press
    assert 'class="badge status-paused"' in row and "kept until the run is resumed" in row
    assert "Approve" not in row and "Resume" not in row

    browser = logged_in(server, "olga")
    page = browser.get(server.url + "/waiting", timeout=10).text
    row = row_of(page, run_id)
    assert 'class="badge status-paused"' in row
    assert f'action="/runs/{run_id}/approve"' in row and f'action="/runs/{run_id}/resume"' in row
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = browser.post(f"{server.url}/runs/{run_id}/approve",
                          data={"csrf_token": csrf, "step": "first", "comment": "while paused"}, timeout=10)
    assert answer.status_code == 200 and "Approved step first" in answer.text

    # Kept, not applied: the run stays paused with its step waiting; the page says so instead of the buttons.
    run = server.get(f"/api/runs/{run_id}", headers=bearer(ADMIN)).json()
    assert run["status"] == "paused" and run["steps"][0]["status"] == "waiting"
    row = row_of(answer.text, run_id)
    assert "answered, applied on resume" in row and "approved by olga" in row
    assert f'action="/runs/{run_id}/approve"' not in row and f'action="/runs/{run_id}/resume"' in row
    again = browser.post(f"{server.url}/runs/{run_id}/reject", data={"csrf_token": csrf, "step": "first"}, timeout=10)
    assert "was answered before: that answer is kept" in again.text  # refused, as the API refuses it (409)

    resumed = browser.post(f"{server.url}/runs/{run_id}/resume", data={"csrf_token": csrf}, timeout=10)
    assert resumed.status_code == 200
    done = status(server, run_id, "succeeded")
    assert done["steps"][0]["result"]["by"] == "olga"
    assert done["steps"][1]["result"] == {"message": "olga: while paused"}
    assert f'data-run="{run_id}"' not in browser.get(server.url + "/waiting", timeout=10).text


@pytest.fixture(params=["memory", "json", pytest.param("postgres", marks=pytest.mark.services)])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore(tmp_path)
    elif request.param == "json":
        yield JsonStore(tmp_path / "data")
    else:
        from app.storage.postgres import PostgresStore

        store = PostgresStore(request.getfixturevalue("postgres_url"), tmp_path)
        yield store
        store.close()


def stored_run(store, status: str, step_status: str) -> str:
    """A run of ``status`` whose first step is ``step_status`` (waiting: for an approval, in the wake index as the
    engine parks it), created in ``store``."""
    run = new_run("asks", [new_step("ok", "approval"), new_step("after", "log")], {}, "api")
    run["status"] = status
    run["steps"][0].update(status=step_status, wait={"for": "approval"} if step_status == "waiting" else None)
    store.create_run(run)
    if step_status == "waiting":
        store.park(run["id"], "ok")
    return run["id"]


def test_the_waiting_listing_pages_through_waiting_and_paused_runs_with_the_stores_cursor(store):
    kinds = [("waiting", "waiting"), ("paused", "waiting"), ("paused", "pending"), ("succeeded", "succeeded")]
    made = [(stored_run(store, *kinds[n % 4]), kinds[n % 4]) for n in range(22)]
    listed = sorted((run_id for run_id, (_, step) in made if step == "waiting"), reverse=True)

    pages, cursor = [], None
    while True:
        runs, cursor = waiting_runs(store, before=cursor, limit=4)
        pages.append([run["id"] for run in runs])
        if cursor is None:
            break
        assert cursor == runs[-1]["id"]

    assert [run_id for page in pages for run_id in page] == listed  # each once, newest first, none left out
    assert [len(page) for page in pages] == [4, 4, 4] and len(listed) == 12  # no empty last page
    assert waiting_ids(store) == listed
    assert waiting_runs(store, before=listed[-1], limit=4) == ([], None)


def test_a_retried_approval_step_asks_again_and_the_earlier_links_answer_no_more(tmp_path, key_file):
    # The retry kept the step's earlier park record: the step parked again with the old nonce and the old
    # deadline, mailed nobody, and the first mail's links (already answered once) answered it again.
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                                "WORKFLOW_KEY_FILE": str(key_file)}))
    runtime = app.extensions["pyflow"]
    client = app.test_client()
    outbox = tmp_path / "data" / "outbox"
    try:
        runtime.create_definition({"name": "asks_boss", "steps": [
            {"name": "ok", "type": "approval", "config": {"to": "boss@example.org", "timeout": 600}}]})
        run_id = client.post("/api/workflows/asks_boss/runs", json={}).get_json()["id"]
        first = wait_until(lambda: waiting_step(client, run_id), message="the first request")
        [old_mail] = sorted(outbox.glob("*.eml"))
        old_approve, _ = links_in(old_mail)
        assert client.post(f"/api/runs/{run_id}/reject", json={"comment": "not yet"}).status_code == 200
        wait_until(lambda: client.get(f"/api/runs/{run_id}").get_json()["status"] == "failed", message="the rejection")

        assert client.post(f"/api/runs/{run_id}/retry").status_code == 200
        second = wait_until(lambda: waiting_step(client, run_id), message="the retried step waiting again")
        assert second["wait"]["nonce"] != first["wait"]["nonce"]
        assert second["wait"]["until_epoch"] > first["wait"]["until_epoch"]  # a whole new timeout
        mails = sorted(outbox.glob("*.eml"), key=lambda path: path.stat().st_mtime_ns)
        assert len(mails) == 2, "the retried step mails the approvers again"
        new_approve, _ = links_in(next(path for path in mails if path != old_mail))
        refused = client.get(old_approve)
        assert refused.status_code == 409 and "Already answered" in refused.get_data(as_text=True)
        assert client.get(new_approve).status_code == 200
    finally:
        runtime.shutdown(timeout=2)


def waiting_step(client, run_id: str) -> dict | None:
    """The run's first step while the run waits for it, else None."""
    run = client.get(f"/api/runs/{run_id}").get_json()
    step = run["steps"][0]
    return step if run["status"] == "waiting" and step["status"] == "waiting" else None


def links_in(mail) -> tuple[str, str]:
    """The approve and reject paths (``/approvals/<token>``) of an approval request in the outbox."""
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    body = message.get_body(preferencelist=("plain",)).get_content()
    approve = re.search(r"Approve: \S+(/approvals/\S+)", body).group(1)
    reject = re.search(r"Reject: \S+(/approvals/\S+)", body).group(1)
    return approve, reject
