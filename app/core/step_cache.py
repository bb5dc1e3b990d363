"""Step caching: a step whose type, rendered config and workflow version match a recent success is not executed.

The methods of ``Caching`` are Engine methods (app/core/engine.py mixes it in), kept here apart from the
step loop. The engine calls ``_from_cache`` in ``_run_step`` before a step's first attempt and
``_remember`` when a step succeeds. docs/step-cache.md has the behaviour; in short:

- The key is the sha256 of canonical JSON: the workflow's name and version, the step's type and its
  rendered config (a secret in it is hashed, never stored); or, with ``cache: {key}``, the workflow's name,
  the step's name and the rendered key. A key that renders to nothing runs the step uncached (logged).
- An entry holds the step's result as its run recorded it (secrets scrubbed) and the run it came from;
  a hit is used only when it is younger than the step's own ttl; entries are pruned once expired.
- The cache is the store's (memory, JSON, PostgreSQL), so servers and workers share it. A cache that
  cannot be read or written never fails a step: the step runs, or its result is not kept (logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from actions.base import BaseAction
from actions.limits import MAX_RESULT_BYTES, json_size
from app.core.execution import Execution, one_line
from app.core.templating import RenderError
from app.runs import utcnow
from workflows.base import Workflow

if TYPE_CHECKING:
    from app.core.engine import Engine

logger = logging.getLogger(__name__)

# BaseAction attributes that are how the engine runs a step, not what the step does: not in its key.
ENGINE_OPTIONS = frozenset({"name", "when", "retries", "step_timeout", "depends_on", "on_failure", "compensate",
                            "cache", "context"})


def canonical(value: Any) -> bytes:
    """``value`` as canonical JSON (sorted keys, no spaces); what is no JSON counts by its repr."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr).encode()


def step_config(action: BaseAction) -> dict[str, Any]:
    """What a rendered step does: its public attributes but the engine's options."""
    return {key: value for key, value in vars(action).items() if not key.startswith("_") and key not in ENGINE_OPTIONS}


def workflow_version(workflow: type[Workflow]) -> str:
    """The version a cache entry belongs to: an API definition's number, a file definition's digest, a class's name."""
    if workflow.version is not None:
        return f"v{workflow.version}"
    if workflow.definition is not None:
        return "sha256:" + hashlib.sha256(canonical(workflow.definition)).hexdigest()
    return f"python:{workflow.__module__}.{workflow.__qualname__}"


def cache_key(workflow: type[Workflow], action: BaseAction, *, rendered_key: Any = None) -> str:
    """The sha256 (hex) a step's result is cached under: of its type and config, or of its rendered ``key``."""
    if rendered_key is not None:
        material: dict[str, Any] = {"workflow": workflow.name, "step": action.name, "key": rendered_key}
    else:
        material = {"workflow": workflow.name, "version": workflow_version(workflow), "type": action.type,
                    "config": step_config(action)}
    return hashlib.sha256(canonical(material)).hexdigest()


def is_nothing(value: Any) -> bool:
    """True for what a key template renders to when its names are missing: None, blank text, an empty container."""
    return value is None or (isinstance(value, str) and not value.strip()) or value in ([], {}, ())


class Caching:
    """Engine methods that serve steps from the store's cache and fill it (see the module docstring)."""

    def _from_cache(self: Engine, execution: Execution, index: int, rendered: BaseAction) -> bool:
        """Record the step from a recent matching success (True); else note its key so ``_remember`` keeps it."""
        action = execution.bound.actions[index]
        options = action.cache
        key = self._cache_key(execution, action, rendered)
        if key is None:
            return False
        now = time.time()
        try:
            entry = self.store.get_cache(key, now)
        except Exception as error:  # an unreachable store: the step runs, as without a cache
            self._log(execution, logging.WARNING, f"the cache cannot be read, the step runs: {one_line(error)}",
                      action.name)
            entry = None
        if entry is None or entry["created_at"] < now - options["ttl"]:
            execution.cache_keys[index] = key
            return False
        # A reused result counts toward the run's results as one just made does.
        too_much = self._count_result(execution, json_size(entry["result"], MAX_RESULT_BYTES))
        if too_much:
            self._fail_step(execution, index, too_much)
            return True
        step = execution.run["steps"][index]
        step.update(cached=True, cached_from=entry["run_id"], started_at=utcnow(), duration_ms=0)
        self._log(execution, logging.INFO, f"result reused from run {entry['run_id']} (cache)", action.name)
        self._succeed_step(execution, index, entry["result"])
        return True

    def _cache_key(self: Engine, execution: Execution, action: BaseAction, rendered: BaseAction) -> str | None:
        """The step's cache key, or None (logged) when its ``key`` template renders to nothing or fails."""
        template = action.cache["key"]
        if template is None:
            return cache_key(execution.bound.workflow, rendered)
        try:
            text = self.renderer.render_value(template, self._names(execution), f"step {action.name!r}: cache.key")
        except RenderError as error:
            self._log(execution, logging.WARNING, f"cache key not rendered, the step runs uncached: {one_line(error)}",
                      action.name)
            return None
        if is_nothing(text):
            self._log(execution, logging.WARNING, "cache key rendered to nothing, the step runs uncached", action.name)
            return None
        return cache_key(execution.bound.workflow, action, rendered_key=text)

    def _remember(self: Engine, execution: Execution, index: int) -> None:
        """Keep a cached step's new result (as its record holds it) for its ttl. Errors are logged, never raised."""
        key = execution.cache_keys.pop(index, None)
        if key is None:
            return
        step, action = execution.run["steps"][index], execution.bound.actions[index]
        now = time.time()
        entry = {"key": key, "workflow": execution.bound.name, "step": step["name"], "run_id": execution.run["id"],
                 "result": step["result"], "created_at": now, "expires_at": now + action.cache["ttl"]}
        try:
            self.store.put_cache(entry)
        except Exception as error:
            self._log(execution, logging.WARNING, f"the result could not be cached: {one_line(error)}", action.name)
