// Unit tests of the dashboard's pure state handling: `node --test js/test`.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  compareValues, curveExtent, downsample, elapsedSeconds, formatDuration, formatParams,
  formatSeconds, formatTick, formatValue, mergeLogTail, nextSort, niceTicks, paramColumns,
  progressSegments, sortRows, tableColumns,
} from "../state.js";
import { bundle } from "../build.mjs";

const rows = [
  { trial: "0000", state: "FINISHED", metric: 0.5, step: 9, params: { lr: 0.1 }, duration: 3 },
  { trial: "0001", state: "RUNNING", metric: null, step: null, params: { lr: 0.01 }, duration: 1 },
  { trial: "0002", state: "FAILED", metric: 0.9, step: 2, params: { lr: 0.3 }, duration: 2 },
  { trial: "0003", state: "EARLY_STOPPED", metric: 0.5, step: 4, params: { lr: 0.2, wd: 1 }, duration: 2 },
];
const ids = (list) => list.map((r) => r.trial);

test("missing values sort last in both directions", () => {
  assert.deepEqual(ids(sortRows(rows, "metric")), ["0000", "0003", "0002", "0001"]);
  assert.deepEqual(ids(sortRows(rows, "metric", true)), ["0002", "0000", "0003", "0001"]);
  assert.equal(compareValues(null, 1), 1);
  assert.equal(compareValues(1, undefined, true), -1);
  assert.equal(compareValues(NaN, NaN), 0);
});

test("ties keep trial order; numbers compare as numbers", () => {
  assert.deepEqual(ids(sortRows(rows, "duration")), ["0001", "0002", "0003", "0000"]);
  assert.equal(compareValues(9, 10), -1); // not "9" > "10"
  assert.equal(compareValues("b", "a"), 1);
});

test("state sorts live trials first; params sort by their value", () => {
  assert.deepEqual(ids(sortRows(rows, "state")), ["0001", "0000", "0003", "0002"]);
  assert.deepEqual(ids(sortRows(rows, "param:lr", true)), ["0002", "0003", "0000", "0001"]);
  assert.deepEqual(ids(sortRows(rows, "param:wd")), ["0003", "0000", "0001", "0002"]);
  assert.deepEqual(paramColumns(rows), ["lr", "wd"]);
});

test("sortRows does not change its input", () => {
  const before = ids(rows);
  sortRows(rows, "metric", true);
  assert.deepEqual(ids(rows), before);
});

test("a header click flips the same column and starts metric at the best value", () => {
  assert.deepEqual(nextSort({ key: "trial", desc: true }, "trial"), { key: "trial", desc: false });
  assert.deepEqual(nextSort({ key: "trial", desc: true }, "metric", "max"), { key: "metric", desc: true });
  assert.deepEqual(nextSort({ key: "trial", desc: true }, "metric", "min"), { key: "metric", desc: false });
  assert.deepEqual(nextSort(null, "step"), { key: "step", desc: false });
});

test("merging log tails appends only new lines", () => {
  let pane = mergeLogTail(null, { total: 2, lines: [["0", "a"], ["0", "b"]] });
  assert.deepEqual(pane, { total: 2, lines: [["0", "a"], ["0", "b"]], added: 2 });
  pane = mergeLogTail(pane, { total: 3, lines: [["0", "a"], ["0", "b"], ["1", "c"]] });
  assert.deepEqual(pane.lines.map((l) => l[1]), ["a", "b", "c"]);
  assert.equal(pane.added, 1);
  const same = mergeLogTail(pane, { total: 3, lines: [["1", "c"]] });
  assert.equal(same.added, 0);
  assert.equal(same.lines.length, 3);
});

test("lines the tail lost become one gap marker; panes stay bounded", () => {
  const pane = mergeLogTail({ total: 1, lines: [["0", "a"]] }, { total: 10, lines: [["0", "i"], ["0", "j"]] });
  assert.deepEqual(pane.lines, [["0", "a"], { gap: 7 }, ["0", "i"], ["0", "j"]]);
  const many = Array.from({ length: 50 }, (_, i) => ["0", String(i)]);
  const capped = mergeLogTail(null, { total: 50, lines: many }, 20);
  assert.equal(capped.lines.length, 20);
  assert.equal(capped.lines[19][1], "49");
});

