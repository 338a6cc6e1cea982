// The maggy-magic live dashboard: an anywidget front-end (ES module).
//
// The kernel syncs five bounded JSON traits (maggy_magic/ui/dashboard.py):
//   status  {title, state, started, ended, now, num_trials, counts, best, metric, ...}
//   trials  {rows: [...], total, sort}        at most a few hundred rows, pre-selected
//   curves  {curves: [{trial, state, points}], best, total}   downsampled
//   logs    {workers: {id: {host, trial, state, devices, total, lines: [[trial, text], ...]}}}
//   search  {axes, lines, total, best, note, importances}   drawn by search.js
// An ablation study's status also has `ablation` {base, components, total}: drawn as a
// bar chart of each component's metric minus the base's.
// and listens for {type: "stop"} messages. The view sends its table sort back through
// the `table_sort` trait so the kernel picks the rows that sort shows. Data never becomes
// HTML: every text goes through textContent.

import {
  ablationBars, curveExtent, downsample, elapsedSeconds, formatDuration, formatParams, formatSeconds,
  formatTick, formatValue, mergeLogTail, nextSort, niceTicks, tableColumns,
  progressSegments, sortRows,
} from "./state.js";
import { h, placeInOrder, s } from "./dom.js";
import { searchPanel } from "./search.js";

const LIVE = new Set(["starting", "running"]);
const PLOT = { width: 520, height: 250, left: 50, right: 14, top: 18, bottom: 36 };
const ENDED = new Set(["finished", "stopped", "failed", "interrupted"]);
const TABLE_CHUNK = 40;
const MANY_CURVES = 30;
const BARS = { width: 560, row: 20, label: 170, value: 80, top: 4, bottom: 18 };

