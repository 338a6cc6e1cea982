"""Stop conditions: a run's time budget and its target metric, end to end with real worker
processes on the local backend, through the Python API and the magics.

Each stop is the graceful stop of the Stop button: a ``stop_requested`` event with the
reason, no trial started after it, state ``stopped``, the reason in the result, its
``result.json``, the text progress and the HTML summary; resume goes on from there.
"""

import json
import os
import threading
import time
from html import escape

import pytest
from conftest import hpo_config, journal

from maggy_magic import AblationStudy, ConfigError, Searchspace, experiment
from maggy_magic.config import AblationConfig
from maggy_magic.ui.summary import summary_html
from maggy_magic.ui.text import TextProgress
from maggy_magic.validation import duration_option

#: A run that does not end by itself is stopped after this long (a bound for a broken
#: engine, not a timing claim): the tests then fail on their assertions, not on a hang.
HANG_GUARD = 30.0


# -- training functions (module level: workers import this module) ---------------------
def nap(x):
    time.sleep(0.5)
    return x


def identity(x):
    return x


def cooperative(x, reporter):
    """A long trial that reports (so a stop ends it at its next report)."""
    for step in range(600):
        reporter.broadcast(x, step)
        time.sleep(0.1)
    return x


def stubborn(x):
    """A long trial that never reports: only the stop grace ends the run."""
    time.sleep(120)
    return x


def features_without(ablated_features):
    return [f for f in FEATURES if f not in ablated_features]


def ablation_nap(dataset_function, reporter):
    time.sleep(1.5)
    return len(dataset_function())


FEATURES = [f"f{i}" for i in range(12)]


def guarded_run(fn, config, **kwargs):
    """``experiment.run`` with a hang guard; returns (result, seconds, guard fired)."""
    handle, fired = {}, []

    def guard():
        fired.append(True)
        handle["driver"].request_stop("hang guard")

    timer = threading.Timer(HANG_GUARD, guard)
    start = time.monotonic()
    timer.start()
    try:
        result = experiment.run(fn, config,
                                on_driver=lambda driver, _: handle.update(driver=driver),
                                **kwargs)
    finally:
        timer.cancel()
    return result, time.monotonic() - start, bool(fired)


def assert_graceful_stop(result, words):
    """The run stopped like the Stop button stops it, for a reason containing ``words``."""
    assert result.state == "stopped"
    assert result.stop_reason and words in result.stop_reason, result.stop_reason
    events = journal(result.run_dir)
    kinds = [e["type"] for e in events]
    events = events[len(kinds) - 1 - kinds[::-1].index("run_started"):]  # this session
    kinds = [e["type"] for e in events]
    stops = [e for e in events if e["type"] == "stop_requested"]
    assert [e["reason"] for e in stops] == [result.stop_reason]
    assert "trial_started" not in kinds[kinds.index("stop_requested"):], \
        "a trial started after the stop"
    finished = [e for e in events if e["type"] == "run_finished"]
    assert finished[-1]["state"] == "stopped"
    assert finished[-1]["error"] == result.stop_reason
    with open(os.path.join(result.run_dir, "result.json")) as handle:
        assert json.load(handle)["stop_reason"] == result.stop_reason
    assert result.stop_reason in repr(result)
    html = summary_html(result)
    assert f'<div class="maggy-stop-reason">stopped: {escape(result.stop_reason)}</div>' \
        in html
    return events


def grid(values):
    return Searchspace(x=("DISCRETE", list(values)))


# -- parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize("value,seconds", [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("90", 90), (90, 90),
    (2.5, 2.5), ("1m30s", 90), (" 2H ", 7200), ("0.5s", 0.5)])
def test_time_budgets_read_as_seconds(value, seconds):
    assert duration_option("time_budget", value) == seconds
    config = hpo_config(time_budget=value)
    config.validate()
    assert config.time_budget == seconds
    assert config.to_dict()["time_budget"] == seconds


@pytest.mark.parametrize("value", ["ten", "-5s", 0, "0s", -3, "5 minutes", "1m1h", True,
                                   "", float("inf"), [5]])
def test_a_bad_time_budget_is_a_one_line_config_error_that_says_what_to_write(value):
    for config in (hpo_config(time_budget=value), AblationConfig(time_budget=value)):
        with pytest.raises(ConfigError) as info:
            config.validate_options() if isinstance(config, AblationConfig) \
                else config.validate()
        message = str(info.value)
        assert "\n" not in message
        assert "time_budget" in message and "'90s'" in message and "'1h30m'" in message


