"""Every notebook in notebooks/ runs unattended through `maggy-magic run` (papermill)."""

import glob
import json
import os
import shutil
import subprocess
import sys

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
#: Small, fast parameters per notebook (names of their `parameters` cells).
FAST = {"01_laptop.ipynb": {"epochs": "2"},
        "02_hpo.ipynb": {"n_trials": "3", "epochs": "2"},
        "03_ablation.ipynb": {"epochs": "1"},
        "04_dist.ipynb": {"workers": "2", "epochs": "2"}}

pytestmark = pytest.mark.slow


def run_notebook(name, params, tmp_path):
    work = tmp_path / "nb"
    shutil.copytree(os.path.join(ROOT, "notebooks"), work,
                    ignore=shutil.ignore_patterns("*.output.ipynb", "maggy_experiments"))
    args = [sys.executable, "-m", "maggy_magic.cli", "run", str(work / name),
            str(work / "out.ipynb")]
    for key, value in params.items():
        args += ["-p", key, value]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    out = nbformat.read(str(work / "out.ipynb"), as_version=4) \
        if (work / "out.ipynb").exists() else None
    return proc, out


def test_every_notebook_has_fast_parameters():
    assert {os.path.basename(p) for p in NOTEBOOKS} == set(FAST)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path
        for name in FAST[os.path.basename(path)]:
            assert f"{name} = " in tagged[0].source, (path, name)


def test_laptop_notebook_trains_in_plain_python(tmp_path):
    proc, out = run_notebook("01_laptop.ipynb", FAST["01_laptop.ipynb"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the notebook ran no experiment" in proc.stdout
    text = "".join(o.get("text", "") for o in out.cells[-1].outputs)
    assert "epoch 1: val_accuracy=" in text and "epoch 2" not in text  # epochs=2 applied
    result = out.cells[-1].outputs[-1]["data"]["text/plain"]
    assert "'accuracy': 0." in result


@pytest.mark.parametrize("backend", ["local", "spark"])
def test_hpo_notebook_unattended(tmp_path, backend):
    params = dict(FAST["02_hpo.ipynb"], backend=backend)
    proc, out = run_notebook("02_hpo.ipynb", params, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 trials: " in proc.stdout  # the parameter override changed the trial count
    run_dir = next(line.split(": ", 1)[1] for line in proc.stdout.splitlines()
                   if line.startswith("run directory: "))
    assert os.path.exists(os.path.join(run_dir, "result.json"))
    magic = next(c for c in out.cells if c.source.startswith("%%maggy hpo"))
    html = [o["data"]["text/html"] for o in magic.outputs if "text/html" in o.get("data", {})]
    assert html and "best" in html[-1] and "<table" in html[-1]  # the static summary
    # the text progress went to the terminal; the saved cell keeps the dashboard's final
    # state and the summary, not a progress line per half second
    assert "[finished] 3 trials" in proc.stderr
    streamed = "".join(o.get("text", "") for o in magic.outputs if o["output_type"] == "stream")
    assert "trials" not in streamed, streamed
    assert len(magic.outputs) <= 3, [o["output_type"] for o in magic.outputs]
    state = out.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert any(m["model_name"] == "AnyModel" for m in state.values())
    with open(os.path.join(run_dir, "config.json")) as handle:
        assert f'"backend": "{backend}"' in handle.read()


def test_ablation_notebook_unattended(tmp_path):
    proc, out = run_notebook("03_ablation.ipynb", FAST["03_ablation.ipynb"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6 trials: 6 finished" in proc.stdout  # base + 2 regions + layer + group + model
    run_dir = next(line.split(": ", 1)[1] for line in proc.stdout.splitlines()
                   if line.startswith("run directory: "))
    with open(os.path.join(run_dir, "result.json")) as handle:
        trials = json.load(handle)["trials"]
    assert [t["info"]["component"] for t in trials] == ["base", "top", "center", "dropout",
                                                        "hidden*", "small"]
    assert all(len(t["steps"]) == 1 for t in trials)  # epochs=1 reached the workers
    magic = next(c for c in out.cells if c.source.startswith("%%maggy ablation"))
    html = [o["data"]["text/html"] for o in magic.outputs if "text/html" in o.get("data", {})]
    assert html and 'class="maggy-ablation"' in html[-1] and "<table" in html[-1]
    table = out.cells[-1].outputs[-1]["data"]
    assert "difference" in table["text/plain"] and "hidden*" in table["text/plain"]


def test_dist_notebook_unattended(tmp_path):
    proc, out = run_notebook("04_dist.ipynb", FAST["04_dist.ipynb"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = next(line.split(": ", 1)[1] for line in proc.stdout.splitlines()
                   if line.startswith("run directory: "))
    with open(os.path.join(run_dir, "result.json")) as handle:
        result = json.load(handle)
    ranks = sorted((t["info"]["rank"], len(t["steps"])) for t in result["trials"])
    assert ranks == [(0, 2), (1, 2)]  # 2 ranks, epochs=2 reached both
    assert result["metrics"]["accuracy"] > 0.5  # the chief's result: it learned
    printed = "".join(o.get("text", "") for o in out.cells[-1].outputs)
    assert "after 2 epochs on 2 ranks" in printed
