// The inspector: a form for the selected step (from its type's config schema), the trigger, or the workflow itself.
import { useEffect, useRef, useState } from "react";
import { actionType, triggerType } from "../model/catalog.js";
import { clone, NAME_PATTERN, stepsOf, TRIGGER } from "../model/definition.js";
import { addDependency, dependsOn, descendants, removeDependency, renameStep, stepNameProblem } from "../model/graph.js";
import { isAdvanced } from "../model/problems.js";
import { fieldKind, isRequired, orderedKeys } from "../model/schema.js";
import { templateNames } from "../model/templates.js";
import { FieldRow, ValueField } from "./Fields.jsx";

const INPUT_TYPES = ["string", "number", "integer", "boolean", "object", "array"];
const LIMIT_KEYS = ["cpu_seconds", "memory_mb", "output_kb", "processes"];

function defaultText(schema) {
  if (!schema || schema.default === undefined || schema.default === null) return "";
  return typeof schema.default === "object" ? JSON.stringify(schema.default) : String(schema.default);
}

/** The right-hand form. */
export default function Inspector(props) {
  const { selected } = props;
  const templateTarget = useRef(null);
  let body;
  if (selected && selected.kind === "step") {
    // Keyed by position, not name: renaming as you type keeps the form (and the focus) in place.
    const index = stepsOf(props.definition).findIndex((step) => step.name === selected.name);
    body = <StepForm key={`step:${index}`} {...props} name={selected.name} templateTarget={templateTarget} />;
  }
  else if (selected && selected.kind === "trigger") body = <TriggerForm {...props} templateTarget={templateTarget} />;
  else if (selected && selected.kind === "edge") body = <EdgeForm {...props} />;
  else body = <WorkflowForm {...props} />;
  return (
    <aside className="pfd-inspector" data-testid="inspector" aria-label="Inspector">
      {selected && (
        <button type="button" className="pfd-button pfd-small pfd-back" data-testid="tab-inputs"
          onClick={() => props.onSelect(null)}>← Workflow: name, inputs</button>
      )}
      {body}
    </aside>
  );
}

/** A text input for a name that commits only when it is valid (shows why not otherwise). */
function NameField({ testid, value, problem, onCommit, onSeal, disabled, id }) {
  const [text, setText] = useState(value);
  const [error, setError] = useState("");
  useEffect(() => { setText(value); setError(""); }, [value]);
  return (
    <>
      <input id={id} type="text" className="pfd-input" data-testid={testid} value={text} disabled={disabled}
        spellCheck={false} autoComplete="off" onBlur={onSeal}
        onChange={(event) => {
          const next = event.target.value;
          setText(next);
          const why = problem(next);
          setError(why || "");
          if (!why) onCommit(next);
        }} />
      {error && <span className="pfd-field-error" role="alert">{error}</span>}
    </>
  );
}

function TemplateNames({ names, templateTarget, readOnly }) {
  return (
    <div className="pfd-template-names">
      <h4>Template names</h4>
      <p className="pfd-help">Use them in a field as <code>{"{{ name }}"}</code>; click one to insert it where the cursor was.</p>
      <ul data-testid="template-names">
        {names.map((name) => (
          <li key={name}>
            <button type="button" className="pfd-chip" disabled={readOnly}
              onMouseDown={(event) => event.preventDefault()}
              onClick={() => {
                const target = templateTarget.current;
                if (!target || !target.element || !document.body.contains(target.element)) return;
                const element = target.element;
                const text = element.value || "";
                const start = element.selectionStart ?? text.length;
                const end = element.selectionEnd ?? text.length;
                target.insert(`${text.slice(0, start)}{{ ${name} }}${text.slice(end)}`);
                element.focus();
              }}>{name}</button>
          </li>
        ))}
      </ul>
    </div>
  );
}

