// The dashboard's view of the search: parallel coordinates (brushable) and parameter
// importances, drawn from the kernel's `search` trait (maggy_magic/ui/search_state.py):
//   {axes: [...params, metric], lines: [{trial, state, values}], total, best, note,
//    importances: {importances: [[name, share]], trials, method, note} | null}
// Drag along an axis to select a range of it: lines outside are dimmed; brushes on
// several axes combine (a line must lie in all); a click on an axis clears its brush.
// Brushes are kept by axis name across updates.

import {
  axisKey, axisPosition, axisTicks, brushFromPositions, brushPositions, brushSelection,
  formatValue, importanceBars, metricShare, shadeColor,
} from "./state.js";
import { h, s } from "./dom.js";

const PC = { width: 640, height: 266, left: 44, right: 60, top: 40, bottom: 12, hit: 26 };

/** The search panel: returns {el, update(search)}; `el` is hidden while there is nothing
 * to draw (no parameters, an ablation study, a distributed run). */
export function searchPanel() {
  const svg = s("svg", { viewBox: `0 0 ${PC.width} ${PC.height}`, class: "maggy-pc", "data-role": "parcoords" });
  const note = h("span", { "data-role": "parcoords-note" });
  const clear = h("button", { class: "maggy-link", type: "button", "data-role": "clear-brushes", text: "clear selection" });
  const impHead = h("div", { class: "maggy-panel-title", text: "Parameter importance" });
  const impBody = h("div", { class: "maggy-importance", "data-role": "importance" });
  const impNote = h("div", { class: "maggy-note", "data-role": "importance-note" });
  const el = h("div", { class: "maggy-panels maggy-search", "data-role": "search", style: "display:none" },
    h("div", { class: "maggy-panel maggy-pc-panel" },
      h("div", { class: "maggy-panel-title", text: "Parallel coordinates" }), svg,
      h("div", { class: "maggy-note" }, note, clear)),
    h("div", { class: "maggy-panel maggy-importance-panel" }, impHead, impBody, impNote));

  let data = { axes: [], lines: [] };
  let brushes = {};
  const paths = new Map();       // trial -> path
  const brushRects = new Map();  // axis key -> rect
  const plotH = PC.height - PC.top - PC.bottom;
  const y = (p) => PC.top + (1 - p) * plotH;

  clear.addEventListener("click", () => { brushes = {}; applyBrushes(); });

  function xs(count) {
    const step = (PC.width - PC.left - PC.right) / Math.max(1, count - 1);
    return Array.from({ length: count }, (_, i) => PC.left + i * step);
  }

  function positionAt(event) {
    const point = svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    const local = point.matrixTransform(svg.getScreenCTM().inverse());
    return Math.min(1, Math.max(0, 1 - (local.y - PC.top) / plotH));
  }

  function update(next) {
    data = next && next.axes ? next : { axes: [], lines: [] };
    const axes = data.axes || [];
    el.style.display = axes.length && (data.lines || []).length ? "" : "none";
    drawLines(axes);
    drawImportances(data.importances);
    const keys = new Set(axes.map(axisKey));
    for (const key of Object.keys(brushes)) if (!keys.has(key)) delete brushes[key];
    applyBrushes();
  }

  function drawLines(axes) {
    svg.replaceChildren();
    paths.clear();
    brushRects.clear();
    if (!axes.length) return;
    const at = xs(axes.length);
    const metric = axes[axes.length - 1];
    const last = axes.length - 1;
    const lines = (data.lines || []).slice().sort((a, b) =>
      (a.trial === data.best) - (b.trial === data.best)
      || metricShare(metric, a.values[last]) - metricShare(metric, b.values[last]));
    const group = s("g", { class: "maggy-pc-lines" });
    for (const line of lines) {
      let d = "";
      let pen = "M";
      axes.forEach((axis, i) => {
        const p = axisPosition(axis, line.values[i]);
        if (p === null) { pen = "M"; return; }
        d += `${pen}${at[i].toFixed(1)},${y(p).toFixed(1)}`;
        pen = "L";
      });
      const best = line.trial === data.best;
      const path = s("path", {
        d, class: `maggy-pc-line${best ? " maggy-pc-best" : ""}${line.state === "EARLY_STOPPED" ? " maggy-pc-stopped" : ""}`,
        stroke: shadeColor(metricShare(metric, line.values[last])), "data-trial": line.trial,
      });
      const tip = s("title");
      tip.textContent = `trial ${line.trial}: ` + axes.map((axis, i) => `${axis.name}=${
        axis.kind === "categorical" ? (axis.categories[line.values[i]] ?? "–") : formatValue(line.values[i])}`).join(", ");
      path.append(tip);
      group.append(path);
      paths.set(line.trial, path);
    }
    svg.append(group);
    axes.forEach((axis, i) => svg.append(drawAxis(axis, at[i])));
  }

  function drawAxis(axis, x) {
    const key = axisKey(axis);
    const g = s("g", { class: `maggy-pc-axis${axis.metric ? " maggy-pc-metric" : ""}`, "data-axis": key });
    g.append(s("line", { x1: x, x2: x, y1: PC.top, y2: PC.top + plotH, class: "maggy-pc-rule" }));
    const name = s("text", { x, y: PC.top - 24, "text-anchor": "middle", class: "maggy-pc-name" });
    const arrow = axis.metric ? (axis.direction === "min" ? " ↓" : " ↑") : "";
    name.textContent = (axis.name.length > 16 ? `${axis.name.slice(0, 15)}…` : axis.name) + arrow;
    const kind = s("text", { x, y: PC.top - 12, "text-anchor": "middle", class: "maggy-axis maggy-pc-kind" });
    kind.textContent = axis.metric ? "metric" : axis.kind;
    g.append(name, kind);
    for (const tick of axisTicks(axis, 5)) {
      const t = s("text", { x: x + 5, y: y(tick.position) + 3.5, class: "maggy-axis maggy-pc-tick" });
      t.textContent = tick.label.length > 12 ? `${tick.label.slice(0, 11)}…` : tick.label;
      g.append(t);
    }
    const rect = s("rect", { x: x - 6, width: 12, y: PC.top, height: 0, class: "maggy-pc-brush", "data-axis": key, style: "display:none" });
    const hit = s("rect", { x: x - PC.hit / 2, width: PC.hit, y: PC.top - 2, height: plotH + 4, class: "maggy-pc-hit", "data-axis": key });
    hit.addEventListener("pointerdown", (event) => {
      event.preventDefault();
      hit.setPointerCapture(event.pointerId);
      const start = positionAt(event);
      let moved = false;
      const move = (e) => {
        const now = positionAt(e);
        if (!moved && Math.abs(now - start) * plotH < 3) return;
        moved = true;
        brushes[key] = brushFromPositions(axis, start, now);
        applyBrushes();
      };
      const up = () => {
        hit.removeEventListener("pointermove", move);
        hit.removeEventListener("pointerup", up);
        hit.removeEventListener("pointercancel", up);
        if (!moved) delete brushes[key];   // a click clears the axis's brush
        applyBrushes();
      };
      hit.addEventListener("pointermove", move);
      hit.addEventListener("pointerup", up);
      hit.addEventListener("pointercancel", up);
    });
    g.append(rect, hit);
    brushRects.set(key, [axis, rect]);
    return g;
  }

  function applyBrushes() {
    const axes = data.axes || [];
    const lines = data.lines || [];
    const selected = brushSelection(axes, lines, brushes);
    for (const [trial, path] of paths) path.classList.toggle("maggy-pc-dim", !selected.has(trial));
    for (const [key, [axis, rect]] of brushRects) {
      const brush = brushes[key];
      if (!brush) { rect.style.display = "none"; continue; }
      const [lo, hi] = brushPositions(axis, brush);
      rect.setAttribute("y", y(hi).toFixed(1));
      rect.setAttribute("height", Math.max(1, (hi - lo) * plotH).toFixed(1));
      rect.style.display = "";
    }
    const brushed = Object.keys(brushes).length > 0;
    clear.style.display = brushed ? "" : "none";
    const shown = data.note ? `${data.note} · ` : `${lines.length} trials · `;
    note.textContent = brushed
      ? `${shown}${selected.size} of ${lines.length} selected · `
      : `${shown}drag along an axis to select a range; click an axis to clear it`;
    svg.dataset.selected = String(selected.size);
  }

  function drawImportances(answer) {
    const bars = importanceBars(answer);
    impHead.textContent = bars.length
      ? `Parameter importance (${answer.method} · ${answer.trials} trials)` : "Parameter importance";
    impBody.replaceChildren(...bars.map((bar) => h("div", { class: "maggy-imp-row", "data-param": bar.name, title: `${bar.name}: ${bar.percent}` },
      h("span", { class: "maggy-imp-name", text: bar.name }),
      h("span", { class: "maggy-imp-track" }, h("span", { class: "maggy-imp-bar", style: `width:${(100 * bar.width).toFixed(1)}%` })),
      h("span", { class: "maggy-imp-value", text: bar.percent }))));
    impNote.textContent = answer
      ? (answer.note || (answer.of > answer.trials ? `an even spread of ${answer.trials} of ${answer.of} finished trials` : "share of the metric's variance each parameter explains"))
      : "computed as trials finish";
  }

  return { el, update };
}
