// PyFlow dashboard: live updates of the run page and the runs list by polling the JSON API.
// The pages are complete without this file; it only keeps them current.
"use strict";

(function () {
  const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
  const POLL_MS = 1000;
  const IDLE_POLL_MS = 5000;

  function when(iso) {
    return iso ? iso.replace("T", " ").slice(0, 19) : "—";
  }

  function epoch(iso) {
    return iso ? Date.parse(iso) / 1000 : null;
  }

  // Same words as the server's duration filter.
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.floor(seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  }

  function runDuration(run) {
    const start = epoch(run.started_at);
    if (start === null) return "—";
    const end = run.finished_at ? epoch(run.finished_at) : Date.now() / 1000;
    return duration(Math.max(0, end - start));
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function badge(status) {
    return el("span", { class: "badge status-" + status }, status);
  }

  function timeEl(iso) {
    if (!iso) return document.createTextNode("—");
    return el("time", { datetime: iso, title: iso }, when(iso));
  }

  function setChild(parent, child) {
    parent.replaceChildren(child);
  }

  // As filters.progress_view: a failed or cancelled run shows how many steps succeeded, never a full bar.
  function progressView(run) {
    if (run.status === "failed" || run.status === "cancelled") {
      const steps = run.steps || [];
      const succeeded = steps.filter((step) => step.status === "succeeded").length;
      const value = steps.length ? Math.floor((succeeded * 100) / steps.length) : 0;
      return { value: value, label: succeeded + "/" + steps.length + " succeeded" };
    }
    const value = run.progress || 0;
    return { value: value, label: value + "%" };
  }

  function setProgress(container, run) {
    if (!container) return;
    const view = progressView(run);
    container.setAttribute("class", "progress status-" + run.status);
    container.setAttribute("aria-valuenow", String(view.value));
    container.setAttribute("aria-valuetext", view.label);
    container.querySelector(".progress-bar").style.width = view.value + "%";
    container.querySelector(".progress-text").textContent = view.label;
  }

  function progressEl(run) {
    const box = el("div", { class: "progress", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" });
    box.append(el("div", { class: "progress-bar" }), el("span", { class: "progress-text" }));
    setProgress(box, run);
    return box;
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) {
      const error = new Error("HTTP " + response.status);
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  // A poller that waits for the previous answer, skips hidden tabs, and stops when step() says so.
  function poll(step) {
    let stopped = false;
    async function tick() {
      let delay = POLL_MS;
      if (!document.hidden) {
        try {
          delay = await step();
        } catch (error) {
          // A 4xx will not get better by asking again (run pruned, logged out); a network blip may.
          if (error.status && error.status < 500) stopped = true;
          delay = IDLE_POLL_MS;
        }
      }
      if (delay === null) stopped = true;
      if (!stopped) setTimeout(tick, delay);
    }
    setTimeout(tick, POLL_MS);
  }

  // -- the run page ------------------------------------------------------------------------------
  function timelineBars(run) {
    const start = epoch(run.started_at) ?? epoch(run.created_at);
    const end = run.finished_at ? epoch(run.finished_at) : Date.now() / 1000;
    const bars = {};
    if (start === null) return bars;
    const span = Math.max(end - start, 0.001);
    for (const step of run.steps) {
      const began = epoch(step.started_at);
      if (began === null) continue;
      const ended = step.finished_at ? epoch(step.finished_at) : end;
      const left = Math.min(Math.max(((began - start) / span) * 100, 0), 100);
      const width = Math.max(Math.min(Math.max(((ended - began) / span) * 100, 0.5), 100 - left), 0.5);
      bars[step.name] = { left: left.toFixed(2), width: width.toFixed(2) };
    }
    return bars;
  }

  function updateStep(row, step, run, bar) {
    setChild(row.querySelector(".step-status"), badge(step.status));
    row.querySelector(".step-attempts").textContent = String(step.attempts);
    row.querySelector(".step-duration").textContent =
      step.duration_ms === null || step.duration_ms === undefined ? "—" : duration(step.duration_ms / 1000);
    const barEl = row.querySelector(".timeline-bar");
    barEl.className = "timeline-bar status-" + step.status;
    barEl.hidden = !bar;
    if (bar) {
      barEl.style.left = bar.left + "%";
      barEl.style.width = bar.width + "%";
    }
    const error = row.querySelector(".step-error");
    error.textContent = step.error || "";
    error.hidden = !step.error;
    const details = row.querySelector("details.result");
    details.hidden = step.result === null || step.result === undefined;
    const text = JSON.stringify(step.result, null, 2);
    const pre = details.querySelector("pre");
    if (!details.hidden && pre.textContent !== text) pre.textContent = text;  // keeps an open <details> open
    const skip = row.querySelector(".skip-form");  // absent for a role that may not control runs
    if (skip) skip.hidden = !(run.status === "failed" && step.status === "failed");
  }

  function updateRun(main, run) {
    main.dataset.runStatus = run.status;
    setChild(document.getElementById("run-status"), badge(run.status));
    setProgress(document.getElementById("run-progress"), run);
    setChild(document.getElementById("run-started"), timeEl(run.started_at));
    setChild(document.getElementById("run-finished"), timeEl(run.finished_at));
    document.getElementById("run-duration").textContent = runDuration(run);
    const error = document.getElementById("run-error");
    error.textContent = run.error || "";
    error.hidden = !run.error;
    for (const form of document.querySelectorAll("#run-controls form[data-when]")) {
      // A run undoing its steps (compensating) cannot be paused: it ends failed or cancelled once they ran.
      form.hidden = !form.dataset.when.split(" ").includes(run.status) ||
        ("unlessCompensating" in form.dataset && Boolean(run.compensating));
    }
    const bars = timelineBars(run);
    for (const step of run.steps) {
      const row = document.querySelector('#steps-table tr[data-step="' + CSS.escape(step.name) + '"]');
      if (row) updateStep(row, step, run, bars[step.name]);
      const node = document.querySelector('#step-graph g[data-step="' + CSS.escape(step.name) + '"]');
      if (node) {
        node.setAttribute("class", "node status-" + step.status);
        node.querySelector(".node-status").textContent = step.status;
        node.querySelector("title").textContent = step.name + ": " + step.status;
      }
    }
    document.getElementById("live-note").textContent = FINISHED.has(run.status) ? "" : "Updating live…";
  }

  function updateCompensations(run) {
    const table = document.getElementById("compensations-table");
    if (!table) return;
    (run.compensations || []).forEach(function (entry, index) {
      const row = table.querySelector('tr[data-index="' + index + '"]');
      if (!row) return;
      setChild(row.querySelector(".step-status"), badge(entry.status));
      row.querySelector(".step-attempts").textContent = String(entry.attempts);
      const error = row.querySelector(".step-error");
      error.textContent = entry.error || "";
      error.hidden = !entry.error;
      const details = row.querySelector("details.result");
      details.hidden = entry.result === null || entry.result === undefined;
      const text = JSON.stringify(entry.result, null, 2);
      const pre = details.querySelector("pre");
      if (!details.hidden && pre.textContent !== text) pre.textContent = text;
      if (entry.finished_at) setChild(row.querySelector(".step-finished"), timeEl(entry.finished_at));
    });
  }

  function updateLogs(logs) {
    const body = document.getElementById("logs");
    const shown = body.querySelectorAll("tr:not(.empty-row)").length;
    if (logs.length === shown) return;
    const wrap = body.closest(".logs-wrap");
    const atBottom = wrap.scrollTop + wrap.clientHeight >= wrap.scrollHeight - 4;
    const rows = logs.map(function (line) {
      const row = el("tr", { class: "level-" + line.level });
      row.append(
        el("td", { class: "mono nowrap" }, when(line.at)),
        el("td", {}, ""),
        el("td", {}, line.step || ""),
        el("td", { class: "message" }, line.message),
      );
      row.children[1].append(el("span", { class: "level" }, line.level));
      return row;
    });
    body.replaceChildren(...rows);
    document.getElementById("log-count").textContent = "(" + logs.length + " lines)";
    if (atBottom) wrap.scrollTop = wrap.scrollHeight;
  }

  function watchRun(main) {
    if (FINISHED.has(main.dataset.runStatus)) return;
    const table = document.getElementById("steps-table");
    document.getElementById("live-note").textContent = "Updating live…";
    poll(async function () {
      const [run, logs] = await Promise.all([getJSON(main.dataset.api), getJSON(main.dataset.logsApi)]);
      const compensations = String((run.compensations || []).length);
      if (String(run.steps.length) !== table.dataset.stepCount || compensations !== main.dataset.compensations) {
        // Steps were added (a loop) or compensations planned: the server draws the new rows.
        window.location.reload();
        return null;
      }
      updateRun(main, run);
      updateCompensations(run);
      updateLogs(logs.logs);
      return FINISHED.has(run.status) ? null : POLL_MS;
    });
  }

  // -- the runs list -----------------------------------------------------------------------------
  function runRow(run, runUrl) {
    const row = el("tr", { "data-run": run.id });
    const id = el("td", { "data-label": "Run" });
    id.append(el("a", { class: "mono", href: runUrl.replace("RUN_ID", encodeURIComponent(run.id)) }, run.id));
    const status = el("td", { "data-label": "Status" });
    status.append(badge(run.status));
    const progress = el("td", { "data-label": "Progress" });
    progress.append(progressEl(run));
    const source = el("td", { "data-label": "Source" });
    source.append(el("code", { class: "tag" }, run.source || "—"));
    const created = el("td", { "data-label": "Created" });
    created.append(timeEl(run.created_at));
    row.append(
      id,
      el("td", { "data-label": "Workflow" }, run.workflow),
      source,
      status,
      progress,
      created,
      el("td", { "data-label": "Duration", class: "num" }, runDuration(run)),
      el("td", { "data-label": "Error", class: "error-text" }, run.error || ""),
    );
    return row;
  }

  function watchRuns(table) {
    const body = table.querySelector("tbody");
    poll(async function () {
      const page = await getJSON(table.dataset.poll);
      if (page.runs.length) body.replaceChildren(...page.runs.map((run) => runRow(run, table.dataset.runUrl)));
      return POLL_MS;
    });
  }

  // The step graph's hint shows only while the drawing is wider than its box (it scrolls sideways).
  function watchGraph(wrap, hint) {
    function check() {
      hint.hidden = wrap.scrollWidth <= wrap.clientWidth + 1;
    }
    check();
    window.addEventListener("resize", check);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const main = document.querySelector("main[data-run-id]");
    if (main) watchRun(main);
    const graph = document.getElementById("graph-wrap");
    if (graph) watchGraph(graph, document.getElementById("graph-hint"));
    const runs = document.querySelector("#runs-table[data-poll]");
    if (runs) watchRuns(runs);
  });
})();
