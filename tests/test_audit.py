"""The audit log (DESIGN section 10): an entry per change and control, over the API, and ``run.py audit verify``."""

from __future__ import annotations

import json
import re
import threading

import pytest

from app import create_app, start_app
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS, arrivals, release_gates, reset_gates, wait_until
from tests.fixtures.workflows import GatedWorkflow
from tests.server import Servers, run_py, server_env

ADMIN = "admin-token-for-audit-tests"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
HELLO = {"name": "hello", "steps": [{"name": "say", "type": "log", "config": {"message": "hello"}}]}
SECRET = "s3cr3t-value-never-audited"


@pytest.fixture
def app(storage):
    """One run executes at a time (a second waits queued), behind WORKFLOW_API_TOKEN."""
    reset_gates()
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_CLASSES": [*WORKFLOWS, GatedWorkflow], "WORKFLOW_MAX_CONCURRENT": 1,
                                "WORKFLOW_API_TOKEN": ADMIN, "WORKFLOW_SECRET_KEY": "k" * 32}))
    yield app
    release_gates()
    app.extensions["pyflow"].shutdown(timeout=5)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def entries(client, **query) -> list[dict]:
    response = client.get("/api/audit", query_string={"limit": 500, **query}, headers=bearer(ADMIN))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["entries"]


def run_status(client, run_id: str) -> str:
    return client.get(f"/api/runs/{run_id}", headers=bearer(ADMIN)).get_json()["status"]


def test_every_change_and_control_appends_an_entry_naming_its_actor(app, client, storage):
    made = client.post("/api/tokens", json={"name": "ci", "role": "operator"}, headers=bearer(ADMIN)).get_json()
    ops = bearer(made["token"])
    admin = bearer(ADMIN)
    assert client.post("/api/workflows", json=HELLO, headers=admin).status_code == 201
    assert client.put("/api/workflows/hello", json={**HELLO, "description": "v2"}, headers=admin).status_code == 200
    assert client.delete("/api/workflows/hello", headers=admin).status_code == 204
    assert client.post("/api/workflows/tick/start", headers=ops).status_code == 200
    assert client.post("/api/workflows/tick/stop", headers=ops).status_code == 200
    # A run held at the gate takes the one slot; the next waits queued, to be paused, changed and resumed.
    held = client.post("/api/workflows/gated/runs", json={"inputs": {"text": "a"}}, headers=ops).get_json()["id"]
    wait_until(lambda: arrivals("gated") >= 1, timeout=10, message="the gated run at its gate")
    queued = client.post("/api/workflows/echo/runs", json={"inputs": {"text": "b"}}, headers=ops).get_json()["id"]
    assert client.post(f"/api/runs/{queued}/pause", headers=ops).status_code == 200
    changed = client.patch(f"/api/runs/{queued}/variables", json={"variables": {"api_key": SECRET, "text": "c"}},
                           headers=ops)
    assert changed.status_code == 200
    assert client.post(f"/api/runs/{queued}/resume", headers=ops).status_code == 200
    assert client.post(f"/api/runs/{held}/cancel", headers=ops).status_code == 200
    wait_until(lambda: run_status(client, queued) == "succeeded", timeout=10, message="the resumed run")
    failed = client.post("/api/workflows/failing/runs?wait=10", headers=ops).get_json()["id"]
    assert client.post(f"/api/runs/{failed}/skip", json={"step": "boom"}, headers=ops).status_code == 200
    failed_again = client.post("/api/workflows/failing/runs?wait=10", headers=ops).get_json()["id"]
    assert client.post(f"/api/runs/{failed_again}/retry", headers=ops).status_code == 200
    assert client.delete("/api/tokens/ci", headers=admin).status_code == 204
    browser = app.test_client()
    csrf = CSRF_FIELD.search(browser.get("/login").text).group(1)
    assert browser.post("/login", data={"csrf_token": csrf, "token": "wrong"}).status_code == 401
    assert browser.post("/login", data={"csrf_token": csrf, "token": ADMIN}).status_code == 302

    logged = [(entry["actor"], entry["action"], entry["target"]) for entry in reversed(entries(client))]

    assert logged == [
        ("admin", "token.create", "ci"),
        ("admin", "definition.create", "hello"),
        ("admin", "definition.update", "hello"),
        ("admin", "definition.delete", "hello"),
        ("ci", "workflow.start", "tick"),
        ("ci", "workflow.stop", "tick"),
        ("ci", "run.pause", queued),
        ("ci", "run.variables", queued),
        ("ci", "run.resume", queued),
        ("ci", "run.cancel", held),
        ("ci", "run.skip", failed),
        ("ci", "run.retry", failed_again),
        ("admin", "token.delete", "ci"),
        ("anonymous", "login.failure", "dashboard"),
        ("admin", "login.success", "dashboard"),
    ]
    details = {entry["action"]: entry["details"] for entry in entries(client)}
    assert details["token.create"] == {"role": "operator"}
    assert details["definition.update"] == {"version": 2}
    assert details["run.variables"] == {"names": ["api_key", "text"]}
    assert details["run.skip"] == {"step": "boom"}
    assert details["login.failure"] == {"address": "127.0.0.1"}
    log = (storage / "audit.jsonl").read_text()
    assert SECRET not in log and made["token"] not in log and ADMIN not in log
    assert run_py("audit", "verify", env=server_env(storage)).returncode == 0