function StepForm({ definition, name, catalog, stepKeys, secrets, problems, readOnly, onEdit, onSeal, onSelect, onDelete,
  onRefuse, templateTarget }) {
  const index = stepsOf(definition).findIndex((step) => step.name === name);
  const step = stepsOf(definition)[index];
  const errors = problems[name] || {};
  const advancedErrors = Object.keys(errors).some((field) => isAdvanced(field));
  const [advancedOpen, setAdvancedOpen] = useState(false);
  useEffect(() => { if (advancedErrors) setAdvancedOpen(true); }, [advancedErrors]);
  if (!step) return null;
  const type = actionType(catalog, step.type);
  const schema = type ? type.config_schema : null;
  const config = step.config && typeof step.config === "object" && !Array.isArray(step.config) ? step.config : {};
  const others = stepsOf(definition).map((s) => s.name).filter((other) => typeof other === "string" && other !== name);

  function update(mutate, key) {
    const next = clone(definition);
    const target = next.steps.find((s) => s && s.name === name);
    mutate(target);
    onEdit(next, { key: `step#${index}:${key}` });
  }
  const setKey = (key) => (value) => update((target) => {
    if (value === undefined) delete target[key]; else target[key] = value;
  }, key);
  const setConfig = (key) => (value) => update((target) => {
    if (!target.config || typeof target.config !== "object" || Array.isArray(target.config)) target.config = {};
    if (value === undefined) delete target.config[key]; else target.config[key] = value;
  }, `config.${key}`);
  const setNested = (outer, key) => (value) => update((target) => {
    const holder = target[outer] && typeof target[outer] === "object" ? { ...target[outer] } : {};
    if (value === undefined) delete holder[key]; else holder[key] = value;
    if (Object.keys(holder).length) target[outer] = holder; else delete target[outer];
  }, `${outer}.${key}`);
  const shown = (key) => key in stepKeys;
  const help = (key) => (stepKeys[key] && stepKeys[key].description) || "";
  const fieldProps = { onSeal, disabled: readOnly, templateTarget };
  const deps = dependsOn(step);
  // Offered: the steps it depends on and those it could depend on without a cycle.
  const after = descendants(definition, name);
  const candidates = others.filter((other) => deps.includes(other) || !after.has(other));

  return (
    <form className="pfd-form" onSubmit={(event) => event.preventDefault()} aria-label={`Step ${name}`}>
      <div className="pfd-form-head">
        <h3>Step</h3>
        {!readOnly && <button type="button" className="pfd-button pfd-small pfd-danger" data-testid="delete-step" onClick={onDelete}>Delete</button>}
      </div>
      <FieldRow id="pfd-step-name" label="Name" errors={errors.name} errorKey="name">
        <NameField id="pfd-step-name" testid="field-name" value={name} disabled={readOnly} onSeal={onSeal}
          problem={(next) => stepNameProblem(definition, name, next)}
          onCommit={(next) => { onEdit(renameStep(definition, name, next), { key: `step#${index}:name`, select: { kind: "step", name: next } }); }} />
      </FieldRow>
      <FieldRow id="pfd-step-type" label="Type" errors={errors.type} errorKey="type" help={type ? type.description : ""}>
        <input id="pfd-step-type" type="text" className="pfd-input" data-testid="field-type" value={String(step.type ?? "")} readOnly />
      </FieldRow>
      {!type && (
        <p className="pfd-error" data-testid="unknown-type">
          Type '{String(step.type)}' is not in the catalog (the plugin that provided it may be gone). Its config is kept as it is; change the type in the YAML or delete the step.
        </p>
      )}
      <fieldset className="pfd-fieldset">
        <legend>Config</legend>
        {schema ? orderedKeys(schema).map((key) => {
          const property = schema.properties[key];
          const kind = fieldKind(key, property, config[key]);
          const id = `pfd-config-${key}`;
          return (
            <FieldRow key={key} id={id} label={key} required={isRequired(schema, key)} requiredKey={key}
              help={property.description} errors={errors[key]} errorKey={key} template={kind.template}>
              <ValueField id={id} testid={`field-config-${key}`} kind={kind.kind} options={kind.options} plainString={kind.plainString} template={kind.template}
                value={config[key]} onCommit={setConfig(key)} placeholder={defaultText(property)} {...fieldProps} />
            </FieldRow>
          );
        }) : (
          <FieldRow id="pfd-config" label="config (YAML)" errors={errors.config} errorKey="config">
            <ValueField id="pfd-config" testid="field-config" kind="yaml" value={step.config} rows={6}
              onCommit={setKey("config")} {...fieldProps} />
          </FieldRow>
        )}
        {schema && Object.keys(config).filter((key) => !(key in (schema.properties || {}))).map((key) => {
          const id = `pfd-config-${key}`;
          return (
            <FieldRow key={key} id={id} label={`${key} (not a setting of ${step.type})`} errors={errors[key]} errorKey={key}
              help="Empty it to remove it.">
              <ValueField id={id} testid={`field-config-${key}`} kind="yaml" plainString value={config[key]}
                onCommit={setConfig(key)} {...fieldProps} />
            </FieldRow>
          );
        })}
        {errors.config && schema && <span className="pfd-field-error" data-testid="field-error-config">{errors.config.join("; ")}</span>}
      </fieldset>
      <TemplateNames names={templateNames(definition, name, catalog, secrets)} templateTarget={templateTarget} readOnly={readOnly} />
      <fieldset className="pfd-fieldset">
        <legend>Depends on</legend>
        {!candidates.length && <p className="pfd-help">No step it could depend on.</p>}
        {errors.depends_on && <span className="pfd-field-error" data-testid="field-error-depends_on">{errors.depends_on.join("; ")}</span>}
        <div className="pfd-checks">
          {candidates.map((other) => (
            <label key={other} className="pfd-check">
              <input type="checkbox" data-testid={`field-depends_on-${other}`} checked={deps.includes(other)} disabled={readOnly}
                onChange={(event) => {
                  if (!event.target.checked) { onEdit(removeDependency(definition, other, name)); return; }
                  const result = addDependency(definition, other, name);
                  if (result.error) onRefuse(result.error); else onEdit(result.definition);
                }} />
              {other}
            </label>
          ))}
        </div>
      </fieldset>
      <details className="pfd-advanced" data-testid="advanced" open={advancedOpen}
        onToggle={(event) => setAdvancedOpen(event.currentTarget.open)}>
        <summary>Advanced: when, retries, timeout, on_failure, compensate, cache{step.type === "shell" ? ", limits" : ""}</summary>
        {shown("when") && (
          <FieldRow id="pfd-when" label="when" help={help("when")} errors={errors.when} errorKey="when" template>
            <ValueField id="pfd-when" testid="field-when" kind="text" value={step.when} onCommit={setKey("when")}
              placeholder="{{ steps.check.result }}" {...fieldProps} />
          </FieldRow>
        )}
        {shown("retries") && (
          <FieldRow id="pfd-retries" label="retries" help={help("retries")} errors={errors.retries} errorKey="retries">
            <ValueField id="pfd-retries" testid="field-retries" kind="number" value={step.retries} onCommit={setKey("retries")} {...fieldProps} />
          </FieldRow>
        )}
        {shown("timeout") && (
          <FieldRow id="pfd-timeout" label="timeout (seconds)" help={help("timeout")} errors={errors.timeout} errorKey="timeout">
            <ValueField id="pfd-timeout" testid="field-timeout" kind="number" value={step.timeout} onCommit={setKey("timeout")} {...fieldProps} />
          </FieldRow>
        )}
        {shown("on_failure") && (
          <FieldRow id="pfd-on_failure" label="on_failure" help={help("on_failure")} errors={errors.on_failure} errorKey="on_failure">
            <ValueField id="pfd-on_failure" testid="field-on_failure" kind="enum" options={["fail", "continue", ...others]}
              value={step.on_failure} onCommit={setKey("on_failure")} placeholder="fail" {...fieldProps} />
          </FieldRow>
        )}
        {shown("compensate") && (
          <FieldRow id="pfd-compensate" label="compensate (a step, YAML)" help={help("compensate")} errors={errors.compensate} errorKey="compensate">
            <ValueField id="pfd-compensate" testid="field-compensate" kind="yaml" value={step.compensate}
              onCommit={setKey("compensate")} placeholder={"type: http_request\nconfig: {url: ..., method: DELETE}"} {...fieldProps} />
          </FieldRow>
        )}
        {shown("cache") && (
          <>
            <FieldRow id="pfd-cache-ttl" label="cache ttl (seconds)" help={help("cache")} errors={errors["cache-ttl"] || errors.cache} errorKey="cache-ttl">
              <ValueField id="pfd-cache-ttl" testid="field-cache-ttl" kind="number" value={step.cache && step.cache.ttl}
                onCommit={setNested("cache", "ttl")} {...fieldProps} />
            </FieldRow>
            <FieldRow id="pfd-cache-key" label="cache key" errors={errors["cache-key"]} errorKey="cache-key" template>
              <ValueField id="pfd-cache-key" testid="field-cache-key" kind="text" value={step.cache && step.cache.key}
                onCommit={setNested("cache", "key")} placeholder="{{ inputs.id }}" {...fieldProps} />
            </FieldRow>
          </>
        )}
        {shown("limits") && step.type === "shell" && (
          <fieldset className="pfd-fieldset">
            <legend>limits (shell only)</legend>
            {errors.limits && <span className="pfd-field-error" data-testid="field-error-limits">{errors.limits.join("; ")}</span>}
            {limitKeys(stepKeys).map((key) => (
              <FieldRow key={key} id={`pfd-limits-${key}`} label={key} errors={null}>
                <ValueField id={`pfd-limits-${key}`} testid={`field-limits-${key}`} kind="number"
                  value={step.limits && step.limits[key]} onCommit={setNested("limits", key)} {...fieldProps} />
              </FieldRow>
            ))}
          </fieldset>
        )}
      </details>
      {errors.layout && <p className="pfd-field-error" data-testid="field-error-layout">{errors.layout.join("; ")}</p>}
      {!readOnly && <p className="pfd-help">Select a node or edge on the canvas and press Delete to remove it.</p>}
    </form>
  );
}

