"""EmailTrigger against a real IMAP server (pymap) on loopback."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

import triggers.email as email_trigger
from tests.imap_server import PDF_BYTES, IMAPServer, RefusingProxy, StallingProxy, TLSProxy, free_port, pdf_message
from triggers.email import FETCH_REFUSALS, EmailTrigger, EmailTriggerError

FOLDER = "Applications"


@pytest.fixture
def imap_server() -> Iterator[IMAPServer]:
    with IMAPServer() as server:
        server.create_folder(FOLDER)
        yield server


@pytest.fixture
def make_trigger(imap_server: IMAPServer, tmp_path: Path) -> Iterator[Callable[..., EmailTrigger]]:
    """Builds set-up triggers on the test server's FOLDER; closes them all afterwards."""
    made: list[EmailTrigger] = []

    def make(state: dict | None = None, settings: dict | None = None, **options) -> EmailTrigger:
        trigger = EmailTrigger("inbox", **options)
        trigger.setup({**imap_server.settings(tmp_path, folder=FOLDER), **(settings or {})})
        # As the runtime does: state goes through the JSON store between restarts.
        trigger.state = json.loads(json.dumps(state or {}))
        made.append(trigger)
        return trigger

    yield make
    for trigger in made:
        trigger.close()


def acknowledge_all(trigger: EmailTrigger, events: list[dict]) -> None:
    for number, event in enumerate(events):
        trigger.acknowledge(event, f"run_{number}")


def subjects(events: list[dict]) -> list[str]:
    return [event["subject"] for event in events]


def test_first_poll_takes_only_unread_messages(imap_server, make_trigger):
    imap_server.append(pdf_message(subject="old, read"), FOLDER, seen=True)
    imap_server.append(pdf_message(subject="unread"), FOLDER)
    imap_server.append(pdf_message(subject="newer, read"), FOLDER, seen=True)
    trigger = make_trigger()

    events = trigger.poll()
    assert subjects(events) == ["unread"]
    acknowledge_all(trigger, events)
    assert trigger.poll() == []


def test_mail_after_the_first_poll_is_an_event_read_or_not(imap_server, make_trigger):
    trigger = make_trigger()
    assert trigger.poll() == []
    imap_server.append(pdf_message(subject="one"), FOLDER)
    imap_server.append(pdf_message(subject="two, already read"), FOLDER, seen=True)

    assert subjects(trigger.poll()) == ["one", "two, already read"]


def test_message_without_attachment_is_skipped_and_left_unread(imap_server, make_trigger, caplog):
    trigger = make_trigger()
    trigger.poll()
    plain = imap_server.append(pdf_message(subject="just text", attachments=()), FOLDER)
    picture = imap_server.append(
        pdf_message(subject="a photo", attachments=[("cat.png", b"\x89PNG", "image/png")]), FOLDER
    )
    caplog.set_level("INFO", logger="triggers.email")

    assert trigger.poll() == []
    assert trigger.poll() == []  # the cursor moved past them
    assert imap_server.flags(plain, FOLDER) == set()
    assert imap_server.flags(picture, FOLDER) == set()
    assert "skipped UID" in caplog.text and "no application/pdf attachment; left unread" in caplog.text


def test_a_message_larger_than_email_max_mb_is_never_fetched_and_left_unread(imap_server, make_trigger, caplog):
    trigger = make_trigger(settings={"EMAIL_MAX_MB": 0.05})  # 52 KB
    trigger.poll()
    large = [("big.pdf", b"%PDF-1.4\n" + b"x" * 80_000, "application/pdf")]  # 108 KB once base64-encoded
    big = imap_server.append(pdf_message(subject="too big", attachments=large), FOLDER)
    imap_server.append(pdf_message(subject="small"), FOLDER)
    caplog.set_level("WARNING", logger="triggers.email")

    events = trigger.poll()
    assert subjects(events) == ["small"]
    acknowledge_all(trigger, events)
    assert trigger.poll() == []  # the cursor moved past it: it is not looked at again
    assert imap_server.flags(big, FOLDER) == set()
    assert f"skipped UID {big} in {FOLDER}: 0.1 MB, larger than EMAIL_MAX_MB (0.05); left unread" in caplog.text


