"""Asynchronous trials on long-running Spark tasks vs bulk-synchronous Spark stages.

The same workload runs twice on the same cluster, in the same process:

* **async** - maggy_magic's spark backend: one long-running task per task slot; a worker
  pulls the next trial the moment its last one ends; the driver's median rule stops
  trials as their metrics stream in.
* **sync** - what plain Spark does without long-running tasks: trials go out in batches of
  ``W`` (the task slots), one Spark stage per batch, and the next batch starts when the
  slowest trial of the stage ends. The same median rule runs inside each task against the
  curves of the trials finished in earlier stages (all a stage boundary can tell it).

Workload: ``N`` trials; trial ``i`` has a quality ``q_i ~ U(0, 1)`` and a duration
``d_i ~ LogNormal(ln(median), sigma)`` seconds, run as ``d_i / STEP`` steps of ``STEP`` s
(a sleep), each broadcasting ``q_i * (1 - exp(-(k + 1) / 10))``. Median early stopping
(Golovin et al.) after ``ES_MIN`` trials have ended. Both systems get the identical list.

Printed per system: wall time (first trial submitted to last result back), executor busy
fraction (time inside trial functions / (W x that span)), the work actually executed, and
the theoretical minimum wall time for that work (perfect packing, zero overhead:
``max(work / W, longest trial)``). Targets: async wall >= 30 % below sync, async busy >= 90 %.

Usage::

    PYTHONPATH=. python bench/async_vs_sync.py             # full run (~2 min on 2 cores)
    PYTHONPATH=. python bench/async_vs_sync.py --quick     # CI smoke run (< 60 s)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clusters  # noqa: E402  (this folder's helper: --master or --netcluster)

STEP = 0.05
ES_MIN = 4
TARGET_LESS_WALL = 0.30
TARGET_BUSY = 0.90


def workload(n: int, median: float, sigma: float, seed: int) -> List[Dict[str, float]]:
    """``n`` trials: quality and duration (seconds), reproducible from ``seed``."""
    rng = random.Random(seed)
    return [{"q": rng.random(), "d": median * math.exp(rng.gauss(0.0, sigma))}
            for _ in range(n)]


def curve(q: float, step: int) -> float:
    return q * (1.0 - math.exp(-(step + 1) / 10.0))


def execute(spec: Dict[str, float], broadcast: Callable[[float, int], bool]) -> Dict[str, Any]:
    """Run one trial; ``broadcast(value, step)`` returns True when the trial must stop.

    Returns the trial's entry/exit times (unix), its curve and whether it was stopped."""
    t_in = time.time()
    values: List[float] = []
    stopped = False
    for step in range(max(1, round(spec["d"] / STEP))):
        time.sleep(STEP)
        values.append(curve(spec["q"], step))
        if broadcast(values[-1], step):
            stopped = True
            break
    return {"t_in": t_in, "t_out": time.time(), "curve": values, "stopped": stopped}


def median_rule(history: List[List[float]], es_min: int) -> Callable[[float, int], bool]:
    """The median stopping rule against finished curves (the sync baseline's view)."""
    def should_stop(value: float, step: int) -> bool:
        if len(history) < es_min:
            return False
        peers = [max(c[:step + 1]) for c in history if len(c) > step]
        return bool(peers) and value < statistics.median(peers)

    return should_stop


# -- async: maggy_magic's spark backend ---------------------------------------------------
def run_async(specs: List[Dict[str, float]], workers: int, root: str) -> Dict[str, Any]:
    from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
    from maggy_magic.errors import EarlyStopException

    def train(i, reporter):
        record: Dict[str, Any] = {}

        def broadcast(value: float, step: int) -> bool:
            try:
                reporter.broadcast(value, step)
            except EarlyStopException:
                return True
            return False

        try:
            record = execute(specs[i], broadcast)
        finally:
            reporter.log(json.dumps({"span": [record.get("t_in"), record.get("t_out")]}))
        if record["stopped"]:
            raise EarlyStopException(record["curve"][-1])
        return record["curve"][-1]

    spans: Dict[str, List[float]] = {}

    def collect(event: dict) -> None:
        if event["type"] == "log":
            for line in event["lines"]:
                if line.startswith('{"span"'):
                    spans[event["trial"]] = json.loads(line)["span"]

    config = HyperparameterOptConfig(
        num_trials=len(specs), optimizer="gridsearch",
        searchspace=Searchspace(i=("DISCRETE", list(range(len(specs))))),
        es_policy="median", es_min=ES_MIN, es_interval=0.1, hb_interval=0.1,
        direction="max", workers=workers, backend="spark", name="async", root=root)
    t0 = time.time()
    result = experiment.lagom(train, config, listeners=[collect])
    wall = time.time() - t0
    if result.state != "finished" or len(spans) != len(specs):
        raise RuntimeError(f"the async run did not finish cleanly: {result!r}")
    stopped = sum(t["state"] == "EARLY_STOPPED" for t in result.trial_records)
    return summarize("async (maggy spark backend)", list(spans.values()), workers, wall,
                     stopped)