function limitKeys(stepKeys) {
  const limits = stepKeys.limits;
  const properties = limits && limits.properties ? Object.keys(limits.properties) : [];
  return properties.length ? properties : LIMIT_KEYS;
}

function TriggerForm({ definition, catalog, secrets, problems, readOnly, onEdit, onSeal, templateTarget }) {
  const trigger = definition.trigger && typeof definition.trigger === "object" ? definition.trigger : { type: "manual" };
  const type = triggerType(catalog, trigger.type);
  const schema = type ? type.config_schema : null;
  const errors = problems[TRIGGER] || {};
  const types = ((catalog && catalog.triggers) || []).map((entry) => entry.type);
  if (trigger.type && !types.includes(trigger.type)) types.push(trigger.type);

  function setSetting(key) {
    return (value) => {
      const next = clone(definition);
      next.trigger = { ...trigger };
      if (value === undefined) delete next.trigger[key]; else next.trigger[key] = value;
      onEdit(next, { key: `trigger.${key}` });
    };
  }
  return (
    <form className="pfd-form" onSubmit={(event) => event.preventDefault()} aria-label="Trigger">
      <h3>Trigger</h3>
      <FieldRow id="pfd-trigger-type" label="type" errors={errors.type} errorKey="type" help={type ? type.description : ""}>
        <select id="pfd-trigger-type" className="pfd-input" data-testid="field-trigger-type" value={trigger.type || "manual"}
          disabled={readOnly}
          onChange={(event) => {
            const next = clone(definition);
            next.trigger = { type: event.target.value };
            onEdit(next);
          }}>
          {types.map((name) => <option key={name} value={name}>{name}</option>)}
        </select>
      </FieldRow>
      {schema && orderedKeys(schema).map((key) => {
        const property = schema.properties[key];
        const kind = fieldKind(key, property, trigger[key]);
        const id = `pfd-trigger-${key}`;
        return (
          <FieldRow key={`${trigger.type}:${key}`} id={id} label={key} required={isRequired(schema, key)} requiredKey={key}
            help={property.description} errors={errors[key]} errorKey={key} template={kind.template}>
            <ValueField id={id} testid={`field-trigger-${key}`} kind={kind.kind} options={kind.options} plainString={kind.plainString} template={kind.template} value={trigger[key]}
              onCommit={setSetting(key)} onSeal={onSeal} disabled={readOnly} placeholder={defaultText(property)}
              templateTarget={templateTarget} />
          </FieldRow>
        );
      })}
      {schema && !orderedKeys(schema).length && <p className="pfd-help">This trigger has no settings.</p>}
      <TemplateNames names={templateNames(definition, null, catalog, secrets)} templateTarget={templateTarget} readOnly={readOnly} />
    </form>
  );
}

