"""The PostgreSQL store: runs, steps, logs and state in tables, shared by every process that uses the database."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import psycopg
from psycopg.types.json import set_json_dumps
from psycopg_pool import ConnectionPool, PoolTimeout

from app.errors import ConfigError, Conflict, NotFound, StorageError
from app.runs import FINISHED_RUN, parse_time, utcnow
from app.storage.audit_chain import FILTERS, GENESIS, check_entry, check_page, seal
from app.storage.base import (
    LEASED_STATUSES,
    Durability,
    Store,
    check_cache_entry,
    check_cache_key,
    check_chain_run,
    check_control,
    check_file_key,
    check_lease,
    newer_definition,
    parked_entry,
)
from app.storage.migrate import migrate

# Its schema: app/storage/migrations/; selecting it, upgrading and what is durable when: docs/postgres.md.

logger = logging.getLogger(__name__)

_ISO = "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'"
_CONNECT_TIMEOUT = 10
# Reads of what a closed connection's server sent (a FATAL message, then the end): enough to see the end.
_GOODBYE_READS = 4
_POOL_TIMEOUT = 10.0
_PRUNE_BATCH = 1000
# DEFERRED changes wait at most this long for their run's next written change (the JSON store's FLUSH_DELAY).
FLUSH_DELAY = 0.2
_KNOWN = 10_000  # run ids remembered as stored, the most recent (a DEFERRED change to another is written at once)
# index_entries' columns, formatted as the run records hold them (UTC ISO with ms and Z).
_ENTRY_COLUMNS = ", ".join(
    ["id", "workflow", "status"]
    + [f"to_char({column} AT TIME ZONE 'UTC', {_ISO})" for column in ("created_at", "started_at", "finished_at")]
)
# request_control: a pending request stays when a pause meets a pending cancel (cancel wins).
_KEEP = "(control = 'cancel' AND %(operation)s::text = 'pause')"
_SECRET_COLUMNS = (f"name, ciphertext, to_char(created_at AT TIME ZONE 'UTC', {_ISO}),"
                   f" to_char(updated_at AT TIME ZONE 'UTC', {_ISO})")

# pg_advisory_xact_lock's key around an audit append ("PyFlowAu" as 8 bytes): one chain across hosts.
AUDIT_LOCK_KEY = int.from_bytes(b"PyFlowAu", "big") - (1 << 63)
_TOKEN_COLUMNS = (f"name, role, hash, to_char(created AT TIME ZONE 'UTC', {_ISO}),"
                  f" to_char(last_used AT TIME ZONE 'UTC', {_ISO})")
_RUN_COLUMNS = ("workflow", "status", "created_at", "started_at", "finished_at", "version", "worker")


# allow_nan=False: PostgreSQL's json refuses NaN, so say which value at the call, not in the server's words.
# One encoder for every call: json.dumps with options builds a new one each time (a third of a step's dump).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def where(url: str) -> str:
    """``host:port/database`` of a URL: how messages name a database, never with its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:  # not a URL libpq reads: name what can be read of it, never all of it
        try:
            parts = urlsplit(url)
            return f"{parts.hostname or 'localhost'}{parts.path or ''}"
        except ValueError:
            return "(a malformed URL)"
    database = info.get("dbname") or info.get("user") or ""
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{database}"


def _cause(error: BaseException, url: str) -> str:
    """The first line of a driver error, without libpq's 'connection failed:' prefixes, nor the URL."""
    text = str(error).replace(url, "the URL")  # libpq quotes a URL it cannot parse, password and all
    password = re.search(r"://[^:/@\s]*:([^@\s]+)@", url)
    if password:
        text = text.replace(password.group(1), "***")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    # libpq: 'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'
    text = text.split(" failed: ")[-1] if " failed: " in text else text
    return re.sub(r"^(FATAL|ERROR):\s+", "", text)


def _alive(conn: psycopg.Connection) -> None:
    """Raise when the server closed the connection, without a round trip (the pool's check before handing it out).

    An idle connection has nothing to read: what there is, is the server's goodbye (a FATAL message, then the
    end of the stream), which libpq reads here, finding the connection closed.
    """
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    for _ in range(_GOODBYE_READS):
        if not poller.poll(0):
            break
        conn.pgconn.consume_input()  # an OperationalError once the server closed it
    if conn.pgconn.status != psycopg.pq.ConnStatus.OK:
        raise psycopg.OperationalError("the server closed the connection")


class _ConnectionLost(StorageError):
    """The connection broke under a call: the server closed it (a restart, a terminated backend) or it dropped."""


def _retried(method: Callable) -> Callable:
    """Call ``method`` once more when its pooled connection turned out closed (the pool's check raced the close).

    Only for calls that may run twice: reads, and changes that set what they set (a run's creation, whose
    second try finds its own id stored when the first was committed, says so itself).
    """
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except _ConnectionLost as error:
            logger.info("%s; trying once more on another connection", error)
        return method(*args, **kwargs)

    return call


def _timestamp(text: Any) -> datetime | None:
    """A record's ISO time as a timestamptz column (None stays None)."""
    if not text:
        return None
    try:
        return datetime.fromtimestamp(parse_time(text), UTC)
    except (TypeError, ValueError):
        raise ValueError(f"run times must be UTC ISO 8601 such as 2026-01-01T10:00:00.000Z, got {text!r}") from None


def _columns(run: dict) -> dict[str, Any]:
    """The columns of a run's row that listing, filters and pruning read."""
    version = run.get("version")
    return {
        "workflow": run["workflow"],
        "status": run["status"],
        "created_at": _timestamp(run.get("created_at")),
        "started_at": _timestamp(run.get("started_at")),
        "finished_at": _timestamp(run.get("finished_at")),
        "version": version if isinstance(version, int) else None,
        "worker": run.get("worker") if isinstance(run.get("worker"), str) else None,
    }


def _without_steps(run: dict) -> str:
    # "steps" keeps its place in the record (null), so get_run gives the keys back in the order they came.
    return _dumps({**run, "steps": None})


def _merged(param: str) -> str:
    """SQL for ``record`` with the keys of the json parameter ``param`` set, as ``{**record, **fields}`` orders them.

    A record with a NUL (``\\u0000``) in it stays as it is: PostgreSQL's json functions refuse to read one
    (the caller merges it with _merge_in_python then).
    """
    # json, not jsonb: kept keys keep their place, new ones follow in their order.
    return (
        f"CASE WHEN {_NO_NUL} THEN"
        " (SELECT json_object_agg(COALESCE(r.key, f.key), COALESCE(f.value, r.value)"
        "  ORDER BY COALESCE(r.ord, 1000000 + f.ord))"
        " FROM json_each(record) WITH ORDINALITY AS r(key, value, ord)"
        f" FULL JOIN json_each(%({param})s::json) WITH ORDINALITY AS f(key, value, ord) ON f.key = r.key)"
        " ELSE record END"
    )


# True when a record has no NUL escape (an escaped backslash before "u0000" counts too: merged in Python).
_NO_NUL = "strpos(record::text, '\\u0000') = 0"


def _merge_in_python(conn: psycopg.Connection, run_id: str, fields: dict) -> None:
    """A record PostgreSQL's json functions cannot read (a NUL in it): read, merge and write it back."""
    with conn.transaction():
        found = conn.execute("SELECT record FROM pyflow_runs WHERE id = %s FOR UPDATE", (run_id,)).fetchone()
        if found is not None:
            conn.execute("UPDATE pyflow_runs SET record = %s WHERE id = %s", (_dumps({**found[0], **fields}), run_id))


