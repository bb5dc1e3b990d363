// Form fields from a type's config JSON Schema: which control a property gets and how its text becomes a value.
import YAML from "yaml";

const LONG_TEXT = new Set(["body", "message", "prompt", "system", "content", "command", "html", "text", "description"]);

function collect(schema, out) {
  if (!schema || typeof schema !== "object") return out;
  // A template branch ({{ }} string) is noted apart: a field that takes a plain string is not the same.
  if (schema.$ref === "#/$defs/template") { out.template = true; return out; }
  if (Array.isArray(schema.enum)) for (const value of schema.enum) if (!out.enum.includes(value)) out.enum.push(value);
  if (typeof schema.type === "string") out.types.add(schema.type);
  if (Array.isArray(schema.type)) for (const type of schema.type) out.types.add(type);
  for (const branch of [...(schema.anyOf || []), ...(schema.oneOf || [])]) collect(branch, out);
  return out;
}

/**
 * The control for a property: {kind: "enum" | "boolean" | "number" | "text" | "longtext" | "yaml", options, template,
 * plainString (a one-line text stays a string in a YAML field)}.
 * ``value`` (the current one) can turn a field into "yaml" when it holds a list or mapping.
 */
export function fieldKind(key, schema, value) {
  const info = collect(schema, { types: new Set(), enum: [], template: false });
  const template = !!(schema && schema["x-pyflow-template"]) || info.template;
  const types = new Set([...info.types].filter((type) => type !== "null"));
  const plainString = types.has("string") || !types.size;
  const structured = types.has("object") || types.has("array");
  if ((value !== null && typeof value === "object") || structured || !types.size) {
    return { kind: "yaml", template, plainString };
  }
  if (info.enum.length) return { kind: "enum", options: info.enum, template };
  if (types.has("boolean") && !types.has("number") && !types.has("integer") && !types.has("string")) {
    return { kind: "boolean", template };
  }
  if (types.has("number") || types.has("integer")) return { kind: "number", template };
  return { kind: LONG_TEXT.has(key) ? "longtext" : "text", template };
}

const NUMBER = /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/;
const TEMPLATE_START = /^\s*(\{\{|\{%)/;

/** The text a field shows for ``value``. */
export function formatValue(kind, value) {
  if (value === undefined || value === null) return "";
  if (kind === "yaml") {
    if (typeof value === "string") return value;
    return YAML.stringify(value, { lineWidth: 0 }).replace(/\n$/, "");
  }
  return String(value);
}

/** The value of a field's text: {value} (undefined means the key is removed) or {error}. */
export function parseValue(kind, text, { plainString = false } = {}) {
  if (text === "" || text === undefined) return { value: undefined };
  if (kind === "number") return { value: NUMBER.test(text.trim()) ? Number(text.trim()) : text };
  if (kind === "boolean") {
    if (text === "true") return { value: true };
    if (text === "false") return { value: false };
    return { value: text };
  }
  if (kind === "yaml") {
    // A template is a string even though "{{ x }}" would read as a YAML mapping.
    if (TEMPLATE_START.test(text)) return { value: text.trim() };
    // Where a plain string is allowed, one line that opens no list or mapping is that string ("echo a: b").
    if (plainString && !text.includes("\n") && !/^\s*[[{]/.test(text)) {
      return { value: NUMBER.test(text.trim()) ? Number(text.trim()) : text };
    }
    try {
      const value = YAML.parse(text);
      return { value: value === null ? undefined : value };
    } catch (error) {
      const where = error.linePos && error.linePos[0];
      const message = String(error.message).split(/ at line \d+, column \d+/)[0];
      return { error: where ? `line ${where.line}, column ${where.col}: ${message}` : message };
    }
  }
  return { value: text };
}

/**
 * Property keys of a schema in display order: required ones first, then the schema's order. A Python-only
 * field (a callable, such as the cron trigger's test clock) is left out: a definition cannot hold one.
 */
export function orderedKeys(schema) {
  const properties = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  const keys = Object.keys(properties).filter((key) => !(properties[key] || {})["x-pyflow-python-only"]);
  return [...keys.filter((key) => required.has(key)), ...keys.filter((key) => !required.has(key))];
}

/** Is property ``key`` required by ``schema``? */
export function isRequired(schema, key) {
  return !!(schema && Array.isArray(schema.required) && schema.required.includes(key));
}
