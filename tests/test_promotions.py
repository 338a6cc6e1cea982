"""Promotions continue instead of starting over: ``reporter.checkpoint_dir()`` is one folder
per configuration (its hyperparameters), so a trial that ASHA promotes to a bigger budget
finds what its lower rung saved there, on workers that share the driver's disk and on
workers that do not (the folder travels through the driver)."""

import json
import os
import pickle

import pytest
from test_trial_files import private_workers

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.driver.artifacts import _may_checkpoint
from maggy_magic.trial import Trial
from maggy_magic.trial_files import config_checkpoint


def resumable(x, budget, reporter):
    """Trains ``budget`` epochs in all, continuing from its configuration's checkpoint."""
    path = os.path.join(reporter.checkpoint_dir(), "state.pkl")
    done = 0
    if os.path.exists(path):
        with open(path, "rb") as handle:
            done = pickle.load(handle)["epochs"]
    for epoch in range(done, int(budget)):
        reporter.broadcast(x * (epoch + 1), epoch)
    with open(path, "wb") as handle:
        pickle.dump({"epochs": int(budget)}, handle)
    return {"metric": x * budget, "started_at": done, "trained": int(budget) - done,
            "folder_seen": float(os.path.isdir(os.path.dirname(path)))}


def asha(tmp_path, runs):
    return HyperparameterOptConfig(
        num_trials=12, optimizer="asha", searchspace=Searchspace(x=("DOUBLE", [0, 1])),
        optimizer_options={"reduction_factor": 3, "resource_min": 1, "resource_max": 9},
        es_policy="none", workers=2, seed=7, root=str(runs), name="promoted")


def check_continued(result):
    records = {t["trial"]: t for t in result.trial_records}
    promoted = [t for t in records.values() if (t.get("info") or {}).get("parent")]
    assert promoted, "ASHA promoted no trial"
    for trial in promoted:
        parent = records[trial["info"]["parent"]]
        # it started where its lower rung ended, and trained only the difference
        assert trial["metrics"]["started_at"] == parent["budget"], (trial, parent)
        assert trial["metrics"]["trained"] == trial["budget"] - parent["budget"]
    trained = sum(t["metrics"]["trained"] for t in records.values())
    budgets = sum(t["budget"] for t in records.values())
    assert trained < budgets
    return promoted


def test_a_promoted_trial_continues_from_its_lower_rung(tmp_path):
    result = experiment.lagom(resumable, asha(tmp_path, tmp_path / "runs"))
    assert result.state == "finished"
    promoted = check_continued(result)
    # the folders are in the run directory, one per configuration
    folder = os.path.join(result.run_dir, config_checkpoint(promoted[0]["params"]))
    with open(os.path.join(folder, "state.pkl"), "rb") as handle:
        assert pickle.load(handle)["epochs"] >= promoted[0]["budget"]


def test_promotions_continue_on_workers_that_do_not_share_the_disk(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    private_workers(monkeypatch, tmp_path, runs)
    result = experiment.lagom(resumable, asha(tmp_path, runs))
    assert result.state == "finished"
    promoted = check_continued(result)
    # the state reached the driver's run directory and the worker's record names it
    folder = os.path.join(result.run_dir, config_checkpoint(promoted[0]["params"]))
    assert os.path.exists(os.path.join(folder, "state.pkl"))
    with open(os.path.join(result.run_dir, "journal.jsonl")) as handle:
        assert any(json.loads(line)["type"] == "trial_finished" for line in handle)


@pytest.mark.parametrize("rank, path, allowed", [
    (None, "own/state.pkl", True), (None, "checkpoints/config-0123456789abcdef/x", False),
    (None, "trials/x", False), (0, "checkpoints/epoch-3/x", True)])
def test_a_trial_writes_only_its_own_configuration_folder(rank, path, allowed):
    trial = Trial({"x": 0.5}, trial_type="optimization")
    if rank is not None:
        trial.info_dict["rank"] = rank
    own = config_checkpoint(trial.params)
    parts = path.replace("own", own).split("/")
    assert _may_checkpoint(trial, parts) is allowed