def test_fetched_but_unacknowledged_messages_come_again(imap_server, make_trigger):
    imap_server.append(pdf_message(subject="A"), FOLDER)
    imap_server.append(pdf_message(subject="no attachment", attachments=()), FOLDER)
    imap_server.append(pdf_message(subject="B"), FOLDER)
    trigger = make_trigger()
    first = trigger.poll()

    # The process dies before any run was stored: the saved state is what it was after the poll.
    again = trigger.poll()
    after_restart = make_trigger(state=trigger.state).poll()

    assert subjects(first) == subjects(again) == subjects(after_restart) == ["A", "B"]
    assert [trigger.event_key(e) for e in first] == [trigger.event_key(e) for e in after_restart]


def test_a_run_stored_out_of_order_loses_the_earlier_event_nothing(imap_server, make_trigger):
    imap_server.append(pdf_message(subject="A"), FOLDER)
    imap_server.append(pdf_message(subject="B"), FOLDER)
    trigger = make_trigger()
    events = trigger.poll()
    trigger.acknowledge(events[1], "run_b")  # A's run failed to store, B's did

    assert subjects(make_trigger(state=trigger.state).poll()) == ["A"]


def test_acknowledged_messages_never_come_again_also_after_a_restart(imap_server, make_trigger):
    imap_server.append(pdf_message(subject="A"), FOLDER)
    imap_server.append(pdf_message(subject="B"), FOLDER)
    trigger = make_trigger()
    acknowledge_all(trigger, trigger.poll())

    assert trigger.poll() == []
    restarted = make_trigger(state=trigger.state)
    assert restarted.poll() == []
    imap_server.append(pdf_message(subject="C"), FOLDER)
    assert subjects(restarted.poll()) == ["C"]


def test_acknowledge_replaces_state_values_instead_of_changing_them_in_place(imap_server, make_trigger):
    imap_server.append(pdf_message(), FOLDER)
    trigger = make_trigger()
    [event] = trigger.poll()
    before = dict(trigger.state)  # the runtime saves the state when it differs from such a shallow copy

    trigger.acknowledge(event, "run_1")

    assert before["pending"] == [event["imap"]["uid"]] and trigger.state["pending"] == []


def test_fetching_leaves_unread_and_acknowledge_marks_seen(imap_server, make_trigger):
    uid = imap_server.append(pdf_message(), FOLDER)
    trigger = make_trigger()
    [event] = trigger.poll()
    assert imap_server.flags(uid, FOLDER) == set()

    trigger.acknowledge(event, "run_1")

    assert imap_server.flags(uid, FOLDER) == {"\\Seen"}


def test_a_server_gone_after_the_fetch_costs_one_failed_flag_per_poll_not_one_per_message(
        imap_server, make_trigger, caplog):
    # The mail host went down (a reboot) between the fetch and the runs: every acknowledgement waited out
    # its own connection timeout, so a poll of 100 messages held the mailbox for 100 timeouts.
    for number in range(3):
        imap_server.append(pdf_message(subject=f"message {number}"), FOLDER)
    trigger = make_trigger(settings={"WORKFLOW_POLL_TIMEOUT": 0.3})
    events = trigger.poll()
    imap_server.stop()
    with socket.create_server(("127.0.0.1", imap_server.port)) as hung:  # accepts, then never answers
        acknowledge_all(trigger, events)
        hung.setblocking(False)
        attempts = []
        with contextlib.suppress(BlockingIOError):
            while True:
                attempts.append(hung.accept()[0])
        for connection in attempts:
            connection.close()
    assert len(attempts) == 1, "one try to flag, then the rest of the poll's messages stay unread"
    assert caplog.text.count("could not mark UID") == 1
    uids = [event["imap"]["uid"] for event in events]
    assert trigger.state["last_uid"] == max(uids) and trigger.state["pending"] == [], "the cursor moved all the same"


