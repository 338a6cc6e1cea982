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


def lives_beside_idle_workers(x, reporter):
    """The short trial (x < 0.5) takes 0.3 s; the long one waits, up to 20 s, until no
    other worker of the run (a process of the same parent, the template) is alive, and
    says whether that happened. It broadcasts as it waits, so a copy of it that a worker
    started before it was taken back stops there."""
    import os
    import time

    def siblings():
        alive = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == os.getppid() and int(entry) != os.getpid() \
                    and fields[0] != "Z":
                alive.append(int(entry))
        return alive

    if x < 0.5:
        time.sleep(0.3)
        return {"metric": x}
    deadline, step = time.monotonic() + 20, 0
    while siblings() and time.monotonic() < deadline:
        reporter.broadcast(x, step)
        step += 1
        time.sleep(0.05)
    return {"metric": x, "alone": 0.0 if siblings() else 1.0}


def test_idle_workers_leave_while_the_last_trial_runs(tmp_path):
    # 3 workers, 2 trials: once the grid is handed out, an idle worker can get no trial
    # any more; it is told to leave then, not at the end of the run
    config = HyperparameterOptConfig(
        num_trials=2, searchspace=Searchspace(x=("DISCRETE", [0.1, 0.9])),
        optimizer="gridsearch", es_policy="none", workers=3, root=str(tmp_path), name="tail")
    result = experiment.lagom(lives_beside_idle_workers, config)
    assert result.state == "finished" and result.num_finished == 2
    long_trial = [t for t in result.trial_records if t["params"]["x"] == 0.9][0]
    assert long_trial["metrics"]["alone"] == 1.0, "idle workers outlived their last trial"
    # leaving is no loss: no worker_lost, and no worker was started again
    kinds = [e["type"] for e in read_journal(result.run_dir)]
    assert "worker_lost" not in kinds and kinds.count("worker_joined") == 3
