"""The notify action: Apprise delivering to real HTTP servers on loopback, and what PyFlow makes of it."""

from __future__ import annotations

import base64
import json
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

import pytest

from actions.base import ActionError, RunContext
from actions.notify import NotifyAction, url_secrets
from tests.http_server import serving


class Inbox:
    """A loopback HTTP server that records every request; a path starting with /fail answers 500.

    /services/... answers ``ok`` as text, as Slack's incoming webhooks do.
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with inbox._lock:
                    inbox.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = 500 if self.path.startswith("/fail") else 200
                slack = self.path.startswith("/services/")
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if slack else "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if slack else b"{}")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._serving = serving(Handler)

    def __enter__(self) -> Inbox:
        self.port = self._serving.__enter__().server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._serving.__exit__(*exc_info)

    def json(self, index: int = 0) -> dict:
        return json.loads(self.requests[index]["body"])


@pytest.fixture
def inbox():
    with Inbox() as inbox:
        yield inbox


def send(settings: dict | None = None, storage: str = ".", **config) -> dict:
    action = NotifyAction("tell", **config)
    action.context = RunContext(settings=settings or {}, storage_path=storage)
    return action.execute({})


def form_fields(request: dict) -> dict[str, str]:
    """The fields of a form-encoded or multipart body."""
    content_type = request["headers"]["Content-Type"]
    if content_type.startswith("multipart/"):
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + request["body"])
        return {part.get_param("name", header="content-disposition"): part.get_content()
                for part in message.iter_parts() if not part.get_filename()}
    return {key: values[0] for key, values in parse_qs(request["body"].decode()).items()}


def test_json_delivers_title_body_and_type_and_names_the_service_without_its_password(inbox):
    result = send(urls=f"json://bob:pa55word@{inbox.host}/hooks/ops", title="Deploy", body="v2 is *live*")

    assert result == {"sent": [{"service": "JSON", "url": f"json://bob:****@{inbox.host}/hooks/ops"}], "failed": []}
    assert inbox.requests[0]["path"] == "/hooks/ops"
    assert inbox.requests[0]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"bob:pa55word").decode()
    assert {key: inbox.json()[key] for key in ("title", "message", "type")} == {
        "title": "Deploy", "message": "v2 is *live*", "type": "info"}


def test_form_delivers_the_fields_as_a_form(inbox):
    result = send(urls=[f"form://{inbox.host}/form"], title="Backup", body="done in 3 min")
    assert [sent["service"] for sent in result["sent"]] == ["Form"]
    assert inbox.requests[0]["path"] == "/form"
    fields = form_fields(inbox.requests[0])
    assert (fields["title"], fields["message"], fields["type"]) == ("Backup", "done in 3 min", "info")


def test_slack_incoming_webhook_format_reaches_a_server_standing_in_for_slack(inbox, monkeypatch):
    # Apprise posts a Slack webhook to hooks.slack.com only; the test points that fixed base at the local server.
    from apprise.plugins.slack import NotifySlack

    monkeypatch.setattr(NotifySlack, "webhook_url", f"http://{inbox.host}/services")
    token = "T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7"
    result = send(urls=[f"https://hooks.slack.com/services/{token}", f"slack://{token}/#ops"],
                  title="Deploy", body="v2 is live")

    assert len(result["sent"]) == 2 and result["failed"] == []
    assert {sent["url"] for sent in result["sent"]} == {"slack://T...2/A...D/T...7//", "slack://T...2/A...D/T...7/%23ops/"}
    assert [request["path"] for request in inbox.requests] == [f"/services/{token}"] * 2
    payloads = sorted((inbox.json(index) for index in range(2)), key=lambda payload: "channel" in payload)
    # Slack's incoming-webhook payload: attachments with the title and the text, and the channel when named.
    assert payloads[0]["attachments"][0]["title"] == "Deploy"
    assert payloads[0]["attachments"][0]["text"] == "v2 is live"
    assert payloads[1]["channel"] == "#ops"


def test_a_self_hosted_slack_compatible_webhook_mattermost_gets_the_text(inbox):
    result = send(urls=f"mmost://{inbox.host}/hookt0ken", title="Deploy", body="v2 is live")
    assert result["sent"] == [{"service": "Mattermost", "url": f"mmost://{inbox.host}/h...n/"}]
    assert inbox.requests[0]["path"] == "/hooks/hookt0ken"
    assert "v2 is live" in inbox.json()["text"]


def test_markdown_body_is_converted_for_a_service_that_takes_html(inbox):
    send(urls=f"json://{inbox.host}/", body="**bold**", format="markdown")
    send(urls=f"json://{inbox.host}/?format=html", body="**bold**", format="markdown")
    assert inbox.json(0)["message"] == "**bold**"
    assert "<strong>bold</strong>" in inbox.json(1)["message"]


def test_attachments_are_sent_and_paths_are_confined_like_send_email(inbox, tmp_path):
    root = tmp_path / "files"
    root.mkdir()
    (root / "report.txt").write_text("all green")
    result = send({"WORKFLOW_FILES_ROOT": str(root)}, urls=f"json://{inbox.host}/", body="see attached",
                  attach=["report.txt"])
    assert result["failed"] == []
    attachment = inbox.json()["attachments"][0]
    assert attachment["filename"] == "report.txt"
    assert base64.b64decode(attachment["base64"]) == b"all green"

    (tmp_path / "secret.txt").write_text("no")
    with pytest.raises(ActionError, match=r"notify: attach\[0\]") as raised:
        send({"WORKFLOW_FILES_ROOT": str(root)}, urls=f"json://{inbox.host}/", body="x", attach=["../secret.txt"])
    assert not raised.value.retryable
    with pytest.raises(ActionError, match="notify: attachment .*missing.txt not found"):
        send({"WORKFLOW_FILES_ROOT": str(root)}, urls=f"json://{inbox.host}/", body="x", attach="missing.txt")
    assert len(inbox.requests) == 1


def test_one_failed_service_is_named_in_failed_while_the_others_are_sent(inbox):
    result = send(urls=[f"json://{inbox.host}/ok", f"json://u:pw0rd@{inbox.host}/fail"], body="hi")
    assert result["sent"] == [{"service": "JSON", "url": f"json://{inbox.host}/ok"}]
    [failed] = result["failed"]
    assert failed["url"] == f"json://u:****@{inbox.host}/fail"
    assert "500" in failed["error"] and "pw0rd" not in json.dumps(result)


def test_when_nothing_was_sent_the_step_fails_naming_each_service_and_may_be_retried(inbox):
    with pytest.raises(ActionError) as raised:
        send(urls=[f"json://u:pw0rd@{inbox.host}/fail", "json://127.0.0.1:1/"], body="hi")
    message = str(raised.value)
    assert message.startswith("notify: nothing was sent: ")
    assert f"json://u:****@{inbox.host}/fail: " in message and "json://127.0.0.1:1/: " in message
    assert "pw0rd" not in message and "\n" not in message
    assert raised.value.retryable


def test_a_host_in_workflow_http_deny_is_refused_before_anything_is_sent(inbox):
    with pytest.raises(ActionError) as raised:
        send({"WORKFLOW_HTTP_DENY": "127.0.0.0/8"}, urls=[f"json://{inbox.host}/a", f"json://u:pw@{inbox.host}/b"],
             body="hi")
    assert str(raised.value) == (f"notify: json://{inbox.host}/a: 127.0.0.1 resolves to 127.0.0.1, "
                                 "which WORKFLOW_HTTP_DENY refuses")
    assert not raised.value.retryable
    assert inbox.requests == []
    # The default list refuses the cloud metadata address.
    with pytest.raises(ActionError, match="169.254.169.254 resolves to 169.254.169.254, which WORKFLOW_HTTP_DENY"):
        send(urls="json://169.254.169.254/latest", body="hi")


@pytest.mark.parametrize("url", ["slak://T1JJ3T3L2/B0123/s3cr3tT0ken", "json://", "not a url at all"])
def test_a_url_apprise_cannot_read_is_refused_when_the_step_is_built(url):
    with pytest.raises(ValueError, match=r"action 'tell': urls\[1\]: Apprise cannot read the URL") as raised:
        NotifyAction("tell", urls=["json://127.0.0.1/", url], body="hi")
    assert "s3cr3tT0ken" not in str(raised.value)


def test_bad_config_is_refused_when_the_step_is_built():
    with pytest.raises(ValueError, match="format must be one of text, markdown, html"):
        NotifyAction("tell", urls="json://127.0.0.1/", body="hi", format="rtf")
    with pytest.raises(ValueError, match="urls must be an Apprise URL or a list of them"):
        NotifyAction("tell", urls={"a": 1}, body="hi")
    # Templates are checked once rendered.
    NotifyAction("tell", urls="{{ secrets.SLACK }}", body="hi", format="{{ inputs.format }}")


def test_the_secrets_of_a_url_are_its_password_and_the_tokens_apprise_masks():
    assert url_secrets("json://bob:pa55word@example.org/x") == {"pa55word"}
    assert url_secrets("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7") == {
        "T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7"}
    assert url_secrets("https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7") == {
        "T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7"}
    assert url_secrets("ntfy://ntfy.example/topic") == set()
    assert url_secrets("bogus://u:p4ss@h/x") == {"p4ss"}
    assert url_secrets("{{ secrets.SLACK }}") == set()
