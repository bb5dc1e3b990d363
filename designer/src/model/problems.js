// Validation problems ({path, message}) mapped onto the node and the form field they concern.
import { stepsOf, TRIGGER } from "./definition.js";

const ADVANCED = new Set(["when", "retries", "timeout", "on_failure", "compensate", "depends_on", "limits"]);

/** The config key a message about a whole config names first (its action's check said "function must ..."). */
function namedKey(message, keys) {
  let best = null;
  let at = Infinity;
  for (const key of keys) {
    const found = new RegExp(`(^|[^A-Za-z0-9_.'])${key}([^A-Za-z0-9_]|$)`).exec(String(message));
    if (found && found.index < at) { best = key; at = found.index; }
  }
  return best;
}

/**
 * Where a problem points: {node (step name, "@trigger" or null for the workflow), field (or null)}.
 * ``configKeys(type)`` lists a step type's config keys and ``triggerKeys(type)`` a trigger type's settings, so a
 * problem reported at a whole config (or the whole trigger) lands on the key its message names.
 */
export function locate(definition, path, message = "", configKeys = () => [], triggerKeys = () => []) {
  const text = String(path || "");
  const step = /^steps\[(\d+)\](.*)$/.exec(text);
  if (step) {
    const target = stepsOf(definition)[Number(step[1])];
    const raw = Array.isArray(definition && definition.steps) ? definition.steps[Number(step[1])] : target;
    const name = raw && typeof raw.name === "string" ? raw.name : null;
    let field = stepField(step[2]);
    if (field === "config" && raw) {
      const config = raw.config && typeof raw.config === "object" ? Object.keys(raw.config) : [];
      field = namedKey(message, [...new Set([...configKeys(raw.type), ...config])]) || field;
    }
    return { node: name, field };
  }
  if (text === "trigger" || text.startsWith("trigger.")) {
    if (text !== "trigger") return { node: TRIGGER, field: text.slice("trigger.".length).split(/[.[]/)[0] };
    const trigger = definition && definition.trigger && typeof definition.trigger === "object" ? definition.trigger : {};
    const keys = [...new Set([...triggerKeys(trigger.type), ...Object.keys(trigger).filter((key) => key !== "type")])];
    return { node: TRIGGER, field: namedKey(message, keys) };
  }
  const layout = /^layout\.(.+)$/.exec(text);
  if (layout) {
    const names = new Set(stepsOf(definition).map((s) => s.name));
    return { node: names.has(layout[1]) || layout[1] === TRIGGER ? layout[1] : null, field: "layout" };
  }
  if (text === "name") return { node: null, field: "workflow-name" };
  if (text === "description") return { node: null, field: "workflow-description" };
  if (text === "inputs" || text.startsWith("inputs.") || text.startsWith("inputs[")) return { node: null, field: "inputs" };
  return { node: null, field: text ? text.split(/[.[]/)[0] : null };
}

function stepField(rest) {
  if (!rest) return null;
  const config = /^\.config\.([^.[]+)/.exec(rest);
  if (config) return config[1];
  if (rest === ".config") return "config";
  const cache = /^\.cache\.(ttl|key)/.exec(rest);
  if (cache) return `cache-${cache[1]}`;
  const key = /^\.([^.[]+)/.exec(rest);
  if (!key) return null;
  return key[1];
}

/** Is a step field in the "advanced" part of the form? */
export function isAdvanced(field) {
  return ADVANCED.has(field) || field === "cache" || String(field).startsWith("cache-");
}

/**
 * Problems indexed for display: {list: [{path, message, node, field}], byNode: {node: [..]}, byField: {node: {field: [messages]}}}.
 * The workflow-level node is keyed "".
 */
export function indexProblems(definition, problems, configKeys = () => [], triggerKeys = () => []) {
  return indexLocated((problems || []).map((problem) => ({
    ...problem, ...locate(definition, problem.path, problem.message, configKeys, triggerKeys) })));
}

/** The index of problems already located ({path, message, node, field}). */
export function indexLocated(list) {
  const byNode = {};
  const byField = {};
  for (const problem of list) {
    const node = problem.node ?? "";
    (byNode[node] ||= []).push(problem);
    if (problem.field) ((byField[node] ||= {})[problem.field] ||= []).push(problem.message);
  }
  return { list, byNode, byField };
}
