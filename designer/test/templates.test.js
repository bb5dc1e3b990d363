import { describe, expect, it } from "vitest";
import { templateNames } from "../src/model/templates.js";

const catalog = { actions: [
  { type: "pdf_text", results: ["text", "pages", "ocr_pages"] },
  { type: "python", results: [] },
  { type: "log", results: ["message"] },
] };
const definition = {
  inputs: { type: "object", properties: { file: { type: "string" }, db: { type: "string" } } },
  steps: [
    { name: "extract", type: "pdf_text", depends_on: [] },
    { name: "analyse", type: "python", depends_on: ["extract"] },
    { name: "side", type: "log", depends_on: [] },
    { name: "store", type: "log", depends_on: ["analyse"] },
  ],
};

describe("template names", () => {
  it("lists inputs, the results of every earlier step and secrets", () => {
    const names = templateNames(definition, "store", catalog, ["SMTP_PASSWORD"]);
    expect(names).toEqual(["inputs.file", "inputs.db", "steps.extract.text", "steps.extract.pages",
      "steps.extract.ocr_pages", "steps.analyse", "secrets.SMTP_PASSWORD"]);
  });

  it("leaves out later and unrelated steps", () => {
    const names = templateNames(definition, "analyse", catalog);
    expect(names).toContain("steps.extract.text");
    expect(names.some((name) => name.startsWith("steps.store") || name.startsWith("steps.side"))).toBe(false);
    expect(names).toContain("secrets.NAME");
  });

  it("gives the trigger only inputs and secrets", () => {
    expect(templateNames(definition, null, catalog)).toEqual(["inputs.file", "inputs.db", "secrets.NAME"]);
  });
});
