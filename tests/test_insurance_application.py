"""insurance_application end to end: uploads and e-mails in, replies out, against real IMAP and SMTP servers."""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from app import create_app, start_app
from tests.conftest import TEST_SETTINGS
from tests.fixtures import wait_until
from tests.imap_server import IMAPServer, free_port, pdf_message
from tests.pdf_factory import (
    FORMS,
    VALID,
    corrupt_pdf,
    empty_file,
    encrypted_pdf,
    form_pdf,
    lines_pdf,
    nested,
    not_a_pdf,
    scanned_pdf,
    text_pdf,
)

WORKFLOW = "/api/workflows/insurance_application"
FOLDER = "Applications"


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def messages(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(e.original_content, policy=policy.default) for e in self.envelopes]


@pytest.fixture
def smtp():
    """A real SMTP server on loopback; ``smtp.settings`` points the app at it."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    inbox.settings = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": controller.port, "SMTP_SECURITY": "none",
                      "MAIL_FROM": "claims@insurer.example"}
    yield inbox
    controller.stop()


@pytest.fixture
def imap():
    """pymap on loopback with an extra folder, for the UIDVALIDITY test."""
    with IMAPServer() as server:
        server.create_folder(FOLDER)
        yield server


@pytest.fixture
def make_app(storage):
    """Builds apps on this test's storage folder with extra settings; shuts them all down afterwards."""
    apps = []

    def make(**settings):
        app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), **settings}))
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["pyflow"].shutdown(timeout=2)


