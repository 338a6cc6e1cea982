"""Each pip extra brings what its feature needs: the wheel, installed with one extra at a
time into a fresh venv (``pip install 'WHEEL[EXTRA]'``, no setup script), runs that
extra's smallest real job (``tests/extra_jobs.py``).

The venvs are cached outside the checkout, keyed on the extra's requirements in the
wheel's metadata (``tests/extra_envs.py``): a first run downloads and installs
TensorFlow, PyTorch and pyspark; ``scripts/run-tests.sh`` builds them before the suite
runs, so each test here only reinstalls the wheel and runs its job.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import extra_envs
import extra_jobs
import pytest
from extra_envs import ROOT, build_wheel, clean_env, extra_python, extra_requirements
from kernels import running_kernel
from livy_server import LivyServer

JOBS_SCRIPT = Path(__file__).with_name("extra_jobs.py")
#: The most a job may run once its venv exists.
JOB_TIMEOUT = 240

#: Every third-party module maggy_magic imports: the extra that brings it (None: a
#: dependency of every install) and the requirement of that extra that provides it.
FEATURE_IMPORTS = {
    "cloudpickle": (None, "cloudpickle"), "pandas": (None, "pandas"), "click": (None, "click"),
    "cryptography": (None, "cryptography"),
    "IPython": ("notebook", "ipython"), "ipykernel": ("notebook", "ipykernel"),
    "anywidget": ("notebook", "anywidget"), "traitlets": ("notebook", "traitlets"),
    "zmq": ("notebook", "pyzmq"),
    "pyspark": ("spark", "pyspark"), "pyarrow": ("connect", "pyspark[connect]"),
    "tensorflow": ("tf", "tensorflow"), "keras": ("tf", "tensorflow"),
    "torch": ("torch", "torch"),
    "optuna": ("bayes", "optuna"), "scipy": ("bayes", "scipy"),
    "sklearn": ("importance", "scikit-learn"), "mlflow": ("mlflow", "mlflow-skinny"),
    "tensorboard": ("tensorboard", "tensorboard"),
    "requests": ("livy", "requests"), "requests_kerberos": ("kerberos", "requests-kerberos"),
    "fsspec": ("storage", "fsspec"),
    "papermill": ("papermill", "papermill"), "nbformat": ("papermill", "nbformat"),
}
#: Imported when present, never required: Livy's Kerberos auth falls back to it when
#: requests-kerberos is missing.
OPTIONAL_IMPORTS = {"requests_gssapi"}
#: Distributions of TensorFlow itself: an environment must hold at most one of them.
TENSORFLOWS = {"tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def names(requirements):
    """Requirement strings -> their names with extras, e.g. ``pyspark[connect]``."""
    from packaging.requirements import Requirement

    found = set()
    for line in requirements:
        req = Requirement(line)
        found.add(req.name.lower() + (f"[{','.join(sorted(req.extras))}]" if req.extras
                                      else ""))
    return found


def imported_modules():
    """Top-level modules that maggy_magic's code imports, other than its own and the
    standard library's."""
    found = set()
    for path in (Path(ROOT) / "maggy_magic").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"maggy_magic"}


# -- the metadata: what each extra asks for --------------------------------------------
def test_every_import_of_the_package_comes_with_its_extra(wheel):
    """A new import without an extra that brings it (or an extra that lost what one of
    its features imports) fails here, before any venv is built."""
    assert imported_modules() == set(FEATURE_IMPORTS) | OPTIONAL_IMPORTS
    for module, (extra, requirement) in FEATURE_IMPORTS.items():
        assert requirement in names(extra_requirements(wheel, extra)), (module, extra)
    assert "requests-kerberos" not in names(extra_requirements(wheel, "livy"))


