"""Files across hosts (app/core/files.py): uploads and e-mail attachments reach another host through the store.

A second folder under tmp_path stands for another host's disk: it starts empty, and
the server's own attachments folder is removed before ``fetch``, so nothing can come
through a shared disk.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from app import create_app, start_app
from app.core.config import load_settings
from app.core.files import fetch, share
from app.core.runtime import Runtime
from app.errors import NotFound
from app.storage.json.store import JsonStore
from app.storage.memory import MemoryStore
from tests import pdf_factory
from tests.conftest import TEST_SETTINGS
from tests.fixtures import TRIGGER_WORKFLOWS, WORKFLOWS
from tests.fixtures.actions import EchoAction
from tests.imap_server import IMAPServer, pdf_message
from tests.waiting import wait_until
from triggers.email import EmailTrigger
from workflows.base import Workflow

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 400  # ~100 kB with every byte value


class MailFilesWorkflow(Workflow):
    name = "mail_files"
    description = "Counts the attachments of a mail."
    trigger = EmailTrigger("inbox", attachment_types=["application/pdf", "text/plain"])
    actions = [EchoAction("count", value="{{ trigger_data.attachments | length }}")]


@pytest.fixture
def make_app(tmp_path) -> Iterator[Callable[..., FlaskClient]]:
    """Apps on this test's server folder with extra settings; shut down afterwards."""
    apps = []

    def make(**settings) -> FlaskClient:
        classes = [*WORKFLOWS, *TRIGGER_WORKFLOWS, MailFilesWorkflow]
        app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "server"),
                                    "WORKFLOW_CLASSES": classes, **settings}))
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["pyflow"].shutdown(timeout=2)


def runtime_of(client: FlaskClient):
    return client.application.extensions["pyflow"]


def finished(client: FlaskClient, run_id: str) -> dict:
    def done():
        run = client.get(f"/api/runs/{run_id}").get_json()
        return run if run["status"] in ("succeeded", "failed") else None
    return wait_until(done, timeout=10, message=f"run {run_id} finished")


def other_host(client: FlaskClient, tmp_path: Path) -> Path:
    """An empty attachments folder of another host, after the server's own is gone."""
    shutil.rmtree(runtime_of(client).store.root / "attachments")
    return tmp_path / "worker" / "attachments"


def assert_fetched(client: FlaskClient, run: dict, folder: Path, expected: dict[str, bytes]) -> None:
    """``fetch`` on another host gives every attachment's identical bytes there, keeping ``inputs`` as it was."""
    inputs = run["trigger_data"]
    before = json.loads(json.dumps(inputs))
    fetched = fetch(runtime_of(client).store, inputs, folder, folders=run["attachment_folders"])
    assert inputs == before  # the run's record keeps what it had
    records = fetched["attachments"]
    assert {record["filename"] for record in records} == set(expected)
    for record in records:
        path = Path(record["path"])
        assert path == folder.resolve() / record["key"].removeprefix("attachments/")
        assert path.read_bytes() == expected[record["filename"]]
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.services
def test_an_upload_to_a_server_on_postgresql_reaches_another_host_through_the_database(make_app, postgres_url,
                                                                                         tmp_path):
    client = make_app(WORKFLOW_DATABASE_URL=postgres_url)
    response = client.post("/api/workflows/echo/runs?wait=5", content_type="multipart/form-data", data={
        "inputs": json.dumps({"text": "files"}),
        "form": (io.BytesIO(PDF), "application.pdf", "application/pdf"),
        "notes": (io.BytesIO(b"hello\n"), "notes.txt"),
    })
    assert response.status_code == 200, response.get_json()
    run = response.get_json()
    for record in run["trigger_data"]["attachments"]:
        folder = Path(record["path"]).parent.name
        assert record["key"] == f"attachments/{folder}/{record['filename']}"
        assert run["attachment_folders"] == [folder]

    assert_fetched(client, run, other_host(client, tmp_path), {"application.pdf": PDF, "notes.txt": b"hello\n"})


@pytest.mark.services
def test_an_e_mail_attachment_polled_on_postgresql_reaches_another_host_through_the_database(make_app, postgres_url,
                                                                                              tmp_path):
    with IMAPServer() as imap:
        imap.append(pdf_message(attachments=[("form.pdf", PDF, "application/pdf"),
                                             ("note.txt", b"see the form", "text/plain")]))
        client = make_app(WORKFLOW_DATABASE_URL=postgres_url, **imap.settings(tmp_path / "server"))
        response = client.post("/api/workflows/mail_files/poll")
        assert response.status_code == 200, response.get_json()
        (run,) = response.get_json()["runs"]
    run = finished(client, run["id"])
    assert run["status"] == "succeeded", run["error"]
    assert all(record["key"].startswith(f"attachments/{run['attachment_folders'][0]}/")
               for record in run["trigger_data"]["attachments"])
    assert run["attachment_folders"][0].startswith("email-")

    assert_fetched(client, run, other_host(client, tmp_path), {"form.pdf": PDF, "note.txt": b"see the form"})


