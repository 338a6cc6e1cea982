"""MLflow tracking against a real ``mlflow server`` (SQLite store, proxied artifacts), read
back with ``MlflowClient``: a search's parent run and one nested run per trial, an
ablation study's components, a dist run's ranks, the magic and the CLI, a server that
dies mid-run or never answers, and what bad input gets.

Experiments run on the local backend with real worker processes; training functions
live at module level (workers import this module, which must not import mlflow).
"""

import json
import logging
import os
import sys
import threading
import time

import pytest
from mlflow_server import MlflowServer, free_port

from maggy_magic import (
    AblationConfig,
    AblationStudy,
    ConfigError,
    HyperparameterOptConfig,
    Searchspace,
    experiment,
)
from maggy_magic.tracking import sender

SPACE = Searchspace(x=("DOUBLE", [0.0, 1.0]))
#: Trial x values of seed 1 (randomsearch): 0.726, 0.716, 0.098.
SEED = 1
FLAG_ENV = "MAGGY_TEST_MLFLOW_FLAG"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One tracking server for the module's tests."""
    with MlflowServer(str(tmp_path_factory.mktemp("mlflow"))) as running:
        yield running


# -- training functions (module level: workers import this module) ---------------------
def curve(x, reporter):
    """Three steps, a print, a failure for small x."""
    for step in range(3):
        reporter.broadcast(x * step, step)
    print(f"training with x={x:.3f}")
    if x < 0.2:
        raise ValueError(f"x={x:.3f} is too small")
    return {"metric": x, "double": 2 * x, "note": "text"}


def waits_for_flag(x, reporter):
    """The first trial returns at once; later ones once the test has stopped the server."""
    flag = os.environ[FLAG_ENV]
    if x < 0.72:  # the second trial of seed 1
        deadline = time.monotonic() + 60
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.05)  # a file the test creates from another process
    for step in range(3):
        reporter.broadcast(x + step, step)
    print("after the server went away" if os.path.exists(flag) else "before")
    return x


FEATURES = ["a", "b"]


def features_without(ablated_features):
    return [f for f in FEATURES if f not in ablated_features]


def count_features(dataset_function, reporter):
    return len(dataset_function())


