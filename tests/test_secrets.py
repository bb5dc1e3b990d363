"""Secrets (app/core/secrets.py, /api/secrets, the dashboard page): encrypted at rest, write-only, templated."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from app import create_app, start_app
from app.errors import ConfigError
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS
from tests.waiting import wait_until

VALUE = "smtp-Pa55word-for-tests"


def put(client, name: str, value, **kwargs):
    return client.put(f"/api/secrets/{name}", json={"value": value}, **kwargs)


def answered(response) -> str:
    return response.get_data(as_text=True)


def define(client, name: str, steps: list[dict], trigger: dict | None = None):
    definition = {"name": name, "trigger": trigger or {"type": "manual"}, "steps": steps}
    return client.post("/api/workflows", json=definition)


def run_to_end(client, name: str) -> dict:
    response = client.post(f"/api/workflows/{name}/runs", json={"inputs": {}})
    assert response.status_code == 202, answered(response)
    location = response.headers["Location"]

    def done():
        run = client.get(location).get_json()
        return run if run["status"] in ("succeeded", "failed") else None

    return wait_until(done, timeout=10, message=f"run of {name} finished")


def everything_under(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file())


# -- the API -----------------------------------------------------------------------------------


def test_put_list_delete_and_the_value_is_never_answered(client, storage, key_file):
    created = put(client, "SMTP", VALUE)
    assert created.status_code == 201
    assert set(created.get_json()) == {"name", "created_at", "updated_at"}
    replaced = put(client, "SMTP", VALUE + "-2")
    assert replaced.status_code == 200
    assert replaced.get_json()["created_at"] == created.get_json()["created_at"]
    assert put(client, "API_KEY", "another-value").status_code == 201

    listing = client.get("/api/secrets")
    assert listing.status_code == 200
    assert [(s["name"], sorted(s)) for s in listing.get_json()["secrets"]] == [
        ("API_KEY", ["created_at", "name", "updated_at"]), ("SMTP", ["created_at", "name", "updated_at"])]
    for response in (created, replaced, listing):
        assert VALUE not in answered(response)

    assert client.delete("/api/secrets/SMTP").status_code == 204
    gone = client.delete("/api/secrets/SMTP")
    assert gone.status_code == 404 and "no secret named 'SMTP'" in gone.get_json()["error"]["message"]
    assert [s["name"] for s in client.get("/api/secrets").get_json()["secrets"]] == ["API_KEY"]

    # At rest: ciphertext only, and the key is not in the storage folder.
    stored = everything_under(storage)
    assert VALUE.encode() not in stored and b"another-value" not in stored
    assert b"gAAAA" in (storage / "secrets.json").read_bytes()  # a Fernet token
    assert key_file.parent != storage and os.stat(key_file).st_mode & 0o777 == 0o600
    assert key_file.read_bytes().strip() not in stored


@pytest.mark.parametrize("name", ["1ABC", "with-dash", "a" * 65, "dotted.name"])
def test_a_bad_name_is_422_naming_the_field(client, name):
    response = put(client, name, VALUE)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["details"][0]["path"] == "name" and repr(name) in error["message"]


@pytest.mark.parametrize("body, status, field", [
    ({}, 422, "value"),
    ({"value": ""}, 422, "value"),
    ({"value": 5}, 422, "value"),
    ([1], 422, "body"),
])
def test_a_bad_body_names_the_field(client, body, status, field):
    response = client.put("/api/secrets/SMTP", json=body)
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["details"][0]["path"] == field


def test_a_malformed_body_is_400(client):
    response = client.put("/api/secrets/SMTP", data="{not json", content_type="application/json")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_request"
    assert client.put("/api/secrets/SMTP").status_code == 400


def test_with_a_token_the_secrets_need_it(storage, key_file):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_KEY_FILE": str(key_file), "WORKFLOW_API_TOKEN": "the-admin-token"}))
    try:
        client = app.test_client()
        assert client.get("/api/secrets").status_code == 401
        assert put(client, "SMTP", VALUE).status_code == 401
        headers = {"Authorization": "Bearer the-admin-token"}
        assert put(client, "SMTP", VALUE, headers=headers).status_code == 201
        assert client.get("/api/secrets", headers=headers).status_code == 200
        # An operator runs and controls runs, but secrets are the admin's (DESIGN section 10).
        made = client.post("/api/tokens", json={"name": "ops", "role": "operator"}, headers=headers)
        operator = {"Authorization": f"Bearer {made.get_json()['token']}"}
        for answer in (client.get("/api/secrets", headers=operator), put(client, "SMTP", "x" * 8, headers=operator),
                       client.delete("/api/secrets/SMTP", headers=operator)):
            assert answer.status_code == 403
            assert answer.get_json()["error"]["details"]["required_role"] == "admin"
        entries = client.get("/api/audit?action=secret.set", headers=headers).get_json()["entries"]
        assert [(entry["actor"], entry["target"]) for entry in entries] == [("admin", "SMTP")]
        assert VALUE not in json.dumps(entries)
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


# -- the dashboard page -------------------------------------------------------------------------


def csrf(client) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', answered(client.get("/secrets"))).group(1)


def test_the_dashboard_lists_sets_and_deletes_secrets_without_showing_values(client):
    page = client.get("/secrets")
    assert page.status_code == 200 and "No secrets are stored yet." in answered(page)
    assert client.post("/secrets", data={"name": "SMTP", "value": VALUE}).status_code == 400  # no CSRF token
    token = csrf(client)
    stored = client.post("/secrets", data={"csrf_token": token, "name": "SMTP", "value": VALUE},
                         follow_redirects=True)
    assert stored.status_code == 200 and "Secret SMTP stored." in answered(stored)
    assert "<code>SMTP</code>" in answered(stored) and VALUE not in answered(stored)
    replaced = client.post("/secrets", data={"csrf_token": token, "name": "SMTP", "value": VALUE + "-2"},
                           follow_redirects=True)
    assert "Secret SMTP replaced." in answered(replaced)
    refused = client.post("/secrets", data={"csrf_token": token, "name": "bad name", "value": VALUE})
    assert refused.status_code == 422 and "name must be a letter" in answered(refused)
    assert VALUE not in answered(refused) and 'value="bad name"' in answered(refused)
    deleted = client.post("/secrets/SMTP/delete", data={"csrf_token": token}, follow_redirects=True)
    assert "Secret SMTP deleted." in answered(deleted) and "No secrets are stored yet." in answered(deleted)
    again = client.post("/secrets/SMTP/delete", data={"csrf_token": token}, follow_redirects=True)
    assert "no secret named" in answered(again)


# -- templates: resolved when the step executes, scrubbed by value, never stored ----------------------


def test_a_step_reads_a_secret_and_its_value_is_scrubbed_everywhere(client, storage):
    assert put(client, "TOKEN", VALUE).status_code == 201
    steps = [{"name": "say", "type": "log", "config": {"message": "the token is {{ secrets.TOKEN }}"}}]
    assert define(client, "uses_secret", steps).status_code == 201
    run = run_to_end(client, "uses_secret")
    assert run["status"] == "succeeded", run
    assert run["steps"][0]["result"] == {"message": "the token is ***"}
    logs = client.get(f"/api/runs/{run['id']}/logs").get_json()["logs"]
    assert any(entry["message"] == "the token is ***" for entry in logs), logs
    every_answer = [client.get(f"/api/runs/{run['id']}"), client.get("/api/runs"),
                    client.get(f"/api/runs/{run['id']}/logs"), client.get("/api/workflows/uses_secret"),
                    client.get("/api/workflows"), client.get(f"/runs/{run['id']}"), client.get("/secrets")]
    for response in every_answer:
        assert response.status_code == 200
        assert VALUE not in answered(response)
    # The definition keeps the template, the run record its scrubbed results: the value is nowhere on disk.
    assert "{{ secrets.TOKEN }}" in json.dumps(client.get("/api/workflows/uses_secret").get_json()["definition"])
    assert VALUE.encode() not in everything_under(storage)


@pytest.fixture
def own_known_secrets(monkeypatch):
    """A fresh process-wide list of stored secret values, so short ones set here garble no later test."""
    from app.core import redaction
    from app.core import secrets as secrets_module

    fresh = redaction.Scrubber()
    monkeypatch.setattr(redaction, "KNOWN_SECRETS", fresh)
    monkeypatch.setattr(secrets_module, "KNOWN_SECRETS", fresh)
    return fresh


def test_short_secrets_leave_answers_valid_json_and_the_server_s_own_words_alone(own_known_secrets, storage,
                                                                                 key_file):
    # Found by tests/test_openapi_fuzz.py: scrubbed in the serialized text, "u00e9" cut "\u00e9" (é) in two,
    # and "fail" turned the error code too_many_failed_authentications into too_many_***ed_authentications.
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_KEY_FILE": str(key_file), "WORKFLOW_CLASSES": WORKFLOWS}))
    try:
        client = app.test_client()
        for name, value in (("ESCAPE", "u00e9"), ("NUMBER", "12345"), ("WORD", "fail"), ("HEX", "0000")):
            assert put(client, name, value).status_code == 201
        inputs = {"city": "Besançon, café", "note": "it is u00e9 here", "count": 12345, "more": 112345}
        response = client.post("/api/workflows/failing/runs?wait=5", json={"inputs": inputs})
        run = json.loads(answered(response))  # valid JSON
        assert run["status"] == "failed" and run["id"] in response.headers["Location"]
        assert run["trigger_data"] == {"city": "Besançon, café", "note": "it is *** here", "count": "***",
                                       "more": 112345}
        polled = client.post("/api/workflows/broken_trigger/poll")
        assert (polled.status_code, json.loads(answered(polled))["error"]["code"]) == (502, "trigger_failed")
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


def test_an_unknown_secret_fails_the_step_naming_it(client):
    steps = [{"name": "say", "type": "log", "config": {"message": "{{ secrets.NOT_STORED }}"}}]
    assert define(client, "unknown_secret", steps).status_code == 201
    run = run_to_end(client, "unknown_secret")
    assert run["status"] == "failed"
    error = run["steps"][0]["error"]
    assert "step 'say'" in error and "no secret named 'NOT_STORED'" in error
    assert "PUT /api/secrets/NOT_STORED" in error
    # A credential field the engine never renders (send_email's password) takes exactly {{ secrets.NAME }}.
    mail = [{"name": "mail", "type": "send_email", "config": {
        "to": "a@example.org", "smtp_host": "127.0.0.1", "smtp_port": 1, "smtp_password": "{{ secrets.NO_MAIL }}"}}]
    assert define(client, "unknown_mail_secret", mail).status_code == 201
    run = run_to_end(client, "unknown_mail_secret")
    assert run["status"] == "failed"
    assert run["steps"][0]["error"].startswith("step 'mail': field 'smtp_password': no secret named 'NO_MAIL'")


def test_a_webhook_secret_from_the_store_signs_deliveries(client):
    hook_secret = "whsec-from-the-store"
    trigger = {"type": "webhook", "secret": "{{ secrets.HOOK }}"}
    steps = [{"name": "say", "type": "log", "config": {"message": "got it"}}]
    refused = define(client, "stored_hook", steps, trigger)
    assert refused.status_code == 422  # the secret is not stored yet: binding fails naming it
    assert "no secret named 'HOOK'" in answered(refused)
    assert put(client, "HOOK", hook_secret).status_code == 201
    assert define(client, "stored_hook", steps, trigger).status_code == 201
    assert client.post("/api/workflows/stored_hook/start").status_code == 200
    body = b'{"a": 1}'

    def signed(secret: str) -> dict:
        return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}

    assert client.post("/api/hooks/stored_hook", data=body, headers=signed("wrong")).status_code == 401
    assert client.post("/api/hooks/stored_hook", data=body, headers=signed(hook_secret)).status_code == 202
    summary = client.get("/api/workflows/stored_hook")
    assert hook_secret not in answered(summary)


def test_run_py_validate_takes_secret_references_without_the_store(tmp_path):
    from tests.server import run_py, server_env

    path = tmp_path / "hook.yaml"
    path.write_text("name: hooked\ntrigger: {type: webhook, secret: '{{ secrets.HOOK }}'}\n"
                    "steps:\n  - {name: say, type: log, config: {message: '{{ secrets.OTHER }}'}}\n", encoding="utf-8")
    result = run_py("validate", str(path), env=server_env(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    assert f"{path}: ok" in result.stdout


# -- the key --------------------------------------------------------------------------------------


def app_on(storage: Path, **settings):
    return create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS,
                       **settings})


def test_a_wrong_or_missing_key_stops_start_up_naming_it(storage, key_file, tmp_path):
    app = app_on(storage, WORKFLOW_KEY_FILE=str(key_file))
    app.extensions["pyflow"].secrets.set("SMTP", VALUE)
    app.extensions["pyflow"].shutdown(timeout=2)

    with pytest.raises(ConfigError) as wrong:
        app_on(storage, WORKFLOW_ENCRYPTION_KEY=Fernet.generate_key().decode())
    assert wrong.value.message.startswith("WORKFLOW_ENCRYPTION_KEY: this key does not decrypt the stored secret 'SMTP'")
    with pytest.raises(ConfigError) as malformed:
        app_on(storage, WORKFLOW_ENCRYPTION_KEY="not-a-key")
    assert malformed.value.message.startswith("WORKFLOW_ENCRYPTION_KEY must hold Fernet keys")
    assert "not-a-key" not in malformed.value.message
    missing = tmp_path / "elsewhere.key"
    with pytest.raises(ConfigError) as absent:
        app_on(storage, WORKFLOW_KEY_FILE=str(missing))
    assert absent.value.message.startswith(f"WORKFLOW_KEY_FILE {missing} does not exist, but the store holds 1")
    with pytest.raises(ConfigError) as inside:
        app_on(storage, WORKFLOW_KEY_FILE=str(storage / "encryption.key"))
    assert "is inside WORKFLOW_STORAGE_PATH" in inside.value.message
    for error in (wrong, malformed, absent, inside):
        assert "\n" not in error.value.message
    # The right key, from the environment this time, reads it.
    app = app_on(storage, WORKFLOW_ENCRYPTION_KEY=key_file.read_text().strip())
    try:
        assert app.extensions["pyflow"].secrets.get("SMTP") == VALUE
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


def test_without_secrets_no_key_file_is_made(storage, key_file):
    app = start_app(app_on(storage, WORKFLOW_KEY_FILE=str(key_file)))
    app.extensions["pyflow"].shutdown(timeout=2)
    assert not key_file.exists()


def test_the_key_file_is_made_once_and_its_path_logged(storage, tmp_path, caplog):
    key_file = tmp_path / "nested" / "pyflow" / "encryption.key"
    app = app_on(storage, WORKFLOW_KEY_FILE=str(key_file))
    try:
        with caplog.at_level("INFO", logger="app.core.secrets"):
            app.extensions["pyflow"].secrets.set("ONE", VALUE)
            app.extensions["pyflow"].secrets.set("TWO", VALUE)
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)
    made = [record.getMessage() for record in caplog.records if "made a new encryption key" in record.getMessage()]
    assert len(made) == 1 and str(key_file) in made[0]
    assert os.stat(key_file).st_mode & 0o777 == 0o600 and os.stat(key_file.parent).st_mode & 0o777 == 0o700
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}=\n", key_file.read_text())


# -- PostgreSQL -----------------------------------------------------------------------------------------


@pytest.mark.services
def test_secrets_on_postgresql(postgres_url, tmp_path):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "files"),
                                "WORKFLOW_KEY_FILE": str(tmp_path / "encryption.key"),
                                "WORKFLOW_DATABASE_URL": postgres_url}))
    try:
        client = app.test_client()
        assert put(client, "TOKEN", VALUE).status_code == 201
        assert put(client, "TOKEN", VALUE).status_code == 200
        assert [s["name"] for s in client.get("/api/secrets").get_json()["secrets"]] == ["TOKEN"]
        steps = [{"name": "say", "type": "log", "config": {"message": "token {{ secrets.TOKEN }}"}}]
        assert define(client, "pg_secret", steps).status_code == 201
        run = run_to_end(client, "pg_secret")
        assert run["status"] == "succeeded", run
        logs = client.get(f"/api/runs/{run['id']}/logs")
        assert "token ***" in answered(logs) and VALUE not in answered(logs)
        store = app.extensions["pyflow"].store
        assert store.get_secret("TOKEN")["ciphertext"].startswith("gAAAA")
        assert VALUE not in json.dumps(store.get_run(run["id"])) + json.dumps(store.get_logs(run["id"]))
        assert client.delete("/api/secrets/TOKEN").status_code == 204
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)


def test_the_key_file_made_during_a_step_is_named_in_the_server_log_not_in_the_run(client, key_file, caplog):
    # The first approval mails signed links, which makes the secrets' key: a fact about the server, not the run.
    definition = {"name": "asks_once", "steps": [
        {"name": "ask", "type": "approval", "config": {"to": "boss@example.com", "message": "Go on?", "timeout": 600}}]}
    assert client.post("/api/workflows", json=definition).status_code == 201
    assert not key_file.exists()
    with caplog.at_level(logging.INFO, logger="app.core.secrets"):
        run_id = client.post("/api/workflows/asks_once/runs", json={}).get_json()["id"]
        wait_until(lambda: client.get(f"/api/runs/{run_id}").get_json()["status"] == "waiting", timeout=10,
                   message="the run waiting for its answer")
    assert key_file.exists()
    assert any(str(key_file) in record.getMessage() for record in caplog.records), "the server's log names the key"
    logs = client.get(f"/api/runs/{run_id}/logs").get_json()["logs"]
    assert any("waits for approval" in line["message"] for line in logs), logs
    assert [line for line in logs if "key" in line["message"].lower()] == [], logs
    assert str(key_file) not in json.dumps(client.get(f"/api/runs/{run_id}").get_json())
