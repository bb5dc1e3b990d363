"""The python action: call a plain function of an allow-listed module by its import path."""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from actions.base import ActionError, BaseAction, SettingError
from actions.paths import PathError, confined

logger = logging.getLogger(__name__)

# "package.module:function": names that do not start with "_" (no dunders, nothing private), one name after the colon.
_NAME = r"[A-Za-z][A-Za-z0-9_]*"
_PATH = re.compile(rf"^{_NAME}(?:\.{_NAME})*:{_NAME}$")
# Modules (and their submodules) whose functions python steps may always call.
ALWAYS_ALLOWED = ("workflows.library",)
_SHAPE = ("function must look like 'package.module:function' (one public function name after the colon: no "
          "attribute path, no name starting with '_')")


class PythonAction(BaseAction):
    """Calls ``function`` ("package.module:function") with ``kwargs``; returns its dict, or ``{"value": result}``.

    The function runs in the server's process with its privileges; an
    exception it raises fails the attempt, which is retried. Since a
    definition posted to the API could name any function (``subprocess:run``),
    only plain functions defined in ``workflows.library`` (shipped with
    PyFlow) and the modules listed in WORKFLOW_PYTHON_MODULES (and their
    submodules) may be called: no class, builtin, method or imported name.
    Paths the function checks with ``actions.paths.confine`` stay inside
    WORKFLOW_FILES_ROOT.
    """

    type = "python"
    # The function may have side effects the engine knows nothing about.
    idempotent = False

    def __init__(self, name: str, *, function: str, kwargs: Mapping[str, Any] | None = None, **options: Any):
        super().__init__(name, **options)
        if not isinstance(function, str) or ("{{" not in function and not _PATH.match(function.strip())):
            raise SettingError("function", f"action {name!r}: {_SHAPE}, got {function!r}")
        if kwargs is not None and not isinstance(kwargs, (Mapping, str)):
            raise SettingError("kwargs", f"action {name!r}: kwargs must be a mapping, got {kwargs!r}")
        self.function = function
        self.kwargs = kwargs

    def execute(self, data_store: dict) -> dict:
        """Import the function and call it."""
        function = resolve(self.function, allowed_modules(self.context.settings))
        kwargs = {} if self.kwargs is None else self.kwargs
        if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
            raise ActionError(f"python: kwargs must be a mapping of names to values, got {kwargs!r}", retryable=False)
        try:
            with confined(self.context.settings, self.context.storage_path, self.context.attachment_folders):
                result = function(**kwargs)
        except PathError as error:  # another attempt would be refused the same way
            raise ActionError(f"python: {self.function}: {error}", retryable=False) from None
        logger.info("python %s: %s returned %s", self.name, self.function, type(result).__name__)
        return result if isinstance(result, dict) else {"value": result}


def resolve(path: Any, allowed: Iterable[str]) -> Callable[..., Any]:
    """The plain function at "package.module:function" of an allowed module; ActionError naming what is wrong."""
    text = str(path or "").strip()
    if not _PATH.match(text):
        raise ActionError(f"python: {_SHAPE}, got {path!r}", retryable=False)
    refused = not_allowed(text, allowed)
    if refused:
        raise ActionError(f"python: {refused}", retryable=False)
    module_name, _, attribute = text.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # a module may fail to import in any way (SyntaxError, its own imports)
        raise ActionError(f"python: cannot import {text!r}: {type(error).__name__}: {error}", retryable=False)
    target = getattr(module, attribute, None)
    if target is None:
        raise ActionError(f"python: cannot import {text!r}: module {module_name!r} has no function {attribute!r}",
                          retryable=False)
    # A class, a builtin, a bound method or a name imported from elsewhere would reach past the module.
    if not inspect.isfunction(target) or target.__module__ != module_name:
        raise ActionError(f"python: function {text!r} is {_kind(target)}, not a plain function defined in "
                          f"{module_name}", retryable=False)
    return target


def is_function_path(text: str) -> bool:
    """Whether ``text`` is shaped "package.module:function" (a template is not: it is checked when it runs)."""
    return bool(_PATH.match(text.strip()))


def allowed_modules(settings: Mapping[str, Any]) -> tuple[str, ...]:
    """The modules (with their submodules) whose functions python steps may call under ``settings``."""
    return (*ALWAYS_ALLOWED, *settings.get("WORKFLOW_PYTHON_MODULES", ()))


def not_allowed(text: str, allowed: Iterable[str]) -> str | None:
    """Why "package.module:function" may not be called (its module is not allow-listed), or None."""
    module_name = text.partition(":")[0]
    allowed = tuple(allowed)
    if any(module_name == prefix or module_name.startswith(f"{prefix}.") for prefix in allowed):
        return None
    return (f"function {text!r}: module {module_name!r} is not allowed; add it to WORKFLOW_PYTHON_MODULES "
            f"(allowed now: {', '.join(allowed)})")


def _kind(target: Any) -> str:
    """What a refused target is, in words."""
    if inspect.isclass(target):
        return "a class"
    if inspect.isbuiltin(target):
        return "a builtin"
    if inspect.ismethod(target):
        return "a method"
    if inspect.isfunction(target):
        return f"a function of {target.__module__}"
    return f"a {type(target).__name__}"
