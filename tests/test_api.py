"""The REST API of DESIGN section 4 through Flask's test client: endpoints, error codes, uploads, paging, secrets."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from app import create_app, start_app
from tests import pdf_factory
from tests.conftest import TEST_SETTINGS
from tests.fixtures import CORE_WORKFLOWS, WORKFLOWS, QueueTrigger, wait_until

ALL_WORKFLOWS = [*WORKFLOWS, *CORE_WORKFLOWS]


@pytest.fixture
def app(storage, key_file):
    """The conftest app, with the core tests' workflows registered too."""
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_KEY_FILE": str(key_file), "WORKFLOW_CLASSES": ALL_WORKFLOWS}))
    yield app
    app.extensions["pyflow"].shutdown(timeout=2)


def error_of(response) -> dict:
    """The error object of a JSON error answer, after checking it is one."""
    assert response.is_json, response.data[:200]
    body = response.get_json()
    assert set(body) == {"error"}
    assert {"code", "message"} <= set(body["error"])
    assert "Traceback" not in response.get_data(as_text=True)
    return body["error"]


def run_and_wait(client, workflow: str, inputs: dict | None = None, **kwargs):
    response = client.post(f"/api/workflows/{workflow}/runs?wait=5", json={"inputs": inputs or {}}, **kwargs)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def finished(client, run_id: str) -> dict:
    def done():
        run = client.get(f"/api/runs/{run_id}").get_json()
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None
    return wait_until(done, message=f"run {run_id} finished")


# -- health and workflows ----------------------------------------------------------------------------------


def test_health(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.is_json
    assert response.get_json() == {"status": "ok"}


def test_list_workflows_gives_a_summary_of_each(client):
    response = client.get("/api/workflows")
    assert response.status_code == 200
    summaries = response.get_json()["workflows"]
    names = [summary["name"] for summary in summaries]
    assert names == sorted(names)
    assert {workflow.name for workflow in ALL_WORKFLOWS} | {"uptime_monitor"} <= set(names)
    for summary in summaries:
        assert {"name", "description", "trigger", "actions", "status"} <= set(summary)
        assert summary["trigger"]["type"]
        assert all(set(action) == {"name", "type"} for action in summary["actions"])
        assert summary["status"] == "stopped"


def test_get_one_workflow(client):
    response = client.get("/api/workflows/echo")
    assert response.status_code == 200
    summary = response.get_json()
    assert summary["name"] == "echo"
    assert summary["description"] == "Echoes the posted text."
    assert summary["trigger"]["type"] == "manual"
    assert summary["actions"] == [{"name": "echo", "type": "echo"}, {"name": "shout", "type": "echo"}]
    assert summary["status"] == "stopped"


def test_start_and_stop_answer_the_summary(client):
    started = client.post("/api/workflows/tick/start")
    assert started.status_code == 200
    assert started.get_json()["name"] == "tick"
    assert started.get_json()["status"] == "running"
    stopped = client.post("/api/workflows/tick/stop")
    assert stopped.status_code == 200
    assert stopped.get_json()["status"] == "stopped"


def test_a_started_interval_workflow_says_when_it_fires_next_and_others_say_null(client):
    assert client.get("/api/workflows/tick").get_json()["next_fire_time"] is None
    started = client.post("/api/workflows/tick/start").get_json()
    # A 0.2 s interval: the next fire is a moment away, UTC with milliseconds and Z.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", started["next_fire_time"])
    listed = {summary["name"]: summary for summary in client.get("/api/workflows").get_json()["workflows"]}
    assert listed["tick"]["next_fire_time"]
    assert listed["echo"]["next_fire_time"] is None, "a manual trigger has no schedule"
    assert client.post("/api/workflows/tick/stop").get_json()["next_fire_time"] is None


def test_poll_answers_one_run_per_event(client):
    QueueTrigger.items[:] = [{"n": 7}, {"n": 8}]
    response = client.post("/api/workflows/queued_events/poll")
    assert response.status_code == 200
    runs = response.get_json()["runs"]
    assert [run["trigger_data"] for run in runs] == [{"n": 7}, {"n": 8}]
    assert all(run["workflow"] == "queued_events" for run in runs)
    assert client.post("/api/workflows/queued_events/poll").get_json() == {"runs": []}
    for run in runs:
        assert finished(client, run["id"])["status"] == "succeeded"


# -- creating runs -------------------------------------------------------------------------------------------


def test_post_run_answers_202_with_location_and_the_run_can_be_fetched(client):
    response = client.post("/api/workflows/slow/runs", json={"inputs": {"seconds": 0.3}})
    assert response.status_code == 202
    run = response.get_json()
    assert run["status"] in ("queued", "running")
    assert run["workflow"] == "slow"
    assert run["trigger_data"] == {"seconds": 0.3}
    assert response.headers["Location"] == f"/api/runs/{run['id']}"

    fetched = client.get(response.headers["Location"])
    assert fetched.status_code == 200
    assert fetched.get_json()["id"] == run["id"]
    done = finished(client, run["id"])
    assert done["status"] == "succeeded"
    assert done["progress"] == 100
    assert done["steps"][0]["result"] == {"slept": 0.3}


def test_wait_answers_200_with_the_finished_run(client):
    response = client.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "hello"}})
    assert response.status_code == 200
    run = response.get_json()
    assert run["status"] == "succeeded"
    assert [step["result"] for step in run["steps"]] == [{"value": "hello"}, {"value": "HELLO"}]
    assert response.headers["Location"] == f"/api/runs/{run['id']}"


