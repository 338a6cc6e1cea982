"""Per-suggestion cost of maggy_magic's ``tpe`` / ``gp`` optimizers vs raw Optuna ask/tell.

For each history size ``n`` (default 50, 200, 400 finished trials) and each sampler, the
same history (a quadratic over a 4-parameter space: log-scaled DOUBLE, DOUBLE, INTEGER,
CATEGORICAL) is loaded into

* **raw** - an in-memory Optuna study with the sampler configured as ours uses it
  (``TPESampler(constant_liar=True)`` / ``GPSampler``), ``W - 1`` trials left RUNNING;
  timed: ``study.ask()`` + the four ``suggest_*`` calls + ``study.tell()``;
* **ours** - the optimizer fed the same history through its ``trial_store`` /
  ``final_store`` with ``W - 1`` trials running; timed: ``get_suggestion()`` + the end of
  that trial reaching ``final_store`` (told on the next call).

Each figure is the median over ``--rounds`` alternating rounds (raw, ours, raw, ours...) of
``--reps`` suggestions each, so load from other processes hits both sides alike; the
history grows by one trial per repetition on both sides. The theoretical minimum is the
library's own cost (ratio 1.0):
everything ours adds is bookkeeping (plus, for ``gp``, the O(n) copy that gives running
trials their constant-liar value, which raw Optuna's GPSampler does not do at all).

Usage::

    PYTHONPATH=. python bench/sampler_cost.py                 # tpe and gp, n = 50 200 400
    PYTHONPATH=. python bench/sampler_cost.py --quick         # tpe only, n = 50 200
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from typing import Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from maggy_magic.optimizers import get_optimizer  # noqa: E402
from maggy_magic.searchspace import Searchspace  # noqa: E402
from maggy_magic.trial import Trial  # noqa: E402

SPACE = Searchspace(lr=("DOUBLE", [1e-4, 1.0], "log"), x=("DOUBLE", [-1.0, 1.0]),
                    units=("INTEGER", [8, 256]), act=("CATEGORICAL", ["relu", "tanh", "elu"]))
WORKERS = 4


def objective(p: Dict) -> float:
    import math
    return ((math.log10(p["lr"]) + 2.5) ** 2 + (p["x"] - 0.3) ** 2
            + ((p["units"] - 100) / 100) ** 2 + (0.0 if p["act"] == "tanh" else 0.5))


def history(n: int) -> List[Dict]:
    rng = random.Random(n)
    return [SPACE.sample(rng) for _ in range(n)]


def raw_optuna(sampler_name: str, n: int, reps: int) -> List[float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists = {"lr": FloatDistribution(1e-4, 1.0, log=True), "x": FloatDistribution(-1, 1),
             "units": IntDistribution(8, 256), "act": CategoricalDistribution([0, 1, 2])}
    acts = ["relu", "tanh", "elu"]
    if sampler_name == "tpe":
        sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=0, constant_liar=True)
    else:
        sampler = optuna.samplers.GPSampler(seed=0, n_startup_trials=0)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    configs = history(n + WORKERS - 1)
    for i, p in enumerate(configs):
        state = optuna.trial.TrialState.COMPLETE if i < n else optuna.trial.TrialState.RUNNING
        study.add_trial(optuna.trial.create_trial(
            state=state, params=dict(p, act=acts.index(p["act"])), distributions=dists,
            value=objective(p) if i < n else None))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        trial = study.ask()
        p = {"lr": trial.suggest_float("lr", 1e-4, 1.0, log=True),
             "x": trial.suggest_float("x", -1, 1), "units": trial.suggest_int("units", 8, 256),
             "act": acts[trial.suggest_categorical("act", [0, 1, 2])]}
        study.tell(trial, objective(p))
        times.append(time.perf_counter() - start)
    return times


def ours(name: str, n: int, reps: int) -> List[float]:
    opt = get_optimizer(name, random_fraction=0.0)
    store: Dict[str, Trial] = {}
    final: List[Trial] = []
    for i, p in enumerate(history(n + WORKERS - 1)):
        trial = Trial(p, info_dict={"sample_type": "random", "seed": 0})
        trial.trial_id = f"{i:05d}"
        if i < n:
            trial.final_metric, trial.status = objective(p), Trial.FINISHED
            final.append(trial)
        else:
            trial.status = Trial.RUNNING
        store[trial.trial_id] = trial
    opt.searchspace, opt.num_trials, opt.direction, opt.seed = SPACE, 10 ** 6, "min", 0
    opt.trial_store, opt.final_store = store, final
    opt.initialize()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        trial = opt.get_suggestion()
        trial.trial_id = f"{len(store):05d}"
        store[trial.trial_id] = trial
        trial.final_metric, trial.status = objective(trial.params), Trial.FINISHED
        final.append(trial)  # told at the start of the next call, as the driver does
        opt._sync()  # ... so count that telling here, inside the timed span
        times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="*")
    parser.add_argument("--samplers", nargs="*")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([50, 200] if args.quick else [50, 200, 400])
    samplers = args.samplers or (["tpe"] if args.quick else ["tpe", "gp"])
    print(f"load average {os.getloadavg()[0]:.2f}; {WORKERS - 1} trials running; "
          "minimum = raw Optuna (ratio 1.00)")
    print(f"{'sampler':8} {'n':>5} {'raw ms':>10} {'ours ms':>10} {'ratio':>7}")
    measure: Dict[str, Callable] = {"raw": raw_optuna, "ours": ours}
    for name in samplers:
        reps = args.reps or (20 if name == "tpe" else 3)
        for n in sizes:
            samples: Dict[str, List[float]] = {"raw": [], "ours": []}
            for _ in range(args.rounds):
                for side, fn in measure.items():
                    samples[side] += fn(name, n, reps)
            figures = {side: statistics.median(times) * 1000
                       for side, times in samples.items()}
            print(f"{name:8} {n:5d} {figures['raw']:10.2f} {figures['ours']:10.2f} "
                  f"{figures['ours'] / figures['raw']:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
