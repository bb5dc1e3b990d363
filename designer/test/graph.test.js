import { describe, expect, it } from "vitest";
import { addDependency, addStep, descendants, edgesOf, removeDependency, removeStep, renameStep, wouldCycle } from "../src/model/graph.js";
import { TRIGGER } from "../src/model/definition.js";
import { pruneLayout, triggerSpot } from "../src/model/layout.js";

const chain = () => ({
  name: "chain",
  steps: [
    { name: "first", type: "log", depends_on: [], config: { message: "a" } },
    { name: "second", type: "log", depends_on: ["first"], config: { message: "{{ steps.first.message }}" } },
    { name: "third", type: "log", depends_on: ["second"], on_failure: "first", config: {} },
  ],
  layout: { first: [0, 0], second: [0, 100] },
});

describe("cycles", () => {
  it("finds a cycle through any number of steps", () => {
    expect(wouldCycle(chain(), "third", "first")).toBe(true);
    expect(wouldCycle(chain(), "second", "first")).toBe(true);
    expect(wouldCycle(chain(), "first", "first")).toBe(true);
    expect(wouldCycle(chain(), "first", "third")).toBe(false);
  });

  it("refuses the edge that closes a cycle and leaves the definition as it was", () => {
    const definition = chain();
    const result = addDependency(definition, "third", "first");
    expect(result.error).toMatch(/cycle/);
    expect(result.definition).toBeUndefined();
    expect(definition.steps[0].depends_on).toEqual([]);
  });

  it("adds and removes a dependency", () => {
    const added = addDependency(chain(), "first", "third").definition;
    expect(added.steps[2].depends_on).toEqual(["second", "first"]);
    expect(removeDependency(added, "second", "third").steps[2].depends_on).toEqual(["first"]);
    expect(addDependency(added, "first", "third").unchanged).toBe(true);
  });
});

describe("steps", () => {
  it("draws one edge per depends_on entry and marks the roots' trigger edges", () => {
    const edges = edgesOf(chain());
    expect(edges.filter((edge) => !edge.trigger).map((edge) => edge.id)).toEqual(["first->second", "second->third"]);
    expect(edges.filter((edge) => edge.trigger)).toEqual([expect.objectContaining({ source: TRIGGER, target: "first" })]);
  });

  it("adds a step with a free name and no dependencies, placed in the layout", () => {
    const { definition, name } = addStep(chain(), "log", { x: 10.4, y: 300.6 }, { third: [0, 200] });
    expect(name).toBe("log");
    expect(definition.steps[3]).toEqual({ name: "log", type: "log", depends_on: [], config: {} });
    expect(definition.layout.log).toEqual([10, 301]);
    expect(definition.layout.third).toEqual([0, 200]);
    expect(addStep(definition, "log").name).toBe("log_2");
  });

  it("removes a step with its edges, the on_failure naming it and its layout entry", () => {
    const removed = removeStep(chain(), "first");
    expect(removed.steps.map((step) => step.name)).toEqual(["second", "third"]);
    expect(removed.steps[0].depends_on).toEqual([]);
    expect(removed.steps[1].on_failure).toBeUndefined();
    expect(removed.layout).toEqual({ second: [0, 100] });
  });

  it("renames a step in dependencies, on_failure, layout and templates", () => {
    const renamed = renameStep(chain(), "first", "start");
    expect(renamed.steps[0].name).toBe("start");
    expect(renamed.steps[1].depends_on).toEqual(["start"]);
    expect(renamed.steps[1].config.message).toBe("{{ steps.start.message }}");
    expect(renamed.steps[2].on_failure).toBe("start");
    expect(Object.keys(renamed.layout)).toEqual(["start", "second"]);
  });
});

describe("names typed twice in the YAML", () => {
  it("give one node and one set of edges (the server reports the duplicate)", () => {
    const definition = { steps: [{ name: "a", depends_on: [] }, { name: "a", depends_on: [] }, { name: "b", depends_on: ["a"] }] };
    expect(edgesOf(definition).map((edge) => edge.id)).toEqual(["@trigger->a", "a->b"]);
  });
});

describe("the trigger's spot when the first step is dropped", () => {
  const visible = { x: 0, y: 0, width: 700, height: 500 };

  it("is above the step when there is room, else beside or below it, always in view", () => {
    expect(triggerSpot({ x: 300, y: 300 }, visible)).toEqual([300, 188]);
    expect(triggerSpot({ x: 300, y: 10 }, visible)).toEqual([60, 10]);
    expect(triggerSpot({ x: 10, y: 10 }, visible)).toEqual([250, 10]);
    expect(triggerSpot({ x: 10, y: 10 }, { x: 0, y: 0, width: 200, height: 500 })).toEqual([10, 122]);
    expect(triggerSpot({ x: 0, y: 0 }, { x: 0, y: 0, width: 100, height: 100 })).toBeNull();
  });
});

describe("descendants", () => {
  it("are the steps that depend on one, directly or not", () => {
    expect([...descendants(chain(), "first")].sort()).toEqual(["second", "third"]);
    expect([...descendants(chain(), "third")]).toEqual([]);
  });
});

describe("layout entries of nodes gone from the YAML", () => {
  it("are dropped; the others stay", () => {
    const definition = { steps: [{ name: "a" }], layout: { a: [1, 2], gone: [3, 4], "@trigger": [0, 0] } };
    expect(pruneLayout(definition).layout).toEqual({ a: [1, 2], "@trigger": [0, 0] });
    const clean = { steps: [{ name: "a" }], layout: { a: [1, 2] } };
    expect(pruneLayout(clean)).toBe(clean);
  });
});
