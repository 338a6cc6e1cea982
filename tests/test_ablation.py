"""Ablation studies: the study API, LOCO, Keras layer removal, real runs, the magic.

Runs train a real small Keras model on scikit-learn's digits (helpers from
notebooks/digits.py) in real local worker processes. Training functions and generators
used by ``experiment.lagom`` live at module level (workers import this module); the magic
test defines its own in the cell (pickled by value, like a notebook's).
"""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "notebooks"))  # workers inherit this sys.path

import digits  # noqa: E402

from maggy_magic import (  # noqa: E402
    AblationConfig,
    AblationError,
    AblationStudy,
    AbstractAblator,
    ConfigError,
    ExperimentResult,
    TrainFunctionError,
    experiment,
)
from maggy_magic.ablation import LOCO, get_ablator, keras_layers  # noqa: E402
from maggy_magic.ablation.runner import AblationTrainFn, prepare  # noqa: E402

EPOCHS = 2


# -- generators and training functions (module level: workers import them) ------------
def base_model():
    return digits.build_deep_model(hidden=(16, 16), dropout=0.1, lr=1e-2)


def small_model():
    return digits.build_model(hidden=8, dropout=0.0, lr=1e-2)


def digit_regions(ablated_features):
    """Digits with the left-out pixels / regions blanked (the model keeps 64 inputs)."""
    return digits.data_without(ablated_features)


def train_digits(model_function, dataset_function, reporter, component):
    import keras

    keras.utils.set_random_seed(0)
    model, data = model_function(), dataset_function()
    metrics = digits.fit(model, data, EPOCHS, reporter)
    (x_train, _), _ = data
    metrics.update(layers="+".join(layer.name for layer in model.layers),
                   blank=int((x_train.max(axis=0) == 0).sum()), component=component)
    return metrics


def frame_without(ablated_features):
    """Feature ablation over a pandas DataFrame: the left-out columns are dropped."""
    from sklearn.model_selection import train_test_split

    frame = digits.load_frame().drop(columns=list(ablated_features))
    x = frame.drop(columns=["label"]).to_numpy("float32")
    y = frame["label"].to_numpy("int64")
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, random_state=0,
                                                      stratify=y)
    return (x_train, y_train), (x_val, y_val)


