"""``--backend livy`` for ablation studies and dist runs: the study (its generators are
user code), the model and the dataset travel with the training function, the Livy side
runs the experiment with the spark backend (a dist run as a barrier stage), and the
result here is the same kind of result as on the other backends.

The Livy test server (``livy_server.py``: real PySpark sessions on ``local[2]``, two task
slots, a session Python without maggy_magic) serves the module; its session is made from
the URL and reused by every test.
"""

import importlib
import json
import os
import time

import pytest
import test_dist
import tf_dist_fns
from conftest import journal
from livy_server import LivyServer

from maggy_magic import AblationConfig, AblationStudy, TorchDistributedConfig, experiment
from maggy_magic.backends.livy.session import close_owned
from maggy_magic.distributed.config import TfDistributedConfig
from maggy_magic.distributed.result import DistResult
from maggy_magic.errors import ConfigError, ExperimentInterrupted
from maggy_magic.result import ExperimentResult

pytestmark = pytest.mark.slow

#: Hang guard, not a speed bound: a session still starting after this long is a failure.
START_GUARD = 300.0
#: What each feature is worth in the test dataset: leaving one out lowers the metric by it.
WEIGHTS = {"alpha": 1.0, "beta": 10.0}


@pytest.fixture(scope="module")
def server():
    with LivyServer(spark_master="local[2]") as livy:
        yield livy
        close_owned()