function EdgeForm({ selected, readOnly, onDelete }) {
  return (
    <div className="pfd-form">
      <h3>Dependency</h3>
      <p><strong>{selected.target}</strong> runs after <strong>{selected.source}</strong> (its depends_on lists {selected.source}).</p>
      {!readOnly && <button type="button" className="pfd-button pfd-danger" data-testid="delete-edge" onClick={onDelete}>Remove dependency</button>}
      <p className="pfd-help">Or press Delete.</p>
    </div>
  );
}

function WorkflowForm({ definition, problems, readOnly, onEdit, onSeal }) {
  const errors = problems[""] || {};
  const set = (key) => (value) => {
    const next = clone(definition);
    if (value === undefined) delete next[key]; else next[key] = value;
    onEdit(next, { key: `workflow.${key}` });
  };
  return (
    <form className="pfd-form" onSubmit={(event) => event.preventDefault()} aria-label="Workflow">
      <h3>Workflow</h3>
      <FieldRow id="pfd-workflow-name" label="Name" required requiredKey="workflow-name" errors={errors["workflow-name"]} errorKey="workflow-name"
        help="Lower-case letters, digits and _.">
        <NameField id="pfd-workflow-name" testid="field-workflow-name" value={typeof definition.name === "string" ? definition.name : ""}
          disabled={readOnly} onSeal={onSeal}
          problem={(next) => (next && !NAME_PATTERN.test(next) ? "must match [a-z0-9_]+ (lower-case letters, digits, _)" : null)}
          onCommit={set("name")} />
      </FieldRow>
      <FieldRow id="pfd-workflow-description" label="Description" errors={errors["workflow-description"]} errorKey="workflow-description">
        <ValueField id="pfd-workflow-description" testid="field-workflow-description" kind="longtext" value={definition.description}
          onCommit={set("description")} onSeal={onSeal} disabled={readOnly} />
      </FieldRow>
      <InputsEditor definition={definition} errors={errors.inputs} readOnly={readOnly} onEdit={onEdit} onSeal={onSeal} />
      <p className="pfd-help">Select a node to edit it; drag a step type from the palette onto the canvas to add one.</p>
    </form>
  );
}