def test_wait_answers_202_when_the_run_is_not_finished_in_time(client):
    response = client.post("/api/workflows/slow/runs?wait=0.05", json={"inputs": {"seconds": 0.5}})
    assert response.status_code == 202
    assert response.get_json()["status"] in ("queued", "running")
    assert finished(client, response.get_json()["id"])["status"] == "succeeded"


def test_wait_answers_200_for_a_failed_run_with_the_step_named(client):
    response = client.post("/api/workflows/failing/runs?wait=5")
    assert response.status_code == 200
    run = response.get_json()
    assert run["status"] == "failed"
    assert run["error"] == "step 'boom' failed: this step always fails"
    assert [step["status"] for step in run["steps"]] == ["succeeded", "failed", "pending"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"", None), (b"", "application/json"), (b"{}", "application/json"), (b'{"inputs": null}', "application/json"),
     (b'{"inputs": {}}', "application/json; charset=utf-8"), (b"  \n", "application/json")],
)
def test_an_empty_body_means_no_inputs(client, body, content_type):
    response = client.post("/api/workflows/echo/runs?wait=5", data=body, content_type=content_type)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["trigger_data"] == {}


def test_inputs_reach_every_template_name(client):
    run = run_and_wait(client, "data_flow", {"x": "v"})
    assert run["status"] == "succeeded"
    results = {step["name"]: step["result"] for step in run["steps"]}
    assert results["combined"] == {"value": "v-v-v-data_flow"}


def test_invalid_inputs_answer_422_with_details(client):
    response = client.post("/api/workflows/typed_inputs/runs", json={"inputs": {"count": "three"}})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert error["details"] == [{"path": "count", "message": "'three' is not of type 'integer'"}]
    assert "count" in error["message"]

    missing = error_of(client.post("/api/workflows/typed_inputs/runs", json={"inputs": {}}))
    assert missing["details"] == [{"path": "inputs", "message": "'count' is a required property"}]

    assert client.get("/api/runs?workflow=typed_inputs").get_json()["runs"] == []
    valid = run_and_wait(client, "typed_inputs", {"count": 2})
    assert valid["steps"][0]["result"] == {"value": 4}


@pytest.mark.parametrize(
    ("body", "path"),
    [({"inputs": [1, 2]}, "inputs"), ({"inputs": "text"}, "inputs"), ({"text": "hi"}, "text"),
     ({"inputs": {}, "wait": 5}, "wait")],
)
def test_a_well_formed_but_wrong_body_answers_422(client, body, path):
    response = client.post("/api/workflows/echo/runs", json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert error["details"][0]["path"] == path


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "malformed JSON body"),
        (b'{"inputs": {"a": 1}', "malformed JSON body"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"just text"', "must be a JSON object"),
        (b"42", "must be a JSON object"),
        (b'{"inputs": {"a": "\xc3\x28"}}', "not UTF-8"),
    ],
)
def test_a_malformed_body_answers_400(client, body, words):
    response = client.post("/api/workflows/echo/runs", data=body, content_type="application/json")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "bad_request"
    assert words in error["message"]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "/api/workflows/echo/runs?wait=soon"),
        ("post", "/api/workflows/echo/runs?wait=-1"),
        ("post", "/api/workflows/echo/runs?wait=100000"),
        ("post", "/api/workflows/echo/runs?wait=nan"),
        ("get", "/api/runs?limit=0"),
        ("get", "/api/runs?limit=many"),
        ("get", "/api/runs?limit=100000"),
        ("get", "/api/runs?status=exploded"),
        ("get", "/api/runs?cursor=../../etc/passwd"),
        ("get", "/api/runs?cursor=run_not-hex"),
    ],
)
def test_bad_query_parameters_answer_400_naming_the_parameter(client, method, url):
    response = getattr(client, method)(url)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "bad_request"
    name = url.split("?")[1].split("=")[0]
    assert f"query parameter {name}" in error["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded"])
