// The palette: the catalog's step types in groups, searchable; drag one onto the canvas, or press Enter on it.
import { useMemo, useState } from "react";
import { paletteGroups } from "../model/catalog.js";
import { DRAG_TYPE } from "./Canvas.jsx";

/** The list of step types to add. */
export default function Palette({ catalog, readOnly, onAdd }) {
  const [query, setQuery] = useState("");
  const groups = useMemo(() => paletteGroups(catalog, query), [catalog, query]);
  return (
    <aside className="pfd-palette" data-testid="palette" aria-label="Step types">
      <input type="search" className="pfd-input" data-testid="palette-search" placeholder="Search step types"
        aria-label="Search step types" value={query} onChange={(event) => setQuery(event.target.value)} />
      {!groups.length && <p className="pfd-muted">No step type matches “{query}”.</p>}
      {groups.map((group) => (
        <section key={group.id} className="pfd-palette-group">
          <h3 data-testid={`palette-group-${group.id}`}>{group.label}</h3>
          <ul>
            {group.items.map((action) => (
              <li key={action.type}>
                <div
                  className="pfd-palette-item"
                  data-testid={`palette-item-${action.type}`}
                  role="button"
                  tabIndex={0}
                  draggable={!readOnly}
                  aria-disabled={readOnly}
                  title={`${action.description || action.type}${readOnly ? "" : " (drag onto the canvas, or press Enter)"}`}
                  onDragStart={(event) => {
                    event.dataTransfer.setData(DRAG_TYPE, action.type);
                    event.dataTransfer.setData("text/plain", action.type);
                    event.dataTransfer.effectAllowed = "copy";
                  }}
                  onDoubleClick={() => onAdd(action.type)}
                  onKeyDown={(event) => {
                    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); onAdd(action.type); }
                  }}
                >
                  <span className="pfd-palette-type">{action.type}</span>
                  {action.origin && action.origin !== "builtin" && <span className="pfd-badge">{action.origin}</span>}
                </div>
              </li>
            ))}
          </ul>
        </section>
      ))}
      {catalog && Array.isArray(catalog.problems) && catalog.problems.length > 0 && (
        <details className="pfd-plugin-problems" data-testid="plugin-problems">
          <summary>{catalog.problems.length} plugin problem{catalog.problems.length === 1 ? "" : "s"}</summary>
          <ul>
            {catalog.problems.map((problem, index) => (
              <li key={index}><strong>{problem.plugin}</strong>: {problem.error}</li>
            ))}
          </ul>
          <p className="pfd-help">Steps of a type such a plugin should provide are shown in red.</p>
        </details>
      )}
    </aside>
  );
}