def _changed_columns(fields: dict) -> dict[str, Any]:
    """The row's columns among ``fields`` (see _columns), and only those."""
    present = _columns({"workflow": None, "status": None, **fields})
    return {name: value for name, value in present.items() if name in fields}


def _steps_statements(run_id: str, steps: list[dict]) -> list[_Statement]:
    """Replace every step of a run (in a transaction)."""
    return [
        ("DELETE FROM pyflow_steps WHERE run_id = %s", (run_id,), None),
        ("INSERT INTO pyflow_steps (run_id, index, record)"
         " SELECT %s, s.ord - 1, s.value FROM json_array_elements(%s::json) WITH ORDINALITY AS s(value, ord)",
         (run_id, _dumps(steps)), None),
    ]


# Taken first by a change of several statements: two changes of one run at once, each on several rows, then
# wait in line instead of locking rows in opposite orders (a deadlock).
_LOCK_RUN = "SELECT FROM pyflow_runs WHERE id = %s FOR NO KEY UPDATE"


def _in_one_query(conn: psycopg.Connection, run_id: str, todo: list[_Statement], synced: bool) -> list[tuple | None]:
    """``todo`` in one transaction and one round trip: the run's row locked first, then each statement; the row
    each returned, for those that read one (None for the others). ``synced``: the commit waits for the WAL's flush.

    The statements are bound here (psycopg's client-side binding, its quoting) and sent as one query, which
    PostgreSQL runs as one transaction, all or nothing. psycopg's pipeline did the same in one round trip too,
    with 2.4 times the CPU here and a third more time (measured: a step's record and a log line, 221 µs of CPU
    and 550 µs against 93 and 412).
    """
    cursor = psycopg.ClientCursor(conn)
    cursor.execute(";\n".join([*([] if synced else [_UNSYNCED_COMMIT]), cursor.mogrify(_LOCK_RUN, (run_id,)),
                               *(cursor.mogrify(sql, params) for sql, params, _ in todo)]))
    if not synced:
        cursor.nextset()
    rows: list[tuple | None] = []
    for _, _, after in todo:
        cursor.nextset()
        rows.append(cursor.fetchone() if after is not None else None)
    return rows


def _once(statement: _Statement) -> _Statement:
    """``statement`` as sent again after a broken connection: a log line's insert skips a line already there."""
    sql, params, after = statement
    if sql == _LOG_INSERT:
        run_id, entry = params
        return _LOG_INSERT_AGAIN, (run_id, entry, run_id, entry), after
    return statement


# save_run: the run's row, its steps and its deferred log lines in one statement (one round trip, no BEGIN).
# The row is written by the main statement, which PostgreSQL runs before the WITH parts nothing reads (checked:
# a save waiting on a step row holds the run's row): it is locked first, as _send_locked locks it first.
# Steps stored as they are (most, when a run finishes) are left alone: no dead rows for vacuum.
_SAVE_RUN_TEMPLATE = (
    "WITH s AS (SELECT s.ord - 1 AS index, s.value"
    "  FROM json_array_elements(%(steps)s::json) WITH ORDINALITY AS s(value, ord)),"
    " gone AS (DELETE FROM pyflow_steps WHERE run_id = %(id)s AND index >= (SELECT count(*) FROM s)),"
    " steps AS (INSERT INTO pyflow_steps (run_id, index, record) SELECT %(id)s, index, value FROM s"
    "  ON CONFLICT (run_id, index) DO UPDATE SET record = EXCLUDED.record"
    "  WHERE pyflow_steps.record::text IS DISTINCT FROM EXCLUDED.record::text),"
    " logs AS (INSERT INTO pyflow_logs (run_id, entry) SELECT %(id)s, l.value"
    "  FROM json_array_elements(%(logs)s::json) WITH ORDINALITY AS l(value, ord)@ONCE@ ORDER BY l.ord)"
    " INSERT INTO pyflow_runs (id, workflow, status, created_at, started_at, finished_at, version, worker, record)"
    " VALUES (%(id)s, %(workflow)s, %(status)s, %(created_at)s, %(started_at)s, %(finished_at)s, %(version)s,"
    "  %(worker)s, %(record)s)"
    " ON CONFLICT (id) DO UPDATE SET workflow = EXCLUDED.workflow, status = EXCLUDED.status,"
    " created_at = EXCLUDED.created_at, started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,"
    " version = EXCLUDED.version, worker = EXCLUDED.worker, record = EXCLUDED.record, "
    # save_and_release: the lease of %(release)s given up with it (release_run's columns); NULL: left alone.
    + ", ".join(f"{column} = CASE WHEN pyflow_runs.lease_owner = %(release)s THEN NULL ELSE pyflow_runs.{column} END"
                for column in ("lease_expires", "control", "control_by", "control_at", "lease_owner"))
)

# A log line sent again after a connection was lost (see _send) goes in only if the first try did not commit it:
# a line is its time (to the ms), level, step and message, so one equal to it in the run's log is that line.
_ONCE = " WHERE NOT EXISTS (SELECT FROM pyflow_logs p WHERE p.run_id = %(id)s AND p.entry::text = l.value::text)"
_SAVE_RUN = _SAVE_RUN_TEMPLATE.replace("@ONCE@", "")
_SAVE_RUN_AGAIN = _SAVE_RUN_TEMPLATE.replace("@ONCE@", _ONCE)
_LOG_INSERT = "INSERT INTO pyflow_logs (run_id, entry) VALUES (%s, %s)"
_LOG_INSERT_AGAIN = ("INSERT INTO pyflow_logs (run_id, entry) SELECT %s, %s::json WHERE NOT EXISTS"
                     " (SELECT FROM pyflow_logs WHERE run_id = %s AND entry::text = %s)")
_UNSYNCED_MODES = (Durability.REPEATABLE, Durability.DEFERRED)  # the weaker promises: see _UNSYNCED
_STEP_UPSERT = ("INSERT INTO pyflow_steps (run_id, index, record) VALUES (%s, %s, %s)"
                " ON CONFLICT (run_id, index) DO UPDATE SET record = EXCLUDED.record")

# A REPEATABLE change is committed without waiting for the WAL's flush: synchronous_commit is off for its
# own transaction only (set_config's third argument), set by the statement itself: no round trip more. The
# commit is then in the server's WAL buffers, visible to every connection, and a kill -9 of PyFlow keeps it;
# a crash of the server may undo it. The WAL is one sequence, and the next synced commit flushes it up to
# itself: a crash undoes such a change only with every change made after it, so the run is found as it was
# a moment earlier and its idempotent step runs again.
_UNSYNCED_COMMIT = "SELECT set_config('synchronous_commit', 'off', true)"
_UNSYNCED = {  # the hot statements, written to set it themselves; other changes go through _in_one_query
    _STEP_UPSERT: (f"WITH unsynced AS ({_UNSYNCED_COMMIT})"
                   " INSERT INTO pyflow_steps (run_id, index, record) SELECT %s, %s, %s::json FROM unsynced"
                   " ON CONFLICT (run_id, index) DO UPDATE SET record = EXCLUDED.record"),
    _LOG_INSERT: f"WITH unsynced AS ({_UNSYNCED_COMMIT}) INSERT INTO pyflow_logs (run_id, entry) SELECT %s, %s::json"
                 " FROM unsynced",
}

