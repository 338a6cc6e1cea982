"""Resume, on every path: what a resumed run keeps, what it runs again, and the one-line
ResumeError each bad resume gets before anything is written.

Real runs throughout: the driver, worker processes of the local backend and the run
directory's journal; ``--resume latest`` through the magic in a real IPython shell.
"""

import json
import os

import pytest
from conftest import hpo_config, journal

from maggy_magic import (
    EarlyStopException,
    ExperimentFailed,
    HyperparameterOptConfig,
    Searchspace,
    experiment,
)
from maggy_magic.errors import ResumeError
from maggy_magic.runs import RunNotFoundError
from maggy_magic.store import JOURNAL, load_trials


def identity(x):
    return x


def run(fn=identity, **kwargs):
    kwargs.setdefault("num_trials", 2)
    kwargs.setdefault("seed", 3)
    kwargs.setdefault("name", "paths")
    return experiment.lagom(fn, hpo_config(**kwargs))


def journal_bytes(run_dir):
    with open(os.path.join(run_dir, JOURNAL), "rb") as handle:
        return handle.read()


def segments(run_dir):
    """The journal cut at each run_started: one list of events per run of the directory."""
    parts = []
    for event in journal(run_dir):
        if event["type"] == "run_started":
            parts.append([])
        parts[-1].append(event)
    return parts


def started(events):
    return sorted(e["trial"] for e in events if e["type"] == "trial_started")


# -- refused before anything is written ---------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"direction": "min"}, "cannot resume: direction was 'max' in that run and is 'min' now; "
                           "use the same setting or start a new run"),
    ({"optimization_key": "loss"}, "cannot resume: optimization_key was 'metric'"),
    ({"optimizer": "gridsearch", "searchspace": Searchspace(x=("DISCRETE", [1, 2]))},
     "cannot resume: optimizer was 'randomsearch' in that run and is 'gridsearch' now"),
    ({"searchspace": Searchspace(x=("DOUBLE", [0.0, 2.0]))}, "cannot resume: searchspace was"),
], ids=["direction", "metric", "optimizer", "searchspace"])
def test_a_resume_whose_config_differs_is_refused_and_the_run_is_untouched(change, message):
    first = run()
    before = journal_bytes(first.run_dir)
    with pytest.raises(ResumeError) as info:
        run(resume=first.run_id, num_trials=4, **change)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert journal_bytes(first.run_dir) == before


def test_a_new_run_in_an_existing_run_directory_is_refused():
    first = run(run_id="fixed")
    before = journal_bytes(first.run_dir)
    with pytest.raises(ResumeError) as info:
        run(run_id="fixed")
    where = os.path.join("maggy_experiments", "paths", "fixed")     # under the given root
    assert str(info.value) == (f"run directory {where} already exists; pick another run id "
                               "or resume it")
    assert os.path.abspath(where) == first.run_dir
    assert journal_bytes(first.run_dir) == before


def test_resuming_a_directory_without_a_journal_names_what_is_missing():
    first = run()
    os.remove(os.path.join(first.run_dir, JOURNAL))
    # by its directory: the directory is there, its journal is not
    with pytest.raises(RunNotFoundError) as info:
        run(resume=first.run_dir)
    assert str(info.value) == (f"{first.run_dir} has no {JOURNAL}, so it is not a run "
                               "directory; pass the directory of an earlier run (maggy-magic "
                               "ls lists them)")
    # by its run id: without a journal it is no run at all
    with pytest.raises(RunNotFoundError, match=f"no run '{first.run_id}' under "
                                               "maggy_experiments for experiment 'paths'"):
        run(resume=first.run_id)
    assert not os.path.exists(os.path.join(first.run_dir, JOURNAL))   # nothing was written