def test_changed_uidvalidity_neither_loses_nor_duplicates(imap_server, make_trigger, caplog):
    handled = pdf_message(subject="handled", message_id="<handled@test>")
    owed = pdf_message(subject="fetched, run not stored", message_id="<owed@test>")
    imap_server.append(handled, FOLDER)
    imap_server.append(owed, FOLDER)
    trigger = make_trigger()
    trigger.acknowledge(trigger.poll()[0], "run_1")
    old_uidvalidity = trigger.state["uidvalidity"]

    # The folder is rebuilt (a migration that drops flags): same messages, new UIDs, one new message.
    # Deleting it also ends the trigger's open session, which must reconnect by itself.
    new_uidvalidity = imap_server.recreate_folder(FOLDER)
    handled_again = imap_server.append(handled, FOLDER)
    imap_server.append(owed, FOLDER)
    imap_server.append(pdf_message(subject="arrived meanwhile"), FOLDER)
    events = trigger.poll()

    assert subjects(events) == ["fetched, run not stored", "arrived meanwhile"]
    assert {event["imap"]["uidvalidity"] for event in events} == {new_uidvalidity} != {old_uidvalidity}
    assert "UIDVALIDITY" in caplog.text and "changed" in caplog.text
    assert imap_server.flags(handled_again, FOLDER) == {"\\Seen"}  # it had its run: it reads as handled
    acknowledge_all(trigger, events)
    assert make_trigger(state=trigger.state).poll() == []


def test_event_shape_and_attachment_files(imap_server, make_trigger, tmp_path):
    second = b"%PDF-1.7 second file, sent as octet-stream"
    uid = imap_server.append(
        pdf_message(
            subject="Application =?",
            sender="Jürgen Example <juergen@example.org>",
            text="Hello,\nsee attached.",
            message_id="<app-1@example.org>",
            attachments=[
                ("application.pdf", PDF_BYTES, "application/pdf"),
                ("scan.pdf", second, "application/octet-stream"),
                ("photo.png", b"\x89PNG", "image/png"),
            ],
        ),
        FOLDER,
    )
    trigger = make_trigger()

    [event] = trigger.poll()

    uidvalidity = imap_server.uidvalidity(FOLDER)
    assert {key: event[key] for key in ("from", "subject", "date", "message_id", "imap")} == {
        "from": "Jürgen Example <juergen@example.org>",
        "subject": "Application =?",
        "date": "2026-01-01T09:00:00Z",
        "message_id": "<app-1@example.org>",
        "imap": {"uid": uid, "uidvalidity": uidvalidity, "folder": FOLDER},
    }
    assert event["text"] == "Hello,\nsee attached.\n"
    assert [(a["filename"], a["content_type"], a["size"]) for a in event["attachments"]] == [
        ("application.pdf", "application/pdf", len(PDF_BYTES)),
        ("scan.pdf", "application/pdf", len(second)),
    ]
    paths = [Path(a["path"]) for a in event["attachments"]]
    assert [path.read_bytes() for path in paths] == [PDF_BYTES, second]
    assert paths[0].parent.parent == (tmp_path / "attachments").resolve()
    assert sorted(p.name for p in paths[0].parent.iterdir()) == ["application.pdf", "scan.pdf"]  # no temp files
    assert trigger.event_key(event) == f"imap:{FOLDER}:{uidvalidity}:{uid}"
    json.dumps(event)


def test_html_only_body_gives_its_text_and_a_bad_date_stays_as_written(imap_server, make_trigger):
    message = pdf_message(date="Thu, 01 Jan 2026 10:00:00 +0100", attachments=())
    message.set_content("<html><style>p {}</style><p>Dear team,</p><p>my form &amp; ID.</p></html>", subtype="html")
    message.add_attachment(PDF_BYTES, maintype="application", subtype="pdf", filename="form.pdf")
    # EmailMessage refuses to write a Date it cannot parse; some mailers do.
    raw = message.as_bytes().replace(b"Date: Thu, 01 Jan 2026 10:00:00 +0100", b"Date: sometime last week")
    imap_server.append(raw, FOLDER)

    [event] = make_trigger().poll()

    assert event["text"] == "Dear team,\nmy form & ID."
    assert event["date"] == "sometime last week"


