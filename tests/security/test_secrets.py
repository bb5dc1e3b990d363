"""Attack replays (issue 12, item 5): no secret is shown, logged or stored in clear where it can be read back.

One real ``python run.py`` with SMTP_PASSWORD, IMAP_PASSWORD, WORKFLOW_API_TOKEN and
WORKFLOW_SECRET_KEY set to distinctive values. After each attack every file under the
storage folder, the server's stdout and stderr, and every answer (runs, logs, workflows,
dashboard pages) are searched for the secret values.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from tests.http_server import base_url, serving
from tests.server import Server, Servers

pytestmark = pytest.mark.slow  # replays attacks on a real run.py server

SETTING_SECRETS = {
    "SMTP_PASSWORD": "smtpPw-7731-zeta",
    "IMAP_PASSWORD": "imapPw-5512-kappa",
    "WORKFLOW_API_TOKEN": "apiTok-9090-omega",
    "WORKFLOW_SECRET_KEY": "sessKey-3141-sigma",
}
TOKEN = SETTING_SECRETS["WORKFLOW_API_TOKEN"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT = {"wait": "30"}


class Target(BaseHTTPRequestHandler):
    """The outside world: /ok echoes its Authorization, /check-token rejects and echoes the key, others fail."""

    authorizations: list[str] = []
    lock = threading.Lock()

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.startswith("/ok"):
            with self.lock:
                self.authorizations.append(self.headers.get("Authorization", ""))
            self._answer(200, json.dumps({"auth_seen": self.headers.get("Authorization")}).encode())
        elif self.path.startswith("/check-token"):
            self._answer(401, f"invalid key {self.headers.get('X-Api-Key')}".encode(), "text/plain")
        else:
            self._answer(500, b"no_service", "text/plain")

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def target():
    with serving(Target) as httpd:
        yield base_url(httpd)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {**SETTING_SECRETS, "WORKFLOW_ALLOW_SHELL": "true", "WORKFLOW_PYTHON_MODULES": "tests.fixtures",
           "WORKFLOW_RETRY_COUNT": "1"}
    with Servers(tmp_path_factory.mktemp("secrets")) as servers:
        yield servers.start(env=env)


def dashboard(server: Server) -> requests.Session:
    """A browser session logged in to the dashboard with the API token."""
    session = requests.Session()
    page = session.get(f"{server.url}/login", timeout=10).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = session.post(f"{server.url}/login", data={"token": TOKEN, "csrf_token": csrf}, timeout=10)
    assert answer.status_code == 200 and "Workflows" in answer.text, answer.text[:300]
    return session


def readable(server: Server) -> dict[str, str]:
    """Everything a person could read back: stored files, the server's output, API answers, dashboard pages."""
    places: dict[str, str] = {}
    for path in sorted(server.storage.rglob("*")):
        if path.is_file():
            places[f"file {path.relative_to(server.storage)}"] = path.read_bytes().decode("utf-8", "replace")
    places["server stdout"], places["server stderr"] = server.stdout, server.stderr
    runs = _all_runs(server)
    places["GET /api/runs"] = json.dumps(runs)
    places["GET /api/workflows"] = server.get("/api/workflows", headers=AUTH).text
    for summary in json.loads(places["GET /api/workflows"])["workflows"]:
        path = f"/api/workflows/{summary['name']}"
        places[f"GET {path}"] = server.get(path, headers=AUTH).text
    browser = dashboard(server)
    places["dashboard /"] = browser.get(f"{server.url}/", timeout=10).text
    places["dashboard /runs"] = browser.get(f"{server.url}/runs", timeout=10).text
    for run in runs:
        for path in (f"/api/runs/{run['id']}", f"/api/runs/{run['id']}/logs"):
            places[f"GET {path}"] = server.get(path, headers=AUTH).text
        places[f"dashboard /runs/{run['id']}"] = browser.get(f"{server.url}/runs/{run['id']}", timeout=10).text
    return places