# -- what a resumed run keeps and what it runs again --------------------------------------
@pytest.mark.parametrize("cut", ["half", "newline"])
def test_a_torn_last_line_is_dropped_and_the_resumed_journal_reads_to_the_end(cut):
    """A crash while the journal's last line was being written: resume ignores a line cut
    short and runs the trial whose end it lost again (a line that only lost its newline
    is whole: its trial stays ended), and appends after a whole line, so the journal
    stays readable for the next resume."""
    first = run(num_trials=3)
    path = os.path.join(first.run_dir, JOURNAL)
    lines = journal_bytes(first.run_dir).splitlines(keepends=True)
    last_end = max(i for i, line in enumerate(lines) if b'"trial_finished"' in line)
    line = lines[last_end]
    torn = line[:len(line) // 2] if cut == "half" else line.rstrip(b"\n")
    with open(path, "wb") as handle:
        handle.write(b"".join(lines[:last_end]) + torn)         # no newline at the end
    os.remove(os.path.join(first.run_dir, "result.json"))       # the crash came first
    lost = json.loads(line)["trial"]

    second = run(num_trials=4, resume=first.run_id)
    assert second.run_dir == first.run_dir and second.state == "finished"
    assert [t["state"] for t in second.trial_records] == ["FINISHED"] * 4
    # the trial whose end was torn off ran again; the others only once
    again = started(segments(first.run_dir)[1])
    assert again == (sorted([lost, "0003"]) if cut == "half" else ["0003"]), again
    # every line of the journal reads, and reading it back gives the whole run
    with open(path, encoding="utf-8") as handle:
        for text in handle:
            json.loads(text)
    trials, _, _ = load_trials(first.run_dir)
    assert sorted(trials) == ["0000", "0001", "0002", "0003"]
    assert all(t.status == "FINISHED" for t in trials.values())


GRID = Searchspace(kind=("CATEGORICAL", ["ok", "stops", "fails", "later", "fails again",
                                          "last"]))


def ends_by_kind(kind, reporter):
    """Finishes, stops itself early (raising EarlyStopException after a metric) or fails,
    depending on the grid point."""
    reporter.broadcast(1.0, 0)
    if kind == "stops":
        raise EarlyStopException(0.25)
    if kind.startswith("fails"):
        raise ValueError("diverged")
    return 1.0


def grid_run(**kwargs):
    return experiment.lagom(ends_by_kind, HyperparameterOptConfig(
        searchspace=GRID, optimizer="gridsearch", es_policy="none", workers=1,
        name="grid", **kwargs))


def test_failed_and_early_stopped_trials_stay_as_they_ended_on_resume():
    """Resuming a failed run keeps its ended trials: a FAILED trial stays FAILED and
    still counts against max_failures, an EARLY_STOPPED one stays early-stopped with its
    metric; neither runs again, and the grid points that never started run now."""
    with pytest.raises(ExperimentFailed) as info:
        grid_run()
    assert str(info.value) == ("trial 0002 failed: ValueError: diverged (1 failed trial(s), "
                               "max_failures=0)")
    first = info.value.result
    assert {t["trial"]: t["state"] for t in first.trial_records} == {
        "0000": "FINISHED", "0001": "EARLY_STOPPED", "0002": "FAILED"}
    # run_finished is the first run's last event: the trial queued behind the failed one
    # never started
    assert segments(first.run_dir)[0][-1]["type"] == "run_finished"

    # the earlier failure counts: one more makes 2 > max_failures=1
    with pytest.raises(ExperimentFailed) as info:
        grid_run(resume=first.run_id, max_failures=1)
    assert str(info.value) == ("trial 0004 failed: ValueError: diverged (2 failed trial(s), "
                               "max_failures=1)")
    # a FAILED or EARLY_STOPPED trial run again would start again here
    assert started(segments(first.run_dir)[1]) == ["0003", "0004"]

    third = grid_run(resume=first.run_id, max_failures=2)
    assert third.state == "finished" and third.run_dir == first.run_dir
    assert started(segments(first.run_dir)[2]) == ["0005"]
    states = {t["trial"]: (t["params"]["kind"], t["state"], t["value"])
              for t in third.trial_records}
    assert states == {"0000": ("ok", "FINISHED", 1.0),
                      "0001": ("stops", "EARLY_STOPPED", 1.0),   # its last broadcast
                      "0002": ("fails", "FAILED", None),
                      "0003": ("later", "FINISHED", 1.0),
                      "0004": ("fails again", "FAILED", None),
                      "0005": ("last", "FINISHED", 1.0)}
    assert third.num_failed == 2 and third.num_early_stopped == 1
    assert {t["error"] for t in third.trial_records if t["state"] == "FAILED"} == {"diverged"}
    old = {t["trial"]: (t["start"], t["end"]) for t in first.trial_records}
    assert {t["trial"]: (t["start"], t["end"]) for t in third.trial_records
            if t["trial"] in old} == old


def test_latest_is_the_run_that_started_last_whatever_its_id():
    first = run(run_id="zz-started-first")
    second = run(run_id="aa-started-second")
    resumed = run(resume="latest", num_trials=3)
    assert resumed.run_dir == second.run_dir and len(resumed.trial_records) == 3
    assert len(segments(first.run_dir)) == 1


# -- --resume latest through the magic ------------------------------------------------------
CELL = ('from maggy_magic import Searchspace\nspace = Searchspace(x=("DOUBLE", [0, 1]))\n'
        'def train(x):\n    return x\n')


def test_resume_latest_in_the_magic_continues_the_newest_run_of_that_experiment(
        shell, monkeypatch):
    monkeypatch.setenv("MAGGY_MAGIC_WIDGETS", "0")
    shell.run_cell_magic("maggy", "hpo --trials 1 --name mine --seed 1 --ui text -o old", CELL)
    older = shell.user_ns["old"]
    # the newer run of the same experiment, most likely in the same second: run ids alone
    # (time to the second, then random) would not order the two
    shell.run_cell_magic("maggy", "hpo --trials 2 --name mine --seed 1 --ui text -o a", CELL)
    first = shell.user_ns["a"]
    # a newer run of another experiment: latest is per experiment name
    shell.run_cell_magic("maggy", "hpo --trials 1 --name other --seed 1 --ui text -o b", CELL)
    other = shell.user_ns["b"]
    result = shell.run_cell_magic(
        "maggy", "hpo --trials 3 --name mine --seed 1 --resume latest --ui text -o c", CELL)
    assert result is shell.user_ns["c"]
    assert result.run_dir == first.run_dir and result.state == "finished"
    assert [t["trial"] for t in result.trial_records] == ["0000", "0001", "0002"]
    assert started(segments(first.run_dir)[1]) == ["0002"]
    assert len(segments(other.run_dir)) == 1                  # the other runs are untouched
    assert len(segments(older.run_dir)) == 1
    table = shell.run_line_magic("maggy", "list --name mine")
    assert list(table["run"]) == [older.run_id, first.run_id]   # the order of their starts
    # no run yet under a fresh name: latest names nothing
    with pytest.raises(RunNotFoundError) as info:
        shell.run_cell_magic("maggy", "hpo --trials 1 --name fresh --resume latest", CELL)
    assert str(info.value) == ("no runs under maggy_experiments for experiment 'fresh'; run "
                               "an experiment first")
