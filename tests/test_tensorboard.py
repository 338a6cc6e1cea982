"""TensorBoard: each trial's logdir(), and the run's HParams summary read back by
TensorBoard's own event reader and HParams plugin handlers (what the HParams tab shows).

Runs use the local backend with real worker processes; training functions live at module
level (the workers import this module).
"""

import glob
import logging
import os
import sys

import pytest

from maggy_magic import (
    AblationConfig,
    AblationStudy,
    ExperimentFailed,
    HyperparameterOptConfig,
    Searchspace,
    experiment,
    tensorboard,
)
from maggy_magic.errors import NotInTrialError
from maggy_magic.hparams_summary import SUFFIX, wait_for_writers, write

SPACE = Searchspace(lr=("DOUBLE", [0.001, 0.1], "log"), layers=("INTEGER", [1, 4]),
                    act=("CATEGORICAL", ["relu", "tanh"]), width=("DISCRETE", [8, 16]),
                    slope=("DOUBLE", [0.0, 0.5], {"act": "relu"}))


# -- training functions (module level: workers import them) ----------------------------
def scored(lr, layers, act, width, reporter, slope=0.0):
    """Fails for layers == 4 so the summary has failed sessions too."""
    value = 0.0
    for step in range(3):
        value = lr * layers + width / 100 + step + (act == "tanh") + slope
        reporter.broadcast(value, step)
    if layers == 4:
        raise ValueError("four layers diverge")
    return {"accuracy": value + 0.5, "loss": 1.0 / (1.0 + value)}


def writes_tf_summaries(x, reporter):
    """Writes real TensorFlow summaries into its logdir; returns where."""
    import tensorflow as tf

    folder = tensorboard.logdir()
    writer = tf.summary.create_file_writer(os.path.join(folder, "train"))
    with writer.as_default():
        for step in range(3):
            tf.summary.scalar("loss", x / (step + 1), step=step)
    writer.close()
    return {"metric": x, "folder": folder, "again": tensorboard.logdir() == folder}


def always_fails(x):
    raise RuntimeError("the model diverged")


def regions(ablated_features):
    return {"left out": list(ablated_features or [])}


def tiny_model():
    return "model"


def ablation_train(dataset_function, reporter, ablated_feature=None):
    data = dataset_function()
    reporter.broadcast(1.0, 0)
    return 10.0 - len(data["left out"]) - (ablated_feature == "b")


# -- reading back, as TensorBoard does ---------------------------------------------------
def hparams_view(logdir):
    """``(experiment, {session name: session group})`` from TensorBoard's HParams plugin
    handlers over its event multiplexer and data provider."""
    from tensorboard import context

    wait_for_writers()  # the summary of a run is written by a thread after lagom returns
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import (
        api_pb2,
        backend_context,
        get_experiment,
        list_session_groups,
    )

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    tb = base_plugin.TBContext(logdir=logdir, multiplexer=mux,
                               data_provider=data_provider.MultiplexerDataProvider(mux, logdir))
    ctx, request = backend_context.Context(tb), context.RequestContext()
    found = get_experiment.Handler(request, ctx, "", api_pb2.GetExperimentRequest()).run()
    statuses = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE,
                api_pb2.STATUS_RUNNING]
    groups = list_session_groups.Handler(request, ctx, "", api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=1000, allowed_statuses=statuses)).run()
    return found, {g.name: g for g in groups.session_groups}


def value_of(proto_value):
    kind = proto_value.WhichOneof("kind")
    return getattr(proto_value, kind)


def metrics_of(group):
    return {m.name.tag: m.value for m in group.metric_values}


# -- tests ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_hparams_summary_shows_every_trial_with_params_metric_and_status():
    from tensorboard.plugins.hparams import api_pb2

    config = HyperparameterOptConfig(num_trials=8, searchspace=SPACE, optimization_key="accuracy",
                                     es_policy="none", workers=2, name="tb", max_failures=8,
                                     seed=3)
    result = experiment.lagom(scored, config)
    records = result.trial_records
    assert len(records) == 8 and result.num_failed >= 1 and result.num_finished >= 1

    found, groups = hparams_view(tensorboard.run_logdir(result.run_dir))
    infos = {h.name: h for h in found.hparam_infos}
    assert set(infos) == {"lr", "layers", "act", "width", "slope"}
    assert (infos["lr"].domain_interval.min_value, infos["lr"].domain_interval.max_value) \
        == (0.001, 0.1)
    assert infos["lr"].description == "DOUBLE in [0.001, 0.1] (log scale)"
    assert infos["slope"].description == "DOUBLE in [0.0, 0.5] (only when act in ['relu'])"
    assert infos["layers"].type == api_pb2.DATA_TYPE_FLOAT64
    assert (infos["layers"].domain_interval.min_value,
            infos["layers"].domain_interval.max_value) == (1, 4)
    assert [v.string_value for v in infos["act"].domain_discrete.values] == ["relu", "tanh"]
    assert [v.number_value for v in infos["width"].domain_discrete.values] == [8, 16]
    assert [m.name.tag for m in found.metric_infos] == ["accuracy", "loss"]

    assert set(groups) == {r["trial"] for r in records}
    for record in records:
        group = groups[record["trial"]]
        params = {k: value_of(v) for k, v in group.hparams.items()}
        assert params == record["params"]  # a conditional param only where it was active
        session = group.sessions[0]
        if record["state"] == "FAILED":
            assert session.status == api_pb2.STATUS_FAILURE
            assert metrics_of(group)["accuracy"] == pytest.approx(record["history"][-1])
        else:
            assert session.status == api_pb2.STATUS_SUCCESS
            assert metrics_of(group)["accuracy"] == pytest.approx(record["value"])
            assert metrics_of(group)["loss"] == pytest.approx(record["metrics"]["loss"])
        # a wall-clock time of ~1.7e9 s: a relative tolerance would allow half an hour
        assert session.start_time_secs == pytest.approx(record["start"], abs=1e-3)


