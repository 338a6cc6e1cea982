"""Data-parallel TensorFlow: per-step time of 2 ranks vs 1 process, same per-rank batch.

Weak scaling: every rank trains on ``--batch`` examples per step, so 2 ranks do twice the
work of 1 process in a step; with free communication their step time would equal the
single process's (the theoretical minimum: ratio 1.00). The same training function runs

* **1 process** - no strategy, in a fresh process (the peer);
* **2 ranks** - ``experiment.lagom(fn, TfDistributedConfig(workers=2))`` on the local
  backend: MultiWorkerMirroredStrategy, gradients all-reduced every step.

Printed: median step time of each, their ratio, the communication share
``(t2 - t1) / t2``, and the all-reduce of one gradient (the model's trainable variables)
timed on its own in the 2-rank run, with its share of the 2-rank step. Each process runs
TensorFlow with one intra-op and one inter-op thread, so the two ranks do not compete for
the CPU more than the single process does with itself (on a machine with >= 2 free cores).

Usage::

    PYTHONPATH=. python bench/dist_overhead.py             # ~2 min on 2 cores
    PYTHONPATH=. python bench/dist_overhead.py --quick     # smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time


def train_steps(hidden, batch, steps, warmup, allreduce_reps, dist_context=None):
    """Fit one epoch of ``warmup + steps`` steps of ``batch`` examples per rank; return
    the median step time (ms) after warm-up and, on a dist run, the median time (ms) of
    one all-reduce of the model's trainable variables."""
    import numpy as np
    import tensorflow as tf

    world = dist_context.world_size if dist_context is not None else 1
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(256,)),
        tf.keras.layers.Dense(hidden, activation="relu"),
        tf.keras.layers.Dense(hidden, activation="relu"),
        tf.keras.layers.Dense(10)])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    n = batch * world * (steps + warmup)
    x = rng.normal(size=(n, 256)).astype("float32")
    y = rng.integers(0, 10, size=n).astype("int64")
    times = []

    class StepTimer(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, step, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, step, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(x, y, batch_size=batch * world, epochs=1, shuffle=False, verbose=0,
              callbacks=[StepTimer()])
    result = {"step_ms": 1000 * statistics.median(times[warmup:]),
              "model_bytes": float(sum(int(np.prod(v.shape)) * 4
                                       for v in model.trainable_variables))}
    if dist_context is not None:
        strategy = tf.distribute.get_strategy()
        grads = [tf.ones_like(v) for v in model.trainable_variables]

        @tf.function
        def all_reduce():
            def replica_fn():
                ctx = tf.distribute.get_replica_context()
                return ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            return strategy.run(replica_fn)

        spans = []
        for _ in range(allreduce_reps + 3):
            start = time.perf_counter()
            out = all_reduce()
            float(strategy.experimental_local_results(out[0])[0][0, 0])  # wait for it
            spans.append(time.perf_counter() - start)
        result["allreduce_ms"] = 1000 * statistics.median(spans[3:])
    result["loss"] = 0.0
    return result


def _single(out_path, kwargs):
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    with open(out_path, "w") as handle:
        json.dump(train_steps(**kwargs), handle)


def run_single(kwargs):
    """``train_steps`` in one fresh process without a strategy."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "single.json")
        proc = multiprocessing.get_context("spawn").Process(target=_single,
                                                            args=(path, kwargs))
        proc.start()
        proc.join()
        with open(path) as handle:
            return json.load(handle)


def run_dist(kwargs):
    """``train_steps`` on 2 ranks through the product (local backend)."""
    import cloudpickle

    from maggy_magic import experiment
    from maggy_magic.distributed.config import TfDistributedConfig

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with tempfile.TemporaryDirectory() as root:
        result = experiment.lagom(train_steps, TfDistributedConfig(
            hparams=kwargs, workers=2, optimization_key="loss", direction="min",
            root=root))
    return result.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    parser.add_argument("--hidden", type=int, default=512, help="units of both hidden layers")
    parser.add_argument("--batch", type=int, default=64, help="examples per rank and step")
    args = parser.parse_args()
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    kwargs = {"hidden": args.hidden, "batch": args.batch,
              "steps": 20 if args.quick else 100, "warmup": 5 if args.quick else 10,
              "allreduce_reps": 10 if args.quick else 50}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"{kwargs['steps']} timed steps of {args.batch} examples per rank")
    one = run_single(kwargs)
    two = run_dist(kwargs)
    t1, t2, ar = one["step_ms"], two["step_ms"], two["allreduce_ms"]
    mbytes = one["model_bytes"] / 1e6
    print(f"model: 256-{args.hidden}-{args.hidden}-10 MLP, {mbytes:.2f} MB of float32 "
          f"gradients per step")
    print(f"{'':28}{'step ms':>10}{'vs 1 process':>14}")
    print(f"{'1 process (peer)':28}{t1:10.2f}{1.0:14.2f}")
    print(f"{'2 ranks, MWMS all-reduce':28}{t2:10.2f}{t2 / t1:14.2f}")
    print(f"{'theoretical minimum':28}{t1:10.2f}{1.0:14.2f}   (free communication)")
    print(f"communication share of a 2-rank step: (t2 - t1) / t2 = {(t2 - t1) / t2:.1%}")
    print(f"one all-reduce of the gradients alone: {ar:.2f} ms = {ar / t2:.1%} of the "
          f"2-rank step ({2 * (2 - 1) / 2 * mbytes / (ar / 1000):.0f} MB/s effective ring "
          f"bandwidth)")


if __name__ == "__main__":
    main()
