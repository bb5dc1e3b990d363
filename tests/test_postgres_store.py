"""The PostgreSQL store beyond the store contract: migrations, start-up errors, a whole app on it, faults."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app import create_app, start_app
from app.errors import ConfigError
from app.storage.migrate import migrate, migrations
from tests.conftest import TEST_SETTINGS
from tests.fixtures import WORKFLOWS, wait_until
from tests.server import Servers, free_port, run_py, server_env
from tests.services import POSTGRES_URL, required

try:
    import psycopg

    from app.storage.postgres import PostgresStore, where
except ImportError:  # the fixtures below skip, or under PYFLOW_REQUIRE_SERVICES=1 fail, the tests that need it
    psycopg = None

pytestmark = pytest.mark.services


@pytest.fixture
def driver() -> None:
    """psycopg, which run.py needs for WORKFLOW_DATABASE_URL (postgres_url checks it too)."""
    if psycopg is None:
        if required():
            pytest.fail("PYFLOW_REQUIRE_SERVICES=1: psycopg is missing; pip install -r requirements-distributed.txt",
                        pytrace=False)
        pytest.skip("psycopg is missing: pip install -r requirements-distributed.txt")
PASSWORD = "n0t-the-real-passw0rd"  # trust auth on the test server accepts any


def with_password(url: str) -> str:
    """``url`` with PASSWORD in it (postgresql://user:PASSWORD@host...)."""
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user.split(':')[0]}:{PASSWORD}@{host}"


def schema_versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM pyflow_schema ORDER BY version")]


# -- migrations -------------------------------------------------------------------
def test_a_fresh_database_gets_the_schema_and_a_second_start_changes_nothing(postgres_url, tmp_path):
    PostgresStore(postgres_url, tmp_path).close()
    known = [version for version, _ in migrations()]
    assert schema_versions(postgres_url) == known
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert migrate(conn, "here") == []  # re-run: a no-op
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"pyflow_runs", "pyflow_steps", "pyflow_logs", "pyflow_definitions", "pyflow_trigger_state",
            "pyflow_started_workflows", "pyflow_files", "pyflow_secrets", "pyflow_tokens", "pyflow_audit",
            "pyflow_schema"} <= tables
    PostgresStore(postgres_url, tmp_path).close()
    assert schema_versions(postgres_url) == known


def test_two_processes_migrating_at_once_apply_each_migration_once(postgres_url):
    applied: list[list[int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def migrator() -> None:
        try:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                start.wait()
                applied.append(migrate(conn, "here"))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=migrator) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(applied) == [[], [version for version, _ in migrations()]]
    assert schema_versions(postgres_url) == [version for version, _ in migrations()]


def test_a_newer_schema_stops_start_up_with_a_clear_message(postgres_url, tmp_path):
    PostgresStore(postgres_url, tmp_path).close()
    newest = migrations()[-1][0]
    future = newest + 1
    with psycopg.connect(postgres_url) as conn:
        conn.execute("INSERT INTO pyflow_schema (version, name) VALUES (%s, %s)", (future, f"{future:04d}_future.sql"))
    expected = (f"the database at {where(postgres_url)} has schema version {future}; this PyFlow knows up to "
                f"{newest}: upgrade PyFlow")
    with pytest.raises(ConfigError, match="WORKFLOW_DATABASE_URL") as raised:
        PostgresStore(postgres_url, tmp_path)
    assert expected in raised.value.message

    result = run_py("list", env=server_env(tmp_path / "data", {"WORKFLOW_DATABASE_URL": with_password(postgres_url)}))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"run.py: WORKFLOW_DATABASE_URL: {expected}"]
    assert PASSWORD not in result.stderr + result.stdout


