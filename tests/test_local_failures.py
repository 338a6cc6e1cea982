"""When the local backend's worker processes die, and when a training function ignores an
early stop: how each run ends, said in one line, and never a hang.

Real runs: the driver, worker processes of the local backend, the run's journal. The
per-test timeouts (60 s) are below the suite's global one: a run that hangs instead of ending
fails there.
"""

import os
import re
import textwrap
import time

import pytest
from conftest import hpo_config, journal

from maggy_magic import (
    ConfigError,
    EarlyStopException,
    ExperimentFailed,
    HyperparameterOptConfig,
    Searchspace,
    experiment,
)


def identity(x):
    return x


def run(fn=identity, **kwargs):
    kwargs.setdefault("num_trials", 2)
    kwargs.setdefault("name", "failures")
    return experiment.lagom(fn, hpo_config(**kwargs))


def kinds(run_dir):
    return [e["type"] for e in journal(run_dir)]


# -- workers that cannot run at all ------------------------------------------------------
@pytest.fixture
def broken_site(tmp_path, monkeypatch):
    """Every new Python process exits with code 3 as it starts (a broken environment:
    its sitecustomize fails), after one line of output. Only processes started from now
    on, the workers, are affected."""
    site = tmp_path / "broken-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent("""
        import os, sys
        print("sitecustomize: the GPU driver is missing", flush=True)
        os._exit(3)
    """))
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(site) + (os.pathsep + old if old else ""))


@pytest.mark.timeout(60)
def test_workers_that_die_as_they_start_end_the_run_after_the_restart_budget(broken_site):
    with pytest.raises(ExperimentFailed) as info:
        run(workers=2, backend_options={"max_restarts": 2})
    message = str(info.value)
    assert "\n" not in message
    assert re.fullmatch(r"every local worker exited \(last: worker [01], exit code 3\) after "
                        r"2 restarts; its output ends with: sitecustomize: the GPU driver "
                        r"is missing", message), message
    result = info.value.result
    assert result.state == "failed" and result.trial_records == []
    events = kinds(result.run_dir)
    assert "worker_joined" not in events and events[-1] == "run_finished"


class _ExitsWhenLoaded:
    """Unpickling it ends the process (as a native library that crashes on import would)."""

    def __reduce__(self):
        return os._exit, (4,)


def _train_that_kills_its_loader():
    crash = _ExitsWhenLoaded()

    def train(x):  # a closure: cloudpickle sends it with `crash`
        return x if crash else -x

    return train


@pytest.mark.timeout(60)
def test_workers_that_die_loading_the_function_end_the_run_not_retry_forever():
    """Each worker registers, gets a trial and dies loading the function: the trial goes
    back to the queue each time (max_retries is high), the backend replaces each worker
    until its restart budget is spent, then the run fails in the backend's words."""
    with pytest.raises(ExperimentFailed) as info:
        run(_train_that_kills_its_loader(), workers=2, max_retries=50,
            backend_options={"max_restarts": 3})
    message = str(info.value)
    assert re.fullmatch(r"every local worker exited \(last: worker [01], exit code 4\) after "
                        r"3 restarts; its output ends with: .*", message), message
    events = journal(info.value.result.run_dir)
    joined = [e for e in events if e["type"] == "worker_joined"]
    assert 1 <= len(joined) <= 2 + 3                    # 2 workers, then 3 replacements
    assert not [e for e in events if e["type"] in ("trial_finished", "trial_failed")]


# -- a trial that kills its worker --------------------------------------------------------
def kills_its_worker(x):
    os._exit(7)