@pytest.fixture(autouse=True)
def _no_sparkmagic_config(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKMAGIC_CONF_DIR", str(tmp_path))
    monkeypatch.setenv("MAGGY_MAGIC_WIDGETS", "0")


def livy(server):
    return {"url": server.url, "start_timeout": START_GUARD}


def kept_weight(ablated_features):
    """The dataset generator: the summed weight of the features the trial keeps."""
    return sum(w for name, w in WEIGHTS.items() if name not in ablated_features)


def train_ablation(model, dataset, component, reporter):
    reporter.broadcast(model * dataset, 0)
    return {"metric": model * dataset, "where": os.getpid(), "component": component}


def test_an_ablation_study_runs_on_the_session_and_compares_against_the_base(
        server, tmp_path, monkeypatch):
    # the model generator comes from a local module that only the study uses: it travels
    # to the session because the study does
    (tmp_path / "livy_study_parts.py").write_text(
        "def scale():\n    return 2.0  # a 'model' that doubles what it is given\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # imported by name: no import statement here that would make this module ship it
    scale = importlib.import_module("livy_study_parts").scale

    study = AblationStudy("weights", 1, "y", dataset_generator=kept_weight)
    study.model.set_base_model_generator(scale)
    study.features.include("alpha", "beta")
    result = experiment.lagom(train_ablation, AblationConfig(
        study, name="livy-ablation", workers=2, backend="livy", backend_options=livy(server)))
    assert type(result) is ExperimentResult and result.state == "finished"
    table = result.ablation
    assert list(table.component) == ["base", "alpha", "beta"]
    # base keeps both features (2 * 11); each trial lost exactly its own feature's weight
    assert list(table.metric) == [22.0, 20.0, 2.0]
    assert list(table.difference) == [0.0, -2.0, -20.0]
    assert result.base_trial["value"] == 22.0 and result.best_metric == 22.0
    # the trials ran on the cluster's executors, not in this process
    assert all(t["metrics"]["where"] != os.getpid() for t in result.trial_records)
    # the local record has the ablation config and every event; the cluster's is the same
    with open(os.path.join(result.run_dir, "config.json")) as handle:
        recorded = json.load(handle)
    assert recorded["kind"] == "ablation" and recorded["backend"] == "livy"
    assert recorded["study"]["included_features"] == ["alpha", "beta"]
    assert [e["seq"] for e in journal(result.run_dir)] == \
        [e["seq"] for e in journal(result.remote_run_dir)]
    started = [e for e in journal(result.remote_run_dir) if e["type"] == "run_started"]
    assert started[0]["kind"] == "ablation" and started[0]["backend"]["backend"] == "spark"


def test_torch_dist_runs_every_rank_at_once_on_the_session(server, tmp_path):
    result = experiment.lagom(test_dist.train, test_dist.config(
        tmp_path, backend="livy", backend_options=livy(server)))
    assert type(result) is DistResult and result.state == "finished"
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in (0, 1)]
    # both ranks ran together under DDP: one world of 2, identical weights, disjoint shards
    for rank, info in enumerate(ranks):
        assert info["env"]["RANK"] == str(rank) and info["env"]["WORLD_SIZE"] == "2"
    assert ranks[0]["weight"] == ranks[1]["weight"]
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == list(range(test_dist.N_ITEMS))
    assert result.metrics["rank"] == 0 and result.attempts == 1
    assert list(result.ranks["rank"]) == [0, 1]
    started = [e for e in journal(result.remote_run_dir) if e["type"] == "run_started"]
    assert started[0]["kind"] == "dist" and started[0]["backend"]["barrier"] is True


def test_a_dist_run_the_cluster_cannot_hold_is_the_same_one_line_error(server, tmp_path):
    # the session has 2 task slots: 3 ranks cannot run together; the cluster says so
    with pytest.raises(ConfigError) as info:
        experiment.lagom(test_dist.train, TorchDistributedConfig(
            module=test_dist.Linear, dataset=[test_dist.make_data()], workers=3,
            hparams={"lr": 0.1, "batch_size": 8, "out": str(tmp_path)}, backend="livy",
            backend_options=livy(server)))
    message = str(info.value)
    assert "\n" not in message and "can run 2 worker(s) together" in message, message
    # it never ran: the partial result says it failed, with the same message
    assert info.value.result.state == "failed" and info.value.result.error == message
    assert not info.value.result.trial_records


def test_tf_dist_runs_on_the_session(server, tmp_path):
    result = experiment.lagom(tf_dist_fns.train_fit, TfDistributedConfig(
        hparams={"lr": 0.5, "epochs": 1, "out_dir": str(tmp_path)}, workers=2,
        optimization_key="loss", direction="min", hb_interval=0.2, backend="livy",
        backend_options=livy(server)))
    assert type(result) is DistResult and result.state == "finished"
    assert result.metrics["rank"] == 0 and result.metrics["replicas"] == 2
    seen = [json.load(open(tmp_path / f"ids_{r}.json")) for r in (0, 1)]
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(range(tf_dist_fns.N_EXAMPLES))


def held_rank(module, hold, reporter):
    """Each rank reports until the test's gate file is gone (bounded)."""
    deadline = time.time() + 60
    while os.path.exists(hold) and time.time() < deadline:
        reporter.broadcast(1.0, 0)
        time.sleep(0.1)
    return {"metric": 1.0}


def test_an_interrupted_dist_run_on_the_session_ends_there(server, tmp_path):
    hold = str(tmp_path / "hold")  # no rank can finish while it exists
    open(hold, "w").close()
    handles, started = [], set()

    def interrupt_once_both_ranks_run(event):
        if event["type"] == "trial_started":
            started.add(event["trial"])
            if len(started) == 2:
                handles[0].interrupt("interrupted by the test")

    config = TorchDistributedConfig(
        module=test_dist.Linear, dataset=[test_dist.make_data()], workers=2,
        hparams={"hold": hold}, backend="livy", backend_options=livy(server))
    try:
        with pytest.raises(ExperimentInterrupted) as info:
            experiment.run(held_rank, config, listeners=[interrupt_once_both_ranks_run],
                           on_driver=lambda handle, backend: handles.append(handle))
    finally:
        os.unlink(hold)
    assert "a dist run cannot be resumed; start it again" in str(info.value)
    assert "\n" not in str(info.value)
    result = info.value.result
    assert type(result) is DistResult and result.state == "interrupted"
    # the cluster's driver ended the run on the stop statement, while the ranks were held
    last = journal(result.remote_run_dir)[-1]
    assert last["type"] == "run_finished" and last["state"] == "interrupted"
    assert last["counts"]["finished"] == 0


CELL = """%%maggy ablation --backend livy --url {url} --workers 2 --name cell-ablation \
--ui text -o res
from maggy_magic import AblationStudy

def kept(ablated_features):
    return sum(w for f, w in {{"alpha": 1.0, "beta": 10.0}}.items()
               if f not in ablated_features)

def tripled():
    return 3.0

study = AblationStudy("weights", 1, "y", dataset_generator=kept)
study.model.set_base_model_generator(tripled)
study.features.include("alpha", "beta")

def train(model_function, dataset_function, reporter):
    return model_function() * dataset_function()
"""


def test_the_ablation_magic_runs_the_cells_study_on_the_session(server, shell, capsys):
    # the cell's generators and function exist only in the notebook: they travel by value
    cell = shell.run_cell(CELL.format(url=server.url))
    assert cell.success, cell.error_in_exec
    # the same text progress as a local ablation, fed by the events that came back
    assert "3 trials" in capsys.readouterr().out
    result = shell.user_ns["res"]
    assert type(result) is ExperimentResult and result.state == "finished"
    assert list(result.ablation.component) == ["base", "alpha", "beta"]
    assert list(result.ablation.metric) == [33.0, 30.0, 3.0]
    with open(os.path.join(result.run_dir, "cell.py")) as handle:
        assert "study.features.include" in handle.read()


DIST_CELL = '''
import torch
torch.manual_seed(0)
_x = torch.randn(32, 2)
dataset = [torch.utils.data.TensorDataset(_x, _x.sum(1))]
module = torch.nn.Linear(2, 1)
hparams = {"lr": 0.05}

def train(module, train_set, lr, reporter, dist_context):
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    for step, (x, y) in enumerate(torch.utils.data.DataLoader(train_set, batch_size=4)):
        loss = torch.nn.functional.mse_loss(module(x).squeeze(-1), y)
        opt.zero_grad(); loss.backward(); opt.step()
        reporter.broadcast(-loss.item(), step)
    return {"metric": -loss.item(), "items": len(train_set),
            "world": dist_context.world_size}
'''


def test_the_dist_magic_runs_the_cells_module_on_the_session(server, shell):
    # the cell's module, dataset and function exist only in the notebook
    shell.run_cell_magic("maggy", f"dist --backend livy --url {server.url} --workers 2 "
                                  "--framework torch --ui text -o dres", DIST_CELL)
    result = shell.user_ns["dres"]
    assert type(result) is DistResult and result.state == "finished"
    # the world size as the chief saw it, and the chief's half of the 32 items
    assert result.metrics["world"] == 2 and result.metrics["items"] == 16
    assert list(result.ranks["rank"]) == [0, 1]


def held_trial(dataset, reporter):
    """Reports until it is told to stop early (bounded)."""
    deadline = time.time() + 60
    step = 0
    while time.time() < deadline:
        reporter.broadcast(dataset, step)
        step += 1
        time.sleep(0.1)
    return {"metric": dataset}


def test_a_stop_on_an_ablation_study_ends_it_on_the_session(server):
    handles = []

    def stop_once_started(event):
        if event["type"] == "trial_started" and event["trial"] == "0000":
            handles[0].request_stop("stopped from the dashboard")

    study = AblationStudy("weights", 1, "y", dataset_generator=kept_weight)
    study.features.include("alpha", "beta")
    started = time.time()
    result = experiment.run(held_trial, AblationConfig(
        study, name="livy-stop", workers=1, stop_grace=5, backend="livy",
        backend_options=livy(server)),
        listeners=[stop_once_started], on_driver=lambda handle, backend: handles.append(handle))
    assert time.time() - started < 50  # the held trial did not run out its minute
    # a graceful stop, as on the other backends: no other component started
    assert type(result) is ExperimentResult and result.state == "stopped"
    assert [t["trial"] for t in result.trial_records] == ["0000"]
    last = journal(result.remote_run_dir)[-1]
    assert last["type"] == "run_finished" and last["state"] == "stopped"
    assert any(e["type"] == "stop_requested" and e["reason"] == "stopped from the dashboard"
               for e in journal(result.run_dir))