# -- runs of an event chain, counted once for every server on the database (app/core/events.py) ----------
def test_two_stores_on_one_database_count_a_chains_runs_together(postgres_url, tmp_path):
    # Two servers (or a server and a worker): threads of both race for the runs of one chain.
    stores = [PostgresStore(postgres_url, tmp_path / name) for name in ("one", "two")]
    try:
        start = threading.Barrier(16)

        def count(n: int) -> int:
            start.wait(10)
            return stores[n % 2].count_chain_run("shared", 6)

        with ThreadPoolExecutor(16) as pool:
            counted = list(pool.map(count, range(16)))
        assert sorted(counted) == [0, 1, 2, 3, 4, 5] + [6] * 10
        assert stores[1].count_chain_run("shared", 6) == 6 and stores[0].count_chain_run("other", 6) == 0
        assert stores[0].prune_chains(time.time() + 3600) == 2
        assert stores[1].count_chain_run("shared", 6) == 0  # pruned by one, forgotten for both
    finally:
        for store in stores:
            store.close()


# -- start-up errors through run.py ----------------------------------------------
class FakePostgres:
    """A server on loopback that asks for a password, then refuses it as PostgreSQL does (SQLSTATE 28P01)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                with conn:
                    self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        while True:
            head = conn.recv(4, socket.MSG_WAITALL)
            if len(head) < 4:
                return
            body = conn.recv(struct.unpack("!i", head)[0] - 4, socket.MSG_WAITALL)
            if len(body) == 4 and struct.unpack("!i", body)[0] in (80877103, 80877104):  # SSL or GSS request
                conn.sendall(b"N")
                continue
            self.received += body
            conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
            kind = conn.recv(1)
            length = struct.unpack("!i", conn.recv(4, socket.MSG_WAITALL))[0]
            self.received += kind + conn.recv(length - 4, socket.MSG_WAITALL)
            fields = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"pyflow\"\0\0"
            conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)
            return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_postgres() -> Iterator[FakePostgres]:
    server = FakePostgres()
    yield server
    server.close()


def start_up_error(tmp_path: Path, url: str, pythonpath: tuple[str, ...] = ()) -> str:
    """run.py's one line on stderr when started with WORKFLOW_DATABASE_URL=url (it must exit 2)."""
    env = server_env(tmp_path / "data", {"WORKFLOW_DATABASE_URL": url}, pythonpath)
    result = run_py(env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    return lines[0]


def test_an_unreachable_database_stops_start_up(tmp_path, driver):
    port = free_port()
    line = start_up_error(tmp_path, f"postgresql://pyflow:{PASSWORD}@127.0.0.1:{port}/pyflow")
    assert line.startswith(f"run.py: WORKFLOW_DATABASE_URL: cannot use the database at 127.0.0.1:{port}/pyflow: ")
    assert "refused" in line.lower()


def test_a_wrong_password_stops_start_up(tmp_path, driver, fake_postgres):
    url = f"postgresql://pyflow:{PASSWORD}@127.0.0.1:{fake_postgres.port}/pyflow"
    line = start_up_error(tmp_path, url)
    assert PASSWORD.encode() in fake_postgres.received  # it was sent, and refused
    assert line == (f"run.py: WORKFLOW_DATABASE_URL: cannot use the database at 127.0.0.1:{fake_postgres.port}/pyflow:"
                    ' password authentication failed for user "pyflow"')


def test_a_missing_database_stops_start_up(tmp_path, postgres_url):
    missing = postgres_url.rsplit("/", 1)[0] + "/pyflow_no_such_database"
    line = start_up_error(tmp_path, with_password(missing))
    assert line.startswith("run.py: WORKFLOW_DATABASE_URL: cannot use the database at ")
    assert 'database "pyflow_no_such_database" does not exist' in line


@pytest.mark.parametrize(("url", "cause"), [
    (f"mysql://pyflow:{PASSWORD}@127.0.0.1/pyflow", "setting WORKFLOW_DATABASE_URL must be a postgresql://"),
    (f"postgresql://pyflow:{PASSWORD}@127.0.0.1:notaport/pyflow", 'invalid integer value "notaport"'),
    (f"postgresql://pyflow:{PASSWORD}@[bad/pyflow", "WORKFLOW_DATABASE_URL: cannot use the database at "),
])
def test_a_malformed_url_stops_start_up(tmp_path, driver, url, cause):
    assert cause in start_up_error(tmp_path, url)


def test_without_psycopg_start_up_says_what_to_install(tmp_path):
    fake = tmp_path / "nopsycopg"
    fake.mkdir()
    (fake / "psycopg.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n")
    line = start_up_error(tmp_path, f"postgresql://pyflow:{PASSWORD}@127.0.0.1:5432/pyflow", (str(fake),))
    assert line == ("run.py: WORKFLOW_DATABASE_URL is set but psycopg is not installed: "
                    "pip install -r requirements-distributed.txt")


# -- a whole app on PostgreSQL ----------------------------------------------------
def make_app(url: str, storage: Path, **settings):
    return start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(storage), "WORKFLOW_CLASSES": WORKFLOWS,
                                 "WORKFLOW_DATABASE_URL": url, **settings}))


