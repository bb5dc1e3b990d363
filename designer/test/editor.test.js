import { describe, expect, it } from "vitest";
import { initialState, reducer } from "../src/model/editor.js";

describe("the designer's state", () => {
  const chain = { name: "c", steps: [{ name: "a", type: "log", depends_on: [] }, { name: "b", type: "log", depends_on: ["a"] }] };

  it("undoes a deletion and drops a selection that no longer exists", () => {
    let state = reducer(initialState(), { type: "loaded", definition: chain, meta: { name: "c", version: 1, origin: "api" } });
    state = reducer(state, { type: "select", selected: { kind: "step", name: "b" } });
    state = reducer(state, { type: "edit", definition: { ...chain, steps: [chain.steps[0]] } });
    expect(state.selected).toBeNull();
    expect(state.yamlText).not.toContain("name: b");
    state = reducer(state, { type: "undo" });
    expect(state.yamlText).toContain("name: b");
    state = reducer(state, { type: "redo" });
    expect(state.history.present.steps).toHaveLength(1);
  });

  it("keeps the text typed in the YAML view, and an error without touching the model", () => {
    let state = reducer(initialState(), { type: "loaded", definition: chain, meta: { name: "c", version: 1, origin: "api" } });
    state = reducer(state, { type: "yaml-error", text: "name: [", error: "line 1, column 8: ..." });
    expect(state.history.present).toBe(chain);
    expect(state.yamlText).toBe("name: [");
    state = reducer(state, { type: "edit", definition: { name: "d" }, from: "yaml", text: "name:   d", key: "yaml" });
    expect(state.yamlText).toBe("name:   d");
    expect(state.yamlError).toBeNull();
  });
});
