"""The dashboard with Flask's test client: pages, forms, CSRF, login, bearer tokens and metrics."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import create_app, start_app
from app.core.metrics import percentile, workflow_metrics
from app.dashboard import approvals, pages
from app.dashboard.graph import is_chain, layers, layout
from app.runs import format_time, new_run, new_step, parse_time
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS, wait_until

SAMPLE_PDF = Path(__file__).resolve().parent.parent / "samples" / "application_company_a.pdf"
TOKEN = "t0ken-for-tests"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(client, path: str = "/") -> str:
    """The CSRF token from a form on ``path``: proves the forms carry it."""
    response = client.get(path)
    assert response.status_code == 200, response.text
    found = CSRF_FIELD.search(response.text)
    assert found, f"no CSRF field on {path}"
    return found.group(1)


def api_run(client, workflow: str, inputs: dict | None = None, headers: dict | None = None) -> dict:
    response = client.post(f"/api/workflows/{workflow}/runs?wait=5", json={"inputs": inputs or {}}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def define(client, name: str, steps: list[dict]) -> None:
    response = client.post("/api/workflows", json={"name": name, "steps": steps})
    assert response.status_code == 201, response.get_json()


def log_step(name: str, **keys) -> dict:
    return {"name": name, "type": "log", "config": {"message": f"{name} ran"}, **keys}


@pytest.fixture
def locked(storage):
    """An app with WORKFLOW_API_TOKEN set."""
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS,
                      "WORKFLOW_API_TOKEN": TOKEN, "WORKFLOW_SECRET_KEY": "k" * 32}))
    yield app
    app.extensions["pyflow"].shutdown(timeout=2)


# -- pages ----------------------------------------------------------------------------------------


def test_workflows_page_is_a_server_rendered_table(client):
    response = client.get("/")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.text
    assert '<table class="data stack" id="workflows-table">' in html
    for name in ("echo", "failing", "tick", "insurance_application", "uptime_monitor"):
        assert f'<tr data-workflow="{name}">' in html
    # Status in words: a started-able trigger says stopped, a manual one says how it runs.
    tick_row = html.split('<tr data-workflow="tick">')[1].split("</tr>")[0]
    assert ">stopped</span>" in tick_row and "Start" in tick_row and "interval" in tick_row
    echo_row = html.split('<tr data-workflow="echo">')[1].split("</tr>")[0]
    assert "on demand" in echo_row and "Run now" in echo_row and "Start" not in echo_row
    # Every asset comes from the app itself.
    assert "/static/dashboard/dashboard.css" in html and "/static/dashboard/dashboard.js" in html
    assert "http://" not in html.split("<body>")[0] and "https://" not in html.split("<body>")[0]
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_static_assets_are_served(client):
    for name, mimetype in (("dashboard.css", "text/css"), ("dashboard.js", "text/javascript")):
        response = client.get(f"/static/dashboard/{name}")
        assert response.status_code == 200
        assert response.mimetype == mimetype
        response.close()


@pytest.mark.parametrize("fixture", ["client", "locked"])
def test_a_favicon_is_linked_and_favicon_ico_leads_to_it_also_before_login(request, fixture):
    client = request.getfixturevalue(fixture)
    client = client if fixture == "client" else client.test_client()

    answer = client.get("/favicon.ico")
    assert answer.status_code == 301 and answer.headers["Location"] == "/static/dashboard/favicon.svg"
    icon = client.get("/static/dashboard/favicon.svg")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml" and b"<svg" in icon.data
    icon.close()
    page = client.get("/login" if fixture == "locked" else "/").text
    assert '<link rel="icon" type="image/svg+xml" href="/static/dashboard/favicon.svg">' in page


def test_workflows_page_shows_last_run_and_success_rate(client):
    api_run(client, "echo", {"text": "a"})
    api_run(client, "failing")

    html = client.get("/").text

    echo_row = html.split('<tr data-workflow="echo">')[1].split("</tr>")[0]
    assert "status-succeeded" in echo_row and ">succeeded</span>" in echo_row and "100%" in echo_row
    failing_row = html.split('<tr data-workflow="failing">')[1].split("</tr>")[0]
    assert ">failed</span>" in failing_row and "0%" in failing_row


def test_runs_page_filters_by_workflow_and_status(client):
    echo = api_run(client, "echo", {"text": "a"})
    failed = api_run(client, "failing")

    everything = client.get("/runs").text
    only_echo = client.get("/runs?workflow=echo").text
    only_failed = client.get("/runs?status=failed").text

    assert echo["id"] in everything and failed["id"] in everything
    assert everything.index(failed["id"]) < everything.index(echo["id"])  # newest first
    assert echo["id"] in only_echo and failed["id"] not in only_echo
    assert failed["id"] in only_failed and echo["id"] not in only_failed
    assert "step &#39;boom&#39; failed" in only_failed
    nonsense = client.get("/runs?workflow=nope&status=bogus")
    assert nonsense.status_code == 200 and "no workflow named" in nonsense.text


def test_runs_page_pages_with_the_store_cursor(client, monkeypatch):
    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    ids = [api_run(client, "echo", {"text": str(n)})["id"] for n in range(3)]

    first = client.get("/runs").text
    cursor = re.search(r'href="/runs\?cursor=(run_[0-9a-f]+)"', first)
    assert cursor, "no link to older runs"
    second = client.get(f"/runs?cursor={cursor.group(1)}").text

    assert ids[2] in first and ids[1] in first and ids[0] not in first
    assert ids[0] in second and ids[2] not in second
    assert 'data-poll="' in first and 'data-poll="' not in second  # only the newest page updates itself
    assert "Older runs" not in second


def test_the_waiting_page_pages_through_every_waiting_run_with_the_store_cursor(client, runtime, monkeypatch):
    monkeypatch.setattr(approvals, "PAGE_SIZE", 2)
    define(client, "asks", [{"name": "ok", "type": "approval", "config": {"timeout": 600}}])
    ids = []
    for _ in range(5):
        response = client.post("/api/workflows/asks/runs", json={})
        assert response.status_code == 202, response.get_json()
        ids.append(response.get_json()["id"])
    for run_id in ids:
        wait_until(lambda run_id=run_id: runtime.store.get_run(run_id)["status"] == "waiting", 10,
                   message=f"run {run_id} waiting")
    assert client.post(f"/api/runs/{ids[1]}/pause").get_json()["status"] == "paused"  # listed too, in its place

    pages, url = [], "/waiting"
    while url:
        html = client.get(url).text
        pages.append(html)
        older = re.search(r'href="(/waiting\?cursor=run_[0-9a-f]+)">Older runs', html)
        url = older and older.group(1)

    listed = [re.findall(r'<tr data-run="(run_[0-9a-f]+)"', html) for html in pages]
    assert listed == [sorted(ids, reverse=True)[:2], sorted(ids, reverse=True)[2:4], sorted(ids)[:1]]
    # The deadline reads as every other time of the dashboard does (the ISO text in its title).
    until = re.search(r'<td data-label="Until \(UTC\)"><time datetime="([^"]+)" title="[^"]+">([^<]+)</time>',
                      pages[0])
    assert until and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", until.group(2)), until
    assert "Runs 1–2 of 5, newest first; older ones on the next page." in pages[0] and "← Newest" not in pages[0]
    assert "Runs 3–4 of 5" in pages[1] and "Runs 5–5 of 5, newest first." in pages[2]
    assert '<a class="button" href="/waiting">← Newest</a>' in pages[2] and "Older runs" not in pages[2]
    assert 'class="badge status-paused"' in re.search(rf'<tr data-run="{ids[1]}".*?</tr>', "".join(pages), re.S)[0]

    # An answer given on an older page leads back to that page, without the answered run.
    cursor = re.search(r'href="/waiting\?cursor=(run_[0-9a-f]+)">Older runs', pages[0]).group(1)
    answered = listed[1][0]
    answer = client.post(f"/runs/{answered}/approve", data={"csrf_token": csrf(client, f"/waiting?cursor={cursor}"),
                                                            "step": "ok", "cursor": cursor})
    assert answer.status_code == 302 and answer.headers["Location"] == f"/waiting?cursor={cursor}"
    wait_until(lambda: runtime.store.get_run(answered)["status"] == "succeeded", 10, message="answered run done")
    again = client.get(answer.headers["Location"]).text
    assert re.findall(r'<tr data-run="(run_[0-9a-f]+)"', again) == [listed[1][1], listed[2][0]]
    assert "Runs 3–4 of 4, newest first." in again

    nonsense = client.get("/waiting?cursor=bogus").text
    assert "That page link is not valid" in nonsense and listed[0][0] in nonsense


def test_the_waiting_page_counts_paused_runs_without_reading_them_and_a_resume_leads_back(client, runtime, monkeypatch):
    """The count and the page read every paused run (a store of many paused runs read them all for each view)."""
    monkeypatch.setattr(approvals, "PAGE_SIZE", 2)
    define(client, "asks", [{"name": "ok", "type": "approval", "config": {"timeout": 600}}])
    ids = [client.post("/api/workflows/asks/runs", json={}).get_json()["id"] for _ in range(5)]
    for run_id in ids:
        wait_until(lambda run_id=run_id: runtime.store.get_run(run_id)["status"] == "waiting", 10,
                   message=f"run {run_id} waiting")
        assert client.post(f"/api/runs/{run_id}/pause").get_json()["status"] == "paused"
    read = []
    get_run = runtime.store.get_run

    def reading(run_id):  # the store's own read, the run noted
        read.append(run_id)
        return get_run(run_id)

    monkeypatch.setattr(runtime.store, "get_run", reading)
    first = client.get("/waiting").text
    assert "Runs 1–2 of 5, newest first; older ones on the next page." in first
    assert read == sorted(ids, reverse=True)[:2]  # the page's two runs, found in the indexes; not all five
    monkeypatch.setattr(runtime.store, "get_run", get_run)
    # Resumed from an older page, back to that page.
    cursor = re.search(r'href="/waiting\?cursor=(run_[0-9a-f]+)">Older runs', first).group(1)
    second = client.get(f"/waiting?cursor={cursor}").text
    resumed = re.findall(r'<tr data-run="(run_[0-9a-f]+)"', second)[0]
    form = re.search(rf'<form[^>]*action="/runs/{resumed}/resume">.*?</form>', second, re.S).group(0)
    assert 'name="back" value="waiting"' in form and f'name="cursor" value="{cursor}"' in form
    answer = client.post(f"/runs/{resumed}/resume", data={"csrf_token": CSRF_FIELD.search(form).group(1),
                                                           "back": "waiting", "cursor": cursor})
    assert answer.status_code == 302 and answer.headers["Location"] == f"/waiting?cursor={cursor}"
    assert f"Resumed run {resumed}." in client.get(answer.headers["Location"]).text
    wait_until(lambda: runtime.store.get_run(resumed)["status"] == "waiting", 10, message="resumed run waiting")
    # From the run page, the run page as before.
    assert client.post(f"/api/runs/{resumed}/pause").get_json()["status"] == "paused"
    again = client.post(f"/runs/{resumed}/resume", data={"csrf_token": csrf(client, f"/runs/{resumed}")})
    assert again.status_code == 302 and again.headers["Location"] == f"/runs/{resumed}"


def test_run_page_shows_steps_errors_logs_and_controls(client):
    run = api_run(client, "failing")

    html = client.get(f"/runs/{run['id']}").text

    for step in ("first", "boom", "never"):
        assert f'<tr data-step="{step}">' in html
    assert "this step always fails" in html
    assert 'data-run-status="failed"' in html and ">failed</span>" in html
    assert re.search(r'action="/runs/[^"]+/retry"\s+data-when="failed cancelled">', html)  # shown, not hidden
    assert re.search(r'action="/runs/[^"]+/cancel"\s+data-when="queued running paused waiting" hidden>', html)
    boom = html.split('<tr data-step="boom">')[1].split("</tr>")[0]
    assert "Skip and continue" in boom and "hidden" not in boom.split('class="skip-form"')[1].split(">")[0]
    assert "run started" in html and "failed: this step always fails" in html  # the run's log lines
    assert "<svg" not in html  # a plain chain needs no drawing
    assert client.get(f"/api/runs/{run['id']}/logs").get_json()["logs"]


def test_a_failed_runs_progress_bar_shows_the_steps_that_succeeded_in_the_failure_colour(client):
    run = api_run(client, "failing")  # first succeeds, boom fails, never is not reached

    for html in (client.get(f"/runs/{run['id']}").text, client.get("/runs").text):
        bar = html.split('class="progress status-failed"')[1].split("</div></div>")[0]
        assert 'aria-valuenow="33"' in bar and 'style="width: 33%"' in bar
        assert '<span class="progress-text">1/3 succeeded</span>' in bar
    succeeded = api_run(client, "echo", {"text": "hi"})
    page = client.get(f"/runs/{succeeded['id']}").text
    assert 'class="progress status-succeeded"' in page and '<span class="progress-text">100%</span>' in page


def test_the_runs_list_shows_what_started_each_run(client, runtime):
    api_run(client, "echo", {"text": "from the API"})
    runtime.run_sync("echo", {"text": "from the command line"})  # run.py run's path

    html = client.get("/runs").text
    assert '<th scope="col">Source</th>' in html
    sources = re.findall(r'<td data-label="Source"><code class="tag">(\w+)</code></td>', html)
    assert sources == ["cli", "api"], "newest first"
    assert [run["source"] for run in client.get("/api/runs").get_json()["runs"]] == ["cli", "api"]


def test_run_page_shows_results_as_json_and_a_timeline(client):
    run = api_run(client, "echo", {"text": "hi"})

    html = client.get(f"/runs/{run['id']}").text

    assert "<summary>Result</summary>" in html and "&#34;HI&#34;" in html
    assert re.search(r'class="timeline-bar status-succeeded" style="left: [\d.]+%; width: [\d.]+%"', html)
    assert ">100%</span>" in html


def test_run_page_draws_a_step_graph_when_steps_branch(client):
    define(client, "diamond", [log_step("top"), log_step("left"), log_step("right", depends_on=["top"]),
                               log_step("bottom", depends_on=["left", "right"])])
    run = api_run(client, "diamond")

    html = client.get(f"/runs/{run['id']}").text

    assert '<svg class="graph" id="step-graph"' in html
    for step in ("top", "left", "right", "bottom"):
        assert f'data-step="{step}"' in html
    assert html.count('class="edge"') == 4


def test_unknown_pages_are_html_not_json(client):
    missing_run = client.get("/runs/run_0123456789abcdef")
    bad_id = client.get("/runs/../../etc")
    missing_workflow = client.get("/workflows/nope/run")

    assert missing_run.status_code == 404 and missing_run.mimetype == "text/html"
    assert "no run with id" in missing_run.text
    assert bad_id.status_code == 404
    assert missing_workflow.status_code == 404 and missing_workflow.mimetype == "text/html"
    assert client.get("/api/runs/run_0123456789abcdef").mimetype == "application/json"  # the API is untouched


# -- the run-now form -----------------------------------------------------------------------------


def test_run_form_is_built_from_the_inputs_schema(client):
    typed = client.get("/workflows/typed_inputs/run").text
    upload = client.get("/workflows/insurance_application/run").text
    schemaless = client.get("/workflows/echo/run").text

    assert re.search(r'<input id="input-count" name="count" type="number" step="1" value="" required>', typed)
    assert 'type="file"' not in typed
    assert 'type="file"' in upload and 'enctype="multipart/form-data"' in upload
    assert '<select id="input-company" name="company"' in upload and "company_a" in upload
    assert 'name="reply_to" type="text"' in upload and "format: email" in upload
    assert '<textarea id="inputs_json" name="inputs_json"' in schemaless
    # A workflow whose first step reads a PDF's text takes an upload too (the shipped document_processing).
    documents = client.get("/workflows/document_processing/run").text
    assert 'type="file"' in documents and 'enctype="multipart/form-data"' in documents


def test_run_form_starts_a_run_and_opens_its_page(client, runtime):
    token = csrf(client, "/workflows/typed_inputs/run")

    response = client.post("/workflows/typed_inputs/run", data={"csrf_token": token, "count": "21"})

    assert response.status_code == 302
    run_id = re.fullmatch(r"/runs/(run_[0-9a-f]+)", response.headers["Location"]).group(1)
    runtime.engine.wait(run_id, 5)
    run = runtime.store.get_run(run_id)
    assert run["status"] == "succeeded" and run["source"] == "dashboard"
    assert run["steps"][0]["result"] == {"value": 42}
    assert f"Started run {run_id}" in client.get(response.headers["Location"]).text


def test_run_form_shows_problems_next_to_fields(client):
    token = csrf(client, "/workflows/typed_inputs/run")

    missing = client.post("/workflows/typed_inputs/run", data={"csrf_token": token, "count": ""})
    bad_json = client.post("/workflows/echo/run", data={"csrf_token": token, "inputs_json": "{nope"})

    assert missing.status_code == 422 and "is required" in missing.text
    assert bad_json.status_code == 422 and "not valid JSON" in bad_json.text


def test_run_form_uploads_files_like_the_api(client, runtime):
    token = csrf(client, "/workflows/insurance_application/run")

    with SAMPLE_PDF.open("rb") as pdf:
        response = client.post("/workflows/insurance_application/run", content_type="multipart/form-data",
                               data={"csrf_token": token, "company": "", "reply_to": "",
                                     "files": (pdf, "application_company_a.pdf", "application/pdf")})

    assert response.status_code == 302, response.text
    run_id = response.headers["Location"].rsplit("/", 1)[1]
    assert runtime.engine.wait(run_id, 10)
    run = runtime.store.get_run(run_id)
    attachment = run["trigger_data"]["attachments"][0]
    assert attachment["filename"] == "application_company_a.pdf" and attachment["content_type"] == "application/pdf"
    assert Path(attachment["path"]).read_bytes() == SAMPLE_PDF.read_bytes()
    # Keyed as the API's uploads are, so a worker on another host reads it through the store (docs/files.md).
    assert attachment["key"] == f"attachments/{Path(attachment['path']).parent.name}/application_company_a.pdf"
    steps = {step["name"]: step for step in run["steps"]}
    assert steps["extract"]["status"] == "succeeded", steps["extract"]["error"]
    assert steps["extract"]["result"]["template"] == "company_a"


# -- forms, CSRF and run control ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/workflows/tick/start", "/workflows/typed_inputs/run", "/runs/run_00ab/cancel"])
@pytest.mark.parametrize("sent", [None, "wrong-token"])
def test_dashboard_posts_without_the_csrf_token_are_refused(client, runtime, path, sent):
    csrf(client)  # the session has a token; the post does not carry it
    data = {"count": "1"} if sent is None else {"count": "1", "csrf_token": sent}

    response = client.post(path, data=data)

    assert response.status_code == 400
    assert "did not come from this dashboard" in response.text
    assert not runtime.is_started("tick")
    assert runtime.store.list_runs()[0] == []


def test_start_and_stop_a_persistent_workflow(client, runtime):
    token = csrf(client)

    started = client.post("/workflows/tick/start", data={"csrf_token": token}, follow_redirects=True)
    assert started.status_code == 200 and "tick is running." in started.text
    assert runtime.is_started("tick")
    tick_row = started.text.split('<tr data-workflow="tick">')[1].split("</tr>")[0]
    assert ">running</span>" in tick_row and ">Stop</button>" in tick_row

    stopped = client.post("/workflows/tick/stop", data={"csrf_token": token}, follow_redirects=True)
    assert "tick is stopped." in stopped.text and not runtime.is_started("tick")

    refused = client.post("/workflows/echo/start", data={"csrf_token": token}, follow_redirects=True)
    assert "cannot be started" in refused.text


def test_retry_and_skip_from_the_run_page(client, runtime):
    token = csrf(client)
    run = api_run(client, "failing")

    retried = client.post(f"/runs/{run['id']}/retry", data={"csrf_token": token}, follow_redirects=True)
    assert retried.status_code == 200 and f"Retrying run {run['id']}" in retried.text
    runtime.engine.wait(run["id"], 5)

    skipped = client.post(f"/runs/{run['id']}/skip", data={"csrf_token": token, "step": "boom"})
    assert skipped.status_code == 302
    runtime.engine.wait(run["id"], 5)
    final = runtime.store.get_run(run["id"])
    assert final["status"] == "succeeded"
    assert [step["status"] for step in final["steps"]] == ["succeeded", "skipped", "succeeded"]

    conflict = client.post(f"/runs/{run['id']}/resume", data={"csrf_token": token}, follow_redirects=True)
    assert conflict.status_code == 200 and "only a paused run can be" in conflict.text


# -- login and bearer tokens ----------------------------------------------------------------------


def test_without_a_token_everything_is_open(client):
    assert client.get("/").status_code == 200
    assert client.get("/api/workflows").status_code == 200
    assert client.get("/login").status_code == 302


def test_api_demands_the_bearer_token(locked):
    client = locked.test_client()

    anonymous = client.get("/api/workflows")
    wrong = client.get("/api/workflows", headers={"Authorization": "Bearer nope"})
    right = client.get("/api/workflows", headers={"Authorization": f"Bearer {TOKEN}"})
    post = client.post("/api/workflows/echo/runs", json={"inputs": {"text": "x"}})

    assert anonymous.status_code == 401 and wrong.status_code == 401 and post.status_code == 401
    assert anonymous.get_json()["error"]["code"] == "unauthorized"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert right.status_code == 200
    assert client.get("/api/health").status_code == 200
    # Webhooks carry their own signatures: the bearer check does not stand in their way.
    assert client.post("/api/hooks/echo", json={}).status_code != 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    stylesheet = client.get("/static/dashboard/dashboard.css")
    assert stylesheet.status_code == 200
    stylesheet.close()


def test_dashboard_login_flow(locked):
    client = locked.test_client()

    assert client.get("/runs?status=failed").headers["Location"] == "/login?next=/runs?status%3Dfailed"
    login_page = client.get("/login?next=/runs")
    assert login_page.status_code == 200 and 'type="password"' in login_page.text
    assert 'class="main-nav"' not in login_page.text  # no menu of pages a visitor cannot open
    token = CSRF_FIELD.search(login_page.text).group(1)

    wrong = client.post("/login", data={"csrf_token": token, "token": "nope", "next": "/runs"})
    assert wrong.status_code == 401 and "not right" in wrong.text
    no_csrf = client.post("/login", data={"token": TOKEN, "next": "/runs"})
    assert no_csrf.status_code == 400

    right = client.post("/login", data={"csrf_token": token, "token": TOKEN, "next": "/runs"})
    assert right.status_code == 302 and right.headers["Location"] == "/runs"
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/").status_code == 200 and 'class="main-nav"' in client.get("/").text
    # The dashboard's JavaScript reads the API with the session; writes also need the CSRF header.
    assert client.get("/api/runs").status_code == 200
    assert client.post("/api/workflows/echo/runs", json={"inputs": {"text": "x"}}).status_code == 401
    with client.session_transaction() as session:
        session_csrf = session["csrf"]
    allowed = client.post("/api/workflows/echo/runs", json={"inputs": {"text": "x"}},
                          headers={"X-CSRF-Token": session_csrf})
    assert allowed.status_code == 202

    page_token = csrf(client)
    assert client.post("/logout", data={"csrf_token": page_token}).status_code == 302
    assert client.get("/").status_code == 302
    assert client.get("/api/runs").status_code == 401


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"])
def test_login_never_redirects_off_site(locked, target):
    client = locked.test_client()
    token = CSRF_FIELD.search(client.get("/login").text).group(1)

    response = client.post("/login", data={"csrf_token": token, "token": TOKEN, "next": target})

    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_a_new_token_ends_old_sessions(storage):
    settings = {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_SECRET_KEY": "s" * 32}
    first = start_app(create_app({**settings, "WORKFLOW_API_TOKEN": "one"}))
    second = start_app(create_app({**settings, "WORKFLOW_API_TOKEN": "two"}))
    try:
        client = first.test_client()
        token = CSRF_FIELD.search(client.get("/login").text).group(1)
        client.post("/login", data={"csrf_token": token, "token": "one"})
        cookie = client.get_cookie("session").value
        other = second.test_client()
        other.set_cookie("session", cookie)

        assert client.get("/").status_code == 200
        assert other.get("/").status_code == 302
    finally:
        first.extensions["pyflow"].shutdown(timeout=2)
        second.extensions["pyflow"].shutdown(timeout=2)


# -- metrics --------------------------------------------------------------------------------------


def test_api_metrics_counts_runs_success_rate_and_durations(client):
    echoes = [api_run(client, "echo", {"text": text}) for text in ("a", "b", "c")]
    for _ in range(2):
        api_run(client, "failing")

    body = client.get("/api/metrics").get_json()

    echo, failing, idle = (body["workflows"][name] for name in ("echo", "failing", "slow"))
    assert set(echo) == {"24h", "7d"}
    assert echo["24h"]["runs"] == 3 and echo["24h"]["succeeded"] == 3 and echo["24h"]["success_rate"] == 1.0
    assert failing["7d"]["runs"] == 2 and failing["7d"]["failed"] == 2 and failing["7d"]["success_rate"] == 0.0
    # The percentiles lie within the durations the runs themselves recorded (rounded to ms as the metric is).
    durations = [parse_time(run["finished_at"]) - parse_time(run["started_at"]) for run in echoes]
    assert round(min(durations), 3) <= echo["24h"]["p50_duration_s"] <= echo["24h"]["p95_duration_s"]
    assert echo["24h"]["p95_duration_s"] <= round(max(durations), 3)
    assert idle["24h"] == {"runs": 0, "finished": 0, "succeeded": 0, "failed": 0, "cancelled": 0,
                           "success_rate": None, "p50_duration_s": None, "p95_duration_s": None}


def _entry(workflow: str, status: str, age_s: float, duration_s: float | None, now: float) -> dict:
    created = now - age_s
    return {"id": f"run_{int(created * 1e6):016x}", "workflow": workflow, "status": status,
            "created_at": format_time(created), "started_at": format_time(created) if duration_s is not None else None,
            "finished_at": format_time(created + duration_s) if duration_s is not None and status in
            ("succeeded", "failed", "cancelled") else None}


def test_metrics_windows_percentiles_and_unfinished_runs():
    now = time.time()
    hour, day = 3600, 86400
    entries = [
        _entry("job", "succeeded", 1 * hour, 1.0, now),
        _entry("job", "succeeded", 2 * hour, 2.0, now),
        _entry("job", "failed", 3 * hour, 3.0, now),
        _entry("job", "succeeded", 3 * day, 4.0, now),  # only in the 7-day window
        _entry("job", "running", 10, 0.0, now),  # counts as a run, not for rates or durations
        _entry("job", "cancelled", 4 * hour, None, now),  # cancelled while queued: no duration
    ]

    metrics = workflow_metrics(entries, ["job", "quiet"], now)

    day_window, week = metrics["job"]["24h"], metrics["job"]["7d"]
    assert day_window["runs"] == 5 and day_window["finished"] == 4 and day_window["succeeded"] == 2
    assert day_window["success_rate"] == 0.5
    assert day_window["p50_duration_s"] == 2.0 and day_window["p95_duration_s"] == pytest.approx(2.9)
    assert week["runs"] == 6 and week["success_rate"] == 0.6
    assert week["p50_duration_s"] == 2.5 and week["p95_duration_s"] == pytest.approx(3.85)
    assert metrics["quiet"]["7d"]["runs"] == 0
    assert percentile([], 50) is None and percentile([7.0], 95) == 7.0


def _samples(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain" and "version=" in response.headers["Content-Type"]
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_prometheus_metrics_parse_and_count_runs(client):
    api_run(client, "echo", {"text": "a"})
    api_run(client, "echo", {"text": "b"})
    api_run(client, "failing")
    csrf_token = csrf(client)
    client.post("/workflows/queued_events/start", data={"csrf_token": csrf_token})

    samples = _samples(client)

    assert samples["pyflow_runs_total", (("status", "succeeded"), ("workflow", "echo"))] == 2
    assert samples["pyflow_runs_total", (("status", "failed"), ("workflow", "failing"))] == 1
    assert samples["pyflow_run_duration_seconds_count", (("workflow", "echo"),)] == 2
    assert samples["pyflow_run_duration_seconds_bucket", (("le", "+Inf"), ("workflow", "echo"))] == 2
    assert samples["pyflow_workflow_started", (("workflow", "queued_events"),)] == 1
    assert samples["pyflow_workflow_started", (("workflow", "echo"),)] == 0


def test_each_app_has_its_own_metrics(client, storage, tmp_path):
    api_run(client, "echo", {"text": "a"})
    other = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "other"),
                        "WORKFLOW_CLASSES": WORKFLOWS}))
    try:
        other_samples = _samples(other.test_client())
    finally:
        other.extensions["pyflow"].shutdown(timeout=2)

    assert ("pyflow_runs_total", (("status", "succeeded"), ("workflow", "echo"))) in _samples(client)
    assert not any(name == "pyflow_runs_total" for name, _ in other_samples)


# -- the graph layout -----------------------------------------------------------------------------


def _step(name: str, *deps: str, status: str = "pending") -> dict:
    return {"name": name, "depends_on": list(deps), "status": status}


def test_graph_layers_are_longest_paths_from_a_root():
    steps = [_step("a"), _step("b", "a"), _step("c", "a"), _step("d", "b", "c"), _step("e", "a", "d"), _step("f")]

    assert layers(steps) == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 3, "f": 0}
    drawing = layout(steps)
    boxes = {box.name: box for box in drawing.boxes}
    assert boxes["b"].x == boxes["c"].x > boxes["a"].x and boxes["b"].y < boxes["c"].y
    assert len(drawing.edges) == 6 and all(edge.x2 > edge.x1 for edge in drawing.edges)
    assert drawing.width >= boxes["e"].x + drawing.box_width


def test_only_non_chains_are_drawn():
    assert is_chain([_step("a"), _step("b", "a"), _step("c", "b")])
    assert not is_chain([_step("a"), _step("b", "a"), _step("c", "a")])
    assert not is_chain([_step("a"), _step("b")])  # a second root


def test_a_browser_post_from_another_site_is_refused_but_same_site_and_non_browsers_pass(tmp_path):
    app = start_app(create_app(
        {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"), "WORKFLOW_CLASSES": WORKFLOWS}
    ))
    try:
        client = app.test_client()
        url = "/api/workflows/echo/runs"
        refused = client.post(url, json={"inputs": {"text": "x"}}, headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403
        assert refused.get_json()["error"]["code"] == "cross_site_request"
        assert client.post(url, json={}, headers={"Origin": "http://localhost"}).status_code == 202
        assert client.post(url, json={}).status_code == 202  # curl and scripts send no Origin
        assert client.get("/api/workflows", headers={"Origin": "https://evil.example"}).status_code == 200
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


def test_a_run_undoing_its_steps_offers_cancel_but_no_pause(client, runtime):
    # A compensating run ends failed or cancelled once its compensations ran: a pause of it is a 409.
    run = new_run("echo", [new_step("say", "echo")], {"text": "hi"}, "api")
    run.update(status="running", compensating="cancelled")
    runtime.store.create_run(run)
    html = client.get(f"/runs/{run['id']}").text
    forms = {found.group(2): found.group(1)
             for found in re.finditer(r'(<form[^>]*action="/runs/run_[0-9a-f]+/(\w+)"[^>]*>)', html)}
    assert "hidden" in forms["pause"] and "data-unless-compensating" in forms["pause"]
    assert "hidden" not in forms["cancel"]
