"""Red-team replays on authentication, authorization and the web face (second pass).

Each test is an attack by someone with no credentials, a viewer or operator token, or control of
a run's inputs, against the Flask app in this process (its test client), and asserts what holds now.
The first pass (templates, SSRF, redirects, body sizes, loops) is tests/test_redteam.py.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest

from app import create_app, start_app
from tests.conftest import TEST_SETTINGS
from tests.fixtures import TRIGGER_WORKFLOWS, WORKFLOWS
from tests.waiting import wait_until

ADMIN = "admin-token-for-redteam"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
ASKS = {"name": "asks", "steps": [
    {"name": "first", "type": "approval", "config": {"message": "Ship it?", "timeout": 600}},
    {"name": "after", "type": "log", "config": {"message": "answered"}}]}


@pytest.fixture
def locked(storage, key_file):
    """An app with WORKFLOW_API_TOKEN (an admin) and a fixed session key."""
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_KEY_FILE": str(key_file), "WORKFLOW_CLASSES": WORKFLOWS,
                                "WORKFLOW_API_TOKEN": ADMIN, "WORKFLOW_SECRET_KEY": "k" * 32}))
    yield app
    app.extensions["pyflow"].shutdown(timeout=5)


@pytest.fixture
def hooks(storage, key_file):
    """An open app (no token: a local tool) serving the test webhooks, started."""
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage),
                                "WORKFLOW_KEY_FILE": str(key_file),
                                "WORKFLOW_CLASSES": WORKFLOWS + TRIGGER_WORKFLOWS}))
    client = app.test_client()
    for name in ("hook", "upload_hook", "stripe_hook", "slack_hook"):
        assert client.post(f"/api/workflows/{name}/start").status_code == 200
    yield app
    app.extensions["pyflow"].shutdown(timeout=5)


def bearer(token: str = ADMIN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def make_token(client, name: str, role: str) -> str:
    response = client.post("/api/tokens", json={"name": name, "role": role}, headers=bearer())
    assert response.status_code == 201, response.get_json()
    return response.get_json()["token"]


def log_in(client, token: str) -> str:
    """Log ``client`` in with ``token``; the session's CSRF token."""
    csrf = CSRF_FIELD.search(client.get("/login").text).group(1)
    assert client.post("/login", data={"csrf_token": csrf, "token": token}).status_code == 302
    return CSRF_FIELD.search(client.get("/").text).group(1)


def waiting_approval(app, client) -> tuple[str, dict]:
    """A run of ``asks`` parked on its approval step: (run id, the step's wait record)."""
    assert client.post("/api/workflows", json=ASKS, headers=bearer()).status_code == 201
    run_id = client.post("/api/workflows/asks/runs", json={}, headers=bearer()).get_json()["id"]
    run = wait_until(lambda: (found := client.get(f"/api/runs/{run_id}", headers=bearer()).get_json())["status"]
                     == "waiting" and found, 15, message="the approval step waiting")
    return run_id, run["steps"][0]["wait"]


def approval_links(app, run_id: str, wait: dict) -> dict:
    """The approve and reject links the approval e-mail carries (signed by the app)."""
    return app.extensions["pyflow"].approvals.links(run_id, "first", float(wait["until_epoch"]), wait["nonce"])


# -- HEAD is GET: it must never do what the form's POST does ----------------------------------------------


def test_a_head_request_on_an_approval_link_does_not_answer_it(locked):
    # Mail scanners and link checkers fetch links with HEAD; Flask answers HEAD with the GET view.
    client = locked.test_client()
    run_id, wait = waiting_approval(locked, client)
    path = approval_links(locked, run_id, wait)["approve"].split("://", 1)[1].split("/", 1)[1]

    scanner = locked.test_client()
    assert scanner.head(f"/{path}").status_code == 200

    run = client.get(f"/api/runs/{run_id}", headers=bearer()).get_json()
    assert run["status"] == "waiting" and run["steps"][0]["status"] == "waiting"
    assert scanner.get(f"/{path}").status_code == 200  # the link still asks