@pytest.mark.parametrize(
    ("hostile", "saved"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\evil.pdf", "evil.pdf"),
        ("..", "attachment-1.pdf"),
        ("/abs/.hidden.pdf", "hidden.pdf"),
    ],
)
def test_hostile_file_names_stay_inside_the_message_folder(imap_server, make_trigger, tmp_path, hostile, saved):
    imap_server.append(pdf_message(attachments=[(hostile, PDF_BYTES, "application/pdf")]), FOLDER)

    [event] = make_trigger().poll()

    [attachment] = event["attachments"]
    path = Path(attachment["path"])
    assert attachment["filename"] == path.name == saved
    assert path.resolve().parent.parent == (tmp_path / "attachments").resolve()
    assert path.read_bytes() == PDF_BYTES


def test_two_attachments_with_one_name_both_kept(imap_server, make_trigger):
    imap_server.append(
        pdf_message(attachments=[("a.pdf", b"%PDF-1", "application/pdf"), ("a.pdf", b"%PDF-2", "application/pdf")]),
        FOLDER,
    )

    [event] = make_trigger().poll()

    assert [(a["filename"], Path(a["path"]).read_bytes()) for a in event["attachments"]] == [
        ("a.pdf", b"%PDF-1"),
        ("a-2.pdf", b"%PDF-2"),
    ]


def test_attachment_types_accept_wildcards(imap_server, make_trigger):
    imap_server.append(pdf_message(attachments=[("cat.png", b"\x89PNG", "image/png")]), FOLDER)

    [event] = make_trigger(attachment_types=["image/*"]).poll()

    assert event["attachments"][0]["content_type"] == "image/png"


def test_login_failure_names_user_server_and_cause(imap_server, make_trigger):
    trigger = make_trigger(password="wrong")

    with pytest.raises(EmailTriggerError) as error:
        trigger.poll()

    assert str(error.value) == (
        f"IMAP login failed for bob at 127.0.0.1:{imap_server.port}: "
        "[AUTHENTICATIONFAILED] Invalid authentication credentials."
    )


def test_server_down_is_unreachable(tmp_path):
    port = free_port()
    trigger = EmailTrigger("inbox", host="127.0.0.1", port=port, user="bob", security="none")
    trigger.setup({"WORKFLOW_STORAGE_PATH": str(tmp_path)})

    with pytest.raises(EmailTriggerError) as error:
        trigger.poll()

    assert str(error.value) == f"IMAP server 127.0.0.1:{port} unreachable: [Errno 111] Connection refused"


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ("starttls", "STARTTLS with IMAP server 127.0.0.1:{port} failed: TLS not supported by server"),
        ("ssl", "TLS with IMAP server 127.0.0.1:{port} failed: [SSL: WRONG_VERSION_NUMBER] wrong version number"),
    ],
)
def test_tls_failures_name_the_server(imap_server, make_trigger, security, message):
    trigger = make_trigger(security=security)  # the test server speaks plain IMAP only

    with pytest.raises(EmailTriggerError) as error:
        trigger.poll()

    assert str(error.value).startswith(message.format(port=imap_server.port))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> tuple[str, str, str]:
    """(certificate chain, key, CA bundle) PEM files: a certificate for 127.0.0.1 from a private CA."""
    issued = ca.issue_cert("127.0.0.1", "localhost")
    chain, key, bundle = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(bundle))
    return str(chain), str(key), str(bundle)


def poll_once(settings: dict, **options) -> list[dict]:
    trigger = EmailTrigger("inbox", **options)
    # The test's folder (the storage) holds the CA files: the files root the trigger may read them from.
    trigger.setup({"WORKFLOW_FILES_ROOT": settings["WORKFLOW_STORAGE_PATH"], **settings})
    try:
        return trigger.poll()
    finally:
        trigger.close()