def any_width_model():
    """No Input: the model takes whatever number of columns the trial's data has."""
    import keras

    model = keras.Sequential([keras.layers.Dense(16, activation="relu", name="hidden"),
                              keras.layers.Dense(10, activation="softmax", name="output")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def train_frame(model, dataset, reporter, ablated_feature=None):
    import keras

    keras.utils.set_random_seed(0)
    metrics = digits.fit(model, dataset, 1, reporter)
    (x_train, _), _ = dataset
    metrics.update(width=x_train.shape[1], left_out=str(ablated_feature))
    return metrics


def digits_study(**layers):
    study = AblationStudy("digits", 1, "label", dataset_generator=digit_regions)
    study.model.set_base_model_generator(base_model)
    for name in layers.get("include", ()):
        study.model.layers.include(name)
    return study


# -- the study API (Maggy's names) ------------------------------------------------------
def test_maggy_study_api_names():
    import maggy_magic.ablation as ablation

    study = ablation.AblationStudy("titanic_train_dataset", 1, label_name="survived")
    assert study.hops_training_dataset_name == "titanic_train_dataset"
    study.features.include("pclass", ["fare", "age"], "pclass")
    study.features.exclude("age", ["not_there"])
    assert study.features.included_features == ["pclass", "fare"]
    study.model.layers.include("my_dense_two", ["my_dense_three", "my_dense_four"])
    study.model.layers.exclude("my_dense_four")
    assert study.model.layers.included_layers == ["my_dense_two", "my_dense_three"]
    study.model.layers.include_groups(["my_dense_two", "my_dense_four"])
    study.model.layers.include_groups(prefix="my_dense")
    study.model.layers.include_groups(["my_dense_four", "my_dense_two"])  # same group
    assert [g.label for g in study.model.layers.included_groups] == \
        ["my_dense_two+my_dense_four", "my_dense*"]
    study.model.layers.exclude_groups(prefix="my_dense")
    assert len(study.model.layers.included_groups) == 1
    study.model.set_base_model_generator(base_model)
    study.model.add_custom_model_generator(small_model, "small")
    study.set_dataset_generator(digit_regions)
    assert study.model.base_model_generator is base_model
    assert study.model.custom_model_generators == [(small_model, "small")]
    assert study.custom_dataset_generator is digit_regions
    assert study.num_components == 6
    assert study.to_dict()["included_groups"] == ["my_dense_two+my_dense_four"]
    json.dumps(study.to_dict())
    # Maggy's positional AblationConfig and the ablator contract
    config = AblationConfig(study, "loco", "min", "titanic")
    assert (config.ablator, config.direction, config.name) == ("loco", "min", "titanic")
    assert isinstance(get_ablator("LOCO", study), AbstractAblator)
    assert get_ablator("loco", study).get_number_of_trials() == 7


@pytest.mark.parametrize("call, message", [
    (lambda s: s.features.include(3), "features.include() takes names"),
    (lambda s: s.model.layers.include_groups(["only_one"]),
     "with one layer; use layers.include() for a single layer"),
    (lambda s: s.model.layers.include_groups("dense"), "takes lists of layer names or "
                                                       "prefix='...'"),
    (lambda s: s.model.add_custom_model_generator(small_model, ""), "needs a non-empty name"),
    (lambda s: (s.model.add_custom_model_generator(small_model, "m"),
                s.model.add_custom_model_generator(base_model, "m")), "already in the study"),
    (lambda s: s.model.set_base_model_generator("model"), "takes a function"),
])
def test_study_mistakes_are_one_line_errors(call, message):
    with pytest.raises(AblationError) as info:
        call(AblationStudy("d", 1, "y"))
    assert message in str(info.value) and "\n" not in str(info.value)


# -- the LOCO ablator -------------------------------------------------------------------
def test_loco_gives_the_base_and_one_trial_per_component_and_resumes():
    study = AblationStudy("d", 1, "y", dataset_generator=digit_regions)
    study.features.include("top", "center")
    study.model.layers.include("dropout")
    study.model.layers.include_groups(prefix="hidden")
    study.model.add_custom_model_generator(small_model, "small")
    loco = get_ablator("loco", study)
    loco.initialize()
    trials = []
    while (trial := loco.get_suggestion()) is not None:
        trials.append(trial)
    assert loco.num_trials == 6 == study.num_components + 1
    assert [t.params for t in trials] == [
        {}, {"ablated_feature": "top"}, {"ablated_feature": "center"},
        {"ablated_layer": "dropout"}, {"ablated_group": "hidden*"}, {"custom_model": "small"}]
    assert [t.info_dict["component_kind"] for t in trials] == [
        "base", "feature", "feature", "layer", "layer group", "custom model"]
    assert all(t.trial_type == "ablation" for t in trials)
    # resume: trials 0 and 3 exist already; the others come, in order
    resumed = LOCO(study)
    resumed.trial_store = {"0000": trials[0], "0001": trials[3]}
    resumed.initialize()
    again = [resumed.get_suggestion() for _ in range(5)]
    assert [t.info_dict["ablation_index"] for t in again[:4]] == [1, 2, 4, 5]
    assert again[4] is None


def test_a_user_ablator_subclass_decides_the_trials():
    class LeaveTwoOut(AbstractAblator):
        def get_trials(self):
            features = self.ablation_study.features.included_features
            return [{}] + [{"ablated_feature": [a, b]} for i, a in enumerate(features)
                           for b in features[i + 1:]]

    study = AblationStudy("d", 1, "y", dataset_generator=digit_regions)
    study.features.include("top", "left", "center")
    ablator = get_ablator(LeaveTwoOut, study)
    ablator.initialize()
    assert ablator.num_trials == 4
    ablator.get_suggestion()
    trial = ablator.get_suggestion()
    assert trial.info_dict["component"] == "top+left"
    fn = AblationTrainFn(train_digits, study, {})
    assert fn.dataset_function(trial.params).features == ["top", "left"]


# -- configuration mistakes, before anything runs ---------------------------------------
def _study_without_base():
    study = AblationStudy("d", 1, "y")
    study.model.layers.include("dropout")
    return study


def _study_without_data():
    study = AblationStudy("d", 1, "y")
    study.features.include("top")
    return study


@pytest.mark.parametrize("config, message", [
    (lambda: AblationConfig(AblationStudy("d", 1, "y")), "the ablation study leaves nothing "
                                                         "out"),
    (lambda: AblationConfig(_study_without_base()),
     "the study ablates layers but has no base model; call "
     "study.model.set_base_model_generator(fn)"),
    (lambda: AblationConfig(_study_without_data()),
     "the study ablates features but has no dataset generator"),
    (lambda: AblationConfig(digits_study(include=["dropout"]), ablator="lcoo"),
     "unknown ablator 'lcoo'; did you mean 'loco'?"),
    (lambda: AblationConfig(None), "ablation_study must be an AblationStudy, got NoneType"),
    (lambda: AblationConfig(digits_study(include=["dropout"]), direction="up"),
     "direction must be 'max' or 'min'"),
])
def test_config_mistakes_are_refused_before_anything_runs(config, message):
    with pytest.raises(ConfigError) as info:
        experiment.lagom(train_digits, config())
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not os.path.exists("maggy_experiments")


def test_training_function_checks():
    study = digits_study(include=["dropout"])

    def needs_epochs(model_function, epochs):
        return 0

    with pytest.raises(TrainFunctionError, match="needs_epochs\\(\\) needs argument 'epochs',"
                                                 " which an ablation trial does not pass"):
        experiment.lagom(needs_epochs, AblationConfig(study))
    features_only = _study_without_data()
    features_only.set_dataset_generator(digit_regions)

    def wants_model(model, dataset):
        return 0

    with pytest.raises(AblationError, match="takes a model but the study has no model "
                                            "generator"):
        experiment.lagom(wants_model, AblationConfig(features_only))


# -- Keras layer removal ----------------------------------------------------------------
def test_sequential_layer_removal_keeps_weights_and_compilation():
    import numpy as np

    base = base_model()
    assert keras_layers.prefixed(base, "HIDDEN") == ["hidden_1", "hidden_2"]
    without = keras_layers.remove_layers(base, ["dropout"])
    assert [layer.name for layer in without.layers] == ["hidden_1", "hidden_2", "output"]
    assert np.array_equal(without.get_layer("hidden_1").get_weights()[0],
                          base.get_layer("hidden_1").get_weights()[0])
    assert without.compiled and float(without.optimizer.learning_rate) == pytest.approx(1e-2)
    shorter = keras_layers.remove_layers(base, ["hidden_1", "hidden_2"])
    assert [layer.name for layer in shorter.layers] == ["dropout", "output"]
    assert tuple(shorter.outputs[0].shape) == (None, 10)
    assert [layer.name for layer in base.layers] == ["hidden_1", "hidden_2", "dropout",
                                                     "output"]  # the base is untouched


def residual_model():
    import keras

    x = keras.Input((64,), name="pixels")
    a = keras.layers.Dense(16, activation="relu", name="a")(x)
    b = keras.layers.Dense(16, activation="relu", name="b")(a)
    merged = keras.layers.Add(name="add")([a, b])
    normed = keras.layers.LayerNormalization(name="norm")(merged)
    return keras.Model(x, keras.layers.Dense(10, name="output")(normed), name="residual")


def test_functional_removal_rewires_consumers_to_the_removed_layers_input():
    model = keras_layers.remove_layers(residual_model(), ["b"])
    assert [layer.name for layer in model.layers] == ["pixels", "a", "add", "norm", "output"]
    add = model.get_layer("add")
    assert [t.shape for t in add.input] == [(None, 16), (None, 16)]
    model = keras_layers.remove_layers(residual_model(), ["norm"])
    assert "norm" not in [layer.name for layer in model.layers]
    assert tuple(model.outputs[0].shape) == (None, 10)


@pytest.mark.parametrize("model, layer, message", [
    (residual_model, "pixels", "cannot ablate layer 'pixels': it is the model's input layer"),
    (residual_model, "output", "cannot ablate layer 'output': it produces the model's output"),
    (base_model, "output", "cannot ablate layer 'output': it produces the model's output"),
    (residual_model, "add", "cannot ablate layer 'add': it takes 2 inputs, so its consumers "
                            "cannot be wired to a single one"),
    (residual_model, "a", "removing layer 'a' leaves no valid model (Inputs have "
                          "incompatible shapes"),
    (base_model, "hiden_1", "the base model has no such layer; did you mean 'hidden_1'?"),
])
def test_removal_that_gives_no_valid_model_is_a_one_line_error(model, layer, message):
    with pytest.raises(AblationError) as info:
        keras_layers.remove_layers(model(), [layer])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_output_shape_change_and_subclassed_models_are_refused():
    import keras

    cnn = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
                            keras.layers.Flatten(name="flatten"),
                            keras.layers.Dense(10, name="output")])
    with pytest.raises(AblationError, match=r"removing layer 'flatten' changes the model's "
                                            r"output shape from \(None, 10\) to "
                                            r"\(None, 6, 6, 10\)"):
        keras_layers.remove_layers(cnn, ["flatten"])

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(AblationError, match="subclassed Keras model"):
        keras_layers.remove_layers(Subclassed(), ["dense"])


