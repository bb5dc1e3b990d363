"""Secrets through real run.py processes: the CLI, start-up with a wrong key, and a run paused across a restart."""

from __future__ import annotations

import socket
from pathlib import Path

import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography.fernet import Fernet

from tests.server import Servers, run_py, server_env
from tests.waiting import wait_until

PASSWORD = "Smtp-secret-Pa55-for-restart"


class Mailbox:
    """An aiosmtpd handler that keeps every message, with an authenticator that accepts only bob/PASSWORD."""

    def __init__(self):
        self.envelopes = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append(tuple(auth_data))
        ok = isinstance(auth_data, LoginPassword) and auth_data == (b"bob", PASSWORD.encode())
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def everything_under(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file())


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# -- the CLI -------------------------------------------------------------------------------------------


def test_set_reads_the_value_from_standard_input_list_and_delete(tmp_path):
    env = server_env(tmp_path / "data")
    stored = run_py("secrets", "set", "SMTP", env=env, stdin=PASSWORD + "\n")
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.strip() == "secret SMTP stored"
    assert PASSWORD not in stored.stdout + stored.stderr
    assert f"made a new encryption key in WORKFLOW_KEY_FILE {tmp_path / 'encryption.key'}" in stored.stderr
    replaced = run_py("secrets", "set", "SMTP", env=env, stdin=PASSWORD)
    assert replaced.stdout.strip() == "secret SMTP replaced"
    listed = run_py("secrets", "list", env=env)
    assert listed.returncode == 0 and listed.stdout.split()[0] == "SMTP" and PASSWORD not in listed.stdout
    empty = run_py("secrets", "set", "EMPTY", env=env, stdin="")
    assert empty.returncode == 2 and "the value read from standard input is empty" in one_line(empty.stderr)
    bad = run_py("secrets", "set", "not-a-name", env=env, stdin=PASSWORD)
    assert bad.returncode == 2 and "NAME must be a letter" in one_line(bad.stderr)
    # The value never comes from argv: there is no such argument.
    assert run_py("secrets", "set", "SMTP", PASSWORD, env=env, stdin="").returncode == 2
    assert run_py("secrets", "delete", "SMTP", env=env).stdout.strip() == "secret SMTP deleted"
    gone = run_py("secrets", "delete", "SMTP", env=env)
    assert gone.returncode == 2 and one_line(gone.stderr) == "run.py: no secret named 'SMTP'"
    assert PASSWORD.encode() not in everything_under(tmp_path / "data")


