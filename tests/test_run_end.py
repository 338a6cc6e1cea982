"""The end of a run is the end of its story: ``run_finished`` is the journal's last event,
whatever ended the run, and no trial starts after it."""

import pytest

from maggy_magic import ExperimentFailed, HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.store import read_journal


def fails(x):
    raise ValueError(f"bad x {x}")


def test_a_failure_that_ends_the_run_starts_no_queued_trial():
    # one worker with random search: a second trial is queued on it ahead of time when
    # the first fails and max_failures=0 ends the run
    config = HyperparameterOptConfig(
        num_trials=6, searchspace=Searchspace(x=("DOUBLE", [0, 1])), optimizer="randomsearch",
        es_policy="none", workers=1, max_failures=0, name="end")
    with pytest.raises(ExperimentFailed, match="bad x") as info:
        experiment.lagom(fails, config)
    events = list(read_journal(info.value.result.run_dir))
    assert events[-1]["type"] == "run_finished"
    assert [e["type"] for e in events].count("trial_started") == 1
    states = [t["state"] for t in info.value.result.trials.to_dict("records")]
    assert states == ["FAILED"]