def test_prepare_resolves_prefix_groups_and_builds_each_ablation_once():
    study = digits_study(include=["dropout"])
    study.model.layers.include_groups(prefix="hidden")
    fn = prepare(study, train_digits)
    assert fn.groups == {"hidden*": ["hidden_1", "hidden_2"]}
    assert fn.func is train_digits and fn.__name__ == "train_digits"
    model = fn.model_function({"ablated_group": "hidden*"})()
    assert [layer.name for layer in model.layers] == ["dropout", "output"]
    study.model.layers.include_groups(prefix="conv")
    with pytest.raises(AblationError, match="layer group 'conv\\*' matches no layer"):
        prepare(study, train_digits)


# -- real runs --------------------------------------------------------------------------
@pytest.mark.slow
def test_layer_group_feature_and_custom_model_ablation_on_digits():
    study = digits_study(include=["dropout"])
    study.features.include("center")
    study.model.layers.include_groups(prefix="hidden")
    study.model.add_custom_model_generator(small_model, "small")
    result = experiment.lagom(train_digits, AblationConfig(
        study, direction="max", name="digits-loco", optimization_key="accuracy", workers=2))

    assert isinstance(result, ExperimentResult) and result.state == "finished"
    assert len(result.trial_records) == study.num_components + 1 == 5
    assert result.num_finished == 5
    by_component = {r["info"]["component"]: r for r in result.trial_records}
    assert set(by_component) == {"base", "center", "dropout", "hidden*", "small"}
    # each trial trained the model and data its component asked for
    metrics = {name: r["metrics"] for name, r in by_component.items()}
    assert metrics["base"]["layers"] == "hidden_1+hidden_2+dropout+output"
    assert metrics["dropout"]["layers"] == "hidden_1+hidden_2+output"
    assert metrics["hidden*"]["layers"] == "dropout+output"
    assert metrics["small"]["layers"] == "hidden+dropout+output"
    assert metrics["center"]["blank"] - metrics["base"]["blank"] == 16  # 4x4 pixels blanked
    assert {name: m["component"] for name, m in metrics.items()} == \
        {name: name for name in metrics}

    table = result.ablation
    assert list(table.columns) == ["component", "kind", "trial", "state", "accuracy",
                                   "difference"]
    assert list(table.component) == ["base", "center", "dropout", "hidden*", "small"]
    assert list(table.kind) == ["base", "feature", "layer", "layer group", "custom model"]
    assert result.base_trial["trial"] == table.trial[0] and table.difference[0] == 0.0
    base_value = result.base_trial["value"]
    for _, row in table.iterrows():
        assert 0.0 < row.accuracy <= 1.0
        assert row.difference == pytest.approx(row.accuracy - base_value)
    html = result._repr_html_()
    assert 'class="maggy-ablation"' in html and "hidden*" in html and "<table" in html
    with open(os.path.join(result.run_dir, "config.json")) as handle:
        config = json.load(handle)
    assert config["kind"] == "ablation" and config["study"]["included_groups"] == ["hidden*"]


