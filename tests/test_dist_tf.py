"""TensorFlow data-parallel training: 2 CPU ranks under MultiWorkerMirroredStrategy,
through ``experiment.lagom`` and the real driver, worker loop and backends."""

import json
import multiprocessing
import os
import subprocess
import sys

import cloudpickle
import pytest
import tf_dist_fns
from tf_dist_fns import N_EXAMPLES

from maggy_magic import experiment
from maggy_magic.distributed import tf as dist_tf
from maggy_magic.distributed.config import TfDistributedConfig
from maggy_magic.errors import ConfigError, DistTrainingError

# the worker processes get the test functions with the training function, by value
cloudpickle.register_pickle_by_value(tf_dist_fns)

#: Loss after each epoch of 2 ranks vs one process over the same global batches: the
#: all-reduced mean gradient equals the single-process one up to float32 summation order.
LOSS_TOLERANCE = 1e-5


def ids(work_dir, rank):
    with open(os.path.join(work_dir, f"ids_{rank}.json")) as handle:
        return json.load(handle)


def _single_main(work_dir, kwargs):
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    result = tf_dist_fns.train_fit(**kwargs)
    with open(os.path.join(work_dir, "single.json"), "w") as handle:
        json.dump(result, handle)


def run_single(work_dir, kwargs):
    """``train_fit(**kwargs)`` in one fresh process without any strategy: the peer."""
    proc = multiprocessing.get_context("spawn").Process(
        target=_single_main, args=(str(work_dir), kwargs))
    proc.start()
    proc.join(300)
    with open(os.path.join(work_dir, "single.json")) as handle:
        return json.load(handle)


def config(**kwargs):
    options = dict(workers=2, optimization_key="loss", direction="min", hb_interval=0.2)
    options.update(kwargs)
    return TfDistributedConfig(**options)


@pytest.mark.slow
def test_fit_on_arrays_matches_one_process_and_shards_the_data(tmp_path):
    gang_dir, single_dir, ckpt = tmp_path / "gang", tmp_path / "single", tmp_path / "ckpt"
    gang_dir.mkdir()
    single_dir.mkdir()
    hparams = {"lr": 0.5, "epochs": 3}
    result = experiment.lagom(tf_dist_fns.train_fit, config(
        hparams=dict(hparams, out_dir=str(gang_dir)), checkpoint_dir=str(ckpt)))
    chief = result.metrics
    assert chief["rank"] == 0 and chief["replicas"] == 2  # the chief's result, in scope
    losses = json.loads(chief["losses"])
    assert losses[-1] < 0.6 * losses[0]  # converges
    assert len(result.trials) == 2 and result.attempts == 1

    single = run_single(single_dir, dict(hparams, out_dir=str(single_dir)))
    assert single["replicas"] == 1
    assert losses == pytest.approx(json.loads(single["losses"]), abs=LOSS_TOLERANCE)

    # each rank trained on a disjoint half of every epoch; together on every example
    seen0, seen1 = ids(gang_dir, 0), ids(gang_dir, 1)
    assert len(seen0) == len(seen1) == 3 * N_EXAMPLES // 2
    assert not set(seen0) & set(seen1)
    assert set(seen0) | set(seen1) == set(range(N_EXAMPLES))

    # only the chief's checkpoints remain: no rank's temporary directory
    assert sorted(os.listdir(ckpt)) == sorted(
        ["checkpoint"] + [f"ckpt-{e}.{ext}" for e in (1, 2, 3)
                          for ext in ("index", "data-00000-of-00001")])


@pytest.mark.slow
def test_maggy_config_model_and_datasets(tmp_path):
    """Maggy's contract: the model factory is built in the strategy's scope, the arrays
    become datasets that fit shards by element, hyperparameters arrive as ``hparams``."""
    result = experiment.lagom(tf_dist_fns.train_maggy_style, config(
        model=tf_dist_fns.build, dataset=[tf_dist_fns.data, tf_dist_fns.data],
        hparams={"lr": 0.5, "batch": 32, "epochs": 2, "out_dir": str(tmp_path)}))
    assert result.metrics["replicas"] == 2
    assert result.metrics["loss"] < result.metrics["first_loss"]
    seen0, seen1 = ids(tmp_path, 0), ids(tmp_path, 1)
    # 2 training epochs and one evaluation, each split between the ranks
    assert len(seen0) == len(seen1) == 3 * N_EXAMPLES // 2
    assert not set(seen0) & set(seen1)


@pytest.mark.slow
def test_maggy_process_data_reads_the_dataset_paths_on_every_rank(tmp_path):
    """Maggy's positional order (model, dataset, process_data, ..., hparams): only the
    paths travel; each rank reads them with process_data, and the data shards as before."""
    import numpy as np

    x, y = tf_dist_fns.data()
    paths = []
    for name in ("train", "test"):
        paths.append(str(tmp_path / f"{name}.npz"))
        np.savez(paths[-1], x=x, y=y)
    result = experiment.lagom(tf_dist_fns.train_maggy_style, TfDistributedConfig(
        tf_dist_fns.build, paths, tf_dist_fns.read_npz, False, "tfDist", 0.2, "",
        {"lr": 0.5, "batch": 32, "epochs": 2, "out_dir": str(tmp_path)},
        workers=2, optimization_key="loss", direction="min"))
    assert result.state == "finished" and result.metrics["replicas"] == 2
    for path in paths:
        readers = {int(open(f"{path}.read-by-{rank}").read()) for rank in (0, 1)}
        assert len(readers) == 2 and os.getpid() not in readers  # each rank, not here
    seen0, seen1 = ids(tmp_path, 0), ids(tmp_path, 1)
    assert len(seen0) == len(seen1) == 3 * N_EXAMPLES // 2 and not set(seen0) & set(seen1)


