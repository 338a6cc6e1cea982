"""The live dashboard at scale, in Chromium: how long each update takes to be drawn with
10,000 trials done and 96 live curves.

The state is the real one: :class:`maggy_magic.ui.state.DashboardState` folds the events
of a synthetic run (``--trials`` finished trials over a 3-parameter space, then
``--live`` trials running, each adding ``--points`` metric points per update), and each
update is what its ``take()`` gives, as the widget would sync it. The shipped bundle
(``ui/static/dashboard.js``) draws it in Debian's chromium (Playwright, headless) on a
page served on 127.0.0.1, the widget model being a plain object; an update's time runs
from handing the changed parts to the bundle's change handlers to the end of the next
painted frame (two ``requestAnimationFrame`` callbacks), and the handlers' own script
time within it. Printed: p50 / p95 / max over ``--updates`` updates against the 50 ms
target, next to the floor (an update that changes nothing: the two frames alone) and
the Python side's ``take()`` per update.

Usage::

    PYTHONPATH=. python bench/dashboard_scale.py                 # 10,000 trials, 96 live
    PYTHONPATH=. python bench/dashboard_scale.py --trials 1000 --updates 30
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET_P95_MS = 50.0
CHROMIUM = os.environ.get("MAGGY_CHROMIUM", "/usr/bin/chromium")
PAGE = """<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="dashboard.css"></head><body><div id="root"></div>
<script type="module">
import widget from "./dashboard.js";
const data = await (await fetch("initial.json")).json();
const handlers = {};
const model = {get: (k) => data[k], on(name, fn) { (handlers[name] ||= []).push(fn); },
               off() {}, send() {}, set() {}, save_changes() {}};
widget.render({model, el: document.getElementById("root")});
const frame = () => new Promise((done) => requestAnimationFrame(() => done()));
window.applyUpdate = async (parts) => {
  const start = performance.now();
  for (const [key, value] of Object.entries(parts)) {
    data[key] = value;
    for (const fn of handlers[`change:${key}`] || []) fn();
  }
  const script = performance.now() - start;
  await frame(); await frame();
  return [script, performance.now() - start];
};
document.body.dataset.ready = "1";
</script></body></html>"""


def synthetic_run(trials: int, live: int, updates: int, points: int) -> tuple:
    """``(initial parts, [changed parts per update], [take() seconds])``."""
    from maggy_magic.ui.state import DashboardState

    rng = random.Random(0)
    state = DashboardState("scale")
    space = {"x": {"type": "DOUBLE", "range": [0.0, 1.0]},
             "lr": {"type": "DOUBLE", "range": [1e-4, 1e-1], "scale": "log"},
             "act": {"type": "CATEGORICAL", "values": ["relu", "tanh", "gelu"]}}
    seq = iter(range(10**9))

    def emit(event_type: str, **fields: Any) -> None:
        state.apply(dict(type=event_type, run="r", seq=next(seq), t=time.time(), **fields))

    emit("run_started", config={"searchspace": space, "optimization_key": "metric",
                                "direction": "max", "num_trials": trials + live},
         kind="hpo", name="scale", run_dir="/tmp/scale", resumed=False,
         backend={"backend": "local"})

    def params() -> Dict[str, Any]:
        return {"x": rng.random(), "lr": 10 ** rng.uniform(-4, -1),
                "act": rng.choice(["relu", "tanh", "gelu"])}

    for index in range(trials):
        trial, p = f"{index:05d}", params()
        emit("trial_started", trial=trial, params=p, worker=str(index % 96), budget=None,
             info={}, attempt=0)
        for step in range(5):
            emit("metric", trial=trial, step=step, value=p["x"] * (step + 1) / 5)
        emit("trial_finished", trial=trial, value=p["x"], metrics={}, state="FINISHED",
             duration=1.0)
    running = []
    for index in range(trials, trials + live):
        trial = f"{index:05d}"
        running.append([trial, 0])
        emit("trial_started", trial=trial, params=params(), worker=str(index % 96),
             budget=None, info={}, attempt=0)
    initial = state.take()
    changed, took = [], []
    for _ in range(updates):
        for entry in running:
            for _ in range(points):
                emit("metric", trial=entry[0], step=entry[1], value=rng.random())
                entry[1] += 1
        started = time.perf_counter()
        changed.append(state.take())
        took.append(time.perf_counter() - started)
    return initial, changed, took


def summary(values: List[float]) -> Dict[str, float]:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "max": ordered[-1], "n": len(ordered)}


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10000)
    parser.add_argument("--live", type=int, default=96)
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--points", type=int, default=5, help="per live curve per update")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from maggy_magic.ui import dashboard as dashboard_module

    initial, changed, took = synthetic_run(args.trials, args.live, args.updates, args.points)
    folder = tempfile.mkdtemp(prefix="dashboard-scale-")
    static = os.path.join(os.path.dirname(dashboard_module.__file__), "static")
    for name in ("dashboard.js", "dashboard.css"):
        shutil.copy(os.path.join(static, name), os.path.join(folder, name))
    with open(os.path.join(folder, "initial.json"), "w") as handle:
        json.dump(initial, handle)
    with open(os.path.join(folder, "index.html"), "w") as handle:
        handle.write(PAGE)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sizes = [len(json.dumps(parts)) for parts in changed]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
            page.wait_for_selector("body[data-ready='1']", timeout=60000)
            floor = [page.evaluate("(p) => window.applyUpdate(p)", {}) for _ in range(20)]
            drawn = [page.evaluate("(p) => window.applyUpdate(p)", parts) for parts in changed]
            browser.close()
    finally:
        server.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    fig = {"update_ms": summary([d[1] for d in drawn]),
           "script_ms": summary([d[0] for d in drawn]),
           "floor_ms": summary([f[1] for f in floor]),
           "take_ms": summary([t * 1000 for t in took]),
           "update_bytes": summary([float(s) for s in sizes])}
    up, fl, tk = fig["update_ms"], fig["floor_ms"], fig["take_ms"]
    print(f"{args.trials:,} trials done, {args.live} live curves, {args.points} points each "
          f"per update, {args.updates} updates")
    print(f"update drawn   p50 {up['p50']:6.1f} ms  p95 {up['p95']:6.1f} ms  max "
          f"{up['max']:6.1f} ms   (target p95 <= {TARGET_P95_MS:.0f} ms)")
    sc = fig["script_ms"]
    print(f"of which the handlers' script  p50 {sc['p50']:6.1f} ms  p95 {sc['p95']:6.1f} ms  "
          f"max {sc['max']:6.1f} ms")
    print(f"floor (2 frames, no change)  p50 {fl['p50']:6.1f} ms  p95 {fl['p95']:6.1f} ms")
    print(f"take() per update  p50 {tk['p50']:6.2f} ms  p95 {tk['p95']:6.2f} ms; update size "
          f"p50 {fig['update_bytes']['p50'] / 1024:.0f} KiB")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(fig, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