@pytest.mark.slow
def test_feature_ablation_through_a_dataset_generator_over_a_dataframe():
    study = AblationStudy("digits", 1, "label", dataset_generator=frame_without)
    study.features.include("pixel_3_3", ["pixel_3_4", "pixel_4_4"])
    study.model.set_base_model_generator(any_width_model)
    result = experiment.lagom(train_frame, AblationConfig(
        study, name="digits-frame", optimization_key="accuracy", workers=2))

    assert result.num_finished == 4 == len(result.trial_records)
    widths = {r["info"]["component"]: (r["metrics"]["width"], r["metrics"]["left_out"])
              for r in result.trial_records}
    assert widths == {"base": (64, "None"), "pixel_3_3": (63, "pixel_3_3"),
                      "pixel_3_4": (63, "pixel_3_4"), "pixel_4_4": (63, "pixel_4_4")}
    assert list(result.ablation.kind) == ["base", "feature", "feature", "feature"]


def test_removing_an_essential_layer_is_refused_before_any_trial_runs():
    study = digits_study(include=["dropout", "output"])
    with pytest.raises(AblationError) as info:
        experiment.lagom(train_digits, AblationConfig(study, workers=2))
    assert str(info.value) == ("cannot ablate layer 'output': it produces the model's output; "
                               "leave it out of the study (or compare a custom model "
                               "generator)")
    assert not os.path.exists("maggy_experiments")  # no run, no worker, no trial