def test_an_unsupported_content_type_answers_415(client, content_type):
    response = client.post("/api/workflows/echo/runs", data=b"text=hello", content_type=content_type)
    assert response.status_code == 415
    error = error_of(response)
    assert error["code"] == "unsupported_media_type"
    assert content_type in error["message"]


@pytest.mark.parametrize("method, path, body", [
    ("post", "/api/events", {"type": "ticket.created"}),
    ("post", "/api/tokens", {"name": "reader", "role": "viewer"}),
    ("put", "/api/secrets/PLAIN", {"value": "hunter2"}),
    ("post", "/api/runs/{run}/cancel", {}),
    ("post", "/api/runs/{run}/approve", {"comment": "ok"}),
    ("patch", "/api/runs/{run}/variables", {"variables": {"x": 1}}),
])
def test_every_json_body_in_another_content_type_answers_415(client, method, path, body):
    """DESIGN section 4: all bodies are JSON; a JSON text sent as text/plain is refused, not parsed and acted on."""
    run = client.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "hi"}}).get_json()["id"]
    response = getattr(client, method)(path.format(run=run), data=json.dumps(body), content_type="text/plain")
    assert response.status_code == 415
    error = error_of(response)
    assert error["code"] == "unsupported_media_type" and "text/plain" in error["message"]
    assert client.get("/api/tokens").get_json()["tokens"] == []
    assert client.get(f"/api/runs/{run}").get_json()["status"] == "succeeded"


def test_a_body_over_the_upload_limit_answers_413(storage):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS,
                      "WORKFLOW_MAX_UPLOAD_MB": 0.001}))
    try:
        client = app.test_client()
        big = {"inputs": {"text": "x" * 5000}}
        response = client.post("/api/workflows/echo/runs", json=big)
        assert response.status_code == 413
        error = error_of(response)
        assert error["code"] == "request_entity_too_large"
        assert "WORKFLOW_MAX_UPLOAD_MB" in error["message"]

        upload = client.post("/api/workflows/echo/runs", content_type="multipart/form-data",
                             data={"file": (io.BytesIO(b"x" * 5000), "big.bin")})
        assert upload.status_code == 413
        assert error_of(upload)["code"] == "request_entity_too_large"

        small = client.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "fits"}})
        assert small.status_code == 200
        assert client.get("/api/runs").get_json()["runs"] == [small.get_json()]
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


# -- not found, not allowed, conflict ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/nothing-here"),
        ("get", "/api/workflows/nope"),
        ("post", "/api/workflows/nope/runs"),
        ("post", "/api/workflows/nope/poll"),
        ("post", "/api/workflows/nope/start"),
        ("post", "/api/workflows/nope/stop"),
        ("get", "/api/runs/run_00000000000000000000ff"),
        ("get", "/api/runs/not-a-run-id"),
        ("get", "/api/runs/..%2F..%2Fworkflows.json"),
        ("get", "/api/runs?workflow=nope"),
        ("get", "/api/workflows/echo/runs/extra/segments"),
    ],
)
def test_unknown_things_answer_404_as_json(client, method, url):
    response = getattr(client, method)(url)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    assert "<html" not in response.get_data(as_text=True).lower()


def test_404_names_what_was_not_found(client):
    assert error_of(client.get("/api/workflows/nope"))["message"] == "no workflow named 'nope'"
    assert "run_0000000000000000ff" in error_of(client.get("/api/runs/run_0000000000000000ff"))["message"]
    assert "/api/nothing-here" in error_of(client.get("/api/nothing-here"))["message"]


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("get", "/api/workflows/echo/runs", {"POST"}),
        ("delete", "/api/health", {"GET", "HEAD"}),
        ("delete", "/api/workflows", {"GET", "HEAD", "POST"}),
        ("patch", "/api/workflows/echo", {"GET", "HEAD", "PUT", "DELETE"}),
        ("get", "/api/workflows/tick/start", {"POST"}),
        ("delete", "/api/runs/run_00000000000000000000ff", {"GET", "HEAD"}),
    ],
)
def test_a_wrong_method_answers_405_with_allow(client, method, url, allowed):
    response = getattr(client, method)(url)
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert allowed <= {part.strip() for part in response.headers["Allow"].split(",")}


