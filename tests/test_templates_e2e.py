"""The shipped templates in workflows/definitions/, end to end: real HTTP servers on loopback, real SQLite files."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from http.server import BaseHTTPRequestHandler

import pytest

from tests import pdf_factory
from tests.http_server import base_url, serving

TEMPLATES = ("data_pipeline", "document_processing", "notification_flow")


class Site:
    """A loopback HTTP server: GET answers ``pages[path]`` as JSON, POST is recorded in ``posts``."""

    def __init__(self, post_delay: float = 0.0):
        self.pages: dict[str, object] = {}
        self.posts: list[dict] = []
        self.post_delay = post_delay
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path in site.pages
                self._answer(200 if found else 404, site.pages.get(self.path, {"error": "no such page"}))

            def do_POST(self) -> None:
                started = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(site.post_delay)  # long enough to see two posts overlap
                site.posts.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                   "json": json.loads(body), "started": started, "ended": time.monotonic()})
                self._answer(200, {"ok": True})

            def _answer(self, status: int, payload: object) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._serving = serving(Handler)

    def __enter__(self) -> Site:
        self.url = base_url(self._serving.__enter__())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._serving.__exit__(*exc_info)


@pytest.fixture
def site():
    with Site(post_delay=0.4) as site:
        yield site


def run(client, name: str, inputs: dict | None = None, **post) -> dict:
    """Run ``name`` to its end through the API; the finished run."""
    if "data" not in post:
        post["json"] = {"inputs": inputs or {}}
    response = client.post(f"/api/workflows/{name}/runs?wait=20", **post)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def steps(run: dict) -> dict[str, dict]:
    return {step["name"]: step for step in run["steps"]}


def rows(db, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db)) as connection:
        return connection.execute(sql).fetchall()


def test_the_templates_are_loaded_from_their_files(client, storage):
    for name in TEMPLATES:
        summary = client.get(f"/api/workflows/{name}").get_json()
        assert summary["origin"] == "file"
        assert summary["source"].endswith(f"workflows/definitions/{name}.yaml")
        assert summary["error"] is None
    trigger = client.get("/api/workflows/document_processing").get_json()["trigger"]
    assert trigger["type"] == "file"
    assert trigger["folder"] == f"{storage}/files/documents/inbox"  # WORKFLOW_FILES_ROOT's default, <storage>/files


# -- data_pipeline ----------------------------------------------------------------------------------

USERS = [
    {"id": 1, "name": "Ann", "email": "ann@example.org", "address": {"city": "Berlin"}, "company": {"name": "Acme"}},
    {"id": 2, "name": "Bob", "email": "not an address", "address": {"city": "Paris"}},
    {"id": 1, "name": "Ann again", "email": "ann@example.org"},
    {"id": 3, "name": "", "email": "cy@example.org"},
    {"id": 4, "name": "Dee", "email": "dee@example.org", "company": {"name": "Initech"}},
]


def test_data_pipeline_appends_and_replaces(client, storage):
    db = storage / "files" / "db" / "pipeline.sqlite3"
    with Site() as source:
        source.pages = {"/users": USERS, "/v2/users": [{"id": 9, "name": "Eve", "email": "eve@example.org"}]}
        inputs = {"url": f"{source.url}/users", "db_path": "db/pipeline.sqlite3", "table": "people"}
        first = run(client, "data_pipeline", inputs)
        assert first["status"] == "succeeded", first["error"]
        found = steps(first)
        assert len(found["dedupe"]["result"]["data"]) == 4  # the second id 1 is dropped
        split = found["split"]["result"]
        assert (split["valid"], split["invalid"]) == (2, 2)
        assert [(item["row"]["id"], item["errors"][0]["path"]) for item in split["rejected"]] == [
            (2, "email"), (3, "name")]
        assert found["load"]["result"] == {"table": "people", "mode": "append", "inserted": 2, "total": 2}
        assert found["report"]["result"]["message"] == (
            "loaded 2 rows into people (append; 2 in the table), skipped 2 invalid")

        second = run(client, "data_pipeline", {**inputs, "mode": "append"})
        assert steps(second)["load"]["result"]["total"] == 4
        assert rows(db, "SELECT id, name, email, city, company FROM people ORDER BY rowid") == [
            (1, "Ann", "ann@example.org", "Berlin", "Acme"), (4, "Dee", "dee@example.org", None, "Initech")] * 2

        replaced = run(client, "data_pipeline", {**inputs, "url": f"{source.url}/v2/users", "mode": "replace"})
        assert steps(replaced)["load"]["result"] == {"table": "people", "mode": "replace", "inserted": 1, "total": 1}
        assert rows(db, "SELECT id, name, email FROM people") == [(9, "Eve", "eve@example.org")]


def test_data_pipeline_refuses_a_bad_mode_before_running(client):
    response = client.post("/api/workflows/data_pipeline/runs", json={"inputs": {"mode": "merge"}})
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["path"] == "mode"


# -- notification_flow ------------------------------------------------------------------------------

def test_notification_flow_mails_then_notifies_and_posts_to_the_webhook_at_once(client, storage, site):
    inputs = {"subject": "Deploy", "message": "v2 is live", "to": "team@example.org",
              "notify_urls": [site.url.replace("http://", "json://", 1) + "/notify"], "webhook_url": f"{site.url}/hook"}
    result = run(client, "notification_flow", inputs)

    assert result["status"] == "succeeded", result["error"]
    found = steps(result)
    assert found["email"]["result"]["delivery"] == "outbox"
    outbox = list((storage / "outbox").glob("*.eml"))
    assert len(outbox) == 1
    mail = outbox[0].read_text(encoding="utf-8")
    assert "Subject: Deploy" in mail and "To: team@example.org" in mail and "Deploy: v2 is live" in mail

    posts = {post["path"]: post for post in site.posts}
    # Apprise's JSON notification: title and message as given.
    assert {key: posts["/notify"]["json"][key] for key in ("title", "message", "type")} == {
        "title": "Deploy", "message": "v2 is live", "type": "info"}
    assert found["notify"]["result"]["failed"] == []
    assert [sent["service"] for sent in found["notify"]["result"]["sent"]] == ["JSON"]
    hook = posts["/hook"]["json"]
    assert {key: hook[key] for key in ("event", "workflow", "run_id", "subject", "message")} == {
        "event": "notification", "workflow": "notification_flow", "run_id": result["id"], "subject": "Deploy",
        "message": "Deploy: v2 is live"}
    assert hook["email"]["recipient"] == "team@example.org"
    assert hook["email"]["message_id"] == found["email"]["result"]["message_id"]
    assert all(post["content_type"].startswith("application/json") for post in site.posts)

    # Both wait only for the e-mail, so each post began before the other ended.
    assert found["notify"]["depends_on"] == found["webhook"]["depends_on"] == ["email"]
    assert max(post["started"] for post in site.posts) < min(post["ended"] for post in site.posts)


def test_notification_flow_without_webhooks_only_mails(client, storage, site):
    result = run(client, "notification_flow", {})
    assert result["status"] == "succeeded", result["error"]
    assert {name: step["status"] for name, step in steps(result).items()} == {
        "render": "succeeded", "email": "succeeded", "notify": "skipped", "webhook": "skipped"}
    assert steps(result)["render"]["result"]["message"] == "PyFlow notification: Hello from PyFlow"
    assert site.posts == []


def test_notification_flow_refuses_a_webhook_that_is_not_an_address(client, site):
    response = client.post("/api/workflows/notification_flow/runs",
                           json={"inputs": {"notify_urls": ["not a uri"], "webhook_url": f"{site.url}/hook"}})
    assert response.status_code == 422
    assert response.get_json()["error"]["details"] == [
        {"path": "notify_urls.0", "message": "'not a uri' is not a 'uri'"}]
    assert site.posts == []


def test_notification_flow_fails_on_a_url_apprise_cannot_read_naming_it_without_its_token(client, site):
    inputs = {"notify_urls": ["slak://T1JJ3T3L2/B0123/s3cr3tT0ken"], "webhook_url": f"{site.url}/hook"}
    result = run(client, "notification_flow", inputs)
    assert result["status"] == "failed"
    error = steps(result)["notify"]["error"]
    assert error.startswith("notify: urls[0]: Apprise cannot read the URL 'slak://t1jj3t3l2/...'")
    assert "s3cr3tT0ken" not in error
    assert steps(result)["notify"]["attempts"] == 1  # a URL that cannot be read is not tried again


# -- document_processing ----------------------------------------------------------------------------

PAGES = [
    ["Invoice INV-7 dated 2024-03-15", "From: billing@acme.example, phone +1 555 010 0199",
     "Total due: USD 1,250.00 by 15/04/2024"],
    ["Questions? support@acme.example or (030) 1234-5678", "Late fee EUR 25.50 after 1 May 2024"],
]


def test_document_processing_uploads_analyses_and_stores(client, storage):
    root = storage / "files"  # WORKFLOW_FILES_ROOT's default: the inputs' paths are inside it
    root.mkdir(parents=True)
    pdf = pdf_factory.lines_pdf(root / "invoice.pdf", PAGES)
    db = root / "documents.sqlite3"
    with pdf.open("rb") as handle:
        uploaded = run(client, "document_processing", data={
            "file": (handle, "invoice.pdf", "application/pdf"), "inputs": json.dumps({"db_path": str(db)})})
    by_path = run(client, "document_processing", {"file": "invoice.pdf"})  # relative: under the root

    assert uploaded["status"] == "succeeded", uploaded["error"]
    found = steps(uploaded)
    assert found["extract"]["result"]["pages"] == 2
    analysis = found["analyse"]["result"]
    assert analysis["word_count"] == sum(len(line.split()) for page in PAGES for line in page)
    assert analysis["emails"] == ["billing@acme.example", "support@acme.example"]
    assert analysis["phone_numbers"] == ["+1 555 010 0199", "(030) 1234-5678"]
    assert analysis["dates"] == ["2024-03-15", "15/04/2024", "1 May 2024"]
    assert [(amount["currency"], amount["value"]) for amount in analysis["amounts"]] == [
        ("USD", 1250.0), ("EUR", 25.5)]
    assert found["store"]["result"] == {"id": 1, "db_path": str(db), "table": "documents"}

    assert steps(by_path)["store"]["result"]["id"] == 2
    stored = rows(db, "SELECT id, source, pages, word_count, emails, dates, amounts, text FROM documents")
    assert [row[:4] for row in stored] == [(1, "invoice.pdf", 2, analysis["word_count"]),
                                           (2, "invoice.pdf", 2, analysis["word_count"])]
    assert json.loads(stored[0][4]) == analysis["emails"]
    assert json.loads(stored[0][5]) == analysis["dates"]
    assert json.loads(stored[0][6]) == analysis["amounts"]
    assert stored[0][7].split("\f")[1].startswith("Questions?")


def test_document_processing_reads_a_scanned_pdf_as_the_typed_one(client, storage, tesseract):
    root = storage / "files"
    root.mkdir(parents=True)
    typed = pdf_factory.lines_pdf(root / "typed.pdf", PAGES)
    pdf_factory.scanned_pdf(root / "scanned.pdf", typed)
    from_text = steps(run(client, "document_processing", {"file": "typed.pdf"}))
    scanned = run(client, "document_processing", {"file": "scanned.pdf"})

    assert scanned["status"] == "succeeded", scanned["error"]
    from_scan = steps(scanned)
    assert from_scan["extract"]["result"]["ocr_pages"] == [1, 2]
    assert from_text["extract"]["result"]["ocr_pages"] == []
    assert from_scan["extract"]["result"]["text"] == from_text["extract"]["result"]["text"]
    assert from_scan["analyse"]["result"] == from_text["analyse"]["result"]
    assert from_scan["analyse"]["result"]["emails"] == ["billing@acme.example", "support@acme.example"]


def test_data_pipeline_and_document_processing_keep_their_databases_in_the_files_root(client, storage, tmp_path):
    """The defaults land in WORKFLOW_FILES_ROOT; a db_path elsewhere is refused naming it, and nothing is made."""
    with Site() as source:
        source.pages = {"/users": USERS}
        loaded = run(client, "data_pipeline", {"url": f"{source.url}/users"})
        assert loaded["status"] == "succeeded", loaded["error"]
        assert rows(storage / "files" / "pipeline.sqlite3", "SELECT count(*) FROM users") == [(2,)]
        outside = tmp_path / "elsewhere.sqlite3"
        refused = run(client, "data_pipeline", {"url": f"{source.url}/users", "db_path": str(outside)})
    assert refused["status"] == "failed"
    assert refused["error"] == (
        f"step 'load' failed: python: workflows.library.sqlite_store:load_rows: db_path '{outside}' is outside "
        f"WORKFLOW_FILES_ROOT ({storage / 'files'})")
    assert steps(refused)["load"]["attempts"] == 1  # not retried
    assert not outside.exists()


def test_document_processing_reads_only_inside_the_files_root(client, storage, tmp_path):
    pdf = pdf_factory.lines_pdf(tmp_path / "elsewhere.pdf", PAGES)
    result = run(client, "document_processing", {"file": str(pdf)})
    assert result["status"] == "failed"
    assert result["error"] == (
        f"step 'extract' failed: pdf_text: file '{pdf}' is outside WORKFLOW_FILES_ROOT ({storage / 'files'})")


def test_document_processing_without_a_file_says_so(client):
    result = run(client, "document_processing", {})
    assert result["status"] == "failed"
    assert result["error"] == "step 'extract' failed: pdf_text: no file to read (did its template find nothing?)"
