"""The catalog of workflows: Python classes, definition files and API-made definitions, bound and versioned."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from app.core.binding import BoundWorkflow
from app.core.definition_diff import unified_diff
from app.core.definitions import checked, definitions_folder, load_definition_file, posted
from app.core.plugins import Plugins
from app.core.redaction import keep_redacted, redact_credentials, redact_definition
from app.core.templating import Renderer
from app.errors import ConfigError, Conflict, InvalidInput, NotFound
from app.storage.base import Store
from workflows.base import Workflow
from workflows.declarative import DefinitionError, definition_files
from workflows.registry import WorkflowLoadError, WorkflowRegistry, discover, module_names, workflows_in

logger = logging.getLogger(__name__)

# The largest version number a store holds (PostgreSQL's integer): a larger one names no version.
MAX_VERSION = 2**31 - 1
# Older versions kept bound in memory, the most recently used; any other is read back from the store when a
# run needs it, so a definition saved all day does not grow the process by one workflow per save.
KEPT_VERSIONS = 32


def _listed_module_missing(error: WorkflowLoadError) -> str | None:
    """A message naming WORKFLOW_MODULES when a module it lists is not there at all (no file to name)."""
    cause = error.__cause__
    listed = error.module
    if not (isinstance(cause, ModuleNotFoundError) and cause.name and listed
            and (listed == cause.name or listed.startswith(cause.name + "."))):
        return None
    return (f"WORKFLOW_MODULES lists {listed!r}, which cannot be imported: no module named {cause.name!r} "
            "(is its folder on PYTHONPATH, or the package installed?)")


class Catalog:
    """Workflows by name, each bound to one process's settings, and the older versions runs still need.

    It knows nothing of scheduling or runs: the runtime asks it, then tells the scheduler and the engine.
    Definitions made through the API are stored (``store``'s definition methods) before they are served.
    """

    def __init__(self, store: Store, settings: Mapping[str, Any], renderer: Renderer):
        self.store = store
        self.settings = settings
        # Where the default WORKFLOW_FILES_ROOT lies (<store>/files), as the engine tells the steps.
        self._storage_path = str(store.root)
        self.renderer = renderer
        self._registry = WorkflowRegistry()
        self._bound: dict[str, BoundWorkflow] = {}
        #: The bound workflow of every served name (a live, read-only view).
        self.bound: Mapping[str, BoundWorkflow] = MappingProxyType(self._bound)
        #: Counts the changes of ``bound``: what is worked out from it can be kept until the count moves.
        self.changes = 0
        # Older versions still needed by runs that started with them: (name, version) -> bound.
        self._versions: OrderedDict[tuple[str, int], BoundWorkflow] = OrderedDict()
        # Runs look versions up on their own threads, beside a PUT that keeps one and evicts another.
        self._versions_lock = threading.Lock()
        #: Stored definitions that no longer build or bind (name -> why): not served, but deletable.
        self.unloaded: dict[str, str] = {}
        # The newest stored version of each API-made name this process has built (or failed to): follow()
        # builds a version once, whatever came of it.
        self._seen: dict[str, int] = {}
        # One change at a time: a version number is read, then stored.
        self._lock = threading.Lock()

    # -- start-up ---------------------------------------------------------------
    def load(self, workflows: Iterable[type[Workflow]] = (), plugins: Plugins | None = None) -> None:
        """Register and bind the Python workflows, ``workflows``, the plugins' workflow modules, every
        definition file, then every stored definition.

        A bad module, class or file raises ConfigError (start-up stops); a plugin's workflow that does
        not register is added to ``plugins.problems`` and skipped; a stored definition that no longer
        builds is logged and left in ``unloaded``.
        """
        try:
            discover(self._registry, module_names("workflows"))
            try:
                discover(self._registry, self.settings["WORKFLOW_MODULES"])
            except WorkflowLoadError as error:
                raise WorkflowLoadError(_listed_module_missing(error) or str(error)) from None
            for workflow in workflows:
                self._registry.register(workflow)
        except WorkflowLoadError as error:
            raise ConfigError(str(error)) from None
        for plugin, module in plugins.workflow_modules if plugins else ():
            for workflow in workflows_in(module):
                try:
                    self._registry.register(workflow, plugin)
                except WorkflowLoadError as error:
                    plugins.fail(plugin, str(error).removeprefix(f"{plugin}: "))
        checked_bound: dict[str, BoundWorkflow] = {}
        for path in definition_files(definitions_folder(self.settings)):
            try:
                workflow, bound = load_definition_file(path, self.settings, self.renderer, self._storage_path)
                checked_bound[workflow.name] = bound
                self._registry.register(workflow, workflow.source)
            except (DefinitionError, WorkflowLoadError) as error:
                raise ConfigError(str(error)) from None
        for record in self.store.list_definitions():
            name, version = record["name"], record["version"]
            self._seen[name] = version
            try:
                workflow, bound = self._stored(record)
                self._registry.register(workflow, workflow.source)
                checked_bound[name] = bound
            except (DefinitionError, WorkflowLoadError) as error:
                # One stored definition that no longer builds must not keep the server down;
                # it stays deletable through the API.
                self.unloaded[name] = str(error)
                logger.error("stored definition %s v%d is not loaded: %s", name, version, error)
        for workflow in self._registry:  # by name
            self._bound[workflow.name] = (checked_bound.get(workflow.name)
                                          or BoundWorkflow.bind(workflow, self.settings, self.renderer))
        self.changes += 1

    # -- reading ----------------------------------------------------------------
    def get(self, name: str) -> BoundWorkflow:
        """The bound workflow called ``name``; NotFound otherwise."""
        bound = self._bound.get(name)
        if bound is None:
            raise NotFound(f"no workflow named {name!r}")
        return bound

    def source(self, name: str) -> str | None:
        """Where the workflow called ``name`` was defined (a file, or ``api:NAME vN``)."""
        bound = self._bound.get(name)
        return (bound.workflow.source if bound else None) or self._registry.source(name)

    def version(self, name: str, version: int | None) -> BoundWorkflow | None:
        """The bound workflow a run of ``version`` needs (the current one, or a stored version).

        A stored version is read from the store also for a name this process has not served: a definition
        another process made through the API after this one loaded (a worker executing its runs).
        """
        bound = self._bound.get(name)
        if version is None or (bound is not None and bound.workflow.version in (None, version)):
            return bound
        with self._versions_lock:
            old = self._versions.get((name, version))
            if old is not None:
                self._versions.move_to_end((name, version))
        if old is None:
            record = self.store.get_definition(name, version)
            if record is None:
                return None
            try:
                _, old = self._stored(record)
            except DefinitionError as error:
                logger.error("stored definition %s v%d is not loaded: %s", name, version, error)
                return None
            self._keep_version(name, version, old)
        return old

    # -- definitions made through the API ------------------------------------------
    def create(self, definition: Any) -> BoundWorkflow:
        """Check, store and serve a new definition (version 1); Conflict: the name is taken; InvalidInput."""
        with self._lock:
            name = definition.get("name") if isinstance(definition, dict) else None
            if isinstance(name, str) and name in self._bound:
                raise Conflict(f"a workflow named {name!r} exists; change it with PUT /api/workflows/{name}")
            workflow, bound = posted(definition, "request body", 1, self.settings, self.renderer,
                                    storage_path=self._storage_path)
            # Version 1 only: another server sharing the store may have made it since this one last looked
            # (follow() serves it within FOLLOW_SECONDS). A stored one that no longer loads is replaced.
            try:
                workflow.version = self.store.save_definition(
                    workflow.name, definition, expected=None if workflow.name in self.unloaded else 0)
            except Conflict:
                raise Conflict(f"a workflow named {workflow.name!r} exists (made through another server); "
                               f"change it with PUT /api/workflows/{workflow.name}") from None
            self.unloaded.pop(workflow.name, None)
            self._serve(workflow, bound)
            self._seen[workflow.name] = workflow.version
        return bound

    def check(self, definition: Any) -> None:
        """Check ``definition`` as ``create`` would, store nothing; InvalidInput listing each problem.

        The name may be taken (an edit keeps its name); "***" read back from an API-made workflow of
        that name stands for its stored secret, as a PUT would take it.
        """
        name = definition.get("name") if isinstance(definition, dict) else None
        bound = self._bound.get(name) if isinstance(name, str) else None
        if bound is not None and bound.workflow.origin == "api":
            definition = keep_redacted(definition, bound.workflow.definition)
        elif isinstance(name, str) and name in self.unloaded:
            stored = self.store.get_definition(name)
            definition = keep_redacted(definition, stored["definition"] if stored else None)
        posted(definition, "request body", (bound.workflow.version or 0) + 1 if bound else 1, self.settings,
               self.renderer, storage_path=self._storage_path)

    def versions(self, name: str) -> list[dict]:
        """``[{"version", "saved_at"}]`` of an API-made definition, newest first; [] for a file or Python one."""
        if name in self.unloaded and name not in self._bound:
            return self.store.list_definition_versions(name)
        bound = self.get(name)
        return self.store.list_definition_versions(name) if bound.workflow.origin == "api" else []

    def stored_version(self, name: str, version: int) -> dict:
        """``{"name", "version", "saved_at", "definition"}`` of a stored version, secrets redacted; NotFound."""
        if name not in self.unloaded:
            self.get(name)
        record = self.store.get_definition(name, version) if 1 <= version <= MAX_VERSION else None
        if record is None:
            raise NotFound(f"workflow {name!r} has no version {version}")
        return {"name": name, "version": record["version"], "saved_at": record["saved_at"],
                "definition": redact_definition(record["definition"])}

    def replace(self, name: str, definition: Any,
                base: int | None = None) -> tuple[BoundWorkflow | None, BoundWorkflow]:
        """Check, store and serve a new version of an API-made definition; (the old binding or None, the new one).

        ``base``: the version the client edited (If-Match); Conflict when another is now the newest.
        The old version stays available to ``version()``: runs under way keep the version they started with.
        """
        with self._lock:
            # A stored definition that no longer loads (its plugin is gone) may be fixed: there is no old binding.
            stored = self.store.get_definition(name) if name in self.unloaded and name not in self._bound else None
            old = None if stored else self.get(name)
            if old is not None:
                self._editable(old)
            if base is not None:
                self._check_base(name, base)
            if isinstance(definition, dict):
                definition.setdefault("name", name)
                if definition["name"] != name:
                    raise InvalidInput(f"the definition is named {definition['name']!r}, the URL {name!r}",
                                       details=[{"path": "name", "message": f"must be {name!r}"}])
            # "***" read back keeps the secret.
            definition = keep_redacted(definition, old.workflow.definition if old else stored["definition"])
            version = old.workflow.version if old else stored["version"]
            workflow, new = posted(definition, "request body", (version or 0) + 1, self.settings, self.renderer,
                                   storage_path=self._storage_path)
            try:
                # The store checks ``base`` again as it saves: another server on the database may save at once.
                workflow.version = self.store.save_definition(name, definition, base)
            except Conflict:
                if base is not None:
                    self._check_base(name, base)  # the 409 with the newest version and the diff
                raise
            if old is not None:
                self._keep_version(name, old.workflow.version, old)
                self._registry.unregister(name)
            self.unloaded.pop(name, None)
            self._serve(workflow, new)
            self._seen[name] = workflow.version
        return old, new

    def remove(self, name: str) -> BoundWorkflow | None:
        """Forget an API-made definition and every version of it; the binding it had (None if it did not load)."""
        with self._lock:
            if name in self.unloaded and name not in self._bound:
                self.store.delete_definition(name)
                del self.unloaded[name]
                self._seen.pop(name, None)
                return None
            bound = self.get(name)
            self._editable(bound)
            self.store.delete_definition(name)
            self._forget(name)
        return bound

    def follow(self) -> list[tuple[str, BoundWorkflow | None, BoundWorkflow | None]]:
        """Serve what other processes sharing the store did to API-made definitions: made, changed, deleted.

        ``[(name, the binding it had here or None, the one it has now or None)]`` for each name that changed.
        A newer version that does not build here is logged once and the one served stays.
        """
        changes: list[tuple[str, BoundWorkflow | None, BoundWorkflow | None]] = []
        with self._lock:  # read under the lock: a definition this process is saving is in the store already
            stored = {record["name"]: record for record in self.store.list_definitions()}
            for name, record in sorted(stored.items()):
                version = record["version"]
                if self._seen.get(name) == version:
                    continue
                self._seen[name] = version
                old = self._bound.get(name)
                if old is not None and old.workflow.origin != "api":
                    logger.error("stored definition %s v%d is not served: a %s workflow has that name here",
                                 name, version, old.workflow.origin)
                    continue
                try:
                    workflow, new = self._stored(record)
                except (DefinitionError, WorkflowLoadError) as error:
                    if old is None:
                        self.unloaded[name] = str(error)
                    logger.error("stored definition %s v%d is not loaded: %s", name, version, error)
                    continue
                if old is not None:
                    self._keep_version(name, old.workflow.version, old)
                    self._registry.unregister(name)
                self.unloaded.pop(name, None)
                try:
                    self._serve(workflow, new)
                except Conflict as error:  # a plugin's workflow of that name registered meanwhile
                    logger.error("stored definition %s v%d is not served: %s", name, version, error)
                    continue
                changes.append((name, old, new))
            for name in [name for name in self._seen if name not in stored]:
                old = self._bound.get(name)
                self.unloaded.pop(name, None)
                self._forget(name)
                if old is not None:
                    changes.append((name, old, None))
        return changes

    def _keep_version(self, name: str, version: int, bound: BoundWorkflow) -> None:
        """Keep an older version bound for the runs that need it, up to KEPT_VERSIONS of them."""
        with self._versions_lock:
            self._versions[(name, version)] = bound
            self._versions.move_to_end((name, version))
            while len(self._versions) > KEPT_VERSIONS:
                self._versions.popitem(last=False)

    def _forget(self, name: str) -> None:
        """Stop serving the API-made ``name`` and drop every version of it kept for runs."""
        if name in self._bound:
            self._registry.unregister(name)
            del self._bound[name]
            self.changes += 1
        self._seen.pop(name, None)
        with self._versions_lock:
            for key in [key for key in self._versions if key[0] == name]:
                del self._versions[key]

    def unloaded_summary(self, name: str) -> dict | None:
        """What the API shows of a stored definition that no longer loads (GET, so it can be fixed); None otherwise.

        A Summary in shape, ``error`` saying why, ``definition`` redacted: the designer opens it, marks the
        step whose type is gone, and a PUT that fixes it serves it again.
        """
        why = self.unloaded.get(name)
        record = self.store.get_definition(name) if why is not None and name not in self._bound else None
        if record is None:
            return None
        definition = record["definition"] if isinstance(record["definition"], dict) else {}
        trigger = definition.get("trigger") if isinstance(definition.get("trigger"), dict) else {"type": "manual"}
        steps = definition.get("steps") if isinstance(definition.get("steps"), list) else []
        return {"name": name, "description": str(definition.get("description", "")),
                "trigger": redact_credentials(trigger),
                "actions": [{"name": str(step.get("name")), "type": str(step.get("type"))}
                            for step in steps if isinstance(step, dict)],
                "status": "stopped", "check_interval": None, "next_fire_time": None,
                "inputs_schema": definition.get("inputs"), "error": f"not loaded: {why}", "last_poll": None,
                "polled_here": False, "origin": "api", "source": f"api:{name} v{record['version']}",
                "version": record["version"], "definition": redact_definition(definition)}

    def _check_base(self, name: str, base: int) -> None:
        """Conflict, with the newest version and the diff from ``base`` to it, unless ``base`` is the newest.

        The store's newest, not this process's: another server on the same database may have saved one.
        """
        current = self.store.get_definition(name)
        if current is None or current["version"] == base:
            return
        edited = self.store.get_definition(name, base) if 1 <= base <= MAX_VERSION else None
        newest = redact_definition(current["definition"])
        diff = unified_diff(redact_definition(edited["definition"]) if edited else None, newest,
                            f"{name} v{base}", f"{name} v{current['version']}")
        raise Conflict(f"workflow {name!r} is at version {current['version']}; you edited version {base}",
                       details={"version": current["version"], "base": base, "definition": newest, "diff": diff})

    def _serve(self, workflow: type[Workflow], bound: BoundWorkflow) -> None:
        try:
            self._registry.register(workflow, workflow.source)
        except WorkflowLoadError as error:
            raise Conflict(str(error)) from None
        self._bound[workflow.name] = bound
        self.changes += 1

    def _stored(self, record: dict) -> tuple[type[Workflow], BoundWorkflow]:
        """A stored version of an API-made definition, checked and bound as when it was posted."""
        name, version = record["name"], record["version"]
        return checked(record["definition"], f"api:{name} v{version}", self.settings, self.renderer, version=version,
                       storage_path=self._storage_path)

    def _editable(self, bound: BoundWorkflow) -> None:
        if bound.workflow.origin != "api":
            raise Conflict(f"workflow {bound.name!r} is defined in {self.source(bound.name)}; only workflows "
                           f"created through the API can be changed or deleted through it")