@pytest.mark.parametrize("action", ["start", "poll"])
def test_starting_or_polling_a_manual_workflow_answers_409(client, action):
    response = client.post(f"/api/workflows/echo/{action}")
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "conflict"
    assert "manual trigger" in error["message"]
    assert "POST /api/workflows/echo/runs" in error["message"]
    assert client.get("/api/workflows/echo").get_json()["status"] == "stopped"


# -- idempotency ---------------------------------------------------------------------------------------------


def test_the_same_idempotency_key_answers_the_first_run_and_starts_nothing(client):
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "one"}}, headers=headers)
    again = client.post("/api/workflows/echo/runs", json={"inputs": {"text": "two"}}, headers=headers)
    assert first.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["trigger_data"] == {"text": "one"}
    assert again.headers["Location"] == f"/api/runs/{first.get_json()['id']}"
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(client.get("/api/runs?workflow=echo").get_json()["runs"]) == 1


def test_one_idempotency_key_in_two_workflows_gives_two_runs(client):
    headers = {"Idempotency-Key": "shared-key"}
    echo = client.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "a"}}, headers=headers)
    slow = client.post("/api/workflows/slow/runs?wait=5", json={"inputs": {"seconds": 0.01}}, headers=headers)
    assert echo.get_json()["id"] != slow.get_json()["id"]
    assert len(client.get("/api/runs").get_json()["runs"]) == 2
    other_key = client.post("/api/workflows/echo/runs?wait=5", headers={"Idempotency-Key": "other"})
    assert other_key.get_json()["id"] != echo.get_json()["id"]


def test_an_overlong_idempotency_key_answers_400(client):
    response = client.post("/api/workflows/echo/runs", headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 400
    assert "Idempotency-Key" in error_of(response)["message"]


# -- uploads ---------------------------------------------------------------------------------------------------


def test_multipart_upload_saves_the_files_and_lists_them_as_attachments(client, storage):
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 4
    response = client.post(
        "/api/workflows/echo/runs?wait=5",
        content_type="multipart/form-data",
        data={
            "inputs": json.dumps({"text": "with files"}),
            "notes": (io.BytesIO(b"hello\n"), "notes.txt"),
            "form": (io.BytesIO(pdf), "application.pdf", "application/pdf"),
        },
    )
    assert response.status_code == 200, response.get_json()
    run = response.get_json()
    assert run["steps"][0]["result"] == {"value": "with files"}
    attachments = run["trigger_data"]["attachments"]
    assert run["trigger_data"]["text"] == "with files"
    by_name = {attachment["filename"]: attachment for attachment in attachments}
    assert set(by_name) == {"notes.txt", "application.pdf"}
    assert by_name["notes.txt"]["content_type"] == "text/plain"
    assert by_name["notes.txt"]["size"] == 6
    assert by_name["application.pdf"]["content_type"] == "application/pdf"
    assert by_name["application.pdf"]["size"] == len(pdf)
    for attachment, content in ((by_name["notes.txt"], b"hello\n"), (by_name["application.pdf"], pdf)):
        path = Path(attachment["path"])
        assert path.is_relative_to(storage.resolve())
        assert path.read_bytes() == content


def test_an_uploaded_file_name_cannot_escape_the_storage_folder(client, storage, tmp_path):
    response = client.post(
        "/api/workflows/echo/runs?wait=5",
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(b"evil"), "../../../evil.sh")},
    )
    assert response.status_code == 200
    (attachment,) = response.get_json()["trigger_data"]["attachments"]
    assert attachment["filename"] == "evil.sh"
    assert Path(attachment["path"]).is_relative_to(storage.resolve())
    assert not (tmp_path / "evil.sh").exists()


def test_two_uploads_with_one_name_keep_both_files(client):
    response = client.post(
        "/api/workflows/echo/runs?wait=5",
        content_type="multipart/form-data",
        data={"file": [(io.BytesIO(b"one"), "same.txt"), (io.BytesIO(b"two"), "same.txt")]},
    )
    assert response.status_code in (200, 202), response.text
    attachments = response.get_json()["trigger_data"]["attachments"]
    assert sorted(Path(attachment["path"]).read_bytes() for attachment in attachments) == [b"one", b"two"]