# -- %%maggy ablation -------------------------------------------------------------------
@pytest.fixture
def fresh(shell, monkeypatch):
    monkeypatch.setenv("MAGGY_MAGIC_WIDGETS", "0")
    shell.reset(new_session=False)
    shell.magics_manager.registry["MaggyMagics"].defaults = {}
    shell.user_ns["n"] = 2  # a notebook variable for $n on the magic's line
    return shell


CELL = '''\
from maggy_magic import AblationStudy
import digits

def base():
    return digits.build_deep_model(hidden=(16,), dropout=0.1, lr=1e-2)

def blanked(ablated_features):
    return digits.data_without(ablated_features)

study = AblationStudy("digits", 1, "label", dataset_generator=blanked)
study.model.set_base_model_generator(base)
study.model.layers.include("dropout")
study.features.include("top")

def train(model_function, dataset_function, reporter):
    import keras
    keras.utils.set_random_seed(0)
    return digits.fit(model_function(), dataset_function(), 1, reporter)
'''


@pytest.mark.slow
def test_maggy_ablation_magic_runs_the_cells_study(fresh, capsys):
    shell = fresh
    shell.run_line_magic("maggy", "config --trials 7 --es-policy none")  # hpo-only: ignored
    result = shell.run_cell("%%maggy ablation --metric accuracy --workers $n --name "
                            "magic-ablation --ui text -o res\n" + CELL, store_history=True)
    shell.run_line_magic("maggy", "config --reset")
    assert result.success, result.error_in_exec
    res = shell.user_ns["res"]
    assert isinstance(res, ExperimentResult) and res.state == "finished"
    assert list(res.ablation.component) == ["base", "top", "dropout"]
    assert res.optimization_key == "accuracy" and res.name == "magic-ablation"
    with open(os.path.join(res.run_dir, "config.json")) as handle:
        assert json.load(handle)["kind"] == "ablation"
    with open(os.path.join(res.run_dir, "cell.py")) as handle:
        assert "study.model.layers.include" in handle.read()
    assert "3 trials" in capsys.readouterr().out


