"""Issue 12 item 1 and 2, replayed against a real run.py: no posted definition or input reaches outside
WORKFLOW_FILES_ROOT or into the code tree, and python steps call only plain functions of allowed modules.

One server (default settings but SMTP at a recording server on loopback) serves every test of the module;
each test posts its own definitions and checks what a user would: the file outside is untouched, the run
failed naming the field, the recording SMTP server received nothing.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests import pdf_factory
from tests.server import REPO, Servers, free_port, run_py, server_env

pytestmark = pytest.mark.slow  # replays attacks on a real run.py server

SMTP_PASSWORD = "smtp-Pa55-" + uuid.uuid4().hex
LIBRARY = REPO / "workflows" / "library"
PWN = "import os\n\ndef run():\n    return {'id': os.popen('id').read()}\n"


class Recorder:
    """An SMTP server's handler and authenticator: keeps every message and every login it is sent."""

    def __init__(self):
        self.messages: list[bytes] = []
        self.logins: list[tuple] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content or envelope.content)
        return "250 Message accepted"

    def __call__(self, server, session, envelope, mechanism, auth_data):
        self.logins.append(tuple(auth_data))
        return AuthResult(success=True, auth_data=auth_data)

    def received(self) -> bytes:
        return b"".join(self.messages) + repr(self.logins).encode()


@pytest.fixture(scope="module")
def smtp():
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), authenticator=recorder,
                            auth_require_tls=False)
    controller.start()
    yield recorder, controller.port
    controller.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, smtp):
    _, port = smtp
    env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none", "SMTP_USER": "bob",
           "SMTP_PASSWORD": SMTP_PASSWORD, "WORKFLOW_RETRY_COUNT": "0"}
    with Servers(tmp_path_factory.mktemp("paths")) as servers:
        yield servers.start(env=env)


