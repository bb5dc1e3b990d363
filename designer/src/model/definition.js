// The model: a workflow definition object, read from and written to YAML with every depends_on explicit.
import YAML from "yaml";

export const TRIGGER = "@trigger";
export const NAME_PATTERN = /^[a-z0-9_]+$/;

const TOP_ORDER = ["name", "description", "inputs", "trigger", "max_retries", "retry_delay", "step_timeout",
  "check_interval", "max_concurrent_runs", "overlap", "max_parallel_steps", "steps", "layout"];
const STEP_ORDER = ["name", "type", "depends_on", "when", "config", "retries", "timeout", "on_failure", "compensate",
  "cache", "limits"];

/** A new, empty workflow. */
export function emptyDefinition(name = "") {
  return { name, trigger: { type: "manual" }, steps: [] };
}

/** A deep copy (definitions are plain JSON data). */
export function clone(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

/** The definition's top-level steps, always a list of objects. */
export function stepsOf(definition) {
  const steps = definition && Array.isArray(definition.steps) ? definition.steps : [];
  return steps.filter((step) => step && typeof step === "object" && !Array.isArray(step));
}

/** The step names in order (unnamed steps left out). */
export function stepNames(definition) {
  return stepsOf(definition).map((step) => step.name).filter((name) => typeof name === "string");
}

/** A copy where every step lists its depends_on (the engine's default, "the step before", made explicit). */
export function withExplicitDependsOn(definition) {
  const copy = clone(definition);
  if (!copy || !Array.isArray(copy.steps)) return copy;
  let previous = null;
  for (const step of copy.steps) {
    if (!step || typeof step !== "object" || Array.isArray(step)) continue;
    if (!("depends_on" in step) || step.depends_on === null) {
      step.depends_on = typeof previous === "string" ? [previous] : [];
    } else if (typeof step.depends_on === "string") {
      step.depends_on = [step.depends_on];
    }
    previous = step.name;
  }
  return copy;
}

function ordered(object, order) {
  const out = {};
  for (const key of order) if (key in object && object[key] !== undefined) out[key] = object[key];
  for (const key of Object.keys(object)) if (!(key in out) && object[key] !== undefined) out[key] = object[key];
  return out;
}

function orderedDefinition(definition) {
  const top = ordered(definition, TOP_ORDER);
  if (Array.isArray(top.steps)) {
    top.steps = top.steps.map((step) => (step && typeof step === "object" && !Array.isArray(step)
      ? ordered(step, STEP_ORDER) : step));
  }
  return top;
}

/** The definition as YAML: keys in a readable order, depends_on and layout positions in flow style. */
export function toYaml(definition) {
  const document = new YAML.Document(orderedDefinition(withExplicitDependsOn(definition)));
  YAML.visit(document, {
    Pair(_, pair, path) {
      const key = pair.key && pair.key.value;
      const inLayout = path.length >= 2 && YAML.isPair(path[path.length - 2])
        && path[path.length - 2].key && path[path.length - 2].key.value === "layout";
      if ((key === "depends_on" && YAML.isSeq(pair.value)) || (inLayout && YAML.isSeq(pair.value))) {
        pair.value.flow = true;
      }
    },
  });
  return document.toString({ lineWidth: 0, flowCollectionPadding: false });
}

/** Bytes of a text in UTF-8 (what the server counts). */
export function byteLength(text) {
  return new TextEncoder().encode(text).length;
}

/** Bytes of ``definition`` as compact JSON: what the server's max_definition_bytes bounds. */
export function definitionBytes(definition) {
  return byteLength(JSON.stringify(definition));
}

/**
 * Parse YAML text into a definition.
 * Returns {ok: true, definition} or {ok: false, line, column, message}; a definition over maxBytes (as compact
 * JSON, as the server counts) is refused, and so is a text over four times that before it is parsed at all.
 */
export function parseYaml(text, { maxBytes } = {}) {
  const tooLarge = (size) => ({ ok: false, line: null, column: null,
    message: `the definition is ${size} bytes, over the limit of ${maxBytes} bytes (limits.max_definition_bytes)` });
  if (maxBytes && byteLength(text) > 4 * maxBytes) return tooLarge(byteLength(text));
  const document = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (document.errors.length) {
    const error = document.errors[0];
    const [position] = error.linePos || [{ line: 1, col: 1 }];
    const message = String(error.message).split(/ at line \d+, column \d+/)[0];
    return { ok: false, line: position.line, column: position.col, message };
  }
  let value;
  try {
    value = document.toJS({ maxAliasCount: 100 });
  } catch (error) {
    return { ok: false, line: 1, column: 1, message: String(error.message || error) };
  }
  if (value === null || value === undefined) value = {};
  if (typeof value !== "object" || Array.isArray(value)) {
    return { ok: false, line: 1, column: 1, message: "a definition is a mapping with name, trigger and steps" };
  }
  if (maxBytes && definitionBytes(value) > maxBytes) return tooLarge(definitionBytes(value));
  return { ok: true, definition: withExplicitDependsOn(value) };
}
