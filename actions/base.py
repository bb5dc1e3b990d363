"""The base class every action derives from."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actions.paths import outside_root
from actions.text import snake

logger = logging.getLogger(__name__)


class ActionError(Exception):
    """A step failure with a one-line message meant for the user.

    ``retryable=False`` tells the engine that another attempt cannot help
    (bad configuration, a refused operation), so it fails the step at once.
    """

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class SettingError(ValueError):
    """A constructor's refusal of one setting, ``key``: a definition's check reports it at that field.

    Actions and triggers raise it instead of a plain ValueError when the problem is one field's, so the
    designer can mark that field: ``steps[i].config.<key>``, ``trigger.<key>``, or ``steps[i].<key>`` for
    an option written on the step (a shell step's ``limits``).
    """

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class Park(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by an action to park its run: the step waits, holding no thread and no slot (DESIGN section 12).

    The engine records the step ``waiting`` with ``details`` and wakes the run at epoch ``until``
    (a wait's end, a timeout), on an event of type ``event`` (with ``key``; None: any key), or on
    an answer (an approval). When the wake is a timeout, ``on_timeout`` says what the step becomes.
    Only a step the engine runs itself may park (``RunContext.can_park``); others wait on their thread.
    """

    def __init__(self, kind: str, *, until: float | None = None, event: str | None = None, key: str | None = None,
                 on_timeout: str = "fail", details: Mapping[str, Any] | None = None):
        super().__init__(f"parked for {kind}")
        self.kind = kind
        self.until = until
        self.event = event
        self.key = key
        self.on_timeout = on_timeout
        self.details = dict(details or {})


@dataclass
class RunContext:
    """What the runtime tells an action about the run it executes in."""

    run_id: str = ""
    workflow: str = ""
    step: str = ""
    attempt: int = 1
    # Non-secret and secret settings alike: actions such as send_email need
    # SMTP credentials; they are never copied into run records.
    settings: Mapping[str, Any] = field(default_factory=dict)
    storage_path: str = "."
    # The folders (names under <storage>/attachments) the server saved this run's uploads and e-mail
    # attachments in: the only attachments its steps may read (actions/paths.py readable).
    attachment_folders: tuple[str, ...] = ()
    # Set when the run is cancelled: a long action (a shell command) should stop when it is.
    cancel_event: threading.Event = field(default_factory=threading.Event)
    # Seconds this attempt may take (the step's or the workflow's step_timeout); a child
    # process should not outlive it, since the engine can abandon a thread but not kill it.
    step_timeout: float | None = None
    # The run's template names (trigger_data, inputs, steps, run, settings...), for actions
    # that render templates of their own, such as a loop's nested steps with ``item``.
    template_context: Mapping[str, Any] = field(default_factory=dict)
    # Engine services, set by the runtime (None when an action runs on its own):
    # render(value, names) renders templates inside ``value`` with template_context + names;
    render: Callable[[Any, Mapping[str, Any]], Any] | None = None
    # run_steps(step_definitions, names) runs nested steps in order, returns {name: result};
    run_steps: Callable[[list[dict], Mapping[str, Any]], dict] | None = None
    # run_workflow(name, inputs, timeout_s) runs another workflow to its end, returns its run.
    run_workflow: Callable[[str, dict, float], dict] | None = None
    # Names of the workflows that called this run (sub-workflows), to refuse cycles.
    call_stack: tuple[str, ...] = ()
    # A sub-workflow's run started beside others (from a parallel loop's item or a parallel step): its loops
    # run one item at a time, as a loop inside a parallel loop's item does.
    serial: bool = False
    # True when the action may raise Park (a step of a run, not a loop's nested step nor a run of its own).
    can_park: bool = False
    # The step's earlier park record when it is executed again after a restart ({"for", "since", "until", ...}).
    parked: Mapping[str, Any] | None = None
    # approval_links(until_epoch, nonce) -> {"approve": url, "reject": url}: signed one-click links to this step.
    approval_links: Callable[[float, str], dict] | None = None


def seconds(value: Any, field: str, action: str, *, allow_zero: bool = False) -> float:
    """A configured number of seconds (a template may have rendered it as text); ActionError naming the field."""
    try:
        number = math.nan if isinstance(value, bool) else float(str(value).strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "of seconds > 0"
        raise ActionError(f"{action}: {field} must be a number {bound}, got {value!r}", retryable=False)
    return number


def whole_number(value: Any) -> int | None:
    """``value`` as a whole number >= 0 when it is one (an int, or text of at most 18 ASCII digits), else None.

    ``str.isdigit`` alone takes "²" and 5,000 digits, on which ``int()`` raises: a step failing with a
    ValueError instead of naming its field.
    """
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    return int(text)


def check_timeout(action: str, name: str, timeout: Any, on_timeout: str, choices: tuple[str, ...]) -> None:
    """A waiting step's ``on_timeout`` is one of ``choices`` and its ``timeout`` (unless a template) seconds > 0;
    else SettingError naming the field."""
    if on_timeout not in choices:
        raise SettingError("on_timeout", f"action {name!r}: on_timeout must be one of {', '.join(choices)}, "
                                         f"got {on_timeout!r}")
    if not (isinstance(timeout, str) and "{{" in timeout):
        try:
            seconds(timeout, "timeout", action)
        except ActionError as error:
            raise SettingError("timeout", f"action {name!r}: {error}") from None


def cache_problem(cache: Any) -> tuple[str, str] | None:
    """What is wrong with a step's ``cache`` option, as (sub-key, message); None when it is well formed."""
    if not isinstance(cache, Mapping):
        return "", f"must be a mapping {{ttl: seconds, key: template}}, got {type(cache).__name__}"
    unknown = sorted(set(cache) - {"ttl", "key"})
    if unknown:
        return f".{unknown[0]}", "unknown key; cache has ttl and key"
    ttl = cache.get("ttl")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
        return ".ttl", f"must be a number of seconds > 0, got {ttl!r}"
    key = cache.get("key")
    if key is not None and not isinstance(key, str):
        return ".key", f"must be a template string, got {type(key).__name__}"
    return None


def check_cache(cache: Any, where: str) -> dict | None:
    """A step's ``cache`` option as ``{"ttl": seconds, "key": template or None}``; ValueError naming ``where``."""
    if cache is None:
        return None
    problem = cache_problem(cache)
    if problem is not None:
        raise ValueError(f"{where}{problem[0]} {problem[1]}")
    return {"ttl": float(cache["ttl"]), "key": cache.get("key")}


class BaseAction:
    """One step of a workflow: configured by its constructor, run by ``execute``.

    Public attributes holding strings are rendered as templates per run;
    attributes whose names start with ``_`` (secrets such as passwords) are
    never rendered and never shown.
    """

    # The name the step's ``type`` shows in run records and definitions;
    # defaults to the class name in snake_case without an "Action" suffix.
    type: str = ""
    # Whether re-running an interrupted attempt after a crash is harmless.
    idempotent: bool = True
    # Attributes the engine must not render before execute (a loop renders its steps per item).
    raw_fields: tuple[str, ...] = ()
    # True for a step that can only wait by parking its run (RunContext.can_park): a loop's nested
    # steps cannot park, so a definition that puts it there is refused when it is saved, not when it runs.
    parks_only: bool = False
    # Private attributes holding a credential (never rendered, never shown) that may be exactly
    # ``{{ secrets.NAME }}``: the engine puts the stored secret's value there when the step executes.
    secret_fields: tuple[str, ...] = ()
    # Config fields limited to a set of values: {field: the values}. The same constants the
    # constructor checks against, so GET /api/catalog's enums cannot drift from the code.
    config_choices: Mapping[str, Sequence[str]] = {}
    # JSON Schema of the inside of an object field ({field: {"properties": ...}}), merged into the
    # catalog's schema of that field (condition's {type, left, right}); the constants the checks use.
    config_shapes: Mapping[str, Mapping[str, Any]] = {}
    # The keys of the result (``steps.<name>.<key>`` in a later step's templates), for GET /api/catalog;
    # () when they are not known beforehand (a python step returns what its function returns).
    result_keys: tuple[str, ...] = ()
    # Config fields naming a file or folder, which must lie inside WORKFLOW_FILES_ROOT: {field: "path"} for one
    # path, {field: "attachments"} for a path, an attachment {"path": ...} or a list of them. A literal one is
    # checked when a definition is saved (``refusals``), a template's value when the step renders it.
    path_fields: Mapping[str, str] = {}

    def __init__(
        self,
        name: str,
        *,
        when: Any = None,
        retries: int | None = None,
        step_timeout: float | None = None,
        depends_on: list[str] | None = None,
        on_failure: str = "fail",
        compensate: BaseAction | None = None,
        cache: Mapping[str, Any] | None = None,
    ):
        if not isinstance(name, str) or not name:
            raise ValueError(f"action name must be a non-empty string, got {name!r}")
        self.name = name
        # Rendered per run like every public string; a falsy result skips the step.
        self.when = when
        # Per-step overrides of the workflow's max_retries and step_timeout.
        for option, value in (("retries", retries), ("step_timeout", step_timeout)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"action {name!r}: {option} must be a number >= 0, got {value!r}")
        self.retries = retries
        self.step_timeout = step_timeout
        # Steps that must finish first; None means "the step before" (a chain).
        if depends_on is not None and (
            not isinstance(depends_on, (list, tuple)) or not all(isinstance(dep, str) for dep in depends_on)
        ):
            raise ValueError(f"action {name!r}: depends_on must be a list of step names, got {depends_on!r}")
        self.depends_on = list(depends_on) if depends_on is not None else None
        # "fail" the run, "continue" (dependents are skipped), or the name of a step to run instead.
        if not isinstance(on_failure, str) or not on_failure:
            raise ValueError(f"action {name!r}: on_failure must be 'fail', 'continue' or a step name, "
                             f"got {on_failure!r}")
        self.on_failure = on_failure
        # The action that undoes this one when the run fails or is cancelled (docs/compensation.md).
        if compensate is not None and not isinstance(compensate, BaseAction):
            raise ValueError(f"action {name!r}: compensate must be an action, got {type(compensate).__name__}")
        self.compensate = compensate
        # {"ttl": seconds, "key": template}: reuse a recent result of the same step (docs/step-cache.md).
        self.cache = check_cache(cache, f"action {name!r}: cache")
        self.context = RunContext()

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("type"):
            cls.type = snake(cls.__name__, "Action")

    def execute(self, data_store: dict) -> dict:
        """Do the work and return a JSON-serialisable result."""
        raise NotImplementedError(f"{type(self).__name__} must implement execute()")

    @classmethod
    def refusals(cls, config: Mapping[str, Any], settings: Mapping[str, Any],
                 storage_path: str | None = None) -> list[tuple[str, str]]:
        """(field, why) for each setting of a definition's step that no run on this server could use; [] if none.

        ``field`` is a path inside ``config`` ("" for the step's type itself). Asked when a definition
        (posted, stored or a file) is bound, so it is refused (422) instead of stored to fail every run:
        a literal path of ``path_fields`` outside WORKFLOW_FILES_ROOT. A workflow written in Python is not asked.
        """
        return [found for key, shape in cls.path_fields.items()
                for found in outside_root(settings, storage_path, config.get(key), key,
                                          attachments=shape == "attachments")]

    def config_secrets(self) -> set[str]:
        """Secret values in config fields whose names do not say so (a token in a URL), for the engine to scrub."""
        return set()

    def describe(self) -> dict:
        """A summary for the API: name and type."""
        return {"name": self.name, "type": self.type}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
