// The names a template of a step can use: inputs.*, steps.<earlier step>.<result key>, secrets.*.
import { stepsOf } from "./definition.js";
import { ancestors } from "./graph.js";

/** Template names for step ``name`` (or for the trigger when name is null), in display order. */
export function templateNames(definition, name, catalog, secrets = []) {
  const names = [];
  const inputs = definition && definition.inputs;
  const properties = inputs && typeof inputs === "object" && inputs.properties && typeof inputs.properties === "object"
    ? Object.keys(inputs.properties) : [];
  for (const key of properties) names.push(`inputs.${key}`);
  if (name) {
    const earlier = ancestors(definition, name);
    const types = Object.fromEntries((catalog?.actions || []).map((action) => [action.type, action]));
    for (const step of stepsOf(definition)) {
      if (!earlier.has(step.name)) continue;
      const results = (types[step.type] && types[step.type].results) || [];
      if (!results.length) names.push(`steps.${step.name}`);
      for (const key of results) names.push(`steps.${step.name}.${key}`);
    }
  }
  for (const secret of secrets.length ? secrets : ["NAME"]) names.push(`secrets.${secret}`);
  return names;
}