def upload(client, path: Path, **inputs) -> dict:
    """POST the file as a multipart upload and wait for the finished run."""
    data = {"file": (path.open("rb"), path.name, "application/pdf")}
    if inputs:
        data["inputs"] = json.dumps(inputs)
    response = client.post(f"{WORKFLOW}/runs?wait=20", data=data, content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def finished(client, run_id: str) -> dict:
    """The run once it has finished."""
    def done():
        run = client.get(f"/api/runs/{run_id}").get_json()
        return run if run["status"] in ("succeeded", "failed") else None
    return wait_until(done, timeout=20, message=f"run {run_id} finished")


def steps(run: dict) -> dict[str, dict]:
    return {step["name"]: step for step in run["steps"]}


def body_of(message) -> str:
    return message.get_body(("plain",)).get_content().replace("\r\n", "\n")


# -- uploads --------------------------------------------------------------------------------------


def test_valid_upload_is_detected_and_the_reply_arrives_over_smtp(make_app, smtp, tmp_path):
    client = make_app(**smtp.settings)
    run = upload(client, text_pdf(tmp_path / "jane.pdf", "company_a"), reply_to="jane@example.org")

    assert run["status"] == "succeeded", run["error"]
    extract, validate, notify = (steps(run)[name]["result"] for name in ("extract", "validate", "notify"))
    assert extract["template"] == "company_a" and extract["method"] == "text" and extract["source"] == "jane.pdf"
    assert extract["extracted_data"]["full_name"] == "Jane Doe"
    assert validate == {"validation_result": "success", "errors": []}
    assert notify["delivery"] == "smtp" and notify["recipient"] == "jane@example.org"
    assert notify["subject"] == "Application received"

    [envelope] = smtp.envelopes
    assert envelope.rcpt_tos == ["jane@example.org"]
    [message] = smtp.messages()
    assert message["Message-ID"] == notify["message_id"]
    assert message["Date"].datetime is not None
    assert message["Subject"] == "Application received"
    body = body_of(message)
    assert "Full Name: Jane Doe\n" in body and "Date of Birth: 1985-03-15\n" in body
    assert "cannot process" not in body
    assert message["In-Reply-To"] is None and message["References"] is None, "an upload answers no mail"


@pytest.mark.parametrize(
    "make_pdf, company, given",
    [(form_pdf, "company_a", ""), (form_pdf, "company_b", "company_b"), (text_pdf, "company_b", "")],
)
def test_both_templates_from_forms_and_text_with_or_without_company(make_app, storage, tmp_path, make_pdf,
                                                                    company, given):
    client = make_app()  # no SMTP_HOST: the reply is an .eml in the outbox
    run = upload(client, make_pdf(tmp_path / "application.pdf", company), company=given, reply_to="a@example.org")

    assert run["status"] == "succeeded", run["error"]
    extract = steps(run)["extract"]["result"]
    assert extract["template"] == company
    assert extract["method"] == ("form" if make_pdf is form_pdf else "text")
    assert steps(run)["validate"]["result"]["validation_result"] == "success"
    notify = steps(run)["notify"]["result"]
    assert notify["delivery"] == "outbox"
    path = Path(notify["path"])
    assert path.parent == storage.resolve() / "outbox" and path.suffix == ".eml"
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert message["To"] == "a@example.org" and message["Subject"] == "Application received"
    assert message["Message-ID"] == notify["message_id"] and message["Date"].datetime is not None
    # Nested company_b data is listed flat, under the form's own labels.
    expected = "First Name: John\n" if company == "company_b" else "Full Name: Jane Doe\n"
    assert expected in body_of(message)


def test_a_scanned_application_is_read_by_ocr_with_the_typed_ones_fields(make_app, storage, tmp_path, tesseract):
    client = make_app()
    typed = text_pdf(tmp_path / "typed.pdf", "company_a")
    run = upload(client, scanned_pdf(tmp_path / "scan.pdf", typed), reply_to="jane@example.org")

    assert run["status"] == "succeeded", run["error"]
    extract = steps(run)["extract"]["result"]
    assert (extract["template"], extract["method"], extract["ocr_pages"], extract["missing"]) == (
        "company_a", "ocr", [1], [])
    assert extract["extracted_data"] == nested(VALID["company_a"])
    assert steps(run)["validate"]["result"] == {"validation_result": "success", "errors": []}
    message = email.message_from_bytes(Path(steps(run)["notify"]["result"]["path"]).read_bytes(),
                                       policy=policy.default)
    assert message["Subject"] == "Application received"
    assert "Email: jane.doe@example.com\n" in body_of(message)


def test_invalid_application_gets_an_incomplete_reply_listing_each_problem(make_app, tmp_path):
    client = make_app()
    pdf = text_pdf(tmp_path / "john.pdf", "company_b", {
        "personalInfo.dateOfBirth": "15/03/1985",
        "personalInfo.phoneNumber": None,
        "personalInfo.email": "john.smith(at)example",
        "insuranceInfo.policyNumber": None,
        "insuranceInfo.policyType": None,
    })
    run = upload(client, pdf, reply_to="john@example.org")

    assert run["status"] == "succeeded", run["error"]
    validate = steps(run)["validate"]["result"]
    assert validate["validation_result"] == "failure"
    assert {error["path"] for error in validate["errors"]} == {
        "personalInfo.dateOfBirth", "personalInfo.phoneNumber", "personalInfo.email", "insuranceInfo"}
    notify = steps(run)["notify"]["result"]
    assert notify["subject"] == "Application incomplete"
    body = body_of(email.message_from_bytes(Path(notify["path"]).read_bytes(), policy=policy.default))
    problems = [line for line in body.splitlines() if line.startswith("  - ")]
    # In the order of the form and in the form's words; a group left out entirely names its fields.
    assert problems == [
        "  - Date of Birth: must be a date written as YYYY-MM-DD (you wrote 15/03/1985)",
        "  - Phone Number: not filled in",
        "  - Email: must be a valid e-mail address (you wrote john.smith(at)example)",
        "  - Policy Number, Policy Type: not filled in",
    ]
    assert "  Phone Number: (not found)\n" in body
    assert "personalInfo" not in body and "insuranceInfo" not in body


def test_smtp_down_fails_notify_after_the_retries_naming_the_server(make_app, tmp_path):
    port = free_port()
    client = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_SECURITY="none",
                      WORKFLOW_RETRY_COUNT=1, WORKFLOW_RETRY_DELAY=0.01)
    run = upload(client, text_pdf(tmp_path / "a.pdf"), reply_to="jane@example.org")

    assert run["status"] == "failed"
    notify = steps(run)["notify"]
    assert notify["status"] == "failed" and notify["attempts"] == 2
    assert notify["error"] == f"SMTP server 127.0.0.1:{port} refused connection"
    assert run["error"] == f"step 'notify' failed: SMTP server 127.0.0.1:{port} refused connection"
    assert steps(run)["validate"]["status"] == "succeeded"


def unreadable(tmp_path: Path, kind: str) -> Path:
    """An application.pdf that cannot be read, of the given kind."""
    path = tmp_path / "application.pdf"
    if kind == "encrypted":
        return encrypted_pdf(path, user_password="s3cret")
    if kind == "no form":
        return lines_pdf(path, [["Dear Sir or Madam,", "please find my details below."]])
    return {"corrupt": corrupt_pdf, "not a pdf": not_a_pdf, "empty": empty_file}[kind](path)


