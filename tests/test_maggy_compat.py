"""Code written for Maggy runs with only the import changed: the custom dataset generator
gets what its signature asks for, and ``maggy_magic.callbacks`` has Maggy's Keras
callbacks. Real trials on the local backend (worker processes), real Keras."""

import os

import pytest
from conftest import journal

from maggy_magic import AblationConfig, AblationError, AblationStudy, experiment

pytestmark = pytest.mark.slow


def ablate(study, train, **kwargs):
    """``{component: (value, metrics)}`` of a finished ablation run (base: "base")."""
    kwargs.setdefault("workers", 2)
    kwargs.setdefault("hb_interval", 0.1)
    result = experiment.lagom(train, AblationConfig(study, **kwargs))
    assert result.state == "finished", result.error
    return {(r["params"].get("ablated_feature") or r["params"].get("custom_model")
             or "base"): (r["value"], r["metrics"]) for r in result.trial_records}


# -- the dataset generator -----------------------------------------------------------------
def create_tf_dataset(num_epochs, batch_size):
    """Maggy's documented shape: the generator takes what the training function passes."""
    return {"epochs": num_epochs, "batch_size": batch_size}


def maggy_training_fn(dataset_function, model_function):
    """Maggy's documented training function: ``dataset_function(epochs, batch_size)``."""
    data = dataset_function(5, 10)
    model = model_function()
    return {"metric": float(data["epochs"] * data["batch_size"]), "model": model}


def base_model():
    return "base"


def test_a_maggy_generator_gets_exactly_the_training_functions_arguments():
    study = AblationStudy("titanic", 1, "survived", dataset_generator=create_tf_dataset)
    study.model.set_base_model_generator(base_model)
    study.model.add_custom_model_generator(lambda: "small", "small")
    trials = ablate(study, maggy_training_fn)
    assert {key: (value, metrics["model"]) for key, (value, metrics) in trials.items()} == {
        "base": (50.0, "base"), "small": (50.0, "small")}


def one_left_out(num_epochs, batch_size, ablated_feature=None):
    """Maggy's singular name, after the training function's arguments: by keyword."""
    return {"left": ablated_feature, "epochs": num_epochs, "batch_size": batch_size}


def all_left_out(ablated_features, num_epochs, batch_size):
    """The list as the first parameter: passed first."""
    return {"left": ablated_features, "epochs": num_epochs, "batch_size": batch_size}


def keyword_list(num_epochs, batch_size, *, ablated_features=()):
    return {"left": list(ablated_features), "epochs": num_epochs, "batch_size": batch_size}


def report(dataset_function):
    data = dataset_function(3, 7)
    return {"metric": float(data["epochs"] * data["batch_size"]), "left": str(data["left"])}


@pytest.mark.parametrize("generator, base, left", [
    (one_left_out, "None", {"a": "a", "b": "b"}),
    (all_left_out, "[]", {"a": "['a']", "b": "['b']"}),
    (keyword_list, "[]", {"a": "['a']", "b": "['b']"}),
])
def test_a_generator_that_names_the_left_out_features_is_told_them(generator, base, left):
    study = AblationStudy("d", 1, "y", dataset_generator=generator)
    study.features.include("a", "b")
    trials = ablate(study, report)
    assert {key: metrics["left"] for key, (_, metrics) in trials.items()} == {
        "base": base, **left}
    assert all(value == 21.0 for value, _ in trials.values())  # the caller's arguments too


def test_features_with_a_generator_that_cannot_leave_them_out_is_one_line():
    study = AblationStudy("titanic", 1, "survived", dataset_generator=create_tf_dataset)
    study.features.include("pclass", "fare")
    with pytest.raises(AblationError) as info:
        experiment.lagom(maggy_training_fn, AblationConfig(study))
    message = str(info.value)
    assert "\n" not in message and "create_tf_dataset() takes no ablated_features" in message
    assert "pclass, fare" in message
    assert not os.path.exists("maggy_experiments")  # refused before the run existed


