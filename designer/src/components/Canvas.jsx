// The canvas: steps and the trigger as React Flow nodes, depends_on as edges, palette types dropped onto it.
import { applyNodeChanges, Background, Controls, Handle, MarkerType, Position, ReactFlow, useReactFlow }
  from "@xyflow/react";
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { actionType } from "../model/catalog.js";
import { stepsOf, TRIGGER } from "../model/definition.js";
import { edgesOf } from "../model/graph.js";
import { NODE_HEIGHT, NODE_WIDTH } from "../model/layout.js";

export const DRAG_TYPE = "application/x-pyflow-step";

function problemText(problems) {
  if (!problems || !problems.length) return "";
  const [first] = problems;
  const more = problems.length > 1 ? ` (+${problems.length - 1} more)` : "";
  return `${first.message}${more}`;
}

function StepNode({ data, selected }) {
  const bad = data.unknown || data.problems.length > 0;
  return (
    <div className={`pfd-node${bad ? " node-error" : ""}${selected ? " pfd-selected" : ""}`}
      data-testid={`node-${data.name}`} title={data.description} style={{ width: NODE_WIDTH }}>
      <Handle type="target" position={Position.Top} isConnectable={!data.readOnly} />
      <div className="pfd-node-name">{data.name}</div>
      <div className="pfd-node-type">{data.type}</div>
      {data.summary && <div className="pfd-node-summary" title={data.summary}>{data.summary}</div>}
      {bad && <div className="pfd-node-problem node-problem" data-testid="node-problem">{data.unknown || problemText(data.problems)}</div>}
      <Handle type="source" position={Position.Bottom} isConnectable={!data.readOnly} />
    </div>
  );
}

function TriggerNode({ data, selected }) {
  const bad = data.problems.length > 0;
  return (
    <div className={`pfd-node pfd-trigger${bad ? " node-error" : ""}${selected ? " pfd-selected" : ""}`}
      data-testid={`node-${TRIGGER}`} style={{ width: NODE_WIDTH }}>
      <div className="pfd-node-name">Trigger</div>
      <div className="pfd-node-type">{data.type}{data.summary ? ` · ${data.summary}` : ""}</div>
      {bad && <div className="pfd-node-problem node-problem" data-testid="node-problem">{problemText(data.problems)}</div>}
      <Handle type="source" position={Position.Bottom} isConnectable={!data.readOnly} />
    </div>
  );
}

const NODE_TYPES = { step: StepNode, trigger: TriggerNode };

/** One line saying what a step does: its first required config value that is text (url, message, function...). */
function configSummary(step, known) {
  const config = step.config && typeof step.config === "object" && !Array.isArray(step.config) ? step.config : {};
  const required = (known && known.config_schema && known.config_schema.required) || [];
  for (const key of [...required, ...Object.keys(config)]) {
    const value = config[key];
    if (typeof value === "string" && value.trim()) return value.length > 60 ? `${value.slice(0, 57)}…` : value;
  }
  return "";
}

function triggerSummary(trigger) {
  if (!trigger || typeof trigger !== "object") return "";
  if (trigger.schedule) return trigger.schedule;
  if (trigger.seconds) return `every ${trigger.seconds} s`;
  if (trigger.folder) return trigger.folder;
  if (trigger.event) return trigger.event;
  return "";
}

