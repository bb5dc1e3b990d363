import { describe, expect, it } from "vitest";
import { canRedo, canUndo, createHistory, HISTORY_LIMIT, record, redo, seal, undo } from "../src/model/history.js";

describe("undo and redo", () => {
  it("goes back and forth through edits", () => {
    let history = createHistory("a");
    history = record(history, "b");
    history = record(history, "c");
    history = undo(history);
    expect(history.present).toBe("b");
    history = undo(history);
    expect(history.present).toBe("a");
    expect(canUndo(history)).toBe(false);
    history = redo(history);
    expect(history.present).toBe("b");
    history = record(history, "d");
    expect(canRedo(history)).toBe(false);
    expect(undo(history).present).toBe("b");
  });

  it("counts edits of one field in a row as one step, until sealed", () => {
    let history = createHistory("");
    for (const text of ["h", "he", "hel"]) history = record(history, text, "name");
    expect(history.past).toEqual([""]);
    history = seal(history);
    history = record(history, "hello", "name");
    expect(undo(history).present).toBe("hel");
    expect(undo(undo(history)).present).toBe("");
  });

  it("keeps a bounded past", () => {
    let history = createHistory(0);
    for (let i = 1; i <= HISTORY_LIMIT + 50; i += 1) history = record(history, i);
    expect(history.past).toHaveLength(HISTORY_LIMIT);
  });
});