@pytest.mark.parametrize(
    ("inputs_part", "status", "code"),
    [("{broken", 400, "bad_request"), ("[1, 2]", 422, "invalid_input"), ('"text"', 422, "invalid_input")],
)
def test_a_bad_inputs_part_is_refused(client, inputs_part, status, code):
    response = client.post("/api/workflows/echo/runs", content_type="multipart/form-data",
                           data={"inputs": inputs_part, "file": (io.BytesIO(b"x"), "x.txt")})
    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert "inputs" in error_of(response)["message"]


def test_multipart_without_files_has_no_attachments(client):
    response = client.post("/api/workflows/echo/runs?wait=5", content_type="multipart/form-data",
                           data={"inputs": json.dumps({"text": "form only"})})
    assert response.status_code == 200
    assert response.get_json()["trigger_data"] == {"text": "form only"}


# -- a run reads only its own attachments (DESIGN section 10) -------------------------------------------------

NOT_OURS = ("is not an attachment of this run (another run's upload or e-mail attachment): a run reads only the "
            "files the server saved for it")


def read_pdf_workflows(client) -> None:
    """read_upload reads the run's attachments; read_path the path in its input ``f``; read_child both ways."""
    for definition in (
        {"name": "read_upload", "steps": [{"name": "read", "type": "pdf_text",
                                           "config": {"file": "{{ inputs.attachments }}"}}]},
        {"name": "read_path", "steps": [{"name": "read", "type": "pdf_text", "config": {"file": "{{ inputs.f }}"}}]},
        {"name": "read_child", "steps": [{"name": "call", "type": "workflow", "config": {
            "workflow": "read_upload", "inputs": {"attachments": "{{ inputs.attachments }}"}}}]},
    ):
        assert client.post("/api/workflows", json=definition).status_code == 201


def upload_pdf(client, tmp_path: Path, workflow: str, text: str) -> dict:
    """A run of ``workflow`` with a PDF saying ``text`` uploaded, once it finished."""
    pdf = pdf_factory.lines_pdf(tmp_path / "own.pdf", [[text]]).read_bytes()
    response = client.post(f"/api/workflows/{workflow}/runs?wait=10", content_type="multipart/form-data",
                           data={"form": (io.BytesIO(pdf), "own.pdf", "application/pdf")})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_a_run_reads_its_own_upload_and_another_run_naming_it_is_refused(client, tmp_path):
    read_pdf_workflows(client)
    first = upload_pdf(client, tmp_path, "read_upload", "Private to the first run")
    assert first["status"] == "succeeded", first["error"]
    assert "Private to the first run" in first["steps"][0]["result"]["text"]
    (record,) = first["trigger_data"]["attachments"]
    assert first["attachment_folders"] == [Path(record["path"]).parent.name]

    # The path and folder are in the first run's record, which any viewer reads; inputs cannot claim them.
    for workflow, inputs, field in (
        ("read_upload", {"attachments": [record], "attachment_folders": first["attachment_folders"]}, "file"),
        ("read_path", {"f": record["path"]}, "file"),
    ):
        response = client.post(f"/api/workflows/{workflow}/runs?wait=10", json={"inputs": inputs})
        assert response.status_code == 200, response.get_json()
        second = response.get_json()
        assert second["status"] == "failed"
        assert second["attachment_folders"] == []  # none saved for it
        assert second["steps"][0]["error"] == f"pdf_text: {field} {record['path']!r} {NOT_OURS}"
        assert "Private to the first run" not in json.dumps(second)


def test_a_sub_workflow_reads_the_attachments_its_parent_passes_on(client, tmp_path):
    """A child run started by a workflow step shares its parent's folders: the parent could read them itself."""
    read_pdf_workflows(client)
    parent = upload_pdf(client, tmp_path, "read_child", "Passed to the child")
    assert parent["status"] == "succeeded", parent["error"]
    child = client.get(f"/api/runs/{parent['steps'][0]['result']['run_id']}").get_json()
    assert child["attachment_folders"] == parent["attachment_folders"]
    assert "Passed to the child" in child["steps"][0]["result"]["text"]


# -- listing runs ----------------------------------------------------------------------------------------------


