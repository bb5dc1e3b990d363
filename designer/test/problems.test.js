import { describe, expect, it } from "vitest";
import { indexProblems, locate } from "../src/model/problems.js";

const definition = {
  name: "x",
  trigger: { type: "cron", schedule: "nope" },
  steps: [
    { name: "fetch", type: "http_request", config: { url: "ftp://x" } },
    { name: "analyse", type: "python", config: { function: "a.b" } },
    { name: "later", type: "log", cache: { ttl: -1 } },
  ],
  layout: { ghost: [0, 0] },
};
const keys = (type) => ({ python: ["function", "kwargs"], http_request: ["url", "method"] }[type] || []);

describe("problem paths", () => {
  it("maps a config key to its step node and field", () => {
    expect(locate(definition, "steps[0].config.url")).toEqual({ node: "fetch", field: "url" });
    expect(locate(definition, "steps[0].config.headers.Accept")).toEqual({ node: "fetch", field: "headers" });
  });

  it("maps step keys, cache parts and names", () => {
    expect(locate(definition, "steps[2].when")).toEqual({ node: "later", field: "when" });
    expect(locate(definition, "steps[2].cache.ttl")).toEqual({ node: "later", field: "cache-ttl" });
    expect(locate(definition, "steps[2].depends_on")).toEqual({ node: "later", field: "depends_on" });
    expect(locate(definition, "steps[1].name")).toEqual({ node: "analyse", field: "name" });
  });

  it("lands a problem reported at a whole config on the key its message names", () => {
    const message = "action 'analyse': function must look like 'package.module:function'";
    expect(locate(definition, "steps[1].config", message, keys)).toEqual({ node: "analyse", field: "function" });
    expect(locate(definition, "steps[1].config", "something else", keys)).toEqual({ node: "analyse", field: "config" });
  });

  it("maps the trigger, the workflow's own keys and layout", () => {
    expect(locate(definition, "trigger.schedule")).toEqual({ node: "@trigger", field: "schedule" });
    expect(locate(definition, "trigger")).toEqual({ node: "@trigger", field: null });
    const cron = "trigger 'trigger': schedule must be a cron expression of five fields";
    expect(locate(definition, "trigger", cron, keys, () => ["schedule", "timezone"])).toEqual({ node: "@trigger", field: "schedule" });
    expect(locate(definition, "name")).toEqual({ node: null, field: "workflow-name" });
    expect(locate(definition, "inputs.properties.x")).toEqual({ node: null, field: "inputs" });
    expect(locate(definition, "layout.ghost")).toEqual({ node: null, field: "layout" });
    expect(locate(definition, "steps")).toEqual({ node: null, field: "steps" });
  });

  it("indexes problems by node and by field", () => {
    const index = indexProblems(definition, [
      { path: "steps[0].config.url", message: "must be http(s)" },
      { path: "steps[0].retries", message: "must be a number" },
      { path: "name", message: "taken" },
    ]);
    expect(index.list).toHaveLength(3);
    expect(index.byNode.fetch).toHaveLength(2);
    expect(index.byField.fetch).toEqual({ url: ["must be http(s)"], retries: ["must be a number"] });
    expect(index.byField[""]).toEqual({ "workflow-name": ["taken"] });
  });
});