def test_dashboard_controls_are_audited_with_the_logged_in_token(app, client):
    made = client.post("/api/tokens", json={"name": "ops", "role": "operator"}, headers=bearer(ADMIN)).get_json()
    browser = app.test_client()
    csrf = CSRF_FIELD.search(browser.get("/login").text).group(1)
    browser.post("/login", data={"csrf_token": csrf, "token": made["token"]})
    csrf = CSRF_FIELD.search(browser.get("/").text).group(1)  # a login starts a fresh session, token included

    assert browser.post("/workflows/tick/start", data={"csrf_token": csrf}).status_code == 302
    failed = client.post("/api/workflows/failing/runs?wait=10", headers=bearer(ADMIN)).get_json()["id"]
    assert browser.post(f"/runs/{failed}/retry", data={"csrf_token": csrf}).status_code == 302

    newest = entries(client)[:3]
    assert [(e["actor"], e["action"], e["target"], e["details"]) for e in newest] == [
        ("ops", "run.retry", failed, {"via": "dashboard"}),
        ("ops", "workflow.start", "tick", {"via": "dashboard"}),
        ("ops", "login.success", "dashboard", {"address": "127.0.0.1", "role": "operator"}),
    ]


def test_the_audit_api_filters_pages_and_refuses_bad_queries(client):
    for name in ("a", "b", "c"):
        client.post("/api/tokens", json={"name": name, "role": "viewer"}, headers=bearer(ADMIN))
        client.delete(f"/api/tokens/{name}", headers=bearer(ADMIN))
    assert [e["target"] for e in entries(client, action="token.delete")] == ["c", "b", "a"]
    assert [e["action"] for e in entries(client, target="b")] == ["token.delete", "token.create"]
    assert len(entries(client, actor="admin")) == 6 and entries(client, actor="nobody") == []

    first = client.get("/api/audit?limit=4", headers=bearer(ADMIN)).get_json()
    second = client.get(f"/api/audit?limit=4&cursor={first['next']}", headers=bearer(ADMIN)).get_json()
    assert [e["id"] for e in first["entries"]] == [6, 5, 4, 3] and first["next"] == 3
    assert [e["id"] for e in second["entries"]] == [2, 1] and second["next"] is None
    for query in ("limit=0", "limit=x", "cursor=run_1", "cursor=-1"):
        response = client.get(f"/api/audit?{query}", headers=bearer(ADMIN))
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_request", query


def test_while_access_is_open_the_actor_is_anonymous(storage):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS}))
    try:
        client = app.test_client()
        assert client.post("/api/workflows/tick/start").status_code == 200
        assert [(e["actor"], e["action"]) for e in client.get("/api/audit").get_json()["entries"]] == [
            ("anonymous", "workflow.start")]
    finally:
        app.extensions["pyflow"].shutdown(timeout=5)


# -- run.py audit verify ---------------------------------------------------------------------------------
def audited_store(storage, count: int = 4) -> None:
    from app.storage.json.store import JsonStore

    store = JsonStore(storage)
    try:
        for n in range(count):
            store.append_audit("admin", "token.create", f"t{n}", {"role": "viewer"})
    finally:
        store.close()


