// Line diffs of two YAML texts, for the version history and the conflict dialog.
import { createTwoFilesPatch } from "diff";

/** A unified diff of ``before`` -> ``after`` (empty when they are equal). */
export function unifiedDiff(before, after, beforeName = "before", afterName = "after") {
  if (before === after) return "";
  return createTwoFilesPatch(beforeName, afterName, before, after, "", "", { context: 3 })
    .split("\n").filter((line) => !line.startsWith("====")).join("\n");
}

/** Lines of a unified diff with a kind each: add, remove, hunk, head or same. */
export function diffLines(patch) {
  return String(patch || "").split("\n").filter((line, i, all) => !(i === all.length - 1 && line === ""))
    .map((line) => {
      let kind = "same";
      if (line.startsWith("+++") || line.startsWith("---")) kind = "head";
      else if (line.startsWith("@@")) kind = "hunk";
      else if (line.startsWith("+")) kind = "add";
      else if (line.startsWith("-")) kind = "remove";
      return { kind, text: line };
    });
}
