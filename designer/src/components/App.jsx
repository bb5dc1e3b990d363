// The designer: one definition (the model) shown as a canvas, a form and YAML, validated, saved and versioned.
import { ReactFlowProvider, useReactFlow } from "@xyflow/react";
import { useCallback, useEffect, useMemo, useReducer, useRef, useState } from "react";
import { makeApi } from "../api.js";
import { stepKeys } from "../model/catalog.js";
import { clone, definitionBytes, emptyDefinition, parseYaml, stepsOf, TRIGGER, withExplicitDependsOn }
  from "../model/definition.js";
import { addDependency, addStep, removeDependency, removeStep } from "../model/graph.js";
import { canRedo, canUndo } from "../model/history.js";
import { initialState, reducer, savedForm } from "../model/editor.js";
import { problemLines } from "../model/yamlLines.js";
import { autoLayout, freeSpot, layoutOf, needsAutoLayout, positionsOf, pruneLayout, structureKey, triggerSpot }
  from "../model/layout.js";
import Canvas from "./Canvas.jsx";
import ConflictDialog from "./ConflictDialog.jsx";
import ErrorBoundary from "./ErrorBoundary.jsx";
import HistoryDialog from "./HistoryDialog.jsx";
import Inspector from "./Inspector.jsx";
import Palette from "./Palette.jsx";
import ProblemsPanel from "./ProblemsPanel.jsx";
import Toolbar from "./Toolbar.jsx";
import useValidation from "./useValidation.js";
import YamlEditor from "./YamlEditor.jsx";

const NARROW_QUERY = "(max-width: 899px)";
const YAML_DEFER_CHARS = 20000;
const YAML_DEFER_MS = 250;

function useNarrow() {
  const query = typeof window !== "undefined" && window.matchMedia ? window.matchMedia(NARROW_QUERY) : null;
  const [narrow, setNarrow] = useState(query ? query.matches : false);
  useEffect(() => {
    if (!query) return undefined;
    const listener = (event) => setNarrow(event.matches);
    query.addEventListener("change", listener);
    return () => query.removeEventListener("change", listener);
  }, []); // eslint-disable-line react-hooks/exhaustive-deps
  return narrow;
}

function isTyping(target) {
  return !!(target && target.closest && target.closest("input, textarea, select, [contenteditable='true'], .cm-editor"));
}

/** The designer page's root component. */
export default function App(props) {
  return (
    <ErrorBoundary>
      <ReactFlowProvider>
        <Designer {...props} />
      </ReactFlowProvider>
    </ErrorBoundary>
  );
}

