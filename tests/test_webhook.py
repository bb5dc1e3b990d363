"""The webhook trigger: POST /api/hooks/<workflow>, signatures, bodies, response modes."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from pathlib import Path

import pytest

import app.hooks
from app import create_app
from tests.conftest import TEST_SETTINGS
from tests.fixtures import TRIGGER_WORKFLOWS, WORKFLOWS, wait_until
from triggers.webhook import WebhookTrigger

SECRET = "It's a Secret to Everybody"


@pytest.fixture
def hook_app(storage):
    app = create_app({
        **TEST_SETTINGS,
        "WORKFLOW_STORAGE_PATH": str(storage),
        "WORKFLOW_CLASSES": [*WORKFLOWS, *TRIGGER_WORKFLOWS],
        "HOOK_SECRET": SECRET,
        "WORKFLOW_MAX_UPLOAD_MB": 0.01,
    })
    yield app
    app.extensions["pyflow"].shutdown(timeout=2)


@pytest.fixture
def client(hook_app):
    return hook_app.test_client()


def started(client, name: str):
    assert client.post(f"/api/workflows/{name}/start").status_code == 200
    return client


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def finished_run(client, response) -> dict:
    location = response.headers["Location"]

    def done():
        run = client.get(location).get_json()
        return run if run["status"] in ("succeeded", "failed") else None

    return wait_until(done, message=f"run at {location} finished")


# -- accepting requests -------------------------------------------------------------------------------


def test_a_json_post_starts_a_run_with_body_headers_and_query(client):
    started(client, "hook")
    response = client.post("/api/hooks/hook?ref=main&tag=a&tag=b", json={"action": "opened", "n": 1},
                           headers={"X-GitHub-Event": "pull_request"})
    assert response.status_code == 202
    assert response.headers["Location"] == f"/api/runs/{response.get_json()['id']}"
    run = finished_run(client, response)
    data = run["trigger_data"]
    assert data["body"] == {"action": "opened", "n": 1}
    assert data["query"] == {"ref": "main", "tag": ["a", "b"]}
    assert data["headers"]["x-github-event"] == "pull_request"
    assert data["headers"]["content-type"] == "application/json"
    assert run["source"] == "webhook"
    assert run["steps"][0]["result"] == {"value": {"action": "opened", "n": 1}}


def test_a_form_body_is_a_dict_and_any_other_body_is_text(client):
    started(client, "hook")
    form = finished_run(client, client.post("/api/hooks/hook", data={"name": "Ada", "tags": ["x", "y"]}))
    assert form["trigger_data"]["body"] == {"name": "Ada", "tags": ["x", "y"]}
    text = finished_run(client, client.post("/api/hooks/hook", data="plain words", content_type="text/plain"))
    assert text["trigger_data"]["body"] == "plain words"
    empty = finished_run(client, client.post("/api/hooks/hook"))
    assert empty["trigger_data"]["body"] is None


def test_files_in_a_multipart_body_are_saved_as_attachments(client):
    started(client, "hook")
    response = client.post("/api/hooks/hook", data={"note": "see file", "file": (io.BytesIO(b"a,b\n1,2\n"), "t.csv")},
                           content_type="multipart/form-data")
    data = finished_run(client, response)["trigger_data"]
    assert data["body"] == {"note": "see file"}
    [attachment] = data["attachments"]
    assert attachment["filename"] == "t.csv" and attachment["size"] == 8
    assert Path(attachment["path"]).read_bytes() == b"a,b\n1,2\n"


def test_a_malformed_json_body_is_400(client):
    started(client, "hook")
    response = client.post("/api/hooks/hook", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_request"


def test_a_body_over_the_upload_limit_is_413(client):
    started(client, "hook")
    response = client.post("/api/hooks/hook", data="x" * 20_000, content_type="text/plain")
    assert response.status_code == 413
    assert "WORKFLOW_MAX_UPLOAD_MB" in response.get_json()["error"]["message"]


def test_a_repeated_idempotency_key_starts_one_run(client):
    started(client, "hook")
    first = client.post("/api/hooks/hook", json={"n": 1}, headers={"Idempotency-Key": "delivery-1"})
    again = client.post("/api/hooks/hook", json={"n": 1}, headers={"Idempotency-Key": "delivery-1"})
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"


# -- refusing requests --------------------------------------------------------------------------------


def test_a_stopped_webhook_workflow_answers_409_saying_how_to_start_it(client):
    response = client.post("/api/hooks/hook", json={})
    assert response.status_code == 409
    assert response.get_json()["error"]["message"] == (
        "workflow 'hook' is not started; start it with POST /api/workflows/hook/start"
    )
    started(client, "hook")
    client.post("/api/workflows/hook/stop")
    assert client.post("/api/hooks/hook", json={}).status_code == 409
    assert client.get("/api/runs?workflow=hook").get_json()["runs"] == []


def test_an_unknown_workflow_is_404_and_a_workflow_without_a_webhook_is_409(client):
    assert client.post("/api/hooks/nope", json={}).status_code == 404
    response = client.post("/api/hooks/tick", json={})
    assert response.status_code == 409
    assert "interval trigger, not a webhook" in response.get_json()["error"]["message"]


def test_get_is_405_in_json(client):
    response = client.get("/api/hooks/hook")
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"


# -- signatures ---------------------------------------------------------------------------------------


def test_a_good_signature_with_or_without_the_sha256_prefix_is_accepted(client):
    started(client, "signed_hook")
    body = json.dumps({"zen": "Design for failure."}).encode()
    for signature in (sign(body), sign(body).removeprefix("sha256="), sign(body).upper().replace("SHA256=", "sha256=")):
        response = client.post("/api/hooks/signed_hook", data=body, content_type="application/json",
                               headers={"X-Hub-Signature-256": signature})
        assert response.status_code == 202, signature
    run = finished_run(client, response)
    assert run["trigger_data"]["body"] == {"zen": "Design for failure."}


@pytest.mark.parametrize("headers, problem", [
    ({}, "is missing"),
    ({"X-Hub-Signature-256": ""}, "is missing"),
    ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, "does not match the body"),
    ({"X-Hub-Signature-256": "sha256=ünïcode"}, "does not match the body"),
    ({"X-Hub-Signature-256": sign(b"another body")}, "does not match the body"),
    ({"X-Hub-Signature-256": sign(b'{"a": 1}', secret="wrong secret")}, "does not match the body"),
])
def test_a_missing_or_bad_signature_is_401_and_starts_nothing(client, headers, problem):
    started(client, "signed_hook")
    response = client.post("/api/hooks/signed_hook", data=b'{"a": 1}', content_type="application/json",
                           headers=headers)
    assert response.status_code == 401
    error = response.get_json()["error"]
    assert error["code"] == "unauthorized"
    assert f"signature header X-Hub-Signature-256 {problem}" in error["message"]
    assert client.get("/api/runs?workflow=signed_hook").get_json()["runs"] == []


def test_the_signature_covers_the_raw_bytes_of_a_form_body(client):
    started(client, "signed_hook")
    body = b"b=2&a=1"
    response = client.post("/api/hooks/signed_hook", data=body, content_type="application/x-www-form-urlencoded",
                           headers={"X-Hub-Signature-256": sign(body)})
    assert response.status_code == 202
    assert finished_run(client, response)["trigger_data"]["body"] == {"b": "2", "a": "1"}


def test_the_signature_header_name_is_configurable(client):
    started(client, "custom_header_hook")
    body = b"ping"
    assert client.post("/api/hooks/custom_header_hook", data=body,
                       headers={"X-Hub-Signature-256": sign(body, "s3cret")}).status_code == 401
    response = client.post("/api/hooks/custom_header_hook", data=body, headers={"X-Signature": sign(body, "s3cret")})
    assert response.status_code == 202


def test_the_secret_never_appears_in_a_summary(client):
    summary = client.get("/api/workflows/signed_hook").get_json()
    assert summary["trigger"]["type"] == "webhook"
    assert summary["trigger"]["secret"] == "***"
    assert "secret" not in client.get("/api/workflows/hook").get_json()["trigger"]
    listing = json.dumps(client.get("/api/workflows").get_json())
    assert SECRET not in listing and "s3cret" not in listing


def test_a_secret_setting_that_is_not_set_keeps_the_workflow_from_starting(storage):
    app = create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": TRIGGER_WORKFLOWS})
    try:
        client = app.test_client()
        assert "secret refers to setting HOOK_SECRET, which is not set" in (
            client.get("/api/workflows/signed_hook").get_json()["error"])
        assert client.post("/api/workflows/signed_hook/start").status_code == 409
        assert client.post("/api/hooks/signed_hook", json={}).status_code == 409
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


@pytest.mark.parametrize("options, message", [
    ({"secret": ""}, "secret must be a non-empty string"),
    ({"signature_header": "Bad Header"}, "signature_header must be an HTTP header name"),
    ({"response": "sync"}, "response must be one of accepted, result"),
    ({"response_step": ""}, "response_step must be a step name"),
])
def test_bad_webhook_options_are_refused_naming_the_field(options, message):
    with pytest.raises(ValueError, match=rf"trigger 'hook': {message}"):
        WebhookTrigger("hook", **options)


# -- response modes -----------------------------------------------------------------------------------


def test_result_mode_answers_with_the_last_steps_result(client):
    started(client, "result_hook")
    response = client.post("/api/hooks/result_hook", json={"n": 21})
    assert response.status_code == 200
    assert response.get_json() == {"value": 42}
    run = client.get(response.headers["Location"]).get_json()
    assert run["status"] == "succeeded"


def test_result_mode_answers_with_the_chosen_steps_result(client):
    started(client, "step_result_hook")
    response = client.post("/api/hooks/step_result_hook?q=hello")
    assert response.status_code == 200
    assert response.get_json() == {"value": "hello"}


def test_result_mode_answers_502_with_the_runs_error_when_it_fails(client):
    started(client, "failing_hook")
    response = client.post("/api/hooks/failing_hook", json={})
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "run_failed"
    assert "this step always fails" in error["message"]
    assert error["details"]["status"] == "failed"
    assert response.headers["Location"] == f"/api/runs/{error['details']['run_id']}"


def test_result_mode_answers_202_when_the_run_takes_longer_than_the_wait(client, monkeypatch):
    monkeypatch.setattr(app.hooks, "RESULT_WAIT_SECONDS", 0.05)
    started(client, "slow_hook")
    response = client.post("/api/hooks/slow_hook", json={})
    assert response.status_code == 202
    assert response.get_json()["status"] in ("queued", "running")
    assert finished_run(client, response)["status"] == "succeeded"
