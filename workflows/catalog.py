"""Action and trigger classes by their ``type`` name: what definitions refer to."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import threading
from functools import cache
from typing import Generic, TypeVar

from actions.base import BaseAction
from triggers.base import BaseTrigger

T = TypeVar("T")


class TypeRegistry(Generic[T]):
    """Classes by type name; refuses a second class with a taken name.

    Given a ``package``, it imports that package's modules when a type is asked for: first the
    module named after the type (actions/shell.py holds "shell"), all of them only for a type
    found in no such module or for ``names()``. So a run imports the actions it uses, not every
    library every action needs.
    """

    def __init__(self, kind: str, package: str | None = None, base: type | None = None):
        self.kind = kind
        self._classes: dict[str, type[T]] = {}
        # Type name -> "builtin" or the plugin distribution that brought it ("pyflow-hello-plugin 1.0").
        self._origins: dict[str, str] = {}
        self._package = package
        self._base = base
        self._scanned: set[str] = set()
        self._lock = threading.RLock()

    def register(self, cls: type[T], origin: str = "builtin") -> type[T]:
        """Add ``cls`` under its ``type``, brought by ``origin``; ValueError when another class has that name."""
        name = cls.type  # type: ignore[attr-defined]
        other = self._classes.get(name)
        if other is not None and other is not cls:
            raise ValueError(f"{self.kind} type {name!r} is taken by {other.__module__}.{other.__qualname__}; "
                             f"cannot register {cls.__module__}.{cls.__qualname__}")
        self._classes[name] = cls
        self._origins.setdefault(name, origin)
        return cls

    def get(self, name: str) -> type[T] | None:
        """The class registered as ``name``, or None."""
        if name not in self._classes and self._package:
            module = f"{self._package}.{name}"
            if name.isidentifier() and importlib.util.find_spec(module) is not None:
                self._scan(module)
            if name not in self._classes:
                self._scan_all()
        return self._classes.get(name)

    def origin(self, name: str) -> str | None:
        """"builtin" or the plugin distribution (name and version) that registered ``name``."""
        return self._origins.get(name)

    def names(self) -> list[str]:
        """Every registered type name, sorted."""
        self._scan_all()
        return sorted(self._classes)

    def _scan(self, name: str) -> None:
        """Import the module ``name`` and register the ``base`` subclasses it defines."""
        with self._lock:
            if name in self._scanned:
                return
            module = importlib.import_module(name)
            for _, member in inspect.getmembers(module, inspect.isclass):
                if issubclass(member, self._base) and member is not self._base and member.__module__ == module.__name__:
                    self.register(member)
            self._scanned.add(name)

    def _scan_all(self) -> None:
        if self._package:
            root = importlib.import_module(self._package)
            for info in pkgutil.iter_modules(root.__path__):
                self._scan(f"{self._package}.{info.name}")


@cache
def action_types() -> TypeRegistry[BaseAction]:
    """Every action class of the actions/ package, by type."""
    return TypeRegistry("action", "actions", BaseAction)


@cache
def trigger_types() -> TypeRegistry[BaseTrigger]:
    """Every trigger class of the triggers/ package, by type."""
    return TypeRegistry("trigger", "triggers", BaseTrigger)
