"""GPUs and CPUs per trial on the local backend: real worker processes, no GPU needed.

The devices are what ``CUDA_VISIBLE_DEVICES`` says (set here per test) or what a fake
``nvidia-smi`` on ``PATH`` lists; each trial returns the ``CUDA_VISIBLE_DEVICES`` its
worker process runs under, so the tests see what a framework in it would see. Trials
sleep a little so that the workers' trials overlap.
"""

import collections
import json
import os
import sys

import pytest
from conftest import journal

from maggy_magic import ConfigError, HyperparameterOptConfig, Searchspace, experiment
from maggy_magic.resources import Resources, assign, visible_devices
from maggy_magic.ui.state import DashboardState


def seen(x):
    """What the worker process runs under (prefixed: digits would be read as numbers)."""
    import os
    import time

    start = time.time()
    time.sleep(0.4)
    return {"metric": x, "seen": "cvd=" + os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
            "growth": os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH", "unset"),
            "omp": "omp=" + os.environ.get("OMP_NUM_THREADS", "unset"),
            "start": start, "end": time.time()}


def config(**kwargs):
    kwargs.setdefault("searchspace", Searchspace(x=("DOUBLE", [0.0, 1.0])))
    kwargs.setdefault("es_policy", "none")
    kwargs.setdefault("seed", 1)
    kwargs.setdefault("hb_interval", 0.1)
    return HyperparameterOptConfig(**kwargs)


def devices_of(res):
    """Worker id → the devices its ``worker_joined`` event names; checks that every trial
    ran on its worker's devices and saw exactly those."""
    events = journal(res.run_dir)
    joined = {e["worker"]: e.get("devices") for e in events if e["type"] == "worker_joined"}
    started = {e["trial"]: e.get("devices") for e in events if e["type"] == "trial_started"}
    for trial in res.trial_records:
        devices = joined[trial["worker"]]
        assert started[trial["trial"]] == trial["devices"] == devices
        assert trial["metrics"]["seen"] == "cvd=" + ",".join(devices)
        assert trial["metrics"]["growth"] == "true"
    return joined


def overlapping(trials):
    for i, a in enumerate(trials):
        for b in trials[i + 1:]:
            if a["metrics"]["start"] < b["metrics"]["end"] and \
                    b["metrics"]["start"] < a["metrics"]["end"]:
                yield a, b