/** The React Flow pane of the designer. */
export default function Canvas({ definition, positions, catalog, problems, selected, readOnly, onSelect, onConnect,
  onMove, onDropType, onRefuse }) {
  const flow = useReactFlow();
  const [nodes, setNodes] = useState([]);
  const measured = useRef({});

  const built = useMemo(() => {
    const trigger = definition.trigger && typeof definition.trigger === "object" ? definition.trigger : { type: "manual" };
    const list = [{
      id: TRIGGER, type: "trigger", position: positions[TRIGGER] || { x: 0, y: 0 }, deletable: false,
      selected: selected && selected.kind === "trigger",
      data: { type: trigger.type || "manual", summary: triggerSummary(trigger), problems: problems[TRIGGER] || [], readOnly },
    }];
    const seen = new Set([TRIGGER]);
    for (const step of stepsOf(definition)) {
      // A second step of one name (typed in the YAML) is the server's problem to report; one node per name.
      if (typeof step.name !== "string" || seen.has(step.name)) continue;
      seen.add(step.name);
      const known = actionType(catalog, step.type);
      list.push({
        id: step.name, type: "step", position: positions[step.name] || { x: 0, y: 0 }, deletable: false,
        selected: !!(selected && selected.kind === "step" && selected.name === step.name),
        data: {
          name: step.name, type: String(step.type ?? "(no type)"), description: known ? known.description : "",
          unknown: catalog && !known ? `type '${step.type}' is not in the catalog (its plugin may be gone)` : "",
          problems: problems[step.name] || [], readOnly, summary: configSummary(step, known),
        },
      });
    }
    return list;
  }, [definition, positions, catalog, problems, selected, readOnly]);

  useEffect(() => {
    setNodes(built.map((node) => (measured.current[node.id] ? { ...node, measured: measured.current[node.id] } : node)));
  }, [built]);

  // The trigger's links to the first steps are left out: an edge on the canvas is always a depends_on entry.
  const edges = useMemo(() => edgesOf(definition).filter((edge) => !edge.trigger).map((edge) => ({
    id: edge.id, source: edge.source, target: edge.target, deletable: false,
    selectable: !readOnly, className: "pfd-edge",
    selected: !!(selected && selected.kind === "edge" && selected.source === edge.source && selected.target === edge.target),
    markerEnd: { type: MarkerType.ArrowClosed, width: 16, height: 16 },
  })), [definition, selected, readOnly]);

  const onNodesChange = useCallback((changes) => {
    // Selection stays the designer's own state; a node selected with the keyboard (Tab, Enter) is selected there.
    const picked = changes.find((change) => change.type === "select" && change.selected);
    if (picked) onSelect(picked.id === TRIGGER ? { kind: "trigger" } : { kind: "step", name: picked.id });
    const kept = changes.filter((change) => change.type === "position" || change.type === "dimensions");
    for (const change of kept) {
      if (change.type === "dimensions" && change.dimensions) measured.current[change.id] = change.dimensions;
    }
    if (kept.length) setNodes((current) => applyNodeChanges(kept, current));
  }, [onSelect]);

  const onNodeDragStop = useCallback((_event, _node, dragged) => {
    const moved = {};
    for (const node of dragged || [_node]) moved[node.id] = { x: node.position.x, y: node.position.y };
    onMove(moved);
  }, [onMove]);

  const onDrop = useCallback((event) => {
    event.preventDefault();
    const type = event.dataTransfer.getData(DRAG_TYPE) || event.dataTransfer.getData("text/plain");
    if (!type) return;
    if (readOnly) { onRefuse("Read-only: only an admin can change this workflow"); return; }
    const point = flow.screenToFlowPosition({ x: event.clientX, y: event.clientY });
    onDropType(type, { x: point.x - NODE_WIDTH / 2, y: point.y - NODE_HEIGHT / 2 });
  }, [flow, onDropType, onRefuse, readOnly]);

  return (
    <section className="pfd-canvas" data-testid="canvas" aria-label="Canvas"
      data-empty={stepsOf(definition).length ? undefined : "true"}
      onDragOver={(event) => { event.preventDefault(); event.dataTransfer.dropEffect = readOnly ? "none" : "copy"; }}
      onDrop={onDrop}>
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={NODE_TYPES}
        onNodesChange={onNodesChange}
        onNodeDragStop={onNodeDragStop}
        onNodeClick={(_event, node) => onSelect(node.id === TRIGGER ? { kind: "trigger" } : { kind: "step", name: node.id })}
        onEdgeClick={(_event, edge) => {
          if (edge.source !== TRIGGER) onSelect({ kind: "edge", source: edge.source, target: edge.target });
        }}
        onPaneClick={() => onSelect(null)}
        onConnect={(connection) => onConnect(connection.source, connection.target)}
        nodesDraggable={!readOnly}
        nodesConnectable={!readOnly}
        elementsSelectable
        deleteKeyCode={null}
        selectionKeyCode={null}
        multiSelectionKeyCode={null}
        fitView
        fitViewOptions={{ padding: 0.2, maxZoom: 1 }}
        minZoom={0.2}
        maxZoom={2}
      >
        <Background gap={20} size={1} />
        {!stepsOf(definition).length && !readOnly && (
          <div className="pfd-canvas-hint">Drag a step type from the palette here (or press Enter on one).</div>
        )}
        <Controls showInteractive={false} />
      </ReactFlow>
    </section>
  );
}
