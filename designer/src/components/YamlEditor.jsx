// The YAML view: CodeMirror 6 with YAML highlighting; its text and the model follow each other.
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { yaml } from "@codemirror/lang-yaml";
import { bracketMatching, defaultHighlightStyle, indentOnInput, syntaxHighlighting } from "@codemirror/language";
import { Annotation, Compartment, EditorState, StateEffect, StateField, Transaction } from "@codemirror/state";
import { Decoration, drawSelection, EditorView, highlightActiveLine, keymap, lineNumbers } from "@codemirror/view";
import { useEffect, useRef } from "react";

// Marks the editor changes that come from the model, so they are not sent back to it.
const External = Annotation.define();

// The lines validation problems point at, marked red with the problem as their title.
const setMarks = StateEffect.define();
const marksField = StateField.define({
  create: () => Decoration.none,
  update(marks, transaction) {
    let next = marks.map(transaction.changes);
    for (const effect of transaction.effects) if (effect.is(setMarks)) next = effect.value;
    return next;
  },
  provide: (field) => EditorView.decorations.from(field),
});

function decorations(state, marks) {
  const byLine = new Map();
  for (const mark of marks || []) {
    if (mark.line >= 1 && mark.line <= state.doc.lines) byLine.set(mark.line, [...(byLine.get(mark.line) || []), mark.message]);
  }
  const ranges = [...byLine.entries()].sort((a, b) => a[0] - b[0]).map(([line, messages]) => Decoration.line({
    class: "pfd-cm-problem", attributes: { title: messages.join("\n") } }).range(state.doc.line(line).from));
  return Decoration.set(ranges);
}

/** The YAML editor; ``onChange`` gets every edit's text, ``error`` is shown under it. */
export default function YamlEditor({ text, error, readOnly, onChange, onBlur, marks }) {
  const host = useRef(null);
  const view = useRef(null);
  const handlers = useRef({ onChange, onBlur });
  const editable = useRef(new Compartment());
  handlers.current = { onChange, onBlur };

  useEffect(() => {
    const state = EditorState.create({
      doc: text,
      extensions: [
        lineNumbers(),
        history(),
        drawSelection(),
        indentOnInput(),
        bracketMatching(),
        highlightActiveLine(),
        syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
        yaml(),
        marksField,
        keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
        EditorView.lineWrapping,
        editable.current.of([EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)]),
        EditorView.updateListener.of((update) => {
          if (update.docChanged && !update.transactions.every((tr) => tr.annotation(External))) {
            handlers.current.onChange(update.state.doc.toString());
          }
        }),
        EditorView.domEventHandlers({ blur: () => { handlers.current.onBlur(); } }),
        EditorView.contentAttributes.of({ "aria-label": "Workflow YAML" }),
      ],
    });
    view.current = new EditorView({ state, parent: host.current });
    return () => view.current.destroy();
  }, []); // eslint-disable-line react-hooks/exhaustive-deps

  useEffect(() => {
    const current = view.current;
    if (current && current.state.doc.toString() !== text) {
      // Not in the editor's own undo history: Ctrl+Z there undoes typing; the toolbar's Undo undoes the rest.
      current.dispatch({ changes: { from: 0, to: current.state.doc.length, insert: text },
        annotations: [External.of(true), Transaction.addToHistory.of(false)] });
    }
  }, [text]);

  useEffect(() => {
    const current = view.current;
    if (current) current.dispatch({ effects: setMarks.of(decorations(current.state, marks)) });
  }, [marks, text]);

  useEffect(() => {
    view.current?.dispatch({ effects: editable.current.reconfigure(
      [EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)]) });
  }, [readOnly]);

  return (
    <div className="pfd-yaml">
      <div className="pfd-yaml-editor" data-testid="yaml-editor" ref={host} />
      <p className={`pfd-yaml-error${error ? "" : " pfd-hidden"}`} data-testid="yaml-error" role={error ? "alert" : undefined}>
        {error || ""}
      </p>
    </div>
  );
}