# -- Keras callbacks -------------------------------------------------------------------
def keras_trial(lr, reporter):
    """Maggy's HPO example shape: a Keras fit that reports through a Maggy callback."""
    import json
    import os

    import numpy as np
    import tensorflow as tf

    from maggy_magic.callbacks import KerasBatchEnd, KerasEpochEnd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5], dtype="float32"))[:, None]
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input(shape=(3,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(lr), loss="mse")
    callback = (KerasBatchEnd(reporter) if os.environ.get("BATCHES") == "1"
                else KerasEpochEnd(reporter, metric="val_loss"))
    history = model.fit(x, y, batch_size=16, epochs=3, validation_data=(x, y), verbose=0,
                        callbacks=[callback])
    return {"metric": -history.history["loss"][-1],
            "val_losses": json.dumps(history.history["val_loss"]),
            "keras": type(callback).__mro__[1].__module__}


def hpo(train, **kwargs):
    from maggy_magic import HyperparameterOptConfig, Searchspace

    return experiment.lagom(train, HyperparameterOptConfig(
        num_trials=1, searchspace=Searchspace(lr=("DOUBLE", [0.01, 0.05])), workers=1,
        es_policy="none", seed=1, hb_interval=0.1, **kwargs))


def steps(run_dir):
    return [(e["step"], e["value"]) for e in journal(run_dir) if e["type"] == "metric"]


@pytest.mark.parametrize("legacy", ["0", "1"], ids=["keras3", "tf_keras"])
def test_keras_epoch_end_broadcasts_the_validation_loss_of_each_epoch(legacy, monkeypatch):
    import json

    monkeypatch.setenv("TF_USE_LEGACY_KERAS", legacy)   # the workers inherit it
    result = hpo(keras_trial)
    (record,) = result.trial_records
    assert record["state"] == "FINISHED", record
    expected = json.loads(record["metrics"]["val_losses"])
    assert steps(result.run_dir) == [(epoch, pytest.approx(loss))
                                     for epoch, loss in enumerate(expected)]
    assert record["metrics"]["keras"].startswith("tf_keras" if legacy == "1" else "keras")


def test_keras_batch_end_broadcasts_every_batch(monkeypatch):
    monkeypatch.setenv("BATCHES", "1")
    result = hpo(keras_trial)
    assert [step for step, _ in steps(result.run_dir)] == list(range(3 * 4))  # 64 / 16


def missing_metric_trial(unused, reporter):
    import numpy as np
    import tensorflow as tf

    from maggy_magic.callbacks import KerasEpochEnd

    model = tf.keras.Sequential([tf.keras.Input(shape=(1,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((4, 1), dtype="float32")
    model.fit(x, x, epochs=1, verbose=0, callbacks=[KerasEpochEnd(reporter)])  # no val_*
    return 0.0


def test_a_metric_the_logs_lack_fails_the_trial_in_one_line():
    from maggy_magic import BroadcastError, HyperparameterOptConfig, Searchspace

    with pytest.raises(BroadcastError) as info:
        experiment.lagom(missing_metric_trial, HyperparameterOptConfig(
            num_trials=1, searchspace=Searchspace(unused=("DOUBLE", [0, 1])), workers=1,
            es_policy="none", hb_interval=0.1))
    message = str(info.value)
    assert "\n" not in message
    assert "the Keras logs have no 'val_loss' (they have loss); pass metric=" in message


def test_importing_the_callbacks_imports_no_framework():
    import subprocess
    import sys

    code = ("import sys, maggy_magic.callbacks as c; "
            "print(any(m in sys.modules for m in ('tensorflow', 'keras', 'torch')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "False", done.stderr


# -- TorchDistributedConfig: Maggy's backend is the framework ---------------------------
def test_torch_dist_takes_maggys_positional_arguments_and_runs():
    from test_dist import Linear, make_data, plain

    from maggy_magic import TorchDistributedConfig

    config = TorchDistributedConfig(Linear, [make_data()], {}, "torch", False, 0, None,
                                    "maggyTorch", 0.2, "Maggy's positional call", workers=2)
    assert config.backend == "local" and config.name == "maggyTorch"
    result = experiment.lagom(plain, config)
    assert result.state == "finished", result.error


def test_where_torch_ranks_run_is_run_on_or_a_place_given_as_backend():
    from maggy_magic import ConfigError, TorchDistributedConfig

    assert TorchDistributedConfig(backend="torch", run_on="spark").backend == "spark"
    assert TorchDistributedConfig(backend="spark").backend == "spark"  # not a framework
    assert TorchDistributedConfig(backend="spark").to_dict()["backend"] == "spark"
    with pytest.raises(ConfigError, match="both say where the ranks run; give run_on only"):
        TorchDistributedConfig(backend="spark", run_on="local")
    with pytest.raises(ConfigError) as info:
        TorchDistributedConfig(backend="deepspeed")
    assert str(info.value) == (
        "backend='deepspeed' (DeepSpeed ZeRO) is not supported by maggy-magic's "
        "distributed training; use backend='torch' (DistributedDataParallel)")


# -- Maggy's import paths ---------------------------------------------------------------
#: Import lines of Maggy's docs and examples; with ``maggy`` renamed they must give the
#: same objects as maggy_magic's own names.
MAGGY_IMPORTS = {
    "from maggy import experiment, Searchspace, tensorboard": ("experiment", "Searchspace",
                                                               "tensorboard"),
    "from maggy.searchspace import Searchspace": ("Searchspace",),
    "from maggy.config import HyperparameterOptConfig, AblationConfig": (
        "HyperparameterOptConfig", "AblationConfig"),
    "from maggy.config import TorchDistributedConfig, TfDistributedConfig": (
        "TorchDistributedConfig", "TfDistributedConfig"),
    "from maggy.ablation import AblationStudy": ("AblationStudy",),
    "from maggy.ablation.ablationstudy import AblationStudy": ("AblationStudy",),
    "from maggy.ablation.ablator import AbstractAblator": ("AbstractAblator",),
    "from maggy.optimizer import RandomSearch, GridSearch, Asha, SingleRun": (
        "RandomSearch", "GridSearch", "Asha", "SingleRun"),
    "from maggy.optimizer.abstractoptimizer import AbstractOptimizer": ("AbstractOptimizer",),
    "from maggy.earlystop.abstractearlystop import AbstractEarlyStop": ("AbstractEarlyStop",),
    "from maggy.trial import Trial": ("Trial",),
}


@pytest.mark.parametrize("line", sorted(MAGGY_IMPORTS))
def test_maggys_import_lines_work_with_the_package_renamed(line):
    import maggy_magic
    from maggy_magic import optimizers

    names = {}
    exec(line.replace("from maggy", "from maggy_magic", 1), names)
    for name in MAGGY_IMPORTS[line]:
        ours = getattr(maggy_magic, name, None) or getattr(optimizers, name)
        assert names[name] is ours, (line, name)
