// Pure state handling for the maggy-magic dashboard: no DOM, no widget model.
//
// Everything here takes plain data (the JSON the kernel syncs) and returns new plain
// data, so node's test runner checks it without a browser (js/test/state.test.mjs).

/** Sort keys the trial table understands; parameter columns are "param:<name>". */
export const COLUMNS = ["trial", "state", "step", "metric", "worker", "devices", "duration"];

/** Order of trial states in the table when sorted by state (live ones first). */
const STATE_ORDER = { RUNNING: 0, PENDING: 1, FINISHED: 2, EARLY_STOPPED: 3, FAILED: 4 };

/**
 * Compare two cell values: missing values (null, undefined, NaN) always sort last and
 * numbers before text, whatever the direction; numbers compare numerically, anything
 * else as strings. The kernel selects the rows
 * it sends with the same rule (maggy_magic/ui/state.py), so both sides agree.
 */
export function compareValues(a, b, desc = false) {
  const missingA = a === null || a === undefined || Number.isNaN(a);
  const missingB = b === null || b === undefined || Number.isNaN(b);
  if (missingA || missingB) return missingA === missingB ? 0 : missingA ? 1 : -1;
  const numA = typeof a === "number";
  if (numA !== (typeof b === "number")) return numA ? -1 : 1; // numbers before text
  let order;
  if (numA) order = a < b ? -1 : a > b ? 1 : 0;
  else {
    const sa = String(a);
    const sb = String(b);
    order = sa < sb ? -1 : sa > sb ? 1 : 0;
  }
  return desc ? -order : order;
}

/** The value of one table column for a row (see COLUMNS). */
export function cellValue(row, key) {
  if (key.startsWith("param:")) return (row.params || {})[key.slice(6)];
  if (key === "state") return STATE_ORDER[row.state] ?? 9;
  return row[key];
}

/** A new array of rows sorted by one column; ties keep trial-id order. */
export function sortRows(rows, key, desc = false) {
  return rows
    .map((row, index) => ({ row, index }))
    .sort((x, y) =>
      compareValues(cellValue(x.row, key), cellValue(y.row, key), desc) ||
      compareValues(x.row.trial, y.row.trial) || x.index - y.index)
    .map((item) => item.row);
}

/** The sort a header click asks for: same column flips, a new column starts ascending
 * (metric starts at the best value, i.e. descending when larger is better). */
export function nextSort(current, key, direction = "max") {
  if (current && current.key === key) return { key, desc: !current.desc };
  return { key, desc: key === "metric" ? direction === "max" : false };
}

/** Parameter names over all rows, in first-seen order. */
export function paramColumns(rows) {
  const seen = new Set();
  for (const row of rows) for (const name of Object.keys(row.params || {})) seen.add(name);
  return [...seen];
}

/**
 * The trial table's columns as [key, label] pairs: trial, its rank when the rows are the
 * ranks of a distributed run, state, one per hyperparameter, step, the metric (labelled
 * `metricLabel`), worker, the GPUs it runs on when the rows have any (`devices`, only in
 * runs that asked for GPUs) and duration.
 */
export function tableColumns(rows, metricLabel) {
  const ranked = rows.some((row) => row.rank !== undefined && row.rank !== null);
  const gpus = rows.some((row) => row.devices !== undefined && row.devices !== null);
  return [["trial", "trial"], ...(ranked ? [["rank", "rank"]] : []), ["state", "state"],
    ...paramColumns(rows).map((p) => [`param:${p}`, p]),
    ["step", "step"], ["metric", metricLabel || "metric"], ["worker", "worker"],
    ...(gpus ? [["devices", "devices"]] : []), ["duration", "duration"]];
}

/**
 * Merge a worker's synced log tail into the lines a pane already shows.
 *
 * `pane` is {total, lines} (null for a new pane); `update` is the kernel's
 * {total, lines}: the last lines of a stream of `total` lines. Lines the tail no longer
 * holds become one "… N lines not shown" marker. At most `maxLines` are kept.
 * Returns {total, lines, added} where `added` counts new lines (0: nothing to scroll).
 */
