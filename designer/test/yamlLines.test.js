import { describe, expect, it } from "vitest";
import { pathParts, problemLines } from "../src/model/yamlLines.js";

const TEXT = `name: x
steps:
  - name: fetch
    type: http_request
    config:
      url: ftp://x
  - name: mail
    type: log
    depends_on: [fetch]
    config: {}
`;

describe("problem lines in the YAML", () => {
  it("splits paths into keys and indexes", () => {
    expect(pathParts("steps[1].config.url")).toEqual(["steps", 1, "config", "url"]);
    expect(pathParts("layout.@trigger")).toEqual(["layout", "@trigger"]);
    expect(pathParts("")).toEqual([]);
  });

  it("finds the line of a key, or of its nearest ancestor", () => {
    const lines = problemLines(TEXT, [
      { path: "steps[0].config.url", message: "must be http(s)" },
      { path: "steps[1].config.message", message: "is required" },
      { path: "steps[1]", message: "bad step" },
      { path: "name", message: "taken" },
      { path: "", message: "whole" },
    ]);
    expect(lines).toEqual([
      { line: 6, message: "steps[0].config.url: must be http(s)" },
      { line: 10, message: "steps[1].config.message: is required" },
      { line: 7, message: "steps[1]: bad step" },
      { line: 1, message: "name: taken" },
    ]);
  });

  it("gives nothing for a text that does not parse", () => {
    expect(problemLines("a: [", [{ path: "a", message: "x" }])).toEqual([]);
  });
});
