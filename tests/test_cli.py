"""The maggy-magic command: run notebooks with papermill, list and show runs."""

import json
import os
import subprocess
import sys

import nbformat
import pytest

from maggy_magic import HyperparameterOptConfig, Searchspace, experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "maggy_magic.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=300)


def square(x):
    return x * x


def explode(x):
    raise RuntimeError("the model diverged")


def _runs():
    space = Searchspace(x=("DISCRETE", [1, 2, 3]))
    good = experiment.lagom(square, HyperparameterOptConfig(
        num_trials=3, optimizer="gridsearch", searchspace=space, es_policy="none",
        name="squares", workers=1))
    with pytest.raises(Exception) as info:
        experiment.lagom(explode, HyperparameterOptConfig(
            num_trials=2, searchspace=space, es_policy="none", name="boom", workers=1))
    return good, info.value.result


def test_ls_lists_runs_with_state_and_best_metric():
    good, bad = _runs()
    out = cli("ls")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["experiment", "run", "state"]
    row = next(line for line in lines if good.run_id in line)
    assert row.split()[:3] == ["squares", good.run_id, "finished"] and "metric=9" in row
    row = next(line for line in lines if bad.run_id in line)
    assert row.split()[:3] == ["boom", bad.run_id, "failed"]
    only = cli("ls", "--name", "boom").stdout
    assert bad.run_id in only and good.run_id not in only
    assert "no runs under" in cli("ls", "--root", "elsewhere").stdout


def test_show_prints_summary_trials_and_directory():
    good, bad = _runs()
    out = cli("show", f"squares/{good.run_id}")
    assert out.returncode == 0, out.stderr
    assert "3 finished" in out.stdout and f"run directory: {good.run_dir}" in out.stdout
    table = out.stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("trial"))
    assert table[header + 1].split()[2] == "9"  # best first
    failed = cli("show", bad.run_dir)
    assert "the model diverged" in failed.stdout and "failed" in failed.stdout
    missing = cli("show", good.run_id[:-1] + "x")
    assert missing.returncode == 2 and "did you mean" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def region_data(ablated_features):
    return sorted(ablated_features)


def count_regions(dataset_function):
    return 10 - len(dataset_function())  # the base keeps every region: the best score


def test_show_prints_an_ablation_studys_components():
    from maggy_magic import AblationConfig, AblationStudy

    study = AblationStudy("regions", 1, "y", dataset_generator=region_data)
    study.features.include("top", "center")
    result = experiment.lagom(count_regions, AblationConfig(
        study, name="regions", workers=1))
    out = cli("show", f"regions/{result.run_id}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout[out.stdout.index("components (difference from the base):"):]
    rows = [line.split() for line in lines.splitlines()[2:5]]
    assert [(row[0], row[1], row[-1]) for row in rows] == [
        ("base", "base", "0.0"), ("top", "feature", "-1.0"), ("center", "feature", "-1.0")]


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n_trials = 2\nname = 'nb'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("%load_ext maggy_magic"),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


CELL = """%%maggy hpo --trials $n_trials --name {name} --workers 2 -o res
from maggy_magic import Searchspace
space = Searchspace(x=("DOUBLE", [0, 1]))

def train(x, reporter):
    print(f"training with x={x:.3f}")
    reporter.broadcast(x, 0)
    return x
"""


def test_run_executes_a_notebook_with_parameters():
    _notebook("hpo.ipynb", CELL)
    out = cli("run", "hpo.ipynb", "done.ipynb", "-p", "n_trials", "3", "-p", "name", "cli")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "3 trials: 3 finished" in out.stdout
    run_dir = next(line.split(": ", 1)[1] for line in out.stdout.splitlines()
                   if line.startswith("run directory: "))
    assert os.path.isdir(run_dir) and os.path.basename(os.path.dirname(run_dir)) == "cli"
    assert f"output notebook: {os.path.abspath('done.ipynb')}" in out.stdout
    # --log-output streamed the cell's text progress while it ran
    assert "[finished] 3 trials: 3 finished" in out.stderr
    done = nbformat.read("done.ipynb", as_version=4)
    outputs = done.cells[-1].outputs
    html = [o for o in outputs if "text/html" in o.get("data", {})]
    assert html and "best" in html[-1]["data"]["text/html"]
    with open(os.path.join(run_dir, "result.json")) as handle:
        assert len(json.load(handle)["trials"]) == 3
    # the live dashboard's final state is saved in the output notebook
    state = done.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert "AnyModel" in {model["model_name"] for model in state.values()}


def test_run_fails_when_the_experiment_fails():
    _notebook("bad.ipynb", CELL.replace("return x", "raise ValueError('bad model')"))
    out = cli("run", "bad.ipynb", "bad.out.ipynb")
    assert out.returncode == 1
    assert "bad model" in out.stdout + out.stderr
    done = nbformat.read("bad.out.ipynb", as_version=4)
    errors = [o for o in done.cells[-1].outputs if o.get("output_type") == "error"]
    assert errors and "bad model" in errors[0]["evalue"]


def test_help_is_complete():
    out = cli("--help")
    for command in ("run", "ls", "show"):
        assert command in out.stdout
    assert "-p, --parameter NAME VALUE" in cli("run", "--help").stdout
