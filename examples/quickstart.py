"""A small, real hyperparameter search on the local backend.

A two-layer neural network (numpy only) learns to classify points of a generated
two-spirals data set. ASHA searches learning rate, width and weight decay, giving the
promising configurations more epochs (20 per unit of budget); the median rule stops trials
that lag behind.
Run it with ``bash scripts/run-example.sh`` (or ``python examples/quickstart.py``).
"""

import sys

import numpy as np

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment


def make_spirals(n=2000, noise=0.25, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.05, 1, n)) * 3 * np.pi
    sign = rng.integers(0, 2, n) * 2 - 1
    x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], axis=1) / 10
    x += rng.normal(0, noise / 10 * 3, x.shape)
    return x.astype(np.float32), (sign > 0).astype(np.float32)


def train(lr, hidden, weight_decay, budget, reporter):
    """Train for ``budget`` epochs (ASHA sets it) and return the validation accuracy."""
    x, y = make_spirals()
    xv, yv = make_spirals(seed=1)
    rng = np.random.default_rng(42)
    w1 = rng.normal(0, 1, (2, hidden)).astype(np.float32)
    b1 = np.zeros(hidden, np.float32)
    w2 = rng.normal(0, 1 / np.sqrt(hidden), hidden).astype(np.float32)
    b2 = np.float32(0)

    def predict(inputs):
        h = np.tanh(inputs @ w1 + b1)
        return h, 1 / (1 + np.exp(-(h @ w2 + b2)))

    accuracy = 0.0
    for epoch in range(int(budget) * 20):
        for batch in np.array_split(rng.permutation(len(x)), 20):
            h, p = predict(x[batch])
            grad = (p - y[batch]) / len(batch)
            gh = np.outer(grad, w2) * (1 - h ** 2)
            w2 -= lr * (h.T @ grad + weight_decay * w2)
            b2 -= lr * grad.sum()
            w1 -= lr * (x[batch].T @ gh + weight_decay * w1)
            b1 -= lr * gh.sum(axis=0)
        accuracy = float(((predict(xv)[1] > 0.5) == yv).mean())
        reporter.broadcast(accuracy, step=epoch)
    print(f"lr={lr:.3g} hidden={hidden} wd={weight_decay:.2g}: accuracy {accuracy:.3f}")
    return {"accuracy": accuracy}


def main():
    searchspace = Searchspace(lr=("DOUBLE", [0.01, 3.0], "log"),
                              hidden=("INTEGER", [4, 64]),
                              weight_decay=("DOUBLE", [1e-5, 1e-1], "log"))
    config = HyperparameterOptConfig(
        num_trials=int(sys.argv[1]) if len(sys.argv) > 1 else 18, optimizer="asha",
        searchspace=searchspace, optimization_key="accuracy", direction="max",
        es_policy="median", es_min=4, name="quickstart-spirals", seed=7,
        optimizer_options={"reduction_factor": 3, "resource_min": 1, "resource_max": 9})
    result = experiment.lagom(train, config)
    print()
    print(result.trials[["trial", "state", "accuracy", "budget", "lr", "hidden",
                         "weight_decay", "duration"]].to_string(index=False))
    print()
    print(f"best trial {result.best_id}: accuracy {result.best_metric:.3f} with "
          f"{result.best_params}")
    print(f"{result.num_finished} finished, {result.num_early_stopped} early-stopped, "
          f"{result.num_failed} failed")
    print(f"run directory: {result.run_dir}")


if __name__ == "__main__":
    main()
