"""The durable JSON store: runs, trigger state and definitions in files under one folder."""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import suppress
from functools import partial
from pathlib import Path

from actions.private_files import DIR_MODE, make_private_dir, open_private
from app.errors import Conflict, NotFound, StorageError, storage_error
from app.runs import FINISHED_RUN, parse_time, utcnow
from app.storage.base import (
    CONTROLS,
    LEASED_STATUSES,
    Durability,
    Store,
    check_cache_entry,
    check_cache_key,
    check_control,
    check_lease,
    due_first,
    newer_definition,
    parked_entry,
    replaces,
    waits_for,
)
from app.storage.json import journal_files
from app.storage.json.audit_file import AuditFile
from app.storage.json.files import (
    Mutex,
    dumps,
    fsync_file,
    fsync_folder,
    parse_lines,
    read_file,
    read_json,
    write_all,
    write_atomic,
)
from app.storage.json.index import INDEX_FIELDS, STATUS_FIELDS, RunIndex
from app.storage.json.journal_files import JournalFiles
from app.storage.json.parking import EventIds, WakeIndex
from app.storage.json.wal import WriteAheadLog, replay_orphans

# Its files, its lock order, what is durable when and how a crash is recovered: app/storage/json/README.md.

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")  # run ids and workflow names become file names
_SHARDS = 64
_MAX_CACHED_JOURNALS = 10_000
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
# A write-ahead log this big is checkpointed (its journals fsync'd) in the background and dropped.
_WAL_LIMIT = 8 << 20
_STALE_TEMP_SECONDS = 3600.0
#: Seconds within which a deferred change reaches its file (PostgreSQL's WAL writer wakes this often too).
FLUSH_DELAY = 0.2