function inputsOf(definition) {
  const inputs = definition.inputs && typeof definition.inputs === "object" ? definition.inputs : {};
  const properties = inputs.properties && typeof inputs.properties === "object" ? inputs.properties : {};
  const required = Array.isArray(inputs.required) ? inputs.required : [];
  return { inputs, properties, required };
}

function InputsEditor({ definition, errors, readOnly, onEdit, onSeal }) {
  const { properties, required } = inputsOf(definition);
  const entries = Object.entries(properties);

  function write(mutate, key) {
    const next = clone(definition);
    const inputs = next.inputs && typeof next.inputs === "object" ? next.inputs : { type: "object" };
    inputs.type ||= "object";
    inputs.properties = inputs.properties && typeof inputs.properties === "object" ? inputs.properties : {};
    inputs.required = Array.isArray(inputs.required) ? inputs.required : [];
    mutate(inputs);
    if (!inputs.required.length) delete inputs.required;
    next.inputs = inputs;
    onEdit(next, key ? { key } : {});
  }
  function rename(from, to, index) {
    write((inputs) => {
      inputs.properties = Object.fromEntries(Object.entries(inputs.properties).map(([k, v]) => [k === from ? to : k, v]));
      inputs.required = inputs.required.map((k) => (k === from ? to : k));
    }, `input#${index}:name`);
  }

  return (
    <fieldset className="pfd-fieldset" data-testid="inputs-editor">
      <legend>Inputs (what a run is given)</legend>
      {errors && <span className="pfd-field-error" data-testid="field-error-inputs">{errors.join("; ")}</span>}
      {!entries.length && <p className="pfd-help">No inputs yet.</p>}
      {entries.map(([key, schema], index) => {
        const type = schema && typeof schema === "object" ? (Array.isArray(schema.type) ? schema.type[0] : schema.type) : "";
        return (
          <div key={index} className="pfd-input-row">
            <div className="pfd-input-name">
            <NameField testid={`input-name-${index}`} value={key} disabled={readOnly} onSeal={onSeal}
              problem={(next) => (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(next) ? "letters, digits and _ (not first a digit)"
                : next !== key && next in properties ? `another input is named ${next}` : null)}
              onCommit={(next) => rename(key, next, index)} />
            </div>
            <select className="pfd-input" data-testid={`input-type-${index}`} value={type || ""} disabled={readOnly}
              aria-label={`type of input ${key}`}
              onChange={(event) => write((inputs) => {
                const property = { ...(inputs.properties[key] || {}) };
                if (event.target.value) property.type = event.target.value; else delete property.type;
                if (property.type !== "string") { delete property.minLength; delete property.maxLength; delete property.pattern; }
                inputs.properties[key] = property;
              })}>
              <option value="">any</option>
              {INPUT_TYPES.map((name) => <option key={name} value={name}>{name}</option>)}
            </select>
            <label className="pfd-check" title="required">
              <input type="checkbox" data-testid={`input-required-${index}`} checked={required.includes(key)} disabled={readOnly}
                onChange={(event) => write((inputs) => {
                  inputs.required = inputs.required.filter((k) => k !== key);
                  if (event.target.checked) inputs.required.push(key);
                })} />
              required
            </label>
            <input type="text" className="pfd-input pfd-input-description" data-testid={`input-description-${index}`}
              placeholder="description (shown on the run form)" aria-label={`description of input ${key}`}
              value={(schema && typeof schema.description === "string" && schema.description) || ""} disabled={readOnly}
              onBlur={onSeal}
              onChange={(event) => {
                const text = event.target.value;
                write((inputs) => {
                  const property = { ...(inputs.properties[key] || {}) };
                  if (text) property.description = text; else delete property.description;
                  inputs.properties[key] = property;
                }, `input#${index}:description`);
              }} />
            {!readOnly && (
              <button type="button" className="pfd-button pfd-small" data-testid={`input-remove-${index}`}
                aria-label={`remove input ${key}`}
                onClick={() => write((inputs) => {
                  delete inputs.properties[key];
                  inputs.required = inputs.required.filter((k) => k !== key);
                })}>✕</button>
            )}
          </div>
        );
      })}
      {!readOnly && (
        <button type="button" className="pfd-button pfd-small" data-testid="add-input"
          onClick={() => write((inputs) => {
            let n = entries.length + 1;
            while (`input_${n}` in inputs.properties) n += 1;
            inputs.properties[`input_${n}`] = { type: "string" };
          })}>Add input</button>
      )}
    </fieldset>
  );
}