def test_summary_is_rewritten_not_duplicated_and_skipped_without_tensorboard(
        monkeypatch, caplog):
    result = experiment.lagom(scored, HyperparameterOptConfig(
        num_trials=2, searchspace=SPACE, optimization_key="accuracy", es_policy="none",
        workers=1, name="again", max_failures=2))
    wait_for_writers()  # the run's own summary first, then this test's rewrite
    config = {"kind": "hpo", "searchspace": SPACE.to_dict(), "optimization_key": "accuracy"}
    write(result.run_dir, config, result.trial_records)
    for folder in [tensorboard.run_logdir(result.run_dir)] + [
            tensorboard.trial_logdir(result.run_dir, r["trial"]) for r in result.trial_records]:
        assert len(glob.glob(os.path.join(folder, f"*{SUFFIX}"))) == 1, folder

    monkeypatch.setitem(sys.modules, "tensorboard.compat.proto", None)
    # what a library's logging.config.dictConfig (sparkmagic's, on import) does to every
    # logger that exists by then: the line must still be logged
    monkeypatch.setattr(logging.getLogger("maggy_magic"), "disabled", True)
    with caplog.at_level(logging.INFO, logger="maggy_magic"):
        assert write(result.run_dir, config, result.trial_records) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"maggy-magic: tensorboard is not installed, so run {result.run_id} has no HParams "
        "summary (pip install tensorboard)"]
    # and a whole run without tensorboard still ends with its result
    plain = experiment.lagom(scored, HyperparameterOptConfig(
        num_trials=1, searchspace=SPACE, optimization_key="accuracy", es_policy="none",
        workers=1, name="no-tb", max_failures=1))
    assert len(plain.trial_records) == 1
    wait_for_writers()
    assert not os.path.exists(tensorboard.run_logdir(plain.run_dir))


def test_a_failed_run_still_gets_its_summary():
    from tensorboard.plugins.hparams import api_pb2

    with pytest.raises(ExperimentFailed) as info:
        experiment.lagom(always_fails, HyperparameterOptConfig(
            num_trials=2, searchspace=Searchspace(x=("DOUBLE", [0, 1])), es_policy="none",
            workers=1, name="boom"))
    result = info.value.result
    found, groups = hparams_view(tensorboard.run_logdir(result.run_dir))
    assert [h.name for h in found.hparam_infos] == ["x"]
    assert set(groups) == {r["trial"] for r in result.trial_records} != set()
    # the trial that failed, and the one the run's failure cut short
    expected = {"FAILED": api_pb2.STATUS_FAILURE, "RUNNING": api_pb2.STATUS_UNKNOWN}
    assert {r["trial"]: expected[r["state"]] for r in result.trial_records} == \
        {name: g.sessions[0].status for name, g in groups.items()}


def test_ablation_sessions_are_the_components():
    study = AblationStudy("d", 1, "y", dataset_generator=regions)
    study.features.include("a", "b")
    study.model.set_base_model_generator(tiny_model)
    result = experiment.lagom(ablation_train, AblationConfig(study, name="abl", workers=2))
    found, groups = hparams_view(tensorboard.run_logdir(result.run_dir))
    assert [h.name for h in found.hparam_infos] == ["component", "component_kind"]
    shown = {value_of(g.hparams["component"]): (value_of(g.hparams["component_kind"]),
                                                metrics_of(g)["metric"])
             for g in groups.values()}
    assert shown == {"base": ("base", 10.0), "a": ("feature", 9.0), "b": ("feature", 8.0)}


