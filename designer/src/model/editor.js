// The designer's state: the history of definitions, the YAML text shown, the selection and what was saved.
import { emptyDefinition, stepsOf, toYaml, withExplicitDependsOn } from "./definition.js";
import { createHistory, record, redo, seal, undo } from "./history.js";

/** What "unsaved changes" compares: the definition as JSON, every depends_on explicit (cheaper than YAML). */
export function savedForm(definition) {
  return JSON.stringify(withExplicitDependsOn(definition));
}

/** The state before anything is loaded. */
export function initialState() {
  return {
    status: "loading", loadError: "", history: createHistory(emptyDefinition()), yamlText: "", yamlError: null,
    selected: null, meta: { name: null, version: null, origin: null }, saved: null,
  };
}

/** The next state after ``action`` (loaded, failed, edit, seal, undo, redo, yaml-error, yaml-refresh, select, saved). */
export function reducer(state, action) {
  switch (action.type) {
    case "loaded":
      return { ...state, status: "ready", history: createHistory(action.definition), meta: action.meta,
        yamlText: toYaml(action.definition), yamlError: null, saved: action.meta.origin ? savedForm(action.definition) : null };
    case "failed":
      return { ...state, status: "error", loadError: action.message };
    case "edit": {
      if (action.definition === state.history.present) return state;
      const history = record(state.history, action.definition, action.key || null);
      const yamlText = action.from === "yaml" ? action.text : toYaml(action.definition);
      const selected = stillThere(action.definition, action.select === undefined ? state.selected : action.select);
      return { ...state, history, yamlText, yamlError: null, selected };
    }
    case "seal":
      return { ...state, history: seal(state.history) };
    case "undo":
    case "redo": {
      const history = action.type === "undo" ? undo(state.history) : redo(state.history);
      return { ...state, history, yamlText: toYaml(history.present), yamlError: null,
        selected: stillThere(history.present, state.selected) };
    }
    case "yaml-error":
      return { ...state, yamlText: action.text, yamlError: action.error };
    case "yaml-refresh":
      return state.yamlError ? { ...state, history: seal(state.history) }
        : { ...state, yamlText: toYaml(state.history.present), history: seal(state.history) };
    case "select":
      return { ...state, selected: action.selected, history: seal(state.history) };
    case "saved":
      // The definition sent: edits made while it was on its way stay unsaved changes.
      return { ...state, meta: action.meta, saved: savedForm(action.definition ?? state.history.present) };
    default:
      return state;
  }
}

/** ``selected`` if it still exists in ``definition``, else null. */
export function stillThere(definition, selected) {
  if (!selected || selected.kind === "trigger") return selected;
  const names = new Set(stepsOf(definition).map((step) => step.name));
  if (selected.kind === "step") return names.has(selected.name) ? selected : null;
  if (selected.kind === "edge") {
    const target = stepsOf(definition).find((step) => step.name === selected.target);
    return target && (target.depends_on || []).includes(selected.source) ? selected : null;
  }
  return null;
}
