// Node positions: the definition's layout where it has one, dagre's layered layout for the rest.
import dagre from "@dagrejs/dagre";
import { stepNames, TRIGGER } from "./definition.js";
import { edgesOf } from "./graph.js";

export const NODE_WIDTH = 190;
export const NODE_HEIGHT = 62;

/** Positions {name: {x, y}} of the trigger and every step, laid out top to bottom by dagre. */
export function autoLayout(definition) {
  const graph = new dagre.graphlib.Graph();
  graph.setGraph({ rankdir: "TB", nodesep: 40, ranksep: 44, marginx: 20, marginy: 20 });
  graph.setDefaultEdgeLabel(() => ({}));
  for (const name of [TRIGGER, ...stepNames(definition)]) graph.setNode(name, { width: NODE_WIDTH, height: NODE_HEIGHT });
  for (const edge of edgesOf(definition)) graph.setEdge(edge.source, edge.target);
  dagre.layout(graph);
  const positions = {};
  for (const name of graph.nodes()) {
    const node = graph.node(name);
    positions[name] = { x: Math.round(node.x - NODE_WIDTH / 2), y: Math.round(node.y - NODE_HEIGHT / 2) };
  }
  return positions;
}

function validPoint(value) {
  return Array.isArray(value) && value.length === 2 && value.every((v) => typeof v === "number" && Number.isFinite(v));
}

function layoutOfDefinition(definition) {
  return definition && definition.layout && typeof definition.layout === "object" && !Array.isArray(definition.layout)
    ? definition.layout : {};
}

/** A string that changes when the nodes or edges change (and only then): dagre's input. */
export function structureKey(definition) {
  return edgesOf(definition).map((edge) => edge.id).join("|") + "#" + stepNames(definition).join("|");
}

/** Does some node lack a position in the definition's layout (so the automatic layout is needed)? */
export function needsAutoLayout(definition) {
  const layout = layoutOfDefinition(definition);
  return [TRIGGER, ...stepNames(definition)].some((name) => !validPoint(layout[name]));
}

/**
 * Positions of every node: layout entries where given, the automatic layout (``auto``, computed when not given
 * and needed) for the others.
 */
export function positionsOf(definition, auto = needsAutoLayout(definition) ? autoLayout(definition) : {}) {
  const layout = layoutOfDefinition(definition);
  const positions = {};
  for (const name of [TRIGGER, ...stepNames(definition)]) {
    if (validPoint(layout[name])) positions[name] = { x: layout[name][0], y: layout[name][1] };
    else positions[name] = auto[name] || { x: 0, y: 0 };
  }
  return positions;
}

/** The layout key's value for ``positions`` ({name: [x, y]}, whole numbers). */
export function layoutOf(positions) {
  return Object.fromEntries(Object.entries(positions).map(([name, p]) => [name, [Math.round(p.x), Math.round(p.y)]]));
}

/** A free spot under every node, for a step added without dropping it. */
export function freeSpot(positions) {
  const points = Object.values(positions);
  if (!points.length) return { x: 0, y: 0 };
  const lowest = Math.max(...points.map((p) => p.y));
  const left = Math.min(...points.map((p) => p.x));
  return { x: left, y: lowest + NODE_HEIGHT + 50 };
}

/**
 * Where the trigger goes when the first step is dropped at ``step``: above it, else left, right or below, the
 * first spot wholly inside ``visible`` ({x, y, width, height} of the canvas in flow coordinates); null when none
 * is (the trigger then stays where it was, in view).
 */
export function triggerSpot(step, visible) {
  const gap = 50;
  const candidates = [
    { x: step.x, y: step.y - NODE_HEIGHT - gap },
    { x: step.x - NODE_WIDTH - gap, y: step.y },
    { x: step.x + NODE_WIDTH + gap, y: step.y },
    { x: step.x, y: step.y + NODE_HEIGHT + gap },
  ];
  const inside = (p) => !visible || (p.x >= visible.x && p.y >= visible.y
    && p.x + NODE_WIDTH <= visible.x + visible.width && p.y + NODE_HEIGHT <= visible.y + visible.height);
  const spot = candidates.find(inside);
  return spot ? [Math.round(spot.x), Math.round(spot.y)] : null;
}

/** The definition without layout entries for nodes it no longer has (a step deleted or renamed in the YAML). */
export function pruneLayout(definition) {
  const layout = layoutOfDefinition(definition);
  const names = new Set([TRIGGER, ...stepNames(definition)]);
  const stale = Object.keys(layout).filter((key) => !names.has(key));
  if (!stale.length) return definition;
  const kept = Object.fromEntries(Object.entries(layout).filter(([key]) => names.has(key)));
  return { ...definition, layout: kept };
}
