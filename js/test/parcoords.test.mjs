// Unit tests of the parallel-coordinates functions (scaling, ticks, brushing): `node --test js/test`.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  axisCoordinate, axisKey, axisPosition, axisTicks, brushFromPositions, brushPositions,
  brushSelection, importanceBars, inBrush, metricShare, shadeColor,
} from "../state.js";

const linear = { name: "x", kind: "linear", domain: [0, 10], integer: false };
const log = { name: "lr", kind: "log", domain: [1e-4, 1e-1], integer: false };
const cat = { name: "act", kind: "categorical", categories: ["relu", "tanh", "gelu"] };
const metric = { name: "score", kind: "linear", domain: [0, 1], metric: true, direction: "max" };
const close = (a, b) => assert.ok(Math.abs(a - b) < 1e-9, `${a} != ${b}`);

test("a linear axis maps its domain onto 0..1 and clamps", () => {
  close(axisPosition(linear, 0), 0);
  close(axisPosition(linear, 2.5), 0.25);
  close(axisPosition(linear, 10), 1);
  close(axisPosition(linear, 12), 1);
  assert.equal(axisPosition(linear, null), null);
  assert.equal(axisPosition(linear, NaN), null);
  close(axisCoordinate(linear, 0.25), 2.5);
});

test("a log axis spaces decades evenly and has no place for values <= 0", () => {
  close(axisPosition(log, 1e-4), 0);
  close(axisPosition(log, 1e-3), 1 / 3);
  close(axisPosition(log, 1e-2), 2 / 3);
  close(axisPosition(log, 1e-1), 1);
  assert.equal(axisPosition(log, 0), null);
  assert.equal(axisPosition(log, -1), null);
  close(axisCoordinate(log, 1 / 3), 1e-3);
  const ticks = axisTicks(log);
  assert.deepEqual(ticks.map((t) => t.label), ["1.00e-4", "0.001", "0.01", "0.1"]);
  ticks.forEach((t, i) => close(t.position, i / 3));
});

test("a categorical axis puts each category in the middle of its band", () => {
  close(axisPosition(cat, 0), 1 / 6);
  close(axisPosition(cat, 1), 0.5);
  close(axisPosition(cat, 2), 5 / 6);
  assert.equal(axisPosition(cat, 3), null);
  assert.equal(axisPosition(cat, -1), null);
  assert.deepEqual(axisTicks(cat).map((t) => t.label), ["relu", "tanh", "gelu"]);
  close(axisCoordinate(cat, 0.5), 1); // the middle band's centre is index 1
  const many = { name: "c", kind: "categorical", categories: Array.from({ length: 40 }, (_, i) => `c${i}`) };
  assert.ok(axisTicks(many, 5).length <= 10);
});

test("linear ticks are round numbers inside the domain; integer axes get whole ones", () => {
  const ticks = axisTicks(linear, 5);
  assert.deepEqual(ticks.map((t) => t.label), ["0", "2", "4", "6", "8", "10"]);
  const ints = axisTicks({ name: "k", kind: "linear", domain: [1, 3], integer: true }, 5);
  assert.deepEqual(ints.map((t) => t.label), ["1", "2", "3"]);
});

test("a brush keeps the lines inside it on every brushed axis", () => {
  const axes = [linear, log, cat, metric];
  const lines = [
    { trial: "a", values: [1, 1e-4, 0, 0.1] },
    { trial: "b", values: [4, 1e-3, 1, 0.5] },
    { trial: "c", values: [9, 1e-2, 2, 0.9] },
    { trial: "d", values: [9, null, 1, 0.95] },
  ];
  assert.deepEqual([...brushSelection(axes, lines, {})], ["a", "b", "c", "d"]);
  // the upper half of x: c and d
  const upper = { [axisKey(linear)]: brushFromPositions(linear, 1, 0.5) };
  assert.deepEqual([...brushSelection(axes, lines, upper)], ["c", "d"]);
  // combined with lr above 1e-3 (d has no lr: a missing value is outside every brush)
  const both = { ...upper, [axisKey(log)]: brushFromPositions(log, 0.3, 1) };
  assert.deepEqual([...brushSelection(axes, lines, both)], ["c"]);
  // a brush over the middle category only
  const middle = { [axisKey(cat)]: brushFromPositions(cat, 0.4, 0.6) };
  assert.deepEqual([...brushSelection(axes, lines, middle)], ["b", "d"]);
  // on the metric axis, and a brush of an axis that is gone is ignored
  const best = { [axisKey(metric)]: brushFromPositions(metric, 0.8, 1), "param:gone": { lo: 0, hi: 0 } };
  assert.deepEqual([...brushSelection(axes, lines, best)], ["c", "d"]);
  assert.notEqual(axisKey(metric), axisKey({ ...metric, metric: false }));
});

test("a drag from near an axis end reaches the end", () => {
  const brush = brushFromPositions(metric, 0.99, 0.5);
  assert.equal(brush.hi, 1);
  assert.ok(inBrush(metric, brush, 1)); // the best value, drawn at the very top
  assert.equal(brushFromPositions(metric, 0.01, 0.5).lo, 0);
  assert.equal(brushFromPositions(metric, 0.9, 0.5, 0).hi, 0.9);
});

test("brush positions round-trip through the axis coordinates", () => {
  for (const axis of [linear, log]) {
    const brush = brushFromPositions(axis, 0.8, 0.2);
    const [lo, hi] = brushPositions(axis, brush);
    close(lo, 0.2);
    close(hi, 0.8);
    assert.ok(inBrush(axis, brush, axisCoordinate(axis, 0.5)));
    assert.ok(!inBrush(axis, brush, axisCoordinate(axis, 0.9)));
  }
  const [lo, hi] = brushPositions(cat, brushFromPositions(cat, 0.4, 0.6));
  close(lo, 0.4);
  close(hi, 0.6);
});

test("lines are shaded by how good their metric is, in either direction", () => {
  close(metricShare(metric, 0.9), 0.9);
  close(metricShare({ ...metric, direction: "min" }, 0.9), 0.1 + 0 * 1);
  assert.equal(shadeColor(0), "rgb(176,200,232)");
  assert.equal(shadeColor(1), "rgb(16,70,150)");
  assert.equal(shadeColor(2), shadeColor(1));
});

test("importance bars follow the kernel's order and shares", () => {
  const bars = importanceBars({ importances: [["x", 0.9], ["lr", 0.075], ["act", 0.025]] });
  assert.deepEqual(bars.map((b) => b.name), ["x", "lr", "act"]);
  assert.deepEqual(bars.map((b) => b.percent), ["90.0%", "7.5%", "2.5%"]);
  close(bars[0].width, 0.9);
  assert.deepEqual(importanceBars(null), []);
  assert.deepEqual(importanceBars({ importances: [], note: "too few" }), []);
});
