// Form controls whose text becomes a definition value: text, number, choice, true/false or YAML.
import { useEffect, useRef, useState } from "react";
import { formatValue, parseValue } from "../model/schema.js";

const TEMPLATE_CHOICE = "\u0000template";

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * One value of the definition edited as text.
 * ``onCommit(value)`` gets each parsable edit (undefined removes the key); a YAML error shows under the field.
 */
export function ValueField({ id, testid, kind, plainString = false, options = [], template = false, value, onCommit, onSeal,
  disabled, placeholder, label, templateTarget, describedBy, rows }) {
  const [text, setText] = useState(() => formatValue(kind, value));
  const [error, setError] = useState("");
  const element = useRef(null);
  const choices = kind === "boolean" ? ["true", "false"] : options.map(String);
  // A choice field that holds something else (a template) is edited as text until the user goes back to choices.
  const offList = (candidate) => (kind === "enum" || kind === "boolean") && typeof candidate === "string"
    && candidate !== "" && !choices.includes(candidate);
  const [free, setFree] = useState(() => offList(value));

  useEffect(() => {
    // Follow a change made elsewhere (YAML, undo), but not the echo of this field's own edit.
    const parsed = parseValue(kind, text, { plainString });
    if (parsed.error || !same(parsed.value, value)) {
      setText(formatValue(kind, value));
      setError("");
      setFree(offList(value));
    }
  }, [value, kind]); // eslint-disable-line react-hooks/exhaustive-deps

  function change(next) {
    setText(next);
    const parsed = parseValue(kind, next, { plainString });
    if (parsed.error) { setError(parsed.error); return; }
    setError("");
    // A choice keeps its type (a number or true in the enum stays one).
    const chosen = kind === "enum" ? options.find((option) => String(option) === next) : undefined;
    onCommit(chosen !== undefined ? chosen : parsed.value);
  }

  function focus() {
    if (templateTarget) templateTarget.current = { element: element.current, insert: change, kind };
  }

  const common = {
    id, ref: element, "data-testid": testid, disabled, "aria-label": label, "aria-describedby": describedBy,
    onFocus: focus, onBlur: () => onSeal && onSeal(),
  };
  let control;
  if ((kind === "enum" || kind === "boolean") && free) {
    control = (
      <span className="pfd-free">
        <input type="text" className="pfd-input" {...common} value={text} placeholder="{{ inputs.choice }}"
          spellCheck={false} onChange={(event) => change(event.target.value)} />
        <button type="button" className="pfd-button pfd-small" disabled={disabled} title="Pick one of the choices"
          onClick={() => { setFree(false); change(""); }}>choices</button>
      </span>
    );
  } else if (kind === "enum" || kind === "boolean") {
    const extra = text && !choices.includes(text) ? [text] : [];
    control = (
      <select className="pfd-input" {...common} value={text} onChange={(event) => {
        if (event.target.value === TEMPLATE_CHOICE) { setFree(true); setText(""); return; }
        change(event.target.value);
      }}>
        <option value="">{placeholder ? `(default: ${placeholder})` : "(not set)"}</option>
        {[...choices, ...extra].map((choice) => <option key={choice} value={choice}>{choice}</option>)}
        {template && <option value={TEMPLATE_CHOICE}>{"a template {{ }}…"}</option>}
      </select>
    );
  } else if (kind === "yaml" || kind === "longtext") {
    control = (
      <textarea className={`pfd-input${kind === "yaml" ? " pfd-mono" : ""}`} {...common} rows={rows || (kind === "yaml" ? 3 : 3)}
        value={text} placeholder={placeholder} spellCheck={false} onChange={(event) => change(event.target.value)} />
    );
  } else {
    control = (
      <input type="text" className="pfd-input" {...common} value={text} placeholder={placeholder}
        inputMode={kind === "number" ? "decimal" : undefined} spellCheck={false}
        onChange={(event) => change(event.target.value)} />
    );
  }
  return (
    <>
      {control}
      {error && <span className="pfd-field-error" role="alert">{error}</span>}
    </>
  );
}

/** A labelled row: label, required marker, control, help and the validation messages of ``errorKey``. */
export function FieldRow({ id, label, required, requiredKey, help, errors, errorKey, children, template }) {
  return (
    <div className={`pfd-field${errors && errors.length ? " pfd-field-bad" : ""}`}>
      <label className="pfd-label" htmlFor={id}>
        {label}
        {required && <span className="pfd-required" data-testid={`required-${requiredKey}`} title="required"> *</span>}
        {template && <span className="pfd-template-mark" title="templates allowed: {{ ... }}">{"{{ }}"}</span>}
      </label>
      {children}
      {help && <span className="pfd-help">{help}</span>}
      {errors && errors.length > 0 && (
        <span className="pfd-field-error" data-testid={`field-error-${errorKey}`} role="alert">{errors.join("; ")}</span>
      )}
    </div>
  );
}
