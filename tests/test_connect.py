"""The spark backend on a Spark Connect session: a real Connect server started from
pyspark's own script on ``local-cluster[2,1,1024]`` (``tests/connect_server.py``), whose
executors cannot import maggy_magic or this module; the client is this process.
"""

import os
import signal
import threading
import time

import pytest
from conftest import executor_jvm, journal, no_spark_session
from connect_server import ConnectServer
from test_gpus import overlapping
from test_spark_gpus import DISCOVERY, held_trial

from maggy_magic import (
    AblationConfig,
    ConfigError,
    ExperimentFailed,
    HyperparameterOptConfig,
    Searchspace,
    experiment,
)
from maggy_magic.trial import Trial

pytestmark = pytest.mark.slow

#: Hang guard, not a speed bound.
HANG_GUARD = 90.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    was_connect = no_spark_session()
    # each executor gets one GPU address of its own to schedule (there is no GPU here)
    folder = tmp_path_factory.mktemp("gpus")
    (folder / "claims").mkdir()
    script = folder / "discover.sh"
    script.write_text(DISCOVERY.format(claims=folder / "claims"))
    script.chmod(0o755)
    with ConnectServer(conf={"spark.worker.resource.gpu.amount": "1",
                             "spark.worker.resource.gpu.discoveryScript": str(script),
                             "spark.executor.resource.gpu.amount": "1"}) as running:
        yield running
    # pyspark leaves the process in Connect mode: the next modules' classic sessions
    # would be refused
    if not was_connect:
        os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)


@pytest.fixture(scope="module")
def spark(server):
    session = server.session()
    yield session
    session.stop()


def config(**kwargs):
    kwargs.setdefault("searchspace", Searchspace(x=("DOUBLE", [0.0, 1.0])))
    kwargs.setdefault("es_policy", "none")
    kwargs.setdefault("workers", 2)
    kwargs.setdefault("seed", 1)
    kwargs.setdefault("hb_interval", 0.1)
    return HyperparameterOptConfig(backend="spark", **kwargs)


def curve(x, reporter):
    import time

    for step in range(15):
        reporter.broadcast(x * (step + 1), step)
        time.sleep(0.05)
    return x * 15


def test_the_backend_is_the_connect_one_and_ships_itself(spark):
    from maggy_magic.backends import get_backend
    from maggy_magic.backends.spark.connect import SparkConnectBackend, probe_connect

    backend = get_backend("spark")
    assert isinstance(backend, SparkConnectBackend) and backend.session is spark
    assert backend.default_workers() == 2 and backend.driver_host() == "127.0.0.1"
    assert probe_connect(spark, ["maggy_magic", "test_connect", "textwrap"]) == {
        "maggy_magic": (False, None), "test_connect": (False, None), "textwrap": (True, None)}


def test_hpo_with_early_stopping_and_live_prints(spark, tmp_path):
    seen = str(tmp_path)

    def chatty(x, reporter):
        import os
        import time

        trial = reporter.get_trial_id()
        print(f"hello from trial {trial}")
        shown, step = os.path.join(seen, f"shown-{trial}"), 0
        deadline = time.time() + 60
        while not os.path.exists(shown) and time.time() < deadline:
            reporter.broadcast(x, step)
            step += 1
            time.sleep(0.05)
        return {"metric": x, "streamed": 1.0 if os.path.exists(shown) else 0.0}

    def show(event):
        if event["type"] == "log" and any("hello from trial" in line
                                          for line in event["lines"]):
            open(os.path.join(seen, f"shown-{event['trial']}"), "w").close()

    result = experiment.lagom(chatty, config(num_trials=4), listeners=[show])
    assert result.num_finished == 4
    assert all(t["metrics"]["streamed"] == 1.0 for t in result.trial_records)

    stopped = experiment.lagom(curve, config(num_trials=12, es_policy="median", es_min=4,
                                             es_interval=0.2))
    records = stopped.trial_records
    assert stopped.state == "finished" and len(records) == 12
    assert [t for t in records if t["state"] == Trial.EARLY_STOPPED]
    workers = {e["worker"] for e in journal(stopped.run_dir) if e["type"] == "trial_started"}
    assert workers == {"0", "1"}


def stubborn(x):
    import time

    time.sleep(60)  # deaf to stop requests: only interrupting the job ends it
    return x


