"""The shipped approval_flow end to end: a real run.py, a real SMTP server (aiosmtpd) whose mail holds the links,
and a real HTTP server the approved action posts to. The links are read out of the mail and followed."""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from tests.http_server import base_url, serving
from tests.mailbox import smtp_server
from tests.server import Servers, free_port
from tests.waiting import wait_until

APPROVER = "boss@example.org"


@pytest.fixture
def mailbox():
    with smtp_server() as served:
        yield served


@pytest.fixture
def orders():
    """The purchasing system the approved action posts to."""
    received: list[dict] = []
    cancelled: list[dict] = []

    class Orders(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/ledger":  # the bookkeeping system, down
                self.send_response(500)
                self.end_headers()
                return
            (cancelled if self.path == "/orders/cancel" else received).append(body)
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"order": 1}')

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Orders) as httpd:
        yield base_url(httpd) + "/orders", received, cancelled


@pytest.fixture
def server(tmp_path, mailbox):
    _, smtp_port = mailbox
    port = free_port()
    env = {"PORT": str(port), "WORKFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}", "SMTP_HOST": "127.0.0.1",
           "SMTP_PORT": str(smtp_port), "SMTP_SECURITY": "none", "MAIL_FROM": "pyflow@example.org"}
    with Servers(tmp_path) as servers:
        yield servers.start(env=env)


def start(server, action_url: str, **inputs) -> str:
    body = {"inputs": {"request": "Buy 3 laptops", "requester": "dana", "approver": APPROVER,
                       "action_url": action_url, "amount": 4200, **inputs}}
    response = server.post("/api/workflows/approval_flow/runs", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def status(server, run_id: str, wanted: str, timeout: float = 20) -> dict:
    return wait_until(lambda: (run := server.get(f"/api/runs/{run_id}").json())["status"] == wanted and run,
                      timeout, message=f"run {run_id} {wanted}")


def follow(link: str, comment: str = "") -> requests.Response:
    """Open a link as a browser does, then press its one button."""
    browser = requests.Session()
    page = browser.get(link, timeout=10)
    if page.status_code != 200:
        return page
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return browser.post(link, data={"csrf_token": csrf, "comment": comment}, timeout=10)


def test_an_approval_by_e_mail_link_lets_the_action_run(server, mailbox, orders):
    handler, _ = mailbox
    action_url, received, _ = orders
    run_id = start(server, action_url)
    waiting = status(server, run_id, "waiting")
    assert waiting["steps"][1]["wait"]["to"] == [APPROVER]
    assert received == []  # nothing done before the approval
    links = wait_until(lambda: handler.links(mentioning=run_id), 10, message="the approval e-mail")
    mail = handler.messages[0]
    assert mail["To"] == APPROVER and mail["Subject"] == "Approve: Buy 3 laptops"

    page = requests.get(links["approve"], timeout=10)
    assert page.status_code == 200 and "Approve this request?" in page.text and "Buy 3 laptops" in page.text
    assert status(server, run_id, "waiting")  # opening the link (a mail scanner may) answers nothing
    answered = follow(links["approve"], "within budget")
    assert answered.status_code == 200 and 'id="approval-approved"' in answered.text

    run = status(server, run_id, "succeeded")
    approval = run["steps"][1]["result"]
    assert approval["approved"] is True and approval["by"] == f"{APPROVER} (e-mail link)"
    assert approval["comment"] == "within budget" and approval["at"]
    assert received == [{"request": "Buy 3 laptops", "amount": 4200, "approved_by": f"{APPROVER} (e-mail link)",
                         "comment": "within budget"}]
    assert run["steps"][4]["result"]["message"].endswith("action answered 201")
    assert run["steps"][3]["status"] == "skipped"  # no record_url: nothing to book

    again = follow(links["approve"])
    assert again.status_code == 409 and "no longer waits" in again.text
    assert requests.get(links["reject"], timeout=10).status_code == 409  # single use: the pair is spent
    token = links["approve"].rsplit("/", 1)[1]
    tampered = links["approve"].replace(token, token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    refused = requests.get(tampered, timeout=10)
    assert refused.status_code == 403 and "not valid" in refused.text
    audit = server.get("/api/audit", params={"action": "approval.approve"}).json()["entries"]
    assert audit[0]["target"] == run_id and audit[0]["details"]["via"] == "link"


def test_a_rejection_by_link_fails_the_run_before_the_action(server, mailbox, orders):
    handler, _ = mailbox
    action_url, received, _ = orders
    run_id = start(server, action_url, request="Buy a yacht")
    status(server, run_id, "waiting")
    links = wait_until(lambda: handler.links(mentioning=run_id), 10, message="the approval e-mail")
    assert follow(links["reject"], "too expensive").status_code == 200
    run = status(server, run_id, "failed")
    assert run["steps"][1]["error"] == f"rejected by {APPROVER} (e-mail link): too expensive"
    assert run["steps"][2]["status"] == "pending" and received == []
    assert "rejected by" in run["error"]


def test_no_answer_within_the_timeout_rejects_and_the_link_expires(server, mailbox, orders):
    handler, _ = mailbox
    action_url, received, _ = orders
    run_id = start(server, action_url, timeout=1)
    links = wait_until(lambda: handler.links(mentioning=run_id), 10, message="the approval e-mail")
    run = status(server, run_id, "failed")
    assert run["steps"][1]["error"] == "no answer within 1 s (on_timeout: reject)"
    expired = requests.get(links["approve"], timeout=10)
    assert expired.status_code == 400 and "expired" in expired.text
    assert received == []


def test_a_failure_after_the_action_undoes_it(server, mailbox, orders):
    handler, _ = mailbox
    action_url, received, cancelled = orders
    ledger = action_url.rsplit("/", 1)[0] + "/ledger"  # answers 500
    run_id = start(server, action_url, record_url=ledger)
    status(server, run_id, "waiting")
    links = wait_until(lambda: handler.links(mentioning=run_id), 10, message="the approval e-mail")
    assert follow(links["approve"], "ok").status_code == 200
    run = status(server, run_id, "failed")
    assert len(received) == 1  # the action ran once
    assert [(entry["step"], entry["status"]) for entry in run["compensations"]] == [("act", "succeeded")]
    assert "step 'record' failed" in run["error"]
    assert cancelled == [{"order": 1, "request": "Buy 3 laptops", "reason": run["error"]}]