def test_starttls_with_a_private_ca(tls_files, tmp_path):
    chain, key, bundle = tls_files
    with IMAPServer(tls=(chain, key)) as server:
        server.create_folder(FOLDER)
        server.append(pdf_message(subject="over STARTTLS"), FOLDER)
        events = poll_once(server.settings(tmp_path, folder=FOLDER), security="starttls", ca_file=bundle)
    assert subjects(events) == ["over STARTTLS"]


@pytest.mark.slow  # seconds of TLS set-up with a private CA
def test_implicit_tls_with_a_private_ca(imap_server, tls_files, tmp_path):
    chain, key, bundle = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain, key)
    imap_server.append(pdf_message(subject="over TLS"), FOLDER)
    with TLSProxy(imap_server.port, context) as proxy:
        settings = {**imap_server.settings(tmp_path, folder=FOLDER), "IMAP_PORT": proxy.port, "IMAP_SSL": True}
        events = poll_once(settings, ca_file=bundle)  # IMAP_SSL: implicit TLS, the default
    assert subjects(events) == ["over TLS"]


def test_an_untrusted_certificate_is_named(tls_files, tmp_path):
    chain, key, _ = tls_files
    with IMAPServer(tls=(chain, key)) as server:
        with pytest.raises(EmailTriggerError) as error:
            poll_once(server.settings(tmp_path), security="starttls")  # the system's CAs do not know ours
    assert str(error.value).startswith(f"STARTTLS with IMAP server 127.0.0.1:{server.port} failed: "
                                       "[SSL: CERTIFICATE_VERIFY_FAILED]")


