"""The webhook trigger: POST /api/hooks/<workflow>, signatures, bodies, response modes."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import app.api.hooks
import triggers.webhook
from app import create_app, start_app
from tests.conftest import TEST_SETTINGS
from tests.fixtures import TRIGGER_WORKFLOWS, WORKFLOWS, wait_until
from triggers import signatures
from triggers.webhook import WebhookTrigger

SECRET = "It's a Secret to Everybody"


@pytest.fixture
def hook_app(storage):
    app = start_app(create_app({
        **TEST_SETTINGS,
        "WORKFLOW_STORAGE_PATH": str(storage),
        "WORKFLOW_CLASSES": [*WORKFLOWS, *TRIGGER_WORKFLOWS],
        "HOOK_SECRET": SECRET,
        "WORKFLOW_MAX_UPLOAD_MB": 0.01,
    }))
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
    started(client, "upload_hook")
    response = client.post("/api/hooks/upload_hook",
                           data={"note": "see file", "file": (io.BytesIO(b"a,b\n1,2\n"), "t.csv")},
                           content_type="multipart/form-data")
    run = finished_run(client, response)
    data = run["trigger_data"]
    assert data["body"] == {"note": "see file"}
    [attachment] = data["attachments"]
    assert attachment["filename"] == "t.csv" and attachment["size"] == 8
    assert Path(attachment["path"]).read_bytes() == b"a,b\n1,2\n"
    # The folder the server saved it in is the run's own: its steps may read it (docs/files.md).
    assert run["attachment_folders"] == [Path(attachment["path"]).parent.name]


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
    # Three bodies: the same body twice would be refused as a replay.
    for n, prefixed in enumerate((sign, lambda body: sign(body).removeprefix("sha256="),
                                  lambda body: sign(body).upper().replace("SHA256=", "sha256="))):
        body = json.dumps({"zen": "Design for failure.", "n": n}).encode()
        response = client.post("/api/hooks/signed_hook", data=body, content_type="application/json",
                               headers={"X-Hub-Signature-256": prefixed(body)})
        assert response.status_code == 202, n
    run = finished_run(client, response)
    assert run["trigger_data"]["body"] == {"zen": "Design for failure.", "n": 2}


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
    app = start_app(create_app(
        {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": TRIGGER_WORKFLOWS}
    ))
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
    ({"signature_style": "gitlab"}, "signature_style must be one of github, stripe, slack"),
    ({"signature_style": "stripe", "signature_header": "X-Sig"}, "signature_header applies to signature_style github"),
    ({"allow_uploads": "yes"}, "allow_uploads must be true or false"),
])
def test_bad_webhook_options_are_refused_naming_the_field(options, message):
    with pytest.raises(ValueError, match=rf"trigger 'hook': {message}"):
        WebhookTrigger("hook", **options)


# -- signature styles and replays ----------------------------------------------------------------------


def stripe_signature(body: bytes, at: int, secret: str = "s3cret") -> str:
    return f"t={at},v1=" + hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()


def slack_headers(body: bytes, at: int, secret: str = "s3cret") -> dict:
    digest = hmac.new(secret.encode(), f"v0:{at}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(at), "X-Slack-Signature": f"v0={digest}"}


def runs_of(client, name: str) -> list[dict]:
    return client.get(f"/api/runs?workflow={name}").get_json()["runs"]


def test_a_replayed_github_delivery_is_409_whatever_its_delivery_id_says(client):
    started(client, "signed_hook")
    body = b'{"action": "opened"}'
    headers = {"X-Hub-Signature-256": sign(body), "X-GitHub-Delivery": "72d3162e-1"}
    assert client.post("/api/hooks/signed_hook", data=body, content_type="application/json",
                       headers=headers).status_code == 202

    again = client.post("/api/hooks/signed_hook", data=body, content_type="application/json", headers=headers)
    new_id = client.post("/api/hooks/signed_hook", data=body, content_type="application/json",
                         headers={**headers, "X-GitHub-Delivery": "72d3162e-2"})
    other_body = b'{"action": "closed"}'
    same_id = client.post("/api/hooks/signed_hook", data=other_body, content_type="application/json",
                          headers={**headers, "X-Hub-Signature-256": sign(other_body)})

    shouted = client.post("/api/hooks/signed_hook", data=body, content_type="application/json",
                          headers={"X-Hub-Signature-256": sign(body).upper().replace("SHA256=", "sha256=")})
    for response, what in ((again, "signature"), (new_id, "signature"), (same_id, "delivery id"),
                           (shouted, "signature")):
        assert response.status_code == 409
        error = response.get_json()["error"]
        assert error["code"] == "replayed_delivery"
        assert error["message"] == (f"webhook 'signed_hook': this {what} was accepted before; "
                                    f"a replayed delivery is refused")
    assert len(runs_of(client, "signed_hook")) == 1


def test_a_delivery_that_starts_no_run_is_not_remembered(client):
    started(client, "signed_hook")
    body = b'{"broken": '
    for _ in range(2):  # the sender's retry is answered the same way, not as a replay
        response = client.post("/api/hooks/signed_hook", data=body, content_type="application/json",
                               headers={"X-Hub-Signature-256": sign(body)})
        assert response.status_code == 400
    assert runs_of(client, "signed_hook") == []


def test_a_replay_is_refused_after_a_restart(storage):
    settings = {**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": TRIGGER_WORKFLOWS}
    body, at = b'{"id": "evt_1"}', int(time.time())
    headers = {"Stripe-Signature": stripe_signature(body, at)}
    first = start_app(create_app(settings))
    try:
        client = started(first.test_client(), "stripe_hook")
        assert client.post("/api/hooks/stripe_hook", data=body, headers=headers).status_code == 202
    finally:
        first.extensions["pyflow"].shutdown(timeout=2)
    second = start_app(create_app(settings))
    try:
        response = second.test_client().post("/api/hooks/stripe_hook", data=body, headers=headers)
        assert response.status_code == 409
        assert response.get_json()["error"]["code"] == "replayed_delivery"
    finally:
        second.extensions["pyflow"].shutdown(timeout=2)


def test_stripe_style_accepts_a_fresh_signature_once(client):
    started(client, "stripe_hook")
    body, now = b'{"type": "charge.succeeded"}', int(time.time())
    rolled = f"{stripe_signature(body, now, 'old secret')},v1={stripe_signature(body, now).split('v1=')[1]}"

    response = client.post("/api/hooks/stripe_hook", data=body, content_type="application/json",
                           headers={"Stripe-Signature": rolled})
    assert response.status_code == 202
    assert finished_run(client, response)["trigger_data"]["body"] == {"type": "charge.succeeded"}
    good = stripe_signature(body, now)
    t_part, v1_part = good.split(",")
    for header in (good, f"{v1_part}, {t_part}", f"{t_part},v1={'0' * 64},{v1_part},v0=x"):
        replay = client.post("/api/hooks/stripe_hook", data=body, content_type="application/json",
                             headers={"Stripe-Signature": header})
        assert replay.status_code == 409, header
    # The same body signed at another moment is another delivery (Stripe's own retries look like this).
    later = client.post("/api/hooks/stripe_hook", data=body, content_type="application/json",
                        headers={"Stripe-Signature": stripe_signature(body, now - 1)})
    assert later.status_code == 202


@pytest.mark.parametrize("make_header, problem", [
    (lambda body, now: None, "signature header Stripe-Signature is missing"),
    (lambda body, now: stripe_signature(body, now - 301), "the timestamp in Stripe-Signature's t= is 301 s old"),
    (lambda body, now: stripe_signature(body, now + 400), "is 400 s in the future"),
    (lambda body, now: stripe_signature(b"other", now), "no v1= signature in Stripe-Signature matches"),
    (lambda body, now: stripe_signature(body, now, "wrong"), "no v1= signature in Stripe-Signature matches"),
    (lambda body, now: f"v1={stripe_signature(body, now).split('v1=')[1]}", "must carry the delivery's unix time"),
    (lambda body, now: stripe_signature(body, now).replace("v1=", "v0="), "no v1= signature"),
])
def test_a_stale_future_or_wrong_stripe_signature_is_401(client, make_header, problem, monkeypatch):
    now = 1_900_000_000
    monkeypatch.setattr(triggers.webhook, "time", SimpleNamespace(time=lambda: float(now)))
    started(client, "stripe_hook")
    body = b'{"type": "charge.succeeded"}'
    header = make_header(body, now)
    response = client.post("/api/hooks/stripe_hook", data=body, content_type="application/json",
                           headers={"Stripe-Signature": header} if header else {})
    assert response.status_code == 401
    assert problem in response.get_json()["error"]["message"]
    assert runs_of(client, "stripe_hook") == []


def test_slack_style_is_verified_and_replays_refused(client):
    started(client, "slack_hook")
    body, now = b"token=x&team_id=T1&text=hi", int(time.time())

    response = client.post("/api/hooks/slack_hook", data=body, content_type="application/x-www-form-urlencoded",
                           headers=slack_headers(body, now))
    assert response.status_code == 202
    assert finished_run(client, response)["trigger_data"]["body"]["text"] == "hi"
    assert client.post("/api/hooks/slack_hook", data=body, content_type="application/x-www-form-urlencoded",
                       headers=slack_headers(body, now)).status_code == 409
    stale = client.post("/api/hooks/slack_hook", data=body, content_type="application/x-www-form-urlencoded",
                        headers=slack_headers(body, now - 600))
    assert stale.status_code == 401
    assert re.search(r"X-Slack-Request-Timestamp is 60\d s old", stale.get_json()["error"]["message"])
    wrong = client.post("/api/hooks/slack_hook", data=body, content_type="application/x-www-form-urlencoded",
                        headers=slack_headers(body + b"&x=1", now))
    assert wrong.status_code == 401 and "X-Slack-Signature does not match" in wrong.get_json()["error"]["message"]


def test_the_remembered_deliveries_are_bounded_and_expire(monkeypatch):
    monkeypatch.setattr(signatures, "MAX_REMEMBERED", 3)
    state: dict = {}
    for n in range(5):
        signatures.remember(state, signatures.Delivery((f"sig:{n}",), 100.0 + n), now=0.0)
    assert sorted(state[signatures.STATE_KEY]) == ["sig:2", "sig:3", "sig:4"]  # the soonest forgotten went first
    with pytest.raises(signatures.ReplayedDelivery):
        signatures.remember(state, signatures.Delivery(("sig:4",), 200.0), now=50.0)
    signatures.remember(state, signatures.Delivery(("sig:4",), 300.0), now=104.0)  # sig:4 expired at 104
    assert sorted(state[signatures.STATE_KEY]) == ["sig:4"]


# -- uploads --------------------------------------------------------------------------------------------


def test_an_unsigned_webhook_refuses_uploads_naming_the_setting(client, storage):
    started(client, "hook")
    response = client.post("/api/hooks/hook", data={"file": (io.BytesIO(b"#!/bin/sh\nid\n"), "pwn.sh")},
                           content_type="multipart/form-data")
    assert response.status_code == 415
    error = response.get_json()["error"]
    assert error["code"] == "uploads_not_allowed"
    assert "unsigned webhook, which does not accept file uploads" in error["message"]
    assert "allow_uploads: true" in error["message"]
    assert runs_of(client, "hook") == []
    assert not list(storage.rglob("pwn.sh"))
    # A form without files is still a form.
    assert client.post("/api/hooks/hook", data={"note": "hi"}, content_type="multipart/form-data").status_code == 202


def test_a_signed_webhook_accepts_uploads(client):
    started(client, "custom_header_hook")
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.txt\"\r\n"
            f"Content-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n").encode()
    response = client.post("/api/hooks/custom_header_hook", data=body,
                           content_type=f"multipart/form-data; boundary={boundary}",
                           headers={"X-Signature": sign(body, "s3cret")})
    assert response.status_code == 202
    [attachment] = finished_run(client, response)["trigger_data"]["attachments"]
    assert Path(attachment["path"]).read_bytes() == b"hello"


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
    monkeypatch.setattr(app.api.hooks, "RESULT_WAIT_SECONDS", 0.05)
    started(client, "slow_hook")
    response = client.post("/api/hooks/slow_hook", json={})
    assert response.status_code == 202
    assert response.get_json()["status"] in ("queued", "running")
    assert finished_run(client, response)["status"] == "succeeded"