@pytest.mark.parametrize(("kind", "line"), [
    ("corrupt", "We could not read your application application.pdf: "),
    ("encrypted", "We could not read your application application.pdf: it is protected by a password."),
    ("not a pdf", "We could not read your application application.pdf: not a PDF file (no %PDF header)."),
    ("empty", "We could not read your application application.pdf: the file is empty."),
    ("no form", "We could not read your application application.pdf: it is not one of our application forms."),
])
def test_an_unreadable_pdf_gets_a_reply_saying_so_and_the_run_fails_with_the_cause(make_app, smtp, tmp_path,
                                                                                    kind, line):
    client = make_app(**smtp.settings)
    run = upload(client, unreadable(tmp_path, kind), reply_to="jane@example.org")

    # The application was not processed: the run fails with extract's error, and the handler's reply is recorded.
    assert run["status"] == "failed"
    extract = steps(run)["extract"]
    assert extract["status"] == "failed" and extract["attempts"] == 1  # damage does not heal on retry
    assert run["error"] == f"step 'extract' failed: {extract['error']}"
    assert [steps(run)[name]["status"] for name in ("validate", "notify")] == ["pending", "pending"]
    reply = steps(run)["unreadable"]
    assert reply["status"] == "succeeded"
    assert reply["result"]["recipient"] == "jane@example.org"

    [message] = smtp.messages()
    assert message["Subject"] == "We could not read your application"
    assert message["Message-ID"] == reply["result"]["message_id"]
    body = body_of(message)
    [said] = [text for text in body.splitlines() if text.startswith("We could not read your application")]
    assert said.startswith(line) and said.endswith(".")
    assert "Traceback" not in body and "known templates" not in body and str(tmp_path) not in body
    assert f"Reference: {run['id']}" in body


def test_an_upload_without_a_pdf_gets_a_reply_naming_what_came(make_app, smtp, tmp_path):
    client = make_app(**smtp.settings)
    letter = tmp_path / "letter.docx"
    letter.write_bytes(b"PK\x03\x04 a word document")
    response = client.post(f"{WORKFLOW}/runs?wait=20", content_type="multipart/form-data", data={
        "file": (letter.open("rb"), letter.name, "application/msword"), "inputs": json.dumps({"reply_to": "a@ex.org"})})
    run = response.get_json()

    assert run["status"] == "failed"
    assert run["error"] == "step 'extract' failed: no PDF attachment among: letter.docx"
    [message] = smtp.messages()
    assert "We could not read your application: no PDF was attached (we received letter.docx).\n" in body_of(message)


def test_a_readable_application_sends_no_unreadable_reply(make_app, smtp, tmp_path):
    client = make_app(**smtp.settings)
    run = upload(client, text_pdf(tmp_path / "a.pdf"), reply_to="jane@example.org")
    assert run["status"] == "succeeded"
    assert steps(run)["unreadable"]["status"] == "skipped"
    assert [message["Subject"] for message in smtp.messages()] == ["Application received"]


def test_a_form_sent_back_blank_is_incomplete_not_read_from_its_labels(make_app, tmp_path):
    client = make_app()
    run = upload(client, form_pdf(tmp_path / "blank.pdf", "company_a", filled=False), reply_to="a@example.org")

    assert run["status"] == "succeeded", run["error"]
    assert steps(run)["extract"]["result"]["extracted_data"] == {}
    notify = steps(run)["notify"]["result"]
    assert notify["subject"] == "Application incomplete"
    body = body_of(email.message_from_bytes(Path(notify["path"]).read_bytes(), policy=policy.default))
    assert [line for line in body.splitlines() if line.startswith("  - ")] == [
        f"  - {label.rstrip(':')}: not filled in" for _, label, _ in FORMS["company_a"][1]]
    assert "Submit" not in body


def test_a_day_that_does_not_exist_is_named_in_the_reply(make_app, tmp_path):
    client = make_app()
    run = upload(client, text_pdf(tmp_path / "a.pdf", overrides={"date_of_birth": "2021-02-30"}),
                 reply_to="a@example.org")
    notify = steps(run)["notify"]["result"]
    body = body_of(email.message_from_bytes(Path(notify["path"]).read_bytes(), policy=policy.default))
    assert [line for line in body.splitlines() if line.startswith("  - ")] == [
        "  - Date of Birth: 2021-02-30 is not a valid date: day is out of range for month"]


def test_without_a_recipient_notify_is_skipped(make_app, storage, tmp_path):
    client = make_app()
    run = upload(client, text_pdf(tmp_path / "a.pdf"))

    assert run["status"] == "succeeded"
    assert steps(run)["notify"]["status"] == "skipped"
    assert not (storage / "outbox").exists()


