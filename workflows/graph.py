"""The dependency graph of a workflow's steps."""

from __future__ import annotations

from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter

from actions.base import BaseAction

_ON_FAILURE_KEYWORDS = ("fail", "continue")


@dataclass(frozen=True)
class StepGraph:
    """Which steps each step waits for, and which steps run only when another fails."""

    # deps[i]: indexes of the steps that must finish before step i starts.
    deps: tuple[tuple[int, ...], ...]
    # dependents[i]: indexes of the steps that wait for step i (deps inverted).
    dependents: tuple[tuple[int, ...], ...]
    # handler[i]: index of the step to run when step i fails (on_failure: <step>), else None.
    handler: tuple[int | None, ...]
    # Steps that run only as another step's failure handler.
    handlers: frozenset[int]
    # True when every step depends on the one before it: the engine runs such a chain inline.
    is_chain: bool

    def depends_on(self, names: list[str], index: int) -> list[str]:
        """Names of the steps ``index`` waits for (for run records and drawing)."""
        return [names[dep] for dep in self.deps[index]]


def build_graph(actions: list[BaseAction]) -> StepGraph:
    """The graph of ``actions``; ValueError naming the step for unknown names and cycles.

    A step without ``depends_on`` depends on the step before it (handlers excluded),
    so a plain list of actions is a chain.
    """
    names = [action.name for action in actions]
    position = {name: index for index, name in enumerate(names)}
    handler: list[int | None] = []
    for index, action in enumerate(actions):
        target = action.on_failure
        if target in _ON_FAILURE_KEYWORDS:
            handler.append(None)
        elif target in position and position[target] != index:
            handler.append(position[target])
        else:
            raise ValueError(f"steps[{index}] ({action.name}): on_failure must be 'fail', 'continue' or the name of "
                             f"another step, got {target!r}")
    handlers = frozenset(index for index in handler if index is not None)

    deps: list[tuple[int, ...]] = []
    previous: int | None = None
    for index, action in enumerate(actions):
        if action.depends_on is None:
            deps.append(() if previous is None or index in handlers else (previous,))
        else:
            unknown = [name for name in action.depends_on if name not in position]
            if unknown:
                raise ValueError(f"steps[{index}] ({action.name}): depends_on names unknown step(s): "
                                 f"{', '.join(unknown)}; known: {', '.join(names)}")
            deps.append(tuple(position[name] for name in action.depends_on))
        if index not in handlers:
            previous = index
    try:
        TopologicalSorter({index: dep for index, dep in enumerate(deps)}).prepare()
    except CycleError as error:
        cycle = " -> ".join(names[index] for index in error.args[1])
        raise ValueError(f"steps form a cycle: {cycle}") from None
    regular = [index for index in range(len(actions)) if index not in handlers]
    is_chain = not handlers and all(deps[index] == ((index - 1,) if index else ()) for index in regular)
    dependents: list[list[int]] = [[] for _ in actions]
    for index, dep_indexes in enumerate(deps):
        for dep in dep_indexes:
            dependents[dep].append(index)
    return StepGraph(deps=tuple(deps), dependents=tuple(tuple(items) for items in dependents), handler=tuple(handler),
                     handlers=handlers, is_chain=is_chain)