def test_a_workflow_runs_end_to_end_and_a_restart_keeps_its_runs(postgres_url, tmp_path):
    url = with_password(postgres_url)
    app = make_app(url, tmp_path / "data")
    try:
        assert isinstance(app.extensions["pyflow"].store, PostgresStore)
        client = app.test_client()
        answer = client.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "hello"}})
        assert answer.status_code == 200
        run = answer.get_json()
        assert run["status"] == "succeeded"
        assert [step["result"] for step in run["steps"]] == [{"value": "hello"}, {"value": "HELLO"}]
        assert client.get("/api/runs?workflow=echo").get_json()["runs"] == [run]
        assert client.get(f"/api/runs/{run['id']}/logs").status_code == 200
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)
    assert not (tmp_path / "data" / "runs").exists()  # the runs are in the database, not in files

    again = make_app(url, tmp_path / "data")
    try:
        client = again.test_client()
        assert client.get(f"/api/runs/{run['id']}").get_json() == run
        assert [found["id"] for found in client.get("/api/runs").get_json()["runs"]] == [run["id"]]
    finally:
        again.extensions["pyflow"].shutdown(timeout=2)


@pytest.mark.slow
def test_run_py_on_postgres_keeps_runs_across_a_restart_and_never_logs_the_password(postgres_url, tmp_path):
    with Servers(tmp_path) as servers:
        server = servers.start(env={"WORKFLOW_DATABASE_URL": with_password(postgres_url)})
        answer = server.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "hello"}})
        assert answer.status_code == 200 and answer.json()["status"] == "succeeded"
        run = answer.json()
        logs = server.stdout + server.stderr
        server.restart()
        assert server.get(f"/api/runs/{run['id']}").json() == run
        assert [found["id"] for found in server.all_runs()] == [run["id"]]
        logs += server.stdout + server.stderr
        server.stop()
        logs += server.stdout + server.stderr
    assert "PyFlow serving" in logs and PASSWORD not in logs


