"""The Store interface: what the runtime needs from wherever runs and state are kept."""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from actions.atomic import write_atomic
from actions.private_files import make_private_dir
from app.errors import NotFound, storage_error


class Durability(StrEnum):
    """How far a change has gone when the Store method that records it returns."""

    #: On disk: fsync'd through the write-ahead log (its fsync shared by the threads committing at once),
    #: so a power loss keeps it.
    SYNC = "sync"
    #: Written to the file, not fsync'd: in the kernel, so a kill -9 of the process keeps it, a power loss may not.
    #: (PostgreSQL: committed, as SYNC.)
    WRITTEN = "written"
    #: WRITTEN, for a change whose loss only makes idempotent work run again (an idempotent step's end) or
    #: takes a line from a run's log (an action's own lines).
    #: PostgreSQL commits it without waiting for the WAL's flush: a kill -9 of the process keeps it, a crash
    #: of the database server may undo it, with the changes made after it, until a SYNC one has been made.
    REPEATABLE = "repeatable"
    #: Kept in this process, which reads it at once; its file gets it with the run's next written change or
    #: within FLUSH_DELAY, so a kill -9 may lose it. Written at once when this process does not know the run yet.
    DEFERRED = "deferred"


def newer_definition(name: str, newest: int, expected: int | None) -> str:
    """The Conflict message of a save that expected another newest version (If-Match)."""
    return f"workflow {name!r} is at version {newest}; you edited version {expected}"