export function mergeLogTail(pane, update, maxLines = 500) {
  const known = pane ? pane.total : 0;
  let lines = pane ? pane.lines.slice() : [];
  if (!update || update.total <= known) return { total: known, lines, added: 0 };
  const fresh = update.total - known;
  const tail = update.lines || [];
  if (fresh > tail.length) {
    lines.push({ gap: fresh - tail.length });
    lines.push(...tail);
  } else {
    lines.push(...tail.slice(tail.length - fresh));
  }
  if (lines.length > maxLines) lines = lines.slice(lines.length - maxLines);
  return { total: update.total, lines, added: fresh };
}

/**
 * At most `maxPoints` points of a [step, value] curve, keeping its shape: the first and
 * last points and, per bucket of steps, the lowest and highest value in step order.
 */
export function downsample(points, maxPoints) {
  if (points.length <= maxPoints) return points.slice();
  if (maxPoints < 4) return [points[0], points[points.length - 1]].slice(0, Math.max(maxPoints, 0));
  const buckets = Math.floor((maxPoints - 2) / 2);
  const first = points[0];
  const last = points[points.length - 1];
  const inner = points.slice(1, -1);
  const span = inner.length / buckets;
  const out = [first];
  for (let b = 0; b < buckets; b++) {
    const chunk = inner.slice(Math.floor(b * span), Math.floor((b + 1) * span));
    if (!chunk.length) continue;
    let lo = chunk[0];
    let hi = chunk[0];
    for (const p of chunk) {
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
    if (lo === hi) out.push(lo);
    else if (lo[0] <= hi[0]) out.push(lo, hi);
    else out.push(hi, lo);
  }
  out.push(last);
  return out;
}

/** Step and value ranges over all curves (a flat range gets some height). */
export function curveExtent(curves) {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const curve of curves) {
    for (const [x, y] of curve.points) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
  }
  if (x0 === Infinity) return null;
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) {
    const pad = Math.abs(y0) * 0.05 || 1;
    y0 -= pad;
    y1 += pad;
  }
  return { x0, x1, y0, y1 };
}

/**
 * Round axis ticks inside [lo, hi]: multiples of 1, 2 or 5 times a power of ten, about
 * as close to `count` of them as such steps allow. Returns {step, values}.
 */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return { step: 1, values: [lo] };
  const raw = (hi - lo) / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const span = hi - lo;
  const closest = (a, b) => (Math.abs(span / a - count) <= Math.abs(span / b - count) ? a : b);
  const step = [1, 2, 5, 10].map((m) => m * power).reduce(closest);
  const values = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    values.push(Number(v.toFixed(12)));
  }
  return { step, values };
}

/** A tick label with as many decimals as the tick step needs. */
export function formatTick(value, step) {
  const decimals = Math.max(0, Math.min(10, -Math.floor(Math.log10(step) + 1e-9)));
  const abs = Math.abs(value);
  if (abs !== 0 && (abs >= 1e6 || abs < 1e-4)) return value.toExponential(1);
  return value.toFixed(decimals);
}

/** Percent widths of the progress bar's segments, in drawing order. */
export function progressSegments(status) {
  const c = status.counts || {};
  const done = (c.finished || 0) + (c.early_stopped || 0) + (c.failed || 0);
  const total = Math.max(status.num_trials || 0, done + (c.running || 0), 1);
  const pct = (n) => (100 * (n || 0)) / total;
  return [
    { name: "finished", width: pct(c.finished) },
    { name: "early_stopped", width: pct(c.early_stopped) },
    { name: "failed", width: pct(c.failed) },
    { name: "running", width: pct(c.running) },
  ];
}

/**
 * Seconds since the run started, on the kernel's clock. `status.now` is the kernel's
 * time when it sent the status and `receivedAt` the browser's time (ms) when it
 * arrived, so clocks that disagree do not matter.
 */
export function elapsedSeconds(status, receivedAt, nowMs) {
  if (!status.started) return 0;
  if (status.ended) return Math.max(0, status.ended - status.started);
  const kernelNow = (status.now || status.started) + Math.max(0, nowMs - receivedAt) / 1000;
  return Math.max(0, kernelNow - status.started);
}