@pytest.mark.services
def test_maintenance_prunes_the_databases_copies_of_old_attachments(make_app, postgres_url):
    import psycopg

    client = make_app(WORKFLOW_DATABASE_URL=postgres_url)
    response = client.post("/api/workflows/echo/runs?wait=5", content_type="multipart/form-data",
                           data={"form": (io.BytesIO(PDF), "old.pdf")})
    (old,) = response.get_json()["trigger_data"]["attachments"]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE pyflow_files SET created_at = now() - interval '31 days'")
    response = client.post("/api/workflows/echo/runs?wait=5", content_type="multipart/form-data",
                           data={"form": (io.BytesIO(b"new"), "new.pdf")})
    (new,) = response.get_json()["trigger_data"]["attachments"]

    runtime_of(client).maintain()  # WORKFLOW_RETENTION_DAYS: 30 by default

    store = runtime_of(client).store
    with pytest.raises(NotFound, match=old["key"]):
        store.get_file(old["key"])
    assert store.get_file(new["key"]) == b"new"


def test_on_the_json_store_an_upload_gets_its_key_and_stays_the_one_file(make_app, tmp_path):
    client = make_app()
    response = client.post("/api/workflows/echo/runs?wait=5", content_type="multipart/form-data",
                           data={"form": (io.BytesIO(PDF), "application.pdf")})
    (record,) = response.get_json()["trigger_data"]["attachments"]
    store = runtime_of(client).store
    assert isinstance(store, JsonStore)
    assert Path(record["path"]) == (store.root / record["key"]).resolve()
    # On the host that saved it, fetch finds the file where the key says and writes nothing.
    before = Path(record["path"]).stat()
    fetched = fetch(store, {"attachments": [record]}, store.root / "attachments",
                    folders=[Path(record["path"]).parent.name])
    assert fetched["attachments"][0]["path"] == record["path"]
    after = Path(record["path"]).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [path.name for path in (store.root / "attachments").rglob("*") if path.is_file()] == ["application.pdf"]


def test_a_webhook_upload_gets_its_key(make_app):
    client = make_app()
    assert client.post("/api/workflows/upload_hook/start").status_code == 200
    response = client.post("/api/hooks/upload_hook", content_type="multipart/form-data",
                           data={"file": (io.BytesIO(b"a,b\n"), "t.csv")})
    run = wait_until(lambda: (run := client.get(response.headers["Location"]).get_json())["status"] in (
        "succeeded", "failed") and run, message="the webhook's run finished")
    (record,) = run["trigger_data"]["attachments"]
    assert record["key"] == f"attachments/{Path(record['path']).parent.name}/t.csv"


def test_share_gives_keys_only_to_files_in_the_stores_attachments_folder(tmp_path):
    store = MemoryStore(tmp_path / "store")
    saved = store.root / "attachments" / "f1" / "a.pdf"
    store.put_file("attachments/f1/a.pdf", b"saved by the server")
    elsewhere = tmp_path / "files" / "b.pdf"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"named in posted inputs")
    inputs = {"attachments": [{"path": str(saved)}, {"path": str(elsewhere)}, {"path": str(store.root)}, "text"],
              "other": 1}
    assert share(store, inputs) is inputs
    assert inputs["attachments"] == [{"path": str(saved), "key": "attachments/f1/a.pdf"}, {"path": str(elsewhere)},
                                     {"path": str(store.root)}, "text"]
    assert share(store, {"attachments": "not a list"}) == {"attachments": "not a list"}


@pytest.mark.services
def test_share_keeps_a_file_above_the_bound_on_its_host_and_says_so(postgres_url, tmp_path, caplog):
    from app.storage.postgres import PostgresStore

    store = PostgresStore(postgres_url, tmp_path / "server")
    try:
        path = store.files_path("attachments", "f1") / "big.pdf"
        path.write_bytes(b"x" * 2000)
        record = {"filename": "big.pdf", "path": str(path)}
        with caplog.at_level(logging.WARNING, "app.core.files"):
            share(store, {"attachments": [record]}, max_bytes=1000)
        assert "key" not in record
        assert "WORKFLOW_MAX_UPLOAD_MB" in caplog.text and str(path) in caplog.text
        with pytest.raises(NotFound):
            store.get_file("attachments/f1/big.pdf")
    finally:
        store.close()