class Store(ABC):
    """Where runs, trigger state and started workflows live.

    Every method is safe to call from several threads at once. Records are
    plain JSON dicts (see app/runs.py); the store never interprets a run
    beyond its id, workflow, status and timestamps.
    """

    #: Folder for files that belong to runs (attachments, outbox).
    root: Path
    #: True when a file put under a key is the file ``root/key`` on this host's disk (memory, JSON), so a
    #: file saved there is in the store already; False when the store keeps its own copy (PostgreSQL).
    local_files: bool = True

    # -- runs ---------------------------------------------------------------
    @abstractmethod
    def create_run(self, run: dict, idempotency_key: str | None = None) -> tuple[dict, bool]:
        """Store a new run before it is answered.

        With an ``idempotency_key`` already used for the run's workflow, store
        nothing and return ``(first_run, False)``; else ``(run, True)``.
        """

    # A change goes as far as its ``mode`` says (see Durability); creations and saves are always SYNC.
    @abstractmethod
    def update_run(self, run_id: str, fields: dict, *, mode: Durability = Durability.SYNC) -> None:
        """Record changed run-level fields (status, started_at, error, progress...)."""

    @abstractmethod
    def update_step(self, run_id: str, index: int, step: dict, *, mode: Durability = Durability.SYNC) -> None:
        """Record the whole record of the step at ``index``; cost does not grow with the run."""

    def flush(self, run_id: str | None = None) -> None:
        """Write deferred changes now: a run's (a halted run's, before another process takes it over), or all."""
        return None

    @abstractmethod
    def save_run(self, run: dict) -> None:
        """Replace the whole record (used when a run finishes)."""

    @abstractmethod
    def get_run(self, run_id: str) -> dict | None:
        """One run, or None."""

    @abstractmethod
    def list_runs(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> tuple[list[dict], str | None]:
        """Runs newest first and the cursor of the next page (None on the last)."""

    @abstractmethod
    def find_run_ids(self, statuses: set[str]) -> list[str]:
        """Ids of runs in any of ``statuses``, oldest first (crash recovery)."""

    @abstractmethod
    def prune(self, older_than: float) -> int:
        """Delete finished runs that finished before the epoch ``older_than``."""

    def compact(self) -> int:
        """Fold finished runs' change logs into their records (maintenance); how many were folded."""
        return 0

    def close(self) -> None:
        """Make everything durable where it belongs and release the store's files (at shutdown)."""
        return None

    @abstractmethod
    def index_entries(self, *, since: str | None = None) -> list[dict]:
        """Index lines of runs created at or after ISO time ``since``, oldest first (metrics).

        Each is ``{"id", "workflow", "status", "created_at", "started_at", "finished_at"}``;
        no run file is read.
        """

    @abstractmethod
    def append_log(self, run_id: str, entry: dict, *, mode: Durability = Durability.WRITTEN) -> None:
        """Add one log line (``{"at", "level", "step", "message"}``) to a run."""

    @abstractmethod
    def get_logs(self, run_id: str) -> list[dict]:
        """A run's log lines, oldest first."""

    # -- leases: which worker executes a run (DESIGN section 11) ------------------
    # Times are the store's clock: the database's now() on PostgreSQL (hosts with skewed clocks agree),
    # time.time() on memory and JSON (one host). A lease is kept beside the run, never in its record.
    @abstractmethod
    def claim_run(self, run_id: str, owner: str, seconds: float) -> bool:
        """Take the run's lease for ``seconds`` when it has none, it expired or ``owner`` holds it (a renewal).

        False when another owner holds a live lease. A claim names ``owner`` in the record's ``"worker"``.
        NotFound for an unknown run; ValueError for an empty owner or seconds that are not > 0.
        """

    @abstractmethod
    def renew_lease(self, run_id: str, owner: str, seconds: float) -> bool:
        """Extend ``owner``'s lease to ``seconds`` from now; False when it lost it (released, or taken over)."""

    @abstractmethod
    def release_run(self, run_id: str, owner: str) -> None:
        """Give up ``owner``'s lease, so another may claim the run at once; nothing when another holds it."""

    def create_leased(self, run: dict, idempotency_key: str | None, owner: str, seconds: float) -> tuple[dict, bool]:
        """create_run, with ``owner``'s lease claimed on the run when it is created (one commit where the store can).

        For a run its creator executes: nobody else can hold a new run's lease. The record names ``owner``
        in ``"worker"`` as a claim does.
        """
        run["worker"] = owner
        stored, created = self.create_run(run, idempotency_key)
        if created:
            self.claim_run(run["id"], owner, seconds)
        return stored, created

    def save_and_release(self, run: dict, owner: str) -> None:
        """save_run, then release_run: a run that ended where it was leased (one commit where the store can)."""
        self.save_run(run)
        self.release_run(run["id"], owner)

    @abstractmethod
    def expired_leases(self, now: float | None = None) -> list[str]:
        """Ids of queued or running runs whose lease ended by epoch ``now`` (default: the store's now), oldest first.

        Candidates for takeover: their worker stopped renewing (it died, or lost the database).
        """

    @abstractmethod
    def unleased_runs(self, older_than: float | None = None) -> list[str]:
        """Ids of queued or running runs with no live lease (created before epoch ``older_than``), oldest first."""

    # -- control requests: cancel or pause a run executing in another process ----------
    # One pending request per run: a pause never replaces a pending cancel, a cancel replaces a pending pause.
    # A request outlives its lease (a worker taking the run over still honours it); release_run drops it.
    @abstractmethod
    def request_control(self, run_id: str, operation: str, by: str) -> None:
        """Ask the run's executing process to ``operation`` ("cancel" or "pause") it; NotFound, ValueError."""

    @abstractmethod
    def take_controls(self, owner: str) -> list[tuple[str, str, str]]:
        """Take the pending ``(run_id, operation, by)`` of runs ``owner`` holds a live lease on, oldest run first."""

    # -- trigger state and started workflows --------------------------------
    @abstractmethod
    def load_trigger_state(self, workflow: str) -> dict:
        """The trigger state saved for ``workflow`` ({} when none)."""

    @abstractmethod
    def save_trigger_state(self, workflow: str, state: dict) -> None:
        """Durably replace the trigger state of ``workflow``."""

    @abstractmethod
    def started_workflows(self) -> set[str]:
        """Names of workflows that were started and not stopped."""

    @abstractmethod
    def set_started(self, workflow: str, started: bool) -> None:
        """Durably remember that ``workflow`` is started (or no longer)."""

    # -- workflow definitions made through the API -----------------------------
    @abstractmethod
    def save_definition(self, name: str, definition: dict, expected: int | None = None) -> int:
        """Store a new version of a definition; returns its version number (1, 2, ...).

        ``expected``: store it only while the newest version is that one (0: none yet), else Conflict
        and nothing stored; of several saves expecting the same version, one is stored (If-Match).
        """

    @abstractmethod
    def get_definition(self, name: str, version: int | None = None) -> dict | None:
        """``{"name", "version", "definition", "saved_at"}`` of a version (default: the newest), or None."""

    @abstractmethod
    def list_definitions(self) -> list[dict]:
        """The newest version of every stored definition."""

    @abstractmethod
    def list_definition_versions(self, name: str) -> list[dict]:
        """``[{"version", "saved_at"}]`` of every stored version of ``name``, newest first ([] for none)."""

    @abstractmethod
    def delete_definition(self, name: str) -> None:
        """Forget every version of a definition."""

    # -- secrets: ciphertext only (app/core/secrets.py encrypts; the key is never in the store) -------
    # A record is {"name", "ciphertext", "created_at", "updated_at"} (UTC ISO times, as runs have).
    @abstractmethod
    def put_secret(self, name: str, ciphertext: str) -> bool:
        """Store a secret's ciphertext: True when the name is new, False when it replaced one (created_at kept)."""

    @abstractmethod
    def get_secret(self, name: str) -> dict | None:
        """A secret's record, or None."""

    @abstractmethod
    def list_secrets(self) -> list[dict]:
        """Every secret's record, by name."""

    @abstractmethod
    def delete_secret(self, name: str) -> bool:
        """Forget a secret; False when there was none of that name."""

    # -- API tokens (DESIGN section 10): a token is kept as its sha256 (hex), never itself --------
    # A record is {"name", "role", "hash", "created", "last_used"} (times UTC ISO with Z, last_used None until used).
    @abstractmethod
    def add_token(self, name: str, role: str, token_hash: str) -> dict:
        """Store a new token's record and return it; Conflict when ``name`` is taken."""

    @abstractmethod
    def get_token(self, name: str) -> dict | None:
        """The record of the token named ``name``, or None."""

    @abstractmethod
    def find_token(self, token_hash: str) -> dict | None:
        """The record whose hash is ``token_hash`` (compared in constant time where the store compares), or None."""

    @abstractmethod
    def list_tokens(self) -> list[dict]:
        """Every token's record, by name."""

    @abstractmethod
    def delete_token(self, name: str) -> bool:
        """Forget a token; False when there was none of that name."""

    @abstractmethod
    def touch_token(self, name: str, at: str) -> None:
        """Record that the token was used at ISO time ``at`` (nothing when it is gone)."""

    # -- events seen, and the wake index of parked runs (DESIGN section 12; app/core/parking.py) --------
    @abstractmethod
    def record_event(self, event_id: str, event_type: str) -> bool:
        """Remember an event's id; True when it is new, False when it was recorded before (do nothing twice).

        Atomic across threads and processes: of two callers with one id, exactly one gets True.
        """

    @abstractmethod
    def prune_events(self, older_than: float) -> int:
        """Forget the event ids recorded before epoch ``older_than``; how many."""

    # Runs started by the runs' ends of one event chain (app/core/events.py, MAX_CHAIN_RUNS). Here they are
    # counted in this process (ChainRuns): a memory or JSON store serves one process, and a JSON store's
    # counts restart with it. PostgreSQL keeps them in a table, so the count holds across the cluster.
    def count_chain_run(self, chain: str, limit: int) -> int:
        """Count one more run of ``chain`` unless it counted ``limit``; how many it counted before, at most ``limit``.

        Below ``limit`` the run is counted and the caller starts it; at ``limit`` nothing changes and the
        caller starts nothing. Check and count are one step: of callers racing for a chain's last run, one
        gets ``limit - 1``. ValueError for an empty chain or a limit that is not an integer >= 1.
        """
        return self._chain_runs().count(chain, limit)

    def prune_chains(self, older_than: float) -> int:
        """Forget the chains that last counted a run before epoch ``older_than``; how many."""
        return self._chain_runs().prune(older_than)

    def _chain_runs(self) -> ChainRuns:
        """This store's in-process chain counts, made at first use (the stores' __init__ do not call the base's)."""
        counts = self.__dict__.get("_chain_counts")
        if counts is None:
            with _CHAIN_RUNS_MADE:
                counts = self.__dict__.setdefault("_chain_counts", ChainRuns())
        return counts

    @abstractmethod
    def park(self, run_id: str, step: str, *, due: float | None = None, event: str | None = None,
             key: str | None = None, outcome: dict | None = None) -> None:
        """Index a waiting step (one entry per run and step): wake it at epoch ``due``, on an event of type
        ``event`` (with ``key``), or both; an entry with neither waits for an answer (an approval).

        Replaces the step's entry, except an entry holding an ``outcome`` (its answer came while its run was
        busy: it waits for the run to halt), which only another entry with an ``outcome`` replaces.
        """

    @abstractmethod
    def unpark(self, run_id: str, step: str) -> dict | None:
        """Take a step's entry out of the index: ``{"run_id", "step", "due", "event", "key", "outcome"}`` for
        the one caller that took it (it wakes the step), None when there was none (another took it first)."""

    @abstractmethod
    def unpark_run(self, run_id: str) -> list[dict]:
        """Take every entry of the run out of the index (a cancel); those taken."""

    @abstractmethod
    def parked(self, run_id: str) -> list[dict]:
        """The run's entries in the wake index, by step name."""

    @abstractmethod
    def due_parked(self, now: float | None = None, limit: int = 100) -> list[tuple[str, str]]:
        """(run id, step) of entries whose ``due`` passed by epoch ``now`` (default: the store's now), soonest first."""

    @abstractmethod
    def parked_for(self, event: str, key: str | None) -> list[tuple[str, str]]:
        """(run id, step) of entries waiting for an event of type ``event``: for ``key``, or for any key."""

    @abstractmethod
    def parked_run_ids(self) -> set[str]:
        """Ids of the runs with an entry in the wake index, no run read (the Waiting page counts paused runs so)."""

    # -- the audit log: append-only, hash-chained (app/storage/audit_chain.py) -------------------
    @abstractmethod
    def append_audit(self, actor: str, action: str, target: str, details: dict | None = None) -> dict:
        """Append an entry after the newest one and return it (its id, at, prev and hash set here).

        Appends are serialised across threads and processes (and, on PostgreSQL, hosts): the chain
        never forks. ValueError for an empty actor, action or target.
        """

    @abstractmethod
    def list_audit(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        target: str | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> tuple[list[dict], int | None]:
        """Entries newest first with ids below ``before``, filtered; and the next page's cursor (None on the last)."""

    @abstractmethod
    def audit_entries(self) -> Iterator[dict]:
        """Every entry, oldest first, as stored (``audit verify`` checks them); an unreadable line is
        ``{"unreadable": "<where>"}``."""

    # -- the step cache (docs/step-cache.md): results of cached steps, by a sha256 key ----------------
    # An entry is {"key", "workflow", "step", "run_id", "result", "created_at", "expires_at"} (times: epoch
    # seconds). The key is a hash (check_cache_key): the rendered config it stands for is never stored.
    @abstractmethod
    def put_cache(self, entry: dict) -> None:
        """Store ``entry`` under its ``key``, replacing any entry of that key."""

    @abstractmethod
    def get_cache(self, key: str, now: float | None = None) -> dict | None:
        """The entry of ``key`` unless it expired by ``now`` (default: the time now), or None."""

    @abstractmethod
    def prune_cache(self, now: float | None = None) -> int:
        """Delete the entries expired by ``now`` (maintenance); how many were deleted."""

    # -- files ----------------------------------------------------------------
    def files_path(self, *parts: str) -> Path:
        """A folder under the store's root, created when missing."""
        path = self.root.joinpath(*parts)
        try:
            make_private_dir(path)
        except OSError as exc:  # a file in the way, a read-only disk: a 503, not a 500
            raise storage_error("create", path, exc) from exc
        return path

    # Files that runs need on any host (uploads, e-mail attachments), under keys such as
    # "attachments/<folder>/<name>" (check_file_key). Here: the files under ``root`` themselves, so
    # nothing is copied twice; PostgreSQL overrides these with a table (DESIGN section 11).
    def put_file(self, key: str, data: bytes | BinaryIO) -> None:
        """Store ``data`` (bytes, or a binary file read to its end) under ``key``, replacing what was there."""
        path = self.root / check_file_key(key)
        try:
            make_private_dir(path.parent)
            write_atomic(path, data)  # 0600, and no reader sees half a file
        except OSError as exc:
            raise storage_error("store", path, exc) from exc

    def get_file(self, key: str) -> bytes:
        """The bytes stored under ``key``; NotFound when there are none."""
        path = self.root / check_file_key(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no file {key!r} in the store at {self.root}") from None
        except OSError as exc:
            raise storage_error("read", path, exc) from exc

    def delete_files(self, prefix: str) -> int:
        """Delete the file ``prefix`` and every file under the folder ``prefix/``; how many."""
        path = self.root / check_file_key(prefix)
        try:
            if path.is_dir():
                count = sum(len(files) for _, _, files in os.walk(path))
                shutil.rmtree(path)
                return count
            path.unlink()
            return 1
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise storage_error("delete", path, exc) from exc

    def prune_files(self, older_than: float) -> int:
        """Delete files stored before the epoch ``older_than`` (and folders they leave empty); how many."""
        pruned = 0
        for area in FILE_AREAS:
            top = self.root / area
            for folder, _, names in os.walk(top, topdown=False):
                for name in names:
                    path = Path(folder, name)
                    try:
                        if path.stat().st_mtime < older_than:
                            path.unlink()
                            pruned += 1
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        raise storage_error("delete", path, exc) from exc
                if Path(folder) != top:
                    try:
                        # Only an emptied folder older than the cutoff goes: a fresh one is an upload's,
                        # made a moment before its files are written (removing it failed the upload).
                        if os.stat(folder).st_mtime < older_than:
                            os.rmdir(folder)
                    except OSError as exc:
                        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                            raise storage_error("delete", Path(folder), exc) from exc
        return pruned


_CHAIN_RUNS_MADE = threading.Lock()
#: Chains a store counts in its process at once (ChainRuns): the least recently counted are forgotten.
MAX_CHAINS_KEPT = 10_000


def check_chain_run(chain: str, limit: int) -> None:
    """A ValueError naming the argument when count_chain_run cannot use ``chain`` or ``limit``."""
    if not isinstance(chain, str) or not chain:
        raise ValueError(f"a chain is the non-empty id of the event it began with, got {chain!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"a chain's limit of runs must be an integer >= 1, got {limit!r}")


class ChainRuns:
    """Runs counted per event chain in one process (the memory and JSON stores' count_chain_run)."""

    def __init__(self, kept: int = MAX_CHAINS_KEPT):
        self._kept = kept
        # chain -> (runs counted, epoch of the last), least recently asked first; runs end on many threads at once.
        self._chains: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def count(self, chain: str, limit: int) -> int:
        """Store.count_chain_run, in this process."""
        check_chain_run(chain, limit)
        with self._lock:
            runs, at = self._chains.pop(chain, (0, 0.0))
            self._chains[chain] = (runs + 1, time.time()) if runs < limit else (runs, at)
            while len(self._chains) > self._kept:
                self._chains.popitem(last=False)
        return min(runs, limit)

    def prune(self, older_than: float) -> int:
        """Forget the chains that last counted a run before epoch ``older_than``; how many."""
        with self._lock:
            old = [chain for chain, (_, at) in self._chains.items() if at < older_than]
            for chain in old:
                del self._chains[chain]
        return len(old)


#: The folders under a store's root whose files have keys (check_file_key).
FILE_AREAS = ("attachments",)


def check_file_key(key: str) -> str:
    """``key`` when it names a file inside a file area, such as ``attachments/<folder>/<name>``; else ValueError."""
    parts = PurePosixPath(key).parts if isinstance(key, str) else ()
    if (not isinstance(key, str) or not key or "\\" in key or "\0" in key or key.startswith("/")
            or len(parts) < 2 or parts[0] not in FILE_AREAS or key != "/".join(parts)
            or any(part in (".", "..") for part in parts)):
        raise ValueError(f"a file key must be a relative name such as 'attachments/<folder>/<name>', "
                         f"without '..', '.' or a leading '/', got {key!r}")
    return key


_CACHE_KEY = re.compile(r"[0-9a-f]{64}")
_CACHE_FIELDS = ("key", "workflow", "step", "run_id", "result", "created_at", "expires_at")


def check_cache_key(key: str) -> str:
    """``key`` when it is a cache key (64 lower-case hex digits, a sha256); else ValueError."""
    if not isinstance(key, str) or not _CACHE_KEY.fullmatch(key):
        raise ValueError(f"a cache key is a sha256 in 64 lower-case hex digits, got {key!r}")
    return key


def check_cache_entry(entry: dict) -> dict:
    """``entry`` with exactly the fields of a cache entry (check_cache_key, numeric times); else ValueError."""
    missing = [field for field in _CACHE_FIELDS if field not in entry]
    if missing:
        raise ValueError(f"a cache entry needs {', '.join(_CACHE_FIELDS)}; missing {', '.join(missing)}")
    check_cache_key(entry["key"])
    for field in ("created_at", "expires_at"):
        if isinstance(entry[field], bool) or not isinstance(entry[field], int | float):
            raise ValueError(f"a cache entry's {field} is epoch seconds, got {entry[field]!r}")
    return {field: entry[field] for field in _CACHE_FIELDS}


#: Run statuses whose expired lease makes the run a candidate for takeover.
# A waiting run holds no lease: its wake index entry (park) says when and on what it continues.
LEASED_STATUSES = frozenset({"queued", "running"})
#: What request_control may ask of a run, the stronger first (a pending cancel is never replaced by a pause).
CONTROLS = ("cancel", "pause")


def check_lease(owner: str, seconds: float) -> None:
    """A ValueError naming the argument when a lease's owner or length cannot be used."""
    if not isinstance(owner, str) or not owner.strip():
        raise ValueError(f"a lease's owner must be a non-empty string such as 'host:pid', got {owner!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not (0 < seconds < math.inf):
        raise ValueError(f"a lease's seconds must be a number > 0, got {seconds!r}")


def check_control(run_id: str, operation: str) -> None:
    """A ValueError naming the run and the value when ``operation`` is not one of CONTROLS."""
    if operation not in CONTROLS:
        raise ValueError(f"cannot request {operation!r} of run {run_id!r}: the operation must be 'cancel' or 'pause'")


def replaces(operation: str, pending: str | None) -> bool:
    """Whether a request for ``operation`` replaces the ``pending`` one (cancel wins over pause)."""
    return not (pending == "cancel" and operation == "pause")


def parked_entry(run_id: str, step: str, due: float | None, event: str | None, key: str | None,
                 outcome: dict | None = None) -> dict:
    """A wake index entry as every backend answers it; ValueError for a field of the wrong kind."""
    if not isinstance(step, str) or not step:
        raise ValueError(f"run {run_id}: a parked step needs its name, got {step!r}")
    if due is not None and (isinstance(due, bool) or not isinstance(due, int | float) or not math.isfinite(due)):
        raise ValueError(f"run {run_id}: due must be an epoch in seconds or None, got {due!r}")
    for field, value in (("event", event), ("key", key)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"run {run_id}: {field} must be a string or None, got {type(value).__name__}")
    if outcome is not None and not isinstance(outcome, dict):
        raise ValueError(f"run {run_id}: a parked step's outcome must be a dict or None, got {type(outcome).__name__}")
    return {"run_id": run_id, "step": step, "due": None if due is None else float(due), "event": event, "key": key,
            "outcome": outcome}


def due_first(entries: Iterable[dict], now: float, limit: int) -> list[tuple[str, str]]:
    """(run id, step) of the entries due by ``now``, soonest first (the memory and JSON stores' due_parked)."""
    due = [entry for entry in entries if isinstance(entry.get("due"), int | float) and entry["due"] <= now]
    return [(entry["run_id"], entry["step"]) for entry in sorted(due, key=lambda entry: entry["due"])[:limit]]


def waits_for(entry: dict, event: str, key: str | None) -> bool:
    """Whether a wake index entry waits for an event of type ``event`` with ``key`` (an entry without key: any)."""
    return entry.get("event") == event and (entry.get("key") is None or entry.get("key") == key)
