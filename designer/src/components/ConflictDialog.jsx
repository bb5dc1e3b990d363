// The dialog shown when a save meets a newer version (409): the server's diff, reload or overwrite.
import DiffView from "./DiffView.jsx";

/** Conflict between the draft's base version and the stored one. */
export default function ConflictDialog({ conflict, readOnly, onReload, onOverwrite, onClose }) {
  return (
    <div className="pfd-overlay" onKeyDown={(event) => { if (event.key === "Escape") onClose(); }}>
      <div className="pfd-dialog" role="dialog" aria-modal="true" aria-labelledby="pfd-conflict-title" data-testid="conflict">
        <h2 id="pfd-conflict-title">Someone saved this workflow meanwhile</h2>
        <p>{conflict.message}. Changes between the version you edited ({conflict.base}) and the stored one ({conflict.version}):</p>
        <DiffView patch={conflict.diff} testid="conflict-diff" />
        <p className="pfd-muted">Reload takes the stored version (Undo brings your draft back); Overwrite saves your draft as a new version on top of it.</p>
        <div className="pfd-dialog-actions">
          <button type="button" className="pfd-button" data-testid="conflict-reload" onClick={onReload}>Reload version {conflict.version}</button>
          {!readOnly && <button type="button" className="pfd-button pfd-danger" data-testid="conflict-overwrite" onClick={onOverwrite}>Overwrite</button>}
          <button type="button" className="pfd-button" data-testid="conflict-close" onClick={onClose} autoFocus>Cancel</button>
        </div>
      </div>
    </div>
  );
}