def test_an_unreadable_ca_file_is_named(imap_server, tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(EmailTriggerError) as error:
        poll_once(imap_server.settings(tmp_path), security="starttls", ca_file=str(missing))
    reason = "[Errno 2] No such file or directory"
    assert str(error.value) == f"email trigger 'inbox': cannot read ca_file {missing}: {reason}"


def test_a_hung_server_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(email_trigger, "TIMEOUT", 0.3)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts connections, never greets
        port = listener.getsockname()[1]
        trigger = EmailTrigger("inbox", host="127.0.0.1", port=port, user="bob", security="none")
        trigger.setup({"WORKFLOW_STORAGE_PATH": str(tmp_path)})

        with pytest.raises(EmailTriggerError, match=rf"^IMAP server 127.0.0.1:{port} unreachable: timed out$"):
            trigger.poll()


def test_missing_folder_is_named(make_trigger, imap_server):
    trigger = make_trigger(folder="Nope")

    with pytest.raises(EmailTriggerError) as error:
        trigger.poll()

    assert str(error.value) == (
        f"cannot open IMAP folder 'Nope' at 127.0.0.1:{imap_server.port}: [NONEXISTENT] Mailbox does not exist."
    )


def test_reconnects_after_the_server_dropped_the_connection_and_after_close(imap_server, make_trigger):
    trigger = make_trigger(folder="INBOX")
    acknowledge_all(trigger, trigger.poll())
    imap_server.restart()  # kills the open session; INBOX comes back empty, with a new UIDVALIDITY
    imap_server.append(pdf_message(subject="after restart"))

    assert subjects(trigger.poll()) == ["after restart"]
    trigger.close()
    imap_server.append(pdf_message(subject="after close"))
    assert subjects(trigger.poll()) == ["after restart", "after close"]

    imap_server.stop()
    with pytest.raises(EmailTriggerError, match=r"unreachable: \[Errno 111\] Connection refused"):
        trigger.poll()


def test_closing_a_connection_to_a_server_gone_silent_does_not_wait_out_the_poll_timeout(
        imap_server, tmp_path, monkeypatch):
    # /stop and the server's shutdown close the trigger: LOGOUT to a host that vanished without closing the
    # connection waited for its answer as long as a poll may take (WORKFLOW_POLL_TIMEOUT), past the shutdown grace.
    monkeypatch.setattr(email_trigger, "LOGOUT_TIMEOUT", 0.2)
    with StallingProxy(imap_server.port) as proxy:
        trigger = EmailTrigger("inbox")
        trigger.setup({**imap_server.settings(tmp_path), "IMAP_PORT": proxy.port, "WORKFLOW_POLL_TIMEOUT": 3600})
        assert trigger.poll() == []  # logged in, the folder selected: the connection stays open between polls
        proxy.stall()
        closing = threading.Thread(target=trigger.close)
        closing.start()
        closing.join(30)
        assert not closing.is_alive(), "close() still waits for the silent server's answer to LOGOUT"


def test_non_ascii_folder_and_password(tmp_path):
    with IMAPServer(password="sécret") as server:
        server.create_folder("Antr&AOQ-ge 2026")  # "Anträge 2026" in modified UTF-7
        server.append(pdf_message(subject="Antrag"), "Antr&AOQ-ge 2026")
        trigger = EmailTrigger("inbox", folder="Anträge 2026")
        trigger.setup(server.settings(tmp_path))
        try:
            assert subjects(trigger.poll()) == ["Antrag"]
        finally:
            trigger.close()


def test_setup_takes_unset_options_from_settings(tmp_path):
    trigger = EmailTrigger("inbox", password="hunter2")
    trigger.setup(
        {
            "IMAP_HOST": "mail.example.org",
            "IMAP_PORT": 993,
            "IMAP_USER": "bob",
            "IMAP_PASSWORD": "x",
            "IMAP_SSL": True,
            "EMAIL_POLL_INTERVAL": 45.0,
            "WORKFLOW_STORAGE_PATH": str(tmp_path),
        }
    )

    described = trigger.describe()
    assert described["type"] == "email"
    assert {k: described[k] for k in ("host", "port", "user", "folder", "security")} == {
        "host": "mail.example.org",
        "port": 993,
        "user": "bob",
        "folder": "INBOX",
        "security": "ssl",
    }
    assert "hunter2" not in json.dumps(described) and "password" not in described
    assert trigger.default_check_interval == 45.0
    assert EmailTrigger("x", poll_interval=5).default_check_interval == 5.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"IMAP_USER": "bob"}, "email trigger 'inbox': IMAP_HOST is not set"),
        ({"IMAP_HOST": "mail.example.org", "IMAP_USER": ""}, "email trigger 'inbox': IMAP_USER is not set"),
        ({"IMAP_HOST": "h", "IMAP_USER": "u", "IMAP_PORT": "imap"}, "port must be a port number, got 'imap'"),
    ],
)
def test_setup_names_what_is_missing(settings, message):
    with pytest.raises(ValueError, match=message):
        EmailTrigger("inbox").setup(settings)


@pytest.mark.parametrize("options", [{"security": "tls"}, {"poll_interval": 0}])
def test_constructor_rejects_bad_options(options):
    with pytest.raises(ValueError, match="email trigger 'inbox'"):
        EmailTrigger("inbox", **options)


# -- IMAP_PASSWORD goes only to the mailbox it was configured for ------------------------------------------


@pytest.mark.parametrize(("options", "field"), [
    ({"host": "localhost"}, "host"),
    ({"port": "OTHER"}, "port"),
    ({"user": "mallory"}, "user"),
])
def test_a_trigger_naming_its_own_mailbox_must_bring_its_own_password(imap_server, tmp_path, options, field):
    settings = imap_server.settings(tmp_path, folder=FOLDER)
    options = {key: (free_port() if value == "OTHER" else value) for key, value in options.items()}
    trigger = EmailTrigger("inbox", **options)
    with pytest.raises(ValueError) as caught:
        trigger.setup(settings)
    message = str(caught.value)
    assert message.startswith(f"email trigger 'inbox': {field} ")
    assert "must bring its own password" in message and imap_server.password not in message