test("downsampling keeps ends, extremes and step order within the budget", () => {
  const points = Array.from({ length: 1000 }, (_, i) => [i, Math.sin(i / 50) + (i === 500 ? 5 : 0)]);
  const out = downsample(points, 60);
  assert.ok(out.length <= 60, `${out.length} points`);
  assert.deepEqual(out[0], points[0]);
  assert.deepEqual(out[out.length - 1], points[999]);
  assert.ok(out.some((p) => p[0] === 500), "the spike survives");
  for (let i = 1; i < out.length; i++) assert.ok(out[i][0] > out[i - 1][0], "steps increase");
  assert.deepEqual(downsample(points.slice(0, 5), 60), points.slice(0, 5));
  assert.equal(downsample(points, 2).length, 2);
});

test("curve extent covers all points and never collapses", () => {
  assert.equal(curveExtent([]), null);
  assert.deepEqual(curveExtent([{ points: [[0, 1], [4, 3]] }, { points: [[2, -1]] }]), { x0: 0, x1: 4, y0: -1, y1: 3 });
  const flat = curveExtent([{ points: [[3, 2]] }]);
  assert.ok(flat.x1 > flat.x0 && flat.y1 > flat.y0);
});

test("progress segments are shares of the requested trials", () => {
  const segs = progressSegments({ num_trials: 10, counts: { finished: 4, early_stopped: 1, failed: 1, running: 2 } });
  assert.deepEqual(segs.map((x) => [x.name, x.width]), [["finished", 40], ["early_stopped", 10], ["failed", 10], ["running", 20]]);
  const unknown = progressSegments({ counts: { finished: 3, running: 1 } });
  assert.equal(unknown[0].width, 75);
});

test("elapsed time runs on the kernel's clock", () => {
  const status = { started: 1000, now: 1010 };
  assert.equal(elapsedSeconds(status, 5000, 7000), 12);
  assert.equal(elapsedSeconds({ started: 1000, ended: 1042, now: 1100 }, 0, 99999), 42);
  assert.equal(elapsedSeconds({}, 0, 1), 0);
});

test("axis ticks are round numbers inside the range", () => {
  assert.deepEqual(niceTicks(0.0026, 0.862, 4), { step: 0.2, values: [0.2, 0.4, 0.6, 0.8] });
  assert.deepEqual(niceTicks(0, 9, 2).values, [0, 5]);
  assert.deepEqual(niceTicks(0, 9, 4).values, [0, 2, 4, 6, 8]);
  assert.deepEqual(niceTicks(-3, 3, 3).values, [-2, 0, 2]);
  assert.deepEqual(niceTicks(5, 5).values, [5]);
  assert.equal(formatTick(0.2, 0.2), "0.2");
  assert.equal(formatTick(0.25, 0.05), "0.25");
  assert.equal(formatTick(200, 100), "200");
  assert.equal(formatTick(0, 0.001), "0.000");
});

test("formatting", () => {
  assert.equal(formatSeconds(0.84), "0.8 s");
  assert.equal(formatSeconds(75), "1:15");
  assert.equal(formatDuration(62.7), "1:02");
  assert.equal(formatDuration(3723), "1:02:03");
  assert.equal(formatDuration(null), "");
  assert.equal(formatValue(0.123456), "0.1235");
  assert.equal(formatValue(12), "12");
  assert.equal(formatValue(1e-5), "1.00e-5");
  assert.equal(formatValue(null), "");
  assert.equal(formatParams({ lr: 0.5, act: "relu" }), "lr=0.5, act=relu");
});

test("the bundle is one module with no imports left", () => {
  const { "dashboard.js": js } = bundle();
  assert.ok(!/^import /m.test(js));
  assert.ok(js.includes("export default { render }"));
  assert.ok(!/^export (const|function) /m.test(js));
});

test("the ranks of a distributed run get a rank column after the trial", () => {
  const ranks = [{ trial: "0000", rank: 0, params: { lr: 0.1 } },
    { trial: "0001", rank: 1, params: { lr: 0.1 } }];
  assert.deepEqual(tableColumns(ranks, "loss").map(([key]) => key),
    ["trial", "rank", "state", "param:lr", "step", "metric", "worker", "duration"]);
  assert.equal(tableColumns(ranks, "loss")[5][1], "loss");
  assert.deepEqual(tableColumns(rows).slice(0, 2).map(([key]) => key), ["trial", "state"]);
});

test("a devices column only when the rows ran on GPUs", () => {
  assert.ok(!tableColumns(rows).some(([key]) => key === "devices"));
  const gpus = [{ trial: "0000", devices: "0", params: {} }, { trial: "0001", devices: "1", params: {} }];
  assert.deepEqual(tableColumns(gpus).map(([key]) => key),
    ["trial", "state", "step", "metric", "worker", "devices", "duration"]);
  assert.deepEqual(ids(sortRows(gpus, "devices", true)), ["0001", "0000"]);
});
