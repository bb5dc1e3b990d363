// The toolbar: save, undo/redo, layout, history, run, and the validation and save status.

/** Buttons and status of the designer. */
export default function Toolbar({ name, readOnly, canUndo, canRedo, onUndo, onRedo, onSave, onAutoLayout, onHistory,
  runHref, dirty, validateText, validateKind, saveText, saveKind, saving, narrow }) {
  return (
    <div className="pfd-toolbar" role="toolbar" aria-label="Designer">
      <strong className="pfd-title">{name || "New workflow"}</strong>
      {!readOnly && (
        <button type="button" className="pfd-button pfd-primary" data-testid="save" onClick={onSave} disabled={saving}>
          Save
        </button>
      )}
      <button type="button" className="pfd-button" data-testid="undo" onClick={onUndo} disabled={readOnly || !canUndo}
        title="Undo (Ctrl+Z)">Undo</button>
      <button type="button" className="pfd-button" data-testid="redo" onClick={onRedo} disabled={readOnly || !canRedo}
        title="Redo (Ctrl+Shift+Z or Ctrl+Y)">Redo</button>
      {!narrow && (
        <button type="button" className="pfd-button" data-testid="auto-layout" onClick={onAutoLayout} disabled={readOnly}>
          Auto layout
        </button>
      )}
      <button type="button" className="pfd-button" data-testid="history" onClick={onHistory}>History</button>
      {runHref ? (
        <a className="pfd-button" data-testid="run-now" href={runHref}
          title={dirty ? "Runs the saved version (save your changes first)" : "Open the run form"}>Run now</a>
      ) : (
        <button type="button" className="pfd-button" data-testid="run-now" disabled title="Save the workflow first">Run now</button>
      )}
      <span className="pfd-spacer" />
      <span className={`pfd-status pfd-status-${validateKind}`} data-testid="validate-status" aria-live="polite">{validateText}</span>
      <span className={`pfd-status pfd-save-${saveKind}`} data-testid="save-status" aria-live="polite">{saveText}</span>
    </div>
  );
}
