"""The smallest real job of each extra, run as a script by the Python of a venv that holds
maggy-magic's wheel with that extra and nothing else (``tests/test_extras.py``):

    python extra_jobs.py JOB OUT.json [ARG]

Each job runs through the public API as a user's notebook would and writes what the test
checks to OUT.json, with where ``maggy_magic`` was imported from. Run as ``__main__``, its
training functions travel to the workers by value (cloudpickle), as a notebook's do.
"""

import json
import os
import sys


def tf_train(lr, epochs, dist_context=None):
    """A laptop Keras function: ``model.fit`` on arrays, under the strategy in dist."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(4, 3)), axis=1).astype("int64")
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input(shape=(4,)),
                                 tf.keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=tf.keras.optimizers.SGD(lr), loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0)
    losses = history.history["loss"]
    return {"loss": losses[-1], "first_loss": losses[0],
            "replicas": model.distribute_strategy.num_replicas_in_sync,
            "keras": type(model).__module__.split(".")[0],
            "rank": json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index")}


def tf_job(_arg):
    from maggy_magic import TfDistributedConfig, experiment

    result = experiment.lagom(tf_train, TfDistributedConfig(
        workers=2, hparams={"lr": 0.5, "epochs": 3}, optimization_key="loss",
        direction="min", hb_interval=0.2))
    return {"state": result.state, "ranks": len(result.trials), "metrics": result.metrics}


def _torch_module():
    import torch

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.layer = torch.nn.Linear(3, 1)

        def forward(self, x):
            return self.layer(x).squeeze(-1)

    return Linear


def torch_train(module, train_set, lr, reporter):
    import torch

    from maggy_magic.distributed.context import current

    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(train_set, batch_size=8)
    losses = []
    for epoch in range(3):
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(module(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        reporter.broadcast(-losses[-1], epoch)
    ctx = current()
    return {"metric": -losses[-1], "first_loss": losses[0], "rank": ctx.rank,
            "world": ctx.world_size, "ddp": type(module).__name__}


def torch_job(_arg):
    import torch

    from maggy_magic import TorchDistributedConfig, experiment

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=generator)
    data = torch.utils.data.TensorDataset(x, x @ torch.tensor([2.0, -1.0, 0.5]) + 0.3)
    result = experiment.lagom(torch_train, TorchDistributedConfig(
        module=_torch_module(), dataset=[data], workers=2, hparams={"lr": 0.1}))
    return {"state": result.state, "ranks": len(result.trials), "metrics": result.metrics,
            "torch": torch.__version__}


def search(x, reporter):
    for step in range(3):
        reporter.broadcast(x * (step + 1), step)
    return {"score": x}


def driven(x, noise, reporter):
    """Only ``x`` moves the score."""
    return {"score": x}


def _hpo(fn=search, **kwargs):
    from maggy_magic import HyperparameterOptConfig, Searchspace, experiment

    kwargs.setdefault("searchspace", Searchspace(x=("DOUBLE", [0.0, 1.0])))
    config = HyperparameterOptConfig(optimization_key="score", direction="max", seed=3,
                                     es_policy="none", hb_interval=0.1, **kwargs)
    result = experiment.lagom(fn, config)
    return {"state": result.state, "finished": result.num_finished,
            "best": result.best_metric, "run_dir": result.run_dir,
            "params": [r["params"] for r in result.trial_records]}


def spark_job(_arg):
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master("local[2]").appName("extra-spark")
             .config("spark.ui.enabled", "false").getOrCreate())
    try:
        found = _hpo(num_trials=4, workers=2, backend="spark")
        found["master"] = spark.sparkContext.master
        return found
    finally:
        spark.stop()


def livy_job(url):
    from maggy_magic import MaggyError

    try:   # Kerberos auth is optional: without its packages, a one-line error
        _hpo(num_trials=1, backend="livy", backend_options={"url": url, "auth": "kerberos"})
        kerberos = None
    except MaggyError as exc:
        kerberos = f"{type(exc).__name__}: {exc}"
    found = _hpo(num_trials=3, workers=2, backend="livy", backend_options={"url": url})
    found["kerberos"] = kerberos
    return found


def plain_job(_arg):
    """The plain install: a search on local workers, then ``maggy-magic ls``."""
    import subprocess

    found = _hpo(num_trials=4, workers=2, name="plain-search")
    listed = subprocess.run([os.path.join(os.path.dirname(sys.executable), "maggy-magic"),
                             "ls"], capture_output=True, text=True, check=True)
    found["ls"] = listed.stdout
    return found


def bayes_job(_arg):
    found = _hpo(num_trials=8, workers=2, optimizer="tpe",
                 optimizer_options={"num_warmup_trials": 3})
    import optuna

    found["optuna"] = optuna.__version__
    return found


def mlflow_job(url):
    """A search logged to the tracking server at ``url``, read back with its client."""
    from mlflow.tracking import MlflowClient

    found = _hpo(num_trials=3, workers=2, mlflow=url)
    client = MlflowClient(tracking_uri=url)
    experiments = client.search_experiments()
    runs = [r for e in experiments for r in client.search_runs([e.experiment_id])]
    found["runs"] = len(runs)
    found["children"] = sum("mlflow.parentRunId" in r.data.tags for r in runs)
    return found


def importance_job(_arg):
    """A search where only ``x`` drives the score, then its fANOVA importances."""
    from maggy_magic import Searchspace
    from maggy_magic.runs import load_result
    from maggy_magic.ui.importance import param_importances

    space = Searchspace(x=("DOUBLE", [0.0, 1.0]), noise=("DOUBLE", [0.0, 1.0]))
    found = _hpo(driven, num_trials=12, workers=2, searchspace=space)
    records = load_result(found["run_dir"]).trial_records
    found["importances"] = param_importances(space.to_dict(), records)["importances"]
    return found


NOTEBOOK_CELLS = [
    ("n_trials = 2", ["parameters"]),
    ("%load_ext maggy_magic", []),
    ("%%maggy hpo --trials $n_trials --workers 2 --es-policy none --seed 3 --metric score "
     "--name unattended -o result\n"
     "from maggy_magic import Searchspace\n"
     "space = Searchspace(x=('DOUBLE', [0, 1]))\n\n"
     "def train(x, reporter):\n"
     "    reporter.broadcast(x, 0)\n"
     "    return {'score': x}", []),
    ("print('trials finished:', result.num_finished)", []),
]


def papermill_job(_arg):
    """``maggy-magic run`` of a parameterized notebook, in a kernel of this venv."""
    import subprocess

    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(source, metadata={"tags": tags})
        for source, tags in NOTEBOOK_CELLS])
    nbformat.write(notebook, "unattended.ipynb")
    ran = subprocess.run([os.path.join(os.path.dirname(sys.executable), "maggy-magic"), "run",
                          "unattended.ipynb", "-p", "n_trials", "3"],
                         capture_output=True, text=True)
    executed = nbformat.read("unattended.output.ipynb", as_version=4) \
        if os.path.exists("unattended.output.ipynb") else None
    printed = [out.get("text", "") for cell in (executed.cells if executed else [])
               for out in cell.get("outputs", [])]
    return {"rc": ran.returncode, "stdout": ran.stdout, "stderr": ran.stderr[-3000:],
            "printed": "".join(printed)}


def tensorboard_job(_arg):
    """A search, then the event files of its HParams summary, read back with
    TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from maggy_magic.hparams_summary import wait_for_writers

    found = _hpo(num_trials=2, workers=2)
    wait_for_writers(timeout=60)
    tags = {}
    for folder, _, files in os.walk(os.path.join(found["run_dir"], "tensorboard")):
        for name in files:
            rel = os.path.relpath(folder, found["run_dir"])
            for event in EventFileLoader(os.path.join(folder, name)).Load():
                tags.setdefault(rel, set()).update(v.tag for v in event.summary.value)
    found["tags"] = {folder: sorted(names) for folder, names in tags.items()}
    return found


#: extra ("" for the plain install) -> its job; the test's table names the same extras.
JOBS = {"": plain_job, "papermill": papermill_job, "tf": tf_job, "torch": torch_job,
        "spark": spark_job, "livy": livy_job, "bayes": bayes_job,
        "tensorboard": tensorboard_job, "importance": importance_job, "mlflow": mlflow_job}

if __name__ == "__main__":
    job, out = sys.argv[1], sys.argv[2]
    answer = JOBS[job](sys.argv[3] if len(sys.argv) > 3 else None)
    import maggy_magic

    answer["maggy_magic"] = maggy_magic.__file__
    with open(out, "w") as handle:
        json.dump(answer, handle)