def test_runs_are_listed_newest_first_and_filtered(client):
    echo_ids = [run_and_wait(client, "echo", {"text": str(n)})["id"] for n in range(4)]
    failed_id = client.post("/api/workflows/failing/runs?wait=5").get_json()["id"]

    runs = client.get("/api/runs").get_json()
    assert [run["id"] for run in runs["runs"]] == [failed_id, *reversed(echo_ids)]
    assert runs["next"] is None
    created = [run["created_at"] for run in runs["runs"]]
    assert created == sorted(created, reverse=True)

    echo = client.get("/api/runs?workflow=echo").get_json()["runs"]
    assert [run["id"] for run in echo] == list(reversed(echo_ids))
    failed = client.get("/api/runs?status=failed").get_json()["runs"]
    assert [run["id"] for run in failed] == [failed_id]
    assert client.get("/api/runs?workflow=echo&status=failed").get_json() == {"runs": [], "next": None}
    succeeded = client.get("/api/runs?workflow=echo&status=succeeded").get_json()["runs"]
    assert len(succeeded) == 4


@pytest.mark.parametrize("parameter", ["cursor", "next"])  # ?next= too: ignored, it gave page 1 for ever
def test_paging_with_limit_and_next_gives_every_run_exactly_once(client, parameter):
    ids = [run_and_wait(client, "echo", {"text": str(n)})["id"] for n in range(7)]
    run_and_wait(client, "data_flow", {"x": 1})  # another workflow, filtered out below

    seen, pages, cursor = [], [], None
    while True:
        url = "/api/runs?workflow=echo&limit=3" + (f"&{parameter}={cursor}" if cursor else "")
        page = client.get(url).get_json()
        pages.append(len(page["runs"]))
        seen += [run["id"] for run in page["runs"]]
        cursor = page["next"]
        if cursor is None:
            break
        assert len(pages) < 10, "paging does not end"
    assert seen == list(reversed(ids))
    assert pages[:2] == [3, 3] and sum(pages) == 7


def test_cursor_and_next_naming_two_pages_is_a_clear_400(client):
    answer = client.get("/api/runs?cursor=run_0000000000000001aaaaaa&next=run_0000000000000002aaaaaa")
    assert answer.status_code == 400
    assert "cursor and next name the same page" in answer.get_json()["error"]["message"]
    for url in ("/api/runs?next=../../etc/passwd", "/api/audit?next=x"):
        answer = client.get(url)
        assert answer.status_code == 400 and "cursor (or next)" in answer.get_json()["error"]["message"], url


def test_options_answers_204_with_allow_and_no_html(client):
    answer = client.options("/api/runs")
    assert answer.status_code == 204
    assert "GET" in answer.headers["Allow"] and answer.data == b""
    assert "Content-Type" not in answer.headers


@pytest.mark.parametrize(("body", "said"), [(b"", "got an empty body or null"), (b"[1]", "got a JSON array"),
                                            (b'"text"', "got a JSON string"), (b"null", "got an empty body or null")])
def test_a_body_that_is_not_an_object_says_what_it_got_in_jsons_words(client, body, said):
    answer = client.post("/api/tokens", data=body, content_type="application/json")
    assert answer.status_code == 422
    assert answer.get_json()["error"]["message"] == f"body must be a JSON object, {said}"


def test_get_run_answers_the_stored_record(client):
    run = run_and_wait(client, "echo", {"text": "x"})
    fetched = client.get(f"/api/runs/{run['id']}").get_json()
    assert fetched == run
    assert {"id", "workflow", "status", "trigger_data", "steps", "progress", "created_at", "started_at",
            "finished_at", "error"} <= set(fetched)
    assert set(fetched["steps"][0]) >= {"name", "type", "status", "attempts", "started_at", "finished_at",
                                         "duration_ms", "result", "error"}


# -- secrets ---------------------------------------------------------------------------------------------------


def stored_text(storage: Path) -> str:
    """Every file the store wrote, as one text."""
    return "\n".join(path.read_text(errors="replace") for path in storage.rglob("*") if path.is_file())


def test_secrets_in_results_are_redacted_in_runs_and_on_disk(client, storage):
    run = run_and_wait(client, "secretive")
    assert run["steps"][0]["result"] == {"user": "bob", "password": "***", "nested": {"api_key": "***"}}
    for response in (client.get(f"/api/runs/{run['id']}"), client.get("/api/runs")):
        text = response.get_data(as_text=True)
        assert "hunter2" not in text and "k-123" not in text
    assert "hunter2" not in stored_text(storage)


