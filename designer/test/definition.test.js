import { describe, expect, it } from "vitest";
import { parseYaml, toYaml, withExplicitDependsOn } from "../src/model/definition.js";

const PIPELINE = `name: pipeline
trigger: {type: cron, schedule: "0 8 * * *"}
steps:
  - {name: fetch, type: http_request, config: {url: "https://example.org/{{ inputs.team }}"}}
  - {name: shape, type: transform, config: {operation: map}}
  - {name: mail, type: send_email, depends_on: [fetch], config: {to: [a@example.org]}}
layout:
  fetch: [10, 20]
  "@trigger": [10, -80]
`;

describe("YAML <-> model", () => {
  it("writes every depends_on explicitly: the step before, [] for the first", () => {
    const parsed = parseYaml(PIPELINE);
    expect(parsed.ok).toBe(true);
    const deps = parsed.definition.steps.map((step) => step.depends_on);
    expect(deps).toEqual([[], ["fetch"], ["fetch"]]);
    const text = toYaml(parsed.definition);
    expect(text).toContain("depends_on: []");
    expect(text).toContain("depends_on: [fetch]");
    expect(text.match(/depends_on:/g)).toHaveLength(3);
  });

  it("round-trips a definition, layout included", () => {
    const first = parseYaml(PIPELINE).definition;
    const again = parseYaml(toYaml(first));
    expect(again.ok).toBe(true);
    expect(again.definition).toEqual(first);
    expect(again.definition.layout).toEqual({ fetch: [10, 20], "@trigger": [10, -80] });
    expect(toYaml(first)).toContain('"@trigger": [10, -80]');
  });

  it("keeps templates as quoted strings", () => {
    const text = toYaml(parseYaml(PIPELINE).definition);
    expect(text).toContain("url: https://example.org/{{ inputs.team }}");
    expect(toYaml({ steps: [{ name: "a", config: { file: "{{ inputs.file }}" } }] })).toContain('file: "{{ inputs.file }}"');
    expect(parseYaml(text).definition.steps[0].config.url).toBe("https://example.org/{{ inputs.team }}");
  });

  it("orders keys for reading: name, type, depends_on before config", () => {
    const text = toYaml({ steps: [{ config: {}, type: "log", name: "a" }], name: "x" });
    expect(text.indexOf("name: x")).toBe(0);
    expect(text.indexOf("name: a")).toBeLessThan(text.indexOf("type: log"));
    expect(text.indexOf("depends_on")).toBeLessThan(text.indexOf("config"));
  });

  it("reports YAML that does not parse with its line and column", () => {
    const parsed = parseYaml("name: broken\nsteps:\n  - {name: first, type: log\n");
    expect(parsed).toMatchObject({ ok: false, line: 4, column: 1 });
    expect(parsed.message).toMatch(/Flow map/);
    expect(parseYaml("a: 1\na: 2")).toMatchObject({ ok: false, line: 2, message: "Map keys must be unique" });
  });

  it("refuses YAML that is not a mapping, or too large", () => {
    expect(parseYaml("- 1\n- 2")).toMatchObject({ ok: false, message: expect.stringContaining("mapping") });
    const big = `name: x\ndescription: "${"a".repeat(200)}"\n`;
    expect(parseYaml(big, { maxBytes: 100 })).toMatchObject({ ok: false, message: expect.stringContaining("limit of 100 bytes") });
  });

  it("leaves explicit dependencies alone and wraps a single name", () => {
    const made = withExplicitDependsOn({ steps: [{ name: "a" }, { name: "b", depends_on: [] }, { name: "c", depends_on: "a" }] });
    expect(made.steps.map((step) => step.depends_on)).toEqual([[], [], ["a"]]);
  });
});