def test_a_head_request_on_the_run_form_starts_no_run(locked):
    # No CSRF token is checked on HEAD, so a HEAD that ran the POST branch would be a CSRF hole.
    client = locked.test_client()
    log_in(client, make_token(client, "olga", "operator"))

    assert client.head("/workflows/echo/run").status_code == 200

    assert client.get("/api/runs", headers=bearer()).get_json()["runs"] == []


def test_a_head_request_on_the_login_form_checks_no_token(locked):
    client = locked.test_client()
    answer = client.head("/login", data={"token": ADMIN})

    assert answer.status_code == 200  # the login page, not the redirect of a login
    assert client.get("/").status_code == 302  # still not logged in


# -- malformed requests from anyone: a clear 4xx, never a 500 ------------------------------------------------


@pytest.mark.parametrize("charset", ["bogus-charset", "rot13", "base64", "idna"])
def test_a_webhook_body_in_an_unknown_charset_is_415_naming_it(hooks, charset):
    # Anyone may post to an unsigned webhook; the body's charset came straight from the Content-Type.
    answer = hooks.test_client().post("/api/hooks/hook", data=b"hello", content_type=f"text/plain; charset={charset}")

    assert answer.status_code == 415
    assert answer.get_json()["error"] == {
        "code": "unsupported_media_type",
        "message": f"the Content-Type's charset {charset!r} is not a text encoding this server knows; "
                   f"send the body as UTF-8"}


@pytest.mark.parametrize("stamp", ["\u00b2", "\u00b9\u00b2", "9" * 5000, "-5", "1e9", " "])
def test_a_signed_webhook_with_a_timestamp_that_is_no_unix_time_is_401(hooks, stamp):
    # A header byte 0xB2 reads as "²", which str.isdigit() accepts and int() refuses.
    client = hooks.test_client()
    slack = client.post("/api/hooks/slack_hook", data=b"{}", content_type="application/json",
                        headers={"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=00"})
    stripe = client.post("/api/hooks/stripe_hook", data=b"{}", content_type="application/json",
                         headers={"Stripe-Signature": f"t={stamp},v1=00"})

    assert (slack.status_code, stripe.status_code) == (401, 401)
    assert "must carry the delivery's unix time in seconds" in slack.get_json()["error"]["message"]
    assert "must carry the delivery's unix time in seconds" in stripe.get_json()["error"]["message"]

def test_a_known_charset_is_still_read(hooks):
    client = hooks.test_client()
    answer = client.post("/api/hooks/hook", data="héllo".encode("latin-1"), content_type="text/plain; charset=latin-1")

    assert answer.status_code == 202
    assert client.get(answer.headers["Location"]).get_json()["trigger_data"]["body"] == "héllo"


def test_an_upload_with_a_very_long_name_is_saved_under_a_shorter_one(hooks):
    client = hooks.test_client()
    name = "A" * 300 + ".pdf"

    via_hook = client.post("/api/hooks/upload_hook", data={"file": (io.BytesIO(b"%PDF-1.4"), name)},
                           content_type="multipart/form-data")
    via_api = client.post("/api/workflows/echo/runs", data={"file": (io.BytesIO(b"%PDF-1.4"), name)},
                          content_type="multipart/form-data")

    for answer in (via_hook, via_api):
        assert answer.status_code == 202, answer.get_json()
        attachment = client.get(answer.headers["Location"]).get_json()["trigger_data"]["attachments"][0]
        assert attachment["filename"] == "A" * 124 + ".pdf" and attachment["size"] == 8
        assert Path(attachment["path"]).read_bytes() == b"%PDF-1.4"


@pytest.mark.parametrize("posted, saved", [
    ("../../etc/passwd", "etc_passwd"), ("a\x00b.txt", "ab.txt"), ("..", "upload.bin"),
    ("x" * 40 + "." + "y" * 300, "x" * 40 + "." + "y" * 87),  # an extension past 16 characters is cut like a name
])
def test_upload_names_never_leave_the_attachments_folder(hooks, storage, posted, saved):
    answer = hooks.test_client().post("/api/workflows/echo/runs", data={"file": (io.BytesIO(b"x"), posted)},
                                      content_type="multipart/form-data")

    assert answer.status_code == 202, answer.get_json()
    attachment = answer.get_json()["trigger_data"]["attachments"][0]
    assert attachment["filename"] == saved
    assert str(Path(attachment["path"]).resolve()).startswith(str(storage.resolve() / "attachments") + "/")