def test_secret_inputs_are_redacted_but_reach_the_steps(client, storage):
    inputs = {"user": "bob", "password": "p4ss", "api_key": "ak-1", "token": "tk-1", "nested": [{"Authorization": "B"}]}
    run = run_and_wait(client, "secret_trigger", inputs)
    assert run["trigger_data"] == {"user": "bob", "password": "***", "api_key": "***", "token": "***",
                                   "nested": [{"Authorization": "***"}]}
    assert run["steps"][0]["result"] == {"value": "bob"}
    text = client.get("/api/runs").get_data(as_text=True) + stored_text(storage)
    assert not any(secret in text for secret in ("p4ss", "ak-1", "tk-1"))


def test_secrets_of_a_trigger_are_redacted_in_summaries(client):
    summary = client.get("/api/workflows/secret_trigger").get_json()
    assert summary["trigger"] == {"type": "vault", "name": "vault", "password": "***", "api_key": "***",
                                  "token": "***", "host": "vault.example"}
    listing = client.get("/api/workflows").get_data(as_text=True)
    assert not any(secret in listing for secret in ("hunter2", "k-123", "t-456"))


# -- no tracebacks, ever ------------------------------------------------------------------------------------------


def test_an_action_raising_a_weird_exception_fails_its_run_without_a_traceback(client):
    response = client.post("/api/workflows/unprintable/runs?wait=5")
    assert response.status_code == 200
    run = response.get_json()
    assert run["status"] == "failed"
    assert run["error"] == "step 'weird' failed: UnprintableError"
    assert "Traceback" not in response.get_data(as_text=True)


def test_an_unexpected_error_answers_a_json_500_and_logs_the_traceback(storage, caplog):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS}))

    class WeirdError(Exception):
        def __str__(self):
            return "Traceback (most recent call last): pretending to be one"

    def explode():
        raise WeirdError()

    # A test-only endpoint, so the generic handler is tested without breaking our own code.
    app.add_url_rule("/api/test-explode", view_func=explode)
    try:
        with caplog.at_level(logging.ERROR):
            response = app.test_client().get("/api/test-explode")
        assert response.status_code == 500
        assert error_of(response) == {"code": "internal_error",
                                      "message": "internal error; the server log has the details"}
        assert any(record.exc_info and record.exc_info[0] is WeirdError for record in caplog.records)
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


def test_no_error_answer_under_api_is_html_or_a_traceback(client):
    calls = [
        ("get", "/api/nope", {}), ("post", "/api/health", {}), ("post", "/api/workflows/echo/runs", {"data": b"{"}),
        ("post", "/api/workflows/echo/runs", {"data": b"<xml/>", "content_type": "application/xml"}),
        ("post", "/api/workflows/typed_inputs/runs", {"json": {"inputs": {"count": []}}}),
        ("post", "/api/workflows/broken_trigger/poll", {}), ("post", "/api/workflows/echo/start", {}),
        ("get", "/api/runs?limit=-5", {}), ("get", "/api/runs/%00", {}),
    ]
    for method, url, kwargs in calls:
        response = getattr(client, method)(url, **kwargs)
        assert response.status_code >= 400, url
        text = response.get_data(as_text=True)
        assert response.is_json, (url, text[:200])
        assert "Traceback" not in text and "<html" not in text.lower(), url


# -- storage that cannot be written -------------------------------------------------------------------------------


def block(folder: Path) -> None:
    """Put a regular file where the store expects ``folder``; root ignores permissions, but not this."""
    if folder.is_dir():
        shutil.rmtree(folder)
    folder.write_text("in the way", encoding="utf-8")


def test_a_run_that_cannot_be_stored_answers_503_naming_the_path(client, storage):
    block(storage / "runs")
    response = client.post("/api/workflows/echo/runs", json={"inputs": {"text": "lost?"}})
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "storage_error"
    assert str(storage / "runs") in error["message"]
    assert "Not a directory" in error["message"]
    assert client.get("/api/health").status_code == 200


def test_an_upload_that_cannot_be_stored_answers_503_naming_the_path(client, storage):
    block(storage / "attachments")
    response = client.post("/api/workflows/echo/runs", content_type="multipart/form-data",
                           data={"file": (io.BytesIO(b"data"), "data.txt")})
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "storage_error"
    assert str(storage / "attachments") in error["message"]


