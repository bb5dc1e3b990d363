// Validation as you go: the draft is posted to /api/workflows/validate a moment after each change, and the
// problems found are located on their nodes and fields (with the catalog's own check of unknown step types).
import { useEffect, useMemo, useState } from "react";
import { actionType, triggerType } from "../model/catalog.js";
import { stepsOf } from "../model/definition.js";
import { indexLocated, locate } from "../model/problems.js";

export const VALIDATE_DELAY_MS = 400;

/** Problems of a step type the catalog lacks (its plugin is gone): the server says it too, this says why. */
export function unknownTypes(definition, catalog) {
  if (!catalog) return [];
  const found = [];
  stepsOf(definition).forEach((step, index) => {
    if (typeof step.type === "string" && !actionType(catalog, step.type)) {
      found.push({ path: `steps[${index}].type`,
        message: `type '${step.type}' is not in the catalog (the plugin that provided it may be gone)` });
    }
  });
  return found;
}

/**
 * {problems (the last answer), setProblems, allProblems (indexed: list, byNode, byField)}.
 * The last answer stays shown while the next check runs, located on the definition it was about.
 */
export default function useValidation(api, definition, catalog, ready) {
  const [problems, setProblems] = useState({ definition: null, items: [], status: "idle", message: "" });

  useEffect(() => {
    if (!ready) return undefined;
    let cancelled = false;
    setProblems((current) => ({ ...current, status: "checking" }));
    const timer = setTimeout(async () => {
      const answer = await api.validate(definition);
      if (cancelled) return;
      if (answer.ok) setProblems({ definition, items: [], status: "done", message: "" });
      else if (answer.status === 422 && answer.error) {
        const details = Array.isArray(answer.error.details) ? answer.error.details : [{ path: "", message: answer.message }];
        setProblems({ definition, items: details, status: "done", message: "" });
      } else if (answer.status === 400 || answer.status === 413) {
        setProblems({ definition, items: [{ path: "", message: answer.message }], status: "done", message: "" });
      } else {
        setProblems({ definition, items: [], status: "unavailable", message: answer.message });
      }
    }, VALIDATE_DELAY_MS);
    return () => { cancelled = true; clearTimeout(timer); };
  }, [api, definition, ready]);

  const allProblems = useMemo(() => {
    const configKeys = (type) => Object.keys((actionType(catalog, type) || {}).config_schema?.properties || {});
    const triggerKeys = (type) => Object.keys((triggerType(catalog, type) || {}).config_schema?.properties || {});
    const answered = problems.definition || definition;
    const list = problems.items.map((item) => ({
      ...item, ...locate(answered, item.path, item.message, configKeys, triggerKeys) }));
    const reported = new Set(list.map((item) => `${item.node}:${item.field}`));
    for (const item of unknownTypes(definition, catalog)) {
      const located = { ...item, ...locate(definition, item.path) };
      if (!reported.has(`${located.node}:${located.field}`)) list.push(located);
    }
    return indexLocated(list);
  }, [problems, definition, catalog]);

  return { problems, setProblems, allProblems };
}