@pytest.mark.parametrize("value", ["high", float("nan"), True, float("inf")])
def test_a_bad_target_is_a_one_line_config_error(value):
    with pytest.raises(ConfigError) as info:
        hpo_config(target=value).validate()
    assert "\n" not in str(info.value) and "target" in str(info.value)
    assert "a number such as 0.95" in str(info.value)


# -- the time budget ----------------------------------------------------------------------
def test_a_time_budget_ends_a_long_search_and_resume_gets_a_fresh_budget():
    config = hpo_config(num_trials=1000, workers=2, time_budget=3, name="budget")
    result, took, guard = guarded_run(nap, config)
    assert not guard, "the time budget never stopped the run"
    assert took < HANG_GUARD and took < 1000 * 0.5 / 2 / 10
    assert took >= 3  # the budget counts from the driver's start, not before
    events = assert_graceful_stop(result, "time budget of 3s")
    first = result.num_finished
    assert 0 < first < 1000
    started = {e["trial"] for e in events if e["type"] == "trial_started"}
    ended = {e["trial"] for e in events if e["type"] in ("trial_finished", "trial_failed")}
    assert started == ended  # the trials running at the budget ended (0.5 s < the grace)

    # resume: the remaining trials with a whole new budget (the first session's time does
    # not count, so it does not stop at once)
    again = hpo_config(num_trials=1000, workers=2, time_budget=2, name="budget",
                       resume=result.run_id)
    resumed, took, guard = guarded_run(nap, again)
    assert not guard and took >= 2
    assert resumed.run_id == result.run_id
    assert resumed.num_finished >= first + 2, (first, resumed.num_finished)
    assert_graceful_stop(resumed, "time budget of 2s")
    assert resumed.num_finished < 1000
    before = {t["trial"]: t["value"] for t in result.trial_records if t["state"] == "FINISHED"}
    after = {t["trial"]: t["value"] for t in resumed.trial_records}
    assert all(after[trial] == value for trial, value in before.items())  # kept as they were


def test_a_time_budget_stops_long_trials_that_report_at_their_next_report():
    config = hpo_config(num_trials=6, workers=2, time_budget=2, name="long")
    result, took, guard = guarded_run(cooperative, config)
    assert not guard and took < 20  # each trial alone would take 60 s
    assert_graceful_stop(result, "time budget of 2s")
    assert result.num_early_stopped == 2 and result.num_finished == 0  # the two running


def test_a_time_budget_ends_the_run_within_the_stop_grace_of_trials_that_never_report():
    config = hpo_config(num_trials=6, workers=2, time_budget=1.5, stop_grace=1, name="deaf")
    result, took, guard = guarded_run(stubborn, config)
    assert not guard and took < 20  # each trial alone would take 120 s
    assert_graceful_stop(result, "time budget of 1.5s")
    assert result.num_finished == 0  # both were still running: resume reruns them


def test_a_time_budget_ends_an_ablation_study_and_resume_runs_more_of_it():
    study = AblationStudy("d", 1, "y", dataset_generator=features_without)
    study.features.include(*FEATURES)
    config = AblationConfig(study, workers=2, time_budget="2s", name="ablation-budget")
    result, took, guard = guarded_run(ablation_nap, config)
    assert not guard and took < 13 * 1.5 / 2  # all 13 trials on 2 workers: 10.5 s or more
    assert_graceful_stop(result, "time budget of 2s")
    first = result.num_finished
    assert 0 < first < 13
    again = AblationConfig(study, workers=2, time_budget="2s", name="ablation-budget",
                           resume=result.run_id)
    resumed, _, guard = guarded_run(ablation_nap, again)
    assert not guard and resumed.num_finished > first


# -- the target ---------------------------------------------------------------------------
def test_a_target_stops_a_search_that_maximises_once_a_trial_reaches_it():
    # one worker, grid order 1..10: trial x=7 is the first one at or above 7
    config = hpo_config(num_trials=10, optimizer="gridsearch", searchspace=grid(range(1, 11)),
                        direction="max", target=7, name="max")
    result, _, guard = guarded_run(identity, config)
    assert not guard
    assert_graceful_stop(result, "target metric >= 7 reached by trial")
    done = [t for t in result.trial_records if t["state"] == "FINISHED"]
    assert sorted(t["value"] for t in done) == [1, 2, 3, 4, 5, 6, 7]
    assert "(7)" in result.stop_reason and result.best_metric == 7

    # resume: allowed, and it runs the trials left (the earlier trial that reached the
    # target does not count again); without a target it completes the grid
    resumed, _, guard = guarded_run(identity, hpo_config(
        num_trials=10, optimizer="gridsearch", searchspace=grid(range(1, 11)),
        direction="max", name="max", resume=result.run_id))
    assert not guard and resumed.state == "finished" and resumed.stop_reason is None
    assert sorted(t["value"] for t in resumed.trial_records) == list(range(1, 11))