def test_four_devices_one_per_worker_by_default(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    res = experiment.lagom(seen, config(num_trials=8, gpus_per_trial=1))
    assert res.state == "finished"
    started = next(e for e in journal(res.run_dir) if e["type"] == "run_started")
    assert started["config"]["workers"] == 4            # as many as the devices hold
    assert started["config"]["gpus_per_trial"] == 1
    joined = devices_of(res)
    assert sorted(d for devices in joined.values() for d in devices) == ["0", "1", "2", "3"]
    pairs = list(overlapping(res.trial_records))
    assert pairs
    for a, b in pairs:                                   # concurrent trials never share
        assert a["devices"] != b["devices"]
    with open(os.path.join(res.run_dir, "result.json")) as handle:
        records = {t["trial"]: t for t in json.load(handle)["trials"]}
    assert all(len(t["devices"]) == 1 for t in records.values())
    assert list(res.trials["devices"]) == [",".join(t["devices"]) for t in res.trial_records]


def test_half_a_device_per_trial_puts_two_workers_on_each(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    res = experiment.lagom(seen, config(num_trials=8, workers=8, gpus_per_trial=0.5))
    joined = devices_of(res)
    assert len(joined) == 8
    assert collections.Counter(d for devices in joined.values() for d in devices) == \
        {"0": 2, "1": 2, "2": 2, "3": 2}


def test_two_devices_per_trial_and_the_user_s_memory_setting_is_kept(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "false")
    res = experiment.lagom(seen, config(num_trials=2, gpus_per_trial=2))
    joined = {e["worker"]: e["devices"] for e in journal(res.run_dir)
              if e["type"] == "worker_joined"}
    assert sorted(joined.values()) == [["4", "5"], ["6", "7"]]
    for trial in res.trial_records:
        assert trial["metrics"]["seen"] == "cvd=" + ",".join(joined[trial["worker"]])
        assert trial["metrics"]["growth"] == "false"


@pytest.mark.parametrize("visible, kwargs, message", [
    ("0,1,2,3", {"workers": 5, "gpus_per_trial": 1},
     r"^5 worker\(s\) at gpus_per_trial=1 need more GPUs than the 4 on this machine "
     r"\(room for 4 worker\(s\)\); set workers <= 4 or lower gpus_per_trial$"),
    ("0,1", {"workers": 5, "gpus_per_trial": 0.5}, r"^5 worker\(s\) at gpus_per_trial=0.5 "
     r"need more GPUs than the 2 on this machine \(room for 4 worker\(s\)\)"),
    ("0", {"gpus_per_trial": 2}, r"^gpus_per_trial=2 asks for 2 GPUs per trial but this "
     r"machine has 1; set gpus_per_trial <= 1$"),
    ("", {"gpus_per_trial": 1}, r"^gpus_per_trial=1 asks for GPUs but this machine has none "
     r"visible"),
])
def test_more_than_the_devices_hold_is_refused_before_the_run(monkeypatch, visible, kwargs,
                                                              message):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(ConfigError, match=message) as info:
        experiment.lagom(seen, config(num_trials=8, **kwargs))
    assert "\n" not in str(info.value)
    assert not os.path.exists("maggy_experiments")


def test_without_a_request_the_environment_is_left_alone(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,8")
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    res = experiment.lagom(seen, config(num_trials=2, workers=2))
    for trial in res.trial_records:
        assert trial["metrics"]["seen"] == "cvd=7,8"
        assert trial["metrics"]["growth"] == "unset"
        assert "devices" not in trial
    assert all("devices" not in e for e in journal(res.run_dir))
    assert "devices" not in res.trials.columns
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    res = experiment.lagom(seen, config(num_trials=1, workers=1))
    assert res.trial_records[0]["metrics"]["seen"] == "cvd=unset"


def fake_nvidia_smi(folder):
    script = folder / "nvidia-smi"
    script.write_text(f"#!{sys.executable}\n"
                      "import sys\n"
                      "assert sys.argv[1:] == ['-L'], sys.argv\n"
                      "print('GPU 0: NVIDIA Test Card (UUID: GPU-1111)')\n"
                      "print('GPU 1: NVIDIA Test Card (UUID: GPU-2222)')\n")
    script.chmod(0o755)


def test_without_cuda_visible_devices_the_driver_s_devices_are_used(monkeypatch, tmp_path):
    fake_nvidia_smi(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_devices() == ["0", "1"]
    res = experiment.lagom(seen, config(num_trials=2, gpus_per_trial=1))
    joined = devices_of(res)
    assert sorted(joined.values()) == [["0"], ["1"]]


def test_visible_devices_and_their_assignment():
    assert visible_devices({"CUDA_VISIBLE_DEVICES": " 2, 3 "}) == ["2", "3"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # CUDA stops there
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_devices({}, which=lambda name: None) == []            # no driver here
    assert assign(["a", "b"], 4, Resources(gpus=0.5)) == [["a"], ["a"], ["b"], ["b"]]
    assert assign(["a", "b", "c", "d"], 2, Resources(gpus=2)) == [["a", "b"], ["c", "d"]]
    assert Resources(gpus=0.25).capacity(3) == 12


def test_cpus_per_trial_sizes_the_default_workers_and_their_thread_pools(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpus = os.cpu_count() or 1
    res = experiment.lagom(seen, config(num_trials=4, cpus_per_trial=cpus))
    started = next(e for e in journal(res.run_dir) if e["type"] == "run_started")
    assert started["config"]["workers"] == 1
    assert {t["metrics"]["omp"] for t in res.trial_records} == {f"omp={cpus}"}
    assert {t["metrics"]["seen"] for t in res.trial_records} == \
        {"cvd=" + os.environ.get("CUDA_VISIBLE_DEVICES", "unset")}   # no GPU asked for
    monkeypatch.setenv("OMP_NUM_THREADS", "3")                         # the user's wins
    res = experiment.lagom(seen, config(num_trials=1, workers=1, cpus_per_trial=1))
    assert res.trial_records[0]["metrics"]["omp"] == "omp=3"


def test_the_dashboard_shows_each_worker_s_and_trial_s_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    state = DashboardState()
    experiment.run(seen, config(num_trials=4, gpus_per_trial=0.5), listeners=[state.apply])
    workers = state.logs_payload(0)["workers"]
    assert sorted(w["devices"] for w in workers.values()) == ["0", "0", "1", "1"]
    rows = state.trials_payload(0)["rows"]
    assert len(rows) == 4
    for row in rows:
        assert row["devices"] == workers[row["worker"]]["devices"]
    plain = DashboardState()
    experiment.run(seen, config(num_trials=2, workers=2), listeners=[plain.apply])
    assert all(w["devices"] is None for w in plain.logs_payload(0)["workers"].values())
    assert all("devices" not in row for row in plain.trials_payload(0)["rows"])


def test_torch_ranks_do_not_share_a_device():
    from maggy_magic import TorchDistributedConfig

    with pytest.raises(ConfigError, match=r"torch distributed training needs a GPU per rank"):
        TorchDistributedConfig(workers=2, gpus_per_trial=0.5).validate()