def test_process_data_that_is_not_a_function_is_one_line():
    with pytest.raises(ConfigError) as info:
        TfDistributedConfig(None, ["a.npz"], "read_npz")
    assert str(info.value) == ("process_data must be a function that reads dataset and "
                               "returns the data, got str")


@pytest.mark.slow
def test_a_killed_rank_restarts_from_the_chiefs_backup(tmp_path):
    ckpt = tmp_path / "ckpt"
    result = experiment.lagom(tf_dist_fns.train_dies_once, config(
        hparams={"lr": 0.5, "epochs": 5}, max_restarts=1, checkpoint_dir=str(ckpt)))
    assert result.attempts == 2
    assert result.metrics["attempt"] == 1
    # the second attempt resumed after a backed-up epoch instead of starting over
    assert 1 <= result.metrics["epochs_run"] < 5
    # fit deleted the chief's backup when it completed; the other rank's copy is gone too
    left = list(os.walk(ckpt))
    assert not any(files for _, _, files in left)
    assert not any(d.startswith("workertemp") for _, dirs, _ in left for d in dirs)


@pytest.mark.slow
def test_keras3_fit_gets_a_one_line_error():
    with pytest.raises(DistTrainingError) as info:
        experiment.lagom(tf_dist_fns.train_keras3, config())
    message = str(info.value)
    assert "from tensorflow import keras" in message and "\n" not in message


class Built:
    """Looks like a built Keras model."""

    def fit(self):
        pass

    def __call__(self):
        pass


@pytest.mark.parametrize("model, dataset, message", [
    (Built(), None, "got a built Built; pass its class"),
    (3, None, "model must be a Keras model class or a function"),
    (None, "train.csv", "a dataset item must be a tuple of arrays"),
    (None, [lambda: 0] * 3, "dataset must be one item or a list [train, test]"),
    (None, ([1, 2], [3, 4]), "a dataset item must be a tuple of arrays"),
])
def test_bad_model_or_dataset_is_refused_before_any_worker_starts(model, dataset, message):
    with pytest.raises(DistTrainingError, match=message.replace("[", r"\[")) as info:
        experiment.lagom(tf_dist_fns.train_keras3, config(model=model, dataset=dataset))
    assert "\n" not in str(info.value)
    assert not os.path.exists("maggy_experiments")


def test_the_checks_import_no_tensorflow(tmp_path):
    """Refusing a bad model or dataset happens in the kernel without TensorFlow (a fresh
    interpreter: other tests of this process may have imported it)."""
    code = (
        "import sys\n"
        "from maggy_magic import experiment\n"
        "from maggy_magic.distributed.config import TfDistributedConfig\n"
        "from maggy_magic.errors import DistTrainingError\n"
        "try:\n"
        "    experiment.lagom(lambda model: 0, TfDistributedConfig(model=3, workers=2))\n"
        "except DistTrainingError as exc:\n"
        "    print('refused:', exc)\n"
        "print('tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=os.path.dirname(
                             os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("refused: model must be a Keras model class"), out.stdout
    assert out.stdout.splitlines()[-1] == "False"


def test_tf_config_lists_workers_in_rank_order():
    config = dist_tf.tf_config(["h0:1", "h1:2"], 1)
    assert config == {"cluster": {"worker": ["h0:1", "h1:2"]},
                      "task": {"type": "worker", "index": 1}}


def test_non_chief_temporary_copies_are_discarded(tmp_path):
    (tmp_path / "backup" / "workertemp_1").mkdir(parents=True)
    (tmp_path / "backup" / "workertemp_1" / "ckpt-1.index").write_text("x")
    (tmp_path / "workertemp_1").mkdir()
    (tmp_path / "ckpt-1.index").write_text("chief")
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "workertemp_2").mkdir()
    dist_tf.discard_worker_temp(str(tmp_path), 1)
    assert sorted(os.listdir(tmp_path)) == ["ckpt-1.index", "kept"]
    assert os.listdir(tmp_path / "kept") == ["workertemp_2"]


@pytest.mark.slow
@pytest.mark.timeout(240)  # a reused Python worker would hang a later run
def test_two_ranks_on_spark_in_barrier_mode(tmp_path):
    """The same function on 2 Spark executors (real JVMs), launched as a barrier stage."""
    options = {"master": "local-cluster[2,1,1024]", "barrier": True}
    result = experiment.lagom(tf_dist_fns.train_fit, config(
        hparams={"lr": 0.5, "epochs": 2, "out_dir": str(tmp_path)}, backend="spark",
        backend_options=options))
    assert result.state == "finished" and result.metrics["rank"] == 0
    assert result.metrics["replicas"] == 2
    seen0, seen1 = ids(tmp_path, 0), ids(tmp_path, 1)
    assert not set(seen0) & set(seen1)
    assert set(seen0) | set(seen1) == set(range(N_EXAMPLES))
    # later collective runs in the same Spark session, barrier or not, get fresh Python
    # workers (a reused one would still hold an earlier strategy's state and hang)
    for again in ("again", "plain"):
        (tmp_path / again).mkdir()
        run = experiment.lagom(tf_dist_fns.train_fit, config(
            hparams={"lr": 0.5, "epochs": 1, "out_dir": str(tmp_path / again)},
            backend="spark", backend_options={"master": options["master"]}, hb_timeout=60))
        assert run.state == "finished" and run.metrics["replicas"] == 2