def test_a_target_stops_a_search_that_minimises_once_a_trial_reaches_it():
    # grid order 10..1: x=3 is the first one at or below 3
    config = hpo_config(num_trials=10, optimizer="gridsearch",
                        searchspace=grid(range(10, 0, -1)), direction="min", target=3,
                        name="min")
    result, _, guard = guarded_run(identity, config)
    assert not guard
    assert_graceful_stop(result, "target metric <= 3 reached by trial")
    done = [t for t in result.trial_records if t["state"] == "FINISHED"]
    assert sorted(t["value"] for t in done) == [3, 4, 5, 6, 7, 8, 9, 10]

    # resumed with the same target, the run goes on until a new trial reaches it (x=2)
    resumed, _, guard = guarded_run(identity, hpo_config(
        num_trials=10, optimizer="gridsearch", searchspace=grid(range(10, 0, -1)),
        direction="min", target=3, name="min", resume=result.run_id))
    assert not guard
    assert_graceful_stop(resumed, "target metric <= 3 reached by trial")
    assert "(2)" in resumed.stop_reason
    assert sorted(t["value"] for t in resumed.trial_records
                  if t["state"] == "FINISHED") == list(range(2, 11))


@pytest.mark.parametrize("direction,target", [("max", 100), ("min", -1)])
def test_a_target_never_reached_lets_the_search_complete(direction, target):
    config = hpo_config(num_trials=5, optimizer="gridsearch", searchspace=grid(range(5)),
                        direction=direction, target=target, workers=2, name="never")
    result, _, guard = guarded_run(identity, config)
    assert not guard and result.state == "finished" and result.stop_reason is None
    assert result.num_finished == 5
    assert not any(e["type"] == "stop_requested" for e in journal(result.run_dir))


def test_the_text_progress_ends_with_the_stop_reason(capsys):
    progress = TextProgress("hpo")
    config = hpo_config(num_trials=10, optimizer="gridsearch", searchspace=grid(range(10)),
                        target=2, name="text")
    result, _, _ = guarded_run(identity, config, listeners=[progress])
    progress.finish(result)
    lines = capsys.readouterr().out.strip().splitlines()
    final = next(line for line in lines if line.startswith("hpo [stopped]"))
    assert final.endswith("| stopped: target metric >= 2 reached by trial 0002 (2)")


# -- the magics ---------------------------------------------------------------------------
@pytest.fixture
def fresh(shell, monkeypatch):
    monkeypatch.setenv("MAGGY_MAGIC_WIDGETS", "0")
    shell.reset(new_session=False)
    shell.magics_manager.registry["MaggyMagics"].defaults = {}
    yield shell


def cell(shell, source):
    return shell.run_cell(source, store_history=True)


def test_the_time_budget_option_of_the_hpo_magic(fresh, capsys):
    start = time.monotonic()
    out = cell(fresh, "%%maggy hpo --trials 1000 --workers 2 --time-budget 2s --ui text -o r\n"
               "import time\n"
               "from maggy_magic import Searchspace\n"
               "space = Searchspace(x=('DOUBLE', [0, 1]))\n"
               "def train(x):\n    time.sleep(0.3)\n    return x\n")
    assert out.error_in_exec is None, out.error_in_exec
    assert time.monotonic() - start < HANG_GUARD
    result = fresh.user_ns["r"]
    assert result.state == "stopped" and result.stop_reason == "time budget of 2s reached"
    assert 0 < result.num_finished < 1000
    assert "| stopped: time budget of 2s reached" in capsys.readouterr().out


@pytest.mark.parametrize("direction,target,values", [("max", 3, [2, 1, 3]),
                                                    ("min", 1, [2, 1])])
def test_the_target_option_of_the_hpo_magic(fresh, direction, target, values):
    out = cell(fresh, f"%%maggy hpo --optimizer gridsearch --workers 1 --direction {direction}"
               f" --target {target} --ui text -o r\n"
               "from maggy_magic import Searchspace\n"
               "space = Searchspace(x=('DISCRETE', [2, 1, 3, 0, 4, 5, 6]))\n"
               "def train(x):\n    return x\n")
    assert out.error_in_exec is None, out.error_in_exec
    result = fresh.user_ns["r"]
    sign = ">=" if direction == "max" else "<="
    assert result.state == "stopped"
    assert f"target metric {sign} {target} reached" in result.stop_reason
    assert [t["value"] for t in result.trial_records if t["state"] == "FINISHED"] == values