# -- sessions -----------------------------------------------------------------------------------------------


def test_a_session_planted_before_login_does_not_lend_its_csrf_token_to_the_login(locked):
    # The attacker (say on a sibling subdomain, which may set cookies for this site) takes an anonymous session
    # from the login page and plants it in the victim's browser; the victim then logs in with it.
    attacker = locked.test_client()
    planted_csrf = CSRF_FIELD.search(attacker.get("/login").text).group(1)
    planted = attacker.get_cookie("session").value

    victim = locked.test_client()
    victim.set_cookie("session", planted)
    assert victim.post("/login", data={"csrf_token": planted_csrf, "token": ADMIN}).status_code == 302

    # A form the attacker's page makes the victim's browser post, with the token the attacker knows.
    forged = victim.post("/workflows/echo/run", data={"csrf_token": planted_csrf, "inputs_json": '{"text": "x"}'})
    assert forged.status_code == 400
    assert victim.get("/api/runs", headers=bearer()).get_json()["runs"] == []
    # The victim's own pages carry the new token, which works.
    fresh = CSRF_FIELD.search(victim.get("/workflows/echo/run").text).group(1)
    assert fresh != planted_csrf
    assert victim.post("/workflows/echo/run", data={"csrf_token": fresh, "text": "mine"}).status_code == 302


# -- log lines: one record, one line ------------------------------------------------------------------------

FORGED = "\n2026-12-05 11:00:00,000 INFO app.core.audit: audit 99: admin secret.delete DB_PASSWORD"


def test_a_request_path_with_a_newline_cannot_forge_a_log_line(locked, caplog):
    # No login is needed to reach /approvals/<anything>; the path is logged when the CSRF token is missing.
    answer = locked.test_client().post("/approvals/" + quote("x" + FORGED, safe=""))

    assert answer.status_code == 400
    refused = [record.getMessage() for record in caplog.records if "CSRF" in record.getMessage()]
    assert refused and all("\n" not in message for message in refused)



# -- audit: denied attempts ---------------------------------------------------------------------------------


def test_every_refused_call_of_a_viewer_or_operator_is_audited(locked):
    client = locked.test_client()
    viewer, operator = make_token(client, "vic", "viewer"), make_token(client, "olga", "operator")
    browser = locked.test_client()
    csrf = log_in(browser, operator)

    assert client.get("/api/secrets", headers=bearer(viewer)).status_code == 403
    assert client.post("/api/workflows/echo/runs", json={}, headers=bearer(viewer)).status_code == 403
    assert client.delete("/api/tokens/olga", headers=bearer(operator)).status_code == 403
    assert browser.post("/secrets", data={"csrf_token": csrf, "name": "X", "value": "y"}).status_code == 403
    assert client.get("/api/audit?limit=1", headers=bearer(viewer)).status_code == 403

    entries = client.get("/api/audit?action=access.denied", headers=bearer()).get_json()["entries"]
    assert [(e["actor"], e["target"], e["details"]) for e in reversed(entries)] == [
        ("vic", "GET /api/secrets", {"required_role": "admin", "role": "viewer"}),
        ("vic", "POST /api/workflows/echo/runs", {"required_role": "operator", "role": "viewer"}),
        ("olga", "DELETE /api/tokens/olga", {"required_role": "admin", "role": "operator"}),
        ("olga", "POST /secrets", {"required_role": "admin", "role": "operator"}),
        ("vic", "GET /api/audit", {"required_role": "admin", "role": "viewer"}),
    ]
    # Nothing the refused calls asked for happened.
    assert client.get("/api/secrets", headers=bearer()).get_json()["secrets"] == []
    assert client.get("/api/runs", headers=bearer()).get_json()["runs"] == []


# -- approval links -----------------------------------------------------------------------------------------


