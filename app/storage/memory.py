"""A store that keeps everything in memory: for tests and benchmarks."""

from __future__ import annotations

import bisect
import copy
import hmac
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.errors import Conflict, NotFound
from app.runs import FINISHED_RUN, parse_time, snapshot, utcnow
from app.storage.audit_chain import GENESIS, check_entry, check_page, matches, seal
from app.storage.base import (
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

# Types a record's copy may share with the original: nothing can change them in place.
_IMMUTABLE = (str, int, float, bool, type(None))


def _copied(value: Any) -> Any:
    """A deep copy of a JSON-shaped record, as isolating as ``copy.deepcopy`` at a third of its cost.

    Run records are dicts and lists of texts and numbers: rebuilt directly, with no memo or dispatch per value
    (deepcopy was the largest single cost of a no-op run with this store). Anything else is deep-copied.
    """
    if type(value) is dict:
        return {key: _copied(item) for key, item in value.items()}
    if type(value) is list:
        return [_copied(item) for item in value]
    if isinstance(value, _IMMUTABLE):
        return value
    return copy.deepcopy(value)


class MemoryStore(Store):
    """The Store interface over dicts; nothing survives the process."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="pyflow-"))
        self._lock = threading.Lock()
        self._runs: dict[str, dict] = {}
        self._ids: list[str] = []  # sorted; ids sort by creation time
        self._keys: dict[tuple[str, str], str] = {}
        self._trigger_state: dict[str, dict] = {}
        self._started: set[str] = set()
        self._logs: dict[str, list[dict]] = {}
        self._definitions: dict[str, list[dict]] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # run id -> (owner, epoch when it ends)
        self._controls: dict[str, tuple[str, str]] = {}  # run id -> (operation, by) of its pending request
        self._secrets: dict[str, dict] = {}

        self._cache: dict[str, dict] = {}
        self._tokens: dict[str, dict] = {}
        self._audit: list[dict] = []
        self._events: dict[str, float] = {}  # event id -> epoch recorded
        self._parked: dict[tuple[str, str], dict] = {}  # (run id, step) -> its wake index entry

    def create_run(self, run: dict, idempotency_key: str | None = None) -> tuple[dict, bool]:
        with self._lock:
            if run["id"] in self._runs:
                raise ValueError(f"run id {run['id']!r} is already stored")
            if idempotency_key is not None:
                key = (run["workflow"], idempotency_key)
                first = self._runs.get(self._keys.get(key, ""))
                if first is not None:
                    return _copied(first), False
                self._keys[key] = run["id"]
            self._runs[run["id"]] = snapshot(run)
            bisect.insort(self._ids, run["id"])
        return run, True

    def _stored(self, run_id: str) -> dict:
        run = self._runs.get(run_id)
        if run is None:
            raise NotFound(f"no run with id {run_id!r}")
        return run

    def update_run(self, run_id: str, fields: dict, *, mode: Durability = Durability.SYNC) -> None:
        with self._lock:
            self._stored(run_id).update(_copied(fields))

    def update_step(self, run_id: str, index: int, step: dict, *, mode: Durability = Durability.SYNC) -> None:
        # A shallow copy: the engine replaces a step's values, it never mutates them in place.
        with self._lock:
            self._stored(run_id)["steps"][index] = dict(step)

    def save_run(self, run: dict) -> None:
        with self._lock:
            if run["id"] not in self._runs:
                bisect.insort(self._ids, run["id"])
            self._runs[run["id"]] = snapshot(run)

    def get_run(self, run_id: str) -> dict | None:
        with self._lock:
            run = self._runs.get(run_id)
            return _copied(run) if run is not None else None

    def list_runs(self, *, workflow=None, status=None, limit=50, before=None):
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        with self._lock:
            end = bisect.bisect_left(self._ids, before) if before else len(self._ids)
            found: list[dict] = []
            for position in range(end - 1, -1, -1):
                run = self._runs[self._ids[position]]
                if (workflow is None or run["workflow"] == workflow) and (status is None or run["status"] == status):
                    if len(found) == limit:
                        return found, found[-1]["id"]
                    found.append(_copied(run))
            return found, None

    def find_run_ids(self, statuses: set[str]) -> list[str]:
        with self._lock:
            return [run_id for run_id in self._ids if self._runs[run_id]["status"] in statuses]

    def prune(self, older_than: float) -> int:
        finished = {status.value for status in FINISHED_RUN}
        with self._lock:
            doomed = [
                run_id
                for run_id, run in self._runs.items()
                if run["status"] in finished and run["finished_at"] and parse_time(run["finished_at"]) < older_than
            ]
            for run_id in doomed:
                del self._runs[run_id]
                self._logs.pop(run_id, None)
                self._leases.pop(run_id, None)
                self._controls.pop(run_id, None)
                for entry in [key for key in self._parked if key[0] == run_id]:
                    del self._parked[entry]
            self._ids = [run_id for run_id in self._ids if run_id in self._runs]
            self._keys = {key: run_id for key, run_id in self._keys.items() if run_id in self._runs}
        return len(doomed)

    def index_entries(self, *, since: str | None = None) -> list[dict]:
        fields = ("id", "workflow", "status", "created_at", "started_at", "finished_at")
        with self._lock:
            runs = [self._runs[run_id] for run_id in self._ids]
        return [{field: run.get(field) for field in fields} for run in runs
                if since is None or (run.get("created_at") or "") >= since]

    def append_log(self, run_id: str, entry: dict, *, mode: Durability = Durability.WRITTEN) -> None:
        with self._lock:
            self._logs.setdefault(run_id, []).append(dict(entry))

    def get_logs(self, run_id: str) -> list[dict]:
        with self._lock:
            return [dict(entry) for entry in self._logs.get(run_id, [])]

    def claim_run(self, run_id: str, owner: str, seconds: float) -> bool:
        check_lease(owner, seconds)
        with self._lock:
            run = self._stored(run_id)
            now = time.time()
            held = self._leases.get(run_id)
            if held is not None and held[0] != owner and held[1] > now:
                return False
            self._leases[run_id] = (owner, now + seconds)
            run["worker"] = owner
            return True

    def renew_lease(self, run_id: str, owner: str, seconds: float) -> bool:
        check_lease(owner, seconds)
        with self._lock:
            if self._leases.get(run_id, ("",))[0] != owner:
                return False
            self._leases[run_id] = (owner, time.time() + seconds)
            return True

    def release_run(self, run_id: str, owner: str) -> None:
        with self._lock:
            if self._leases.get(run_id, ("",))[0] == owner:
                del self._leases[run_id]
                self._controls.pop(run_id, None)

    def expired_leases(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        with self._lock:
            return sorted(run_id for run_id, (_, ends) in self._leases.items()
                          if ends <= now and self._runs[run_id]["status"] in LEASED_STATUSES)

    def unleased_runs(self, older_than: float | None = None) -> list[str]:
        now = time.time()
        with self._lock:
            return [
                run_id for run_id in self._ids
                if self._runs[run_id]["status"] in LEASED_STATUSES
                and self._leases.get(run_id, ("", now))[1] <= now
                and (older_than is None or _created_before(self._runs[run_id], older_than))
            ]

    def request_control(self, run_id: str, operation: str, by: str) -> None:
        check_control(run_id, operation)
        with self._lock:
            self._stored(run_id)
            if replaces(operation, self._controls.get(run_id, (None,))[0]):
                self._controls[run_id] = (operation, by)

    def take_controls(self, owner: str) -> list[tuple[str, str, str]]:
        now = time.time()
        with self._lock:
            mine = sorted(run_id for run_id in self._controls
                          if (lease := self._leases.get(run_id)) is not None and lease[0] == owner and lease[1] > now)
            return [(run_id, *self._controls.pop(run_id)) for run_id in mine]

    def save_definition(self, name: str, definition: dict, expected: int | None = None) -> int:
        with self._lock:
            versions = self._definitions.setdefault(name, [])
            if expected is not None and len(versions) != expected:
                raise Conflict(newer_definition(name, len(versions), expected))
            versions.append({"name": name, "version": len(versions) + 1, "definition": copy.deepcopy(definition),
                             "saved_at": utcnow()})
            return len(versions)

    def get_definition(self, name: str, version: int | None = None) -> dict | None:
        with self._lock:
            versions = self._definitions.get(name, [])
            if not versions or (version is not None and not 1 <= version <= len(versions)):
                return None
            return copy.deepcopy(versions[-1 if version is None else version - 1])

    def list_definitions(self) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(versions[-1]) for _, versions in sorted(self._definitions.items()) if versions]

    def list_definition_versions(self, name: str) -> list[dict]:
        with self._lock:
            return [{"version": record["version"], "saved_at": record["saved_at"]}
                    for record in reversed(self._definitions.get(name, []))]

    def delete_definition(self, name: str) -> None:
        with self._lock:
            self._definitions.pop(name, None)

    def put_cache(self, entry: dict) -> None:
        entry = copy.deepcopy(check_cache_entry(entry))
        with self._lock:
            self._cache[entry["key"]] = entry

    def get_cache(self, key: str, now: float | None = None) -> dict | None:
        check_cache_key(key)
        now = time.time() if now is None else now
        with self._lock:
            entry = self._cache.get(key)
            return copy.deepcopy(entry) if entry is not None and entry["expires_at"] > now else None

    def prune_cache(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            expired = [key for key, entry in self._cache.items() if entry["expires_at"] <= now]
            for key in expired:
                del self._cache[key]
        return len(expired)

    def put_secret(self, name: str, ciphertext: str) -> bool:
        now = utcnow()
        with self._lock:
            old = self._secrets.get(name)
            self._secrets[name] = {"name": name, "ciphertext": ciphertext,
                                   "created_at": old["created_at"] if old else now, "updated_at": now}
            return old is None

    def get_secret(self, name: str) -> dict | None:
        with self._lock:
            found = self._secrets.get(name)
            return dict(found) if found else None

    def list_secrets(self) -> list[dict]:
        with self._lock:
            return [dict(self._secrets[name]) for name in sorted(self._secrets)]

    def delete_secret(self, name: str) -> bool:
        with self._lock:
            return self._secrets.pop(name, None) is not None

    def load_trigger_state(self, workflow: str) -> dict:
        with self._lock:
            return copy.deepcopy(self._trigger_state.get(workflow, {}))

    def save_trigger_state(self, workflow: str, state: dict) -> None:
        with self._lock:
            self._trigger_state[workflow] = copy.deepcopy(state)

    def started_workflows(self) -> set[str]:
        with self._lock:
            return set(self._started)

    def set_started(self, workflow: str, started: bool) -> None:
        with self._lock:
            (self._started.add if started else self._started.discard)(workflow)

    def record_event(self, event_id: str, event_type: str) -> bool:
        with self._lock:
            if event_id in self._events:
                return False
            self._events[event_id] = time.time()
            return True

    def prune_events(self, older_than: float) -> int:
        with self._lock:
            old = [event_id for event_id, at in self._events.items() if at < older_than]
            for event_id in old:
                del self._events[event_id]
        return len(old)

    def park(self, run_id: str, step: str, *, due: float | None = None, event: str | None = None,
             key: str | None = None, outcome: dict | None = None) -> None:
        entry = parked_entry(run_id, step, due, event, key, copy.deepcopy(outcome))
        with self._lock:
            if run_id not in self._runs:
                raise NotFound(f"no run {run_id!r} in this memory store")
            held = self._parked.get((run_id, step))
            if outcome is not None or held is None or held["outcome"] is None:
                self._parked[(run_id, step)] = entry

    def unpark(self, run_id: str, step: str) -> dict | None:
        with self._lock:
            entry = self._parked.pop((run_id, step), None)
        return copy.deepcopy(entry)

    def unpark_run(self, run_id: str) -> list[dict]:
        with self._lock:
            return [self._parked.pop(key) for key in sorted(key for key in self._parked if key[0] == run_id)]

    def parked(self, run_id: str) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(self._parked[key]) for key in sorted(key for key in self._parked if key[0] == run_id)]

    def due_parked(self, now: float | None = None, limit: int = 100) -> list[tuple[str, str]]:
        with self._lock:
            entries = list(self._parked.values())
        return due_first(entries, time.time() if now is None else now, limit)

    def parked_for(self, event: str, key: str | None) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(found for found, entry in self._parked.items() if waits_for(entry, event, key))

    def parked_run_ids(self) -> set[str]:
        with self._lock:
            return {run_id for run_id, _ in self._parked}

    def add_token(self, name: str, role: str, token_hash: str) -> dict:
        with self._lock:
            if name in self._tokens:
                raise Conflict(f"a token named {name!r} exists; delete it first or choose another name")
            record = {"name": name, "role": role, "hash": token_hash, "created": utcnow(), "last_used": None}
            self._tokens[name] = record
            return dict(record)

    def get_token(self, name: str) -> dict | None:
        with self._lock:
            record = self._tokens.get(name)
            return dict(record) if record is not None else None

    def find_token(self, token_hash: str) -> dict | None:
        with self._lock:
            found = None
            for record in self._tokens.values():  # every one compared: the time does not depend on which matched
                if hmac.compare_digest(record["hash"], token_hash):
                    found = record
            return dict(found) if found is not None else None

    def list_tokens(self) -> list[dict]:
        with self._lock:
            return [dict(self._tokens[name]) for name in sorted(self._tokens)]

    def delete_token(self, name: str) -> bool:
        with self._lock:
            return self._tokens.pop(name, None) is not None

    def touch_token(self, name: str, at: str) -> None:
        with self._lock:
            if name in self._tokens:
                self._tokens[name]["last_used"] = at

    def append_audit(self, actor: str, action: str, target: str, details: dict | None = None) -> dict:
        check_entry(actor, action, target)
        with self._lock:
            last = self._audit[-1] if self._audit else None
            entry = seal(last["id"] + 1 if last else 1, utcnow(), actor, action, target, copy.deepcopy(details),
                         last["hash"] if last else GENESIS)
            self._audit.append(entry)
            return copy.deepcopy(entry)

    def list_audit(self, *, action=None, actor=None, target=None, limit=50, before=None):
        check_page(limit, before)
        filters = {"action": action, "actor": actor, "target": target}
        with self._lock:
            found: list[dict] = []
            for entry in reversed(self._audit):
                if (before is not None and entry["id"] >= before) or not matches(entry, filters):
                    continue
                if len(found) == limit:
                    return found, found[-1]["id"]
                found.append(copy.deepcopy(entry))
            return found, None

    def audit_entries(self) -> Iterator[dict]:
        with self._lock:
            entries = copy.deepcopy(self._audit)
        yield from entries


def _created_before(run: dict, epoch: float) -> bool:
    return bool(run.get("created_at")) and parse_time(run["created_at"]) < epoch