@pytest.mark.parametrize("source, error, message", [
    ("%%maggy ablation --trials 3\n" + CELL, ConfigError,
     "--trials does not apply to %%maggy ablation; remove it"),
    ("%%maggy hpo --study study\n" + CELL, ConfigError,
     "--study does not apply to %%maggy hpo"),
    ("%%maggy ablation\ndef train(model_function):\n    return 1\n", AblationError,
     "no ablation study: define one in the cell"),
    ("%%maggy ablation --study stduy\n" + CELL, ConfigError,
     "--study 'stduy' is not defined; did you mean 'study'?"),
    ("%%maggy ablation --ablator lcoo\n" + CELL, ConfigError, "did you mean 'loco'?"),
    ("%%maggy ablation\n" + CELL.replace('"dropout"', '"output"'), AblationError,
     "cannot ablate layer 'output': it produces the model's output"),
])
def test_maggy_ablation_mistakes_are_one_line_errors(fresh, source, error, message):
    result = fresh.run_cell(source, store_history=True)
    assert isinstance(result.error_in_exec, error), result.error_in_exec
    assert message in str(result.error_in_exec)
    assert not os.path.exists("maggy_experiments")


# -- the live dashboard's view state ----------------------------------------------------
def test_dashboard_state_compares_each_component_with_the_base_as_trials_end():
    from maggy_magic.ui.state import DashboardState

    study = digits_study(include=["dropout"])
    study.features.include("top")
    loco = get_ablator("loco", study)
    loco.initialize()
    trials = [loco.get_suggestion() for _ in range(3)]
    state = DashboardState("live")
    state.apply({"type": "run_started", "t": 0, "config": {"direction": "max",
                                                            "optimization_key": "accuracy"}})
    for i, trial in enumerate(trials):
        state.apply({"type": "trial_started", "t": 1, "trial": f"000{i}", "worker": "0",
                     "params": trial.params, "info": trial.info_dict})
    state.apply({"type": "trial_finished", "t": 2, "trial": "0001", "value": 0.5,
                 "state": "FINISHED"})
    live = state.take()["status"]["ablation"]
    assert live["base"]["value"] is None and live["total"] == 2
    assert [c["component"] for c in live["components"]] == ["top", "dropout"]
    assert live["components"][0]["difference"] is None  # no base metric yet
    state.apply({"type": "trial_finished", "t": 3, "trial": "0000", "value": 0.75,
                 "state": "FINISHED"})
    state.apply({"type": "trial_failed", "t": 3, "trial": "0002", "error": "x"})
    done = state.take()["status"]["ablation"]
    assert done["base"]["difference"] == 0.0
    assert [(c["component"], c["difference"], c["state"]) for c in done["components"]] == \
        [("top", -0.25, "FINISHED"), ("dropout", None, "FAILED")]
    plain = DashboardState("hpo")
    plain.apply({"type": "trial_started", "t": 1, "trial": "0000", "params": {"x": 1}})
    assert "ablation" not in plain.take()["status"]  # other experiments are unchanged