def test_plain_imap_where_the_settings_say_tls_must_bring_its_own_password(imap_server, tmp_path):
    settings = {**imap_server.settings(tmp_path), "IMAP_SSL": True}
    with pytest.raises(ValueError, match=r"^email trigger 'inbox': security 'none' differs from the IMAP_\* settings"):
        EmailTrigger("inbox", security="none").setup(settings)


def test_the_configured_mailbox_written_out_keeps_the_configured_password(imap_server, tmp_path):
    imap_server.append(pdf_message(subject="same mailbox"), FOLDER)
    settings = imap_server.settings(tmp_path, folder=FOLDER)
    events = poll_once(settings, host=imap_server.host.upper(), port=str(imap_server.port), user=imap_server.user,
                       security="none")
    assert subjects(events) == ["same mailbox"]


def test_a_trigger_with_its_own_password_may_name_another_address(imap_server, tmp_path):
    imap_server.append(pdf_message(subject="own password"), FOLDER)
    settings = {**imap_server.settings(tmp_path, folder=FOLDER), "IMAP_PASSWORD": "the-configured-one"}
    events = poll_once(settings, host="localhost", password=imap_server.password)
    assert subjects(events) == ["own password"]


def test_a_ca_file_outside_the_files_root_is_refused(imap_server, tmp_path):
    settings = {**imap_server.settings(tmp_path), "WORKFLOW_FILES_ROOT": str(tmp_path / "files")}
    with pytest.raises(ValueError, match=r"^email trigger 'inbox': ca_file '/dev/zero' is outside WORKFLOW_FILES_ROOT"):
        EmailTrigger("inbox", security="starttls", ca_file="/dev/zero").setup(settings)


def test_a_message_the_server_cannot_fetch_does_not_stop_the_mailbox(imap_server, tmp_path, caplog):
    # A damaged message on the server: every FETCH of it says NO. It failed every poll, for ever.
    first = EmailTrigger("inbox")
    first.setup(imap_server.settings(tmp_path))
    first.poll()  # the cursor starts here
    first.close()
    damaged = imap_server.append(pdf_message(subject="damaged"))
    imap_server.append(pdf_message(subject="fine"))
    caplog.set_level("WARNING", logger="triggers.email")
    with RefusingProxy(imap_server.port, refuse=lambda uid: uid == damaged) as proxy:
        trigger = EmailTrigger("inbox")
        trigger.setup({**imap_server.settings(tmp_path), "IMAP_PORT": proxy.port})
        trigger.state = first.state
        try:
            events = trigger.poll()
            assert subjects(events) == ["fine"]  # the message after it goes on
            acknowledge_all(trigger, events)
            assert trigger.poll() == [] and trigger.poll() == []  # tried at each poll: three refusals
            assert proxy.refused == [damaged] * FETCH_REFUSALS
            assert trigger.poll() == []  # then passed by, never asked for again
            assert proxy.refused == [damaged] * FETCH_REFUSALS
        finally:
            trigger.close()
    assert f"refused to fetch UID {damaged}" in caplog.text and "passed by, left unread" in caplog.text
    assert imap_server.flags(damaged) == set()
    assert trigger.state["pending"] == [] and trigger.state.get("refused") == {}


def test_a_message_refused_once_comes_at_the_next_poll(imap_server, tmp_path):
    first = EmailTrigger("inbox")
    first.setup(imap_server.settings(tmp_path))
    first.poll()
    first.close()
    late = imap_server.append(pdf_message(subject="late"))
    refusals = iter([True])  # the server is busy for one FETCH
    with RefusingProxy(imap_server.port, refuse=lambda uid: next(refusals, False)) as proxy:
        trigger = EmailTrigger("inbox")
        trigger.setup({**imap_server.settings(tmp_path), "IMAP_PORT": proxy.port})
        trigger.state = first.state
        try:
            assert trigger.poll() == []
            events = trigger.poll()
            assert subjects(events) == ["late"] and events[0]["imap"]["uid"] == late
            acknowledge_all(trigger, events)
            assert trigger.poll() == []
        finally:
            trigger.close()
    assert proxy.refused == [late]
    assert trigger.state["pending"] == [] and trigger.state["last_uid"] == late