/** "1:02:03", "2:03", "0:04". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** A trial's duration: "0.8 s" and "12.3 s" below a minute, else as formatDuration. */
export function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  return seconds < 60 ? `${seconds.toFixed(1)} s` : formatDuration(seconds);
}

/** A short, readable number: 4 significant digits, exponent form for extremes. */
export function formatValue(value) {
  if (value === null || value === undefined) return "";
  if (typeof value !== "number") return String(value);
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
  return String(Number(value.toPrecision(4)));
}

/** "lr=0.01, hidden=12". */
export function formatParams(params) {
  return Object.entries(params || {}).map(([k, v]) => `${k}=${formatValue(v)}`).join(", ");
}

/**
 * The bars of an ablation study's chart from `status.ablation` (the kernel's
 * DashboardState.ablation_payload): one per component, its difference from the base as
 * a share (-1..1) of the largest one, and whether leaving the component out made the
 * metric worse under `direction`. Components without a difference yet (running,
 * failed, no base) get `share: null`.
 */
export function ablationBars(ablation, direction = "max") {
  const components = (ablation && ablation.components) || [];
  const diffs = components.map((c) => c.difference).filter((d) => typeof d === "number" && Number.isFinite(d));
  const scale = Math.max(0, ...diffs.map(Math.abs)) || 1;
  return {
    base: (ablation && ablation.base) || null,
    scale,
    bars: components.map((c) => {
      const known = typeof c.difference === "number" && Number.isFinite(c.difference);
      return {
        ...c,
        share: known ? c.difference / scale : null,
        worse: known ? (direction === "min" ? c.difference > 0 : c.difference < 0) : null,
      };
    }),
  };
}

// -- parallel coordinates ------------------------------------------------------------------
// Axes come from the kernel (maggy_magic/ui/parcoords.py): {name, kind, ...} with kind
// "linear" or "log" ({domain: [lo, hi], integer}) or "categorical" ({categories: [labels]});
// the last one is the metric's ({metric: true, direction}). A line's value on a numeric
// axis is the number itself, on a categorical one the category's index, null when missing.

/** Where a value lies along an axis: 0 (bottom) .. 1 (top); null when it has no place. */
export function axisPosition(axis, value) {
  if (value === null || value === undefined || typeof value !== "number" || !Number.isFinite(value)) return null;
  if (axis.kind === "categorical") {
    const n = (axis.categories || []).length;
    return n && value >= 0 && value < n ? (value + 0.5) / n : null;
  }
  let [lo, hi] = axis.domain;
  let v = value;
  if (axis.kind === "log") {
    if (v <= 0 || lo <= 0) return null;
    [lo, hi, v] = [Math.log(lo), Math.log(hi), Math.log(v)];
  }
  if (!(hi > lo)) return 0.5;
  return Math.min(1, Math.max(0, (v - lo) / (hi - lo)));
}

/** The axis coordinate at a position (axisPosition's inverse): a number on numeric axes,
 * a fractional category index on categorical ones. */
export function axisCoordinate(axis, position) {
  const p = Math.min(1, Math.max(0, position));
  if (axis.kind === "categorical") return p * (axis.categories || []).length - 0.5;
  const [lo, hi] = axis.domain;
  if (axis.kind === "log") return Math.exp(Math.log(lo) + p * (Math.log(hi) - Math.log(lo)));
  return lo + p * (hi - lo);
}

/**
 * An axis's ticks as [{position, label}]: every category (every k-th past `count` * 2),
 * powers of ten on a log axis spanning two decades or more (else round values between
 * its ends), round values on a linear one (whole numbers only on integer axes).
 */
