// Version history of an API-made workflow: the versions, a YAML diff of one against the one before or the draft,
// and restore (saved as a new version).
import { useEffect, useMemo, useState } from "react";
import { toYaml } from "../model/definition.js";
import { unifiedDiff } from "../model/diff.js";
import DiffView from "./DiffView.jsx";

/** The history panel. */
export default function HistoryDialog({ api, name, origin, current, readOnly, onRestore, onClose }) {
  const [versions, setVersions] = useState(null);
  const [error, setError] = useState("");
  const [picked, setPicked] = useState(null);
  const [against, setAgainst] = useState("previous");
  const [texts, setTexts] = useState({});
  const [definitions, setDefinitions] = useState({});

  useEffect(() => {
    if (!name) { setVersions([]); return; }
    api.versions(name).then((answer) => {
      if (!answer.ok) { setError(answer.message); setVersions([]); return; }
      const list = answer.data.versions || [];
      setVersions(list);
      if (list.length) setPicked(list[0].version);
    });
  }, [api, name]);

  const numbers = useMemo(() => (versions || []).map((entry) => entry.version), [versions]);
  const previous = picked != null ? numbers.find((number) => number < picked) : undefined;

  useEffect(() => {
    for (const number of [picked, previous]) {
      if (number == null || number in definitions) continue;
      setDefinitions((known) => ({ ...known, [number]: null }));
      api.version(name, number).then((answer) => {
        if (!answer.ok) { setError(answer.message); return; }
        setDefinitions((known) => ({ ...known, [number]: answer.data.definition }));
        setTexts((known) => ({ ...known, [number]: toYaml(answer.data.definition) }));
      });
    }
  }, [api, name, picked, previous, definitions]);

  const compareWith = against === "previous" && previous != null ? "previous" : "draft";
  let patch = null;
  if (picked != null && texts[picked] != null) {
    if (compareWith === "previous") {
      if (texts[previous] != null) patch = unifiedDiff(texts[previous], texts[picked], `version ${previous}`, `version ${picked}`);
    } else {
      patch = unifiedDiff(texts[picked], toYaml(current), `version ${picked}`, "draft");
    }
  }

  return (
    <div className="pfd-overlay" onKeyDown={(event) => { if (event.key === "Escape") onClose(); }}>
      <div className="pfd-dialog pfd-history" role="dialog" aria-modal="true" aria-labelledby="pfd-history-title" data-testid="history-panel">
        <div className="pfd-dialog-head">
          <h2 id="pfd-history-title">Version history</h2>
          <button type="button" className="pfd-button" data-testid="history-close" onClick={onClose} autoFocus>Close</button>
        </div>
        {error && <p className="pfd-error" role="alert">{error}</p>}
        {versions === null && <p className="pfd-muted">Loading…</p>}
        {versions && !versions.length && (
          <p className="pfd-muted">
            {name ? "No versions yet." : origin ? "This workflow is not made through the API, so it has no stored versions."
              : "Not saved yet: save to make version 1."}
          </p>
        )}
        {versions && versions.length > 0 && (
          <div className="pfd-history-body">
            <ul className="pfd-versions">
              {versions.map((entry) => (
                <li key={entry.version} data-testid={`version-${entry.version}`}
                  className={entry.version === picked ? "pfd-picked" : ""} onClick={() => setPicked(entry.version)}>
                  <button type="button" className="pfd-linkish" onClick={() => setPicked(entry.version)}>
                    Version {entry.version}<span className="pfd-muted"> · {entry.saved_at}</span>
                  </button>
                  {!readOnly && (
                    <button type="button" className="pfd-button pfd-small" data-testid={`restore-${entry.version}`}
                      onClick={async (event) => {
                        event.stopPropagation();
                        let definition = definitions[entry.version];
                        if (!definition) {
                          const answer = await api.version(name, entry.version);
                          if (!answer.ok) { setError(answer.message); return; }
                          definition = answer.data.definition;
                        }
                        onRestore(entry.version, definition);
                      }}>Restore</button>
                  )}
                </li>
              ))}
            </ul>
            <div className="pfd-history-diff">
              <label className="pfd-muted">
                Compare version {picked} with{" "}
                <select data-testid="diff-against" value={compareWith} onChange={(event) => setAgainst(event.target.value)}>
                  {previous != null && <option value="previous">version {previous} (before it)</option>}
                  <option value="draft">the current draft</option>
                </select>
              </label>
              {patch === null ? <p className="pfd-muted">Loading…</p> : <DiffView patch={patch} testid="version-diff" />}
            </div>
          </div>
        )}
      </div>
    </div>
  );
}
