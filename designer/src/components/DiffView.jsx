// A unified diff with added and removed lines coloured.
import { diffLines } from "../model/diff.js";

/** Renders ``patch`` (a unified diff). */
export default function DiffView({ patch, testid }) {
  const lines = diffLines(patch);
  return (
    <pre className="pfd-diff" data-testid={testid}>
      {lines.length ? lines.map((line, index) => (
        <span key={index} className={`pfd-diff-${line.kind}`}>{line.text}{"\n"}</span>
      )) : <span className="pfd-muted">No differences.</span>}
    </pre>
  );
}