def link_path(link: str) -> str:
    return "/" + link.split("/", 3)[3]


def test_an_approval_link_is_bound_to_its_run_step_and_park(locked):
    client = locked.test_client()
    run_id, wait = waiting_approval(locked, client)
    links = {decision: link_path(link) for decision, link in approval_links(locked, run_id, wait).items()}
    approvals = locked.extensions["pyflow"].approvals
    other_run = link_path(approvals.links("run_0123456789abcdef", "first", float(wait["until_epoch"]),
                                          wait["nonce"])["approve"])
    other_park = link_path(approvals.links(run_id, "first", float(wait["until_epoch"]), "an-earlier-park")["approve"])
    expired = link_path(approvals.links(run_id, "first", 1_000_000.0, wait["nonce"])["approve"])
    token = links["approve"].rsplit("/", 1)[1]
    tampered = links["approve"][:-len(token)] + token[:-2] + ("AA" if token[-2:] != "AA" else "BB")

    answers = {name: client.get(path).status_code for name, path in (
        ("other run", other_run), ("other park", other_park), ("expired", expired), ("tampered", tampered))}
    assert answers == {"other run": 409, "other park": 409, "expired": 400, "tampered": 403}

    csrf = CSRF_FIELD.search(client.get(links["reject"]).text).group(1)
    too_long = client.post(links["reject"], data={"csrf_token": csrf, "comment": "x" * 2001})
    assert too_long.status_code == 422 and "at most 2000 characters" in too_long.text
    assert client.post(links["approve"], data={"csrf_token": csrf}).status_code == 200
    # Answered: the same link, or its reject twin, answers nothing again.
    assert client.post(links["approve"], data={"csrf_token": csrf}).status_code == 409
    assert client.post(links["reject"], data={"csrf_token": csrf}).status_code == 409
    run = wait_until(lambda: (found := client.get(f"/api/runs/{run_id}", headers=bearer()).get_json())["status"]
                     == "succeeded" and found, 15, message="the approved run finished")
    assert run["steps"][0]["result"]["approved"] is True


# -- credentials written into URLs of a definition ----------------------------------------------------------

URL_PASSWORD = "Hunter2pw-url"
BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"  # the shape of a Telegram bot token
LEAKY = {"name": "leaky_urls", "trigger": {"type": "manual"}, "steps": [
    {"name": "call", "type": "http_request", "config": {"url": f"http://bob:{URL_PASSWORD}@127.0.0.1:9/x",
                                                         "timeout": 2}},
    {"name": "tell", "type": "notify", "depends_on": [], "config": {"urls": [f"tgram://{BOT_TOKEN}/12345"],
                                                                     "body": "done"}}]}


def test_a_viewer_never_reads_credentials_written_into_a_definitions_urls(locked):
    client = locked.test_client()
    assert client.post("/api/workflows", json=LEAKY, headers=bearer()).status_code == 201
    viewer = bearer(make_token(client, "vic", "viewer"))

    answers = {path: client.get(path, headers=viewer).get_data(as_text=True) for path in (
        "/api/workflows", "/api/workflows/leaky_urls", "/api/workflows/leaky_urls/versions/1")}

    for path, text in answers.items():
        assert URL_PASSWORD not in text and BOT_TOKEN not in text and BOT_TOKEN.split(":")[1] not in text, path
    steps = client.get("/api/workflows/leaky_urls", headers=viewer).get_json()["definition"]["steps"]
    assert steps[0]["config"]["url"] == "http://bob:***@127.0.0.1:9/x"
    assert "***" in steps[1]["config"]["urls"][0]


def test_a_definition_read_back_with_masked_urls_and_put_keeps_the_credentials(locked):
    client = locked.test_client()
    assert client.post("/api/workflows", json=LEAKY, headers=bearer()).status_code == 201
    read = client.get("/api/workflows/leaky_urls", headers=bearer())
    edited = {**read.get_json()["definition"], "description": "edited in the designer"}

    assert client.put("/api/workflows/leaky_urls", json=edited,
                      headers={**bearer(), "If-Match": read.headers["ETag"]}).status_code == 200

    stored = locked.extensions["pyflow"].store.get_definition("leaky_urls")
    assert stored["version"] == 2 and stored["definition"]["description"] == "edited in the designer"
    assert stored["definition"]["steps"][0]["config"]["url"] == LEAKY["steps"][0]["config"]["url"]
    assert stored["definition"]["steps"][1]["config"]["urls"] == LEAKY["steps"][1]["config"]["urls"]