class JsonStore(Store):
    """The Store interface over JSON files under ``root``: atomic, journaled and safe across processes."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._runs = self.root / "runs"
        self._keys = self.root / "keys"
        self._triggers = self.root / "triggers"
        self._leases = self.root / "leases"
        self._controls = self.root / "controls"
        self._cache = self.root / "cache"  # one file per cache entry, <sha256 key>.json
        self._workflows_path = self.root / "workflows.json"
        self._secrets_path = self.root / "secrets.json"  # ciphertext only: the key lives elsewhere
        locks = self.root / "locks"
        for folder in (self._runs, self._keys, self._triggers, self._leases, self._controls, self._cache, locks):
            try:
                make_private_dir(folder)
            except OSError as exc:
                raise storage_error("create", folder, exc) from exc
        try:
            os.chmod(self.root, DIR_MODE)  # runs, definitions and uploads are the owner's only
        except OSError as exc:
            logger.warning("cannot make %s private (mode 0700): %s", self.root, exc)
        self._keys_mutex = Mutex(locks / "keys.lock")
        self._workflows_mutex = Mutex(locks / "workflows.lock")
        self._secrets_mutex = Mutex(locks / "secrets.lock")
        # Taken alone, around a lease's or a control request's read and replace.
        self._leases_mutex = Mutex(locks / "leases.lock")
        # API tokens (their hashes) in one small file, replaced whole under its lock; the audit log beside it.
        self._tokens_path = self.root / "tokens.json"
        self._tokens_mutex = Mutex(locks / "tokens.lock")
        self._audit = AuditFile(self.root / "audit.jsonl", Mutex(locks / "audit.lock"))
        # Event ids seen (deduplication) and the wake index of parked runs (app/storage/json/parking.py).
        try:
            self._events = EventIds(self.root / "events")
            self._parked = WakeIndex(self.root / "parked")
        except OSError as exc:
            raise storage_error("create", self.root / "parked", exc) from exc
        # Threads of this process serialise a run's changes on its shard's lock; processes on its journal's lock.
        self._run_locks = [threading.Lock() for _ in range(_SHARDS)]
        # run id -> (inode or None, size, seq) of the journal after this process's last append to it
        self._journals: dict[str, tuple[int | None, int, int]] = {}
        self._files = JournalFiles(self._runs)
        # run id -> [(seq, body)] of deferred changes, oldest first; the run's lock guards a run's list,
        # _deferred_lock the dict and the flush timer
        self._deferred: dict[str, list[tuple[int, bytes]]] = {}
        self._deferred_lock = threading.Lock()
        self._flush_timer: threading.Timer | None = None
        self._index = RunIndex(self.root / "index.jsonl", Mutex(locks / "index.lock"), on_defer=self._flush_soon)
        self._wal = WriteAheadLog(self.root / "wal")
        self._checkpointing = threading.Lock()
        self._replay_orphans()

    # -- runs ---------------------------------------------------------------
    def create_run(self, run: dict, idempotency_key: str | None = None) -> tuple[dict, bool]:
        run_id = _check_name("run id", run["id"])
        if idempotency_key is None:
            self._create(run, None)
            return run, True
        digest = hashlib.sha256(f"{run['workflow']}\0{idempotency_key}".encode()).hexdigest()[:32]
        path = self._keys / f"{digest}.json"
        with self._keys_mutex:
            first = self.get_run((read_json(path, None) or {}).get("run_id", ""))
            if first is not None:
                return first, False
            # The key before the run: a crash in between leaves a key of no run, which counts as unused.
            write_atomic(path, dumps({"workflow": run["workflow"], "key": idempotency_key, "run_id": run_id}))
            self._create(run, digest)
        return run, True

    def update_run(self, run_id: str, fields: dict, *, mode: Durability = Durability.SYNC) -> None:
        self._change(run_id, dumps({"fields": fields}), mode)
        if any(field in fields for field in STATUS_FIELDS):
            # Status lines of the index are hints (a run's own file has the truth): not fsync'd.
            self._index.note(run_id, fields, defer=mode == Durability.DEFERRED)

    def update_step(self, run_id: str, index: int, step: dict, *, mode: Durability = Durability.SYNC) -> None:
        if index < 0:
            raise ValueError(f"step index must be >= 0, got {index!r}")
        self._change(run_id, dumps({"step": index, "record": step}), mode)

    def flush(self, run_id: str | None = None) -> None:
        if run_id is None:
            self._flush_deferred()
            return
        with self._run_lock(run_id):
            self._write_deferred(run_id)
            self._files.close(run_id)  # and with it its lock: another process may take the run over

    def save_run(self, run: dict) -> None:
        run_id = _check_name("run id", run["id"])
        with self._run_lock(run_id):
            # The whole record as one durable journal line. A snapshot here would cost a new file, its
            # fsyncs and an unlink per run; compact() folds finished journals later, off the request path.
            # Its index line is deferred like a creation's (see _create).
            try:
                self._append(
                    run_id, dumps({"run": run}), durable=True, then=partial(self._index.note, run_id, run, defer=True)
                )
            except BaseException:
                self._renote(run_id)
                raise
            self._files.close(run_id)

    def compact(self) -> int:
        self._flush_deferred()
        finished = {status.value for status in FINISHED_RUN}
        try:
            with os.scandir(self._runs) as entries:
                journals = [entry.name[: -len(".journal")] for entry in entries if entry.name.endswith(".journal")]
        except OSError as exc:
            raise storage_error("read", self._runs, exc) from exc
        with self._index.lock:
            self._index.refresh()
            done = [run_id for run_id in journals if (self._index.entries.get(run_id) or {}).get("status") in finished]
        folded = 0
        for run_id in done:
            with self._run_lock(run_id), self._files.locked(run_id, wait=0) as (fd, _):
                if fd < 0:
                    continue  # folded meanwhile, or another process has it open: a later pass folds it
                run = self.get_run(run_id)
                if run is None or run.get("status") not in finished:
                    continue  # retried since: it is running again
                self._fold_logs(run_id)
                write_atomic(self._runs / f"{run_id}.json", dumps({"seq": self._last_seq(run_id), "run": run}))
                self._journals.pop(run_id, None)
                try:
                    (self._runs / f"{run_id}.journal").unlink()
                except OSError as exc:
                    # Harmless: the snapshot's seq tells readers the journal's lines are already in it.
                    logger.warning("cannot remove the journal of %s: %s", run_id, exc)
                folded += 1
        self._checkpoint()
        return folded

    def close(self) -> None:
        with self._deferred_lock:
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
        self._flush_deferred()
        self._checkpoint()
        self._files.close_all()
        self._index.close()

    def get_run(self, run_id: str) -> dict | None:
        if not _NAME.fullmatch(run_id):
            return None
        # The journal before the snapshot: a snapshot read later has a seq >= every line of an older journal,
        # so a compaction in between cannot make us apply newer lines to an older snapshot.
        journal = self._runs / f"{run_id}.journal"
        deferred = self._deferred_lines(run_id)  # before the journal, which may get them meanwhile
        lines = self._journal_lines(run_id)
        snapshot = read_json(self._runs / f"{run_id}.json", None)
        # Before compaction a run is its journal alone, whose first line is the whole record.
        run, base = (snapshot["run"], snapshot["seq"]) if snapshot is not None else ({}, 0)
        for line in lines:
            if line.get("seq", 0) > base:
                _apply(run, line, journal)
        base = max(base, lines[-1].get("seq", 0) if lines else 0)
        for line in deferred:
            if line["seq"] > base:
                _apply(run, line, journal)
        return run if "id" in run else None

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
        with self._index.lock:
            self._index.refresh()
            position = bisect.bisect_left(self._index.ids, before) if before is not None else len(self._index.ids)
            found: list[dict] = []
            while position > 0:
                position -= 1
                entry = self._index.entries[self._index.ids[position]]
                if (workflow is not None and entry["workflow"] != workflow) or (
                    status is not None and entry.get("status") != status
                ):
                    continue
                if len(found) == limit:
                    return found, found[-1]["id"]
                run = self.get_run(self._index.ids[position])
                # The run file may be newer than the index (a status line not yet appended) or gone (pruned).
                if run is not None and (status is None or run["status"] == status):
                    found.append(run)
            return found, None

    def find_run_ids(self, statuses: set[str]) -> list[str]:
        with self._index.lock:
            self._index.refresh()
            return [run_id for run_id in self._index.ids if self._index.entries[run_id].get("status") in statuses]

    def prune(self, older_than: float) -> int:
        self._replay_orphans()  # first, or a dead process's log could bring back a run pruned here
        finished = {status.value for status in FINISHED_RUN}
        with self._index.lock:
            self._index.refresh()
            doomed = {
                run_id: entry.get("key")
                for run_id, entry in self._index.entries.items()
                if entry.get("status") in finished
                and entry.get("finished_at")
                and parse_time(entry["finished_at"]) < older_than
            }
        for run_id, key in doomed.items():
            with self._run_lock(run_id):
                self._journals.pop(run_id, None)
                with self._deferred_lock:
                    self._deferred.pop(run_id, None)
                with self._files.locked(run_id):  # no other process appends while it goes
                    paths = [self._runs / f"{run_id}.{suffix}" for suffix in ("json", "journal", "log")]
                    for path in [*paths, self._lease_path(run_id), self._control_path(run_id)]:
                        try:
                            path.unlink(missing_ok=True)
                        except OSError as exc:
                            raise storage_error("remove", path, exc) from exc
            if key:
                self._remove_key(key, run_id)
        self._parked.drop(set(doomed))
        with self._index.lock:
            if doomed or self._index.needs_rewrite():
                self._index.rewrite(drop=set(doomed))
        self._remove_litter()
        if doomed:
            logger.info("pruned %d runs from %s", len(doomed), self.root)
        return len(doomed)

    def index_entries(self, *, since: str | None = None) -> list[dict]:
        with self._index.lock:
            self._index.refresh()
            entries = [(run_id, self._index.entries[run_id]) for run_id in self._index.ids]
        # ISO 8601 UTC strings with Z sort like the times they name.
        return [
            {"id": run_id, **{field: entry.get(field) for field in INDEX_FIELDS}}
            for run_id, entry in entries
            if since is None or (entry.get("created_at") or "") >= since
        ]

    def append_log(self, run_id: str, entry: dict, *, mode: Durability = Durability.WRITTEN) -> None:
        # A journal line, like a change: a run's log costs no file of its own until compaction.
        self._change(run_id, dumps({"log": entry}), mode)

    def get_logs(self, run_id: str) -> list[dict]:
        if not _NAME.fullmatch(run_id):
            return []
        # The journal before the log file, as in get_run: compaction copies lines to the log file, then removes
        # the journal, so a line is in one of them or (told apart by its seq) in both.
        deferred = self._deferred_lines(run_id)
        lines = self._journal_lines(run_id)
        path = self._runs / f"{run_id}.log"
        try:
            saved = parse_lines(read_file(path), path)[0]
        except FileNotFoundError:
            saved = []
        except OSError as exc:
            raise storage_error("read", path, exc) from exc
        seen = {line.pop("seq", None) for line in saved}
        logs = saved + [line["log"] for line in lines if "log" in line and line["seq"] not in seen]
        top = max((seq for seq in [*seen, *(line.get("seq") for line in lines)] if isinstance(seq, int)), default=0)
        return logs + [line["log"] for line in deferred if "log" in line and line["seq"] > top]

    # -- leases ----------------------------------------------------------------
    def claim_run(self, run_id: str, owner: str, seconds: float) -> bool:
        check_lease(owner, seconds)
        run_id = _check_name("run id", run_id)
        if not any((self._runs / f"{run_id}.{suffix}").exists() for suffix in ("journal", "json")):
            raise NotFound(f"no run {run_id!r} in {self.root}")
        with self._leases_mutex:
            lease, now = self._lease(run_id), time.time()
            if lease is not None and lease["owner"] != owner and lease["expires"] > now:
                return False
            write_atomic(self._lease_path(run_id), dumps({"owner": owner, "expires": now + seconds}))
        # The record names its worker. Checked again under the journal's lock: a claimer that lost the
        # lease meanwhile writes nothing, so the last claimer's name is the one that stays.
        try:
            with self._run_lock(run_id):
                self._append(run_id, dumps({"fields": {"worker": owner}}), durable=False,
                             unless=lambda: (self._lease(run_id) or {}).get("owner") != owner)
        except BaseException:
            self.release_run(run_id, owner)
            raise
        return True

    def renew_lease(self, run_id: str, owner: str, seconds: float) -> bool:
        check_lease(owner, seconds)
        if not _NAME.fullmatch(run_id):
            return False
        with self._leases_mutex:
            if (self._lease(run_id) or {}).get("owner") != owner:
                return False
            write_atomic(self._lease_path(run_id), dumps({"owner": owner, "expires": time.time() + seconds}))
        return True

    def release_run(self, run_id: str, owner: str) -> None:
        if not _NAME.fullmatch(run_id):
            return
        with self._leases_mutex:
            if (self._lease(run_id) or {}).get("owner") == owner:
                # The lease first: a request left behind by a failed second unlink is harmless (taken later).
                for path in (self._lease_path(run_id), self._control_path(run_id)):
                    try:
                        path.unlink(missing_ok=True)
                    except OSError as exc:
                        raise storage_error("remove", path, exc) from exc

    def expired_leases(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        try:
            with os.scandir(self._leases) as entries:
                names = [entry.name[: -len(".json")] for entry in entries if entry.name.endswith(".json")]
        except OSError as exc:
            raise storage_error("read", self._leases, exc) from exc
        expired = set()
        for run_id in names:
            lease = self._lease(run_id) if _NAME.fullmatch(run_id) else None
            if lease is not None and lease["expires"] <= now:
                expired.add(run_id)
        # The index is a hint: each candidate's own file says whether it is still queued or running.
        return [run_id for run_id in self.find_run_ids(set(LEASED_STATUSES))
                if run_id in expired and (self.get_run(run_id) or {}).get("status") in LEASED_STATUSES]

    def unleased_runs(self, older_than: float | None = None) -> list[str]:
        # Costs a pass over the index in memory, then a lease file read per queued or running run (and a
        # read of the run's own file for those without a live lease): not a file read per run stored.
        with self._index.lock:
            self._index.refresh()
            candidates = [
                run_id for run_id in self._index.ids
                if (entry := self._index.entries[run_id]).get("status") in LEASED_STATUSES
                and (older_than is None or _created_before(entry, older_than))
            ]
        now = time.time()
        found = []
        for run_id in candidates:
            if (self._lease(run_id) or {}).get("expires", now) > now:
                continue
            run = self.get_run(run_id)  # the index is a hint: the run's own file has its status
            if run is not None and run.get("status") in LEASED_STATUSES and (
                older_than is None or _created_before(run, older_than)
            ):
                found.append(run_id)
        return found

    # -- control requests ---------------------------------------------------------
    # controls/<id>.json beside the leases, read and replaced under locks/leases.lock: a request is taken
    # by one caller, and checked against the lease it is taken under.
    def request_control(self, run_id: str, operation: str, by: str) -> None:
        check_control(run_id, operation)
        run_id = _check_name("run id", run_id)
        if not any((self._runs / f"{run_id}.{suffix}").exists() for suffix in ("journal", "json")):
            raise NotFound(f"no run {run_id!r} in {self.root}")
        with self._leases_mutex:
            if replaces(operation, (self._control(run_id) or {}).get("operation")):
                write_atomic(self._control_path(run_id),
                             dumps({"operation": operation, "by": by, "at": time.time()}))

    def take_controls(self, owner: str) -> list[tuple[str, str, str]]:
        # Polled about once a second by every worker: a listing of the pending requests (usually none) and
        # a lease read for each, without the lock; the lock only when one of them is ``owner``'s.
        try:
            with os.scandir(self._controls) as entries:
                names = sorted(entry.name[: -len(".json")] for entry in entries if entry.name.endswith(".json"))
        except OSError as exc:
            raise storage_error("read", self._controls, exc) from exc
        mine = [run_id for run_id in names if _NAME.fullmatch(run_id) and self._holds(run_id, owner)]
        if not mine:
            return []
        taken = []
        with self._leases_mutex:
            for run_id in mine:
                control = self._control(run_id)
                if control is None or not self._holds(run_id, owner):
                    continue  # taken by another caller meanwhile, or the lease was lost
                path = self._control_path(run_id)
                try:
                    path.unlink()
                except OSError as exc:
                    raise storage_error("remove", path, exc) from exc
                taken.append((run_id, control["operation"], control["by"]))
        return taken

    def _holds(self, run_id: str, owner: str) -> bool:
        """Whether ``owner`` holds a live lease on the run."""
        lease = self._lease(run_id)
        return lease is not None and lease["owner"] == owner and lease["expires"] > time.time()

    def _control_path(self, run_id: str) -> Path:
        return self._controls / f"{run_id}.json"

    def _control(self, run_id: str) -> dict | None:
        """The run's pending request, ``{"operation", "by", "at"}``, or None; replaced whole, so read without a lock."""
        control = read_json(self._control_path(run_id), None)
        if control is not None and not (isinstance(control, dict) and control.get("operation") in CONTROLS
                                        and isinstance(control.get("by"), str)):
            raise StorageError(f"cannot read {self._control_path(run_id)}: not a control request "
                               "({'operation', 'by', 'at'})")
        return control

    def _lease_path(self, run_id: str) -> Path:
        return self._leases / f"{run_id}.json"

    def _lease(self, run_id: str) -> dict | None:
        """The run's lease, ``{"owner", "expires"}`` (an epoch), or None; replaced whole, so read without a lock."""
        lease = read_json(self._lease_path(run_id), None)
        if lease is not None and not (isinstance(lease, dict) and isinstance(lease.get("owner"), str)
                                      and isinstance(lease.get("expires"), int | float)):
            raise StorageError(f"cannot read {self._lease_path(run_id)}: not a lease ({{'owner', 'expires'}})")
        return lease

    # -- trigger state and started workflows --------------------------------
    def load_trigger_state(self, workflow: str) -> dict:
        return read_json(self._triggers / f"{_check_name('workflow', workflow)}.json", {})

    def save_trigger_state(self, workflow: str, state: dict) -> None:
        write_atomic(self._triggers / f"{_check_name('workflow', workflow)}.json", dumps(state))

    def started_workflows(self) -> set[str]:
        return set(read_json(self._workflows_path, {}).get("started", []))

    def set_started(self, workflow: str, started: bool) -> None:
        # Under a lock, so two processes starting different workflows keep each other's change.
        with self._workflows_mutex:
            names = self.started_workflows()
            changed = (names | {workflow}) if started else (names - {workflow})
            if changed != names:
                write_atomic(self._workflows_path, dumps({"started": sorted(changed)}))

    # -- the step cache: one file per entry, replaced whole (the last writer of a key wins) ------------
    def put_cache(self, entry: dict) -> None:
        entry = check_cache_entry(entry)
        write_atomic(self._cache / f"{entry['key']}.json", dumps(entry))

    def get_cache(self, key: str, now: float | None = None) -> dict | None:
        try:
            entry = read_json(self._cache / f"{check_cache_key(key)}.json", None)
        except StorageError as error:  # a torn or foreign file is a miss, not a failed step
            logger.warning("cache entry %s is unreadable, taken for a miss: %s", key, error)
            return None
        now = time.time() if now is None else now
        return entry if isinstance(entry, dict) and entry.get("expires_at", 0) > now else None

    def prune_cache(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        pruned = 0
        try:
            with os.scandir(self._cache) as entries:
                names = [entry.name for entry in entries if entry.name.endswith(".json")]
        except OSError as exc:
            raise storage_error("list", self._cache, exc) from exc
        for name in names:
            path = self._cache / name
            try:
                entry = read_json(path, None)
            except StorageError:
                entry = None  # unreadable: as good as expired
            if entry is not None and isinstance(entry, dict) and entry.get("expires_at", 0) > now:
                continue
            with suppress(FileNotFoundError):  # another process pruned it first
                path.unlink()
                pruned += 1
        if pruned:
            logger.info("pruned %d expired cache entries from %s", pruned, self._cache)
        return pruned

    # -- secrets: one small file, replaced whole under its lock ------------------------
    def _secrets(self) -> dict[str, dict]:
        return read_json(self._secrets_path, {})

    def put_secret(self, name: str, ciphertext: str) -> bool:
        with self._secrets_mutex:
            secrets = self._secrets()
            now, old = utcnow(), secrets.get(name)
            secrets[name] = {"name": name, "ciphertext": ciphertext,
                             "created_at": old["created_at"] if old else now, "updated_at": now}
            write_atomic(self._secrets_path, dumps(dict(sorted(secrets.items()))))
        return old is None

    def get_secret(self, name: str) -> dict | None:
        return self._secrets().get(name)

    def list_secrets(self) -> list[dict]:
        return [record for _, record in sorted(self._secrets().items())]

    def delete_secret(self, name: str) -> bool:
        with self._secrets_mutex:
            secrets = self._secrets()
            if secrets.pop(name, None) is None:
                return False
            write_atomic(self._secrets_path, dumps(secrets))
        return True

    # -- workflow definitions ---------------------------------------------------
    def _definition_folder(self, name: str) -> Path:
        return self.root / "definitions" / _check_name("workflow", name)

    def _versions(self, folder: Path) -> list[int]:
        try:
            return sorted(int(path.stem[1:]) for path in folder.glob("v*.json") if path.stem[1:].isdigit())
        except OSError as exc:
            raise storage_error("read", folder, exc) from exc

    def save_definition(self, name: str, definition: dict, expected: int | None = None) -> int:
        folder = self._definition_folder(name)
        with self._workflows_mutex:
            try:
                make_private_dir(folder)
            except OSError as exc:
                raise storage_error("create", folder, exc) from exc
            newest = (self._versions(folder) or [0])[-1]
            if expected is not None and newest != expected:
                raise Conflict(newer_definition(name, newest, expected))
            version = newest + 1
            record = {"name": name, "version": version, "definition": definition, "saved_at": utcnow()}
            write_atomic(folder / f"v{version}.json", dumps(record))
        return version

    def get_definition(self, name: str, version: int | None = None) -> dict | None:
        folder = self._definition_folder(name)
        if version is None:
            versions = self._versions(folder)
            if not versions:
                return None
            version = versions[-1]
        return read_json(folder / f"v{version}.json", None)

    def list_definitions(self) -> list[dict]:
        root = self.root / "definitions"
        if not root.is_dir():
            return []
        found = (self.get_definition(folder.name) for folder in sorted(root.iterdir()) if folder.is_dir())
        return [record for record in found if record is not None]

    def list_definition_versions(self, name: str) -> list[dict]:
        folder = self._definition_folder(name)
        found = (read_json(folder / f"v{version}.json", None) for version in reversed(self._versions(folder)))
        return [{"version": record["version"], "saved_at": record["saved_at"]} for record in found if record]

    def delete_definition(self, name: str) -> None:
        folder = self._definition_folder(name)
        with self._workflows_mutex:
            try:
                shutil.rmtree(folder, ignore_errors=False)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise storage_error("remove", folder, exc) from exc

    # -- events seen and parked runs (app/storage/json/parking.py) ------------------------
    def record_event(self, event_id: str, event_type: str) -> bool:
        return self._events.record(event_id, event_type)

    def prune_events(self, older_than: float) -> int:
        return self._events.prune(older_than)

    def park(self, run_id: str, step: str, *, due: float | None = None, event: str | None = None,
             key: str | None = None, outcome: dict | None = None) -> None:
        run_id = _check_name("run id", run_id)
        if not any((self._runs / f"{run_id}.{suffix}").exists() for suffix in ("journal", "json")):
            raise NotFound(f"no run {run_id!r} in {self.root}")
        self._parked.put(parked_entry(run_id, step, due, event, key, outcome))

    def unpark(self, run_id: str, step: str) -> dict | None:
        return self._parked.take(_check_name("run id", run_id), step)

    def unpark_run(self, run_id: str) -> list[dict]:
        return self._parked.take_run(_check_name("run id", run_id))

    def parked(self, run_id: str) -> list[dict]:
        return self._parked.of_run(_check_name("run id", run_id))

    def due_parked(self, now: float | None = None, limit: int = 100) -> list[tuple[str, str]]:
        return due_first(self._parked.entries(), time.time() if now is None else now, limit)

    def parked_for(self, event: str, key: str | None) -> list[tuple[str, str]]:
        return sorted((entry["run_id"], entry["step"]) for entry in self._parked.entries()
                      if waits_for(entry, event, key))

    def parked_run_ids(self) -> set[str]:
        # The entries the waker reads each second, read again only after a change.
        return {entry["run_id"] for entry in self._parked.entries()}

    # -- API tokens --------------------------------------------------------------
    def _read_tokens(self) -> dict[str, dict]:
        tokens = read_json(self._tokens_path, {}).get("tokens", {})
        if not isinstance(tokens, dict):
            raise StorageError(f"cannot read {self._tokens_path}: not a token file ({{'tokens': {{name: record}}}})")
        return tokens

    def _write_tokens(self, tokens: dict[str, dict]) -> None:
        write_atomic(self._tokens_path, dumps({"tokens": tokens}))

    def add_token(self, name: str, role: str, token_hash: str) -> dict:
        with self._tokens_mutex:
            tokens = self._read_tokens()
            if name in tokens:
                raise Conflict(f"a token named {name!r} exists; delete it first or choose another name")
            record = {"name": name, "role": role, "hash": token_hash, "created": utcnow(), "last_used": None}
            tokens[name] = record
            self._write_tokens(tokens)
        return dict(record)

    def get_token(self, name: str) -> dict | None:
        record = self._read_tokens().get(name)
        return dict(record) if isinstance(record, dict) else None

    def find_token(self, token_hash: str) -> dict | None:
        found = None
        for record in self._read_tokens().values():  # every one compared: the time does not depend on which matched
            if isinstance(record, dict) and hmac.compare_digest(str(record.get("hash", "")), token_hash):
                found = record
        return dict(found) if found is not None else None

    def list_tokens(self) -> list[dict]:
        tokens = self._read_tokens()
        return [dict(tokens[name]) for name in sorted(tokens)]

    def delete_token(self, name: str) -> bool:
        with self._tokens_mutex:
            tokens = self._read_tokens()
            if tokens.pop(name, None) is None:
                return False
            self._write_tokens(tokens)
        return True

    def touch_token(self, name: str, at: str) -> None:
        with self._tokens_mutex:
            tokens = self._read_tokens()
            if name in tokens:
                tokens[name]["last_used"] = at
                self._write_tokens(tokens)

    # -- the audit log (app/storage/json/audit_file.py) ----------------------------
    def append_audit(self, actor: str, action: str, target: str, details: dict | None = None) -> dict:
        return self._audit.append(actor, action, target, details)

    def list_audit(self, *, action=None, actor=None, target=None, limit=50, before=None):
        return self._audit.page({"action": action, "actor": actor, "target": target}, limit, before)

    def audit_entries(self) -> Iterator[dict]:
        return self._audit.entries()

    # -- run files ------------------------------------------------------------
    def _run_lock(self, run_id: str) -> threading.Lock:
        return self._run_locks[zlib.crc32(_check_name("run id", run_id).encode()) % _SHARDS]

    def _create(self, run: dict, key: str | None) -> None:
        run_id = run["id"]
        journal = self._runs / f"{run_id}.journal"
        if (self._runs / f"{run_id}.json").exists():
            raise ValueError(f"run {run_id!r} already exists")
        # One new file per run: the journal, whose first line is the whole record.
        line = b'{"seq":1,%s\n' % dumps({"run": run})[1:]
        try:
            fd = open_private(journal, _APPEND | os.O_EXCL)
        except FileExistsError:
            raise ValueError(f"run {run_id!r} already exists") from None
        except OSError as exc:
            raise storage_error("write", journal, exc) from exc
        entry = {field: run.get(field) for field in ("id", *INDEX_FIELDS)}
        if key is not None:
            entry["key"] = key
        try:
            if not journal_files.lock(fd, journal, 0):  # a new file: no other process knows it yet
                raise StorageError(f"cannot lock {journal}: another process holds it")
            write_all(fd, line, journal, 0)
            # The index line is deferred, as soon as the log has the creation: a checkpoint writes the deferred
            # lines before it drops the log, and a replay of a dead process's log restores those it lost.
            self._wal.commit(self._log_ahead(run_id, [line], key, partial(self._index.append, entry, defer=True)))
        except BaseException:
            os.close(fd)
            with suppress(OSError):
                journal.unlink()  # a failed creation leaves nothing behind
            self._index.withdraw(run_id)
            raise
        self._files.keep(run_id, fd)
        self._journals[run_id] = (None, len(line), 1)  # its inode matters only once the descriptor was closed
        self._checkpoint_if_full()

    def _journal_lines(self, run_id: str) -> list[dict]:
        """The whole lines of a run's journal ([] when it has none)."""
        journal = self._runs / f"{run_id}.journal"
        try:
            return parse_lines(read_file(journal), journal)[0]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise storage_error("read", journal, exc) from exc

    def _fold_logs(self, run_id: str) -> None:
        """Copy the log lines of a run's journal, with their seq, to its log file. Call with the journal locked."""
        logs = [line for line in self._journal_lines(run_id) if "log" in line]
        if not logs:
            return
        path = self._runs / f"{run_id}.log"
        try:
            saved = read_file(path)
        except FileNotFoundError:
            saved = b""
        except OSError as exc:
            raise storage_error("read", path, exc) from exc
        lines, end = parse_lines(saved, path)
        seen = {line.get("seq") for line in lines}  # copied by a compaction that died before removing the journal
        new = b"".join(dumps({"seq": line["seq"], **line["log"]}) + b"\n" for line in logs if line["seq"] not in seen)
        if new:
            write_atomic(path, saved[:end] + new)

    def _renote(self, run_id: str) -> None:
        """After a failed save, give the index the status the run's files still have. Call with its lock held."""
        try:
            stored = self.get_run(run_id)
            if stored is not None:
                self._index.note(run_id, stored, defer=True)
        except Exception as exc:  # the save's own error is the one to report
            logger.warning("cannot restore the index line of run %s: %s", run_id, exc)

    def _log_ahead(
        self, run_id: str, lines: list[bytes], key: str | None = None, then: Callable[[], None] | None = None
    ) -> int:
        """Write journal lines, with their run id, to the write-ahead log; the ticket to commit. See WAL.write."""
        head = b'{"id":"%s",' % run_id.encode()
        if key is not None:  # on the creation line
            return self._wal.write(head + b'"key":"%s",' % key.encode() + lines[0][1:], run_id, then)
        return self._wal.write(b"".join(head + line[1:] for line in lines), run_id, then)

    def _change(self, run_id: str, body: bytes, mode: Durability) -> None:
        """Record one change of a run as far as ``mode`` says (see Durability)."""
        with self._run_lock(run_id):
            if mode == Durability.DEFERRED and self._defer(run_id, body):
                return
            self._append(run_id, body, durable=mode == Durability.SYNC)

    def _defer(self, run_id: str, body: bytes) -> bool:
        """Keep a change for the run's next append; False when this process does not know the run's last seq.

        Call with the run's lock held.
        """
        with self._deferred_lock:
            pending = self._deferred.get(run_id)
            if pending:
                seq = pending[-1][0] + 1
            else:
                cached = self._journals.get(run_id)
                if cached is None:
                    return False  # its first change in this process: appended now, which reads the seq
                seq = cached[2] + 1
                pending = self._deferred[run_id] = []
            pending.append((seq, body))
        self._flush_soon()
        return True

    def _flush_soon(self) -> None:
        """Have the deferred changes written within FLUSH_DELAY."""
        with self._deferred_lock:
            if self._flush_timer is None:
                self._flush_timer = threading.Timer(FLUSH_DELAY, self._flush_deferred)
                self._flush_timer.daemon = True
                self._flush_timer.start()

    def _deferred_lines(self, run_id: str) -> list[dict]:
        """The run's deferred changes as journal lines; read them before the journal."""
        pending = list(self._deferred.get(run_id, ()))
        return [{**json.loads(body), "seq": seq} for seq, body in pending]

    def _flush_deferred(self) -> None:
        """Write every deferred change (the flush timer, compaction, close)."""
        with self._deferred_lock:
            self._flush_timer = None
            run_ids = list(self._deferred)
        for run_id in run_ids:
            try:
                with self._run_lock(run_id):
                    self._write_deferred(run_id)
            except Exception as exc:  # kept: the run's next change or flush writes them or reports why not
                logger.warning("cannot write the deferred changes of run %s: %s", run_id, exc)
        try:
            self._index.flush()
        except Exception as exc:
            logger.warning("cannot write the deferred lines of %s: %s", self._index.path, exc)

    def _write_deferred(self, run_id: str) -> None:
        """Append the run's deferred changes, if any. Call with the run's lock held."""
        if self._deferred.get(run_id):
            self._append(run_id, None, durable=False)

    def _append(
        self,
        run_id: str,
        body: bytes | None,
        durable: bool,
        then: Callable[[], None] | None = None,
        unless: Callable[[], bool] | None = None,
    ) -> None:
        """Append the run's deferred changes and ``body`` to its journal with one os.write.

        ``then`` runs once the change is written (to the write-ahead log too when ``durable``); when
        ``unless``, asked with the journal locked, is true, nothing is written and the journal let go.
        Call with the run's lock held.
        """
        path = self._runs / f"{run_id}.journal"
        fd, stat = self._files.take(run_id)
        try:
            skip = unless is not None and unless()
        except BaseException:
            self._files.close(run_id, fd)
            raise
        if skip:
            self._files.close(run_id, fd)
            return
        pending = self._deferred.get(run_id, [])
        try:
            cached = self._journals.pop(run_id, None)
            if cached is not None and (stat is None or cached[:2] == (stat.st_ino, stat.st_size)):
                inode, size, seq = cached if stat is None else (stat.st_ino, *cached[1:])
            else:
                # First append of this process, or another process appended or saved: read what is there.
                seq, size = self._resync(run_id, fd)
                inode = (stat or os.fstat(fd)).st_ino
            lines = []
            for change in [*(body for _, body in pending), *([body] if body else [])]:
                seq += 1
                # A change is '{"step":...}': put the seq first, in the same single write.
                lines.append(b'{"seq":%d,%s\n' % (seq, change[1:]))
            data = b"".join(lines)
            write_all(fd, data, path, size)
            if durable:
                # Durable once the write-ahead log is: its fsync is shared with the other runs committing now.
                try:
                    self._wal.commit(self._log_ahead(run_id, lines, then=then))
                except BaseException:
                    with suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            elif then is not None:
                then()
            if len(self._journals) >= _MAX_CACHED_JOURNALS:
                self._journals.clear()
            self._journals[run_id] = (inode, size + len(data), seq)
        except NotFound:
            self._files.close(run_id, fd)
            with self._deferred_lock:
                self._deferred.pop(run_id, None)  # the run is gone: so are its changes
            raise
        except BaseException:
            self._files.close(run_id, fd)
            raise
        if pending:
            with self._deferred_lock:
                del pending[: len(lines) - bool(body)]
                if not pending:
                    self._deferred.pop(run_id, None)
        self._files.keep(run_id, fd)
        if durable:
            self._checkpoint_if_full()

    def _resync(self, run_id: str, fd: int) -> tuple[int, int]:
        """The last seq of a run and the size of its journal, with a torn last line cut off."""
        path = self._runs / f"{run_id}.journal"
        seq, end, exists = self._scan(run_id)
        if not exists:
            # Our open created the journal (or found one a crashed prune left): a run without a record is gone.
            with suppress(OSError):
                path.unlink()
            raise NotFound(f"no run {run_id!r} in {self.root}")
        if end < os.fstat(fd).st_size:
            logger.warning("cutting a torn last line off %s", path)
            try:
                os.ftruncate(fd, end)
            except OSError as exc:
                raise storage_error("write", path, exc) from exc
        return seq, end

    def _scan(self, run_id: str) -> tuple[int, int, bool]:
        """(last seq, length of the journal's whole lines, whether the run exists), read from the files."""
        journal = self._runs / f"{run_id}.journal"
        try:
            lines, end = parse_lines(read_file(journal), journal)
        except FileNotFoundError:
            lines, end = [], 0
        except OSError as exc:
            raise storage_error("read", journal, exc) from exc
        snapshot = read_json(self._runs / f"{run_id}.json", None)
        seq = max([snapshot["seq"] if snapshot else 0] + [line.get("seq", 0) for line in lines])
        return seq, end, snapshot is not None or any("run" in line for line in lines)

    def _last_seq(self, run_id: str) -> int:
        """The seq of the run's newest change. Call with the journal locked."""
        cached = self._journals.get(run_id)
        if cached is not None:
            try:
                stat = os.stat(self._runs / f"{run_id}.journal")
                if cached[:2] == (stat.st_ino, stat.st_size):
                    return cached[2]
            except OSError:
                pass
        return self._scan(run_id)[0]

    # -- the write-ahead log ----------------------------------------------------
    def _checkpoint_if_full(self) -> None:
        if self._wal.size >= _WAL_LIMIT and self._checkpointing.acquire(blocking=False):
            threading.Thread(target=self._checkpoint_in_background, name="pyflow-checkpoint", daemon=True).start()

    def _checkpoint_in_background(self) -> None:
        try:
            self._checkpoint()
        except Exception:
            logger.exception("checkpoint of %s failed; the next start replays its write-ahead log", self.root)
            return
        finally:
            self._checkpointing.release()
        # Writes that came in meanwhile may have filled the new segment: no later write may come to notice.
        self._checkpoint_if_full()

    def _checkpoint(self) -> None:
        """fsync the journals (and index) the write-ahead log's current segment covers, then drop it."""
        segment = self._wal.rotate()
        if segment is None:
            return
        try:
            for run_id in segment.keys:
                try:
                    fsync_file(self._runs / f"{run_id}.journal")
                except FileNotFoundError:
                    pass  # compacted (into an fsync'd snapshot) or pruned since
            fsync_folder(self._runs)
            self._index.sync()
        except BaseException:
            os.close(segment.fd)  # the segment stays: the next start (or prune) replays it, which is harmless
            raise
        self._wal.drop(segment)

    def _replay_orphans(self) -> None:
        replay_orphans(self.root / "wal", self._replay)

    def _replay(self, lines: list[dict]) -> None:
        """Add to the journals and the index what a dead process committed and a power loss took from them."""
        changes: dict[str, list[dict]] = {}
        keys: dict[str, str] = {}
        for line in lines:
            run_id = line.pop("id", None)
            if isinstance(run_id, str) and _NAME.fullmatch(run_id) and isinstance(line.get("seq"), int):
                changes.setdefault(run_id, []).append(line)
                if isinstance(line.get("key"), str):
                    keys[run_id] = line.pop("key")  # on the creation line of a run made with an Idempotency-Key
        restored = 0
        for run_id, logged in changes.items():
            with self._run_lock(run_id):
                self._journals.pop(run_id, None)
                restored += self._restore(run_id, logged)
        if restored:
            fsync_folder(self._runs)
            logger.warning("restored lost changes of %d runs in %s from a write-ahead log", restored, self.root)
        # Index lines are not fsync'd either: every run the log names gets its line back if it lost it.
        for run_id in changes:
            run = self.get_run(run_id)
            if run is not None:
                self._index.note(run_id, run, keys.get(run_id))
        self._index.sync()

    def _restore(self, run_id: str, logged: list[dict]) -> bool:
        """Append the ``logged`` lines the run's journal lacks; whether it lacked any. Call with the run's lock held."""
        with self._files.locked(run_id) as (fd, _):
            end, missing = self._missing(run_id, logged)
            if fd >= 0 or not missing:
                if missing:
                    self._write_missing(run_id, fd, end, missing)
                return bool(missing)
        # No journal: a lost creation, or changes made after a compaction. Made anew, and read again under its lock.
        with self._files.locked(run_id, create=True) as (fd, _):
            end, missing = self._missing(run_id, logged)
            if missing:
                self._write_missing(run_id, fd, end, missing)
        return bool(missing)

    def _write_missing(self, run_id: str, fd: int, end: int, missing: list[dict]) -> None:
        path = self._runs / f"{run_id}.journal"
        try:
            os.ftruncate(fd, end)  # a torn last line must not swallow ours
            write_all(fd, b"".join(dumps(line) + b"\n" for line in missing), path, end)
            os.fsync(fd)
        except OSError as exc:
            raise storage_error("write", path, exc) from exc

    def _missing(self, run_id: str, logged: list[dict]) -> tuple[int, list[dict]]:
        """The length of the journal's whole lines, and which ``logged`` lines it lacks ([] for a pruned run)."""
        seq, end, exists = self._scan(run_id)
        missing = [line for line in logged if line["seq"] > seq]
        if missing and not exists and "run" not in missing[0]:
            return end, []  # pruned since
        return end, missing

    def _remove_key(self, key: str, run_id: str) -> None:
        path = self._keys / f"{key}.json"
        with self._keys_mutex:
            # The key may have been taken again by a newer run since its run finished.
            if (read_json(path, None) or {}).get("run_id") == run_id:
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise storage_error("remove", path, exc) from exc

    def _remove_litter(self) -> None:
        """Remove what a killed process left behind: temporary files, and journals it made but never wrote to."""
        # A live writer replaces its temporary file, and writes its new journal, within seconds.
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for folder in (self.root, self._runs, self._keys, self._triggers, self._leases, self._controls):
            with suppress(OSError), os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                        with suppress(OSError):
                            if entry.stat().st_mtime < cutoff:
                                os.unlink(entry.path)
        empty = []
        with suppress(OSError), os.scandir(self._runs) as entries:
            for entry in entries:
                with suppress(OSError):
                    if entry.name.endswith(".journal") and _NAME.fullmatch(entry.name[: -len(".journal")]):
                        stat = entry.stat()
                        if not stat.st_size and stat.st_mtime < cutoff:
                            empty.append(entry.name[: -len(".journal")])
        for run_id in empty:
            with self._run_lock(run_id), self._files.locked(run_id, wait=0) as (fd, stat):
                if fd < 0 or stat.st_size:
                    continue  # someone holds it, or wrote to it, after all
                try:
                    os.unlink(self._runs / f"{run_id}.journal")
                except OSError as exc:
                    logger.warning("cannot remove the empty journal of %s: %s", run_id, exc)


def _check_name(what: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{what} must be 1-128 letters, digits, '_' or '-', got {name!r}")
    return name


def _created_before(entry: dict, epoch: float) -> bool:
    """Whether a run (or its index entry) was created before ``epoch``."""
    return bool(entry.get("created_at")) and parse_time(entry["created_at"]) < epoch


def _apply(run: dict, line: dict, journal: Path) -> None:
    """Apply one journal line to a run record."""
    if "run" in line:  # the whole record, as a run was saved when it finished
        run.clear()
        run.update(line["run"])
        return
    if "fields" in line:
        run.update(line["fields"])
        return
    if "log" in line:  # a log line (get_logs)
        return
    steps, index = run.setdefault("steps", []), line.get("step")
    if isinstance(index, int) and 0 <= index < len(steps):
        steps[index] = line["record"]
    elif index == len(steps):  # a step added while the run goes (a loop)
        steps.append(line["record"])
    else:
        logger.warning("skipping a change of step %r in %s: the run has %d steps", index, journal, len(steps))