def test_each_extra_asks_for_one_tensorflow_and_keras_2_with_it(wheel):
    """tf-keras asks for the ``tensorflow`` distribution: an extra that named another
    TensorFlow (``tensorflow-cpu``) next to it would install two into one venv."""
    extras = extra_envs.wheel_metadata(wheel).get_all("Provides-Extra")
    assert {"tf", "notebooks", "bench", "test", "all"} <= set(extras)
    for extra in extras:
        tensorflows = names(extra_requirements(wheel, extra)) & TENSORFLOWS
        assert tensorflows <= {"tensorflow"}, (extra, tensorflows)
        if tensorflows:
            assert "tf-keras" in names(extra_requirements(wheel, extra)), extra
    assert {"tensorflow", "tf-keras"} <= names(extra_requirements(wheel, "tf"))


# -- each extra, installed alone, runs its feature -------------------------------------
def run_job(python, job, tmp_path, *args, env=None):
    out = tmp_path / f"{job}.json"
    done = subprocess.run([python, str(JOBS_SCRIPT), job, str(out), *args], cwd=tmp_path,
                          env=clean_env(SPARK_LOCAL_IP="127.0.0.1", **(env or {})),
                          capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    answer = json.loads(out.read_text())
    # the venv's own copy ran, not the checkout's
    assert answer["maggy_magic"].startswith(str(Path(python).parents[1])), answer
    return answer


def distributions(python):
    """Names of the distributions installed in ``python``'s environment."""
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps(sorted({d.metadata['Name'].lower().replace('_', '-') "
            "for d in m.distributions()})))")
    return set(json.loads(subprocess.run([python, "-c", code], check=True, env=clean_env(),
                                         capture_output=True, text=True).stdout))


def check_tf(python, tmp_path):
    installed = distributions(python)
    assert installed & TENSORFLOWS == {"tensorflow"} and "tf-keras" in installed
    answer = run_job(python, "tf", tmp_path)
    chief = answer["metrics"]
    assert answer["state"] == "finished" and answer["ranks"] == 2
    # model.fit of tf-keras trained under the 2-rank strategy, and learned
    assert chief["replicas"] == 2 and chief["rank"] == 0 and chief["keras"] == "tf_keras"
    assert chief["loss"] < chief["first_loss"]


def check_torch(python, tmp_path):
    answer = run_job(python, "torch", tmp_path)
    chief = answer["metrics"]
    assert answer["state"] == "finished" and answer["ranks"] == 2
    assert chief["world"] == 2 and chief["rank"] == 0 and chief["ddp"] == \
        "DistributedDataParallel"
    assert -chief["metric"] < chief["first_loss"]


def check_spark(python, tmp_path):
    answer = run_job(python, "spark", tmp_path)
    assert answer["master"] == "local[2]"
    assert answer["state"] == "finished" and answer["finished"] == 4


def check_livy(python, tmp_path):
    conf = tmp_path / "sparkmagic"           # no sparkmagic config of the user's
    conf.mkdir()
    with LivyServer(spark_master="local[2]") as server:
        answer = run_job(python, "livy", tmp_path, server.url,
                         env={"SPARKMAGIC_CONF_DIR": str(conf)})
        assert list(server.sessions) == [0]       # the kerberos try started none
    assert answer["state"] == "finished" and answer["finished"] == 3
    assert answer["kerberos"] == "ConfigError: livy kerberos auth needs requests-kerberos " \
        "or requests-gssapi; pip install 'maggy-magic[kerberos]'"


def check_plain(python, tmp_path):
    installed = distributions(python)
    assert not installed & ({"pyspark", "torch", "ipython", "optuna", "requests"} | TENSORFLOWS)
    answer = run_job(python, "", tmp_path)
    assert answer["state"] == "finished" and answer["finished"] == 4
    assert "plain-search" in answer["ls"], answer["ls"]


def check_bayes(python, tmp_path):
    answer = run_job(python, "bayes", tmp_path)
    assert answer["state"] == "finished" and answer["finished"] == 8
    assert len({p["x"] for p in answer["params"]}) == 8


def check_importance(python, tmp_path):
    answer = run_job(python, "importance", tmp_path)
    assert answer["state"] == "finished" and answer["finished"] == 12
    ranked = [name for name, _share in answer["importances"]]
    assert ranked and ranked[0] == "x", answer["importances"]


def check_mlflow(python, tmp_path):
    from mlflow_server import MlflowServer

    # the server runs from the test's environment; the extra's venv has the client only
    with MlflowServer(str(tmp_path / "mlflow")) as server:
        answer = run_job(python, "mlflow", tmp_path, server.url)
    assert answer["state"] == "finished" and answer["finished"] == 3
    assert answer["runs"] == 4 and answer["children"] == 3  # the parent, one per trial


def check_papermill(python, tmp_path):
    answer = run_job(python, "papermill", tmp_path)
    assert answer["rc"] == 0, answer["stderr"]
    assert "trials finished: 3" in answer["printed"], answer
    assert "output notebook:" in answer["stdout"], answer["stdout"]


def check_tensorboard(python, tmp_path):
    """The run's HParams summary: the experiment, and one session per trial with the
    metric's scalars."""
    answer = run_job(python, "tensorboard", tmp_path)
    tags = answer["tags"]
    assert "_hparams_/experiment" in tags["tensorboard"], tags
    trials = [folder for folder in tags if folder != "tensorboard"]
    assert len(trials) == 2, tags
    for folder in trials:
        assert {"_hparams_/session_start_info", "score"} <= set(tags[folder]), tags


NOTEBOOK_CELL = """%%maggy hpo --trials 2 --workers 2 --es-policy none --seed 3 --metric score \
--name widget -o result
from maggy_magic import Searchspace
space = Searchspace(x=("DOUBLE", [0, 1]))

def train(x, reporter):
    reporter.broadcast(x, 0)
    return {"score": x}
"""


def check_notebook(python, tmp_path):
    """A Jupyter kernel of the venv: ``%load_ext``, a ``%%maggy`` cell whose dashboard
    widget opens and syncs the finished run."""
    with running_kernel(tmp_path, {"SPARK_LOCAL_IP": "127.0.0.1"}, JOB_TIMEOUT,
                        python=python) as kernel:
        assert kernel.value("__import__('sys').executable") == python
        reply, _ = kernel.execute("%load_ext maggy_magic")
        assert reply["content"]["status"] == "ok", reply["content"]
        reply, messages = kernel.execute(NOTEBOOK_CELL)
        assert reply["content"]["status"] == "ok", reply["content"]
        opened = [m for m in messages if m["msg_type"] == "comm_open" and "_anywidget_id" in
                  ((m["content"].get("data") or {}).get("state") or {})]
        assert len(opened) == 1, [m["msg_type"] for m in messages]
        states = [((m["content"].get("data") or {}).get("state") or {}).get("status")
                  for m in messages if m["msg_type"] == "comm_msg"]
        assert any(s and s.get("state") == "finished" for s in states), states
        assert kernel.value("[result.state, result.num_finished]") == ["finished", 2]


#: extra -> its check (the venv's python, a folder to work in); "" is the plain install.
#: The mlflow extra's row goes here, its job in ``extra_jobs.JOBS``.
EXTRA_CHECKS = {
    "": check_plain,
    "tf": check_tf,
    "torch": check_torch,
    "spark": check_spark,
    "livy": check_livy,
    "bayes": check_bayes,
    "notebook": check_notebook,
    "papermill": check_papermill,
    "tensorboard": check_tensorboard,
    "importance": check_importance,
    "mlflow": check_mlflow,
}


@pytest.mark.slow
@pytest.mark.parametrize("extra", sorted(EXTRA_CHECKS), ids=lambda extra: extra or "plain")
def test_the_wheel_with_one_extra_runs_its_feature(extra, wheel, tmp_path):
    python, built = extra_python(wheel, extra)
    if built is not None:
        print(f"built the venv of [{extra}] in {built:.0f} s")
    EXTRA_CHECKS[extra](python, tmp_path)


def test_jobs_and_checks_name_the_same_extras():
    assert set(extra_jobs.JOBS) | {"notebook"} == set(EXTRA_CHECKS)  # notebook: a kernel