# -- CSRF: every state-changing form and every JSON write a session cookie can make ----------------------------

SAMPLE_VALUES = {"name": "echo", "run_id": "run_0123456789abcdef", "operation": None, "decision": "approve",
                 "token": "x", "version": "1"}


def _post_urls(app) -> list[str]:
    """One URL of every dashboard route that takes POST (what a cross-site form could target)."""
    urls = []
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods or rule.rule.startswith(("/api/", "/metrics")):
            continue
        values = {}
        for argument in rule.arguments:
            converter = rule._converters[argument]
            choices = getattr(converter, "items", None)
            values[argument] = sorted(choices)[0] if choices else SAMPLE_VALUES[argument]
        urls.append(rule.build(values, append_unknown=False)[1])
    return sorted(urls)


def test_every_dashboard_form_refuses_a_post_without_the_sessions_csrf_token(locked):
    client = locked.test_client()
    log_in(client, ADMIN)
    urls = _post_urls(locked)
    assert {"/login", "/logout", "/secrets", "/tokens", "/workflows/echo/run"} <= set(urls)

    refused = {url: client.post(url, data={"name": "X", "value": "y", "role": "admin", "token": ADMIN,
                                           "csrf_token": "not-the-token"}).status_code for url in urls}

    assert refused == dict.fromkeys(urls, 400)
    assert client.get("/api/secrets", headers=bearer()).get_json()["secrets"] == []
    assert client.get("/").status_code == 200  # /logout did not log out either


def test_a_logged_in_session_writes_to_the_api_only_with_its_csrf_header(locked):
    client = locked.test_client()
    csrf = log_in(client, ADMIN)
    writes = [("put", "/api/secrets/X", {"value": "y"}), ("post", "/api/tokens", {"name": "t", "role": "admin"}),
              ("post", "/api/workflows", ASKS), ("post", "/api/workflows/echo/runs", {}),
              ("post", "/api/events", {"type": "x"}), ("delete", "/api/workflows/echo", None)]

    for method, path, body in writes:
        answer = getattr(client, method)(path, json=body)
        assert answer.status_code == 401, (method, path)
        wrong = getattr(client, method)(path, json=body, headers={"X-CSRF-Token": csrf[:-1] + "x"})
        assert wrong.status_code == 401, (method, path)
    assert client.get("/api/secrets").get_json()["secrets"] == []  # reads need no header
    assert client.put("/api/secrets/X", json={"value": "y"}, headers={"X-CSRF-Token": csrf}).status_code == 201


def test_a_token_looping_on_a_refused_call_adds_at_most_ten_audit_entries_a_minute(locked, caplog):
    client = locked.test_client()
    viewer = bearer(make_token(client, "vic", "viewer"))

    for _ in range(25):
        assert client.get("/api/tokens", headers=viewer).status_code == 403  # every one is still refused

    entries = client.get("/api/audit?action=access.denied&limit=100", headers=bearer()).get_json()["entries"]
    assert len(entries) == 10
    assert sum("not audited" in record.getMessage() for record in caplog.records) == 15


def test_the_page_that_shows_a_new_token_once_is_never_stored_by_the_browser(locked):
    client = locked.test_client()
    csrf = log_in(client, ADMIN)

    made = client.post("/tokens", data={"csrf_token": csrf, "name": "ci", "role": "operator"})

    assert made.status_code == 201
    assert re.search(r'<pre class="mono" id="new-token">[A-Za-z0-9_-]{40,}</pre>', made.text)
    assert made.headers["Cache-Control"] == "no-store"  # as POST /api/tokens answers