# -- a database that goes away -----------------------------------------------------
class Proxy:
    """A TCP forwarder to PostgreSQL that the test can cut (every connection dropped, new ones refused) and restore,
    or have lose one answer: the server's reply to the next request dropped, then that connection closed."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.losing = threading.Event()
        self.lost: list[bytes] = []  # each answer lost, as the server sent it
        self.sent = bytearray()  # what clients sent the server, since the test last emptied it
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                if not self.up:
                    client.close()
                    continue
                server = socket.create_connection(self.upstream)
                with self.lock:
                    self.pairs.append((client, server))
                for source, target, answers in ((client, server, False), (server, client, True)):
                    threading.Thread(target=self._pump, args=(source, target, answers), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, answers: bool) -> None:
        dropped = b""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not answers:
                    self.sent += data
                if not (answers and self.losing.is_set()):
                    target.sendall(data)
                    continue
                dropped += data
                if dropped[-6:-1] == b"Z\x00\x00\x00\x05":  # ReadyForQuery: the server is done with the request
                    self.losing.clear()
                    self.lost.append(dropped)
                    break
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def restore(self) -> None:
        self.up = True

    def lose_next_answer(self) -> None:
        self.losing.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_a_database_that_goes_away_answers_503_and_recovers(postgres_url, tmp_path):
    info = psycopg.conninfo.conninfo_to_dict(postgres_url)
    proxy = Proxy(info.get("host") or "127.0.0.1", int(info.get("port") or 5432))
    url = with_password(postgres_url).replace(f":{info.get('port') or 5432}/", f":{proxy.port}/")
    store = PostgresStore(url, tmp_path / "data", wait=1.0)
    app = start_app(create_app({**TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path / "data"),
                                "WORKFLOW_CLASSES": WORKFLOWS, "STORE": store}))
    client = app.test_client()
    try:
        answered = client.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "kept"}}).get_json()
        assert answered["status"] == "succeeded"
        sleeping = client.post("/api/workflows/slow/runs", json={"inputs": {"seconds": 1}})
        assert sleeping.status_code == 202  # answered: stored, and its step under way when the database goes

        proxy.cut()
        down = client.get("/api/runs")
        assert down.status_code == 503
        message = down.get_json()["error"]["message"]
        assert f"the database at 127.0.0.1:{proxy.port}/" in message and PASSWORD not in message
        assert client.post("/api/workflows/echo/runs", json={"inputs": {"text": "x"}}).status_code == 503

        proxy.restore()
        wait_until(lambda: client.get("/api/runs").status_code == 200, timeout=15)
        assert client.get(f"/api/runs/{answered['id']}").get_json() == answered
        # The run the engine could not record stalled; it resumes once the database is back.
        run_id = sleeping.get_json()["id"]
        wait_until(lambda: client.get(f"/api/runs/{run_id}").get_json()["status"] == "succeeded", timeout=30)
        again = client.post("/api/workflows/echo/runs?wait=5", json={"inputs": {"text": "back"}}).get_json()
        assert again["status"] == "succeeded"
    finally:
        app.extensions["pyflow"].shutdown(timeout=2)
        proxy.close()


def test_a_change_whose_answer_is_lost_after_its_commit_writes_no_log_line_twice(postgres_url, tmp_path):
    """The connection drops after the server committed, before its answer arrives: the change is sent once more
    on another connection, and its log lines, the one part that is not idempotent, go in once."""
    from app.runs import new_run, new_step
    from app.storage.base import Durability

    info = psycopg.conninfo.conninfo_to_dict(postgres_url)
    proxy = Proxy(info.get("host") or "127.0.0.1", int(info.get("port") or 5432))
    url = with_password(postgres_url).replace(f":{info.get('port') or 5432}/", f":{proxy.port}/")
    store = PostgresStore(url, tmp_path, max_connections=1)
    try:
        run = new_run("wf", [new_step("s0", "noop")], {}, "api")
        store.create_run(run)
        for message in ("run started", "step s0 succeeded"):
            store.append_log(run["id"], {"message": message}, mode=Durability.DEFERRED)
        run.update(status="succeeded", finished_at=run["created_at"])
        proxy.lose_next_answer()
        store.save_run(run)  # one statement: the run, its steps and the two deferred lines
        # A ReadyForQuery saying "idle": the save was committed when its answer was lost.
        assert len(proxy.lost) == 1 and proxy.lost[0].endswith(b"Z\x00\x00\x00\x05I")
        proxy.lose_next_answer()
        store.append_log(run["id"], {"message": "a line written on its own"})
        assert len(proxy.lost) == 2 and proxy.lost[1].endswith(b"Z\x00\x00\x00\x05I")

        assert [entry["message"] for entry in store.get_logs(run["id"])] == [
            "run started", "step s0 succeeded", "a line written on its own"]
        assert store.get_run(run["id"])["status"] == "succeeded"
    finally:
        store.close()
        proxy.close()


def _message_types(data: bytes) -> list[bytes]:
    """The type bytes of the frontend messages in ``data`` (each: a type byte, then its length as int32)."""
    types = []
    while data:
        types.append(data[:1])
        data = data[1 + struct.unpack("!i", data[1:5])[0]:]
    return types


def test_a_change_sent_with_deferred_ones_goes_as_one_query_in_one_transaction(postgres_url, tmp_path):
    """A change that carries the run's deferred ones is one query of several statements, bound in this process:
    one round trip and one transaction (the proxy sees one Query message); a statement that reads what it
    changed (the NUL check of update_run) still gets its row, and a failing one undoes them all."""
    from app.errors import NotFound
    from app.runs import new_run, new_step
    from app.storage.base import Durability

    info = psycopg.conninfo.conninfo_to_dict(postgres_url)
    proxy = Proxy(info.get("host") or "127.0.0.1", int(info.get("port") or 5432))
    url = with_password(postgres_url).replace(f":{info.get('port') or 5432}/", f":{proxy.port}/")
    store, reader = PostgresStore(url, tmp_path / "a", max_connections=1), PostgresStore(postgres_url, tmp_path / "b")
    try:
        run = new_run("wf", [new_step("s0", "noop")], {"text": "plain"}, "api")
        store.create_run(run)
        store.update_run(run["id"], {"status": "running"}, mode=Durability.DEFERRED)
        store.append_log(run["id"], {"message": "it's 50% done; \\ and a quote: '"}, mode=Durability.DEFERRED)
        proxy.sent.clear()
        store.update_run(run["id"], {"variables": {"k": "v"}})  # SYNC, with the two deferred changes
        assert _message_types(bytes(proxy.sent)) == [b"Q"]  # one simple Query message: one round trip
        assert proxy.sent.count(b"FOR NO KEY UPDATE") == 1
        stored = reader.get_run(run["id"])
        assert stored["status"] == "running" and stored["variables"] == {"k": "v"}
        assert reader.get_logs(run["id"]) == [{"message": "it's 50% done; \\ and a quote: '"}]

        # A record PostgreSQL's json functions cannot read (a NUL in it): the UPDATE's returned row says so,
        # read from its place among the query's results, and the fields are merged in Python.
        nul = new_run("wf", [new_step("s0", "noop")], {"text": "a\u0000b"}, "api")
        store.create_run(nul)
        store.append_log(nul["id"], {"message": "deferred"}, mode=Durability.DEFERRED)
        store.update_run(nul["id"], {"variables": {"k": "v"}})
        stored = reader.get_run(nul["id"])
        assert stored["variables"] == {"k": "v"} and stored["trigger_data"]["text"] == "a\u0000b"

        # A run deleted meanwhile (pruned by another server): NotFound, and its deferred changes are dropped.
        store.append_log(run["id"], {"message": "for a run about to go"}, mode=Durability.DEFERRED)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("DELETE FROM pyflow_runs WHERE id = %s", (run["id"],))
        with pytest.raises(NotFound, match=run["id"]):
            store.update_run(run["id"], {"status": "succeeded"})
        proxy.sent.clear()
        store.flush()
        assert proxy.sent == b""  # nothing left to send
    finally:
        store.close()
        reader.close()
        proxy.close()


def _backends(url: str) -> list[int]:
    """The server processes of the connections to ``url``'s database (the test's own)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        return [row[0] for row in admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s",
                                                (url.rsplit("/", 1)[1],))]


