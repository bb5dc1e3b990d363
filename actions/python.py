"""The python action: call a Python function by its import path."""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from actions.base import ActionError, BaseAction

logger = logging.getLogger(__name__)

_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# Modules (and their submodules) whose functions python steps may always call.
ALWAYS_ALLOWED = ("workflows.library",)


class PythonAction(BaseAction):
    """Calls ``function`` ("package.module:function") with ``kwargs``; returns its dict, or ``{"value": result}``.

    The function runs in the server's process with its privileges; an
    exception it raises fails the attempt, which is retried. Since a
    definition posted to the API could name any function (``subprocess:run``),
    only functions under ``workflows.library`` (shipped with PyFlow) and the
    modules listed in WORKFLOW_PYTHON_MODULES may be called.
    """

    type = "python"
    # The function may have side effects the engine knows nothing about.
    idempotent = False

    def __init__(self, name: str, *, function: str, kwargs: Mapping[str, Any] | None = None, **options: Any):
        super().__init__(name, **options)
        if not isinstance(function, str) or ("{{" not in function and not _PATH.match(function.strip())):
            raise ValueError(f"action {name!r}: function must look like 'package.module:function', got {function!r}")
        if kwargs is not None and not isinstance(kwargs, (Mapping, str)):
            raise ValueError(f"action {name!r}: kwargs must be a mapping, got {kwargs!r}")
        self.function = function
        self.kwargs = kwargs

    def execute(self, data_store: dict) -> dict:
        """Import the function and call it."""
        allowed = (*ALWAYS_ALLOWED, *self.context.settings.get("WORKFLOW_PYTHON_MODULES", ()))
        module = str(self.function).strip().partition(":")[0]
        if not any(module == prefix or module.startswith(f"{prefix}.") for prefix in allowed):
            raise ActionError(f"python: module {module!r} is not allowed; add it to WORKFLOW_PYTHON_MODULES "
                              f"(allowed now: {', '.join(allowed)})", retryable=False)
        function = resolve(self.function)
        kwargs = {} if self.kwargs is None else self.kwargs
        if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
            raise ActionError(f"python: kwargs must be a mapping of names to values, got {kwargs!r}", retryable=False)
        result = function(**kwargs)
        logger.info("python %s: %s returned %s", self.name, self.function, type(result).__name__)
        return result if isinstance(result, dict) else {"value": result}


def resolve(path: Any) -> Callable[..., Any]:
    """The callable at "package.module:attribute.path"; ActionError naming the path when it cannot be had."""
    text = str(path or "").strip()
    if not _PATH.match(text):
        raise ActionError(f"python: function must look like 'package.module:function', got {path!r}",
                          retryable=False)
    module_name, _, attributes = text.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # a module may fail to import in any way (SyntaxError, its own imports)
        raise ActionError(f"cannot import {text!r}: {type(error).__name__}: {error}", retryable=False)
    for attribute in attributes.split("."):
        try:
            target = getattr(target, attribute)
        except AttributeError as error:
            raise ActionError(f"cannot import {text!r}: AttributeError: {error}", retryable=False)
    if not callable(target):
        raise ActionError(f"python: {text!r} is not callable (a {type(target).__name__})", retryable=False)
    return target