def test_inputs_left_out_take_their_schema_defaults(storage):
    from tests.fixtures import EchoAction
    from workflows.base import Workflow

    class Greeting(Workflow):
        name = "greeting"
        inputs_schema = {"type": "object", "properties": {
            "greeting": {"type": "string", "default": "hello"}, "times": {"type": "integer", "default": 2}}}
        actions = [EchoAction("say", value="{{ (inputs.greeting ~ ' ') * inputs.times }}")]

    app = start_app(create_app(
        {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": [Greeting]}
    ))
    try:
        client = app.test_client()
        run = client.post("/api/workflows/greeting/runs?wait=5", json={"inputs": {"times": 3}}).get_json()
        assert run["trigger_data"] == {"times": 3, "greeting": "hello"}
        assert run["steps"][0]["result"] == {"value": "hello hello hello "}
        bad = client.post("/api/workflows/greeting/runs", json={"inputs": {"times": "x"}})
        assert bad.status_code == 422 and bad.get_json()["error"]["details"][0]["path"] == "times"
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


# -- bounded bodies (issue 12 item 6): each is a 400 naming the bound, never a 500 --------------------------
@pytest.mark.parametrize(("body", "words"), [
    (b'{"inputs": {"a": ' + b"[" * 100000 + b"]" * 100000 + b"}}",
     "JSON body refused: JSON nested deeper than 64 levels (WORKFLOW_MAX_JSON_DEPTH)"),
    (b'{"inputs": ' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"}", "nested deeper than 64 levels"),
    (b'{"inputs": {"n": ' + b"7" * 5000 + b"}}", "an integer of 5000 digits is too long"),
    (b'{"inputs": {"n": NaN}}', "NaN is not a JSON number"),
    (b'{"inputs": {"n": -Infinity}}', "-Infinity is not a JSON number"),
])
def test_a_body_past_a_bound_answers_400(client, body, words):
    response = client.post("/api/workflows/echo/runs", data=body, content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "bad_request"
    assert words in error_of(response)["message"]


def test_the_depth_bound_is_a_setting(storage):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS,
                      "WORKFLOW_MAX_JSON_DEPTH": 3}))
    try:
        client = app.test_client()
        assert client.post("/api/workflows/echo/runs", json={"inputs": {"a": [1]}}).status_code == 202
        response = client.post("/api/workflows/echo/runs", json={"inputs": {"a": [[1]]}})
        assert response.status_code == 400
        assert "nested deeper than 3 levels" in error_of(response)["message"]
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


def test_multipart_inputs_past_a_bound_answer_400(client):
    response = client.post("/api/workflows/echo/runs", content_type="multipart/form-data",
                           data={"inputs": '{"a": ' + "[" * 900 + "]" * 900 + "}"})
    assert response.status_code == 400
    assert "form part 'inputs' refused: JSON nested deeper than 64 levels" in error_of(response)["message"]


def test_an_inputs_schema_pattern_that_runs_away_is_422_and_health_answers(storage):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS,
                      "WORKFLOW_REGEX_TIMEOUT": 0.3}))
    try:
        client = app.test_client()
        definition = {"name": "slow_schema", "inputs": {"type": "object", "properties": {
            "code": {"type": "string", "pattern": "^(a|a)*$"}}},
            "steps": [{"name": "say", "type": "log", "config": {"message": "{{ inputs.code }}"}}]}
        assert client.post("/api/workflows", json=definition).status_code == 201
        response = client.post("/api/workflows/slow_schema/runs", json={"inputs": {"code": "a" * 30 + "!"}})
        assert response.status_code == 422
        assert "did not finish within 0.3 s" in error_of(response)["message"]
        assert "WORKFLOW_REGEX_TIMEOUT" in error_of(response)["message"]
        assert client.post("/api/workflows/slow_schema/runs", json={"inputs": {"code": "aaa"}}).status_code == 202
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


def test_an_inputs_schema_whose_refs_loop_is_422_not_500(client):
    definition = {"name": "loops", "inputs": {"$ref": "#"},
                  "steps": [{"name": "say", "type": "log", "config": {"message": "x"}}]}
    assert client.post("/api/workflows", json=definition).status_code == 201
    response = client.post("/api/workflows/loops/runs", json={"inputs": {"a": 1}})
    assert response.status_code == 422
    assert "the schema's $refs lead back to themselves without end" in error_of(response)["message"]