# -- sync: one Spark stage per batch of trials ---------------------------------------------
def run_sync(sc, specs: List[Dict[str, float]], workers: int) -> Dict[str, Any]:
    history: List[List[float]] = []
    spans: List[List[float]] = []
    stopped = 0
    t0 = time.time()
    for start in range(0, len(specs), workers):
        batch = specs[start:start + workers]
        rule = median_rule(list(history), ES_MIN)
        records = sc.parallelize(batch, len(batch)).map(
            lambda spec, rule=rule: execute(spec, rule)).collect()
        for record in records:
            history.append(record["curve"])
            spans.append([record["t_in"], record["t_out"]])
            stopped += record["stopped"]
    wall = time.time() - t0
    return summarize("sync (one Spark stage per batch)", spans, workers, wall, stopped)


def summarize(label: str, spans: List[List[float]], workers: int, wall: float,
              stopped: int) -> Dict[str, Any]:
    work = sum(b - a for a, b in spans)
    span = max(b for _, b in spans) - min(a for a, _ in spans)
    longest = max(b - a for a, b in spans)
    return {"label": label, "wall": wall, "span": span, "work": work, "trials": len(spans),
            "early_stopped": stopped, "busy": work / (workers * span),
            "busy_wall": work / (workers * wall), "ideal": max(work / workers, longest)}


# -- the benchmark -------------------------------------------------------------------------
def main(argv: Optional[List[str]] = None, spark=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke run (< 60 s)")
    clusters.add_arguments(parser)
    parser.add_argument("--trials", type=int, help="default 40; quick 14")
    parser.add_argument("--median", type=float, help="median trial duration, s (default 0.6; "
                                                      "quick 0.4)")
    parser.add_argument("--sigma", type=float, default=1.0, help="log-normal sigma (1.0)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    n = args.trials or (14 if args.quick else 40)
    median = args.median or (0.4 if args.quick else 0.6)

    t_start = time.perf_counter()
    close = None
    if spark is None:
        spark, close = clusters.open_session(args)
    try:
        return _run(args, spark.sparkContext, n, median, t_start)
    finally:
        if close is not None:
            close()


def _run(args: argparse.Namespace, sc: Any, n: int, median: float, t_start: float) -> int:
    import pyspark

    import maggy_magic
    from maggy_magic.backends.spark.context import task_slots

    workers = task_slots(sc)
    specs = workload(n, median, args.sigma, args.seed)
    root = tempfile.mkdtemp(prefix="maggy-async-bench-")
    p = print
    p(f"Async vs bulk-synchronous trials on Spark ({'quick' if args.quick else 'full'} mode)")
    p(f"Python {platform.python_version()} | pyspark {pyspark.__version__} | maggy_magic "
      f"{maggy_magic.__version__} | CPUs {os.cpu_count()} | master {sc.master} | {workers} "
      "task slots")
    p(f"workload: {n} trials, durations LogNormal(median {median} s, sigma {args.sigma}) in "
      f"{STEP} s steps (total {sum(s['d'] for s in specs):.1f} s if none stopped), median "
      f"early stopping after {ES_MIN} trials, seed {args.seed}")
    load = os.getloadavg()
    p(f"load average before start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
      + ("  (other processes use the CPUs: figures are noisy)" if load[0] > 1.0 else ""))
    try:
        # warm-up: zip shipping and Python workers for both systems; not reported
        warm = workload(workers, 0.05, 0.0, 0)
        run_async(warm, workers, root)
        run_sync(sc, warm, workers)
        a = run_async(specs, workers, root)
        s = run_sync(sc, specs, workers)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    less = 1.0 - a["wall"] / s["wall"]
    p()
    p(f"  {'system':<36}{'wall s':>8}{'ideal s':>9}{'wall/ideal':>11}{'busy':>7}"
      f"{'busy(wall)':>11}{'work s':>8}{'stopped':>9}")
    for r in (a, s):
        p(f"  {r['label']:<36}{r['wall']:>8.2f}{r['ideal']:>9.2f}{r['wall'] / r['ideal']:>11.2f}"
          f"{r['busy']:>7.0%}{r['busy_wall']:>11.0%}{r['work']:>8.1f}"
          f"{r['early_stopped']:>5}/{r['trials']:<3}")
    p(f"  async wall time is {less:.0%} below sync (target >= {TARGET_LESS_WALL:.0%}: "
      f"{'PASS' if less >= TARGET_LESS_WALL else 'MISS'}); async busy {a['busy']:.0%} "
      f"(target >= {TARGET_BUSY:.0%}: {'PASS' if a['busy'] >= TARGET_BUSY else 'MISS'}); "
      f"sync busy {s['busy']:.0%}")
    p("  busy = time inside trial functions / (slots x first trial start→last trial end); "
      "busy(wall) uses the whole wall time instead; ideal = max(work / slots, longest trial)")
    p(f"  total benchmark time {time.perf_counter() - t_start:.1f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"async": a, "sync": s, "less_wall": less, "workers": workers}, handle,
                      indent=2)
    missed = less < TARGET_LESS_WALL or a["busy"] < TARGET_BUSY
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
