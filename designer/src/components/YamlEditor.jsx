// The YAML view: CodeMirror 6 with YAML highlighting; its text and the model follow each other.
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { yaml } from "@codemirror/lang-yaml";
import { bracketMatching, defaultHighlightStyle, indentOnInput, syntaxHighlighting } from "@codemirror/language";
import { Annotation, Compartment, EditorState, Transaction } from "@codemirror/state";
import { drawSelection, EditorView, highlightActiveLine, keymap, lineNumbers } from "@codemirror/view";
import { useEffect, useRef } from "react";

// Marks the editor changes that come from the model, so they are not sent back to it.
const External = Annotation.define();

/** The YAML editor; ``onChange`` gets every edit's text, ``error`` is shown under it. */
export default function YamlEditor({ text, error, readOnly, onChange, onBlur }) {
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