def test_a_csrf_header_with_a_non_ascii_byte_is_refused_not_a_500(locked):
    client = locked.test_client()
    log_in(client, ADMIN)

    answer = client.put("/api/secrets/X", json={"value": "y"}, headers={"X-CSRF-Token": "\u00e9t\u00e9"})

    assert answer.status_code == 401 and answer.get_json()["error"]["code"] == "unauthorized"


def test_a_forged_forwarded_for_header_does_not_escape_the_login_forms_lockout(locked):
    # No proxy is configured, so X-Forwarded-For and X-Real-IP are the client's own words.
    client = locked.test_client()
    csrf = CSRF_FIELD.search(client.get("/login").text).group(1)

    guesses = [client.post("/login", data={"csrf_token": csrf, "token": f"guess-{n}"},
                           headers={"X-Forwarded-For": f"203.0.113.{n}", "X-Real-IP": f"198.51.100.{n}"}).status_code
               for n in range(10)]
    right = client.post("/login", data={"csrf_token": csrf, "token": ADMIN}, headers={"X-Forwarded-For": "192.0.2.1"})

    assert guesses == [401] * 10
    assert right.status_code == 429 and "Too many failed logins" in right.text


# -- run inputs: a paused run's variables obey the inputs schema as a new run's inputs do ---------------------


def test_an_operator_cannot_patch_a_paused_run_past_its_inputs_schema(locked):
    # The schema is the author's bound on what operators may pass (here: which host a later step calls).
    client = locked.test_client()
    guarded = {"name": "guarded", "inputs": {"type": "object", "required": ["host"], "additionalProperties": False,
                                             "properties": {"host": {"enum": ["api.example.org"]},
                                                            "note": {"type": "string", "maxLength": 20}}},
               "steps": [{"name": "ask", "type": "approval", "config": {"timeout": 600}},
                         {"name": "call", "type": "log", "config": {"message": "calling {{ trigger_data.host }}"}}]}
    assert client.post("/api/workflows", json=guarded, headers=bearer()).status_code == 201
    operator = bearer(make_token(client, "olga", "operator"))
    assert client.post("/api/workflows/guarded/runs", json={"inputs": {"host": "evil.example"}},
                       headers=operator).status_code == 422  # refused for a new run
    run_id = client.post("/api/workflows/guarded/runs", json={"inputs": {"host": "api.example.org"}},
                         headers=operator).get_json()["id"]
    wait_until(lambda: client.get(f"/api/runs/{run_id}", headers=operator).get_json()["status"] == "waiting", 15,
               message="the run waiting")
    assert client.post(f"/api/runs/{run_id}/pause", headers=operator).status_code == 200

    patched = client.patch(f"/api/runs/{run_id}/variables", json={"variables": {"host": "evil.example"}},
                           headers=operator)
    extra = client.patch(f"/api/runs/{run_id}/variables", json={"variables": {"url": "http://evil.example"}},
                         headers=operator)
    allowed = client.patch(f"/api/runs/{run_id}/variables", json={"variables": {"note": "checked"}},
                           headers=operator)

    assert patched.status_code == 422
    assert patched.get_json()["error"]["details"][0]["path"] == "host"
    assert extra.status_code == 422 and "url" in extra.get_json()["error"]["message"]
    assert allowed.status_code == 200
    stored = client.get(f"/api/runs/{run_id}", headers=operator).get_json()["trigger_data"]
    assert stored == {"host": "api.example.org", "note": "checked"}


