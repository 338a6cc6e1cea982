"""Code written for Maggy runs with only the import changed: the custom dataset generator
gets what its signature asks for, and ``maggy_magic.callbacks`` has Maggy's Keras
callbacks. Real trials on the local backend (worker processes), real Keras."""

import os

import pytest

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