function Designer({ workflow, canSave, csrf, api: apiBase, dashboard }) {
  const api = useMemo(() => makeApi(apiBase, csrf), [apiBase, csrf]);
  const readOnly = !canSave;
  const [state, dispatch] = useReducer(reducer, undefined, initialState);
  const [catalog, setCatalog] = useState(null);
  const [secrets, setSecrets] = useState([]);
  const [save, setSave] = useState({ kind: "idle", text: "" });
  const [toast, setToast] = useState(null);
  const [conflict, setConflict] = useState(null);
  const [historyOpen, setHistoryOpen] = useState(false);
  const narrow = useNarrow();
  const flow = useReactFlow();
  const definition = state.history.present;
  const limits = (catalog && catalog.limits) || {};
  const dialogOpen = useRef(false);
  const saveRef = useRef(() => {});

  const say = useCallback((message, kind = "info") => setToast({ message, kind, at: Date.now() }), []);
  useEffect(() => {
    if (!toast) return undefined;
    const timer = setTimeout(() => setToast(null), 5000);
    return () => clearTimeout(timer);
  }, [toast]);

  // -- loading -----------------------------------------------------------------------------------
  useEffect(() => {
    let cancelled = false;
    (async () => {
      const answer = await api.catalog();
      if (cancelled) return;
      if (!answer.ok) { dispatch({ type: "failed", message: `The catalog did not load: ${answer.message}` }); return; }
      setCatalog(answer.data);
      if (canSave) {
        api.secrets().then((listed) => {
          const items = listed.ok && listed.data && (listed.data.secrets || listed.data);
          if (!cancelled && Array.isArray(items)) setSecrets(items.map((item) => (typeof item === "string" ? item : item.name)).filter(Boolean));
        });
      }
      if (!workflow) {
        dispatch({ type: "loaded", definition: emptyDefinition(), meta: { name: null, version: null, origin: null } });
        return;
      }
      const loaded = await api.workflow(workflow);
      if (cancelled) return;
      if (!loaded.ok) { dispatch({ type: "failed", message: `Workflow ${workflow} did not load: ${loaded.message}` }); return; }
      const summary = loaded.data;
      if (!summary.definition || typeof summary.definition !== "object") {
        dispatch({ type: "failed", message: `${workflow} is a Python workflow: its steps are code, which the designer cannot show. Start a new workflow in the designer, or edit the Python module.` });
        return;
      }
      const max = answer.data.limits && answer.data.limits.max_definition_bytes;
      const size = definitionBytes(summary.definition || {});
      if (max && size > max) {
        dispatch({ type: "failed", message: `Workflow ${workflow} is ${size} bytes, over the designer's limit of ${max} bytes (limits.max_definition_bytes); edit it as a file or through the API.` });
        return;
      }
      const definitionLoaded = withExplicitDependsOn(summary.definition);
      dispatch({ type: "loaded", definition: definitionLoaded,
        meta: { name: summary.name, version: summary.version ?? null, origin: summary.origin || "api" } });
      setSave({ kind: "idle", text: summary.version != null ? `Version ${summary.version}` : "Defined in a file" });
    })();
    return () => { cancelled = true; };
  }, [api, workflow, canSave]);

  // -- validation as you go -----------------------------------------------------------------------
  const { problems, setProblems, allProblems } = useValidation(api, definition, catalog,
    canSave && state.status === "ready");  // checking a draft is the admin's (app/api/roles.py)

  // The problems' lines in the YAML view (while its text parses).
  const yamlMarks = useMemo(() => (state.yamlError ? [] : problemLines(state.yamlText, allProblems.list)),
    [state.yamlText, state.yamlError, allProblems]);

  // -- edits -------------------------------------------------------------------------------------
  const edit = useCallback((next, options = {}) => {
    if (readOnly) return;
    dispatch({ type: "edit", definition: next, ...options });
  }, [readOnly]);

  // Dagre runs only when the graph's shape changes and some node has no position of its own: on a large
  // workflow it is the costliest part of a keystroke.
  const structure = structureKey(definition);
  const incomplete = needsAutoLayout(definition);
  const auto = useMemo(() => (incomplete ? autoLayout(definition) : {}), [structure, incomplete]); // eslint-disable-line react-hooks/exhaustive-deps
  const layoutText = JSON.stringify(definition.layout ?? null);
  const positions = useMemo(() => positionsOf(definition, auto), [auto, layoutText, structure]); // eslint-disable-line react-hooks/exhaustive-deps

  const addStepOfType = useCallback((type, position) => {
    if (readOnly) return;
    if (limits.max_steps && stepsOf(definition).length >= limits.max_steps) {
      say(`A workflow has at most ${limits.max_steps} steps (limits.max_steps)`, "error");
      return;
    }
    const at = position || freeSpot(positions);
    const placed = layoutOf(positions);
    // The first step dropped on an empty canvas gets the trigger next to it (above if it can), in view.
    if (position && !stepsOf(definition).length && !(definition.layout && definition.layout[TRIGGER])) {
      const spot = triggerSpot(at, visibleArea(flow));
      if (spot) placed[TRIGGER] = spot;
    }
    const { definition: next, name } = addStep(definition, type, at, placed);
    edit(next, { select: { kind: "step", name } });
  }, [readOnly, limits.max_steps, definition, positions, edit, say, flow]);

  const connect = useCallback((source, target) => {
    if (readOnly) return;
    const result = addDependency(definition, source, target);
    if (result.error) { say(result.error, "error"); return; }
    if (!result.unchanged) edit(result.definition);
  }, [readOnly, definition, edit, say]);

  const moveNodes = useCallback((moved) => {
    const next = clone(definition);
    next.layout = layoutOf({ ...positions, ...moved });
    edit(next);
  }, [definition, positions, edit]);

  const runAutoLayout = useCallback(() => {
    const next = clone(definition);
    next.layout = layoutOf(autoLayout(definition));
    edit(next);
    setTimeout(() => flow.fitView({ padding: 0.2 }), 50);
  }, [definition, edit, flow]);

  const deleteSelected = useCallback(() => {
    const selected = state.selected;
    if (readOnly || !selected) return;
    if (selected.kind === "step") edit(removeStep(definition, selected.name), { select: null });
    else if (selected.kind === "edge") edit(removeDependency(definition, selected.source, selected.target), { select: null });
  }, [readOnly, state.selected, definition, edit]);

  const applyYaml = useCallback((text) => {
    const parsed = parseYaml(text, { maxBytes: limits.max_definition_bytes });
    if (!parsed.ok) {
      const where = parsed.line ? `line ${parsed.line}, column ${parsed.column}: ` : "";
      dispatch({ type: "yaml-error", text, error: `${where}${parsed.message}` });
      return;
    }
    // A step deleted or renamed in the text leaves its position behind: dropped, not reported as a problem.
    dispatch({ type: "edit", definition: pruneLayout(parsed.definition), from: "yaml", text, key: "yaml" });
  }, [limits.max_definition_bytes]);

  // A long text is parsed a moment after the last keystroke (a 300-step one takes 0.2 s); a short one at once.
  const pendingYaml = useRef({ text: null, timer: null });
  const flushYaml = useCallback(() => {
    const pending = pendingYaml.current;
    clearTimeout(pending.timer);
    if (pending.text !== null) { const { text } = pending; pending.text = null; applyYaml(text); }
  }, [applyYaml]);
  const onYamlChange = useCallback((text) => {
    const pending = pendingYaml.current;
    pending.text = text;
    clearTimeout(pending.timer);
    if (text.length > YAML_DEFER_CHARS) pending.timer = setTimeout(flushYaml, YAML_DEFER_MS);
    else flushYaml();
  }, [flushYaml]);

  // -- keyboard ----------------------------------------------------------------------------------
  useEffect(() => {
    function onKey(event) {
      const mod = event.ctrlKey || event.metaKey;
      if (mod && event.key.toLowerCase() === "s" && !event.shiftKey) {
        event.preventDefault();
        // YAML typed a moment ago and not parsed yet goes in first; the save then runs with the model it made.
        if (pendingYaml.current.text !== null) { flushYaml(); setTimeout(() => saveRef.current(), 0); }
        else saveRef.current();
        return;
      }
      if (isTyping(event.target) || dialogOpen.current) return;
      const key = event.key.toLowerCase();
      if (mod && key === "z" && !event.shiftKey) { event.preventDefault(); if (!readOnly) dispatch({ type: "undo" }); }
      else if (mod && ((key === "z" && event.shiftKey) || key === "y")) { event.preventDefault(); if (!readOnly) dispatch({ type: "redo" }); }
      else if (event.key === "Escape" && state.selected) dispatch({ type: "select", selected: null });
      else if (!mod && (event.key === "Delete" || event.key === "Backspace") && state.selected) {
        event.preventDefault();
        deleteSelected();
      }
    }
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [readOnly, state.selected, deleteSelected, flushYaml]);

  // -- saving ------------------------------------------------------------------------------------
  const dirty = useMemo(() => (state.saved === null ? stepsOf(definition).length > 0 : savedForm(definition) !== state.saved),
    [definition, state.saved]);

  // Leaving the page with unsaved changes asks first (the browser's own dialog).
  useEffect(() => {
    if (!dirty || readOnly) return undefined;
    const warn = (event) => { event.preventDefault(); event.returnValue = ""; };
    window.addEventListener("beforeunload", warn);
    return () => window.removeEventListener("beforeunload", warn);
  }, [dirty, readOnly]);

  const afterSave = useCallback((summary, saved, note = "") => {
    const meta = { name: summary.name, version: summary.version ?? null, origin: summary.origin || "api" };
    dispatch({ type: "saved", meta, definition: saved });
    setSave({ kind: "saved", text: `Saved version ${meta.version}${note}` });
    if (!workflow || workflow !== meta.name) {
      window.history.replaceState(null, "", `${dashboard}/designer/${encodeURIComponent(meta.name)}`);
    }
  }, [dashboard, workflow]);

  const showSaveError = useCallback((answer) => {
    if (answer.status === 422 && answer.error && Array.isArray(answer.error.details)) {
      setProblems({ definition, items: answer.error.details, status: "done", message: "" });
      const count = answer.error.details.length;
      setSave({ kind: "error", text: `Not saved: ${count} problem${count === 1 ? "" : "s"}` });
    } else {
      setSave({ kind: "error", text: `Not saved: ${answer.message}` });
    }
  }, [definition]);

  const doSave = useCallback(async (target = definition, baseVersion = state.meta.version, note = "") => {
    if (readOnly) return;
    const max = limits.max_definition_bytes;
    if (max && definitionBytes(target) > max) {
      setSave({ kind: "error",
        text: `Not saved: the definition is ${definitionBytes(target)} bytes, over the limit of ${max} bytes (limits.max_definition_bytes)` });
      return;
    }
    const meta = state.meta;
    const sameName = meta.name && target.name === meta.name;
    if (sameName && meta.origin && meta.origin !== "api") {
      setSave({ kind: "error", text: `Not saved: ${meta.name} is defined in a ${meta.origin === "python" ? "Python module" : "file"}; give this copy a new name` });
      return;
    }
    setSave({ kind: "saving", text: "Saving…" });
    const answer = sameName ? await api.replace(meta.name, target, baseVersion) : await api.create(target);
    if (answer.ok) { afterSave(answer.data, target, note); return; }
    const details = answer.error && answer.error.details;
    if (answer.status === 409 && details && !Array.isArray(details) && details.version != null) {
      setConflict({ ...details, message: answer.message, mine: target });
      setSave({ kind: "error", text: `Not saved: version ${details.version} was saved meanwhile` });
      return;
    }
    showSaveError(answer);
  }, [readOnly, definition, state.meta, limits.max_definition_bytes, api, afterSave, showSaveError]);

  // The keyboard handler reads these at key time.
  dialogOpen.current = historyOpen || !!conflict;
  saveRef.current = () => { if (!readOnly && save.kind !== "saving") doSave(); };

  const reloadFromConflict = useCallback(() => {
    const server = withExplicitDependsOn(conflict.definition);
    dispatch({ type: "edit", definition: server });
    dispatch({ type: "saved", meta: { ...state.meta, version: conflict.version }, definition: server });
    setSave({ kind: "idle", text: `Reloaded version ${conflict.version} (undo brings your draft back)` });
    setConflict(null);
  }, [conflict, state.meta]);

  const overwriteFromConflict = useCallback(() => {
    const { version, mine } = conflict;
    setConflict(null);
    doSave(mine, version);
  }, [conflict, doSave]);

  const restoreVersion = useCallback(async (number, versionDefinition) => {
    const restored = withExplicitDependsOn(versionDefinition);
    dispatch({ type: "edit", definition: restored });
    setHistoryOpen(false);
    await doSave(restored, state.meta.version, ` (restored version ${number})`);
  }, [doSave, state.meta.version]);

  // -- rendering ---------------------------------------------------------------------------------
  if (state.status === "loading") return <div className="pfd-root pfd-loading" data-testid="designer-loading">Loading the designer…</div>;
  if (state.status === "error") {
    return (
      <div className="pfd-root">
        <p className="pfd-load-error" data-testid="load-error" role="alert">{state.loadError}</p>
        <p><a href={`${dashboard}/designer`}>Start a new workflow</a> · <a href={`${dashboard}/`}>Workflows</a></p>
      </div>
    );
  }

  const validateText = problems.status === "unavailable" ? "validation unavailable"
    : allProblems.list.length ? `${allProblems.list.length} problem${allProblems.list.length === 1 ? "" : "s"}`
      : problems.status === "done" && problems.definition === definition ? "valid" : "checking…";
  const saveText = save.kind === "saved" && dirty ? `${save.text}; unsaved changes` : save.text || (dirty ? "Unsaved changes" : "");
  const toolbar = (
    <Toolbar
      name={definition.name || state.meta.name || ""}
      readOnly={readOnly}
      canUndo={canUndo(state.history)}
      canRedo={canRedo(state.history)}
      onUndo={() => dispatch({ type: "undo" })}
      onRedo={() => dispatch({ type: "redo" })}
      onSave={() => doSave()}
      onAutoLayout={runAutoLayout}
      onHistory={() => setHistoryOpen(true)}
      runHref={state.meta.origin ? `${dashboard}/workflows/${encodeURIComponent(state.meta.name)}/run` : null}
      dirty={dirty}
      validateText={validateText}
      validateKind={validateText === "valid" ? "ok" : allProblems.list.length ? "bad" : "idle"}
      saveText={saveText}
      saveKind={save.kind}
      saving={save.kind === "saving"}
      narrow={narrow}
    />
  );
  const yaml = (
    <YamlEditor
      text={state.yamlText}
      marks={yamlMarks}
      error={state.yamlError}
      readOnly={readOnly}
      onChange={onYamlChange}
      onBlur={() => { flushYaml(); dispatch({ type: "yaml-refresh" }); }}
    />
  );
  const common = (
    <>
      {toast && <div className={`pfd-toast pfd-toast-${toast.kind}`} data-testid="toast" role="status">{toast.message}</div>}
      {conflict && (
        <ConflictDialog conflict={conflict} readOnly={readOnly} onReload={reloadFromConflict}
          onOverwrite={overwriteFromConflict} onClose={() => setConflict(null)} />
      )}
      {historyOpen && (
        <HistoryDialog api={api} name={state.meta.origin === "api" ? state.meta.name : null} origin={state.meta.origin}
          current={definition} readOnly={readOnly} onRestore={restoreVersion} onClose={() => setHistoryOpen(false)} />
      )}
    </>
  );

  if (narrow) {
    return (
      <div className="pfd-root pfd-narrow">
        <p className="pfd-narrow-notice" data-testid="narrow-notice">The designer needs a wider screen (900 px or more); here is the workflow's YAML.</p>
        {readOnly && <p className="pfd-readonly" data-testid="readonly-notice">Read-only: only an admin can save.</p>}
        {toolbar}
        <section className="pfd-yaml-area">{yaml}</section>
        <ProblemsPanel problems={allProblems.list} onPick={() => {}} />
        {common}
      </div>
    );
  }

  return (
    <div className="pfd-root">
      {readOnly && <p className="pfd-readonly" data-testid="readonly-notice">Read-only: you can look and validate; only an admin can save.</p>}
      {state.meta.origin && state.meta.origin !== "api" && !readOnly && (
        <p className="pfd-copy-notice" data-testid="copy-notice">
          {state.meta.name} is defined in a {state.meta.origin === "python" ? "Python module" : "file"}: save this copy under a new name.
        </p>
      )}
      {toolbar}
      <div className="pfd-grid">
        <Palette catalog={catalog} readOnly={readOnly} onAdd={(type) => addStepOfType(type)} />
        <Canvas
          definition={definition}
          positions={positions}
          catalog={catalog}
          problems={allProblems.byNode}
          selected={state.selected}
          readOnly={readOnly}
          onSelect={(selected) => dispatch({ type: "select", selected })}
          onConnect={connect}
          onMove={moveNodes}
          onDropType={(type, position) => addStepOfType(type, position)}
          onRefuse={(message) => say(message, "error")}
        />
        <Inspector
          definition={definition}
          selected={state.selected}
          catalog={catalog}
          stepKeys={stepKeys(catalog)}
          secrets={secrets}
          problems={allProblems.byField}
          readOnly={readOnly}
          onEdit={edit}
          onSeal={() => dispatch({ type: "seal" })}
          onSelect={(selected) => dispatch({ type: "select", selected })}
          onDelete={deleteSelected}
          onRefuse={(message) => say(message, "error")}
        />
        <section className="pfd-yaml-area" aria-label="YAML">{yaml}</section>
        <ProblemsPanel
          problems={allProblems.list}
          onPick={(problem) => {
            if (problem.node === TRIGGER) dispatch({ type: "select", selected: { kind: "trigger" } });
            else if (problem.node) dispatch({ type: "select", selected: { kind: "step", name: problem.node } });
            else dispatch({ type: "select", selected: null });
            if (problem.field) focusField(problem.field);
          }}
        />
      </div>
      {common}
    </div>
  );
}

/** The canvas's visible box in flow coordinates ({x, y, width, height}), or null before it is on the page. */
function visibleArea(flow) {
  const pane = document.querySelector('[data-testid="canvas"]');
  if (!pane) return null;
  const box = pane.getBoundingClientRect();
  const margin = 8;
  const from = flow.screenToFlowPosition({ x: box.left + margin, y: box.top + margin });
  const to = flow.screenToFlowPosition({ x: box.right - margin, y: box.bottom - margin });
  return { x: from.x, y: from.y, width: to.x - from.x, height: to.y - from.y };
}

/** Focus the form field a problem names, once the inspector shows it (opening the advanced part if needed). */
function focusField(field) {
  setTimeout(() => {
    const candidates = [`field-config-${field}`, `field-${field}`, `field-trigger-${field}`];
    for (const id of candidates) {
      const element = document.querySelector(`[data-testid="${id}"]`);
      if (element) {
        const details = element.closest("details");
        if (details) details.open = true;
        element.focus();
        element.scrollIntoView({ block: "nearest" });
        return;
      }
    }
  }, 30);
}