def test_stop_interrupts_the_job_by_its_tag(spark):
    handles, started, pids = {}, [], []

    def stopper(event):
        if event["type"] == "worker_joined":
            pids.append(event["pid"])
        elif event["type"] == "trial_started":
            started.append(event)
            if len(started) == 2:
                handles["driver"].request_stop("test stops the run")

    begun = time.monotonic()
    result = experiment.run(stubborn, config(num_trials=4, stop_grace=1.0),
                            listeners=[stopper],
                            on_driver=lambda d, b: handles.update(driver=d, backend=b))
    assert result.state == "stopped"
    assert time.monotonic() - begun < 60  # the 60 s trials were cut short
    assert not any(t["state"] == Trial.FINISHED for t in result.trial_records)
    assert handles["backend"]._job.done.is_set()
    deadline = time.monotonic() + HANG_GUARD
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)


def test_an_executor_killed_mid_trial_reruns_its_task_and_retries_the_trial(spark, tmp_path):
    gate = str(tmp_path / "hold")
    open(gate, "w").close()

    def held(x, reporter):
        import os
        import time

        deadline, step = time.time() + 120, 0
        while step < 5 or (os.path.exists(gate) and time.time() < deadline):
            reporter.broadcast(x, step)
            step += 1
            time.sleep(0.1)
        return x

    pids, joins, killed, started = {}, {}, {}, []

    def killer(event):
        if event["type"] == "worker_joined":
            pids[event["worker"]] = event["pid"]
            joins[event["worker"]] = joins.get(event["worker"], 0) + 1
            if killed and joins.get(killed["worker"]) == 2 and os.path.exists(gate):
                os.unlink(gate)
        elif event["type"] == "trial_started":
            started.append(event)
        elif event["type"] == "metric" and len(started) >= 2 and not killed \
                and event["trial"] == started[1]["trial"]:
            worker = started[1]["worker"]
            killed.update(worker=worker, trial=event["trial"], jvm=executor_jvm(pids[worker]))
            os.kill(killed["jvm"], signal.SIGKILL)

    result = experiment.lagom(held, config(num_trials=6), listeners=[killer])
    assert killed and not os.path.exists(gate), "the killed worker never registered again"
    assert result.state == "finished" and result.num_finished == 6
    trial = next(t for t in result.trial_records if t["trial"] == killed["trial"])
    assert trial["retries"] == 1 and trial["state"] == Trial.FINISHED
    lost = [e["worker"] for e in journal(result.run_dir) if e["type"] == "worker_lost"]
    assert lost == [killed["worker"]]


def kept_features(ablated_features):
    """The study's dataset: the names of the features left in."""
    return [f for f in ("a", "b") if f not in (ablated_features or [])]


def count_kept(dataset_function, component):
    print(f"component {component}")
    return {"metric": float(len(dataset_function()))}


def test_an_ablation_study_on_connect(spark):
    from maggy_magic import AblationStudy

    study = AblationStudy("d", 1, "y", dataset_generator=kept_features)
    study.features.include("a", "b")
    result = experiment.lagom(count_kept, AblationConfig(study, backend="spark",
                                                         hb_interval=0.1, workers=2))
    assert result.state == "finished" and result.num_finished == 3  # base + each feature
    metrics = sorted(t["value"] for t in result.trial_records)
    assert metrics == [1.0, 1.0, 2.0]


def test_barrier_workers_run_a_torch_gang(spark):
    import torch

    from maggy_magic import TorchDistributedConfig

    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.TensorDataset(x, x.sum(dim=1))
    result = experiment.lagom(_torch_steps, TorchDistributedConfig(
        module=torch.nn.Linear(3, 1), dataset=[data], hparams={"lr": 0.1}, workers=2,
        backend="spark", backend_options={"barrier": True}, hb_interval=0.2))
    assert result.state == "finished" and result.metrics["world"] == 2.0


def _torch_steps(module, train_set, lr):
    import torch
    import torch.distributed as dist

    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    loss = None
    for x, y in torch.utils.data.DataLoader(train_set, batch_size=8):
        loss = torch.nn.functional.mse_loss(module(x).squeeze(-1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"metric": -loss.item(), "world": float(dist.get_world_size())}


def test_classic_only_options_with_a_connect_session_are_one_line_errors(spark):
    with pytest.raises(ConfigError, match="apply only to a classic session") as info:
        experiment.lagom(curve, config(num_trials=1,
                                       backend_options={"conf": {"a": "b"}}))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="must be a Spark Connect URL"):
        experiment.lagom(curve, config(num_trials=1,
                                       backend_options={"remote": "http://x"}))


