// Unit tests of the ablation chart's data: `node --test js/test`.
import { test } from "node:test";
import assert from "node:assert/strict";

import { ablationBars } from "../state.js";

const ablation = {
  base: { component: "base", kind: "base", trial: "0000", state: "FINISHED", value: 0.8, difference: 0 },
  components: [
    { component: "dropout", kind: "layer", trial: "0001", state: "FINISHED", value: 0.7, difference: -0.1 },
    { component: "hidden*", kind: "layer group", trial: "0002", state: "FINISHED", value: 0.85, difference: 0.05 },
    { component: "top", kind: "feature", trial: "0003", state: "RUNNING", value: null, difference: null },
  ],
  total: 3,
};

test("bars scale to the largest difference and mark what hurts the metric", () => {
  const { bars, scale, base } = ablationBars(ablation, "max");
  assert.equal(base.value, 0.8);
  assert.equal(scale, 0.1);
  assert.deepEqual(bars.map((b) => b.share), [-1, 0.5, null]);
  assert.deepEqual(bars.map((b) => b.worse), [true, false, null]);
});

test("for a metric to minimise, a higher value without the component is worse", () => {
  const { bars } = ablationBars(ablation, "min");
  assert.deepEqual(bars.map((b) => b.worse), [false, true, null]);
});

test("no ablation data gives no bars", () => {
  assert.deepEqual(ablationBars(undefined).bars, []);
  assert.equal(ablationBars({ components: [] }).scale, 1);
});