def test_rotate_key_keeps_secrets_readable(tmp_path):
    env = server_env(tmp_path / "data")
    key_file = tmp_path / "encryption.key"
    assert run_py("secrets", "set", "SMTP", env=env, stdin=PASSWORD).returncode == 0
    old_key, old_cipher = key_file.read_text(), (tmp_path / "data" / "secrets.json").read_text()
    rotated = run_py("secrets", "rotate-key", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.strip() == f"re-encrypted 1 secrets with the new key in WORKFLOW_KEY_FILE {key_file}"
    new_key = key_file.read_text()
    assert new_key != old_key and len(new_key.split()) == 1  # the old key is dropped once everything moved
    assert (tmp_path / "data" / "secrets.json").read_text() != old_cipher
    # The new key reads it (validate is not enough: a run of the server would), the old one no longer does.
    assert run_py("secrets", "list", env=env).returncode == 0
    with_old = run_py("secrets", "list", env={**env, "WORKFLOW_ENCRYPTION_KEY": old_key.strip()})
    assert with_old.returncode == 2 and "does not decrypt the stored secret 'SMTP'" in one_line(with_old.stderr)
    with_new = {**env, "WORKFLOW_ENCRYPTION_KEY": new_key.strip()}
    assert run_py("secrets", "list", env=with_new).returncode == 0

    # With the key in the environment, the new one must be given, and then it replaces it.
    refused = run_py("secrets", "rotate-key", env=with_new)
    assert refused.returncode == 2 and "set WORKFLOW_NEW_ENCRYPTION_KEY" in one_line(refused.stderr)
    newest = Fernet.generate_key().decode()
    moved = run_py("secrets", "rotate-key", env={**with_new, "WORKFLOW_NEW_ENCRYPTION_KEY": newest})
    assert moved.returncode == 0, moved.stderr
    assert "now set WORKFLOW_ENCRYPTION_KEY to it" in moved.stdout and newest not in moved.stdout + moved.stderr
    assert run_py("secrets", "list", env={**env, "WORKFLOW_ENCRYPTION_KEY": newest}).returncode == 0
    # Both keys (new first) read it too: how several processes change keys without a stop.
    both = {**env, "WORKFLOW_ENCRYPTION_KEY": f"{newest},{new_key.strip()}"}
    assert run_py("secrets", "list", env=both).returncode == 0


def test_a_wrong_key_stops_the_server_in_one_line(tmp_path):
    env = server_env(tmp_path / "data")
    assert run_py("secrets", "set", "SMTP", env=env, stdin=PASSWORD).returncode == 0
    wrong = Fernet.generate_key().decode()
    served = run_py(env={**env, "WORKFLOW_ENCRYPTION_KEY": wrong})  # serve: it must stop at once
    assert served.returncode == 2
    assert one_line(served.stderr) == ("run.py: WORKFLOW_ENCRYPTION_KEY: this key does not decrypt the stored secret "
                                       "'SMTP'; set the key the secrets were encrypted with")
    assert wrong not in served.stderr
    (tmp_path / "encryption.key").unlink()
    missing = run_py(env=env)
    assert missing.returncode == 2
    assert one_line(missing.stderr).startswith(
        f"run.py: WORKFLOW_KEY_FILE {tmp_path / 'encryption.key'} does not exist, but the store holds 1")


# -- a run that uses a secret, paused, the server restarted, resumed ------------------------------------


def test_a_secret_password_survives_pause_and_restart_and_is_never_written(tmp_path):
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), authenticator=mailbox.authenticate,
                            auth_require_tls=False)
    controller.start()
    gate = tmp_path / "gate"
    answers: list[str] = []

    def keep(response: requests.Response) -> requests.Response:
        answers.append(response.text)
        return response

    try:
        with Servers(tmp_path) as servers:
            server = servers.make(env={"WORKFLOW_PYTHON_MODULES": "tests.fixtures.functions"}).start()
            stored = run_py("secrets", "set", "SMTP", env=server.env, stdin=PASSWORD + "\n")
            assert stored.returncode == 0, stored.stderr
            definition = {"name": "mail_with_secret", "steps": [
                {"name": "hold", "type": "python",
                 "config": {"function": "tests.fixtures.functions:wait_for_file", "kwargs": {"path": str(gate)}}},
                {"name": "mail", "type": "send_email", "config": {
                    "to": "alice@example.org", "subject": "hello", "body": "sent with a stored password",
                    "smtp_host": "127.0.0.1", "smtp_port": controller.port, "smtp_security": "none",
                    "smtp_user": "bob", "smtp_password": "{{ secrets.SMTP }}"}},
                {"name": "careless", "type": "log", "config": {"message": "logged in with {{ secrets.SMTP }}"}},
            ]}
            assert keep(server.post("/api/workflows", json=definition)).status_code == 201
            started = keep(server.post("/api/workflows/mail_with_secret/runs", json={"inputs": {}}))
            assert started.status_code == 202, started.text
            run_id = started.json()["id"]

            def step_status(name: str) -> str:
                run = keep(server.get(f"/api/runs/{run_id}")).json()
                return next(step["status"] for step in run["steps"] if step["name"] == name)

            wait_until(lambda: step_status("hold") == "running", timeout=10, message="the first step runs")
            assert keep(server.post(f"/api/runs/{run_id}/pause")).status_code == 200
            gate.touch()  # the running step ends; the run pauses before the mail step
            wait_until(lambda: keep(server.get(f"/api/runs/{run_id}")).json()["status"] == "paused", timeout=10,
                       message="the run pauses")
            assert step_status("mail") == "pending" and mailbox.logins == []
            first_log = server.stderr + server.stdout

            server.restart()
            assert keep(server.post(f"/api/runs/{run_id}/resume")).status_code == 200
            run = wait_until(lambda: (r := keep(server.get(f"/api/runs/{run_id}")).json())["status"] in (
                "succeeded", "failed") and r, timeout=15, message="the resumed run ends")
            assert run["status"] == "succeeded", (run["steps"][1]["error"], mailbox.logins)
            assert mailbox.logins == [(b"bob", PASSWORD.encode())] and len(mailbox.envelopes) == 1
            assert run["steps"][2]["result"] == {"message": "logged in with ***"}

            for path in (f"/api/runs/{run_id}", f"/api/runs/{run_id}/logs", "/api/runs", "/api/workflows",
                         "/api/workflows/mail_with_secret", "/api/secrets", f"/runs/{run_id}", "/secrets"):
                assert keep(server.get(path)).status_code == 200, path
            storage = server.storage
            logs = first_log + server.stderr + server.stdout
            server.stop()
    finally:
        controller.stop()

    assert b"gAAAA" in (storage / "secrets.json").read_bytes()
    assert PASSWORD.encode() not in everything_under(storage)
    assert PASSWORD not in logs and "logged in with ***" in logs
    assert all(PASSWORD not in answer for answer in answers) and len(answers) > 10