def test_a_comment_holding_newlines_and_json_cannot_forge_an_audit_entry(locked, storage):
    from app.core.audit import verify

    client = locked.test_client()
    run_id, _ = waiting_approval(locked, client)
    fake = {"id": 99, "actor": "admin", "action": "secret.delete", "target": "DB_PASSWORD", "details": {}}
    comment = "fine\n" + json.dumps(fake) + "\r\n"

    assert client.post(f"/api/runs/{run_id}/approve", json={"comment": comment},
                       headers=bearer(make_token(client, "olga", "operator"))).status_code == 200

    lines = (storage / "audit.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [entry["action"] for entry in entries][-1] == "approval.approve"
    assert entries[-1]["details"]["comment"] == comment and "secret.delete" not in [e["action"] for e in entries]
    assert verify(locked.extensions["pyflow"].store.audit_entries()) == (len(entries), None)



# -- the scrubber as an oracle --------------------------------------------------------------------------------


def test_an_unsigned_webhook_does_not_tell_anyone_which_posted_word_is_a_secret(storage, key_file):
    # Answers are scrubbed of secret values; echoing the body would show "***" where a guess of the admin token
    # (or of a stored secret) was right: thousands of guesses a request, none counted by the lockout.
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_KEY_FILE":
                                str(key_file), "WORKFLOW_CLASSES": WORKFLOWS + TRIGGER_WORKFLOWS,
                                "WORKFLOW_API_TOKEN": "summer2026", "WORKFLOW_SECRET_KEY": "k" * 32}))
    try:
        client = app.test_client()
        assert client.post("/api/workflows/hook/start", headers=bearer("summer2026")).status_code == 200
        stored = client.put("/api/secrets/DB", json={"value": "hunter22"}, headers=bearer("summer2026"))
        assert stored.status_code == 201

        answer = client.post("/api/hooks/hook?q=hunter22", data="password winter2025 summer2026 hunter22 letmein",
                             content_type="text/plain", headers={"X-Guess": "summer2026"})

        assert answer.status_code == 202
        assert sorted(answer.get_json()) == ["created_at", "id", "source", "status", "workflow"]
        assert "***" not in answer.get_data(as_text=True)
        assert client.get(answer.headers["Location"]).status_code == 401  # the run itself needs a token
    finally:
        app.extensions["pyflow"].shutdown(timeout=5)


def test_answers_that_quote_an_unauthenticated_request_do_not_mark_which_word_is_a_secret(storage, key_file):
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_KEY_FILE":
                                str(key_file), "WORKFLOW_CLASSES": WORKFLOWS + TRIGGER_WORKFLOWS,
                                "WORKFLOW_API_TOKEN": "summer2026", "WORKFLOW_SECRET_KEY": "k" * 32}))
    try:
        client = app.test_client()
        stored = client.put("/api/secrets/DB", json={"value": "hunter22"}, headers=bearer("summer2026"))
        assert stored.status_code == 201
        guesses = "password winter2025 summer2026 hunter22 letmein"

        hook = client.post(f"/api/hooks/{guesses}")
        host = client.get("/api/health", headers={"Host": "summer2026.hunter22.example"})
        page = client.get("/login?next=/runs/summer2026/hunter22")
        redirect = client.get("/runs/summer2026/hunter22")

        assert hook.status_code == 404 and hook.get_json()["error"]["message"] == f"no workflow named {guesses!r}"
        assert host.status_code == 400 and "'summer2026.hunter22.example'" in host.get_json()["error"]["message"]
        assert 'name="next" value="/runs/summer2026/hunter22"' in page.text
        assert redirect.status_code == 302 and "/runs/summer2026/hunter22" in redirect.text
        for answer in (hook, host, page, redirect):
            assert "***" not in answer.get_data(as_text=True)
        # An authenticated answer is scrubbed as before: a secret value there did not come from the caller.
        run = client.post("/api/workflows/echo/runs?wait=10", json={"inputs": {"text": "hunter22"}},
                          headers=bearer("summer2026")).get_json()
        assert run["steps"][0]["result"] == {"value": "***"}
    finally:
        app.extensions["pyflow"].shutdown(timeout=5)


def test_no_answer_is_sniffed_into_another_type(client):
    # A run's text or a webhook's echo is JSON; a browser that sniffed it could run it as HTML.
    answers = {
        "health": client.get("/api/health"),
        "unknown API path": client.get("/api/no-such-thing"),
        "a run": client.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "<script>x</script>"}}),
        "a page": client.get("/"),
        "a static file": client.get("/static/dashboard/dashboard.css"),
        "an unknown hook": client.post("/api/hooks/no_such_hook", data="<b>hi</b>"),
    }
    for what, response in answers.items():
        response.close()  # a static file's answer holds the file open
        assert response.headers.get("X-Content-Type-Options") == "nosniff", (what, response.status_code)