@pytest.mark.parametrize("key", ["attachments/../runs/x.json", "/etc/passwd", "runs/x.json", "attachments/a/../../b"])
def test_fetch_refuses_a_key_that_leads_outside_the_attachments_area(tmp_path, key):
    store = MemoryStore(tmp_path / "store")
    with pytest.raises(ValueError, match="file key"):
        fetch(store, {"attachments": [{"key": key, "path": "/x"}]}, tmp_path / "worker", folders=["a", ".."])
    assert not (tmp_path / "worker").exists()


@pytest.mark.services
@pytest.mark.parametrize(("key", "says"), [
    ("../../encryption.key", "a file key must be a relative name such as 'attachments/<folder>/<name>'"),
    ("attachments/nope/x.txt", "attachment 'x.txt' (key 'attachments/nope/x.txt') is not an attachment of this run"),
])
def test_a_run_whose_posted_key_leads_nowhere_fails_on_the_worker_naming_the_key(postgres_url, tmp_path, key, says):
    """docs/files.md: a key in a run's inputs outside attachments/ (or not the run's) is refused naming it."""
    from tests.runtimes import runtimes

    with runtimes(tmp_path, postgres_url, {"WORKFLOW_EXECUTOR": "procrastinate"}) as make:
        server = make("server")
        server.create_definition({"name": "notes", "steps": [{"name": "say", "type": "log",
                                                              "config": {"message": "{{ inputs.text }}"}}]})
        make("worker", worker=True)
        attachments = [{"filename": "x.txt", "key": key, "path": "/etc/hostname"}]
        run, _ = server.submit("notes", {"text": "x", "attachments": attachments})
        failed = wait_until(lambda: (stored := server.get_run(run["id"]))["status"] == "failed" and stored, 30,
                            message="the worker refusing the run")
    assert failed["error"].startswith(f"its attachments cannot be read: {says}") and key in failed["error"]


@pytest.mark.services
def test_a_worker_fetches_a_runs_own_upload_and_refuses_another_runs_key(make_app, postgres_url, tmp_path):
    """docs/files.md: the key of another run's upload, posted in JSON inputs, makes no worker fetch its file."""
    settings = {"WORKFLOW_DATABASE_URL": postgres_url, "WORKFLOW_EXECUTOR": "procrastinate"}
    client = make_app(**settings)
    assert client.post("/api/workflows", json={"name": "read_upload", "steps": [
        {"name": "read", "type": "pdf_text", "config": {"file": "{{ inputs.attachments }}"}}]}).status_code == 201
    worker = Runtime({**load_settings({}), **TEST_SETTINGS, **settings,
                      "WORKFLOW_STORAGE_PATH": str(tmp_path / "worker")}, worker=True)
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    try:
        pdf = pdf_factory.lines_pdf(tmp_path / "own.pdf", [["Private to the first run"]]).read_bytes()
        posted = client.post("/api/workflows/read_upload/runs", content_type="multipart/form-data",
                             data={"form": (io.BytesIO(pdf), "own.pdf", "application/pdf")})
        assert posted.status_code == 202, posted.get_json()
        first = runtime_of(client).outcome(posted.get_json(), 30)
        assert first["status"] == "succeeded", first["error"]
        assert "Private to the first run" in first["steps"][0]["result"]["text"]
        fetched = tmp_path / "worker" / "attachments" / first["attachment_folders"][0] / "own.pdf"
        fetched.unlink()  # the worker's copy: gone, so a second fetch would show

        (record,) = first["trigger_data"]["attachments"]
        posted = client.post("/api/workflows/read_upload/runs", json={"inputs": {"attachments": [record]}})
        assert posted.status_code == 202, posted.get_json()
        second = runtime_of(client).outcome(posted.get_json(), 30)
    finally:
        worker.stop_work(2)
        thread.join(10)
        worker.shutdown(timeout=2)
    assert second["status"] == "failed"
    assert second["error"] == (f"its attachments cannot be read: attachment 'own.pdf' (key {record['key']!r}) is not "
                               f"an attachment of this run (another run's upload or e-mail attachment): a run reads "
                               f"only the files the server saved for it")
    assert second["steps"][0]["status"] == "pending"
    assert not fetched.exists()


def test_fetch_of_a_file_the_store_no_longer_has_is_not_found_naming_it(tmp_path):
    store = MemoryStore(tmp_path / "store")
    with pytest.raises(NotFound, match="attachments/f1/gone.pdf"):
        fetch(store, {"attachments": [{"key": "attachments/f1/gone.pdf"}]}, tmp_path / "worker", folders=["f1"])


def test_fetch_without_keys_returns_the_inputs_as_they_are(tmp_path):
    inputs = {"attachments": [{"path": "/somewhere/a.pdf"}], "n": 1}
    assert fetch(MemoryStore(tmp_path / "store"), inputs, tmp_path / "worker", folders=[]) is inputs
