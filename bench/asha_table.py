"""Maggy's "Hyperparameter Optimization Trial" table, reproduced: ASHA, random search with
median early stopping (RS-ES) and without (RS-NS), plus TPE and GP, each given the same
wall-clock budget on the same workers.

Model and data: scikit-learn's ``MLPClassifier`` (one hidden layer) on its packaged digits
(300 training images, the other 1497 for validation), trained one epoch per
``partial_fit``; the metric is validation accuracy after each epoch. The number of epochs
is the budget: ASHA gives rung ``k`` ``3**k`` epochs (1, 3, 9, 27, 81), every other method
trains each trial for the full 81 epochs (RS-ES unless the median rule stops it first).
Search space: hidden units, learning rate, L2 penalty, batch size and activation, wide
enough that most random configurations are poor.

Each run is stopped ``--budget`` seconds after its driver starts (``driver.request_stop``
from a timer). Counted are the trials that ended before that moment: the best metric among
them, how many there were and how many the median rule stopped. Every method runs once per
seed (``--seeds``, default 5) and the table gives mean (std) over seeds.

Printed next to the measured trial counts, the theoretical maximum: the trials that fit if
the workers never idled (``workers * budget / mean trial duration``) and the workers' busy
share. Targets (the original table's shape): mean best ASHA >= RS-ES >= RS-NS, and ASHA
runs >= 10x the trials of RS-NS.

``--checkpoints N``: instead of the table, ASHA on the same N trials per seed twice, the
training function starting over at every promotion and continuing from its lower rung's
checkpoint (``reporter.checkpoint_dir()``, the model pickled after each trial): the
trial-seconds each spent (the sum of the trials' durations), the epochs trained, and the
best accuracy, mean (std) over the seeds. Target: at least 30 % fewer trial-seconds with
checkpoints, the best accuracy within one standard deviation. A trial promoted from a
rung of ``b`` epochs to ``eta * b`` trains ``(eta - 1) * b`` of them when it continues, so
it saves at most ``1 / eta`` of its epochs, and the first rung's trials save nothing:
with ``eta = 3`` the saving stays under a third; ``--eta 2`` (rungs 1, 2, 4, ... 64, 81)
can save up to half.

Usage::

    PYTHONPATH=. python bench/asha_table.py                  # 5 methods x 5 seeds x 30 s
    PYTHONPATH=. python bench/asha_table.py --checkpoints 81 # promotions that continue
    PYTHONPATH=. python bench/asha_table.py --checkpoints 81 --eta 2
    PYTHONPATH=. python bench/asha_table.py --budget 60      # seconds per run
    PYTHONPATH=. python bench/asha_table.py --quick          # smoke run, about a minute
    PYTHONPATH=. python bench/asha_table.py --methods asha rs-es rs-ns --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from typing import Any, Dict, List, Optional

# at module level, so that the workers' template process imports scikit-learn once and
# no trial's duration includes it (the training functions are pickled by value)
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.errors import MaggyError

MAX_EPOCHS = 81
ETA = 3
TRAIN_SIZE = 300
ES_MIN = 5
TARGET_TRIALS_RATIO = 10.0
#: Trials the optimizers may create; the clock ends every run long before.
UNLIMITED = 100000

SPACE = Searchspace(hidden=("INTEGER", [2, 64]), lr=("DOUBLE", [1e-5, 1.0], "log"),
                    alpha=("DOUBLE", [1e-6, 10.0], "log"),
                    batch=("DISCRETE", [32, 64, 128, 256]),
                    activation=("CATEGORICAL", ["relu", "tanh", "logistic"]))

#: Method → (optimizer, its options, early stopping policy).
METHODS: Dict[str, Any] = {
    "asha": ("asha", {"reduction_factor": ETA, "resource_min": 1,
                      "resource_max": MAX_EPOCHS}, "none"),
    "rs-es": ("randomsearch", {}, "median"),
    "rs-ns": ("randomsearch", {}, "none"),
    "tpe": ("tpe", {}, "none"),
    "gp": ("gp", {}, "none"),
}

_DATA: Dict[str, Any] = {}


def digits_split():
    """(x_train, y_train, x_val, y_val): 300 stratified training images, the rest to
    validate; loaded once per worker process."""
    if "split" not in _DATA:
        x, y = load_digits(return_X_y=True)
        x = x / 16.0
        x_tr, x_va, y_tr, y_va = train_test_split(x, y, train_size=TRAIN_SIZE, stratify=y,
                                                  random_state=0)
        _DATA["split"] = (x_tr, y_tr, x_va, y_va)
    return _DATA["split"]


def train(hidden, lr, alpha, batch, activation, reporter, budget=None):
    """One MLP, ``budget`` epochs (all 81 without one); validation accuracy per epoch."""
    x_tr, y_tr, x_va, y_va = digits_split()
    epochs = int(round(budget)) if budget else MAX_EPOCHS
    model = MLPClassifier(hidden_layer_sizes=(int(hidden),), activation=activation,
                          learning_rate_init=lr, alpha=alpha, batch_size=int(batch),
                          random_state=0)
    accuracy = 0.0
    classes = list(range(10))
    for epoch in range(epochs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            model.partial_fit(x_tr, y_tr, classes=classes)
        accuracy = float(model.score(x_va, y_va))
        reporter.broadcast(accuracy, epoch)
    return accuracy


def train_continued(hidden, lr, alpha, batch, activation, reporter, budget):
    """:func:`train` that continues from its configuration's checkpoint: the model and
    the epochs it has, pickled into ``reporter.checkpoint_dir()`` after each trial."""
    x_tr, y_tr, x_va, y_va = digits_split()
    path = os.path.join(reporter.checkpoint_dir(), "mlp.pkl")
    if os.path.exists(path):
        with open(path, "rb") as handle:
            model, done = pickle.load(handle)
    else:
        model, done = MLPClassifier(hidden_layer_sizes=(int(hidden),), activation=activation,
                                    learning_rate_init=lr, alpha=alpha,
                                    batch_size=int(batch), random_state=0), 0
    accuracy = float(model.score(x_va, y_va)) if done else 0.0
    for epoch in range(done, int(round(budget))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            model.partial_fit(x_tr, y_tr, classes=list(range(10)))
        accuracy = float(model.score(x_va, y_va))
        reporter.broadcast(accuracy, epoch)
    with open(path, "wb") as handle:
        pickle.dump((model, int(round(budget))), handle)
    return accuracy


def run_checkpoints(trials: int, seed: int, workers: int, root: str,
                    eta: int = ETA) -> Dict[str, Any]:
    """ASHA (reduction factor ``eta``) on ``trials`` trials, without and with
    checkpoints, the same seed."""
    optimizer, options, _ = METHODS["asha"]
    options = dict(options, reduction_factor=eta)
    row: Dict[str, Any] = {"seed": seed}
    for label, fn in (("restart", train), ("continue", train_continued)):
        config = HyperparameterOptConfig(
            num_trials=trials, optimizer=optimizer, optimizer_options=options,
            searchspace=SPACE, optimization_key="accuracy", direction="max",
            es_policy="none", workers=workers, seed=seed, name=f"asha-{label}", root=root)
        result = experiment.lagom(fn, config)
        records = [r for r in result.trial_records if r["state"] == "FINISHED"]
        row[label] = {"trial_seconds": sum(r.get("duration") or 0 for r in records),
                      "epochs": sum(len(r.get("steps") or []) for r in records),
                      "best": result.best_metric, "trials": len(records)}
    return row


def print_checkpoints(rows: List[Dict[str, Any]]) -> List[tuple]:
    print(f"\n{'ASHA':<10} {'trial-seconds':>18} {'epochs trained':>18} {'best accuracy':>18}")
    stats = {}
    for label in ("restart", "continue"):
        cells = [mean_std([r[label][key] for r in rows])
                 for key in ("trial_seconds", "epochs", "best")]
        stats[label] = cells
        print(f"{label:<10} " + " ".join(f"{m:>10.{d}f} ({s:.{d}f})" for (m, s), d in
                                         zip(cells, (1, 0, 4))))
    saved = 1 - stats["continue"][0][0] / stats["restart"][0][0]
    best_gap = abs(stats["continue"][2][0] - stats["restart"][2][0])
    print(f"checkpoints save {saved:.0%} of the trial-seconds; best accuracy "
          f"{stats['continue'][2][0]:.4f} against {stats['restart'][2][0]:.4f}")
    return [("checkpoints save >= 30% of the trial-seconds", saved >= 0.3),
            ("best accuracy within one std", best_gap <= max(stats["restart"][2][1],
                                                            stats["continue"][2][1]))]


def run_method(method: str, seed: int, budget: float, workers: int, root: str
               ) -> Dict[str, Any]:
    """One run of ``method``, stopped after ``budget`` seconds; what the table needs."""
    optimizer, options, es_policy = METHODS[method]
    config = HyperparameterOptConfig(
        num_trials=UNLIMITED, optimizer=optimizer, optimizer_options=options,
        searchspace=SPACE, optimization_key="accuracy", direction="max",
        es_policy=es_policy, es_min=ES_MIN, workers=workers, seed=seed,
        name=f"asha-table-{method}", root=root, stop_grace=30.0)
    stopped_at: List[float] = []
    timers: List[threading.Timer] = []

    def on_driver(driver: Any, backend: Any) -> None:
        timer = threading.Timer(budget, driver.request_stop, args=("wall-clock budget",))
        timer.daemon = True
        timers.append(timer)
        timer.start()

    def listen(event: dict) -> None:
        if event["type"] == "stop_requested":
            stopped_at.append(event["t"])

    start = time.monotonic()
    try:
        result = experiment.run(train, config, listeners=[listen], on_driver=on_driver)
    finally:
        for timer in timers:
            timer.cancel()
    wall = time.monotonic() - start
    deadline = stopped_at[0] if stopped_at else float("inf")
    counted = [r for r in result.trial_records
               if r.get("end") is not None and r["end"] <= deadline
               and r["state"] in ("FINISHED", "EARLY_STOPPED")]
    durations = [r["duration"] for r in counted if r.get("duration")]
    mean_duration = statistics.mean(durations) if durations else float("nan")
    values = [r["value"] for r in counted if r.get("value") is not None]
    return {"method": method, "seed": seed, "best": max(values) if values else None,
            "trials": len(counted),
            "stopped": sum(r["state"] == "EARLY_STOPPED" for r in counted),
            "failed": result.num_failed, "wall": wall,
            "busy": sum(durations) / (workers * budget),
            "ideal_trials": workers * budget / mean_duration if durations else 0.0,
            "state": result.state, "run_dir": result.run_dir}


def mean_std(values: List[float]) -> tuple:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows: List[Dict[str, Any]], methods: List[str]) -> Dict[str, Dict[str, float]]:
    summary = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        summary[method] = {}
        for key in ("best", "trials", "stopped", "ideal_trials", "busy"):
            mean, std = mean_std([r[key] for r in mine])
            summary[method][key], summary[method][key + "_std"] = mean, std
    return summary


def print_table(summary: Dict[str, Dict[str, float]], budget: float, workers: int) -> None:
    print(f"\nHyperparameter optimization, {budget:g} s per run on {workers} workers "
          f"(mean (std) over seeds)")
    header = f"{'method':<7} {'best accuracy':>16} {'trials':>14} {'stopped early':>15} " \
             f"{'max trials (no idle)':>21} {'busy':>6}"
    print(header)
    print("-" * len(header))
    for method, s in summary.items():
        print(f"{method.upper():<7} {s['best']:>8.4f} ({s['best_std']:.3f}) "
              f"{s['trials']:>7.1f} ({s['trials_std']:>4.1f}) "
              f"{s['stopped']:>7.1f} ({s['stopped_std']:>4.1f}) "
              f"{s['ideal_trials']:>13.1f} ({s['ideal_trials_std']:>4.1f}) "
              f"{s['busy']:>5.0%}")


def targets(summary: Dict[str, Dict[str, float]]) -> List[tuple]:
    """(description, met) for each target whose methods ran."""
    checks = []
    if {"asha", "rs-es", "rs-ns"} <= set(summary):
        a, e, n = (summary[m]["best"] for m in ("asha", "rs-es", "rs-ns"))
        checks.append((f"best accuracy ASHA >= RS-ES >= RS-NS ({a:.4f} / {e:.4f} / {n:.4f})",
                       a >= e >= n))
    if {"asha", "rs-ns"} <= set(summary):
        ratio = summary["asha"]["trials"] / max(summary["rs-ns"]["trials"], 1e-9)
        checks.append((f"ASHA trials >= {TARGET_TRIALS_RATIO:g}x RS-NS trials "
                       f"({ratio:.1f}x)", ratio >= TARGET_TRIALS_RATIO))
    return checks


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=30.0,
                        help="wall-clock seconds per run (default 30: the full table takes "
                             "about 15 minutes on 2 cores)")
    parser.add_argument("--seeds", type=int, default=5, help="runs per method (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 seeds, 5 s per run")
    parser.add_argument("--checkpoints", type=int, metavar="N",
                        help="ASHA on N trials without and with checkpoints (see above)")
    parser.add_argument("--eta", type=int, default=ETA,
                        help="ASHA's reduction factor with --checkpoints (default 3): a "
                             "promoted trial that continues skips 1/eta of its epochs")
    parser.add_argument("--json", help="also write every run's figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a missed target")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.seeds = 5.0, 2
    if args.budget <= 0 or args.seeds < 1 or args.workers < 1:
        parser.error("--budget, --seeds and --workers must be positive")
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")  # one core per worker: threads would only contend
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, load {load:.2f}; "
          f"{len(args.methods)} methods x {args.seeds} seeds x {args.budget:g} s")
    root = tempfile.mkdtemp(prefix="asha-table-")
    rows: List[Dict[str, Any]] = []
    if args.checkpoints:
        try:
            for seed in range(args.seeds):
                rows.append(run_checkpoints(args.checkpoints, seed, args.workers, root,
                                            args.eta))
                print(f"seed {seed}: " + ", ".join(
                    f"{label} {rows[-1][label]['trial_seconds']:.1f} trial-s best "
                    f"{rows[-1][label]['best']:.4f}" for label in ("restart", "continue")),
                    flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        checks = print_checkpoints(rows)
        for text, met in checks:
            print(f"target {'met' if met else 'MISSED'}: {text}")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump({"checkpoints": rows}, handle, indent=1)
        return 1 if args.strict and not all(met for _, met in checks) else 0
    try:
        for seed in range(args.seeds):
            for method in args.methods:  # interleaved: machine noise hits every method
                try:
                    row = run_method(method, seed, args.budget, args.workers, root)
                except MaggyError as exc:
                    print(f"{method} seed {seed}: {type(exc).__name__}: {exc}")
                    continue
                rows.append(row)
                best = "-" if row["best"] is None else f"{row['best']:.4f}"
                print(f"{method:<6} seed {seed}: best {best}, {row['trials']} trials, "
                      f"{row['stopped']} stopped early, busy {row['busy']:.0%}, "
                      f"{row['wall']:.1f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ran = [m for m in args.methods if any(r["method"] == m for r in rows)]
    summary = table(rows, ran)
    print_table(summary, args.budget, args.workers)
    checks = targets(summary)
    print()
    for text, met in checks:
        print(f"target {'met' if met else 'MISSED'}: {text}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"budget": args.budget, "workers": args.workers, "runs": rows,
                       "summary": summary,
                       "targets": [{"target": t, "met": m} for t, m in checks]},
                      handle, indent=1)
    return 1 if args.strict and not all(met for _, met in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
