// The palette: catalog action types sorted into groups a user recognises.
export const GROUPS = [
  { id: "data", label: "Data", types: ["transform", "validate_data", "condition"] },
  { id: "files", label: "Files", types: ["file", "pdf_text", "extract_pdf_data"] },
  { id: "http", label: "HTTP", types: ["http_request", "http_check"] },
  { id: "messaging", label: "Messaging", types: ["send_email", "notify", "log"] },
  { id: "flow-control", label: "Flow control", types: ["loop", "wait", "wait_for_event", "workflow"] },
  { id: "human", label: "Human", types: ["approval"] },
  { id: "ai", label: "AI", types: ["llm"] },
  { id: "code", label: "Code", types: ["python", "shell"] },
  { id: "plugins", label: "Plugins", types: [] },
  { id: "other", label: "Other", types: [] },
];

/** Groups [{id, label, items: [action]}] of the catalog's actions matching ``query`` (type or description). */
export function paletteGroups(catalog, query = "") {
  const needle = query.trim().toLowerCase();
  const groups = GROUPS.map((group) => ({ ...group, items: [] }));
  const byId = Object.fromEntries(groups.map((group) => [group.id, group]));
  for (const action of (catalog && catalog.actions) || []) {
    const text = `${action.type} ${action.description || ""}`.toLowerCase();
    if (needle && !text.includes(needle)) continue;
    let group = action.origin && action.origin !== "builtin" ? byId.plugins : null;
    group ||= groups.find((candidate) => candidate.types.includes(action.type)) || byId.other;
    group.items.push(action);
  }
  for (const group of groups) group.items.sort((a, b) => a.type.localeCompare(b.type));
  return groups.filter((group) => group.items.length);
}

/** The catalog entry of action ``type`` (undefined when the catalog lacks it). */
export function actionType(catalog, type) {
  return ((catalog && catalog.actions) || []).find((action) => action.type === type);
}

/** The catalog entry of trigger ``type``. */
export function triggerType(catalog, type) {
  return ((catalog && catalog.triggers) || []).find((trigger) => trigger.type === type);
}

const DEFAULT_STEP_KEYS = {
  type: "object",
  properties: {
    when: { type: "string", description: "A template; the step is skipped when it renders false." },
    retries: { type: "integer", minimum: 0, description: "Attempts after a failure." },
    timeout: { type: "number", minimum: 0, description: "Seconds the step may take." },
    on_failure: { description: "fail, continue or the name of a handler step." },
    compensate: { type: "object", description: "A step run when the run fails or is cancelled." },
    cache: { type: "object", description: "{ttl: seconds, key: template}: reuse a result." },
    limits: { type: "object", description: "Shell steps only: cpu_seconds, memory_mb, output_kb, processes." },
  },
};

/** The step keys (when, retries...) the catalog describes, or the built-in list when it has none. */
export function stepKeys(catalog) {
  const keys = catalog && catalog.step_keys && catalog.step_keys.properties ? catalog.step_keys : DEFAULT_STEP_KEYS;
  return keys.properties;
}