export function axisTicks(axis, count = 5) {
  if (axis.kind === "categorical") {
    const labels = axis.categories || [];
    const every = Math.max(1, Math.ceil(labels.length / (count * 2)));
    return labels.map((label, i) => ({ position: (i + 0.5) / labels.length, label, i }))
      .filter((t) => t.i % every === 0).map(({ position, label }) => ({ position, label }));
  }
  const [lo, hi] = axis.domain;
  let values;
  let step;
  if (axis.kind === "log") {
    const first = Math.ceil(Math.log10(lo) - 1e-9);
    const last = Math.floor(Math.log10(hi) + 1e-9);
    if (last - first >= 1) {
      const every = Math.max(1, Math.ceil((last - first + 1) / count));
      values = [];
      for (let k = first; k <= last; k += every) values.push(10 ** k);
      return values.map((v) => ({ position: axisPosition(axis, v), label: formatValue(Number(v.toPrecision(1))) }));
    }
  }
  ({ step, values } = niceTicks(lo, hi, count));
  if (axis.integer) {
    values = values.filter((v) => Number.isInteger(v));
    step = Math.max(1, step);
  }
  return values.map((v) => ({ position: axisPosition(axis, v), label: formatTick(v, step) }));
}

/** A brush dragged from position p0 to p1 on an axis: {lo, hi} in axis coordinates.
 * A drag that starts or ends within `snap` of an axis end reaches that end, so the values
 * drawn right at the end (the best one, often) are inside it. */
export function brushFromPositions(axis, p0, p1, snap = 0.02) {
  const near = (p) => (p >= 1 - snap ? 1 : p <= snap ? 0 : p);
  const [a, b] = [axisCoordinate(axis, near(p0)), axisCoordinate(axis, near(p1))];
  return { lo: Math.min(a, b), hi: Math.max(a, b) };
}

/** The positions [bottom, top] a brush covers on its axis (for drawing it). */
export function brushPositions(axis, brush) {
  if (axis.kind === "categorical") {
    const n = (axis.categories || []).length || 1;
    return [(brush.lo + 0.5) / n, (brush.hi + 0.5) / n].map((p) => Math.min(1, Math.max(0, p)));
  }
  return [axisPosition(axis, brush.lo) ?? 0, axisPosition(axis, brush.hi) ?? 1];
}

/** Whether a line's value on an axis lies inside the brush (missing values never do). */
export function inBrush(axis, brush, value) {
  if (axisPosition(axis, value) === null) return false;
  return value >= brush.lo && value <= brush.hi;
}

/** The key a brush is kept under: stable while axes come and go. */
export function axisKey(axis) {
  return `${axis.metric ? "metric" : "param"}:${axis.name}`;
}

/**
 * The trials of `lines` ([{trial, values}]) inside every brush (`brushes`: {axisKey:
 * {lo, hi}}; brushes of axes not in `axes` are ignored), as a Set of trial ids. Without
 * brushes every line is selected.
 */
export function brushSelection(axes, lines, brushes) {
  const active = axes.map((axis, i) => [i, axis, brushes[axisKey(axis)]]).filter(([, , b]) => b);
  const out = new Set();
  for (const line of lines) {
    if (active.every(([i, axis, brush]) => inBrush(axis, brush, line.values[i]))) out.add(line.trial);
  }
  return out;
}

/** How good a metric value is on the metric axis: 0 (worst drawn) .. 1 (best drawn). */
export function metricShare(axis, value) {
  const p = axisPosition(axis, value);
  if (p === null) return 0;
  return axis.direction === "min" ? 1 - p : p;
}

/** A line's colour for a goodness share: light (worst) to dark blue (best). */
export function shadeColor(share) {
  const low = [176, 200, 232];
  const high = [16, 70, 150];
  const t = Math.min(1, Math.max(0, share));
  const rgb = low.map((a, i) => Math.round(a + (high[i] - a) * t));
  return `rgb(${rgb.join(",")})`;
}

/** The importance bars from the kernel's answer (maggy_magic/ui/importance.py):
 * [{name, share, width, percent}] most important first; `width` is the share (0..1)
 * clamped, as the shares of all parameters add up to one. */
export function importanceBars(answer) {
  const items = (answer && answer.importances) || [];
  return items.map(([name, share]) => ({
    name, share, width: Math.min(1, Math.max(0, share)), percent: `${(100 * share).toFixed(1)}%`,
  }));
}
