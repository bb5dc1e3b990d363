import { describe, expect, it } from "vitest";
import { actionType, paletteGroups } from "../src/model/catalog.js";
import { indexProblems } from "../src/model/problems.js";
import { fieldKind, formatValue, orderedKeys, parseValue } from "../src/model/schema.js";

const template = { $ref: "#/$defs/template" };

describe("form fields from config schemas", () => {
  it("chooses a control per property", () => {
    expect(fieldKind("method", { type: "string", enum: ["GET", "POST"] }).kind).toBe("enum");
    expect(fieldKind("operation", { anyOf: [{ type: "string", enum: ["map"] }, template] })).toMatchObject({ kind: "enum", options: ["map"], template: true });
    expect(fieldKind("url", { type: "string" }).kind).toBe("text");
    expect(fieldKind("body", { type: "string" }).kind).toBe("longtext");
    expect(fieldKind("timeout", { type: ["number", "string"] }).kind).toBe("number");
    expect(fieldKind("condition", { anyOf: [{ type: "object" }, template] })).toMatchObject({ kind: "yaml", plainString: false });
    expect(fieldKind("command", { anyOf: [{ type: "string" }, { type: "array" }] })).toMatchObject({ kind: "yaml", plainString: true });
    expect(fieldKind("url", { type: "string" }, ["a"]).kind).toBe("yaml");
  });

  it("lists required fields first and leaves out Python-only ones (a trigger's test clock)", () => {
    const cron = {
      required: ["schedule"],
      properties: { timezone: { type: "string" }, schedule: { type: "string" },
                    clock: { "x-pyflow-python-only": true, default: null } },
    };
    expect(orderedKeys(cron)).toEqual(["schedule", "timezone"]);
  });

  it("turns text into values: numbers, templates, YAML", () => {
    expect(parseValue("number", "30")).toEqual({ value: 30 });
    expect(parseValue("number", "{{ inputs.t }}")).toEqual({ value: "{{ inputs.t }}" });
    expect(parseValue("text", "")).toEqual({ value: undefined });
    expect(parseValue("yaml", "{type: gt, left: 1, right: 0}")).toEqual({ value: { type: "gt", left: 1, right: 0 } });
    expect(parseValue("yaml", "{{ inputs.items }}")).toEqual({ value: "{{ inputs.items }}" });
    expect(parseValue("yaml", "echo a: b", { plainString: true })).toEqual({ value: "echo a: b" });
    expect(parseValue("yaml", "{a: [1", {}).error).toMatch(/line 1, column/);
    expect(formatValue("yaml", { a: 1 })).toBe("a: 1");
  });
});

describe("unknown types", () => {
  const catalog = { actions: [{ type: "log", origin: "builtin" }, { type: "jira_issue", origin: "pyflow-jira" }] };

  it("are absent from the catalog, so the node is marked and the rest stays editable", () => {
    expect(actionType(catalog, "gone_plugin_type")).toBeUndefined();
    const definition = { steps: [{ name: "a", type: "log" }, { name: "b", type: "gone_plugin_type" }] };
    const index = indexProblems(definition, [{ path: "steps[1].type", message: "not in the catalog" }]);
    expect(index.byNode.b).toHaveLength(1);
    expect(index.byNode.a).toBeUndefined();
  });

  it("put plugin types in their own palette group", () => {
    const groups = paletteGroups(catalog);
    expect(groups.map((group) => group.id)).toEqual(["messaging", "plugins"]);
    expect(paletteGroups(catalog, "jira").map((group) => group.id)).toEqual(["plugins"]);
  });
});
