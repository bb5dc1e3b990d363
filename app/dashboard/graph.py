"""A layered layout of a run's step graph, drawn by the run page as inline SVG.

When the definition carries the designer's ``layout`` (node positions), the boxes stand where the
designer put them and the arrows run from a box's bottom to the next one's top, as in the designer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

BOX_WIDTH = 150
BOX_HEIGHT = 38
COLUMN_GAP = 56
ROW_GAP = 18
MARGIN = 8
LABEL_CHARS = 18
# The widest or tallest spread of the designer's positions drawn as it is; a larger one is scaled down to it.
MAX_PLACED = 4000
# The page shrinks a wide drawing to fit its box, but not below this share of its size (labels stay legible).
MIN_SCALE = 0.7


@dataclass
class Box:
    """One step placed on the drawing."""

    name: str
    label: str
    status: str
    x: int
    y: int


@dataclass
class Edge:
    """An arrow from the right edge of one box to the left edge of another (``vertical``: bottom to top)."""

    x1: int
    y1: int
    x2: int
    y2: int
    source: str = ""
    target: str = ""
    vertical: bool = False

    @property
    def d(self) -> str:
        """The SVG path: a curve leaving and entering its boxes square, ending before the arrow head."""
        if self.vertical:
            return (f"M {self.x1} {self.y1} C {self.x1} {self.y1 + 28}, {self.x2} {self.y2 - 28}, "
                    f"{self.x2} {self.y2 - 2}")
        return f"M {self.x1} {self.y1} C {self.x1 + 28} {self.y1}, {self.x2 - 28} {self.y2}, {self.x2 - 2} {self.y2}"


@dataclass
class Layout:
    """Boxes and arrows of a graph, and the size of the drawing."""

    boxes: list[Box] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    width: int = 0
    height: int = 0
    box_width: int = BOX_WIDTH
    box_height: int = BOX_HEIGHT

    @property
    def min_width(self) -> int:
        """The narrowest the page may draw it; wider boxes than this show it whole."""
        return int(self.width * MIN_SCALE)


def is_chain(steps: list[dict]) -> bool:
    """True when every step depends on exactly the one before it (the list says it all)."""
    for index, step in enumerate(steps):
        expected = [steps[index - 1]["name"]] if index else []
        if list(step.get("depends_on") or []) != expected:
            return False
    return True


def layers(steps: list[dict]) -> dict[str, int]:
    """Step name -> layer: the length of the longest path from a root (a step without dependencies)."""
    names = {step["name"] for step in steps}
    deps = {step["name"]: [dep for dep in step.get("depends_on") or [] if dep in names] for step in steps}
    layer: dict[str, int] = {}

    def depth(name: str, visiting: frozenset[str]) -> int:
        if name in layer:
            return layer[name]
        if name in visiting:  # the engine refuses cycles; a damaged record must not hang the page
            logger.warning("cycle through step %s in a run record", name)
            return 0
        layer[name] = value = 1 + max((depth(dep, visiting | {name}) for dep in deps[name]), default=-1)
        return value

    for step in steps:
        depth(step["name"], frozenset())
    return layer


def _label(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def positions_of(definition: Any, steps: list[dict]) -> dict[str, tuple[float, float]] | None:
    """The designer's position of every step of ``steps`` from ``definition``'s layout; None unless all have one."""
    placed = definition.get("layout") if isinstance(definition, Mapping) else None
    if not isinstance(placed, Mapping) or not steps:
        return None
    found: dict[str, tuple[float, float]] = {}
    for step in steps:
        position = placed.get(step["name"])
        if not (isinstance(position, (list, tuple)) and len(position) == 2
                and all(isinstance(value, (int, float)) for value in position)):
            return None  # a step the designer never placed (a handler added by hand): the layered drawing
        found[step["name"]] = (float(position[0]), float(position[1]))
    return found


def placed_layout(steps: list[dict], positions: Mapping[str, tuple[float, float]]) -> Layout:
    """Boxes where the designer put them (moved so the top-left one is at the margin), arrows top to bottom.

    A layout spread wider or taller than MAX_PLACED is drawn smaller, so one stray node (a position may be
    up to a million) cannot make the page a million pixels wide.
    """
    left = min(x for x, _ in positions.values())
    top = min(y for _, y in positions.values())
    spread = max(max(x for x, _ in positions.values()) - left, max(y for _, y in positions.values()) - top)
    scale = min(1.0, MAX_PLACED / spread) if spread else 1.0
    result = Layout()
    where: dict[str, Box] = {}
    for step in steps:
        x, y = positions[step["name"]]
        box = Box(step["name"], _label(step["name"]), step.get("status") or "pending",
                  MARGIN + round((x - left) * scale), MARGIN + round((y - top) * scale))
        where[box.name] = box
        result.boxes.append(box)
    for step in steps:
        target = where[step["name"]]
        for dep in step.get("depends_on") or []:
            source = where.get(dep)
            if source is not None:
                result.edges.append(Edge(source.x + BOX_WIDTH // 2, source.y + BOX_HEIGHT, target.x + BOX_WIDTH // 2,
                                         target.y, source.name, target.name, vertical=True))
    result.width = max(box.x for box in result.boxes) + BOX_WIDTH + MARGIN
    result.height = max(box.y for box in result.boxes) + BOX_HEIGHT + MARGIN
    return result


def layout(steps: list[dict]) -> Layout:
    """Columns by layer, left to right; within a column, steps in record order."""
    if not steps:
        return Layout()
    layer = layers(steps)
    columns: dict[int, list[dict]] = {}
    for step in steps:
        columns.setdefault(layer[step["name"]], []).append(step)
    result = Layout()
    where: dict[str, Box] = {}
    for column, members in sorted(columns.items()):
        for row, step in enumerate(members):
            name = step["name"]
            box = Box(name, _label(name), step.get("status") or "pending",
                      MARGIN + column * (BOX_WIDTH + COLUMN_GAP), MARGIN + row * (BOX_HEIGHT + ROW_GAP))
            where[name] = box
            result.boxes.append(box)
    for step in steps:
        target = where[step["name"]]
        for dep in step.get("depends_on") or []:
            source = where.get(dep)
            if source is not None:
                result.edges.append(Edge(source.x + BOX_WIDTH, source.y + BOX_HEIGHT // 2,
                                         target.x, target.y + BOX_HEIGHT // 2, source.name, target.name))
    result.width = max(box.x for box in result.boxes) + BOX_WIDTH + MARGIN
    result.height = max(box.y for box in result.boxes) + BOX_HEIGHT + MARGIN
    return result