# A change as sent: (sql, parameters, what reads its returned row after the commit, if anything).
_Statement = tuple[str, Any, Callable[[psycopg.Connection, tuple | None], None] | None]


class _Deferred:
    """A run's DEFERRED changes not sent yet, and the lock held while a change of the run is sent."""

    def __init__(self) -> None:
        self.statements: list[_Statement] = []
        self.steps: dict[int, _Statement] = {}  # each step's last write among them: a later one replaces it
        self.rows: list[_Statement] = []  # changes of the run's row (update_run): a save of the run replaces them
        self.logs: list[_Statement] = []  # log lines (append_log): a save of the run inserts them itself
        self.sending = threading.Lock()  # a run's changes go one after the other: none overtakes a deferred one
        self.senders = 0  # threads sending or waiting to: the entry stays while there are any


class PostgresStore(Store):
    """The Store interface over PostgreSQL (psycopg 3, a connection pool); ``root`` holds the runs' files.

    SYNC, WRITTEN and REPEATABLE changes are committed before their method
    returns: SYNC and WRITTEN ones durable as PostgreSQL's commit is (its WAL
    fsync'd, and with a standby as ``synchronous_commit`` says), REPEATABLE ones
    without waiting for the WAL's flush (see _UNSYNCED). A DEFERRED change of a
    run this process stored is kept here, read back at once, and sent with the
    run's next other change (one transaction, one round trip) or within
    FLUSH_DELAY.
    """

    local_files = False  # a file lives in pyflow_files, so every host reads it

    def __init__(self, url: str, root: str | Path, *, max_connections: int = 10, wait: float = _POOL_TIMEOUT):
        self.root = Path(root)
        self.where = where(url)
        self._url = url
        self._wait = wait
        self._deferred: dict[str, _Deferred] = {}
        self._known: dict[str, None] = {}  # run ids stored (by this process or read back), oldest first
        self._deferred_lock = threading.Lock()
        self._flush_timer: threading.Timer | None = None
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT) as conn:
                migrate(conn, self.where)
        except psycopg.Error as error:
            raise ConfigError(f"WORKFLOW_DATABASE_URL: cannot use the database at {self.where}: {_cause(error, url)}") \
                from None
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True, "connect_timeout": _CONNECT_TIMEOUT},
            configure=_configure,
            # A connection the server dropped (a restart, a terminated backend) is replaced, not handed out,
            # found without a round trip; one dropped after the look is retried once (_retried).
            check=_alive,
            timeout=wait,  # a caller waits this long for a connection, then gets a 503
            reconnect_timeout=float("inf"),  # a database that went away is tried again until it is back
            name="pyflow-store",
            open=True,
        )

    @contextmanager
    def _conn(self, verb: str) -> Iterator[psycopg.Connection]:
        """A pooled connection; a database that cannot be reached is a StorageError (503) naming it."""
        conn = None
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout:
            # The database is down or unreachable, or every connection stayed busy that long.
            raise StorageError(f"cannot {verb}: no connection to the database at {self.where} "
                               f"within {self._wait:g} s") from None
        except psycopg.OperationalError as error:
            lost = _ConnectionLost if conn is not None and conn.broken else StorageError
            raise lost(f"cannot {verb} in the database at {self.where}: {_cause(error, self._url)}") from None

    # -- changes: sent at once, or (DEFERRED) with the run's next one -------------
    def _change(self, run_id: str, verb: str, statements: list[_Statement], mode: Durability,
                step: int | None = None, *, row: bool = False, log: bool = False) -> None:
        """Send a change of a run, with its earlier deferred ones; or keep it, DEFERRED, for the next.

        ``step``: the change is the whole record of that step, so a deferred earlier one of it is dropped;
        sent, it goes alone (see _send). ``row``: it changes the run's row, which a save replaces. ``log``:
        it adds a log line (its parameters: the run id and the line).
        """
        if mode == Durability.DEFERRED and run_id in self._known:
            with self._deferred_lock:
                deferred = self._deferred.setdefault(run_id, _Deferred())
                if step is not None:
                    replaced = deferred.steps.pop(step, None)
                    if replaced is not None:
                        deferred.statements.remove(replaced)
                    deferred.steps[step] = statements[-1]
                if row:
                    deferred.rows.extend(statements)
                if log:
                    deferred.logs.extend(statements)
                deferred.statements.extend(statements)
                if self._flush_timer is None:
                    self._flush_timer = threading.Timer(FLUSH_DELAY, self._flush_deferred)
                    self._flush_timer.daemon = True
                    self._flush_timer.start()
            return
        self._send(run_id, verb, statements, step, synced=mode not in _UNSYNCED_MODES)

    def _send(self, run_id: str, verb: str, statements: list[_Statement], step: int | None = None, *,
              save: Callable[[list[str], bool], list[_Statement]] | None = None, synced: bool = True) -> None:
        """One transaction, one round trip: the run's deferred changes, then ``statements``.

        ``step``: ``statements`` are that step's whole record, sent alone: the run's other deferred changes
        (its row, log lines, other steps) are on other rows, and wait for the run's next change or flush.
        ``save``: the statements saving the whole run, given its deferred log lines to insert; the deferred
        changes of its row and steps, which the save replaces, are dropped. ``synced``: the commit waits for
        the WAL's flush; else not (REPEATABLE, and DEFERRED ones sent at once: see _UNSYNCED).

        A connection broken under it (the pool's check raced the server closing it) is replaced and the
        change sent once more; its log lines then go in only where the first try did not commit them.
        """
        try:
            self._send_once(run_id, verb, statements, step, save, synced, again=False)
        except _ConnectionLost as error:
            logger.info("%s; trying once more on another connection", error)
            self._send_once(run_id, verb, statements, step, save, synced, again=True)

    def _send_once(self, run_id: str, verb: str, statements: list[_Statement], step: int | None,
                   save: Callable[[list[str], bool], list[_Statement]] | None, synced: bool, again: bool) -> None:
        """One try of _send; ``again``: a try after one whose connection broke, which may have committed."""
        with self._deferred_lock:
            deferred = self._deferred.setdefault(run_id, _Deferred())
            deferred.senders += 1
        try:
            with deferred.sending:
                self._send_locked(run_id, verb, deferred, statements, step, save, synced, again)
        finally:
            with self._deferred_lock:
                deferred.senders -= 1
                if not deferred.senders and not deferred.statements and self._deferred.get(run_id) is deferred:
                    del self._deferred[run_id]

    def _send_locked(self, run_id: str, verb: str, deferred: _Deferred, statements: list[_Statement],
                     step: int | None, save: Callable[[list[str], bool], list[_Statement]] | None,
                     synced: bool, again: bool) -> None:
        """_send with the run's sending lock held."""
        with self._deferred_lock:
            if step is not None:
                replaced = deferred.steps.pop(step, None)
                if replaced is not None:
                    deferred.statements.remove(replaced)
                earlier, todo = [], statements
            else:
                earlier = deferred.statements
                taken = {id(statement) for statement in (*deferred.steps.values(), *deferred.rows, *deferred.logs)}
                logs = [params[1] for _, params, _ in deferred.logs]
                deferred.statements, deferred.steps, deferred.rows, deferred.logs = [], {}, [], []
                if save is None:
                    todo = earlier + statements
                else:  # one statement, in the common case: the save with the deferred log lines in it
                    todo = [statement for statement in earlier if id(statement) not in taken] + save(logs, again)
        if not todo:
            return
        if again:
            todo = [_once(statement) for statement in todo]
        try:
            with self._conn(verb) as conn:
                try:
                    sql, params, after = todo[0]
                    if len(todo) == 1 and (synced or sql in _UNSYNCED):  # one statement: its own transaction
                        cursor = conn.execute(sql if synced else _UNSYNCED[sql], params)
                        rows = [cursor.fetchone() if after is not None else None]
                    else:
                        rows = _in_one_query(conn, run_id, todo, synced)
                except psycopg.Error as error:
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()  # a failed statement left the transaction open (aborted)
                    if isinstance(error, psycopg.errors.ForeignKeyViolation):
                        raise NotFound(f"no run with id {run_id!r}") from None
                    raise
                earlier = []  # committed
                for row, (_, _, after) in zip(rows, todo, strict=True):
                    if after is not None:
                        after(conn, row)
        except NotFound:
            self._forget_run(run_id)  # pruned or never stored: its deferred changes go with it
            raise
        except BaseException:
            if earlier:  # kept, before any deferred since: the next change or flush sends them
                with self._deferred_lock:
                    deferred.statements[:0] = earlier  # (its steps and rows are left out: no replacing across)
            raise
        self._remember(run_id)

    def _remember(self, run_id: str) -> None:
        with self._deferred_lock:
            self._known.pop(run_id, None)
            self._known[run_id] = None
            while len(self._known) > _KNOWN:
                del self._known[next(iter(self._known))]

    def _forget_run(self, run_id: str) -> None:
        with self._deferred_lock:
            self._known.pop(run_id, None)
            self._deferred.pop(run_id, None)

    def _flush_deferred(self) -> None:
        """Send every run's deferred changes (the timer, flush(), close())."""
        with self._deferred_lock:
            self._flush_timer = None
            run_ids = list(self._deferred)
        for run_id in run_ids:
            try:
                self._send(run_id, "write deferred changes", [])
            except Exception as exc:  # kept (unless the run is gone): its next change or flush sends them
                logger.warning("cannot write the deferred changes of run %s: %s", run_id, exc)

    def flush(self, run_id: str | None = None) -> None:
        if run_id is None:
            if self._deferred:
                self._flush_deferred()
        elif run_id in self._deferred:
            self._send(run_id, "write deferred changes", [])

    # -- runs ---------------------------------------------------------------
    def create_run(
        self, run: dict, idempotency_key: str | None = None, *, also: Callable[[psycopg.Connection], None] | None = None
    ) -> tuple[dict, bool]:
        """Store a new run (see Store); ``also(conn)`` runs in its transaction when it is created (a queue's job)."""
        return self._create(run, idempotency_key, also, None, 0.0)

    def create_leased(self, run: dict, idempotency_key: str | None, owner: str, seconds: float) -> tuple[dict, bool]:
        check_lease(owner, seconds)
        run["worker"] = owner
        return self._create(run, idempotency_key, None, owner, seconds)

    def _create(self, run: dict, idempotency_key: str | None, also: Callable[[psycopg.Connection], None] | None,
                owner: str | None, seconds: float) -> tuple[dict, bool]:
        """create_run; with ``owner``, the run created with that owner's lease on it (claim_run's columns)."""
        row = {**_columns(run), "id": run["id"], "key": idempotency_key, "record": _without_steps(run),
               "steps": _dumps(run.get("steps") or []), "owner": owner, "seconds": float(seconds)}
        try:
            return self._create_run(run, row, also, again=False)
        except _ConnectionLost as error:  # the pool's check raced the server closing it: once more
            logger.info("%s; trying once more on another connection", error)
        return self._create_run(run, row, also, again=True)

    def _create_run(self, run: dict, row: dict, also: Callable[[psycopg.Connection], None] | None,
                    again: bool) -> tuple[dict, bool]:
        """create_run's one try; ``again``: a first try may have been committed before its connection broke."""
        with self._conn("store a run") as conn:
            while True:
                try:
                    # The run and its steps in one statement: one round trip, one commit (with ``also``: two).
                    with conn.transaction() if also is not None else contextlib.nullcontext():
                        created = conn.execute(
                            "WITH new AS ("
                            " INSERT INTO pyflow_runs (id, workflow, status, created_at, started_at, finished_at,"
                            "  version, worker, idempotency_key, record, lease_owner, lease_expires)"
                            " VALUES (%(id)s, %(workflow)s, %(status)s, %(created_at)s, %(started_at)s,"
                            "  %(finished_at)s, %(version)s, %(worker)s, %(key)s, %(record)s, %(owner)s::text, CASE"
                            "  WHEN %(owner)s::text IS NOT NULL THEN now() + make_interval(secs => %(seconds)s) END)"
                            " ON CONFLICT (workflow, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
                            " RETURNING id),"
                            " steps AS (INSERT INTO pyflow_steps (run_id, index, record)"
                            "  SELECT new.id, s.ord - 1, s.value FROM new,"
                            "  json_array_elements(%(steps)s::json) WITH ORDINALITY AS s(value, ord))"
                            " SELECT id FROM new",
                            row,
                        ).fetchone()
                        if created is not None and also is not None:
                            also(conn)
                except psycopg.errors.UniqueViolation as error:
                    if again and error.diag.constraint_name == "pyflow_runs_pkey":
                        # The id is random: the run stored under it is this one, by the first try.
                        self._remember(run["id"])
                        return run, True
                    raise ValueError(f"run id {run['id']!r} is already stored") from None
                if created is not None:
                    self._remember(run["id"])
                    return run, True
                found = conn.execute(
                    "SELECT id FROM pyflow_runs WHERE workflow = %s AND idempotency_key = %s",
                    (run["workflow"], row["key"]),
                ).fetchone()
                if again and found is not None and found[0] == run["id"]:  # stored by the first try
                    self._remember(run["id"])
                    return run, True
                first = self._read_run(conn, found[0]) if found else None
                if first is not None:
                    return first, False
                # The first run was pruned in between: its key is free again, so try once more.

    def update_run(self, run_id: str, fields: dict, *, mode: Durability = Durability.SYNC) -> None:
        # One UPDATE: the fields merged into the record in SQL (so it can go with other changes), columns as given.
        columns = _changed_columns(fields)
        merge = {**fields, "steps": None} if "steps" in fields else fields
        text = _dumps(merge)
        fast = "\\u0000" not in text  # else PostgreSQL's json functions cannot read it: merged in Python
        assignments = "".join(f"{name} = %({name})s, " for name in columns)

        def merged(conn: psycopg.Connection, row: tuple | None) -> None:
            if row is None:
                raise NotFound(f"no run with id {run_id!r}")
            if not row[0]:
                _merge_in_python(conn, run_id, merge)

        statements = _steps_statements(run_id, fields["steps"]) if "steps" in fields else []
        statements.append((f"UPDATE pyflow_runs SET {assignments}record = {_merged('fields') if fast else 'record'}"
                           f" WHERE id = %(id)s RETURNING {_NO_NUL} AND %(fast)s",
                           {**columns, "fields": text, "id": run_id, "fast": fast}, merged))
        if "steps" in fields and mode == Durability.DEFERRED:
            mode = Durability.WRITTEN  # a step's later change, sent on its own, must not go before it
        self._change(run_id, "update a run", statements, mode, row=True)

    def update_step(self, run_id: str, index: int, step: dict, *, mode: Durability = Durability.SYNC) -> None:
        if index < 0:
            raise ValueError(f"step index must be >= 0, got {index!r}")
        self._change(run_id, "record a step", [(_STEP_UPSERT, (run_id, index, _dumps(step)), None)], mode, step=index)

    def save_run(self, run: dict) -> None:
        self._save(run, None)

    def save_and_release(self, run: dict, owner: str) -> None:
        self._save(run, owner)

    def _save(self, run: dict, release: str | None) -> None:
        """save_run, and with ``release`` that owner's lease given up in the same statement."""
        row = {**_columns(run), "id": run["id"], "record": _without_steps(run), "steps": _dumps(run.get("steps") or []),
               "release": release}

        def statements(logs: list[str], again: bool) -> list[_Statement]:
            return [(_SAVE_RUN_AGAIN if again else _SAVE_RUN, {**row, "logs": f"[{','.join(logs)}]"}, None)]

        self._send(run["id"], "save a run", [], save=statements)

    @_retried
    def get_run(self, run_id: str) -> dict | None:
        self.flush(run_id)  # this process reads its deferred changes at once
        with self._conn("read a run") as conn:
            return self._read_run(conn, run_id)

    def _read_run(self, conn: psycopg.Connection, run_id: str) -> dict | None:
        # One statement, so the record and its steps come from one snapshot.
        found = conn.execute(
            "SELECT r.record, (SELECT json_agg(json_build_array(s.index, s.record) ORDER BY s.index)"
            " FROM pyflow_steps s WHERE s.run_id = r.id) FROM pyflow_runs r WHERE r.id = %s",
            (run_id,),
        ).fetchone()
        return None if found is None else _assemble(run_id, found[0], found[1])

    @_retried
    def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> tuple[list[dict], str | None]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        where_sql, params = [], {"limit": limit + 1}
        for column, value in (("workflow", workflow), ("status", status)):
            if value is not None:
                where_sql.append(f"r.{column} = %({column})s")
                params[column] = value
        if before is not None:
            where_sql.append("r.id < %(before)s")
            params["before"] = before
        condition = f"WHERE {' AND '.join(where_sql)}" if where_sql else ""
        self.flush()
        with self._conn("list runs") as conn:
            rows = conn.execute(
                "SELECT r.id, r.record, (SELECT json_agg(json_build_array(s.index, s.record) ORDER BY s.index)"
                f" FROM pyflow_steps s WHERE s.run_id = r.id) FROM pyflow_runs r {condition}"
                " ORDER BY r.id DESC LIMIT %(limit)s",
                params,
            ).fetchall()
        runs = [_assemble(run_id, record, steps) for run_id, record, steps in rows[:limit]]
        return runs, (runs[-1]["id"] if len(rows) > limit else None)

    @_retried
    def find_run_ids(self, statuses: set[str]) -> list[str]:
        self.flush()
        with self._conn("find runs") as conn:
            rows = conn.execute("SELECT id FROM pyflow_runs WHERE status = ANY(%s) ORDER BY id",
                                (sorted(statuses),)).fetchall()
        return [row[0] for row in rows]

    def prune(self, older_than: float) -> int:
        finished = sorted(status.value for status in FINISHED_RUN)
        cutoff = datetime.fromtimestamp(older_than, UTC)
        pruned = self._delete_in_batches(
            "prune runs", "DELETE FROM pyflow_runs WHERE id IN (SELECT id FROM pyflow_runs WHERE status = ANY(%s)"
            " AND finished_at < %s LIMIT %s)", (finished, cutoff))
        if pruned:
            logger.info("pruned %d runs from the database at %s", pruned, self.where)
        return pruned

    def _delete_in_batches(self, doing: str, statement: str, params: tuple) -> int:
        """Run a DELETE ... LIMIT %s (its last parameter: the batch) until a batch is short; the rows deleted.

        In batches: no transaction holds thousands of rows' locks for long.
        """
        deleted = 0
        with self._conn(doing) as conn:
            while True:
                count = conn.execute(statement, (*params, _PRUNE_BATCH)).rowcount
                deleted += count
                if count < _PRUNE_BATCH:
                    return deleted

    def close(self) -> None:
        with self._deferred_lock:
            timer, self._flush_timer = self._flush_timer, None
        if timer is not None:
            timer.cancel()
        self._flush_deferred()
        self._pool.close()

    @_retried
    def index_entries(self, *, since: str | None = None) -> list[dict]:
        condition, params = "", ()
        if since is not None:
            condition, params = "WHERE created_at >= %s", (_timestamp(since),)
        self.flush()
        with self._conn("read the index of runs") as conn:
            rows = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM pyflow_runs {condition} ORDER BY id", params).fetchall()
        keys = ("id", "workflow", "status", "created_at", "started_at", "finished_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def append_log(self, run_id: str, entry: dict, *, mode: Durability = Durability.WRITTEN) -> None:
        self._change(run_id, "add a log line", [
            (_LOG_INSERT, (run_id, _dumps(entry)), None)], mode, log=True)

    @_retried
    def get_logs(self, run_id: str) -> list[dict]:
        self.flush(run_id)
        with self._conn("read a run's log") as conn:
            rows = conn.execute("SELECT entry FROM pyflow_logs WHERE run_id = %s ORDER BY seq", (run_id,)).fetchall()
        return [row[0] for row in rows]

    # -- leases ----------------------------------------------------------------
    # Each decided by one UPDATE timed by the database's now(): two hosts claiming at once are serialised on
    # the run's row, and the second sees the first's lease (READ COMMITTED re-checks the WHERE on the new row).
    @_retried
    def claim_run(self, run_id: str, owner: str, seconds: float) -> bool:
        check_lease(owner, seconds)
        with self._conn("claim a run") as conn:
            # One statement: the lease, and the record naming its worker (merged in SQL, keys in place).
            claimed = conn.execute(
                "UPDATE pyflow_runs SET lease_owner = %(owner)s,"
                " lease_expires = now() + make_interval(secs => %(seconds)s), worker = %(owner)s,"
                f" record = {_merged('fields')}"
                " WHERE id = %(id)s AND (lease_owner IS NULL OR lease_expires <= now() OR lease_owner = %(owner)s)"
                f" RETURNING {_NO_NUL}",
                {"id": run_id, "owner": owner, "seconds": float(seconds), "fields": _dumps({"worker": owner})},
            ).fetchone()
            if claimed is None:
                if conn.execute("SELECT 1 FROM pyflow_runs WHERE id = %s", (run_id,)).fetchone() is None:
                    raise NotFound(f"no run with id {run_id!r}")
                return False
            if not claimed[0]:
                _merge_in_python(conn, run_id, {"worker": owner})
        self._remember(run_id)
        return True

    @_retried
    def renew_lease(self, run_id: str, owner: str, seconds: float) -> bool:
        check_lease(owner, seconds)
        with self._conn("renew a lease") as conn:
            return conn.execute(
                "UPDATE pyflow_runs SET lease_expires = now() + make_interval(secs => %s)"
                " WHERE id = %s AND lease_owner = %s RETURNING id",
                (float(seconds), run_id, owner),
            ).fetchone() is not None

    @_retried
    def release_run(self, run_id: str, owner: str) -> None:
        with self._conn("release a run") as conn:
            conn.execute("UPDATE pyflow_runs SET lease_owner = NULL, lease_expires = NULL,"
                         " control = NULL, control_by = NULL, control_at = NULL"
                         " WHERE id = %s AND lease_owner = %s", (run_id, owner))

    @_retried
    def expired_leases(self, now: float | None = None) -> list[str]:
        at = None if now is None else datetime.fromtimestamp(now, UTC)
        with self._conn("find expired leases") as conn:
            rows = conn.execute(
                "SELECT id FROM pyflow_runs WHERE lease_owner IS NOT NULL"
                " AND lease_expires <= COALESCE(%s::timestamptz, now()) AND status = ANY(%s) ORDER BY id",
                (at, sorted(LEASED_STATUSES)),
            ).fetchall()
        return [row[0] for row in rows]

    @_retried
    def unleased_runs(self, older_than: float | None = None) -> list[str]:
        before = None if older_than is None else datetime.fromtimestamp(older_than, UTC)
        with self._conn("find unleased runs") as conn:
            rows = conn.execute(
                "SELECT id FROM pyflow_runs WHERE status = ANY(%s)"
                " AND (lease_owner IS NULL OR lease_expires <= now())"
                " AND (%s::timestamptz IS NULL OR created_at < %s::timestamptz) ORDER BY id",
                (sorted(LEASED_STATUSES), before, before),
            ).fetchall()
        return [row[0] for row in rows]

    # -- control requests ---------------------------------------------------------
    def request_control(self, run_id: str, operation: str, by: str) -> None:
        check_control(run_id, operation)
        # One statement: the row comes back whenever the run exists, changed unless a pause meets a pending cancel.
        with self._conn("request a run's cancel or pause") as conn:
            found = conn.execute(
                f"UPDATE pyflow_runs SET control = CASE WHEN {_KEEP} THEN control ELSE %(operation)s END,"
                f" control_by = CASE WHEN {_KEEP} THEN control_by ELSE %(by)s END,"
                f" control_at = CASE WHEN {_KEEP} THEN control_at ELSE now() END"
                " WHERE id = %(id)s RETURNING id",
                {"id": run_id, "operation": operation, "by": by},
            ).fetchone()
        if found is None:
            raise NotFound(f"no run with id {run_id!r}")

    def take_controls(self, owner: str) -> list[tuple[str, str, str]]:
        # RETURNING gives the new (NULL) values before PostgreSQL 18, so the old ones come from a locking
        # sub-select: a second caller waits on the rows (locked in id order: no deadlock), then (READ COMMITTED)
        # finds them taken and skips them.
        with self._conn("take control requests") as conn:
            rows = conn.execute(
                "WITH pending AS (SELECT id, control, control_by FROM pyflow_runs"
                "  WHERE lease_owner = %s AND control IS NOT NULL AND lease_expires > now() ORDER BY id FOR UPDATE)"
                " UPDATE pyflow_runs r SET control = NULL, control_by = NULL, control_at = NULL"
                " FROM pending WHERE r.id = pending.id RETURNING r.id, pending.control, pending.control_by",
                (owner,),
            ).fetchall()
        return sorted((run_id, operation, by) for run_id, operation, by in rows)

    # -- trigger state and started workflows --------------------------------
    @_retried
    def load_trigger_state(self, workflow: str) -> dict:
        with self._conn("read trigger state") as conn:
            found = conn.execute("SELECT state FROM pyflow_trigger_state WHERE workflow = %s", (workflow,)).fetchone()
        return found[0] if found else {}

    def save_trigger_state(self, workflow: str, state: dict) -> None:
        with self._conn("save trigger state") as conn:
            conn.execute(
                "INSERT INTO pyflow_trigger_state (workflow, state) VALUES (%s, %s)"
                " ON CONFLICT (workflow) DO UPDATE SET state = EXCLUDED.state, saved_at = now()",
                (workflow, _dumps(state)),
            )

    @_retried
    def started_workflows(self) -> set[str]:
        with self._conn("read started workflows") as conn:
            return {row[0] for row in conn.execute("SELECT workflow FROM pyflow_started_workflows")}

    def set_started(self, workflow: str, started: bool) -> None:
        with self._conn("start or stop a workflow") as conn:
            if started:
                conn.execute("INSERT INTO pyflow_started_workflows VALUES (%s) ON CONFLICT DO NOTHING", (workflow,))
            else:
                conn.execute("DELETE FROM pyflow_started_workflows WHERE workflow = %s", (workflow,))

    # -- secrets (ciphertext only) ----------------------------------------------------
    def put_secret(self, name: str, ciphertext: str) -> bool:
        with self._conn("store a secret") as conn:
            # xmax is 0 on a row this statement inserted, set on one it updated.
            return conn.execute(
                "INSERT INTO pyflow_secrets (name, ciphertext) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET ciphertext = EXCLUDED.ciphertext,"
                " updated_at = date_trunc('milliseconds', now()) RETURNING (xmax = 0)",
                (name, ciphertext),
            ).fetchone()[0]

    @_retried
    def get_secret(self, name: str) -> dict | None:
        with self._conn("read a secret") as conn:
            found = conn.execute(f"SELECT {_SECRET_COLUMNS} FROM pyflow_secrets WHERE name = %s", (name,)).fetchone()
        return _secret(found) if found else None

    def list_secrets(self) -> list[dict]:
        with self._conn("list secrets") as conn:
            rows = conn.execute(f"SELECT {_SECRET_COLUMNS} FROM pyflow_secrets ORDER BY name").fetchall()
        return [_secret(row) for row in rows]

    def delete_secret(self, name: str) -> bool:
        with self._conn("delete a secret") as conn:
            return conn.execute("DELETE FROM pyflow_secrets WHERE name = %s", (name,)).rowcount > 0

    # -- workflow definitions ---------------------------------------------------
    def save_definition(self, name: str, definition: dict, expected: int | None = None) -> int:
        # With ``expected`` the row is inserted only while the newest version is that one; two servers
        # expecting the same version both compute the same number, and the primary key lets one in.
        condition = "" if expected is None else " HAVING COALESCE(max(version), 0) = %(expected)s"
        with self._conn("save a definition") as conn:
            while True:
                try:
                    row = conn.execute(
                        "INSERT INTO pyflow_definitions (name, version, definition, saved_at)"
                        " SELECT %(name)s, COALESCE(max(version), 0) + 1, %(definition)s,"
                        " date_trunc('milliseconds', now()) FROM pyflow_definitions WHERE name = %(name)s"
                        f"{condition} RETURNING version",
                        {"name": name, "definition": _dumps(definition), "expected": expected},
                    ).fetchone()
                except psycopg.errors.UniqueViolation:
                    if expected is None:
                        continue  # another process saved a version of it at the same moment: take the next number
                    row = None
                if row is not None:
                    return row[0]
                newest = conn.execute("SELECT COALESCE(max(version), 0) FROM pyflow_definitions WHERE name = %s",
                                      (name,)).fetchone()[0]
                raise Conflict(newer_definition(name, newest, expected))

    @_retried
    def get_definition(self, name: str, version: int | None = None) -> dict | None:
        condition = "AND version = %s" if version is not None else ""
        with self._conn("read a definition") as conn:
            found = conn.execute(
                f"SELECT name, version, definition, to_char(saved_at AT TIME ZONE 'UTC', {_ISO})"
                f" FROM pyflow_definitions WHERE name = %s {condition} ORDER BY version DESC LIMIT 1",
                (name, version) if version is not None else (name,),
            ).fetchone()
        return _definition(found) if found else None

    @_retried
    def list_definitions(self) -> list[dict]:
        with self._conn("list definitions") as conn:
            rows = conn.execute(
                f"SELECT DISTINCT ON (name) name, version, definition, to_char(saved_at AT TIME ZONE 'UTC', {_ISO})"
                " FROM pyflow_definitions ORDER BY name, version DESC"
            ).fetchall()
        return [_definition(row) for row in rows]

    def list_definition_versions(self, name: str) -> list[dict]:
        with self._conn("list a definition's versions") as conn:
            rows = conn.execute(
                f"SELECT version, to_char(saved_at AT TIME ZONE 'UTC', {_ISO}) FROM pyflow_definitions"
                " WHERE name = %s ORDER BY version DESC", (name,),
            ).fetchall()
        return [{"version": version, "saved_at": saved_at} for version, saved_at in rows]

    def delete_definition(self, name: str) -> None:
        with self._conn("delete a definition") as conn:
            conn.execute("DELETE FROM pyflow_definitions WHERE name = %s", (name,))


    # -- files ------------------------------------------------------------------
    # Binary parameters and results (%b, binary=True): the bytes go over the wire as they are, without a hex
    # copy twice their size, so a file costs its size in memory once.
    def put_file(self, key: str, data: bytes | BinaryIO) -> None:
        check_file_key(key)
        content = data if isinstance(data, bytes | bytearray | memoryview) else data.read()
        with self._conn("store a file") as conn:
            conn.execute(
                "INSERT INTO pyflow_files (key, content, size) VALUES (%s, %b, %s) ON CONFLICT (key) DO UPDATE"
                " SET content = excluded.content, size = excluded.size, created_at = excluded.created_at",
                (key, content, len(content)),
            )

    @_retried
    def get_file(self, key: str) -> bytes:
        check_file_key(key)
        with self._conn("read a file") as conn:
            row = conn.execute("SELECT content FROM pyflow_files WHERE key = %s", (key,), binary=True).fetchone()
        if row is None:
            raise NotFound(f"no file {key!r} in the database at {self.where}")
        return bytes(row[0])

    def delete_files(self, prefix: str) -> int:
        check_file_key(prefix)
        with self._conn("delete files") as conn:
            return conn.execute("DELETE FROM pyflow_files WHERE key = %s OR starts_with(key, %s)",
                                (prefix, prefix + "/")).rowcount

    def prune_files(self, older_than: float) -> int:
        cutoff = datetime.fromtimestamp(older_than, UTC)
        pruned = self._delete_in_batches(
            "prune files", "DELETE FROM pyflow_files WHERE key IN (SELECT key FROM pyflow_files WHERE created_at < %s"
            " LIMIT %s)", (cutoff,))
        if pruned:
            logger.info("pruned %d files from the database at %s", pruned, self.where)
        return pruned


    # -- the step cache ------------------------------------------------------------
    def put_cache(self, entry: dict) -> None:
        entry = check_cache_entry(entry)
        with self._conn("store a cache entry") as conn:
            conn.execute(
                "INSERT INTO pyflow_cache (key, workflow, step, run_id, result, created_at, expires_at)"
                " VALUES (%(key)s, %(workflow)s, %(step)s, %(run_id)s, %(result)s, %(created_at)s, %(expires_at)s)"
                " ON CONFLICT (key) DO UPDATE SET workflow = EXCLUDED.workflow, step = EXCLUDED.step,"
                " run_id = EXCLUDED.run_id, result = EXCLUDED.result, created_at = EXCLUDED.created_at,"
                " expires_at = EXCLUDED.expires_at",
                {**entry, "result": _dumps(entry["result"])},
            )

    @_retried
    def get_cache(self, key: str, now: float | None = None) -> dict | None:
        check_cache_key(key)
        now = time.time() if now is None else now
        with self._conn("read a cache entry") as conn:
            row = conn.execute(
                "SELECT key, workflow, step, run_id, result, created_at, expires_at FROM pyflow_cache"
                " WHERE key = %s AND expires_at > %s", (key, now),
            ).fetchone()
        if row is None:
            return None
        return dict(zip(("key", "workflow", "step", "run_id", "result", "created_at", "expires_at"), row, strict=True))

    def prune_cache(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        pruned = self._delete_in_batches(
            "prune the cache", "DELETE FROM pyflow_cache WHERE key IN (SELECT key FROM pyflow_cache"
            " WHERE expires_at <= %s LIMIT %s)", (now,))
        if pruned:
            logger.info("pruned %d expired cache entries from the database at %s", pruned, self.where)
        return pruned

    # -- API tokens ----------------------------------------------------------------
    # -- events seen and parked runs (migration 0007) ------------------------------------
    def record_event(self, event_id: str, event_type: str) -> bool:
        with self._conn("record an event") as conn:
            return conn.execute("INSERT INTO pyflow_events (id, type) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                                (event_id, event_type)).rowcount == 1

    def prune_events(self, older_than: float) -> int:
        with self._conn("prune events") as conn:
            return conn.execute("DELETE FROM pyflow_events WHERE at < %s",
                                (datetime.fromtimestamp(older_than, UTC),)).rowcount

    # -- runs started by one event chain (migration 0010): one count for every process on the database --------
    def count_chain_run(self, chain: str, limit: int) -> int:
        check_chain_run(chain, limit)
        # One statement: the conflicting row is locked and its newest version checked, so servers and workers
        # racing for a chain's last run count it once.
        with self._conn("count a run of an event chain") as conn:
            row = conn.execute(
                "INSERT INTO pyflow_chains (chain, runs) VALUES (%(chain)s, 1) ON CONFLICT (chain) DO UPDATE"
                " SET runs = pyflow_chains.runs + 1, at = now() WHERE pyflow_chains.runs < %(limit)s RETURNING runs",
                {"chain": chain, "limit": limit}).fetchone()
        # No row: the chain's row was left as it was, at its limit.
        return limit if row is None else row[0] - 1

    def prune_chains(self, older_than: float) -> int:
        return self._delete_in_batches(
            "prune event chains", "DELETE FROM pyflow_chains WHERE chain IN (SELECT chain FROM pyflow_chains"
            " WHERE at < %s LIMIT %s)", (datetime.fromtimestamp(older_than, UTC),))

    def park(self, run_id: str, step: str, *, due: float | None = None, event: str | None = None,
             key: str | None = None, outcome: dict | None = None) -> None:
        entry = parked_entry(run_id, step, due, event, key, outcome)
        when = None if due is None else datetime.fromtimestamp(entry["due"], UTC)
        # An entry holding an outcome is replaced only by another one holding an outcome (migration 0009).
        keep_answer = "" if outcome is not None else " WHERE pyflow_parked.outcome IS NULL"
        try:
            with self._conn("park a step") as conn:
                conn.execute(
                    "INSERT INTO pyflow_parked (run_id, step, due, event, key, outcome)"
                    " VALUES (%s, %s, %s, %s, %s, %s::jsonb)"
                    " ON CONFLICT (run_id, step) DO UPDATE SET due = EXCLUDED.due, event = EXCLUDED.event,"
                    " key = EXCLUDED.key, outcome = EXCLUDED.outcome, parked_at = now()" + keep_answer,
                    (run_id, step, when, event, key, None if outcome is None else _dumps(outcome)))
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound(f"no run {run_id!r} in the database at {self.where}") from None

    _PARKED = "run_id, step, extract(epoch FROM due)::float8, event, key, outcome"

    def unpark(self, run_id: str, step: str) -> dict | None:
        with self._conn("unpark a step") as conn:
            row = conn.execute(f"DELETE FROM pyflow_parked WHERE run_id = %s AND step = %s RETURNING {self._PARKED}",
                               (run_id, step)).fetchone()
        return _parked(row) if row else None

    def unpark_run(self, run_id: str) -> list[dict]:
        with self._conn("unpark a run") as conn:
            rows = conn.execute(f"DELETE FROM pyflow_parked WHERE run_id = %s RETURNING {self._PARKED}",
                                (run_id,)).fetchall()
        return sorted((_parked(row) for row in rows), key=lambda entry: entry["step"])

    def parked(self, run_id: str) -> list[dict]:
        with self._conn("read a parked run") as conn:
            rows = conn.execute(f"SELECT {self._PARKED} FROM pyflow_parked WHERE run_id = %s ORDER BY step",
                                (run_id,)).fetchall()
        return [_parked(row) for row in rows]

    def due_parked(self, now: float | None = None, limit: int = 100) -> list[tuple[str, str]]:
        with self._conn("find parked steps that are due") as conn:
            if now is None:
                rows = conn.execute("SELECT run_id, step FROM pyflow_parked WHERE due <= now() ORDER BY due LIMIT %s",
                                    (limit,)).fetchall()
            else:
                rows = conn.execute("SELECT run_id, step FROM pyflow_parked WHERE due <= %s ORDER BY due LIMIT %s",
                                    (datetime.fromtimestamp(now, UTC), limit)).fetchall()
        return [(row[0], row[1]) for row in rows]

    def parked_for(self, event: str, key: str | None) -> list[tuple[str, str]]:
        with self._conn("find steps waiting for an event") as conn:
            rows = conn.execute("SELECT run_id, step FROM pyflow_parked WHERE event = %s"
                                " AND (key IS NULL OR key = %s) ORDER BY run_id, step", (event, key)).fetchall()
        return [(row[0], row[1]) for row in rows]

    def parked_run_ids(self) -> set[str]:
        with self._conn("list the parked runs") as conn:  # the primary key (run_id, step) serves it
            rows = conn.execute("SELECT DISTINCT run_id FROM pyflow_parked").fetchall()
        return {row[0] for row in rows}

    def add_token(self, name: str, role: str, token_hash: str) -> dict:
        with self._conn("add a token") as conn:
            try:
                row = conn.execute(
                    f"INSERT INTO pyflow_tokens (name, role, hash, created) VALUES (%s, %s, %s, %s)"
                    f" RETURNING {_TOKEN_COLUMNS}",
                    (name, role, token_hash, _timestamp(utcnow())),
                ).fetchone()
            except psycopg.errors.UniqueViolation:
                raise Conflict(f"a token named {name!r} exists; delete it first or choose another name") from None
        return _token(row)

    @_retried
    def get_token(self, name: str) -> dict | None:
        with self._conn("read a token") as conn:
            row = conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM pyflow_tokens WHERE name = %s", (name,)).fetchone()
        return _token(row) if row else None

    @_retried
    def find_token(self, token_hash: str) -> dict | None:
        # An index lookup by the hash: its timing tells nothing about a token, only about a hash nobody can invert.
        with self._conn("read a token") as conn:
            row = conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM pyflow_tokens WHERE hash = %s", (token_hash,)).fetchone()
        return _token(row) if row else None

    def list_tokens(self) -> list[dict]:
        with self._conn("list tokens") as conn:
            rows = conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM pyflow_tokens ORDER BY name").fetchall()
        return [_token(row) for row in rows]

    def delete_token(self, name: str) -> bool:
        with self._conn("delete a token") as conn:
            return conn.execute("DELETE FROM pyflow_tokens WHERE name = %s", (name,)).rowcount > 0

    def touch_token(self, name: str, at: str) -> None:
        with self._conn("record a token's use") as conn:
            conn.execute("UPDATE pyflow_tokens SET last_used = %s WHERE name = %s", (_timestamp(at), name))

    # -- the audit log ---------------------------------------------------------------
    def append_audit(self, actor: str, action: str, target: str, details: dict | None = None) -> dict:
        check_entry(actor, action, target)
        with self._conn("append to the audit log") as conn, conn.transaction():
            # Held to the commit: the next appender, on any host, reads this entry as its last.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK_KEY,))
            last = conn.execute(
                f"SELECT (SELECT entry FROM pyflow_audit ORDER BY id DESC LIMIT 1),"
                f" to_char(clock_timestamp() AT TIME ZONE 'UTC', {_ISO})"
            ).fetchone()
            previous, at = last[0], last[1]
            entry = seal(previous["id"] + 1 if previous else 1, at, actor, action, target, details,
                         previous["hash"] if previous else GENESIS)
            conn.execute("INSERT INTO pyflow_audit (id, actor, action, target, entry) VALUES (%s, %s, %s, %s, %s)",
                         (entry["id"], actor, action, target, _dumps(entry)))
        return entry

    def list_audit(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        target: str | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> tuple[list[dict], int | None]:
        check_page(limit, before)
        conditions, params = [], {"limit": limit + 1}
        for column, value in zip(FILTERS, (action, actor, target), strict=True):
            if value is not None:
                conditions.append(f"{column} = %({column})s")
                params[column] = value
        if before is not None:
            conditions.append("id < %(before)s")
            params["before"] = before
        condition = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._conn("read the audit log") as conn:
            rows = conn.execute(f"SELECT entry FROM pyflow_audit {condition} ORDER BY id DESC LIMIT %(limit)s",
                                params).fetchall()
        entries = [row[0] for row in rows[:limit]]
        return entries, (entries[-1]["id"] if len(rows) > limit else None)

    def audit_entries(self) -> Iterator[dict]:
        # A server-side cursor in one transaction: a long log is read in batches, from one snapshot.
        with self._conn("read the audit log") as conn, conn.transaction():
            with conn.cursor(name="pyflow_audit_verify") as cursor:
                cursor.execute("SELECT id, entry FROM pyflow_audit ORDER BY id")
                for row_id, entry in cursor:
                    yield entry if isinstance(entry, dict) else {"unreadable": f"row {row_id} of pyflow_audit"}


def _parked(row: tuple) -> dict:
    return {"run_id": row[0], "step": row[1], "due": row[2], "event": row[3], "key": row[4], "outcome": row[5]}


def _token(row: tuple) -> dict:
    return {"name": row[0], "role": row[1], "hash": row[2], "created": row[3], "last_used": row[4]}

def _configure(conn: psycopg.Connection) -> None:
    """Each pooled connection writes JSON as the store does (compact, no NaN)."""
    set_json_dumps(_dumps, conn)


def _secret(row: tuple) -> dict:
    return {"name": row[0], "ciphertext": row[1], "created_at": row[2], "updated_at": row[3]}


def _definition(row: tuple) -> dict:
    return {"name": row[0], "version": row[1], "definition": row[2], "saved_at": row[3]}


def _assemble(run_id: str, record: dict, steps: list | None) -> dict:
    """A run record from its row and its step rows ([index, record], by index)."""
    listed: list[dict] = []
    for index, step in steps or ():
        if index != len(listed):
            logger.warning("skipping step %d of run %s: the run has %d steps before it", index, run_id, len(listed))
            continue
        listed.append(step)
    record["steps"] = listed
    return record
