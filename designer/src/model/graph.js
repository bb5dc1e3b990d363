// Graph edits on the definition: dependencies (edges), cycles, adding, renaming and removing steps.
import { clone, NAME_PATTERN, stepsOf, stepNames, TRIGGER, withExplicitDependsOn } from "./definition.js";

/** The depends_on list of a step (always an array of strings). */
export function dependsOn(step) {
  if (!step) return [];
  if (typeof step.depends_on === "string") return [step.depends_on];
  return Array.isArray(step.depends_on) ? step.depends_on.filter((name) => typeof name === "string") : [];
}

/** Edges: one per depends_on entry, plus trigger -> every step without dependencies. */
export function edgesOf(definition) {
  const steps = stepsOf(definition);
  const names = new Set(stepNames(definition));
  const edges = [];
  const seen = new Set();
  for (const step of steps) {
    if (typeof step.name !== "string" || seen.has(step.name)) continue;
    seen.add(step.name);
    const deps = dependsOn(step);
    if (!deps.length) edges.push({ id: `${TRIGGER}->${step.name}`, source: TRIGGER, target: step.name, trigger: true });
    for (const dep of deps) {
      if (names.has(dep)) edges.push({ id: `${dep}->${step.name}`, source: dep, target: step.name, trigger: false });
    }
  }
  return edges;
}

function stepByName(definition, name) {
  return stepsOf(definition).find((step) => step.name === name);
}

function walk(start, next) {
  const seen = new Set();
  const stack = [...next(start)];
  while (stack.length) {
    const current = stack.pop();
    if (seen.has(current)) continue;
    seen.add(current);
    stack.push(...next(current));
  }
  return seen;
}

/** Every step ``name`` depends on, directly or not. */
export function ancestors(definition, name) {
  const steps = new Map(stepsOf(definition).map((step) => [step.name, step]));
  return walk(name, (current) => dependsOn(steps.get(current)));
}

/** Every step that depends on ``name``, directly or not (the steps it may not depend on: a cycle). */
export function descendants(definition, name) {
  const dependents = new Map();
  for (const step of stepsOf(definition)) {
    for (const dep of dependsOn(step)) dependents.set(dep, [...(dependents.get(dep) || []), step.name]);
  }
  return walk(name, (current) => dependents.get(current) || []);
}

/** Would making ``target`` depend on ``source`` close a cycle? */
export function wouldCycle(definition, source, target) {
  return source === target || ancestors(definition, source).has(target);
}

/** A copy where ``target`` depends on ``source``; {error} when it is refused. */
export function addDependency(definition, source, target) {
  if (source === TRIGGER) return { error: "A step without dependencies starts from the trigger: remove its incoming edges instead" };
  if (target === TRIGGER) return { error: "The trigger cannot depend on a step" };
  if (wouldCycle(definition, source, target)) {
    return { error: source === target ? "Refused: a step cannot depend on itself (a cycle)"
      : `Refused: ${target} already leads to ${source}, so ${source} → ${target} would make a cycle` };
  }
  const copy = withExplicitDependsOn(definition);
  const step = stepByName(copy, target);
  if (!step) return { error: `No step named ${target}` };
  const deps = dependsOn(step);
  if (deps.includes(source)) return { definition: copy, unchanged: true };
  step.depends_on = [...deps, source];
  return { definition: copy };
}

/** A copy without the dependency of ``target`` on ``source``. */
export function removeDependency(definition, source, target) {
  const copy = withExplicitDependsOn(definition);
  const step = stepByName(copy, target);
  if (step) step.depends_on = dependsOn(step).filter((name) => name !== source);
  return copy;
}

/** A free step name made from ``base`` (http_request, http_request_2...). */
export function freeName(definition, base) {
  const taken = new Set(stepNames(definition));
  const clean = String(base).toLowerCase().replace(/[^a-z0-9_]/g, "_") || "step";
  if (!taken.has(clean)) return clean;
  for (let i = 2; ; i += 1) if (!taken.has(`${clean}_${i}`)) return `${clean}_${i}`;
}

/** A copy with a new step of ``type`` (no dependencies) at ``position`` (written to layout when given). */
export function addStep(definition, type, position, positions) {
  const copy = withExplicitDependsOn(definition);
  const name = freeName(copy, type);
  if (!Array.isArray(copy.steps)) copy.steps = [];
  copy.steps.push({ name, type, depends_on: [], config: {} });
  if (position) {
    copy.layout = { ...(positions || {}), ...(copy.layout || {}), [name]: roundPoint(position) };
  }
  return { definition: copy, name };
}

export function roundPoint(point) {
  return [Math.round(point.x ?? point[0]), Math.round(point.y ?? point[1])];
}

/** A copy without step ``name``: its edges, the on_failure pointing at it and its layout entry go too. */
export function removeStep(definition, name) {
  const copy = withExplicitDependsOn(definition);
  copy.steps = (copy.steps || []).filter((step) => !(step && step.name === name));
  for (const step of stepsOf(copy)) {
    if (Array.isArray(step.depends_on)) step.depends_on = step.depends_on.filter((dep) => dep !== name);
    if (step.on_failure === name) delete step.on_failure;
  }
  if (copy.layout && typeof copy.layout === "object") delete copy.layout[name];
  return copy;
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function renameInTemplates(value, pattern, replacement) {
  if (typeof value === "string") return value.replace(pattern, replacement);
  if (Array.isArray(value)) return value.map((item) => renameInTemplates(item, pattern, replacement));
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, renameInTemplates(item, pattern, replacement)]));
  }
  return value;
}

/** Why ``name`` cannot be a new name of step ``current`` (null when it can). */
export function stepNameProblem(definition, current, name) {
  if (!NAME_PATTERN.test(name)) return "must match [a-z0-9_]+ (lower-case letters, digits, _)";
  if (name !== current && stepNames(definition).includes(name)) return `another step is named ${name}`;
  return null;
}

/** A copy where step ``from`` is called ``to``: dependencies, on_failure, layout and step templates follow. */
export function renameStep(definition, from, to) {
  if (from === to) return clone(definition);
  const copy = withExplicitDependsOn(definition);
  const pattern = new RegExp(`(\\bsteps\\.)${escapeRegExp(from)}\\b`, "g");
  copy.steps = (copy.steps || []).map((step) => {
    if (!step || typeof step !== "object") return step;
    const renamed = { ...step };
    if (renamed.name === from) renamed.name = to;
    if (Array.isArray(renamed.depends_on)) renamed.depends_on = renamed.depends_on.map((dep) => (dep === from ? to : dep));
    if (renamed.on_failure === from) renamed.on_failure = to;
    for (const key of ["config", "when", "cache", "compensate"]) {
      if (key in renamed) renamed[key] = renameInTemplates(renamed[key], pattern, `$1${to}`);
    }
    return renamed;
  });
  if (copy.layout && typeof copy.layout === "object" && from in copy.layout) {
    copy.layout = Object.fromEntries(Object.entries(copy.layout).map(([key, value]) => [key === from ? to : key, value]));
  }
  return copy;
}
