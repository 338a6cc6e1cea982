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
