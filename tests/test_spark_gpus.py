"""GPUs per trial on Spark's own GPU scheduling, on a real ``local-cluster``, no mocks.

The cluster has two executors of two cores; each standalone worker's discovery script
claims a GPU address of its own (``"0"`` or ``"1"``, by creating a folder: workers on one
host must announce distinct addresses), so Spark has two devices to hand out. There is
no GPU here: the addresses are what Spark schedules and what each trial sees in
``CUDA_VISIBLE_DEVICES``. One session for the module; each run holds its trials long
enough for them to overlap.
"""

import collections
import os
import time

import pytest
from conftest import journal, no_spark_session
from test_gpus import overlapping

from maggy_magic import ConfigError, HyperparameterOptConfig, Searchspace, experiment

pytestmark = pytest.mark.slow

MASTER = "local-cluster[2,2,1024]"
DISCOVERY = """#!/bin/sh
for address in 0 1; do
  if mkdir "{claims}/$address" 2>/dev/null; then
    echo '{{"name": "gpu", "addresses": ["'$address'"]}}'
    exit 0
  fi
done
echo '{{"name": "gpu", "addresses": []}}'
"""


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    no_spark_session()  # one SparkContext per process: another module's must go first
    os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    folder = tmp_path_factory.mktemp("gpus")
    (folder / "claims").mkdir()
    script = folder / "discover.sh"
    script.write_text(DISCOVERY.format(claims=folder / "claims"))
    script.chmod(0o755)
    from maggy_magic.backends.spark import SparkBackend

    backend = SparkBackend(master=MASTER, conf={
        "spark.worker.resource.gpu.amount": "1",
        "spark.worker.resource.gpu.discoveryScript": str(script),
        "spark.executor.resource.gpu.amount": "1",
        # the master's 2 cores per executor, said again: a JVM keeps the settings of the
        # first session of this process (e.g. a cluster module's 1 core) as defaults
        "spark.executor.cores": "2"})
    yield backend.session
    backend.session.stop()


def config(**kwargs):
    kwargs.setdefault("searchspace", Searchspace(x=("DOUBLE", [0.0, 1.0])))
    kwargs.setdefault("es_policy", "none")
    kwargs.setdefault("seed", 1)
    kwargs.setdefault("backend", "spark")
    kwargs.setdefault("hb_interval", 0.2)
    return HyperparameterOptConfig(**kwargs)


def held_trial(x):
    """Stays long enough that every worker's first trial overlaps the others'."""
    import os
    import time

    start = time.time()
    time.sleep(4)
    return {"metric": x, "seen": "cvd=" + os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
            "growth": os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH", "unset"),
            "start": start, "end": time.time()}


def run_on_gpus(workers, gpus):
    res = experiment.lagom(held_trial, config(num_trials=workers, workers=workers,
                                              gpus_per_trial=gpus))
    assert res.state == "finished", res.error
    events = journal(res.run_dir)
    joined = {e["worker"]: e["devices"] for e in events if e["type"] == "worker_joined"}
    trials = res.trial_records
    for trial in trials:  # each trial sees exactly its worker's address
        assert trial["devices"] == joined[trial["worker"]]
        assert trial["metrics"]["seen"] == "cvd=" + ",".join(trial["devices"])
        assert trial["metrics"]["growth"] == "true"
    return joined, trials


def test_one_gpu_per_trial_never_shares_an_address(spark):
    joined, trials = run_on_gpus(2, 1)
    assert sorted(d for devices in joined.values() for d in devices) == ["0", "1"]
    pairs = list(overlapping(trials))
    assert pairs, "the trials were meant to run at the same time"
    for a, b in pairs:
        assert a["devices"] != b["devices"]


def test_half_a_gpu_per_trial_shares_each_address_by_two(spark):
    started = time.monotonic()
    joined, trials = run_on_gpus(4, 0.5)
    assert collections.Counter(d for devices in joined.values() for d in devices) == \
        {"0": 2, "1": 2}
    for trial in trials:
        sharing = [b for a, b in overlapping(trials) if a is trial] + \
            [a for a, b in overlapping(trials) if b is trial]
        assert sum(other["devices"] == trial["devices"] for other in sharing) <= 1
    assert time.monotonic() - started < 60


def test_more_gpus_than_an_executor_has_is_one_line(spark):
    with pytest.raises(ConfigError, match=r"gpus_per_trial=2 is more than the 1 GPU"):
        experiment.lagom(held_trial, config(num_trials=1, workers=1, gpus_per_trial=2))
    assert not os.path.exists("maggy_experiments")  # refused before the run existed


def test_cpus_per_trial_runs_fewer_tasks_per_executor(spark):
    """Two cores per executor and two per trial: two of the four workers run at a time."""
    res = experiment.lagom(held_trial, config(num_trials=4, workers=4, cpus_per_trial=2))
    assert res.state == "finished", res.error
    assert all("devices" not in t for t in res.trial_records)   # no GPU asked for
    assert {t["metrics"]["seen"] for t in res.trial_records} == {"cvd=unset"}
    running = max(sum(t["metrics"]["start"] <= u["metrics"]["start"] < t["metrics"]["end"]
                      for t in res.trial_records) for u in res.trial_records)
    assert running == 2
