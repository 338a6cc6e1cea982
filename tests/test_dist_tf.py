"""TensorFlow data-parallel training: 2 CPU workers under MultiWorkerMirroredStrategy."""

import json
import os

import pytest
from tf_dist_fns import N_EXAMPLES
from tf_dist_standin import run_gang, run_single

from maggy_magic.dist import tf as dist_tf
from maggy_magic.errors import DistTrainingError

#: Loss after each epoch of 2 workers vs one process over the same global batches: the
#: all-reduced mean gradient equals the single-process one up to float32 summation order.
LOSS_TOLERANCE = 1e-5


def ids(work_dir, rank):
    with open(os.path.join(work_dir, f"ids_{rank}.json")) as handle:
        return json.load(handle)


@pytest.mark.slow
def test_fit_on_arrays_matches_one_process_and_shards_the_data(tmp_path):
    ckpt, gang_dir, single_dir = tmp_path / "ckpt", tmp_path / "gang", tmp_path / "single"
    for d in (ckpt, gang_dir, single_dir):
        d.mkdir()
    kwargs = {"lr": 0.5, "epochs": 3}
    results = run_gang(2, gang_dir, "train_fit", dict(kwargs, out_dir=str(gang_dir)),
                       checkpoint_dir=str(ckpt))
    assert all("value" in r for r in results), results
    chief, other = results[0]["value"], results[1]["value"]
    assert (chief["rank"], other["rank"]) == (0, 1)
    assert chief["replicas"] == 2  # the model was built inside the strategy's scope
    # synchronous training: both ranks hold the same model, so report the same losses
    assert chief["losses"] == pytest.approx(other["losses"], abs=LOSS_TOLERANCE)
    assert chief["losses"][-1] < 0.6 * chief["losses"][0]  # converges

    single = run_single(single_dir, "train_fit", dict(kwargs, out_dir=str(single_dir)))
    assert single["replicas"] == 1
    assert chief["losses"] == pytest.approx(single["losses"], abs=LOSS_TOLERANCE)

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
    results = run_gang(2, tmp_path, "train_maggy_style", {"out_dir": str(tmp_path)},
                       {"model": "build", "dataset": ["data", "data"],
                        "hparams": {"lr": 0.5, "batch": 32, "epochs": 2}})
    assert all("value" in r for r in results), results
    chief, other = results[0]["value"], results[1]["value"]
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["losses"] == pytest.approx(other["losses"], abs=LOSS_TOLERANCE)
    assert chief["losses"][1] < chief["losses"][0]
    seen0, seen1 = ids(tmp_path, 0), ids(tmp_path, 1)
    # 2 training epochs and one evaluation, each split between the ranks
    assert len(seen0) == len(seen1) == 3 * N_EXAMPLES // 2
    assert not set(seen0) & set(seen1)


@pytest.mark.slow
def test_keras3_fit_gets_a_one_line_error(tmp_path):
    results = run_gang(2, tmp_path, "train_keras3", {"out_dir": str(tmp_path)})
    for result in results:
        assert result["error"] == "DistTrainingError", result
        assert "from tensorflow import keras" in result["message"]
        assert "\n" not in result["message"]


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
def test_bad_model_or_dataset_is_refused_on_the_driver(model, dataset, message):
    with pytest.raises(DistTrainingError, match=message.replace("[", r"\[")) as info:
        dist_tf.check(model, dataset)
    assert "\n" not in str(info.value)
    assert "tensorflow" not in __import__("sys").modules  # checks import no TensorFlow


def test_tf_config_lists_workers_in_rank_order():
    config = dist_tf.tf_config(["h0:1", "h1:2"], 1)
    assert config == {"cluster": {"worker": ["h0:1", "h1:2"]},
                      "task": {"type": "worker", "index": 1}}