def _all_runs(server: Server) -> list[dict]:
    answer = server.get("/api/runs", params={"limit": "500"}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    return answer.json()["runs"]


def leaks(server: Server, secrets: list[str], *, except_definitions: bool = False) -> dict[str, list[str]]:
    """Where each secret can be read back ({} when nowhere); ``except_definitions``: stored definitions may hold it."""
    found: dict[str, list[str]] = {}
    for place, text in readable(server).items():
        if except_definitions and place.startswith("file definitions/"):
            continue
        hits = [secret for secret in secrets if secret in text]
        if hits:
            found[place] = hits
    return found


def create(server: Server, definition: dict) -> requests.Response:
    answer = server.post("/api/workflows", json=definition, headers=AUTH)
    assert answer.status_code == 201, answer.text
    return answer


def run(server: Server, name: str, inputs: dict | None = None) -> dict:
    answer = server.post(f"/api/workflows/{name}/runs", params=WAIT, json={"inputs": inputs or {}}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_setting_secrets_never_leave_the_server(server):
    """The baseline: a started server shows none of its secret settings anywhere."""
    assert leaks(server, list(SETTING_SECRETS.values())) == {}


def test_definition_secrets_are_redacted_in_answers_and_kept_by_a_put_of_stars(server, target):
    webhook_secret, authorization, smtp_password = "whsec-Hook-4242", "Bearer defAuth-8080-token", "defSmtp-6060-pw"
    definition = {
        "name": "hooked",
        "trigger": {"type": "webhook", "secret": webhook_secret},
        "steps": [
            {"name": "call", "type": "http_request",
             "config": {"url": f"{target}/ok", "headers": {"Authorization": authorization}}},
            {"name": "mail", "type": "send_email", "when": "{{ inputs.mail | default(false) }}",
             "config": {"to": ["a@example.org"], "smtp_host": "127.0.0.1", "smtp_user": "u",
                        "smtp_password": smtp_password}},
        ],
    }
    secrets = [webhook_secret, authorization, smtp_password]
    created = create(server, definition).json()
    shown = created["definition"]
    assert shown["trigger"]["secret"] == "***"
    assert shown["steps"][0]["config"]["headers"]["Authorization"] == "***"
    assert shown["steps"][1]["config"]["smtp_password"] == "***"

    # A client edits what it read back and PUTs it, stars included: the stored secrets stay.
    edited = server.get("/api/workflows/hooked", headers=AUTH).json()["definition"]
    edited["description"] = "edited"
    answer = requests.put(f"{server.url}/api/workflows/hooked", json=edited, headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    assert not [secret for secret in secrets if secret in answer.text]
    stored = json.loads((server.storage / "definitions" / "hooked" / "v2.json").read_text())["definition"]
    assert stored["trigger"]["secret"] == webhook_secret
    assert stored["steps"][0]["config"]["headers"]["Authorization"] == authorization
    assert stored["steps"][1]["config"]["smtp_password"] == smtp_password

    before = len(Target.authorizations)
    finished = run(server, "hooked")
    assert finished["status"] == "succeeded", finished
    assert Target.authorizations[before:] == [authorization]  # the runtime used the real value
    assert finished["steps"][0]["result"]["json"] == {"auth_seen": "***"}  # echoed back, scrubbed by value
    assert leaks(server, [*secrets, *SETTING_SECRETS.values()], except_definitions=True) == {}


def test_an_input_token_echoed_in_an_http_error_is_scrubbed(server, target):
    token, key = "inTok-6262-delta", "keyMat-2323-gamma"
    create(server, {
        "name": "tokened",
        "steps": [
            {"name": "named", "type": "http_request", "on_failure": "continue",
             "config": {"url": f"{target}/check-token", "headers": {"X-Api-Key": "{{ inputs.api_token }}"}}},
            # The input's name says nothing; the header it goes into does.
            {"name": "unnamed", "type": "http_request", "depends_on": [],
             "config": {"url": f"{target}/check-token", "headers": {"X-Api-Key": "{{ inputs.material }}"}}},
        ],
    })
    finished = run(server, "tokened", {"api_token": token, "material": key})
    assert finished["status"] == "failed"
    errors = {step["name"]: step["error"] for step in finished["steps"]}
    assert errors["named"].endswith("answered 401 Unauthorized: invalid key ***"), errors
    assert errors["unnamed"].endswith("answered 401 Unauthorized: invalid key ***"), errors
    assert "***" in finished["error"]
    assert leaks(server, [token, *SETTING_SECRETS.values()]) == {}
    # An input whose name says nothing is stored as posted (docs/security/secrets-and-network.md):
    # only what the run wrote after learning it is secret (errors, results, logs) is scrubbed.
    logs = server.get(f"/api/runs/{finished['id']}/logs", headers=AUTH).text
    record = server.get(f"/api/runs/{finished['id']}", headers=AUTH).json()
    assert record["trigger_data"]["material"] == key
    assert key not in json.dumps(record["steps"]) + record["error"] + logs


def test_an_input_token_echoed_in_a_header_error_is_scrubbed(server, target):
    """requests refuses a header value with a newline and quotes it in its error."""
    token = "inTok-7777-eta"
    create(server, {"name": "bad_header", "steps": [
        {"name": "call", "type": "http_request",
         "config": {"url": f"{target}/ok", "headers": {"Authorization": "Bearer {{ inputs.api_token }}"}}}]})
    finished = run(server, "bad_header", {"api_token": token + "\n"})
    error = finished["steps"][0]["error"]
    assert finished["status"] == "failed" and error.endswith("in header value: '***'"), error
    assert leaks(server, [token, *SETTING_SECRETS.values()]) == {}


def test_a_failing_slack_webhook_url_input_is_hidden_everywhere(server, target):
    url = f"{target}/services/T0001/B0001/slackSecret1357"
    create(server, {
        "name": "notifier",
        "steps": [
            {"name": "announce", "type": "log", "config": {"message": "posting to {{ inputs.slack_webhook_url }}"}},
            {"name": "post", "type": "http_request",
             "config": {"url": "{{ inputs.slack_webhook_url }}", "method": "POST", "json": {"text": "hi"}}},
        ],
    })
    finished = run(server, "notifier", {"slack_webhook_url": url})
    assert finished["status"] == "failed"
    assert finished["steps"][1]["error"] == "http_request: POST *** answered 500 Internal Server Error: no_service"
    logs = server.get(f"/api/runs/{finished['id']}/logs", headers=AUTH).json()["logs"]
    assert any(line["message"] == "posting to ***" for line in logs), logs
    assert leaks(server, ["slackSecret1357", *SETTING_SECRETS.values()]) == {}


def test_a_shell_step_running_env_sees_no_secret_setting(server):
    create(server, {"name": "dump_env", "steps": [{"name": "env", "type": "shell", "config": {"command": "env"}}]})
    finished = run(server, "dump_env")
    assert finished["status"] == "succeeded", finished
    stdout = finished["steps"][0]["result"]["stdout"]
    assert "PATH=" in stdout
    assert not [name for name in SETTING_SECRETS if f"{name}=" in stdout]
    assert leaks(server, list(SETTING_SECRETS.values())) == {}


def test_a_module_that_logs_and_raises_the_password_leaks_nothing(server):
    create(server, {"name": "careless", "steps": [
        {"name": "login", "type": "python", "retries": 0,
         "config": {"function": "tests.fixtures.functions:careless_login"}}]})
    finished = run(server, "careless")
    assert finished["steps"][0]["error"] == "RuntimeError: login refused for password ***"
    assert "logging in with password ***" in server.stderr  # the console log is scrubbed too
    assert leaks(server, list(SETTING_SECRETS.values())) == {}


def test_a_module_that_raises_an_input_token_leaks_it_nowhere(server):
    token = "inTok-4848-theta"
    create(server, {"name": "careless_call", "steps": [
        {"name": "call", "type": "python", "retries": 0,
         "config": {"function": "tests.fixtures.functions:careless_call",
                    "kwargs": {"token": "{{ inputs.api_token }}"}}}]})
    finished = run(server, "careless_call", {"api_token": token})
    assert finished["steps"][0]["error"] == "RuntimeError: remote refused token ***"
    assert "RuntimeError: remote refused token ***" in server.stderr  # the traceback on the console
    assert leaks(server, [token, *SETTING_SECRETS.values()]) == {}


def test_everything_under_the_storage_folder_is_the_owners_only(server, target):
    files = server.post("/api/workflows/tokened/runs", params=WAIT, headers=AUTH,
                        files={"report": ("report.txt", b"data")}, data={"inputs": json.dumps({"api_token": "x"})})
    assert files.status_code == 200, files.text
    modes = {path: path.stat().st_mode & 0o777 for path in [server.storage, *server.storage.rglob("*")]}
    wrong = {str(path): oct(mode) for path, mode in modes.items() if mode != (0o700 if path.is_dir() else 0o600)}
    assert wrong == {}
    assert any(Path(path).name == "report.txt" for path in modes)  # the upload is among them