@pytest.fixture(scope="module")
def root(server) -> Path:
    """The server's WORKFLOW_FILES_ROOT: the default, <storage>/files."""
    folder = server.storage / "files"
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder outside the root holding a secret, as a home folder holds id_rsa."""
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n", encoding="utf-8")
    return folder


def define(server, definition: dict):
    """POST the definition; the answer."""
    return server.post("/api/workflows", json=definition)


def run(server, definition: dict, inputs: dict | None = None) -> dict:
    """Create ``definition`` and run it to its end with ``inputs``; the finished run."""
    created = define(server, definition)
    assert created.status_code == 201, created.text
    return run_existing(server, definition["name"], inputs)


def run_existing(server, name: str, inputs: dict | None = None, **post) -> dict:
    if "files" not in post:
        post["json"] = {"inputs": inputs or {}}
    response = server.post(f"/api/workflows/{name}/runs?wait=30", **post)
    assert response.status_code == 200, response.text
    return response.json()


def step(name: str, type_: str, **config) -> dict:
    return {"name": name, "type": type_, "config": config}


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def failed_step(run: dict) -> dict:
    [failed] = [item for item in run["steps"] if item["status"] == "failed"]
    return failed


def step_refused(server, definition: dict, path: str, message: str) -> None:
    """A definition naming a path outside the root as written is refused (422) at that field and not stored."""
    created = define(server, definition)
    assert created.status_code == 422, created.text
    assert created.json()["error"]["details"] == [{"path": path, "message": message}]
    assert server.get(f"/api/workflows/{definition['name']}").status_code == 404


def refused_and_not_stored(server, definition: dict, field: str) -> None:
    """A definition whose trigger names a forbidden folder is refused (422) and not stored (DESIGN section 10)."""
    created = define(server, definition)
    assert created.status_code == 422, created.text
    problem = created.json()["error"]["details"][0]
    assert problem["path"] == "trigger"
    assert f"{field} " in problem["message"] and "is outside WORKFLOW_FILES_ROOT" in problem["message"]
    assert server.get(f"/api/workflows/{definition['name']}").status_code == 404


# -- the attack chain of the issue ------------------------------------------------------------------------


def test_the_attack_chain_of_the_issue_cannot_plant_and_run_code(server, root):
    planted = LIBRARY / "pwn.py"
    assert not planted.exists()
    try:
        # 1. A file step writes pwn.py inside the files root (allowed), then tries to put it into the code tree:
        # refused when saved as written, and when the step runs with the destination from the inputs.
        steps = [step("write", "file", operation="write", path="drop/pwn.py", content=PWN),
                 step("plant", "file", operation="copy", path="drop/pwn.py", destination=str(planted))]
        step_refused(server, {"name": unique("pwn_write"), "steps": steps}, "steps[1].config.destination",
                     f"destination '{planted}' is outside WORKFLOW_FILES_ROOT ({root})")
        steps[1]["config"]["destination"] = "{{ inputs.to }}"
        result = run(server, {"name": unique("pwn_write"), "steps": steps}, {"to": str(planted)})
        assert result["status"] == "failed"
        assert failed_step(result)["name"] == "plant"
        assert failed_step(result)["error"] == (
            f"file: destination '{planted}' is outside WORKFLOW_FILES_ROOT ({root})")
        assert (root / "drop" / "pwn.py").read_text(encoding="utf-8") == PWN

        # 2. A file trigger whose processed_folder is the library links the file into the code tree.
        relative = os.path.relpath(LIBRARY, root)
        for processed in (str(LIBRARY), os.path.relpath(LIBRARY, root / "drop"), f"drop/../{relative}"):
            refused_and_not_stored(server, {
                "name": unique("pwn_link"),
                "trigger": {"type": "file", "folder": "drop", "pattern": "*.py", "settle_seconds": 0,
                            "processed_folder": processed},
                "steps": [step("log", "log", message="{{ trigger_data.path }}")],
            }, "processed_folder")
        assert not planted.exists()

        # 3. A python step calls workflows.library.pwn:run.
        result = run(server, {"name": unique("pwn_run"), "steps": [
            step("run", "python", function="workflows.library.pwn:run")]})
        assert result["status"] == "failed"
        assert "cannot import 'workflows.library.pwn:run': ModuleNotFoundError" in failed_step(result)["error"]
        assert "uid=" not in json.dumps(result)
    finally:
        planted.unlink(missing_ok=True)  # never leave it behind, whatever failed above


def test_a_file_trigger_cannot_empty_a_folder_outside_the_root(server, outside):
    refused_and_not_stored(server, {
        "name": unique("steal"), "trigger": {"type": "file", "folder": str(outside), "settle_seconds": 0},
        "steps": [step("read", "file", operation="read", path="{{ trigger_data.path }}")],
    }, "folder")
    # Through a relative path and through the home folder too.
    for folder in (os.path.relpath(outside, Path.cwd()), "../../../../../../../../" + str(outside), "~/.ssh"):
        refused_and_not_stored(server, {
            "name": unique("steal"), "trigger": {"type": "file", "folder": folder, "settle_seconds": 0},
            "steps": [step("log", "log", message="x")],
        }, "folder")
    assert sorted(os.listdir(outside)) == ["id_rsa"]
    assert (outside / "id_rsa").read_text(encoding="utf-8").endswith("secret\n")


# -- every other place a definition or an input names a path --------------------------------------------------


@pytest.mark.parametrize("value", ["/etc/passwd", "../../../../../../etc/passwd", "~/.bashrc", "/proc/self/environ"])
def test_file_steps_stay_inside_the_root(server, root, value):
    step_refused(server, {"name": unique("file"), "steps": [step("read", "file", operation="read", path=value)]},
                 "steps[0].config.path", f"path {value!r} is outside WORKFLOW_FILES_ROOT ({root})")
    result = run(server, {"name": unique("file"), "steps": [
        step("read", "file", operation="read", path="{{ inputs.path }}")]}, {"path": value})
    assert result["status"] == "failed"
    assert failed_step(result)["error"] == f"file: path {value!r} is outside WORKFLOW_FILES_ROOT ({root})"
    assert "root:" not in json.dumps(result) and SMTP_PASSWORD not in json.dumps(result)


def test_a_nul_byte_in_a_path_is_a_clear_step_error(server):
    step_refused(server, {"name": unique("nul"), "steps": [
        step("write", "file", operation="write", path="a\u0000/../../x", content="x")]},
        "steps[0].config.path", "path 'a\\x00/../../x' contains a NUL byte")
    result = run(server, {"name": unique("nul"), "steps": [
        step("write", "file", operation="write", path="{{ inputs.path }}", content="x")]}, {"path": "a\u0000/../../x"})
    assert result["status"] == "failed"
    assert failed_step(result)["error"] == "file: path 'a\\x00/../../x' contains a NUL byte"


def test_a_symlink_inside_the_root_pointing_out_is_not_followed(server, root, outside):
    link = root / unique("link")
    link.symlink_to(outside / "id_rsa")  # put there by someone with a shell, not by the API
    try:
        for operation in ({"operation": "read"}, {"operation": "write", "content": "overwritten"},
                          {"operation": "append", "content": "more"}, {"operation": "copy", "destination": "copy"}):
            result = run(server, {"name": unique("link"), "steps": [step("op", "file", path=link.name, **operation)]})
            assert result["status"] == "failed"
            assert f"file: path {link.name!r} is outside WORKFLOW_FILES_ROOT" in failed_step(result)["error"]
            assert "secret" not in json.dumps(result)
        assert (outside / "id_rsa").read_text(encoding="utf-8").endswith("secret\n")
    finally:
        link.unlink()


def test_send_email_cannot_mail_files_from_outside_the_root(server, smtp, root, outside):
    recorder, _ = smtp
    before = len(recorder.messages)
    for attachments, field in (("/proc/self/environ", "attachments"), (["/etc/passwd"], "attachments[0]"),
                               ([{"path": str(outside / "id_rsa")}], "attachments[0].path"),
                               ([{"path": "../../../../../../proc/self/environ", "filename": "env.txt"}],
                                "attachments[0].path")):
        mail = step("mail", "send_email", to="thief@example.org", subject="loot", body="see attached",
                    attachments=attachments)
        created = define(server, {"name": unique("mail"), "steps": [mail]})
        assert created.status_code == 422, created.text
        [problem] = created.json()["error"]["details"]
        assert problem["path"] == f"steps[0].config.{field}"
        assert problem["message"].startswith(f"{field} ") and "is outside WORKFLOW_FILES_ROOT" in problem["message"]
        mail["config"]["attachments"] = "{{ inputs.attachments }}"
        result = run(server, {"name": unique("mail"), "steps": [mail]}, {"attachments": attachments})
        assert result["status"] == "failed"
        assert failed_step(result)["error"].startswith("send_email: attachments[0] ")
        assert "is outside WORKFLOW_FILES_ROOT" in failed_step(result)["error"]
    # Through the run's inputs as well: an attachment path is trusted only when the server made it.
    name = unique("mail_inputs")
    assert define(server, {"name": name, "steps": [
        step("mail", "send_email", to="thief@example.org", subject="loot", attachments="{{ inputs.attachments }}")],
    }).status_code == 201
    result = run_existing(server, name, {"attachments": [{"path": "/proc/self/environ", "filename": "env.txt"}]})
    assert result["status"] == "failed"
    assert failed_step(result)["error"].startswith("send_email: attachments[0] '/proc/self/environ' is outside")
    assert len(recorder.messages) == before
    assert SMTP_PASSWORD.encode() not in recorder.received()


def test_an_upload_made_by_the_server_can_still_be_mailed(server, smtp):
    recorder, _ = smtp
    name = unique("mail_upload")
    assert define(server, {"name": name, "steps": [
        step("mail", "send_email", to="team@example.org", subject="upload", attachments="{{ inputs.attachments }}")],
    }).status_code == 201
    result = run_existing(server, name, files={"report": ("report.txt", b"uploaded text", "text/plain")})
    assert result["status"] == "succeeded", result["error"]
    assert b"uploaded text" in recorder.messages[-1] or b"dXBsb2FkZWQgdGV4dA==" in recorder.messages[-1]


@pytest.mark.parametrize("type_", ["pdf_text", "extract_pdf_data"])
def test_pdf_steps_read_only_inside_the_root(server, root, outside, type_):
    for file, field in (("/etc/passwd", "file"), (str(outside / "id_rsa"), "file"),
                        ([{"path": "/etc/passwd", "content_type": "application/pdf"}], "file[0].path")):
        step_refused(server, {"name": unique("pdf"), "steps": [step("read", type_, file=file)]},
                     f"steps[0].config.{field}", f"{field} {file if isinstance(file, str) else '/etc/passwd'!r} "
                                                 f"is outside WORKFLOW_FILES_ROOT ({root})")
        result = run(server, {"name": unique("pdf"), "steps": [step("read", type_, file="{{ inputs.file }}")]},
                     {"file": file})
        assert result["status"] == "failed"
        assert failed_step(result)["error"].startswith(f"{type_}: file '")
        assert "is outside WORKFLOW_FILES_ROOT" in failed_step(result)["error"]


def test_json_inputs_cannot_point_the_shipped_workflows_at_files(server):
    passwd = {"path": "/etc/passwd", "filename": "form.pdf", "content_type": "application/pdf"}
    extracted = run_existing(server, "insurance_application", {"attachments": [passwd]})
    assert extracted["status"] == "failed"
    assert failed_step(extracted)["error"].startswith("extract_pdf_data: file '/etc/passwd' is outside")
    processed = run_existing(server, "document_processing", {"attachments": [passwd]})
    assert processed["status"] == "failed"
    assert failed_step(processed)["error"].startswith("pdf_text: file '/etc/passwd' is outside")
    by_path = run_existing(server, "document_processing", {"file": "/etc/passwd"})
    assert failed_step(by_path)["error"].startswith("pdf_text: file '/etc/passwd' is outside")
    assert "root:" not in json.dumps([extracted, processed, by_path])


def test_templates_dir_is_inside_the_root(server, root):
    for type_, config in (("validate_data", {"data": {}, "template": "company_a"}),
                          ("extract_pdf_data", {"file": "form.pdf"})):
        step_refused(server, {"name": unique("templates"), "steps": [
            step("s", type_, templates_dir=str(REPO / "pdf_templates"), **config)]}, "steps[0].config.templates_dir",
            f"templates_dir '{REPO / 'pdf_templates'}' is outside WORKFLOW_FILES_ROOT ({root})")
        result = run(server, {"name": unique("templates"), "steps": [
            step("s", type_, templates_dir="{{ inputs.dir }}", **config)]}, {"dir": str(REPO / "pdf_templates")})
        assert result["status"] == "failed"
        assert failed_step(result)["error"] == (
            f"{type_}: templates_dir '{REPO / 'pdf_templates'}' is outside WORKFLOW_FILES_ROOT ({root})")


def test_sqlite_db_path_is_inside_the_root(server, root, tmp_path):
    target = tmp_path / "evil.sqlite3"
    result = run(server, {"name": unique("sqlite"), "steps": [
        step("load", "python", function="workflows.library.sqlite_store:load_rows",
             kwargs={"db_path": str(target), "table": "t", "rows": [{"a": 1}]})]})
    assert result["status"] == "failed"
    assert failed_step(result)["error"] == (f"python: workflows.library.sqlite_store:load_rows: db_path '{target}' "
                                            f"is outside WORKFLOW_FILES_ROOT ({root})")
    assert failed_step(result)["attempts"] == 1
    # The shipped document_processing with an uploaded PDF and a db_path outside: the store step refuses.
    pdf = pdf_factory.lines_pdf(tmp_path / "invoice.pdf", [["Invoice INV-1", "Total due: USD 10.00"]])
    stored = run_existing(server, "document_processing", files={
        "file": ("invoice.pdf", pdf.read_bytes(), "application/pdf"),
        "inputs": (None, json.dumps({"db_path": str(target)}), "application/json")})
    assert stored["status"] == "failed"
    assert failed_step(stored)["name"] == "store"
    assert not target.exists()
    # By default it keeps its database in the files root.
    default = run_existing(server, "document_processing", files={
        "file": ("invoice.pdf", pdf.read_bytes(), "application/pdf")})
    assert default["status"] == "succeeded", default["error"]
    assert (root / "documents.sqlite3").exists()


# -- python steps: one plain function of an allowed module ---------------------------------------------------


@pytest.mark.parametrize("function", [
    "workflows.library.sqlite_store:json.codecs.builtins.open",
    "workflows.library.sqlite_store:json.codecs.builtins.__import__",
    "workflows.library.sqlite_store:_connect",
    "workflows.library.sqlite_store:Path",
    "workflows.library.sqlite_store:contextmanager",
    "subprocess:run",
])
def test_python_steps_call_only_plain_functions_of_allowed_modules(server, tmp_path, function):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    kwargs = {"file": str(victim), "mode": "w"} if function.endswith("open") else {"name": "os"}
    literal = define(server, {"name": unique("py"), "steps": [step("call", "python", function=function)]})
    if literal.status_code == 422:  # refused as written: its shape, or a module outside the allow-list
        assert ("function must look like 'package.module:function'" in literal.text
                or "module 'subprocess' is not allowed" in literal.text), literal.text
    else:
        assert literal.status_code == 201, literal.text
    # The same path rendered from the inputs is refused when the step runs.
    name = unique("py_templated")
    assert define(server, {"name": name, "steps": [
        step("call", "python", function="{{ inputs.f }}", kwargs=kwargs)]}).status_code == 201
    result = run_existing(server, name, {"f": function})
    assert result["status"] == "failed"
    error = failed_step(result)["error"]
    assert error.startswith("python: function ") and ("is not allowed" in error or "must look like" in error
                                                       or "not a plain function" in error), error
    assert victim.read_text(encoding="utf-8") == "precious"


# -- start-up: the files root is never the code tree --------------------------------------------------------


@pytest.mark.parametrize("folder", ["workflows/library", "", "workflows", "app/files"])
def test_run_py_refuses_a_files_root_in_or_above_the_code(tmp_path, folder):
    root = (REPO / folder).resolve()
    env = server_env(tmp_path / "data", {"WORKFLOW_FILES_ROOT": str(root)})
    finished = run_py(env=env, timeout=60)
    assert finished.returncode != 0
    assert f"WORKFLOW_FILES_ROOT ({root}) must be apart from the code in {REPO}/" in finished.stderr
    assert "Traceback" not in finished.stderr
