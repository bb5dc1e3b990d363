// Undo/redo of the model: past and future snapshots; edits of one field in a row count as one step.
export const HISTORY_LIMIT = 200;

/** A history holding ``present`` only. */
export function createHistory(present) {
  return { past: [], present, future: [], key: null };
}

/** The history after an edit to ``next``; an edit with the same ``key`` as the last one replaces it. */
export function record(history, next, key = null) {
  if (next === history.present) return history;
  if (key && key === history.key) return { ...history, present: next, future: [] };
  const past = [...history.past, history.present].slice(-HISTORY_LIMIT);
  return { past, present: next, future: [], key };
}

/** Close the current run of same-key edits (the next edit is a new undo step). */
export function seal(history) {
  return history.key ? { ...history, key: null } : history;
}

export function canUndo(history) {
  return history.past.length > 0;
}

export function canRedo(history) {
  return history.future.length > 0;
}

export function undo(history) {
  if (!history.past.length) return history;
  const previous = history.past[history.past.length - 1];
  return { past: history.past.slice(0, -1), present: previous, future: [history.present, ...history.future], key: null };
}

export function redo(history) {
  if (!history.future.length) return history;
  const [next, ...future] = history.future;
  return { past: [...history.past, history.present], present: next, future, key: null };
}
