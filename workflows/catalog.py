"""Action and trigger classes by their ``type`` name: what definitions refer to."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache
from typing import Generic, TypeVar

from actions.base import BaseAction
from triggers.base import BaseTrigger

T = TypeVar("T")


class TypeRegistry(Generic[T]):
    """Classes by type name; refuses a second class with a taken name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Add ``cls`` under its ``type``; ValueError when another class has that name."""
        name = cls.type  # type: ignore[attr-defined]
        other = self._classes.get(name)
        if other is not None and other is not cls:
            raise ValueError(f"{self.kind} type {name!r} is taken by {other.__module__}.{other.__qualname__}; "
                             f"cannot register {cls.__module__}.{cls.__qualname__}")
        self._classes[name] = cls
        return cls

    def get(self, name: str) -> type[T] | None:
        """The class registered as ``name``, or None."""
        return self._classes.get(name)

    def names(self) -> list[str]:
        """Every registered type name, sorted."""
        return sorted(self._classes)


def _collect(package: str, base: type, registry: TypeRegistry) -> TypeRegistry:
    root = importlib.import_module(package)
    for info in pkgutil.iter_modules(root.__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        for _, member in inspect.getmembers(module, inspect.isclass):
            if issubclass(member, base) and member is not base and member.__module__ == module.__name__:
                registry.register(member)
    return registry


@cache
def action_types() -> TypeRegistry[BaseAction]:
    """Every action class of the actions/ package, by type."""
    return _collect("actions", BaseAction, TypeRegistry("action"))


@cache
def trigger_types() -> TypeRegistry[BaseTrigger]:
    """Every trigger class of the triggers/ package, by type."""
    return _collect("triggers", BaseTrigger, TypeRegistry("trigger"))
