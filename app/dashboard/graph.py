"""A layered layout of a run's step graph, drawn by the run page as inline SVG."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

BOX_WIDTH = 150
BOX_HEIGHT = 38
COLUMN_GAP = 56
ROW_GAP = 18
MARGIN = 8
LABEL_CHARS = 18
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
    """An arrow from the right edge of one box to the left edge of another."""

    x1: int
    y1: int
    x2: int
    y2: int
    source: str = ""
    target: str = ""


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
            label = name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"
            box = Box(name, label, step.get("status") or "pending",
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
