"""Every bad input a user can give, and the one-line MaggyError it gets.

Configuration and signature mistakes are caught before any worker starts; mistakes that
only show when the training function runs (what it returns or broadcasts) fail the
experiment with the error of the first failed trial.
"""

import math
import os

import pytest

from maggy_magic import (
    BroadcastError,
    ConfigError,
    HyperparameterOptConfig,
    InvalidMetricError,
    MaggyError,
    Searchspace,
    SearchspaceError,
    TrainFunctionError,
    experiment,
)
from maggy_magic.backends.base import Backend
from maggy_magic.backends.local import LocalBackend
from maggy_magic.runs import RunNotFoundError

SPACE = Searchspace(x=("DOUBLE", [0.0, 1.0]))


def ok(x):
    return x


def returns_none(x):
    pass


def returns_nan(x):
    return math.nan


def returns_text(x):
    return "good"


def returns_dict_without_key(x):
    return {"loss": x}


def decreasing_step(x, reporter):
    reporter.broadcast(x, 5)
    reporter.broadcast(x, 4)
    return x


def broadcast_text(x, reporter):
    reporter.broadcast("high", 1)
    return x


def needs_unknown(x, epochs):
    return x


def ignores_x(reporter):
    return 1.0


def no_budget(x):
    return x


def _closure_over_a_lock():
    import threading

    lock = threading.Lock()

    def train(x):
        with lock:
            return x

    return train


def _plain_folder():
    folder = os.path.abspath("results")
    os.makedirs(folder)
    return folder


class _NoResources(LocalBackend):
    """A backend that keeps the contract's default: no resources per trial."""

    name = "plain"
    request_resources = Backend.request_resources


def run(fn, **kwargs):
    kwargs.setdefault("searchspace", SPACE)
    kwargs.setdefault("es_policy", "none")
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("num_trials", 2)
    return experiment.lagom(fn, HyperparameterOptConfig(**kwargs))


BEFORE_START = [
    # (what, call, error class, message fragment)
    ("unknown optimizer", lambda: run(ok, optimizer="randomserch"), ConfigError,
     "did you mean 'randomsearch'"),
    ("unknown early-stop policy", lambda: run(ok, es_policy="medain"), ConfigError,
     "did you mean 'median'"),
    ("unknown backend", lambda: run(ok, backend="lcoal"), ConfigError, "did you mean 'local'"),
    ("bad direction", lambda: run(ok, direction="maximize"), ConfigError, "'max' or 'min'"),
    ("zero trials", lambda: run(ok, num_trials=0), ConfigError, "positive integer"),
    ("negative es_interval", lambda: run(ok, es_interval=-1), ConfigError, "es_interval"),
    ("searchspace of the wrong type", lambda: run(ok, searchspace={"x": 1}), ConfigError,
     "must be a Searchspace"),
    ("grid search over a DOUBLE", lambda: run(ok, optimizer="gridsearch"), SearchspaceError,
     "grid search cannot enumerate DOUBLE"),
    ("ASHA with bad options", lambda: run(ok, optimizer="asha",
                                          optimizer_options={"reduction_factor": 1}),
     ConfigError, "reduction_factor"),
    ("function needs an argument nobody gives", lambda: run(needs_unknown),
     TrainFunctionError, "needs argument 'epochs'"),
    ("function ignores a hyperparameter", lambda: run(ignores_x), TrainFunctionError,
     "does not take hyperparameter(s) x"),
    ("ASHA without a budget argument", lambda: run(no_budget, optimizer="asha"),
     TrainFunctionError, "add a `budget` argument"),
    ("not a function", lambda: run(42), TrainFunctionError, "must be callable"),
    ("function that cannot travel to the workers", lambda: run(_closure_over_a_lock()),
     TrainFunctionError, "'lock' (a lock), which cannot be sent to the workers"),
    ("resume of a run that does not exist", lambda: run(ok, resume="nope"), RunNotFoundError,
     "no run 'nope'"),
    ("resume of a folder that is not a run", lambda: run(ok, resume=_plain_folder()),
     RunNotFoundError, "has no journal.jsonl, so it is not a run directory"),
    ("unknown local backend option", lambda: run(ok, backend_options={"restarts": 1}),
     ConfigError, "unknown local backend option 'restarts'"),
    ("local backend restarts of the wrong type",
     lambda: run(ok, backend_options={"max_restarts": 1.5}), ConfigError,
     "local backend option max_restarts must be an integer >= 0, got 1.5"),
    ("GPUs per trial that do not divide one GPU", lambda: run(ok, gpus_per_trial=0.3),
     ConfigError, "gpus_per_trial (--gpus-per-trial) below 1 must divide one GPU evenly "
     "(0.5, 0.25, 0.2, ... = 1/n trials per GPU), got 0.3; use 0.333333"),
    ("negative GPUs per trial", lambda: run(ok, gpus_per_trial=-1), ConfigError,
     "gpus_per_trial (--gpus-per-trial) must be >= 0 GPUs per trial, got -1"),
    ("GPUs per trial above one that are not whole", lambda: run(ok, gpus_per_trial=1.5),
     ConfigError, "above 1 must be a whole number of GPUs, got 1.5; use 1 or 2"),
    ("GPUs per trial as text", lambda: run(ok, gpus_per_trial="1"), ConfigError,
     "must be a number of GPUs per trial (e.g. 1, 2 or 0.5), got '1'"),
    ("CPUs per trial below one", lambda: run(ok, cpus_per_trial=0), ConfigError,
     "cpus_per_trial (--cpus-per-trial) must be a whole number of CPU cores >= 1, got 0"),
    ("GPUs on a backend that cannot give them", lambda: run(
        ok, gpus_per_trial=1, backend=_NoResources()), ConfigError,
     "the plain backend cannot give trials their own GPUs or CPUs (gpus_per_trial=1)"),
]

WHILE_RUNNING = [
    ("returns nothing", returns_none, InvalidMetricError, "returned nothing"),
    ("returns NaN", returns_nan, InvalidMetricError, "is nan"),
    ("returns a non-number", returns_text, InvalidMetricError, "must be a number"),
    ("returns a dict without the key", returns_dict_without_key, InvalidMetricError,
     "no optimization key 'metric' (its keys: 'loss')"),
    ("broadcasts a decreasing step", decreasing_step, BroadcastError,
     "step 4 is below the previous step 5"),
    ("broadcasts a non-number", broadcast_text, BroadcastError, "must be a number"),
]


def _check(exc_info, error, fragment):
    exc = exc_info.value
    assert type(exc) is error, f"got {type(exc).__name__}: {exc}"
    assert isinstance(exc, MaggyError)
    message = str(exc)
    assert "\n" not in message, "the error is not one line"
    assert fragment in message


@pytest.mark.parametrize("what,call,error,fragment", BEFORE_START,
                         ids=[case[0] for case in BEFORE_START])
def test_rejected_before_any_worker_starts(what, call, error, fragment):
    with pytest.raises(MaggyError) as info:
        call()
    _check(info, error, fragment)
    assert not os.path.exists("maggy_experiments") or what.startswith("resume")


@pytest.mark.parametrize("what,fn,error,fragment", WHILE_RUNNING,
                         ids=[case[0] for case in WHILE_RUNNING])
def test_bad_results_fail_the_run_with_the_first_error(what, fn, error, fragment):
    with pytest.raises(MaggyError) as info:
        run(fn)
    _check(info, error, fragment)
    assert "trial 0000" in str(info.value)
    assert info.value.result.num_failed >= 1
    assert os.path.exists(os.path.join(info.value.result.run_dir, "result.json"))