@pytest.mark.slow
def test_logdir_is_each_trials_own_folder_that_tensorflow_writes_into():
    result = experiment.lagom(writes_tf_summaries, HyperparameterOptConfig(
        num_trials=2, optimizer="gridsearch", searchspace=Searchspace(x=("DISCRETE", [1, 2])),
        es_policy="none", workers=2, name="tf"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    folders = {r["trial"]: r["metrics"]["folder"] for r in result.trial_records}
    assert len(set(folders.values())) == 2
    for trial, folder in folders.items():
        assert folder == os.path.join(result.run_dir, "tensorboard", trial)
        record = next(r for r in result.trial_records if r["trial"] == trial)
        assert record["metrics"]["again"] == "True"
        events = EventAccumulator(os.path.join(folder, "train"))
        events.Reload()
        losses = [float(make_ndarray(e.tensor_proto))
                  for e in events.Tensors("loss")]
        assert losses == pytest.approx([record["params"]["x"] / (s + 1) for s in range(3)])


def test_logdir_outside_a_trial_is_a_one_line_error():
    with pytest.raises(NotInTrialError) as info:
        tensorboard.logdir()
    assert str(info.value) == ("tensorboard.logdir() works only inside the training function "
                               "while it runs as a trial; call it there, not in the notebook")


# -- %maggy tensorboard and maggy-magic tensorboard -----------------------------------------
def test_magic_and_command_line_print_the_command_that_opens_a_run(capsys):
    import subprocess

    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from maggy_magic import ConfigError

    result = experiment.lagom(scored, HyperparameterOptConfig(
        num_trials=1, searchspace=SPACE, optimization_key="accuracy", es_policy="none",
        workers=1, name="shown", max_failures=1))
    expected = f"tensorboard --logdir {result.run_dir}/tensorboard"
    refs = (result.run_id, "latest", f"shown/{result.run_id}", result.run_dir)

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    main = sys.modules["__main__"]
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance(config=config)
    try:
        shell.run_line_magic("load_ext", "maggy_magic")
        for ref in refs:
            capsys.readouterr()
            shell.run_line_magic("maggy", f"tensorboard {ref}")
            assert capsys.readouterr().out == expected + "\n"
        with pytest.raises(ConfigError, match="did you mean"):
            shell.run_line_magic("maggy", f"tensorboard {result.run_id[:-1]}x")
        with pytest.raises(ConfigError, match="%maggy tensorboard needs a run"):
            shell.run_line_magic("maggy", "tensorboard")
        shell.run_line_magic("maggy", "help")
        assert "%maggy tensorboard RUN" in capsys.readouterr().out
        shell.run_line_magic("unload_ext", "maggy_magic")
    finally:
        InteractiveShell.clear_instance()
        sys.modules["__main__"] = main

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    for ref in refs:
        out = subprocess.run([sys.executable, "-m", "maggy_magic.cli", "tensorboard", ref],
                             capture_output=True, text=True, env=env, timeout=60)
        assert (out.returncode, out.stdout) == (0, expected + "\n"), out.stderr
    missing = subprocess.run([sys.executable, "-m", "maggy_magic.cli", "tensorboard", "nope"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.startswith("Error: no run 'nope' under maggy_experiments")
    assert len(missing.stderr.strip().splitlines()) == 1


def test_a_run_without_tensorboard_logs_gets_a_note(tmp_path):
    from maggy_magic.tensorboard import how_to_open

    assert how_to_open(str(tmp_path)).splitlines() == [
        f"tensorboard --logdir {tmp_path}/tensorboard",
        f"(no {tmp_path}/tensorboard yet: it appears when a trial calls tensorboard.logdir() "
        "or the run ends with tensorboard installed)"]


PRELOAD_SCRIPT = """
import sys, time
from maggy_magic import HyperparameterOptConfig, Searchspace, experiment

def slow(x):
    import time
    time.sleep(0.8)
    return x

seen = {}

def listen(event):
    if event["type"] == "run_finished":
        seen["imported"] = "tensorboard.summary.writer.record_writer" in sys.modules

result = experiment.lagom(slow, HyperparameterOptConfig(
    num_trials=4, searchspace=Searchspace(x=("DOUBLE", [0, 1])), es_policy="none",
    workers=2, root=sys.argv[1], name="preload"), listeners=[listen])
print("imported before the end:", seen["imported"])
print("run dir:", result.run_dir)
"""


def test_a_run_imports_the_summary_modules_before_it_ends_and_exits_cleanly(tmp_path):
    """The summary's TensorBoard imports (a fifth of a second) run on a thread while a
    run of over a second goes on, not after its last trial; a script that exits right
    after the run still gets its summary, with nothing on stderr."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", PRELOAD_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr
    assert "imported before the end: True" in done.stdout
    assert done.stderr.strip() == ""
    run_dir = done.stdout.split("run dir: ")[1].strip()
    assert len(glob.glob(os.path.join(run_dir, "tensorboard", "*", "*" + SUFFIX))) == 4