@pytest.mark.timeout(60)
def test_a_trial_whose_worker_dies_each_time_fails_after_max_retries():
    with pytest.raises(ExperimentFailed) as info:
        run(kills_its_worker, num_trials=1, max_retries=1,
            backend_options={"max_restarts": 10})
    message = str(info.value)
    assert "\n" not in message
    assert re.fullmatch(r"trial 0000 failed: WorkerLost: worker lost 2 times, last: .+ "
                        r"\(max_retries=1\) \(1 failed trial\(s\), max_failures=0\)",
                        message), message
    events = journal(info.value.result.run_dir)
    attempts = [e["attempt"] for e in events if e["type"] == "trial_started"]
    assert attempts == [0, 1]                           # the first run and one retry
    assert [e["type"] for e in events if e.get("trial") == "0000"][-1] == "trial_failed"
    assert sum(e["type"] == "trial_retried" for e in events) == 1
    assert info.value.result.trial_records[0]["state"] == "FAILED"


@pytest.mark.timeout(60)
def test_with_no_retries_the_first_lost_worker_fails_its_trial():
    with pytest.raises(ExperimentFailed, match=r"worker lost 1 times, last: .+ "
                                               r"\(max_retries=0\)"):
        run(kills_its_worker, num_trials=1, max_retries=0)


# -- the local backend's options ------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    ({"max_restart": 1}, "unknown local backend option 'max_restart'; did you mean "
                         "'max_restarts'? (valid: max_restarts, start)"),
    ({"max_restarts": -1}, "local backend option max_restarts must be an integer >= 0, "
                           "got -1"),
    ({"max_restarts": "two"}, "local backend option max_restarts must be an integer >= 0, "
                              "got 'two'"),
], ids=["unknown", "negative", "text"])
def test_bad_local_backend_options_are_refused_before_any_worker_starts(options, message):
    with pytest.raises(ConfigError) as info:
        run(backend_options=options)
    assert str(info.value) == message
    assert not os.path.exists("maggy_experiments")


# -- a training function that swallows the early stop ---------------------------------------
def swallows_the_stop(x, reporter):
    """x=1 finishes at once with a good curve; x=0 reports a bad value at step 0 until the
    median rule stops it, catches the EarlyStopException three times, and returns."""
    if x == 1:
        for step in range(3):
            reporter.broadcast(1.0, step)
        return 1.0
    swallowed = 0
    while swallowed < 3:
        try:
            reporter.broadcast(0.0, 0)
        except EarlyStopException:
            swallowed += 1
        if not reporter.early_stop:
            time.sleep(0.02)  # paces the loop until the stop comes; orders nothing
    return {"metric": 0.5, "swallowed": swallowed}


@pytest.mark.timeout(60)
def test_a_function_that_swallows_the_early_stop_finishes_with_what_it_returns():
    """Defined behaviour: the driver's stop request stays in the journal (early_stopped),
    every later broadcast raises EarlyStopException again, and a function that catches
    it and returns anyway ends its trial FINISHED with the value it returned; the run
    goes on and ends normally."""
    result = experiment.lagom(swallows_the_stop, HyperparameterOptConfig(
        num_trials=2, optimizer="gridsearch", searchspace=Searchspace(x=("DISCRETE", [1, 0])),
        es_policy="median", es_min=1, es_interval=0.1, hb_interval=0.1, workers=2,
        name="swallow"))
    assert result.state == "finished"
    by_x = {t["params"]["x"]: t for t in result.trial_records}
    stopped = by_x[0]
    assert stopped["state"] == "FINISHED" and stopped["value"] == 0.5
    assert stopped["metrics"]["swallowed"] == 3         # raised again after each catch
    assert by_x[1]["state"] == "FINISHED" and result.best_id == by_x[1]["trial"]
    events = journal(result.run_dir)
    asked = [e["trial"] for e in events if e["type"] == "early_stopped"]
    assert asked == [stopped["trial"]]                  # asked once, never again
    ended = [e for e in events if e["type"] == "trial_finished"
             and e["trial"] == stopped["trial"]]
    assert [(e["state"], e["value"]) for e in ended] == [("FINISHED", 0.5)]
    assert result.num_early_stopped == 0
