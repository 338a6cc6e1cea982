"""What the live dashboard costs the driver's thread, per event, against folding it alone.

The same synthetic events of a 10,000-trial run (the driver's schema and order: 8
workers, 20 metric steps and one log event per trial, every 13th trial failed) go to

* **fold** - a bare :class:`~maggy_magic.ui.state.DashboardState` behind a lock: the least
  any listener that keeps a view state must do (the theoretical minimum, ratio 1.0);
* **dashboard** - a :class:`~maggy_magic.ui.dashboard.Dashboard` (its flusher thread syncs
  the widget every ``interval`` seconds meanwhile, outside a kernel: no comm).

Printed per side: the median over ``--rounds`` alternating rounds (fold, dashboard, fold...)
of microseconds per event, so load from other processes hits both alike; then the ratio,
and the slowest single call of the dashboard's listener against its slowest sync (a call
can wait for at most one payload build, never for a widget write).

Usage::

    PYTHONPATH=. python bench/dashboard_listener.py             # 5 rounds, ~30 s
    PYTHONPATH=. python bench/dashboard_listener.py --quick     # 2 rounds of 2,000 trials
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from typing import Dict, Iterator, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from maggy_magic.ui.dashboard import Dashboard  # noqa: E402
from maggy_magic.ui.state import DashboardState  # noqa: E402


def synthetic_run(n_trials: int, workers: int = 8, steps: int = 20) -> Iterator[Dict]:
    seq = iter(range(10 ** 9))

    def ev(type_: str, t: float, **fields) -> Dict:
        return dict(type=type_, run="r", seq=next(seq), t=1e6 + t, **fields)

    yield ev("run_started", 0, config={"num_trials": n_trials, "direction": "max",
                                       "optimization_key": "acc"},
             kind="hpo", name="bench", run_dir="/tmp/x", resumed=False)
    for w in range(workers):
        yield ev("worker_joined", 0, worker=str(w), host="h", pid=w)
    for i in range(n_trials):
        trial, worker, t = f"{i:05d}", str(i % workers), i * 0.01
        x = ((i * 7919) % 10007) / 10007
        yield ev("trial_started", t, trial=trial, params={"x": x, "layers": i % 5},
                 worker=worker, budget=None, info={}, attempt=0)
        for step in range(steps):
            yield ev("metric", t, trial=trial, step=step, value=x * (step + 1) / steps)
        yield ev("log", t, worker=worker, trial=trial,
                 lines=[f"trial {trial} line {k} " + "x" * 50 for k in range(2)])
        if i % 13 == 0:
            yield ev("trial_failed", t, trial=trial, error="boom", error_type="ValueError",
                     traceback="...", duration=0.5)
        else:
            yield ev("trial_finished", t, trial=trial, value=x, metrics={}, state="FINISHED",
                     duration=0.5)
    yield ev("run_finished", n_trials * 0.01, state="finished", best=None, error=None,
             counts={})


def fold(events: List[Dict]) -> float:
    state, lock = DashboardState("bench"), threading.Lock()
    start = time.perf_counter()
    for event in events:
        with lock:
            state.apply(event)
    return (time.perf_counter() - start) / len(events)


def dashboard(events: List[Dict]) -> Tuple[float, float, float]:
    """(seconds per event, slowest call, slowest sync)."""
    dash = Dashboard("bench", on_stop=lambda: None)
    slowest_sync = [0.0]
    real_sync = dash._sync

    def timed_sync() -> None:
        t = time.perf_counter()
        real_sync()
        slowest_sync[0] = max(slowest_sync[0], time.perf_counter() - t)

    dash._sync = timed_sync
    slowest, start = 0.0, time.perf_counter()
    for event in events:
        t = time.perf_counter()
        dash(event)
        slowest = max(slowest, time.perf_counter() - t)
    per_event = (time.perf_counter() - start) / len(events)
    dash.close()
    return per_event, slowest, slowest_sync[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2,000 trials")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.rounds = 2_000, 2
    events = list(synthetic_run(args.trials))
    print(f"load average {os.getloadavg()[0]:.2f}; {len(events)} events per round, "
          f"{args.rounds} rounds")
    folds, dashes, calls, syncs = [], [], [], []
    for _ in range(args.rounds):
        folds.append(fold(events))
        per_event, slowest, slowest_sync = dashboard(events)
        dashes.append(per_event)
        calls.append(slowest)
        syncs.append(slowest_sync)
    f, d = statistics.median(folds), statistics.median(dashes)
    print(f"fold alone     {f * 1e6:7.2f} us/event")
    print(f"dashboard      {d * 1e6:7.2f} us/event   ratio {d / f:.2f} (ideal 1.00)")
    print(f"slowest call   {max(calls) * 1e3:7.2f} ms   slowest sync {max(syncs) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