function render({ model, el }) {
  const root = h("div", { class: "maggy-dash" });
  el.append(root);

  // -- header: title, state, elapsed, stop ---------------------------------------------
  const title = h("span", { class: "maggy-title" });
  const state = h("span", { class: "maggy-state", "data-role": "state" });
  const elapsed = h("span", { class: "maggy-elapsed", "data-role": "elapsed" });
  const stop = h("button", { class: "maggy-stop", "data-role": "stop", type: "button", text: "Stop", disabled: "" });
  stop.addEventListener("click", () => {
    stop.disabled = true;
    stop.textContent = "Stopping…";
    model.send({ type: "stop" });
  });
  root.append(h("div", { class: "maggy-header" }, title, state, elapsed, h("span", { class: "maggy-spacer" }), stop));

  // -- progress and best ------------------------------------------------------------------
  const bar = h("div", { class: "maggy-bar", "data-role": "progress" });
  const segments = {};
  for (const name of ["finished", "early_stopped", "failed", "running"]) {
    segments[name] = h("div", { class: `maggy-seg maggy-${name}` });
    bar.append(segments[name]);
  }
  const counts = h("div", { class: "maggy-counts", "data-role": "counts" });
  const best = h("div", { class: "maggy-best", "data-role": "best" });
  const error = h("div", { class: "maggy-message", "data-role": "message" });
  root.append(bar, counts, best, error);

  // -- ablation studies: each component against the base ----------------------------------
  const ablationChart = s("svg", { class: "maggy-ablation-chart", "data-role": "ablation-chart" });
  const ablationHead = h("div", { class: "maggy-panel-title" });
  const ablationNote = h("div", { class: "maggy-note" });
  const ablation = h("div", { class: "maggy-ablation", "data-role": "ablation", style: "display:none" },
    ablationHead, ablationChart, ablationNote);
  root.append(ablation);

  // -- curves and table side by side ------------------------------------------------------
  const plot = s("svg", { viewBox: `0 0 ${PLOT.width} ${PLOT.height}`, class: "maggy-plot", "data-role": "curves" });
  const plotNote = h("div", { class: "maggy-note" });
  const legend = h("div", { class: "maggy-legend" },
    ...[["best", "best"], ["running", "running"], ["finished", "finished"], ["stopped", "early-stopped / failed"]]
      .map(([cls, label]) => h("span", {}, h("i", { class: `maggy-key maggy-key-${cls}` }), label)));
  const table = h("table", { class: "maggy-table", "data-role": "table" });
  const tableNote = h("div", { class: "maggy-note" });
  const tableScroll = h("div", { class: "maggy-table-scroll" }, table);
  root.append(h("div", { class: "maggy-panels" },
    h("div", { class: "maggy-panel" }, h("div", { class: "maggy-panel-title", text: "Learning curves" }), plot, legend, plotNote),
    h("div", { class: "maggy-panel maggy-table-panel" }, h("div", { class: "maggy-panel-title", text: "Trials" }),
      tableScroll, tableNote)));

  // -- the search: parallel coordinates and parameter importances -------------------------
  const search = searchPanel();
  root.append(search.el);

  // -- one log pane per worker ------------------------------------------------------------
  const logs = h("div", { class: "maggy-logs", "data-role": "logs" });
  root.append(logs);
  const panes = new Map(); // worker -> {box, head, body, state}

  let status = {};
  let receivedAt = Date.now();
  let sort = model.get("table_sort") || { key: "trial", desc: true };

  function updateStatus() {
    status = model.get("status") || {};
    receivedAt = Date.now();
    title.textContent = status.title || "maggy";
    state.textContent = status.state || "starting";
    state.className = `maggy-state maggy-state-${status.state || "starting"}`;
    // Stop works while the run runs, once; "stopping" is the kernel confirming a stop
    if (status.state === "stopping") stop.textContent = "Stopping…";
    else if (!LIVE.has(status.state || "starting")) stop.textContent = "Stop";
    stop.disabled = status.state !== "running" || stop.textContent !== "Stop";
    for (const seg of progressSegments(status)) segments[seg.name].style.width = `${seg.width}%`;
    const c = status.counts || {};
    const done = (c.finished || 0) + (c.early_stopped || 0) + (c.failed || 0);
    const of = status.num_trials ? ` / ${status.num_trials}` : "";
    counts.replaceChildren(
      h("b", { text: `${done}${of} trials` }),
      ...[["finished", c.finished], ["running", c.running], ["early-stopped", c.early_stopped], ["failed", c.failed]]
        .map(([name, n]) => h("span", { class: `maggy-count maggy-count-${name}`, "data-role": `count-${name}`, text: `${n || 0} ${name}` })));
    const b = status.best;
    best.replaceChildren(...(b
      ? [h("span", { class: "maggy-label", text: `best ${status.metric || "metric"} ` }),
         h("b", { "data-role": "best-value", text: formatValue(b.value) }),
         h("span", { text: ` · trial ${b.trial} · ` }),
         h("code", { text: formatParams(b.params) })]
      : [h("span", { class: "maggy-label", text: "no result yet" })]));
    // why the run ended: a note when stopped on purpose, an error when it failed
    error.textContent = status.error || "";
    error.className = `maggy-message${status.state === "stopped" ? "" : " maggy-error"}`;
    error.style.display = status.error && ENDED.has(status.state) ? "" : "none";
    updateAblation();
    tick();
  }

  function updateAblation() {
    if (!status.ablation) {
      ablation.style.display = "none";
      return;
    }
    ablation.style.display = "";
    const metric = status.metric || "metric";
    const { base, bars, scale } = ablationBars(status.ablation, status.direction);
    ablationHead.textContent = base && base.value !== null && base.value !== undefined
      ? `Ablation: ${metric} without each component, against the base ${formatValue(base.value)}`
      : `Ablation: waiting for the base trial's ${metric}`;
    const height = BARS.top + BARS.row * Math.max(1, bars.length) + BARS.bottom;
    ablationChart.setAttribute("viewBox", `0 0 ${BARS.width} ${height}`);
    ablationChart.replaceChildren();
    const half = (BARS.width - BARS.label - BARS.value) / 2 - 4;
    const zero = BARS.label + half + 4;
    ablationChart.append(s("line", { x1: zero, x2: zero, y1: BARS.top, y2: height - BARS.bottom + 2, class: "maggy-grid" }));
    const axis = [[zero - half, "start", -scale], [zero, "middle", 0], [zero + half, "end", scale]];
    for (const [x, anchor, value] of axis) {
      const t = s("text", { x, y: height - 4, "text-anchor": anchor, class: "maggy-axis" });
      t.textContent = value === 0 ? "0 (base)" : `${value > 0 ? "+" : ""}${formatValue(value)}`;
      ablationChart.append(t);
    }
    bars.forEach((bar, i) => {
      const y = BARS.top + i * BARS.row;
      const label = s("text", { x: BARS.label - 6, y: y + 14, "text-anchor": "end", class: "maggy-ablation-label" });
      label.textContent = bar.component.length > 22 ? `${bar.component.slice(0, 21)}…` : bar.component;
      const tip = s("title");
      tip.textContent = `${bar.kind} ${bar.component} (trial ${bar.trial}, ${bar.state.toLowerCase()})`;
      label.append(tip);
      ablationChart.append(label);
      const value = s("text", { x: BARS.width - BARS.value + 6, y: y + 14, class: "maggy-axis" });
      if (bar.share === null) {
        value.textContent = bar.state === "FAILED" ? "failed" : bar.state === "RUNNING" ? "running…" : "";
      } else {
        const width = Math.max(1, Math.abs(bar.share) * half);
        const rect = s("rect", {
          x: bar.share < 0 ? zero - width : zero, y: y + 3, width, height: BARS.row - 6,
          class: `maggy-ablation-bar ${bar.worse ? "maggy-ablation-worse" : "maggy-ablation-better"}`,
          "data-component": bar.component,
        });
        const rectTip = s("title");
        rectTip.textContent = `${bar.component}: ${metric} ${formatValue(bar.value)} (${bar.difference > 0 ? "+" : ""}${formatValue(bar.difference)})`;
        rect.append(rectTip);
        ablationChart.append(rect);
        value.textContent = `${bar.difference > 0 ? "+" : ""}${formatValue(bar.difference)}`;
      }
      ablationChart.append(value);
    });
    const total = status.ablation.total || bars.length;
    ablationNote.textContent = (total > bars.length ? `showing ${bars.length} of ${total} components · ` : "")
      + "red: worse without it (the component helps) · green: no worse without it";
  }

  function tick() {
    elapsed.textContent = formatDuration(elapsedSeconds(status, receivedAt, Date.now()));
  }

  // Rows are kept by trial id from update to update: an update sets only the cells
  // whose text changed, and draws TABLE_CHUNK more rows each time the list is scrolled
  // to its end (the kernel sends up to 200 rows; a few fit the panel).
  const thead = h("thead");
  const tbody = h("tbody");
  table.append(thead, tbody);
  const rowCache = new Map(); // trial -> {tr, cells, texts}
  let headKey = "";
  let shown = TABLE_CHUNK;
  let rowCount = 0;
  tableScroll.addEventListener("scroll", () => {
    const atEnd = tableScroll.scrollTop + tableScroll.clientHeight >= tableScroll.scrollHeight - 40;
    if (atEnd && shown < rowCount) {
      shown += TABLE_CHUNK;
      updateTable();
    }
  });

  function cellText(row, key) {
    if (key.startsWith("param:")) return formatValue((row.params || {})[key.slice(6)]);
    if (key === "duration") return formatSeconds(row.duration);
    if (key === "state") return (row.state || "").toLowerCase().replace("_", "-");
    return formatValue(row[key]);
  }

  function updateTable() {
    const data = model.get("trials") || {};
    const rows = sortRows(data.rows || [], sort.key, sort.desc);
    const columns = tableColumns(rows, status.metric);
    const key = JSON.stringify([columns, sort]);
    if (key !== headKey) {
      headKey = key;
      rowCache.clear();
      const head = h("tr");
      for (const [column, label] of columns) {
        const arrow = sort.key === column ? (sort.desc ? " ▼" : " ▲") : "";
        head.append(h("th", { "data-key": column, text: label + arrow, title: "sort", onclick: () => setSort(column) }));
      }
      thead.replaceChildren(head);
    }
    const bestId = status.best ? status.best.trial : null;
    rowCount = rows.length;
    const drawn = rows.slice(0, shown);
    const seen = new Set();
    const order = drawn.map((row) => {
      let entry = rowCache.get(row.trial);
      if (!entry) {
        const cells = columns.map(() => h("td"));
        entry = { tr: h("tr", { "data-trial": row.trial }, ...cells), cells, texts: [] };
        rowCache.set(row.trial, entry);
      }
      seen.add(row.trial);
      const rowClass = row.trial === bestId ? "maggy-best-row" : "";
      if (entry.tr.className !== rowClass) entry.tr.className = rowClass;
      columns.forEach(([column], i) => {
        const text = cellText(row, column);
        if (entry.texts[i] !== text) {
          entry.texts[i] = text;
          entry.cells[i].textContent = text;
        }
        if (column === "state") {
          const cls = `maggy-cell-${row.state}`;
          if (entry.cells[i].className !== cls) entry.cells[i].className = cls;
          if (entry.cells[i].title !== (row.error || "")) entry.cells[i].title = row.error || "";
        }
      });
      return entry.tr;
    });
    for (const trial of [...rowCache.keys()]) if (!seen.has(trial)) rowCache.delete(trial);
    placeInOrder(tbody, order);
    // the sort the kernel picked these rows by (it follows the view's, once it heard it)
    const kernelSort = data.sort ? `${data.sort.key}:${data.sort.desc ? "desc" : "asc"}` : "";
    if (table.dataset.kernelSort !== kernelSort) table.dataset.kernelSort = kernelSort;
    const total = data.total || 0;
    const note = total > drawn.length ? `showing ${drawn.length} of ${total} trials` : "";
    if (tableNote.textContent !== note) tableNote.textContent = note;
  }

  function setSort(key) {
    sort = nextSort(sort, key, status.direction);
    updateTable();
    model.set("table_sort", sort);
    model.save_changes();
  }

  // The axes are redrawn only when the extent or the metric's name changes; each curve's
  // polyline is kept by trial id and its points set only when they changed, so an update
  // of 96 live curves leaves the finished ones alone.
  const axes = s("g");
  const lines = s("g");
  plot.append(axes, lines);
  const curveCache = new Map(); // trial -> {line, tip, points, cls, tipText}
  let axesKey = "";

  function drawAxes(ext, w, hgt, x, y) {
    axes.replaceChildren(s("rect", { x: PLOT.left, y: PLOT.top, width: w, height: hgt, class: "maggy-plot-bg" }));
    if (!ext) {
      const t = s("text", { x: PLOT.left + w / 2, y: PLOT.top + hgt / 2, class: "maggy-axis", "text-anchor": "middle" });
      t.textContent = "waiting for metrics…";
      axes.append(t);
      return;
    }
    const yTicks = niceTicks(ext.y0, ext.y1, 4);
    for (const vy of yTicks.values) {
      axes.append(s("line", { x1: PLOT.left, x2: PLOT.left + w, y1: y(vy), y2: y(vy), class: "maggy-grid" }));
      const label = s("text", { x: PLOT.left - 6, y: y(vy) + 4, "text-anchor": "end", class: "maggy-axis" });
      label.textContent = formatTick(vy, yTicks.step);
      axes.append(label);
    }
    const xTicks = niceTicks(ext.x0, ext.x1, 5);
    for (const vx of xTicks.values) {
      const label = s("text", { x: x(vx), y: PLOT.top + hgt + 14, "text-anchor": "middle", class: "maggy-axis" });
      label.textContent = formatTick(vx, Math.max(1, xTicks.step));
      axes.append(label);
    }
    const xName = s("text", { x: PLOT.left + w / 2, y: PLOT.height - 4, "text-anchor": "middle", class: "maggy-axis maggy-axis-name" });
    xName.textContent = "step";
    const yName = s("text", { x: PLOT.left, y: PLOT.top - 6, "text-anchor": "start", class: "maggy-axis maggy-axis-name" });
    yName.textContent = status.metric || "metric";
    axes.append(xName, yName);
  }

  function updateCurves() {
    const data = model.get("curves") || {};
    const curves = (data.curves || []).filter((c) => c.points && c.points.length);
    const ext = curveExtent(curves);
    const w = PLOT.width - PLOT.left - PLOT.right;
    const hgt = PLOT.height - PLOT.top - PLOT.bottom;
    const x = (v) => PLOT.left + ((v - ext.x0) / (ext.x1 - ext.x0)) * w;
    const y = (v) => PLOT.top + hgt - ((v - ext.y0) / (ext.y1 - ext.y0)) * hgt;
    const key = JSON.stringify([ext, status.metric || "metric"]);
    if (key !== axesKey) {
      axesKey = key;
      drawAxes(ext, w, hgt, x, y);
    }
    if (!ext) {
      lines.replaceChildren();
      curveCache.clear();
      plotNote.textContent = "";
      return;
    }
    plot.classList.toggle("maggy-plot-many", curves.length > MANY_CURVES);
    // dimmed first, then live, then the best on top
    const rank = (c) => (c.trial === data.best ? 3 : c.state === "RUNNING" ? 2 : c.state === "FINISHED" ? 1 : 0);
    const seen = new Set();
    const order = curves.slice().sort((a, b) => rank(a) - rank(b)).map((curve) => {
      let entry = curveCache.get(curve.trial);
      if (!entry) {
        const tip = s("title");
        entry = { line: s("polyline", { "data-trial": curve.trial }), tip };
        entry.line.append(tip);
        curveCache.set(curve.trial, entry);
      }
      seen.add(curve.trial);
      const points = downsample(curve.points, w).map(([px, py]) => `${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(" ");
      if (entry.points !== points) {
        entry.points = points;
        entry.line.setAttribute("points", points);
      }
      const cls = "maggy-curve " + (curve.trial === data.best ? "maggy-curve-best"
        : curve.state === "RUNNING" ? "maggy-curve-running"
        : curve.state === "FINISHED" ? "maggy-curve-finished" : "maggy-curve-stopped");
      if (entry.cls !== cls) {
        entry.cls = cls;
        entry.line.setAttribute("class", cls);
      }
      const lastPoint = curve.points[curve.points.length - 1];
      const tipText = `trial ${curve.trial} (${curve.state.toLowerCase()}): ${formatValue(lastPoint[1])} at step ${lastPoint[0]}`;
      if (entry.tipText !== tipText) {
        entry.tipText = tipText;
        entry.tip.textContent = tipText;
      }
      return entry.line;
    });
    for (const trial of [...curveCache.keys()]) if (!seen.has(trial)) curveCache.delete(trial);
    placeInOrder(lines, order);
    const total = data.total || curves.length;
    const note = total > curves.length ? `${curves.length} of ${total} curves: running, best and latest` : "";
    if (plotNote.textContent !== note) plotNote.textContent = note;
  }

  function updateLogs() {
    const workers = (model.get("logs") || {}).workers || {};
    for (const [id, info] of Object.entries(workers)) {
      let pane = panes.get(id);
      if (!pane) {
        const head = h("div", { class: "maggy-log-head" });
        const body = h("pre", { class: "maggy-log-body" });
        const box = h("div", { class: "maggy-log", "data-role": "log-pane", "data-worker": id }, head, body);
        pane = { box, head, body, state: null };
        panes.set(id, pane);
        const ordered = [...panes.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
        logs.replaceChildren(...ordered.map((key) => panes.get(key).box));
      }
      const where = (info.host ? ` · ${info.host}` : "") + (info.devices ? ` · GPU ${info.devices}` : "");
      const doing = info.lost ? " · lost" : info.trial ? ` · trial ${info.trial}` : " · idle";
      pane.head.textContent = `worker ${id}${where}${doing}`;
      const merged = mergeLogTail(pane.state, { total: info.total, lines: info.lines });
      const follow = pane.body.scrollTop + pane.body.clientHeight >= pane.body.scrollHeight - 8;
      if (merged.added) {
        pane.state = merged;
        pane.body.replaceChildren(...merged.lines.map((line) => {
          if (line.gap) return h("div", { class: "maggy-log-gap", text: `… ${line.gap} lines not shown` });
          const [trial, text] = line;
          return h("div", { class: "maggy-log-line" },
            trial ? h("span", { class: "maggy-log-trial", text: `[${trial}] ` }) : null, text);
        }));
        if (follow) pane.body.scrollTop = pane.body.scrollHeight;
      }
    }
  }

  const updateSearch = () => search.update(model.get("search"));
  const handlers = { status: () => { updateStatus(); updateTable(); }, trials: updateTable, curves: updateCurves, logs: updateLogs, search: updateSearch };
  for (const [name, fn] of Object.entries(handlers)) model.on(`change:${name}`, fn);
  updateStatus();
  updateTable();
  updateCurves();
  updateLogs();
  updateSearch();
  const timer = setInterval(tick, 1000);

  return () => {
    clearInterval(timer);
    for (const [name, fn] of Object.entries(handlers)) model.off(`change:${name}`, fn);
  };
}

export default { render };