@pytest.mark.parametrize("inputs, path", [
    ({"company": "company_z"}, "company"),
    ({"reply_to": "not an address"}, "reply_to"),
    ({"replyto": "jane@example.org"}, "inputs"),
])
def test_bad_inputs_answer_422(make_app, tmp_path, inputs, path):
    client = make_app()
    response = client.post(f"{WORKFLOW}/runs", json={"inputs": inputs})
    assert response.status_code == 422
    assert [problem["path"] for problem in response.get_json()["error"]["details"]] == [path]


def test_without_imap_host_uploads_work_but_start_answers_409(make_app):
    client = make_app()
    summary = client.get(WORKFLOW).get_json()
    assert summary["trigger"]["type"] == "email"
    assert "IMAP_HOST is not set" in summary["error"]
    response = client.post(f"{WORKFLOW}/start")
    assert response.status_code == 409
    assert "IMAP_HOST is not set" in response.get_json()["error"]["message"]


# -- e-mail ---------------------------------------------------------------------------------------


def application_mail(tmp_path: Path, sender: str, subject: str, company: str = "company_a", **options):
    """A message from ``sender`` with a real application PDF attached."""
    pdf = text_pdf(tmp_path / f"{company}.pdf", company).read_bytes()
    return pdf_message(subject=subject, sender=sender,
                       attachments=[("application.pdf", pdf, "application/pdf")], **options)


def test_poll_runs_one_workflow_per_pdf_mail_and_replies_to_the_sender(make_app, imap, smtp, storage, tmp_path):
    first = imap.append(application_mail(tmp_path, "Alice Applicant <alice@example.org>", "My application"))
    plain = imap.append(pdf_message(subject="Just a question", sender="carol@example.org", attachments=()))
    second = imap.append(application_mail(tmp_path, "bob@example.org", "Form B", "company_b"))
    client = make_app(**imap.settings(storage), **smtp.settings)

    response = client.post(f"{WORKFLOW}/poll")
    assert response.status_code == 200
    runs = [finished(client, run["id"]) for run in response.get_json()["runs"]]

    assert [run["trigger_data"]["subject"] for run in runs] == ["My application", "Form B"]
    assert all(run["status"] == "succeeded" for run in runs), [run["error"] for run in runs]
    assert sorted(e.rcpt_tos[0] for e in smtp.envelopes) == ["alice@example.org", "bob@example.org"]
    assert {m["Subject"] for m in smtp.messages()} == {"Application received"}
    assert "\\Seen" in imap.flags(first) and "\\Seen" in imap.flags(second)
    assert "\\Seen" not in imap.flags(plain)  # no run: left for a human

    assert client.post(f"{WORKFLOW}/poll").get_json()["runs"] == []
    assert len(smtp.envelopes) == 2


def test_the_reply_threads_with_the_applicants_mail(make_app, imap, smtp, storage, tmp_path):
    applicant_id = "<application-42@alice.example>"
    imap.append(application_mail(tmp_path, "alice@example.org", "My application", message_id=applicant_id))
    client = make_app(**imap.settings(storage), **smtp.settings)

    [run] = [finished(client, run["id"]) for run in client.post(f"{WORKFLOW}/poll").get_json()["runs"]]

    assert run["status"] == "succeeded", run["error"]
    [reply] = smtp.messages()
    assert reply["To"] == "alice@example.org"
    assert reply["In-Reply-To"] == applicant_id
    assert reply["References"] == applicant_id
    assert reply["Message-ID"] != applicant_id


def test_a_mailed_pdf_that_cannot_be_read_gets_a_reply_to_the_sender(make_app, imap, smtp, storage, tmp_path):
    mail = pdf_message(subject="My application", sender="Alice Applicant <alice@example.org>",
                       attachments=[("scan.pdf", b"%PDF-1.7\n\x00 not really a PDF", "application/pdf")])
    imap.append(mail)
    client = make_app(**imap.settings(storage), **smtp.settings)

    [run] = [finished(client, run["id"]) for run in client.post(f"{WORKFLOW}/poll").get_json()["runs"]]

    assert run["status"] == "failed"
    assert run["error"].startswith("step 'extract' failed: cannot read PDF scan.pdf: ")
    assert steps(run)["unreadable"]["status"] == "succeeded"
    [envelope] = smtp.envelopes
    assert envelope.rcpt_tos == ["alice@example.org"]
    [message] = smtp.messages()
    assert message["Subject"] == "We could not read your application"
    assert "We could not read your application scan.pdf: " in body_of(message)
    assert message["In-Reply-To"] == mail["Message-ID"]  # it threads like the other replies