def test_a_driver_the_executors_cannot_reach_fails_in_one_line(spark):
    # nothing listens where the workers are told to connect: a loopback port of this host
    # that the driver does not own
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        unused = sock.getsockname()[1]
    begun = time.monotonic()
    with pytest.raises(ExperimentFailed) as info:
        experiment.lagom(curve, config(num_trials=2, driver_host="127.0.0.1",
                                       driver_port=str(unused), driver_bind="127.0.0.2"))
    assert "\n" not in str(info.value) and f"127.0.0.1:{unused}" in str(info.value)
    assert time.monotonic() - begun < HANG_GUARD
    assert threading.active_count() < 200


def test_local_modules_travel_as_artifacts(spark, tmp_path, monkeypatch):
    (tmp_path / "connect_helper.py").write_text("def score(x):\n    return 2 * x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the driver's path only

    def uses_helper(x):
        import connect_helper

        return {"metric": connect_helper.score(x), "x": x}

    result = experiment.lagom(uses_helper, config(num_trials=3))
    assert result.num_finished == 3
    assert all(t["value"] == pytest.approx(2 * t["params"]["x"] + 1)
               for t in result.trial_records)


# -- TensorFlow dist ---------------------------------------------------------------------
@pytest.mark.timeout(240)  # a reused Python worker would hang the second run
def test_tensorflow_dist_runs_twice_in_one_session(spark, tmp_path):
    """MultiWorkerMirroredStrategy over 2 tasks, sharding the data; each run gets Python
    workers of its own (a reused one would still hold the first strategy's state and
    hang the second run)."""
    import tf_dist_fns

    from maggy_magic import TfDistributedConfig

    runs = []
    for name in ("first", "again"):
        out = tmp_path / name
        out.mkdir()
        runs.append(experiment.lagom(tf_dist_fns.train_fit, TfDistributedConfig(
            hparams={"lr": 0.5, "epochs": 1, "out_dir": str(out)}, workers=2,
            optimization_key="loss", direction="min", hb_interval=0.2, hb_timeout=60,
            backend="spark")))
    for run, name in zip(runs, ("first", "again")):
        assert run.state == "finished" and run.metrics["replicas"] == 2
        seen = [set(tf_ids(tmp_path / name, rank)) for rank in (0, 1)]
        assert not seen[0] & seen[1]
        assert seen[0] | seen[1] == set(range(tf_dist_fns.N_EXAMPLES))
    assert runs[0].metrics["loss"] == pytest.approx(runs[1].metrics["loss"], abs=1e-6)


def tf_ids(work_dir, rank):
    import json

    with open(os.path.join(work_dir, f"ids_{rank}.json")) as handle:
        return json.load(handle)


# -- the magics --------------------------------------------------------------------------
def test_magic_cells_run_on_a_connect_url_and_on_the_active_session(spark, server, shell,
                                                                     monkeypatch):
    monkeypatch.setenv("MAGGY_MAGIC_WIDGETS", "0")
    hpo = shell.run_cell(
        f"%%maggy hpo --backend spark --backend-opt remote={server.url} --trials 4 "
        "--workers 2 --es-policy none --seed 3 --ui text -o hpo_result\n"
        "import os\n"
        "from maggy_magic import Searchspace\n"
        "space = Searchspace(x=('DOUBLE', [0, 1]))\n"
        "def train(x):\n"
        "    return {'metric': x, 'pid': os.getpid()}\n")
    assert hpo.success, hpo.error_in_exec
    result = shell.user_ns["hpo_result"]
    assert result.state == "finished" and result.num_finished == 4
    assert all(t["metrics"]["pid"] != os.getpid() for t in result.trial_records)
    started = journal(result.run_dir)[0]
    assert started["type"] == "run_started" and started["backend"]["connect"] is True
    assert started["backend"]["server"] == server.url[len("sc://"):]
    ablation = shell.run_cell(
        "%%maggy ablation --backend spark --workers 2 --ui text -o abl_result\n"
        "from maggy_magic import AblationStudy\n"
        "def kept(ablated_features=None):\n"
        "    return [f for f in ('a', 'b', 'c') if f not in (ablated_features or [])]\n"
        "study = AblationStudy('d', 1, 'y', dataset_generator=kept)\n"
        "study.features.include('a', 'b')\n"
        "def train(dataset_function):\n"
        "    return {'metric': float(len(dataset_function()))}\n")
    assert ablation.success, ablation.error_in_exec
    assert sorted(t["value"] for t in shell.user_ns["abl_result"].trial_records) == [
        2.0, 2.0, 3.0]


# -- a Python with the Connect client only -----------------------------------------------
CLIENT_RUN = '''
import importlib.metadata, json, sys
import pyspark.sql.utils
from maggy_magic import HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.backends.spark.connect import active_connect_session, probe_connect

def train(x, reporter):
    for step in range(3):
        reporter.broadcast(x * step, step)
    return x

before = probe_connect(active_connect_session(), ["maggy_magic"])
result = experiment.lagom(train, HyperparameterOptConfig(
    num_trials=4, workers=2, searchspace=Searchspace(x=("DOUBLE", [0.0, 1.0])),
    es_policy="none", seed=2, backend="spark", root=sys.argv[1]))
print(json.dumps({
    "state": result.state, "finished": result.num_finished,
    "pyspark": sorted(d.metadata["Name"] for d in importlib.metadata.distributions()
                      if d.metadata["Name"].startswith("pyspark")),
    "remote_only": pyspark.sql.utils.is_remote_only(),
    "before": before, "after": probe_connect(active_connect_session(), ["maggy_magic"])}))
'''


def client_python():
    """The Python of ``scripts/setup-client.sh``'s environment (built once, cached)."""
    import subprocess

    script = os.path.join(CHECKOUT, "scripts", "setup-client.sh")
    done = subprocess.run(["bash", script], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def maggy_magic_version():
    import maggy_magic

    return maggy_magic.__version__


CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_python_with_only_the_connect_client_runs_on_spark_remote(server, tmp_path):
    """No pyspark, no JVM in the client: SPARK_REMOTE names the server; the executors
    lack maggy_magic and get it as an artifact."""
    import json
    import subprocess

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SPARK_", "PYSPARK_", "PYTHON"))}
    env.update(SPARK_REMOTE=server.url, PYTHONPATH=CHECKOUT)
    # a script file, not -c: pyspark's Connect import takes a __main__ without a file
    # for its own doctests
    (tmp_path / "client_run.py").write_text(CLIENT_RUN)
    done = subprocess.run([client_python(), "client_run.py", str(tmp_path)], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=HANG_GUARD * 2)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["pyspark"] == ["pyspark-client"] and answer["remote_only"] is True
    # the executors could not import maggy_magic before the run, and the run shipped it
    assert answer["before"] == {"maggy_magic": [False, None]}
    assert answer["after"] == {"maggy_magic": [True, maggy_magic_version()]}
    assert answer["state"] == "finished" and answer["finished"] == 4


def test_a_probe_that_cannot_run_fails_in_one_line_within_start_timeout(spark):
    """Every slot is held by another job: the probe of a session this process has not
    shipped to yet cannot run, and the run ends with one line once start_timeout passes."""
    tag = "maggy-test-busy"

    def busy(batches):
        import time as _time

        for batch in batches:
            _time.sleep(60)
            yield batch

    def hold():
        spark.addTag(tag)
        try:
            spark.range(2, numPartitions=2).mapInArrow(busy, "id long").collect()
        except Exception:  # noqa: BLE001 - interrupted below
            pass
        finally:
            spark.removeTag(tag)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    other = spark.cloneSession()
    try:
        time.sleep(3)  # the busy tasks hold both slots
        begun = time.monotonic()
        with pytest.raises(ExperimentFailed, match="probing the executors did not run "
                                                   "within 3 s") as info:
            experiment.lagom(curve, config(num_trials=1, backend_options={
                "spark": other, "start_timeout": 3}))
        assert "\n" not in str(info.value) and time.monotonic() - begun < 20
    finally:
        spark.interruptTag(tag)
        holder.join(HANG_GUARD)
        other.stop()


# -- GPUs per trial ----------------------------------------------------------------------
def test_one_gpu_per_trial_gives_each_task_its_own_address(spark):
    """Spark's own GPU scheduling through Connect: the worker tasks run under a task
    resource profile (mapInArrow's profile=), each sees only its address."""
    result = experiment.lagom(held_trial, config(num_trials=2, gpus_per_trial=1))
    assert result.state == "finished", result.error
    joined = {e["worker"]: e["devices"] for e in journal(result.run_dir)
              if e["type"] == "worker_joined"}
    assert sorted(d for devices in joined.values() for d in devices) == ["0", "1"]
    for trial in result.trial_records:
        assert trial["devices"] == joined[trial["worker"]]
        assert trial["metrics"]["seen"] == "cvd=" + ",".join(trial["devices"])
    pairs = list(overlapping(result.trial_records))
    assert pairs, "the trials were meant to run at the same time"
    assert all(a["devices"] != b["devices"] for a, b in pairs)


def test_more_gpus_than_an_executor_has_is_one_line_on_connect(spark):
    with pytest.raises(ConfigError, match=r"gpus_per_trial=2 is more than the 1 GPU"):
        experiment.lagom(held_trial, config(num_trials=1, workers=1, gpus_per_trial=2))