# -- helpers ----------------------------------------------------------------------------
def runs_of(client, report):
    """``(parent, {trial id: child})`` of the run a result's MLflow report names."""
    found = client.search_runs([report["experiment_id"]], max_results=1000)
    parent = next(r for r in found if r.info.run_id == report["run_id"])
    children = {r.data.tags["maggy.trial"]: r for r in found
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    return parent, children


def artifact(client, run_id, path):
    """The text of one of a run's artifacts, downloaded from the server."""
    import tempfile

    local = client.download_artifacts(run_id, path, dst_path=tempfile.mkdtemp())
    with open(local, encoding="utf-8") as handle:
        return handle.read()


def steps(client, run_id, key):
    return [(m.step, m.value) for m in
            sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]


# -- what is logged ---------------------------------------------------------------------
def test_a_search_is_a_parent_run_with_one_nested_run_per_trial(server):
    config = HyperparameterOptConfig(num_trials=3, searchspace=SPACE, es_policy="none",
                                     workers=2, seed=SEED, max_failures=1, name="mlflow-hpo",
                                     mlflow=server.url)
    result = experiment.lagom(curve, config)
    assert result.state == "finished" and result.num_finished == 2 and result.num_failed == 1
    report = result.mlflow
    assert report["not_logged"] is None and report["lost"] == {}, report
    client = server.client()
    assert client.get_experiment(report["experiment_id"]).name == "mlflow-hpo"
    parent, children = runs_of(client, report)

    assert parent.info.status == "FINISHED" and parent.info.run_name == result.run_id
    assert parent.data.tags["maggy.run_id"] == result.run_id
    assert parent.data.tags["maggy.best_trial"] == result.best_id
    assert parent.data.params["num_trials"] == "3" and parent.data.params["seed"] == "1"
    assert parent.data.metrics["best_metric"] == pytest.approx(result.best_metric)
    assert parent.data.metrics["trials_failed"] == 1
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.json", "searchspace.json", "summary.html", "result.json"} <= names
    assert json.loads(artifact(client, parent.info.run_id, "searchspace.json")) == \
        {"x": ["DOUBLE", [0.0, 1.0]]}
    assert result.run_id in artifact(client, parent.info.run_id, "summary.html")

    assert set(children) == {t["trial"] for t in result.trial_records}
    for record in result.trial_records:
        child = children[record["trial"]]
        x = record["params"]["x"]
        assert float(child.data.params["x"]) == pytest.approx(x)
        # every step broadcast, then the final value at the last step: the latest value
        assert steps(client, child.info.run_id, "metric")[:3] == \
            [(0, 0.0), (1, pytest.approx(x)), (2, pytest.approx(2 * x))]
        assert child.data.tags["maggy.worker"] in ("0", "1") and child.data.tags["maggy.host"]
        assert child.data.metrics["duration_s"] >= 0
        log = artifact(client, child.info.run_id, "log.txt")
        assert f"training with x={x:.3f}" in log
        if record["state"] == "FAILED":
            assert child.info.status == "FAILED"
            assert child.data.tags["maggy.error_type"] == "ValueError"
            assert "is too small" in child.data.tags["maggy.error"] and "Traceback" in log
        else:
            assert child.info.status == "FINISHED"
            assert child.data.metrics["metric"] == pytest.approx(x)  # the final value
            assert child.data.metrics["double"] == pytest.approx(2 * x)
            assert child.data.tags["maggy.result.note"] == "text"
    assert [t for t, c in children.items() if c.data.tags.get("maggy.best") == "true"] == \
        [result.best_id]
    # the run directory's record says where it went
    with open(os.path.join(result.run_dir, "result.json")) as handle:
        assert json.load(handle)["mlflow"]["run_id"] == parent.info.run_id


def test_ablation_trials_are_tagged_with_their_component(server):
    study = AblationStudy("d", 1, "y", dataset_generator=features_without)
    study.features.include(*FEATURES)
    result = experiment.lagom(count_features, AblationConfig(study, workers=1,
                                                             name="mlflow-ablation",
                                                             mlflow=server.url))
    assert result.mlflow["not_logged"] is None
    parent, children = runs_of(server.client(), result.mlflow)
    assert parent.data.tags["maggy.kind"] == "ablation"
    components = {c.data.tags["maggy.component"]: c for c in children.values()}
    assert set(components) == {"base", "a", "b"}
    assert components["base"].data.tags["maggy.component_kind"] == "base"
    assert components["a"].data.tags["maggy.component_kind"] == "feature"
    assert components["a"].data.params["ablated_feature"] == "a"
    assert components["base"].data.metrics["metric"] == 2
    assert components["b"].data.metrics["metric"] == 1


@pytest.mark.slow
def test_a_dist_run_is_one_run_with_each_ranks_metrics_and_log(server):
    from test_dist import Linear, make_data

    from maggy_magic import TorchDistributedConfig

    config = TorchDistributedConfig(Linear, make_data(), hparams={"lr": 0.05},
                                    workers=2, name="mlflow-dist", mlflow=server.url)
    result = experiment.lagom(rank_train, config)
    assert result.state == "finished" and result.mlflow["not_logged"] is None
    client = server.client()
    parent, children = runs_of(client, result.mlflow)
    assert children == {}  # ranks are not runs of their own
    assert parent.data.tags["maggy.kind"] == "dist" and parent.data.params["lr"] == "0.05"
    assert parent.data.tags["maggy.world_size"] == "2"
    for rank in (0, 1):
        assert [s for s, _ in steps(client, parent.info.run_id, f"rank{rank}/metric")][:4] \
            == [0, 1, 2, 3]
        log = artifact(client, parent.info.run_id, f"logs/rank-{rank}.txt")
        assert f"rank {rank} trained" in log
        assert parent.data.tags[f"maggy.rank{rank}.state"] == "FINISHED"
    chief = next(t for t in result.trial_records if t["trial"] == "0000")
    assert parent.data.metrics["metric"] == pytest.approx(chief["value"])  # the chief's


def rank_train(module, train_set, lr, reporter):
    import torch

    from maggy_magic.distributed.context import current

    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(train_set, batch_size=16)
    step = 0
    for _ in range(2):  # 2 epochs of 2 batches (32 items per rank)
        for x, y, _ in loader:
            loss = torch.nn.functional.mse_loss(module(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            reporter.broadcast(-loss.item(), step)
            step += 1
    print(f"rank {current().rank} trained")
    return -loss.item()


# -- a server that goes away or is not there ---------------------------------------------
def first_trial_logged(client):
    found = client.get_experiment_by_name("mlflow-dies")
    return found is not None and any(
        r.info.run_name == "trial 0000" and r.info.status == "FINISHED"
        for r in client.search_runs([found.experiment_id]))


@pytest.mark.slow
def test_a_server_stopped_mid_run_costs_the_experiment_nothing_and_is_reported(
        tmp_path, monkeypatch, capfd):
    flag = str(tmp_path / "server-stopped")
    monkeypatch.setenv(FLAG_ENV, flag)  # the workers inherit it
    own = MlflowServer(str(tmp_path / "own-server")).start()

    def stop_server():  # once the first trial's run is logged and ended
        client, deadline = own.client(), time.monotonic() + 60
        while time.monotonic() < deadline and not first_trial_logged(client):
            time.sleep(0.2)  # polling the server for what another thread logs
        own.stop()
        open(flag, "w").close()

    ended = []

    def listener(event):
        if event["type"] == "run_started":
            threading.Thread(target=stop_server).start()
        elif event["type"] == "run_finished":
            ended.append(time.monotonic())

    config = HyperparameterOptConfig(num_trials=3, searchspace=SPACE, es_policy="none",
                                     workers=1, seed=SEED, name="mlflow-dies",
                                     mlflow=own.url)
    try:
        result = experiment.lagom(waits_for_flag, config, listeners=[listener])
        waited = time.monotonic() - ended[0]
    finally:
        own.stop()
    assert result.state == "finished" and result.num_finished == 3
    with open(os.path.join(result.run_dir, "trials", "0002", "log.txt")) as handle:
        assert "after the server went away" in handle.read()
    # MLflow's own retries of the call in flight take minutes; the end of the run waits
    # for a server that takes nothing STALL_TIMEOUT at most
    assert waited < sender.STALL_TIMEOUT + 5, waited
    report = result.mlflow
    assert report["run_id"] is not None  # the parent and the first trial were logged
    # the three trials' metrics were lost, as metric values or as events not yet turned
    # into them (how far the sender got before the server went away is timing)
    lost = report["lost"]
    assert report["not_logged"] and lost.get("metric values", 0) + lost.get("events", 0) >= 3, \
        report
    assert "not logged" in result._repr_html_() and report["not_logged"] in repr(
        result.to_dict())
    err = capfd.readouterr().err
    assert err.count(f"maggy-magic: MLflow ({own.url}): not logged: "
                     f"{report['not_logged']}") == 1, err  # said once, at the end


def test_an_unreachable_server_is_warned_about_once_and_reported(monkeypatch, caplog, capfd):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own: fail fast
    port = free_port()  # nothing listens there
    url, shown = f"http://me:secret@127.0.0.1:{port}", f"http://me:***@127.0.0.1:{port}"
    config = HyperparameterOptConfig(num_trials=2, searchspace=SPACE, es_policy="none",
                                     workers=1, seed=SEED, mlflow=url)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="maggy_magic"):
        result = experiment.lagom(curve, config)
    took = time.monotonic() - started
    assert result.state == "finished" and result.num_finished == 2
    assert took < 15, took  # one more try at the end, not the stall timeout
    warnings = [r.getMessage() for r in caplog.records if "MLflow" in r.getMessage()]
    assert len(warnings) == 1 and shown in warnings[0] and "goes on" in warnings[0], warnings
    report = result.mlflow
    assert report["run_id"] is None and report["lost"]["runs"] == 3, report  # parent + 2
    assert "Connection" in report["not_logged"] or "connect" in report["not_logged"].lower()
    err = capfd.readouterr().err
    assert err.count(f"maggy-magic: MLflow ({shown}): not logged:") == 1, err
    # the password is nowhere: not in what was printed, the result, the run directory
    assert "secret" not in err + " ".join(warnings) + json.dumps(result.to_dict())
    for folder, _, files in os.walk(result.run_dir):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                assert b"secret" not in handle.read(), name


def test_a_server_that_never_answers_costs_the_caller_nothing_and_the_queue_is_bounded():
    import socket

    hung = socket.socket()  # accepts connections (the kernel's backlog), never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        tracker = sender.Sender(f"http://127.0.0.1:{hung.getsockname()[1]}", "hung")
        events = sender.QUEUE_EVENTS + 5000
        started = time.monotonic()
        tracker({"type": "run_started", "run": "r", "seq": 0, "t": time.time(),
                 "config": {"optimization_key": "metric"}, "kind": "hpo", "name": "hung"})
        for step in range(events):
            tracker({"type": "metric", "run": "r", "seq": step + 1, "t": time.time(),
                     "trial": "0000", "step": step, "value": 1.0})
        assert time.monotonic() - started < 5  # the driver's thread never waits
        assert tracker._queue.qsize() <= sender.QUEUE_EVENTS
        ended = time.monotonic()
        report = tracker.finish(None)
        assert time.monotonic() - ended < sender.STALL_TIMEOUT + 5
    finally:
        hung.close()  # the call in flight fails; the abandoned thread ends
    # the thread took at most one batch (1000) before it hung; the queue held the bound
    assert report["lost"]["events"] >= events - sender.QUEUE_EVENTS - 1000, report
    assert "took nothing for 10 s" in report["not_logged"]


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("value, message", [
    ("not a uri", "mlflow must be a tracking URI such as http://127.0.0.1:5000, got "
                  "'not a uri'"),
    ("htp://127.0.0.1:5000", "mlflow 'htp://127.0.0.1:5000' is not a tracking URI: its "
                             "scheme should be one of http, https, file"),
    ("http://127.0.0.1:port", "mlflow 'http://127.0.0.1:port' needs a host and a numeric "
                              "port"),
    ("http://me:secret@127.0.0.1:x", "'http://me:***@127.0.0.1:x'"),
    (5000, "mlflow must be a tracking URI, True or False, got int"),
])
def test_a_value_that_is_no_tracking_uri_is_a_one_line_config_error(value, message):
    with pytest.raises(ConfigError) as caught:
        HyperparameterOptConfig(searchspace=SPACE, mlflow=value).validate()
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert "secret" not in str(caught.value)


def test_true_without_mlflow_tracking_uri_and_without_mlflow_are_one_line_errors(
        monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match=r"^mlflow is on without a URI, so it logs to "
                       r"\$MLFLOW_TRACKING_URI, which is not set; set it or give the URI"):
        AblationConfig(mlflow=True).validate_options()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"^MLflow tracking needs the mlflow client: pip "
                       r"install 'maggy-magic\[mlflow\]' \(or mlflow-skinny\)"):
        HyperparameterOptConfig(searchspace=SPACE, mlflow=True).validate()
    # off needs nothing
    config = HyperparameterOptConfig(searchspace=SPACE, mlflow=False)
    config.validate()
    assert config.mlflow is False


def test_the_default_follows_maggy_magic_mlflow(monkeypatch):
    url = "http://127.0.0.1:5000"
    monkeypatch.setenv("MAGGY_MAGIC_MLFLOW", url)
    config = HyperparameterOptConfig(searchspace=SPACE)
    config.validate()
    assert config.mlflow == url
    monkeypatch.setenv("MAGGY_MAGIC_MLFLOW", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url + "/x")
    config = HyperparameterOptConfig(searchspace=SPACE)
    config.validate()
    assert config.mlflow == url + "/x"
    monkeypatch.setenv("MAGGY_MAGIC_MLFLOW", "off")
    config = HyperparameterOptConfig(searchspace=SPACE)
    config.validate()
    assert config.mlflow is False
    monkeypatch.setenv("MAGGY_MAGIC_MLFLOW", "nonsense")
    with pytest.raises(ConfigError, match=r"^\$MAGGY_MAGIC_MLFLOW 'nonsense' is not a "
                       r"tracking URI"):
        HyperparameterOptConfig(searchspace=SPACE).validate()


# -- the magic and the command ------------------------------------------------------------
CELL = """%%maggy hpo --trials 2 --workers 1 --seed 1 --name {name} {mlflow} -o res
from maggy_magic import Searchspace
space = Searchspace(x=("DOUBLE", [0, 1]))

def train(x, reporter):
    reporter.broadcast(x / 2, 0)
    print(f"cell trial x={{x:.3f}}")
    return x
"""


def test_the_magic_logs_with_mlflow_and_with_the_session_opt_in(shell, server, monkeypatch,
                                                                 capsys):
    monkeypatch.setenv("MAGGY_MAGIC_WIDGETS", "0")
    magics = shell.magics_manager.registry["MaggyMagics"]
    magics.defaults = {}
    client = server.client()

    done = shell.run_cell(CELL.format(name="magic-uri", mlflow=f"--mlflow {server.url}"))
    assert done.success, done.error_in_exec
    result = shell.user_ns["res"]
    parent, children = runs_of(client, result.mlflow)
    assert parent.data.tags["maggy.run_id"] == result.run_id and len(children) == 2
    for child in children.values():
        x = float(child.data.params["x"])
        assert steps(client, child.info.run_id, "metric")[0] == (0, pytest.approx(x / 2))
        assert f"cell trial x={x:.3f}" in artifact(client, child.info.run_id, "log.txt")
    assert f"MLflow run {parent.info.run_id}" in result._repr_html_()

    # opted in once for the session: every cell logs to $MLFLOW_TRACKING_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    shell.run_line_magic("maggy", "config --mlflow")
    assert "maggy-magic session defaults: --mlflow" in capsys.readouterr().out
    done = shell.run_cell(CELL.format(name="magic-session", mlflow=""))
    assert done.success, done.error_in_exec
    result = shell.user_ns["res"]
    assert client.get_experiment(result.mlflow["experiment_id"]).name == "magic-session"
    assert len(runs_of(client, result.mlflow)[1]) == 2
    # ... but not a cell that says --mlflow off
    done = shell.run_cell(CELL.format(name="magic-off", mlflow="--mlflow off"))
    assert done.success and shell.user_ns["res"].mlflow is None
    assert client.get_experiment_by_name("magic-off") is None
    magics.defaults = {}


def test_a_bad_mlflow_value_on_the_magic_line_is_one_line_before_anything_runs(
        shell, monkeypatch, capsys):
    monkeypatch.setenv("MAGGY_MAGIC_WIDGETS", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shell.magics_manager.registry["MaggyMagics"].defaults = {}
    for flag, fragment in [("--mlflow htp://127.0.0.1:5000", "is not a tracking URI"),
                           ("--mlflow", "which is not set; set it or give the URI")]:
        done = shell.run_cell(CELL.format(name="magic-bad", mlflow=flag))
        error = done.error_in_exec
        assert type(error) is ConfigError and fragment in str(error), error
        out = capsys.readouterr().out
        assert out.strip().splitlines()[-1] == f"ConfigError: {error}", out
    assert not os.path.exists("maggy_experiments")


@pytest.mark.slow
def test_maggy_magic_run_mlflow_logs_the_notebooks_experiments(server):
    import nbformat
    from test_cli import cli, error_line

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext maggy_magic"),
                nbformat.v4.new_code_cell(CELL.format(name="from-cli", mlflow=""))]
    nbformat.write(nb, "nb.ipynb")
    out = cli("run", "nb.ipynb", "--mlflow", server.url, "--no-log-output")
    assert out.returncode == 0, out.stderr[-2000:]
    client = server.client()
    found = client.get_experiment_by_name("from-cli")
    runs = client.search_runs([found.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert sorted(r.info.run_name for r in runs if r is not parent) == \
        ["trial 0000", "trial 0001"]
    bad = cli("run", "nb.ipynb", "--mlflow", "htp://x")
    assert bad.returncode == 2 and "--mlflow: mlflow 'htp://x' is not a tracking URI" in \
        error_line(bad)


def test_the_mlflow_option_reads_alone_on_off_or_a_uri_and_shows_back():
    from maggy_magic.magics.options import format_options, parse_options

    def parse(line):
        return parse_options(line.split(), "%%maggy hpo")

    assert parse("--mlflow --trials 2") == {"mlflow": True, "num_trials": 2}
    assert parse("--mlflow off") == {"mlflow": False}
    assert parse("--mlflow ON") == {"mlflow": True}
    assert parse("--mlflow http://127.0.0.1:5000") == {"mlflow": "http://127.0.0.1:5000"}
    for value in (True, False, "http://127.0.0.1:5000"):
        assert parse(format_options({"mlflow": value})) == {"mlflow": value}
    with pytest.raises(ConfigError, match=r"^--mlflow \$uri: the notebook has no value"):
        parse("--mlflow $uri")