def test_audit_verify_passes_an_intact_log_and_names_the_first_edited_entry(tmp_path):
    storage = tmp_path / "data"
    audited_store(storage)
    env = server_env(storage)
    intact = run_py("audit", "verify", env=env)
    assert (intact.returncode, intact.stdout.strip()) == (0, "audit log: 4 entries, the chain holds")

    path = storage / "audit.jsonl"
    lines = path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["details"]["role"] = "admin"
    path.write_text("\n".join([lines[0], json.dumps(edited), *lines[2:]]) + "\n")
    broken = run_py("audit", "verify", env=env)

    assert broken.returncode == 1
    assert broken.stderr.strip() == (f"run.py: audit verify: audit entry 2 (at {edited['at']}): its hash does not "
                                     "match its contents: the entry was changed (1 entries before it hold)")


def test_audit_verify_names_a_removed_or_rehashed_entry_and_ignores_a_torn_last_line(tmp_path):
    storage = tmp_path / "data"
    audited_store(storage)
    env = server_env(storage)
    path = storage / "audit.jsonl"
    lines = path.read_text().splitlines()

    path.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[1][:20])  # a crash tore the next append
    assert run_py("audit", "verify", env=env).stdout.strip() == "audit log: 2 entries, the chain holds"

    path.write_text("\n".join([lines[0], lines[2], lines[3]]) + "\n")
    removed = run_py("audit", "verify", env=env)
    assert removed.returncode == 1 and "audit entry 3" in removed.stderr and "removed or inserted" in removed.stderr

    # Changed and re-hashed: the next entry's prev no longer matches.
    from app.storage.audit_chain import entry_hash
    forged = json.loads(lines[1])
    forged["target"] = "someone-else"
    forged["hash"] = entry_hash(forged)
    path.write_text("\n".join([lines[0], json.dumps(forged), lines[2], lines[3]]) + "\n")
    rehashed = run_py("audit", "verify", env=env)
    assert rehashed.returncode == 1 and "audit entry 3" in rehashed.stderr and "prev does not match" in rehashed.stderr

    path.write_text(lines[0] + "\nnot json\n")
    garbage = run_py("audit", "verify", env=env)
    assert garbage.returncode == 1 and f"line 2 of {path}" in garbage.stderr


def test_an_append_after_a_torn_line_cuts_it_off_and_keeps_the_chain(tmp_path):
    storage = tmp_path / "data"
    audited_store(storage, 2)
    path = storage / "audit.jsonl"
    with path.open("ab") as handle:
        handle.write(b'{"id":3,"at":"2026')  # a crash in the middle of an append
    audited_store(storage, 1)
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert run_py("audit", "verify", env=server_env(storage)).returncode == 0


# -- PostgreSQL: two servers on one database keep one chain ------------------------------------------------
@pytest.mark.services
def test_two_servers_appending_at_once_on_postgresql_keep_one_chain(tmp_path, postgres_url):
    env = {"WORKFLOW_DATABASE_URL": postgres_url, "WORKFLOW_API_TOKEN": ADMIN}
    with Servers(tmp_path) as servers:
        first, second = servers.start("one", env), servers.start("two", env)
        start = threading.Barrier(8)
        failures: list[str] = []

        def churn(n: int) -> None:
            server = (first, second)[n % 2]
            start.wait(10)
            for round_ in range(5):
                name = f"t{n}-{round_}"
                for response in (server.post("/api/tokens", json={"name": name, "role": "viewer"},
                                             headers=bearer(ADMIN)),
                                 server.post(f"/api/workflows/tick/{'start' if round_ % 2 else 'stop'}",
                                             headers=bearer(ADMIN))):
                    if response.status_code not in (200, 201):
                        failures.append(response.text)

        threads = [threading.Thread(target=churn, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []

        env_cli = server_env(tmp_path / "cli", {"WORKFLOW_DATABASE_URL": postgres_url})
        verified = run_py("audit", "verify", env=env_cli)
        assert (verified.returncode, verified.stdout.strip()) == (0, "audit log: 80 entries, the chain holds")
        listed = first.get("/api/audit?limit=500", headers=bearer(ADMIN)).json()["entries"]
        assert [entry["id"] for entry in listed] == list(range(80, 0, -1))
        assert listed == second.get("/api/audit?limit=500", headers=bearer(ADMIN)).json()["entries"]

    import psycopg
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE pyflow_audit SET entry = json_build_object('id', 40, 'at', entry->'at',"
                     " 'actor', 'mallory', 'action', entry->'action', 'target', entry->'target',"
                     " 'details', entry->'details', 'prev', entry->'prev', 'hash', entry->'hash') WHERE id = 40")
    tampered = run_py("audit", "verify", env=env_cli)
    assert tampered.returncode == 1 and "audit entry 40" in tampered.stderr and "was changed" in tampered.stderr
