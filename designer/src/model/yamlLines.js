// Problem paths (steps[1].config.url) to lines of the YAML text, so the YAML view can mark them too.
import YAML from "yaml";

/** ["steps", 1, "config", "url"] from "steps[1].config.url". */
export function pathParts(path) {
  const parts = [];
  for (const piece of String(path || "").split(".")) {
    if (!piece) continue;
    const match = /^([^[]*)((?:\[\d+\])*)$/.exec(piece);
    if (!match) { parts.push(piece); continue; }
    if (match[1]) parts.push(match[1]);
    for (const index of match[2].matchAll(/\[(\d+)\]/g)) parts.push(Number(index[1]));
  }
  return parts;
}

function lineOf(text, offset) {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i += 1) if (text.charCodeAt(i) === 10) line += 1;
  return line;
}

/**
 * [{line, message}] for each problem whose path (or its nearest ancestor) is found in ``text``; problems of the
 * whole definition ("" or a path not found at all) are left out. An unparsable text gives [].
 */
export function problemLines(text, problems) {
  if (!problems || !problems.length) return [];
  const document = YAML.parseDocument(text);
  if (document.errors.length) return [];
  const lines = [];
  for (const problem of problems) {
    const parts = pathParts(problem.path);
    while (parts.length) {
      // The pair's key marks the line where the value starts (a mapping value begins on the next line).
      const parent = parts.length > 1 ? document.getIn(parts.slice(0, -1), true) : document.contents;
      let node = null;
      if (parent && YAML.isMap(parent)) {
        const pair = parent.items.find((item) => item.key && item.key.value === parts[parts.length - 1]);
        node = pair ? pair.key : null;
      } else if (parent && YAML.isSeq(parent)) {
        node = parent.items[parts[parts.length - 1]] || null;
      }
      if (node && node.range) {
        lines.push({ line: lineOf(text, node.range[0]), message: `${problem.path}: ${problem.message}` });
        break;
      }
      parts.pop();
    }
  }
  return lines;
}