def _terminate(pids: list[int], *, wait: bool) -> None:
    """End those sessions as a restart does (FATAL 57P01, then the socket closed); ``wait``: until they are gone."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s, %s)" if wait else "SELECT pg_terminate_backend(%s)",
                          (pid, 5000) if wait else (pid,))


def test_connections_the_server_closed_while_idle_are_replaced_before_any_call_uses_them(postgres_url, tmp_path):
    """As after a restart: every pooled connection was closed by the server; the next calls just work."""
    from app.runs import new_run, new_step

    store = PostgresStore(postgres_url, tmp_path, max_connections=3)
    try:
        run = new_run("wf", [new_step("s0", "noop")], {}, "api")
        store.create_run(run)
        pids = _backends(postgres_url)
        assert pids
        _terminate(pids, wait=True)
        # Calls that are not tried twice (a log line, a secret): the pool hands out only live connections.
        store.append_log(run["id"], {"message": "after the restart"})
        assert store.put_secret("after", "ciphertext") is True
        assert [entry["message"] for entry in store.get_logs(run["id"])] == ["after the restart"]
        assert not set(_backends(postgres_url)) & set(pids)
    finally:
        store.close()


def _received(pid: int) -> int:
    """Bytes waiting unread in the sockets of server process ``pid`` (from /proc: this host's server)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = fd.readlink().name
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    waiting = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    waiting += int(fields[4].split(":")[1], 16)
    return waiting


def test_a_call_whose_connection_the_server_closes_as_it_is_sent_is_tried_once_more(postgres_url, tmp_path):
    """The server ends a session between the pool's look at it and the query: the call goes to a new connection."""
    import os
    import signal

    from app.runs import new_run, new_step

    store = PostgresStore(postgres_url, tmp_path, max_connections=1)
    try:
        run = new_run("wf", [new_step("s0", "noop")], {}, "api")
        store.create_run(run)
        [pid] = _backends(postgres_url)
        try:
            os.kill(pid, signal.SIGSTOP)  # the session cannot act on its end yet, nor answer
        except (PermissionError, ProcessLookupError):
            pytest.skip("needs the PostgreSQL server on this host, signalled by this user (root)")
        try:
            _terminate([pid], wait=False)
            answer: list = []
            reader = threading.Thread(target=lambda: answer.append(store.get_run(run["id"])), daemon=True)
            reader.start()
            wait_until(lambda: _received(pid) > 0, timeout=10, message="the query sent to the stopped session")
        finally:
            os.kill(pid, signal.SIGCONT)  # it ends the session now, the query unanswered
        reader.join(15)
        assert answer and answer[0]["id"] == run["id"]
    finally:
        store.close()


def test_records_keep_their_key_order_and_nul_characters(postgres_url, tmp_path):
    """json, not jsonb: an answer reads as on the JSON store, and text with NUL in it (from a PDF) is kept."""
    from app.runs import new_run, new_step

    store = PostgresStore(postgres_url, tmp_path)
    try:
        run = new_run("wf", [new_step("s0", "noop")], {"zebra": 1, "apple": "a\u0000b"}, "api")
        store.create_run(run)
        store.update_run(run["id"], {"status": "running", "variables": {"z": 1, "a": 2}})
        store.update_step(run["id"], 0, {"status": "succeeded", "result": {"y": "\u0000", "b": 2}, "name": "s0"})
        stored = store.get_run(run["id"])
        assert list(stored) == [*run, "variables"]
        assert list(stored["trigger_data"].items()) == [("zebra", 1), ("apple", "a\u0000b")]
        assert list(stored["variables"]) == ["z", "a"]
        assert list(stored["steps"][0]) == ["status", "result", "name"] and stored["steps"][0]["result"]["y"] == "\0"
    finally:
        store.close()


def test_deferred_changes_go_with_the_next_written_one_or_within_the_delay(postgres_url, tmp_path):
    from app.errors import NotFound
    from app.runs import new_run, new_step
    from app.storage.base import Durability

    first, second = PostgresStore(postgres_url, tmp_path / "a"), PostgresStore(postgres_url, tmp_path / "b")
    try:
        run = new_run("wf", [new_step("s0", "noop"), new_step("s1", "noop")], {}, "api")
        first.create_run(run)
        first.update_run(run["id"], {"status": "running"}, mode=Durability.DEFERRED)
        first.append_log(run["id"], {"message": "started"}, mode=Durability.DEFERRED)
        assert first.get_run(run["id"])["status"] == "running"  # this process reads it at once
        assert first.get_logs(run["id"]) == [{"message": "started"}]
        # Another process sees it once the timer sent it (FLUSH_DELAY), with no other change of the run.
        wait_until(lambda: second.get_run(run["id"])["status"] == "running", timeout=10)

        first.update_step(run["id"], 0, {"name": "s0", "status": "running"}, mode=Durability.DEFERRED)
        first.update_step(run["id"], 0, {"name": "s0", "status": "succeeded"}, mode=Durability.WRITTEN)
        assert second.get_run(run["id"])["steps"][0] == {"name": "s0", "status": "succeeded"}  # in order

        unknown = new_run("wf", [], {}, "api")["id"]  # a run this process never stored: written at once
        with pytest.raises(NotFound):
            first.update_step(unknown, 0, {"name": "s0"}, mode=Durability.DEFERRED)
        with pytest.raises(NotFound):
            first.append_log(unknown, {"message": "x"}, mode=Durability.DEFERRED)
    finally:
        first.close()
        second.close()


def test_a_claim_names_its_worker_in_a_record_with_a_nul_character(postgres_url, tmp_path):
    from app.runs import new_run, new_step

    store = PostgresStore(postgres_url, tmp_path)
    try:
        run = new_run("wf", [new_step("s0", "noop")], {"text": "a\u0000b", "z": 1}, "api")
        store.create_run(run)
        assert store.claim_run(run["id"], "host:1", 30)
        store.update_run(run["id"], {"variables": {"nul": "\u0000"}, "status": "running"})
        stored = store.get_run(run["id"])
        assert list(stored) == [*run, *([] if "worker" in run else ["worker"]), "variables"]
        assert stored["worker"] == "host:1"
        assert stored["trigger_data"] == {"text": "a\u0000b", "z": 1} and stored["variables"] == {"nul": "\u0000"}
    finally:
        store.close()


# -- how far a change has gone when its call returns ------------------------------
_NOTE_COMMIT_MODE = """
CREATE TABLE commit_modes (seq bigserial PRIMARY KEY, tbl text, row_data json, mode text);
CREATE FUNCTION note_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO commit_modes (tbl, row_data, mode)
    VALUES (TG_TABLE_NAME, to_json(NEW), current_setting('synchronous_commit'));
    RETURN NEW;
END $$;
CREATE TRIGGER note_steps AFTER INSERT OR UPDATE ON pyflow_steps FOR EACH ROW EXECUTE FUNCTION note_commit_mode();
CREATE TRIGGER note_logs AFTER INSERT ON pyflow_logs FOR EACH ROW EXECUTE FUNCTION note_commit_mode();
CREATE TRIGGER note_runs AFTER INSERT OR UPDATE ON pyflow_runs FOR EACH ROW EXECUTE FUNCTION note_commit_mode();
"""


def _commit_modes(url: str) -> list[tuple[str, dict, str]]:
    """Each row written since _NOTE_COMMIT_MODE: its table, the row, and synchronous_commit as its statement ran."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT tbl, row_data, mode FROM commit_modes ORDER BY seq").fetchall()


def test_repeatable_changes_commit_without_waiting_for_the_wal_flush_and_others_wait(postgres_url, tmp_path):
    """A REPEATABLE change (an idempotent step's end, an action's log line) is committed with synchronous_commit
    off for its own transaction only; the others (a step that must not run twice, the run's creation and save)
    wait for the WAL's flush. Seen from a trigger, on a store of one connection: nothing leaks to the next."""
    from actions.log import LogAction
    from app.core.binding import BoundWorkflow
    from app.core.config import load_settings
    from app.core.engine import Engine
    from app.runs import RunStatus
    from app.storage.base import Durability
    from tests.fixtures import EchoAction
    from tests.fixtures.actions import OnceAction
    from workflows.base import Workflow

    class Mixed(Workflow):
        name = "mixed"
        actions = [EchoAction("first", value=1), LogAction("say", message="said by an action"),
                   OnceAction("send", path="sent.txt", line="once"), EchoAction("last", value=3)]

    store = PostgresStore(postgres_url, tmp_path, max_connections=1)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(_NOTE_COMMIT_MODE)
    settings = {**load_settings({}), **TEST_SETTINGS, "WORKFLOW_STORAGE_PATH": str(tmp_path)}
    engine = Engine(store, settings)
    try:
        run, _ = engine.submit(BoundWorkflow.bind(Mixed, settings, engine.renderer), {})
        assert engine.wait(run["id"], 30)
        assert store.get_run(run["id"])["status"] == RunStatus.SUCCEEDED
        steps = {(row["record"]["name"], row["record"]["status"]): mode
                 for table, row, mode in _commit_modes(postgres_url) if table == "pyflow_steps"}
        assert steps[("first", "succeeded")] == "off"  # idempotent: a crash of the server may run it again
        assert steps[("send", "running")] == "on"  # must not run twice: durable before it starts
        assert steps[("send", "succeeded")] == "on"
        runs = [(row["status"], mode) for table, row, mode in _commit_modes(postgres_url) if table == "pyflow_runs"]
        # Its creation and its save wait; queued -> running is a DEFERRED change, which a REPEATABLE one may carry.
        assert runs[0] == ("queued", "on") and runs[-1] == ("succeeded", "on")
        assert {mode for status, mode in runs[1:-1] if status != "running"} <= {"on"}
        # An action's own log line: kept through a kill -9 of PyFlow, not waiting for the flush (REPEATABLE).
        said = [mode for table, row, mode in _commit_modes(postgres_url)
                if table == "pyflow_logs" and row["entry"]["message"] == "said by an action"]
        assert said == ["off"]

        # Log lines: WRITTEN waits, REPEATABLE does not; then a SYNC change on the same connection waits again.
        store.append_log(run["id"], {"message": "written"}, mode=Durability.WRITTEN)
        store.append_log(run["id"], {"message": "repeatable"}, mode=Durability.REPEATABLE)
        store.update_run(run["id"], {"variables": {"k": "v"}})
        *_, written, repeatable, (run_table, _, run_mode) = _commit_modes(postgres_url)
        assert (written[0], written[1]["entry"], written[2]) == ("pyflow_logs", {"message": "written"}, "on")
        assert (repeatable[1]["entry"], repeatable[2]) == ({"message": "repeatable"}, "off")
        assert (run_table, run_mode) == ("pyflow_runs", "on")

        # A REPEATABLE change carrying deferred ones: one query, all of it unsynced.
        store.update_run(run["id"], {"variables": {"k": "w"}}, mode=Durability.DEFERRED)
        store.append_log(run["id"], {"message": "carrier"}, mode=Durability.REPEATABLE)
        *_, (first_table, _, first_mode), (second_table, _, second_mode) = _commit_modes(postgres_url)
        assert [(first_table, first_mode), (second_table, second_mode)] == [("pyflow_runs", "off"),
                                                                           ("pyflow_logs", "off")]
        assert store.get_run(run["id"])["variables"] == {"k": "w"}
    finally:
        engine.shutdown(timeout=5)
        store.close()


def test_a_repeatable_change_is_kept_through_a_kill_of_the_process_that_made_it(postgres_url, tmp_path):
    """REPEATABLE promises what WRITTEN does: once the call returns, a kill -9 of the process does not undo it."""
    import subprocess
    import sys

    from app.runs import new_run, new_step

    store = PostgresStore(postgres_url, tmp_path)
    try:
        run = new_run("wf", [new_step("s0", "noop")], {}, "api")
        store.create_run(run)
        script = (
            "import os, signal, sys\n"
            "from app.storage.base import Durability\n"
            "from app.storage.postgres import PostgresStore\n"
            f"store = PostgresStore({postgres_url!r}, {str(tmp_path)!r})\n"
            f"store.update_step({run['id']!r}, 0, {{'name': 's0', 'status': 'succeeded'}},"
            " mode=Durability.REPEATABLE)\n"
            f"store.append_log({run['id']!r}, {{'message': 'last words'}}, mode=Durability.WRITTEN)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        died = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent,
                              capture_output=True, text=True, timeout=60)
        assert died.returncode == -9, died.stderr
        assert store.get_run(run["id"])["steps"] == [{"name": "s0", "status": "succeeded"}]
        assert store.get_logs(run["id"]) == [{"message": "last words"}]
    finally:
        store.close()
