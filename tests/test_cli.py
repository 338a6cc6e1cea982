"""The maggy-magic command: run notebooks with papermill, list and show runs."""

import json
import os
import re
import subprocess
import sys

import nbformat
import pytest

from maggy_magic import ExperimentFailed, HyperparameterOptConfig, Searchspace, experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    # below the suite's global timeout, so a hang shows as this command's timeout
    return subprocess.run([sys.executable, "-m", "maggy_magic.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=240)


def error_line(out):
    """The command's one-line error: the last line of stderr, with no traceback."""
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error: "), out.stderr
    return lines[-1]


def square(x):
    return x * x


def explode(x):
    raise RuntimeError("the model diverged")


def _runs():
    space = Searchspace(x=("DISCRETE", [1, 2, 3]))
    good = experiment.lagom(square, HyperparameterOptConfig(
        num_trials=3, optimizer="gridsearch", searchspace=space, es_policy="none",
        name="squares", workers=1))
    with pytest.raises(ExperimentFailed, match="trial 0000 failed: RuntimeError: the model "
                       "diverged") as info:
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


def test_show_and_tensorboard_of_an_unknown_run_exit_2_with_one_line():
    # no run at all: `latest` names nothing
    for command in ("show", "tensorboard"):
        out = cli(command, "latest")
        assert out.returncode == 2 and out.stdout == ""
        assert error_line(out) == ("Error: no runs under maggy_experiments; run an "
                                   "experiment first")
        assert len(out.stderr.strip().splitlines()) == 1
    good, _ = _runs()
    out = cli("show", "zzzz")            # nothing close to it: no hint
    assert out.returncode == 2
    assert error_line(out) == ("Error: no run 'zzzz' under maggy_experiments; list the runs "
                               "with %maggy list or maggy-magic ls")
    out = cli("show", good.run_id, "--name", "nosuch")
    assert out.returncode == 2
    assert error_line(out).startswith("Error: no run ") and "for experiment 'nosuch'" \
        in out.stderr
    out = cli("show", "latest", "--rows", "x")   # click's own check of an option
    assert out.returncode == 2
    assert error_line(out) == "Error: Invalid value for '--rows': 'x' is not a valid integer."


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
    # --log-output showed the text progress (and the prints of the cell) while it ran;
    # the saved notebook has the summary, not the progress
    assert "[finished] 3 trials: 3 finished" in out.stderr
    done = nbformat.read("done.ipynb", as_version=4)
    outputs = done.cells[-1].outputs
    assert not any("[finished]" in o.get("text", "") or "[running]" in o.get("text", "")
                   for o in outputs), outputs
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
    # two workers: whichever trial failed first is named
    assert re.fullmatch(r"Error: cell 3 raised ExperimentFailed: trial 000[01] failed: "
                        r"ValueError: bad model \(1 failed trial\(s\), max_failures=0\) "
                        r"\(see bad\.out\.ipynb\)", error_line(out)), out.stderr
    # the failed run is reported and kept: its summary and directory are printed
    assert "[failed]" in out.stdout or "failed" in out.stdout
    assert "run directory: " in out.stdout
    done = nbformat.read("bad.out.ipynb", as_version=4)
    errors = [o for o in done.cells[-1].outputs if o.get("output_type") == "error"]
    assert errors and "bad model" in errors[0]["evalue"]


def test_run_rejects_a_notebook_path_that_is_not_a_notebook():
    out = cli("run", "nope.ipynb")
    assert out.returncode == 2
    assert error_line(out) == ("Error: Invalid value for 'NOTEBOOK': File 'nope.ipynb' does "
                               "not exist.")
    os.mkdir("folder.ipynb")
    out = cli("run", "folder.ipynb")
    assert out.returncode == 2
    assert error_line(out) == ("Error: Invalid value for 'NOTEBOOK': File 'folder.ipynb' is "
                               "a directory.")
    with open("junk.ipynb", "w") as handle:
        handle.write("{not json")
    out = cli("run", "junk.ipynb")
    assert out.returncode == 1
    assert error_line(out).startswith("Error: papermill could not run junk.ipynb: "
                                      "NotJSONError: Notebook does not appear to be JSON")
    assert not os.path.exists("junk.output.ipynb")


def test_run_fails_when_a_plain_cell_raises():
    _notebook("typo.ipynb", "result = undefined_name + 1")
    out = cli("run", "typo.ipynb")
    assert out.returncode == 1
    assert error_line(out) == ("Error: cell 3 raised NameError: name 'undefined_name' is not "
                               "defined (see typo.output.ipynb)")
    assert "the notebook ran no experiment" in out.stdout


def test_bad_parameters_exit_with_one_line_before_the_notebook_runs():
    _notebook("hpo.ipynb", CELL)
    # -p takes a name and a value
    out = cli("run", "hpo.ipynb", "-p", "n_trials")
    assert out.returncode == 2
    assert error_line(out) == "Error: Option '-p' requires 2 arguments."
    # a name the parameters cell does not set would be set in a cell of its own and the
    # run would go on with the notebook's own value
    out = cli("run", "hpo.ipynb", "-p", "n_trails", "3")
    assert out.returncode == 2 and out.stdout == ""
    assert error_line(out) == ("Error: -p n_trails: the parameters cell of hpo.ipynb sets no "
                               "variable 'n_trails'; did you mean 'n_trials'? (it sets: n_trials, "
                               "name)")
    assert len(out.stderr.strip().splitlines()) == 1
    assert not os.path.exists("hpo.output.ipynb")            # nothing ran
    nb = nbformat.read("hpo.ipynb", as_version=4)
    nb.cells[0].metadata["tags"] = []
    nbformat.write(nb, "untagged.ipynb")
    out = cli("run", "untagged.ipynb", "-p", "n_trials", "3")
    assert out.returncode == 2
    assert error_line(out) == ("Error: -p n_trials: untagged.ipynb has no cell tagged "
                               "'parameters'; tag the cell that sets the notebook's "
                               "parameters, or drop -p")


def test_a_parameter_value_the_notebook_cannot_use_fails_its_cell():
    _notebook("hpo.ipynb", CELL)
    # "three" is not JSON, so it reaches the notebook as the text 'three'
    out = cli("run", "hpo.ipynb", "-p", "n_trials", "three")
    assert out.returncode == 1
    assert error_line(out) == ("Error: cell 4 raised ConfigError: --trials takes a whole "
                               "number, got 'three' (see hpo.output.ipynb)")
    assert "the notebook ran no experiment" in out.stdout
    assert not os.path.exists("maggy_experiments")


def test_help_is_complete():
    out = cli("--help")
    for command in ("run", "ls", "show"):
        assert command in out.stdout
    assert "-p, --parameter NAME VALUE" in cli("run", "--help").stdout