def test_the_reply_goes_to_the_mails_reply_to_address_when_it_has_one(make_app, imap, smtp, storage, tmp_path):
    mail = application_mail(tmp_path, "Office <noreply@broker.example>", "Application for Dana")
    mail["Reply-To"] = "dana@example.org"
    imap.append(mail)
    client = make_app(**imap.settings(storage), **smtp.settings)

    runs = [finished(client, run["id"]) for run in client.post(f"{WORKFLOW}/poll").get_json()["runs"]]

    assert runs[0]["trigger_data"]["reply_to"] == "dana@example.org"
    assert [e.rcpt_tos for e in smtp.envelopes] == [["dana@example.org"]]


def test_a_restart_processes_only_the_new_mail_exactly_once(make_app, imap, smtp, storage, tmp_path):
    settings = {**imap.settings(storage), **smtp.settings}
    imap.append(application_mail(tmp_path, "alice@example.org", "before"))
    first = make_app(**settings)
    [run] = first.post(f"{WORKFLOW}/poll").get_json()["runs"]
    finished(first, run["id"])
    first.application.extensions["pyflow"].shutdown(timeout=2)

    imap.append(application_mail(tmp_path, "bob@example.org", "after"))
    second = make_app(**settings)
    runs = second.post(f"{WORKFLOW}/poll").get_json()["runs"]
    assert [run["trigger_data"]["subject"] for run in runs] == ["after"]
    finished(second, runs[0]["id"])
    assert second.post(f"{WORKFLOW}/poll").get_json()["runs"] == []
    assert [e.rcpt_tos for e in smtp.envelopes] == [["alice@example.org"], ["bob@example.org"]]


def test_started_workflow_watches_the_mailbox_until_stopped(make_app, imap, smtp, storage, tmp_path):
    client = make_app(**{**imap.settings(storage), "EMAIL_POLL_INTERVAL": 0.5}, **smtp.settings)
    response = client.post(f"{WORKFLOW}/start")
    assert response.status_code == 200 and response.get_json()["status"] == "running"

    imap.append(application_mail(tmp_path, "alice@example.org", "while running"))
    wait_until(lambda: smtp.envelopes, timeout=15, message="the reply at the SMTP server")
    assert smtp.envelopes[0].rcpt_tos == ["alice@example.org"]

    assert client.post(f"{WORKFLOW}/stop").get_json()["status"] == "stopped"
    [run] = client.get("/api/runs?workflow=insurance_application").get_json()["runs"]
    assert run["source"] == "email", "a mail brought the event"


def test_imap_login_failure_answers_502_and_shows_in_the_summary(make_app, imap, storage):
    client = make_app(**{**imap.settings(storage), "IMAP_PASSWORD": "wrong"})

    response = client.post(f"{WORKFLOW}/poll")
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "trigger_failed"
    assert f"IMAP login failed for bob at 127.0.0.1:{imap.port}" in error["message"]
    last_poll = client.get(WORKFLOW).get_json()["last_poll"]
    assert f"IMAP login failed for bob at 127.0.0.1:{imap.port}" in last_poll["error"]
    assert "wrong" not in json.dumps(client.get(WORKFLOW).get_json())


def test_a_rebuilt_folder_processes_nothing_twice(make_app, imap, smtp, storage, tmp_path):
    client = make_app(**imap.settings(storage, folder=FOLDER), **smtp.settings)
    old = application_mail(tmp_path, "alice@example.org", "old", message_id="<old@test.example>")
    imap.append(old, FOLDER)
    [run] = client.post(f"{WORKFLOW}/poll").get_json()["runs"]
    finished(client, run["id"])

    imap.recreate_folder(FOLDER)  # a new UIDVALIDITY: every UID now names another message
    imap.append(old, FOLDER)  # the same message again, e.g. restored from a backup
    imap.append(application_mail(tmp_path, "bob@example.org", "new"), FOLDER)
    runs = client.post(f"{WORKFLOW}/poll").get_json()["runs"]
    assert [run["trigger_data"]["subject"] for run in runs] == ["new"]
    finished(client, runs[0]["id"])
    assert client.post(f"{WORKFLOW}/poll").get_json()["runs"] == []
    assert [e.rcpt_tos for e in smtp.envelopes] == [["alice@example.org"], ["bob@example.org"]]
